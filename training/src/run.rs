//! One training run: checks the data can train what is asked, builds the model on the chosen
//! device, trains with Burn's supervised loop (loss, accuracy, AUROC; checkpoints every epoch;
//! resume; early stopping on validation loss; cancel), then evaluates the test split at slide
//! level by aggregating patch probabilities.

use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher as _;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::AdamConfig;
use burn::prelude::*;
use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::store::{Aggregate, Direction, Split};
use burn::train::metric::{
    AccuracyMetric, AurocMetric, ClassReduction, LossMetric, MetricDefinition, MetricId,
};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};
use burn::train::{
    Interrupter, Learner, MetricEarlyStoppingStrategy, StoppingCondition, SupervisedTraining,
};
use pathfed_models::aggregate::{Aggregation, Aggregator};
use pathfed_models::metrics::{Evaluation, Scored, evaluate};
use pathfed_models::mil::MilConfig;
use pathfed_models::model::{Architecture, ModelConfig, ResNet};
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::batch::{PatchBatcher, SplitDataset};
use crate::data::PatchSet;
use crate::error::{TrainError, TrainResult};
use crate::mil;

/// Everything a run is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Model layout.
    pub architecture: Architecture,
    /// Epochs to train (at most, with early stopping).
    pub epochs: usize,
    /// Patches per batch.
    pub batch: usize,
    /// Initial learning rate (Adam, cosine-annealed over the run).
    pub lr: f64,
    /// Seed of weights, order and augmentation.
    pub seed: u64,
    /// Model input side in pixels (patches are resized to it).
    pub input_px: u32,
    /// Training augmentation.
    pub augment: Augment,
    /// Stop after this many epochs without a lower validation loss (0: never).
    pub patience: usize,
    /// The class whose probability is the slide score (default: the last class).
    pub positive: Option<String>,
    /// Slide aggregation of patch probabilities.
    pub aggregation: Aggregation,
    /// Threshold on the slide score.
    pub threshold: f64,
    /// Control run: training patches get shuffled labels.
    pub shuffle_labels: bool,
    /// Pretrained weights to start from (torchvision names; the head starts fresh).
    pub pretrained: Option<std::path::PathBuf>,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            architecture: Architecture::Resnet18,
            epochs: 10,
            batch: 64,
            lr: 1e-3,
            seed: 1,
            input_px: 224,
            augment: Augment::default(),
            patience: 3,
            positive: None,
            aggregation: Aggregation::Mean,
            threshold: 0.5,
            shuffle_labels: false,
            pretrained: None,
        }
    }
}

/// What a run reports as it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Progress {
    /// Batches of an epoch's split.
    Items {
        /// Epoch (1-based).
        epoch: usize,
        /// Of how many.
        epochs: usize,
        /// "train" or "valid".
        split: String,
        /// Items done in the split.
        done: usize,
        /// Items in the split.
        total: usize,
    },
    /// An epoch's value of a metric.
    Metric(EpochMetric),
    /// Scoring the test split.
    Evaluating,
}

/// One metric's value for one epoch and split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetric {
    /// Epoch (1-based).
    pub epoch: usize,
    /// "train" or "valid".
    pub split: String,
    /// "Loss", "Accuracy" (%), "AUROC [Macro]" (%).
    pub name: String,
    /// The epoch's value.
    pub value: f64,
}

/// A slide's score on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideScore {
    /// Research slide id.
    pub slide: String,
    /// True class.
    pub label: String,
    /// Aggregated probability of the positive class.
    pub score: f64,
    /// Patches scored.
    pub patches: usize,
}

/// What one seed produced, kept in its folder until the run registers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedResult {
    /// Seed.
    pub seed: u64,
    /// Per-epoch metrics.
    pub history: Vec<EpochMetric>,
    /// Test-split evaluation.
    pub evaluation: Evaluation,
    /// Test slides' scores.
    pub slides: Vec<SlideScore>,
}

/// The outcome of a run.
pub struct TrainedRun {
    /// The trained model (last epoch), without autodiff.
    pub model: ResNet,
    /// Its shape.
    pub config: ModelConfig,
    /// Class names, index order.
    pub classes: Vec<String>,
    /// The class scored as positive.
    pub positive: String,
    /// Per-epoch metrics.
    pub history: Vec<EpochMetric>,
    /// Test-split evaluation at slide level.
    pub evaluation: Evaluation,
    /// Test slides' scores.
    pub slides: Vec<SlideScore>,
    /// Why training stopped early (cancel), if it did.
    pub interrupted: Option<String>,
    /// The attention head, when the run aggregates by attention.
    pub aggregator: Option<Aggregator>,
}

