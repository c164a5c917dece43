//! Attention multiple-instance learning: a slide is a bag of patch embeddings from the frozen
//! patch classifier; a small attention head (Ilse et al., 2018) learns which patches
//! matter and classifies the slide from their weighted mean. Slide labels are all a sign-out
//! gives us, so this head learns from exactly that, instead of assuming every patch carries the
//! slide's label as patch training does.
//!
//! A TransMIL-style head (Shao et al., 2021) is the other kind: the embeddings attend to each
//! other through transformer layers and a class token carries the slide.
//!
//! The head and its scoring live here, where inference reaches them; embedding a dataset's
//! splits and fitting the head are training's (`pathfed_training::mil`).

use burn::module::Param;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
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
    /// TransMIL-style: embeddings projected to the hidden width, a class token, two pre-norm
    /// transformer layers with full self-attention over the bag (TransMIL's Nyström
    /// approximation and PPEG position convolution are left out: bags hold at most
    /// [`MAX_BAG`] patches, sampled evenly, not a full grid), the class token classified.
    Transformer,
}

impl Pooling {
    /// Parses the CLI name: `abmil`, `transmil`, `attention` or `mean`.
    pub fn parse(name: &str) -> ModelResult<Self> {
        match name {
            "abmil" => Ok(Self::GatedAttention),
            "transmil" => Ok(Self::Transformer),
            "attention" => Ok(Self::Attention),
            "mean" => Ok(Self::Mean),
            other => Err(ModelError::Invalid(format!(
                "unknown head {other:?}: use abmil (gated attention), transmil (transformer), \
                 attention or mean"
            ))),
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::GatedAttention => "abmil",
            Self::Transformer => "transmil",
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
    /// Attention hidden width (the transformer's width, a multiple of its heads).
    pub hidden: usize,
    /// Classes.
    pub classes: usize,
    /// Pooling; heads registered before it existed used plain attention.
    #[serde(default)]
    pub pooling: Pooling,
}

/// Heads of the transformer head's attention.
const TRANSFORMER_HEADS: usize = 4;
/// Its layers.
const TRANSFORMER_LAYERS: usize = 2;

/// The transformer head's layers: projection, class token, encoder, final norm.
#[derive(Module, Debug)]
pub struct TransformerPool {
    project: Linear,
    class_token: Param<Tensor<3>>,
    encoder: TransformerEncoder,
    norm: LayerNorm,
}

impl TransformerPool {
    fn new(config: &MilConfig, device: &Device) -> Self {
        let width = config.hidden;
        Self {
            project: LinearConfig::new(config.features, width).init(device),
            class_token: Param::from_tensor(Tensor::random(
                [1, 1, width],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            encoder: TransformerEncoderConfig::new(
                width,
                4 * width,
                TRANSFORMER_HEADS,
                TRANSFORMER_LAYERS,
            )
            .with_norm_first(true)
            .init(device),
            norm: LayerNormConfig::new(width).init(device),
        }
    }

    /// The class token's output `[b, width]` for `b` bags of `n` embeddings, `[b, n, features]`.
    fn pool(&self, bags: Tensor<3>) -> Tensor<2> {
        let tokens = burn::tensor::activation::relu(self.project.forward(bags));
        let [batch, _, width] = tokens.dims();
        let class = self.class_token.val().expand([batch, 1, width]);
        let encoded = self
            .encoder
            .forward(TransformerEncoderInput::new(Tensor::cat(
                vec![class, tokens],
                1,
            )));
        self.norm
            .forward(encoded.narrow(1, 0, 1).reshape([batch, width]))
    }
}

/// Attention pooling over a bag of embeddings (or the transformer head), then a linear
/// classifier.
#[derive(Module, Debug)]
pub struct AttentionMil {
    attention_v: Linear,
    attention_u: Option<Linear>,
    attention_w: Linear,
    classifier: Linear,
    mean: bool,
    transformer: Option<TransformerPool>,
}

impl AttentionMil {
    /// A freshly initialised head on `device`.
    pub fn new(config: &MilConfig, device: &Device) -> Self {
        let transformer =
            (config.pooling == Pooling::Transformer).then(|| TransformerPool::new(config, device));
        // The transformer's class token is `hidden` wide; the other heads pool embeddings.
        let pooled = if transformer.is_some() {
            config.hidden
        } else {
            config.features
        };
        Self {
            attention_v: LinearConfig::new(config.features, config.hidden).init(device),
            attention_u: (config.pooling == Pooling::GatedAttention)
                .then(|| LinearConfig::new(config.features, config.hidden).init(device)),
            attention_w: LinearConfig::new(config.hidden, 1).init(device),
            classifier: LinearConfig::new(pooled, config.classes).init(device),
            mean: config.pooling == Pooling::Mean,
            transformer,
        }
    }

    /// Slide logits `[1, classes]` and patch attention `[n]` for a bag `[n, features]` (uniform
    /// for the mean-pooling baseline and the transformer, whose attention is spread over its
    /// layers and heads).
    pub fn forward(&self, bag: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
        let [n, features] = bag.dims();
        if let Some(transformer) = &self.transformer {
            let device = bag.device();
            let pooled = transformer.pool(bag.reshape([1, n, features]));
            let uniform = Tensor::<1>::ones([n], &device) / n as f64;
            return (self.classifier.forward(pooled), uniform);
        }
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
    /// own: the per-patch scores a heatmap shows (attention pooling of one embedding returns
    /// it unchanged; the transformer runs the `n` one-patch bags as one batch).
    pub fn instance_probabilities(&self, embeddings: Tensor<2>) -> Tensor<2> {
        let pooled = match &self.transformer {
            Some(transformer) => {
                let [n, features] = embeddings.dims();
                transformer.pool(embeddings.reshape([n, 1, features]))
            }
            None => embeddings,
        };
        softmax(self.classifier.forward(pooled), 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of head scores a bag and, patch by patch, each embedding as a bag of its own.
    #[test]
    fn every_head_scores_a_bag_and_its_patches_alone() {
        let device = Device::flex();
        let bag = Tensor::<2>::random([5, 8], burn::tensor::Distribution::Default, &device);
        for pooling in [
            Pooling::Attention,
            Pooling::GatedAttention,
            Pooling::Mean,
            Pooling::Transformer,
        ] {
            let config = MilConfig {
                features: 8,
                hidden: 16,
                classes: 3,
                pooling,
            };
            assert_eq!(Pooling::parse(pooling.name()).ok(), Some(pooling));
            let head = AttentionMil::new(&config, &device);
            let (logits, weights) = head.forward(bag.clone());
            assert_eq!(logits.dims(), [1, 3], "{pooling:?}");
            assert_eq!(weights.dims(), [5], "{pooling:?}");
            let each = head.instance_probabilities(bag.clone());
            assert_eq!(each.dims(), [5, 3], "{pooling:?}");
            // Patch 2 alone is a bag of one: the batched scores are that bag's.
            let alone = head.probabilities(bag.clone().narrow(0, 2, 1));
            let diff = (each.narrow(0, 2, 1) - alone)
                .abs()
                .max()
                .into_data()
                .try_into_vec::<f32>()
                .map_or(f32::NAN, |v| v[0]);
            assert!(diff < 1e-5, "{pooling:?}: {diff}");
        }
    }
}
