//! Attention multiple-instance learning: a slide is a bag of patch embeddings from the frozen
//! patch classifier; a small attention head (Ilse et al., 2018) learns which patches
//! matter and classifies the slide from their weighted mean. Slide labels are all a sign-out
//! gives us, so this head learns from exactly that, instead of assuming every patch carries the
//! slide's label as patch training does.

use std::sync::Arc;

use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::batch::{PatchBatcher, SplitDataset};
use crate::data::PatchSet;
use crate::error::{TrainError, TrainResult};
use crate::model::ResNet;

/// Patches a bag keeps at most (evenly sampled), so memory stays bounded on large slides.
pub const MAX_BAG: usize = 512;

/// The attention head's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilConfig {
    /// Embedding width (the patch model's feature size).
    pub features: usize,
    /// Attention hidden width.
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
}

/// Attention pooling over a bag of embeddings, then a linear classifier.
#[derive(Module, Debug)]
pub struct AttentionMil {
    attention_v: Linear,
    attention_w: Linear,
    classifier: Linear,
}

impl AttentionMil {
    /// A freshly initialised head on `device`.
    pub fn new(config: &MilConfig, device: &Device) -> Self {
        Self {
            attention_v: LinearConfig::new(config.features, config.hidden).init(device),
            attention_w: LinearConfig::new(config.hidden, 1).init(device),
            classifier: LinearConfig::new(config.features, config.classes).init(device),
        }
    }

    /// Slide logits `[1, classes]` and patch attention `[n]` for a bag `[n, features]`.
    pub fn forward(&self, bag: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let n = bag.dims()[0];
        let scores = self
            .attention_w
            .forward(self.attention_v.forward(bag.clone()).tanh());
        let weights = softmax(scores.reshape([1, n]), 1);
        let pooled = weights.clone().matmul(bag);
        (self.classifier.forward(pooled), weights.reshape([n]))
    }

    /// Class probabilities of a bag.
    pub fn probabilities(&self, bag: Tensor<2>) -> Tensor<2> {
        softmax(self.forward(bag).0, 1)
    }
}

/// One slide's embeddings, row-major `[patches, features]`.
#[derive(Debug, Clone)]
pub struct Bag {
    /// Index into [`PatchSet::slides`].
    pub slide: usize,
    /// Flattened embeddings.
    pub embeddings: Vec<f32>,
    /// Rows.
    pub patches: usize,
}

impl Bag {
    fn tensor(&self, features: usize, device: &Device) -> Tensor<2> {
        Tensor::<1>::from_floats(self.embeddings.as_slice(), device)
            .reshape([self.patches, features])
    }
}

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

/// Trains a head on `train` bags for at most `epochs`, keeping the weights of the epoch with the
/// lowest validation loss (slides are few, so the head overfits quickly without this).
pub fn fit(
    train: &[Bag],
    valid: &[Bag],
    labels: &[usize],
    config: &MilConfig,
    epochs: usize,
    seed: u64,
    device: &Device,
) -> TrainResult<AttentionMil> {
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
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best = (f64::INFINITY, head.valid());
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        for &i in &order {
            let bag = &train[i];
            let (logits, _) = head.forward(bag.tensor(config.features, &autodiff));
            let loss = nll(logits, labels[bag.slide], config.classes, &autodiff);
            let grads = GradientsParams::from_grads(loss.backward(), &head);
            head = optim.step(1e-3, head, grads);
        }
        let frozen = head.valid();
        let mut total = 0.0;
        for bag in valid {
            let (logits, _) = frozen.forward(bag.tensor(config.features, device));
            total += scalar(nll(logits, labels[bag.slide], config.classes, device))?;
        }
        let loss = total / valid.len() as f64;
        if loss < best.0 {
            best = (loss, frozen);
        }
    }
    Ok(best.1)
}

/// Positive-class probability of each bag.
pub fn score(
    head: &AttentionMil,
    bags: &[Bag],
    features: usize,
    positive: usize,
    device: &Device,
) -> TrainResult<Vec<f64>> {
    bags.iter()
        .map(|bag| {
            let probs: Vec<f32> = head
                .probabilities(bag.tensor(features, device))
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| TrainError::Invalid(format!("attention output: {e:?}")))?;
            Ok(f64::from(probs[positive]))
        })
        .collect()
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
