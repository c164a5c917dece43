//! Training the attention-MIL head ([`pathfed_models::mil`]): each slide of a split becomes a
//! bag of patch embeddings from the frozen patch classifier, and the head learns from the
//! slides' labels alone, keeping its best validation epoch.

use std::sync::Arc;

use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use pathfed_models::mil::{AttentionMil, Bag, MAX_BAG, MilConfig};
use pathfed_models::model::ResNet;
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;

use crate::augment::Augment;
use crate::batch::{PatchBatcher, SplitDataset};
use crate::data::PatchSet;
use crate::error::{TrainError, TrainResult};
use crate::run::EpochMetric;

/// Embeds up to [`MAX_BAG`] patches of every slide of `split` with the frozen `model`.
pub fn embed_split(
    model: &ResNet,
    set: &Arc<PatchSet>,
    split: &str,
    side: u32,
    batch: usize,
    device: &Device,
) -> TrainResult<(Vec<Bag>, usize)> {
    let mut by_slide: Vec<Vec<usize>> = vec![Vec::new(); set.slides.len()];
    for i in set.split(split) {
        by_slide[set.patches[i].slide as usize].push(i);
    }
    let mut chosen = Vec::new();
    for patches in &mut by_slide {
        if patches.len() > MAX_BAG {
            let step = patches.len() as f64 / MAX_BAG as f64;
            *patches = (0..MAX_BAG)
                .map(|k| patches[(k as f64 * step) as usize])
                .collect();
        }
        chosen.extend(patches.iter().copied());
    }
    let data = SplitDataset::new(
        set.clone(),
        chosen.clone(),
        side,
        Augment::none(),
        false,
        1,
        1,
    );
    let batcher = PatchBatcher { side };
    let mut rows: Vec<Vec<f32>> = vec![Vec::new(); set.slides.len()];
    let mut features = 0;
    let positions: Vec<usize> = (0..chosen.len()).collect();
    for chunk in positions.chunks(batch.max(1)) {
        let items = burn::data::dataset::Dataset::get_many(&data, chunk.to_vec())
            .map_err(|e| TrainError::Invalid(format!("reading patches: {e}")))?;
        let batch = burn::data::dataloader::batcher::Batcher::batch(&batcher, items, device);
        let embedded = model.embed(batch.images);
        features = embedded.dims()[1];
        let values: Vec<f32> = embedded
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Invalid(format!("embeddings: {e:?}")))?;
        for (row, &patch) in batch.patches.iter().enumerate() {
            let slide = set.patches[patch].slide as usize;
            rows[slide].extend_from_slice(&values[row * features..(row + 1) * features]);
        }
    }
    let bags = rows
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(slide, embeddings)| Bag {
            slide,
            patches: embeddings.len() / features.max(1),
            embeddings,
        })
        .collect();
    Ok((bags, features))
}

/// How long and how fast a head trains.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitOptions {
    /// Epochs at most.
    pub epochs: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed of weights and order.
    pub seed: u64,
}

/// Trains a head on `train` bags for at most `options.epochs`, keeping the weights of the epoch
/// with the lowest validation loss (slides are few, so the head overfits quickly without this).
/// Each slide's loss is weighted by the inverse frequency of its class among the training
/// slides, so a rare class counts as much as a common one. Returns the head and each epoch's
/// mean training and validation loss.
pub fn fit(
    train: &[Bag],
    valid: &[Bag],
    labels: &[usize],
    config: &MilConfig,
    options: FitOptions,
    device: &Device,
) -> TrainResult<(AttentionMil, Vec<EpochMetric>)> {
    let FitOptions { epochs, lr, seed } = options;
    if train.is_empty() || valid.is_empty() {
        return Err(TrainError::Invalid(
            "attention pooling needs training and validation slides".into(),
        ));
    }
    let autodiff = device.clone().autodiff();
    device.seed(seed);
    let mut head = AttentionMil::new(config, &autodiff);
    let mut optim = AdamConfig::new()
        .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(1e-4)))
        .init();
    let mut counts = vec![0usize; config.classes];
    for bag in train {
        counts[labels[bag.slide]] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count().max(1);
    let weight: Vec<f64> = counts
        .iter()
        .map(|&c| train.len() as f64 / (present * c.max(1)) as f64)
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best = (f64::INFINITY, head.valid());
    let mut losses = Vec::with_capacity(2 * epochs);
    for epoch in 1..=epochs {
        order.shuffle(&mut rng);
        let mut train_total = 0.0;
        for &i in &order {
            let bag = &train[i];
            let (logits, _) = head.forward(bag.tensor(config.features, &autodiff));
            let label = labels[bag.slide];
            let loss = nll(logits, label, config.classes, &autodiff) * weight[label];
            train_total += scalar(loss.clone())?;
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(lr, head, grads);
        }
        let frozen = head.valid();
        let mut total = 0.0;
        for bag in valid {
            let (logits, _) = frozen.forward(bag.tensor(config.features, device));
            let label = labels[bag.slide];
            // Weighted as training is, so the kept epoch is not chosen for the majority class.
            total += weight[label] * scalar(nll(logits, label, config.classes, device))?;
        }
        let loss = total / valid.len() as f64;
        for (split, value) in [("train", train_total / train.len() as f64), ("valid", loss)] {
            losses.push(EpochMetric {
                epoch,
                split: split.into(),
                name: "Loss".into(),
                value,
            });
        }
        if loss < best.0 {
            best = (loss, frozen);
        }
    }
    Ok((best.1, losses))
}

fn nll(logits: Tensor<2>, target: usize, classes: usize, device: &Device) -> Tensor<1> {
    let mut one_hot = vec![0.0f32; classes];
    one_hot[target] = 1.0;
    let target = Tensor::<1>::from_floats(one_hot.as_slice(), device).reshape([1, classes]);
    (log_softmax(logits, 1) * target).sum().neg()
}

fn scalar(t: Tensor<1>) -> TrainResult<f64> {
    let v: Vec<f32> = t
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Invalid(format!("loss: {e:?}")))?;
    Ok(v.first().copied().map_or(f64::NAN, f64::from))
}
