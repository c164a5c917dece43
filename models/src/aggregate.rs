//! Slide-level aggregation: how a slide's patch probabilities (or, for attention, its patch
//! embeddings) become one slide score, as training evaluates and inference reports it.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use crate::mil::{AttentionMil, MilConfig};

/// How patch probabilities become a slide's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Aggregation {
    /// Mean over the slide's patches.
    Mean,
    /// Mean of the `k` highest.
    TopK {
        /// How many patches.
        k: usize,
    },
    /// An attention-MIL head trained on the frozen model's patch embeddings ([`crate::mil`]).
    Attention,
}

impl Aggregation {
    /// Parses the CLI form: `mean`, `top-k:K` or `attention`.
    pub fn parse(text: &str) -> ModelResult<Self> {
        match text {
            "mean" => Ok(Self::Mean),
            "attention" => Ok(Self::Attention),
            other => other
                .strip_prefix("top-k:")
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|k| *k >= 1)
                .map(|k| Self::TopK { k })
                .ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "aggregation {other:?}: use mean, top-k:K (K ≥ 1) or attention"
                    ))
                }),
        }
    }

    /// The CLI form.
    pub fn name(self) -> String {
        match self {
            Self::Mean => "mean".into(),
            Self::TopK { k } => format!("top-k:{k}"),
            Self::Attention => "attention".into(),
        }
    }

    /// The slide score from its patches' scores (attention pools embeddings, not scores: here
    /// it falls back to the mean, which is what patch-level reports of such a model show).
    pub fn apply(self, scores: &mut [f64]) -> f64 {
        if scores.is_empty() {
            return f64::NAN;
        }
        let take = match self {
            Self::Mean | Self::Attention => scores.len(),
            Self::TopK { k } => {
                scores.sort_by(|a, b| b.total_cmp(a));
                k.clamp(1, scores.len())
            }
        };
        scores[..take].iter().sum::<f64>() / take as f64
    }
}

/// A trained attention-MIL head with its shape.
pub struct Aggregator {
    /// Its shape.
    pub config: MilConfig,
    /// The head, without autodiff.
    pub head: AttentionMil,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregations() {
        assert_eq!(Aggregation::Mean.apply(&mut [0.2, 0.4, 0.9]), 0.5);
        assert_eq!(Aggregation::TopK { k: 2 }.apply(&mut [0.2, 0.4, 0.9]), 0.65);
        assert_eq!(
            Aggregation::TopK { k: 9 }.apply(&mut [0.2, 0.4]),
            0.30000000000000004
        );
        assert!(Aggregation::Mean.apply(&mut []).is_nan());
    }
}
