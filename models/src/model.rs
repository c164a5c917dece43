//! The patch classifier: a ResNet with basic blocks, named as torchvision names its `resnet18`
//! (`conv1`, `bn1`, `layer1.0.conv1`, …, `fc`) so pretrained weights map over with one rename
//! (`downsample.0/1` → `downsample.conv/bn`). `resnet18` is the published layout for 224 px
//! patches; `resnet-small` (one block per stage, 16–128 channels, no max-pool) trains on a CPU
//! in seconds and is what the tests use.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};

/// Which layout to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Architecture {
    /// ResNet-18: 7×7 stem, max-pool, 2-2-2-2 blocks of 64–512 channels.
    Resnet18,
    /// One block per stage, 16–128 channels, 3×3 stem: for CPU runs and tests.
    ResnetSmall,
}

impl Architecture {
    /// Parses the CLI name.
    pub fn parse(name: &str) -> ModelResult<Self> {
        match name {
            "resnet18" => Ok(Self::Resnet18),
            "resnet-small" => Ok(Self::ResnetSmall),
            other => Err(ModelError::Invalid(format!(
                "unknown model {other:?}: use resnet18 or resnet-small"
            ))),
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resnet18 => "resnet18",
            Self::ResnetSmall => "resnet-small",
        }
    }

    fn widths(self) -> [usize; 4] {
        match self {
            Self::Resnet18 => [64, 128, 256, 512],
            Self::ResnetSmall => [16, 32, 64, 128],
        }
    }

    fn blocks(self) -> usize {
        match self {
            Self::Resnet18 => 2,
            Self::ResnetSmall => 1,
        }
    }
}

/// What defines a model's shape: saved beside its weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Layout.
    pub architecture: Architecture,
    /// Output classes.
    pub classes: usize,
    /// Input side in pixels.
    pub input_px: u32,
}

fn conv(inp: usize, out: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([inp, out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .init(device)
}

/// The 1×1 projection of a block that changes width or resolution.
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// Two 3×3 convolutions with a shortcut.
#[derive(Module, Debug)]
pub struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
    relu: Relu,
}

impl BasicBlock {
    fn new(inp: usize, out: usize, stride: usize, device: &Device) -> Self {
        let downsample = (stride != 1 || inp != out).then(|| Downsample {
            conv: conv(inp, out, 1, stride, device),
            bn: BatchNormConfig::new(out).init(device),
        });
        Self {
            conv1: conv(inp, out, 3, stride, device),
            bn1: BatchNormConfig::new(out).init(device),
            conv2: conv(out, out, 3, 1, device),
            bn2: BatchNormConfig::new(out).init(device),
            downsample,
            relu: Relu::new(),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(d) => d.bn.forward(d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let y = self.relu.forward(self.bn1.forward(self.conv1.forward(x)));
        let y = self.bn2.forward(self.conv2.forward(y));
        self.relu.forward(y + shortcut)
    }
}

/// A ResNet patch classifier.
#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    relu: Relu,
    maxpool: Option<MaxPool2d>,
    layer1: Vec<BasicBlock>,
    layer2: Vec<BasicBlock>,
    layer3: Vec<BasicBlock>,
    layer4: Vec<BasicBlock>,
    avgpool: AdaptiveAvgPool2d,
    fc: Linear,
}

impl ResNet {
    /// A freshly initialised model on `device` (seed the device first for reproducible weights).
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let arch = config.architecture;
        let w = arch.widths();
        let (stem, maxpool) = match arch {
            Architecture::Resnet18 => (
                conv(3, w[0], 7, 2, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            Architecture::ResnetSmall => (conv(3, w[0], 3, 2, device), None),
        };
        let stage = |inp: usize, out: usize, stride: usize| -> Vec<BasicBlock> {
            (0..arch.blocks())
                .map(|i| {
                    if i == 0 {
                        BasicBlock::new(inp, out, stride, device)
                    } else {
                        BasicBlock::new(out, out, 1, device)
                    }
                })
                .collect()
        };
        Self {
            conv1: stem,
            bn1: BatchNormConfig::new(w[0]).init(device),
            relu: Relu::new(),
            maxpool,
            layer1: stage(w[0], w[0], 1),
            layer2: stage(w[0], w[1], 2),
            layer3: stage(w[1], w[2], 2),
            layer4: stage(w[2], w[3], 2),
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(w[3], config.classes).init(device),
        }
    }

    /// The layout this model was built with: of the two, only resnet18 max-pools after its stem.
    pub fn architecture(&self) -> Architecture {
        if self.maxpool.is_some() {
            Architecture::Resnet18
        } else {
            Architecture::ResnetSmall
        }
    }

    /// The pooled embedding of images `[B, 3, H, W]` (normalised RGB): `[B, C]`.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self
            .relu
            .forward(self.bn1.forward(self.conv1.forward(images)));
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        self.avgpool.forward(x).flatten(1, 3)
    }

    /// Class logits `[B, classes]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.embed(images))
    }

    /// Class probabilities `[B, classes]`.
    pub fn probabilities(&self, images: Tensor<4>) -> Tensor<2> {
        softmax(self.forward(images), 1)
    }

    /// The pooled embeddings `[B, C]` and class probabilities `[B, classes]` of one pass, for
    /// slide inference that both maps patches and pools their embeddings.
    pub fn embed_and_classify(&self, images: Tensor<4>) -> (Tensor<2>, Tensor<2>) {
        let embeddings = self.embed(images);
        let probabilities = softmax(self.fc.forward(embeddings.clone()), 1);
        (embeddings, probabilities)
    }
}

/// ImageNet channel means and deviations, which pretrained ResNets expect.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// See [`MEAN`].
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_map_patches_to_class_logits() {
        let device = Device::flex();
        for (arch, px, params) in [
            (Architecture::ResnetSmall, 64, 309_363),
            // torchvision's resnet18 has 11,689,512 with 1,000 classes: 11,176,512 before the
            // head, plus 512 × 3 + 3 here, plus the running mean and variance of its 4,800
            // batch-norm channels, which Burn counts.
            (Architecture::Resnet18, 64, 11_178_051 + 9_600),
        ] {
            let config = ModelConfig {
                architecture: arch,
                classes: 3,
                input_px: px,
            };
            let model = ResNet::new(&config, &device);
            let out = model.probabilities(Tensor::zeros([2, 3, px as usize, px as usize], &device));
            assert_eq!(out.dims(), [2, 3]);
            let sums: Vec<f32> = out
                .sum_dim(1)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
            assert_eq!(model.num_params(), params, "{}", arch.name());
        }
    }
}
