//! Attention multiple-instance learning: a slide is a bag of patch embeddings from the frozen
//! patch classifier; a small attention head (Ilse et al., 2018) learns which patches
//! matter and classifies the slide from their weighted mean. Slide labels are all a sign-out
//! gives us, so this head learns from exactly that, instead of assuming every patch carries the
//! slide's label as patch training does.
//!
//! The head and its scoring live here, where inference reaches them; embedding a dataset's
//! splits and fitting the head are training's (`pathfed_training::mil`).

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};

/// Patches a bag keeps at most (evenly sampled), so memory stays bounded on large slides.
pub const MAX_BAG: usize = 512;

/// How a head pools a bag's embeddings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// Attention weights from `tanh(V x)` (Ilse et al.'s plain attention).
    #[default]
    Attention,
    /// Gated attention, `tanh(V x) ⊙ sigmoid(U x)`: ABMIL as slide-level pipelines use it.
    GatedAttention,
    /// The plain mean of the bag, then the linear classifier: the baseline heads are judged
    /// against.
    Mean,
}

impl Pooling {
    /// Parses the CLI name: `abmil`, `attention` or `mean`.
    pub fn parse(name: &str) -> ModelResult<Self> {
        match name {
            "abmil" => Ok(Self::GatedAttention),
            "attention" => Ok(Self::Attention),
            "mean" => Ok(Self::Mean),
            other => Err(ModelError::Invalid(format!(
                "unknown head {other:?}: use abmil (gated attention), attention or mean"
            ))),
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::GatedAttention => "abmil",
            Self::Attention => "attention",
            Self::Mean => "mean",
        }
    }
}

/// The attention head's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MilConfig {
    /// Embedding width (the patch model's feature size).
    pub features: usize,
    /// Attention hidden width.
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
    /// Pooling; heads registered before it existed used plain attention.
    #[serde(default)]
    pub pooling: Pooling,
}

/// Attention pooling over a bag of embeddings, then a linear classifier.
#[derive(Module, Debug)]
pub struct AttentionMil {
    attention_v: Linear,
    attention_u: Option<Linear>,
    attention_w: Linear,
    classifier: Linear,
    mean: bool,
}

impl AttentionMil {
    /// A freshly initialised head on `device`.
    pub fn new(config: &MilConfig, device: &Device) -> Self {
        Self {
            attention_v: LinearConfig::new(config.features, config.hidden).init(device),
            attention_u: (config.pooling == Pooling::GatedAttention)
                .then(|| LinearConfig::new(config.features, config.hidden).init(device)),
            attention_w: LinearConfig::new(config.hidden, 1).init(device),
            classifier: LinearConfig::new(config.features, config.classes).init(device),
            mean: config.pooling == Pooling::Mean,
        }
    }

    /// Slide logits `[1, classes]` and patch attention `[n]` for a bag `[n, features]` (uniform
    /// for the mean-pooling baseline).
    pub fn forward(&self, bag: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let n = bag.dims()[0];
        let weights = if self.mean {
            Tensor::<2>::ones([1, n], &bag.device()) / n as f64
        } else {
            let mut hidden = self.attention_v.forward(bag.clone()).tanh();
            if let Some(gate) = &self.attention_u {
                hidden = hidden * burn::tensor::activation::sigmoid(gate.forward(bag.clone()));
            }
            softmax(self.attention_w.forward(hidden).reshape([1, n]), 1)
        };
        let pooled = weights.clone().matmul(bag);
        (self.classifier.forward(pooled), weights.reshape([n]))
    }

    /// Class probabilities of a bag.
    pub fn probabilities(&self, bag: Tensor<2>) -> Tensor<2> {
        softmax(self.forward(bag).0, 1)
    }

    /// Class probabilities `[n, classes]` of each embedding of `[n, features]` as a bag of its
    /// own: the per-patch scores a heatmap shows (pooling one embedding returns it unchanged).
    pub fn instance_probabilities(&self, embeddings: Tensor<2>) -> Tensor<2> {
        softmax(self.classifier.forward(embeddings), 1)
    }
}

/// One slide's embeddings, row-major `[patches, features]`.
#[derive(Debug, Clone)]
pub struct Bag {
    /// Index of the slide in the set it came from (training's `PatchSet::slides`).
    pub slide: usize,
    /// Flattened embeddings.
    pub embeddings: Vec<f32>,
    /// Rows.
    pub patches: usize,
}

impl Bag {
    /// The embeddings as a `[patches, features]` tensor on `device`.
    pub fn tensor(&self, features: usize, device: &Device) -> Tensor<2> {
        Tensor::<1>::from_floats(self.embeddings.as_slice(), device)
            .reshape([self.patches, features])
    }
}

/// Positive-class probability of each bag.
pub fn score(
    head: &AttentionMil,
    bags: &[Bag],
    features: usize,
    positive: usize,
    device: &Device,
) -> ModelResult<Vec<f64>> {
    bags.iter()
        .map(|bag| {
            let probs: Vec<f32> = head
                .probabilities(bag.tensor(features, device))
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| ModelError::Invalid(format!("attention output: {e:?}")))?;
            Ok(f64::from(probs[positive]))
        })
        .collect()
}
