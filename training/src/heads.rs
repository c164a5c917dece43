//! Slide-level heads on stored embeddings (ABMIL, TransMIL-style transformer, plain attention,
//! mean pooling), evaluated on the version's fixed test split and by k-fold cross-validation by
//! patient: the training and validation slides are dealt into k folds, stratified by class and
//! seeded, with every slide of a patient in one fold, so no patient is both trained on and
//! scored. Heads train in seconds,
//! so the k extra fits cost little next to the embedding they reuse.

use std::collections::BTreeMap;

use burn::prelude::*;
use pathfed_models::aggregate::Aggregator;
use pathfed_models::metrics::{Evaluation, Scored, evaluate, mean_sd};
use pathfed_models::mil::{Bag, MilConfig, Pooling, score};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

use crate::data::PatchSet;
use crate::error::{TrainError, TrainResult};
use crate::mil;
use crate::run::{EpochMetric, SlideScore, class_index, slide_evaluation};

/// How a head is trained and judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadParams {
    /// Pooling of the bag.
    pub pooling: Pooling,
    /// Attention hidden width.
    pub hidden: usize,
    /// Epochs at most (the best validation epoch is kept).
    pub epochs: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Cross-validation folds (0: none; otherwise at least 3).
    pub folds: usize,
    /// Seed of weights, order and folds.
    pub seed: u64,
    /// The class whose probability is the slide score (default: the last class).
    pub positive: Option<String>,
    /// Threshold on the slide score.
    pub threshold: f64,
}

impl Default for HeadParams {
    fn default() -> Self {
        Self {
            pooling: Pooling::GatedAttention,
            hidden: 128,
            epochs: 40,
            lr: 1e-3,
            folds: 5,
            seed: 1,
            positive: None,
            threshold: 0.5,
        }
    }
}

/// A metric's mean and sample deviation over the folds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean over folds where the metric is defined.
    pub mean: f64,
    /// Sample standard deviation.
    pub sd: f64,
}

/// What cross-validation found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Folds.
    pub folds: usize,
    /// Patients dealt into the folds.
    pub patients: usize,
    /// Each fold's evaluation of its held-out slides.
    pub per_fold: Vec<Evaluation>,
    /// Mean ± sd over folds of auc, balanced_accuracy, sensitivity and specificity.
    pub summary: BTreeMap<String, MeanSd>,
    /// Every slide's out-of-fold score, evaluated together with bootstrap intervals.
    pub pooled: Evaluation,
}

/// A trained head with its evaluations.
pub struct HeadRun {
    /// The head trained on the training split (validation split for early stopping).
    pub aggregator: Aggregator,
    /// Class names, index order.
    pub classes: Vec<String>,
    /// The class scored as positive.
    pub positive: String,
    /// The fixed test split.
    pub evaluation: Evaluation,
    /// Test slides' scores.
    pub slides: Vec<SlideScore>,
    /// Cross-validation, when asked for.
    pub cross_validation: Option<CrossValidation>,
    /// Each epoch's training and validation loss of the head trained on the training split.
    pub history: Vec<EpochMetric>,
}