/// Refuses what cannot train: an empty split, one class only, a batch larger than the
/// training split, an unknown positive class.
pub fn check(set: &PatchSet, params: &TrainParams) -> TrainResult<()> {
    if params.epochs == 0 || params.batch == 0 {
        return Err(TrainError::Invalid(
            "epochs and batch must be at least 1".into(),
        ));
    }
    if !(params.lr > 0.0 && params.lr < 1.0) {
        return Err(TrainError::Invalid(format!(
            "learning rate {} is not in (0, 1)",
            params.lr
        )));
    }
    if !(16..=1024).contains(&params.input_px) {
        return Err(TrainError::Invalid(format!(
            "input size {} px is not in 16–1024",
            params.input_px
        )));
    }
    for split in crate::data::SPLITS {
        if set.split(split).is_empty() {
            return Err(TrainError::Invalid(format!(
                "the {split} split has no patches: build the version with more slides or other split fractions"
            )));
        }
    }
    let train_classes = set.slide_counts("train").iter().filter(|&&n| n > 0).count();
    if train_classes < 2 {
        return Err(TrainError::Invalid(format!(
            "the train split holds one class only ({}): a classifier needs at least two",
            set.classes.join(", ")
        )));
    }
    let train = set.split("train").len();
    if params.batch > train {
        return Err(TrainError::Invalid(format!(
            "batch {} is larger than the train split ({train} patches)",
            params.batch
        )));
    }
    if let Some(p) = &params.positive
        && !set.classes.contains(p)
    {
        return Err(TrainError::Invalid(format!(
            "positive class {p:?} is not among {}",
            set.classes.join(", ")
        )));
    }
    Ok(())
}

/// Trains on `set` in `dir` (checkpoints, logs). `resume_from` continues after that epoch's
/// checkpoint in the same `dir`.
pub fn train(
    set: Arc<PatchSet>,
    params: &TrainParams,
    device: &Device,
    dir: &Path,
    resume_from: Option<usize>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
    interrupter: Interrupter,
) -> TrainResult<TrainedRun> {
    check(&set, params)?;
    let mut set = Arc::unwrap_or_clone(set);
    if params.shuffle_labels {
        set.shuffle_train_labels(params.seed);
    }
    let set = Arc::new(set);
    let config = ModelConfig {
        architecture: params.architecture,
        classes: set.classes.len(),
        input_px: params.input_px,
    };
    device.seed(params.seed);
    let mut model = ResNet::new(&config, &device.clone().autodiff());
    // A resumed run takes its weights from the checkpoint instead.
    if let (Some(path), None) = (&params.pretrained, resume_from) {
        let options = pathfed_models::import::ImportOptions { skip_head: true };
        let (loaded, report) = pathfed_models::import::load_pretrained(model, path, &options)?;
        tracing::info!(file = %path.display(), loaded = report.loaded, "started from pretrained weights");
        model = loaded;
    }
    let first_epoch = resume_from.map_or(1, |k| k as u64 + 1);
    let side = params.input_px;
    let train_patches = set.split("train");
    let steps = params.epochs * train_patches.len().div_ceil(params.batch);
    let train_data = SplitDataset::new(
        set.clone(),
        train_patches,
        side,
        params.augment,
        true,
        params.seed,
        first_epoch,
    );
    let valid_data = SplitDataset::new(
        set.clone(),
        set.split("val"),
        side,
        Augment::none(),
        false,
        params.seed,
        first_epoch,
    );
    let batcher = PatchBatcher { side };
    let train_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(params.batch)
        .set_device(device.clone())
        .build(train_data);
    let valid_loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(params.batch)
        .set_device(device.clone())
        .build(valid_data);
    if let Some(k) = resume_from {
        let model_file = dir.join(format!("checkpoint/model-{k}.bpk"));
        if !model_file.exists() {
            return Err(TrainError::Invalid(format!(
                "no checkpoint of epoch {k} in {} to resume from",
                dir.display()
            )));
        }
    }

    let history = Arc::new(Mutex::new(Vec::new()));
    let renderer = JobRenderer::new(params.epochs, progress.clone(), history.clone());
    let mut training = SupervisedTraining::new(dir, train_loader, valid_loader)
        .metrics((
            LossMetric::new(),
            AccuracyMetric::new(),
            AurocMetric::multiclass(ClassReduction::Macro),
        ))
        .num_epochs(params.epochs)
        .with_default_checkpointers()
        .renderer(Box::new(renderer))
        .with_interrupter(interrupter)
        // Burn's default logger installs a process-wide subscriber; we log through tracing.
        .with_application_logger(None);
    if params.patience > 0 {
        training = training.early_stopping(MetricEarlyStoppingStrategy::new(
            &LossMetric::new(),
            Aggregate::Mean,
            Direction::Lowest,
            Split::Valid,
            StoppingCondition::NoImprovementSince {
                n_epochs: params.patience,
            },
        ));
    }
    if let Some(k) = resume_from {
        training = training.checkpoint(k);
    }
    let lr = CosineAnnealingLrSchedulerConfig::new(params.lr, steps.max(1))
        .with_min_lr(params.lr / 100.0)
        .init()
        .map_err(|e| TrainError::Invalid(format!("learning-rate schedule: {e}")))?;
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), lr));
    if let Some(error) = result.error {
        return Err(TrainError::Invalid(format!("training failed: {error}")));
    }
    let interrupted = result
        .interrupted
        .map(|i| i.reason.unwrap_or_else(|| "stopped".into()));

    progress(Progress::Evaluating);
    let positive = params
        .positive
        .clone()
        .unwrap_or_else(|| set.classes.last().cloned().unwrap_or_default());
    let (evaluation, slides, aggregator) = if params.aggregation == Aggregation::Attention {
        let fitted = fit_attention(&result.model, &set, params, device)?;
        let (evaluation, slides) = evaluate_attention(
            &result.model,
            &fitted,
            &set,
            "test",
            side,
            params.batch,
            &positive,
            params.threshold,
            params.seed,
            device,
        )?;
        (evaluation, slides, Some(fitted))
    } else {
        let (evaluation, slides) = evaluate_slides(
            &result.model,
            &set,
            "test",
            side,
            params.batch,
            &positive,
            params.aggregation,
            params.threshold,
            params.seed,
            device,
        )?;
        (evaluation, slides, None)
    };
    let history = history.lock().map(|h| h.clone()).unwrap_or_default();
    Ok(TrainedRun {
        model: result.model,
        config,
        classes: set.classes.clone(),
        positive,
        history,
        evaluation,
        slides,
        interrupted,
        aggregator,
    })
}

