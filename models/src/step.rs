//! The patch classifier's training and validation steps as Burn's `Learner` calls them. They
//! live beside [`ResNet`] because Burn's step traits must be implemented in the crate that
//! owns the model type; the batches themselves are built by training's batcher.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::model::ResNet;

/// A batch ready for the model.
#[derive(Debug, Clone)]
pub struct PatchBatch {
    /// `[B, 3, side, side]`, normalised per channel.
    pub images: Tensor<4>,
    /// `[B]` class indices.
    pub targets: Tensor<1, Int>,
    /// The patches, in batch order.
    pub patches: Vec<usize>,
}

impl TrainStep for ResNet {
    type Input = PatchBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: PatchBatch) -> TrainOutput<ClassificationOutput> {
        let item = classify(self, batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for ResNet {
    type Input = PatchBatch;
    type Output = ClassificationOutput;

    fn step(&self, batch: PatchBatch) -> ClassificationOutput {
        classify(self, batch)
    }
}

fn classify(model: &ResNet, batch: PatchBatch) -> ClassificationOutput {
    let logits = model.forward(batch.images);
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), batch.targets.clone());
    ClassificationOutput::new(loss, logits, batch.targets)
}