/// Fold of each slide of `set` in `candidates` (indices into `set.slides`): patients are
/// grouped by their first slide's class, shuffled with `seed`, and dealt round-robin into `k`
/// folds, class after class, so each fold holds about the same share of every class.
pub fn patient_folds(
    set: &PatchSet,
    candidates: &[usize],
    k: usize,
    seed: u64,
) -> TrainResult<BTreeMap<usize, usize>> {
    let mut patients: BTreeMap<&str, (usize, Vec<usize>)> = BTreeMap::new();
    for &slide in candidates {
        let info = &set.slides[slide];
        patients
            .entry(info.patient.as_str())
            .or_insert((info.label, Vec::new()))
            .1
            .push(slide);
    }
    if patients.len() < k {
        return Err(TrainError::Invalid(format!(
            "{k}-fold cross-validation needs at least {k} patients; the training and validation \
             splits have {}",
            patients.len()
        )));
    }
    let mut by_class: BTreeMap<usize, Vec<&Vec<usize>>> = BTreeMap::new();
    for (label, slides) in patients.values() {
        by_class.entry(*label).or_default().push(slides);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fold_of = BTreeMap::new();
    let mut next = 0;
    for group in by_class.values_mut() {
        group.shuffle(&mut rng);
        for slides in group.iter() {
            for &slide in slides.iter() {
                fold_of.insert(slide, next % k);
            }
            next += 1;
        }
    }
    Ok(fold_of)
}

/// Trains a head on `bags` (one per slide of `set`, features wide) and evaluates it on the test
/// split and, with `params.folds`, by cross-validation by patient.
pub fn train_head(
    set: &PatchSet,
    bags: &[Bag],
    features: usize,
    params: &HeadParams,
    device: &Device,
) -> TrainResult<HeadRun> {
    if params.folds == 1 || params.folds == 2 {
        return Err(TrainError::Invalid(format!(
            "cross-validation needs at least 3 folds (one held out, one for early stopping, \
             the rest to train on), not {}; use 0 for none",
            params.folds
        )));
    }
    let positive = params
        .positive
        .clone()
        .unwrap_or_else(|| set.classes.last().cloned().unwrap_or_default());
    let positive_index = class_index(set, &positive)?;
    let labels: Vec<usize> = set.slides.iter().map(|s| s.label).collect();
    let config = MilConfig {
        features,
        hidden: params.hidden,
        classes: set.classes.len(),
        pooling: params.pooling,
    };
    let in_split = |split: &str| -> Vec<Bag> {
        bags.iter()
            .filter(|b| set.slides[b.slide].split == split)
            .cloned()
            .collect()
    };
    let (train, valid, test) = (in_split("train"), in_split("val"), in_split("test"));
    if test.is_empty() {
        return Err(TrainError::Invalid(
            "the test split has no slides with patches".into(),
        ));
    }
    let fit = |train: &[Bag], valid: &[Bag], seed: u64| {
        let options = mil::FitOptions {
            epochs: params.epochs,
            lr: params.lr,
            seed,
        };
        mil::fit(train, valid, &labels, &config, options, device)
    };
    let (head, history) = fit(&train, &valid, params.seed)?;
    let scores = score(&head, &test, features, positive_index, device)?;
    let (evaluation, slides) = slide_evaluation(
        set,
        test.iter()
            .zip(scores)
            .map(|(b, s)| (b.slide, s, b.patches)),
        positive_index,
        params.threshold,
        params.seed,
    );

    let cross_validation = if params.folds == 0 {
        None
    } else {
        let pool: Vec<Bag> = train.iter().chain(&valid).cloned().collect();
        let candidates: Vec<usize> = pool.iter().map(|b| b.slide).collect();
        let fold_of = patient_folds(set, &candidates, params.folds, params.seed)?;
        let patients = candidates
            .iter()
            .map(|&s| set.slides[s].patient.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let mut per_fold = Vec::new();
        let mut pooled = Vec::new();
        for fold in 0..params.folds {
            let early = (fold + 1) % params.folds;
            let part = |f: &dyn Fn(usize) -> bool| -> Vec<Bag> {
                pool.iter()
                    .filter(|b| f(fold_of[&b.slide]))
                    .cloned()
                    .collect()
            };
            let held = part(&|f| f == fold);
            let stop = part(&|f| f == early);
            let rest = part(&|f| f != fold && f != early);
            let (head, _) = fit(&rest, &stop, params.seed.wrapping_add(fold as u64))?;
            let scores = score(&head, &held, features, positive_index, device)?;
            let scored: Vec<Scored> = held
                .iter()
                .zip(&scores)
                .map(|(b, &score)| Scored {
                    positive: labels[b.slide] == positive_index,
                    score,
                })
                .collect();
            pooled.extend_from_slice(&scored);
            per_fold.push(evaluate(&scored, params.threshold, params.seed));
        }
        let mut summary = BTreeMap::new();
        type Pick = fn(&Evaluation) -> Option<f64>;
        let metrics: [(&str, Pick); 4] = [
            ("auc", |e| e.auc.map(|i| i.value)),
            ("balanced_accuracy", |e| {
                e.balanced_accuracy.map(|i| i.value)
            }),
            ("sensitivity", |e| e.sensitivity.map(|i| i.value)),
            ("specificity", |e| e.specificity.map(|i| i.value)),
        ];
        for (name, pick) in metrics {
            let values: Vec<f64> = per_fold.iter().filter_map(pick).collect();
            if !values.is_empty() {
                let (mean, sd) = mean_sd(&values);
                summary.insert(name.to_string(), MeanSd { mean, sd });
            }
        }
        Some(CrossValidation {
            folds: params.folds,
            patients,
            per_fold,
            summary,
            pooled: evaluate(&pooled, params.threshold, params.seed),
        })
    };
    Ok(HeadRun {
        aggregator: Aggregator { config, head },
        classes: set.classes.clone(),
        positive,
        evaluation,
        slides,
        cross_validation,
        history,
    })
}