/// Epochs the attention head trains at most (it keeps its best validation epoch).
const ATTENTION_EPOCHS: usize = 40;

/// Trains the attention head on the frozen model's embeddings of the train split.
fn fit_attention(
    model: &ResNet,
    set: &Arc<PatchSet>,
    params: &TrainParams,
    device: &Device,
) -> TrainResult<Aggregator> {
    let (train, features) =
        mil::embed_split(model, set, "train", params.input_px, params.batch, device)?;
    let (valid, _) = mil::embed_split(model, set, "val", params.input_px, params.batch, device)?;
    let labels: Vec<usize> = set.slides.iter().map(|s| s.label).collect();
    let config = MilConfig {
        features,
        hidden: 64,
        classes: set.classes.len(),
        pooling: pathfed_models::mil::Pooling::Attention,
    };
    let (head, _) = mil::fit(
        &train,
        &valid,
        &labels,
        &config,
        mil::FitOptions {
            epochs: ATTENTION_EPOCHS,
            lr: 1e-3,
            seed: params.seed,
        },
        device,
    )?;
    Ok(Aggregator { config, head })
}

/// Slide-level evaluation of `split` through the attention head.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_attention(
    model: &ResNet,
    aggregator: &Aggregator,
    set: &Arc<PatchSet>,
    split: &str,
    side: u32,
    batch: usize,
    positive: &str,
    threshold: f64,
    seed: u64,
    device: &Device,
) -> TrainResult<(Evaluation, Vec<SlideScore>)> {
    let positive_index = class_index(set, positive)?;
    let (bags, features) = mil::embed_split(model, set, split, side, batch, device)?;
    let scores =
        pathfed_models::mil::score(&aggregator.head, &bags, features, positive_index, device)?;
    let slides = bags
        .iter()
        .zip(scores)
        .map(|(bag, score)| (bag.slide, score, bag.patches));
    Ok(slide_evaluation(
        set,
        slides,
        positive_index,
        threshold,
        seed,
    ))
}

/// Index of class `positive` in `set`.
pub(crate) fn class_index(set: &PatchSet, positive: &str) -> TrainResult<usize> {
    set.classes
        .iter()
        .position(|c| c == positive)
        .ok_or_else(|| TrainError::Invalid(format!("no class {positive:?}")))
}

/// The evaluation and per-slide scores from (slide index, score, patches) of each scored slide.
pub(crate) fn slide_evaluation(
    set: &PatchSet,
    slides: impl Iterator<Item = (usize, f64, usize)>,
    positive_index: usize,
    threshold: f64,
    seed: u64,
) -> (Evaluation, Vec<SlideScore>) {
    let mut scored = Vec::new();
    let mut scores = Vec::new();
    for (slide, score, patches) in slides {
        let info = &set.slides[slide];
        scored.push(Scored {
            positive: info.label == positive_index,
            score,
        });
        scores.push(SlideScore {
            slide: info.id.clone(),
            label: set.classes[info.label].clone(),
            score,
            patches,
        });
    }
    (evaluate(&scored, threshold, seed), scores)
}

/// Scores every slide of `split`: patch probabilities of `positive`, aggregated per slide, then
/// the slide-level evaluation at `threshold` (bootstrap seeded by `seed`).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_slides(
    model: &ResNet,
    set: &Arc<PatchSet>,
    split: &str,
    side: u32,
    batch: usize,
    positive: &str,
    aggregation: Aggregation,
    threshold: f64,
    seed: u64,
    device: &Device,
) -> TrainResult<(Evaluation, Vec<SlideScore>)> {
    let positive_index = class_index(set, positive)?;
    let patches = set.split(split);
    let data = SplitDataset::new(
        set.clone(),
        patches.clone(),
        side,
        Augment::none(),
        false,
        seed,
        1,
    );
    let batcher = PatchBatcher { side };
    let mut per_slide: Vec<Vec<f64>> = vec![Vec::new(); set.slides.len()];
    for chunk in (0..patches.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let items = burn::data::dataset::Dataset::get_many(&data, chunk.to_vec())
            .map_err(|e| TrainError::Invalid(format!("reading patches: {e}")))?;
        let batch = batcher.batch(items, device);
        let probs: Vec<f32> = model
            .probabilities(batch.images)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Invalid(format!("model output: {e:?}")))?;
        let classes = set.classes.len();
        for (row, &patch) in batch.patches.iter().enumerate() {
            let slide = set.patches[patch].slide as usize;
            per_slide[slide].push(f64::from(probs[row * classes + positive_index]));
        }
    }
    let slides = per_slide
        .into_iter()
        .enumerate()
        .filter(|(_, values)| !values.is_empty())
        .map(|(slide, mut values)| (slide, aggregation.apply(&mut values), values.len()));
    Ok(slide_evaluation(
        set,
        slides,
        positive_index,
        threshold,
        seed,
    ))
}

/// Receives Burn's progress and metric events and hands them to the run's observer.
struct JobRenderer {
    epochs: usize,
    epoch: usize,
    split: String,
    total: usize,
    names: std::collections::HashMap<MetricId, String>,
    /// Last value of each metric in the split being run: at the split's end, its epoch value.
    last: Vec<(String, f64)>,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
    history: Arc<Mutex<Vec<EpochMetric>>>,
}

impl JobRenderer {
    fn new(
        epochs: usize,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
        history: Arc<Mutex<Vec<EpochMetric>>>,
    ) -> Self {
        Self {
            epochs,
            epoch: 1,
            split: String::new(),
            total: 0,
            names: Default::default(),
            last: Vec::new(),
            progress,
            history,
        }
    }

    fn record(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, Some(value)) = state {
            let name = self
                .names
                .get(&entry.metric_id)
                .cloned()
                .unwrap_or_default();
            let v = value.current();
            match self.last.iter_mut().find(|(n, _)| *n == name) {
                Some(slot) => slot.1 = v,
                None => self.last.push((name, v)),
            }
        }
    }
}

impl MetricsRendererTraining for JobRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRendererEvaluation for JobRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl TrainingProgressLogger for JobRenderer {
    fn start(&mut self, epochs: usize, first: usize, _items: Option<usize>, _label: Option<&str>) {
        self.epochs = epochs;
        self.epoch = first;
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total: usize) {
        self.split = split.to_string();
        self.total = total;
        self.last.clear();
    }

    fn update_split(&mut self, done: usize) {
        (self.progress)(Progress::Items {
            epoch: self.epoch,
            epochs: self.epochs,
            split: self.split.clone(),
            done,
            total: self.total,
        });
    }

    fn end_split(&mut self) {
        for (name, value) in self.last.drain(..) {
            let metric = EpochMetric {
                epoch: self.epoch,
                split: self.split.clone(),
                name,
                value,
            };
            if let Ok(mut h) = self.history.lock() {
                h.push(metric.clone());
            }
            (self.progress)(Progress::Metric(metric));
        }
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, event: String) {
        tracing::debug!(%event, "training");
    }
}

impl EvaluationProgressLogger for JobRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRenderer for JobRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id.clone(), definition.name.to_string());
    }
}
