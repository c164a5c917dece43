//! The Vision Transformer itself, laid out and named as timm's `VisionTransformer` so that a
//! foundation model's state dict maps onto it by name: `patch_embed.proj`, `cls_token`,
//! `reg_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}`
//! and `norm`. Only the forward pass of a frozen encoder is needed, so there is no dropout,
//! drop-path or classification head.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::pos_embed::resample_matrix;
use super::{Mlp as MlpKind, Pool, VitConfig};

/// Per-channel scaling of a residual branch (CaiT's LayerScale, timm's `ls1`/`ls2`).
#[derive(Module, Debug)]
pub struct LayerScale {
    gamma: Param<Tensor<1>>,
}

/// The patchifying convolution.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    proj: Conv2d,
}

/// Multi-head self-attention with one packed query/key/value projection.
#[derive(Module, Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, tokens, dim] = x.dims();
        let head_dim = dim / self.heads;
        // [B, N, 3D] → [3, B, heads, N, head_dim], the order timm splits it in.
        let qkv = self
            .qkv
            .forward(x)
            .reshape([batch, tokens, 3, self.heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| -> Tensor<4> {
            qkv.clone()
                .narrow(0, i, 1)
                .reshape([batch, self.heads, tokens, head_dim])
        };
        let context = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        );
        self.proj
            .forward(context.swap_dims(1, 2).reshape([batch, tokens, dim]))
    }
}

/// The feed-forward branch: GELU between two linears, or timm's packed SwiGLU (`fc1` emits the
/// gated half first, then the gate values: `silu(a) * b`).
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    swiglu: bool,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = self.fc1.forward(x);
        let activated = if self.swiglu {
            let half = hidden.dims()[2] / 2;
            silu(hidden.clone().narrow(2, 0, half)) * hidden.narrow(2, half, half)
        } else {
            gelu(hidden)
        };
        self.fc2.forward(activated)
    }
}

/// One pre-norm transformer block.
#[derive(Module, Debug)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    ls1: Option<LayerScale>,
    norm2: LayerNorm,
    mlp: Mlp,
    ls2: Option<LayerScale>,
}

fn scaled(x: Tensor<3>, scale: &Option<LayerScale>) -> Tensor<3> {
    match scale {
        Some(ls) => x * ls.gamma.val().unsqueeze::<3>(),
        None => x,
    }
}

impl Block {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + scaled(self.attn.forward(self.norm1.forward(x)), &self.ls1);
        x.clone() + scaled(self.mlp.forward(self.norm2.forward(x)), &self.ls2)
    }
}

/// A Vision Transformer encoder: images in, one pooled embedding per image out.
#[derive(Module, Debug)]
pub struct Vit {
    patch_embed: PatchEmbed,
    cls_token: Param<Tensor<3>>,
    reg_token: Option<Param<Tensor<3>>>,
    pos_embed: Param<Tensor<3>>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    patch: usize,
    grid: usize,
    registers: usize,
    pos_embed_prefix: bool,
    class_and_mean: bool,
}

impl Vit {
    /// A freshly initialised encoder on `device` (the weights come from [`super::import`]).
    pub fn new(config: &VitConfig, device: &Device) -> Self {
        let dim = config.dim;
        let norm = || {
            LayerNormConfig::new(dim)
                .with_epsilon(config.norm_eps)
                .init(device)
        };
        let scale = || {
            config.layer_scale.then(|| LayerScale {
                gamma: Param::from_tensor(Tensor::ones([dim], device)),
            })
        };
        let fc2_in = match config.mlp {
            MlpKind::Gelu => config.mlp_hidden,
            MlpKind::Swiglu => config.mlp_hidden / 2,
        };
        let blocks = (0..config.depth)
            .map(|_| Block {
                norm1: norm(),
                attn: Attention {
                    qkv: LinearConfig::new(dim, 3 * dim).init(device),
                    proj: LinearConfig::new(dim, dim).init(device),
                    heads: config.heads,
                },
                ls1: scale(),
                norm2: norm(),
                mlp: Mlp {
                    fc1: LinearConfig::new(dim, config.mlp_hidden).init(device),
                    fc2: LinearConfig::new(fc2_in, dim).init(device),
                    swiglu: config.mlp == MlpKind::Swiglu,
                },
                ls2: scale(),
            })
            .collect();
        let prefix = 1 + config.registers;
        let positions =
            config.grid * config.grid + if config.pos_embed_prefix { prefix } else { 0 };
        let small = |shape: [usize; 3]| {
            Param::from_tensor(Tensor::random(
                shape,
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        Self {
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, dim], [config.patch, config.patch])
                    .with_stride([config.patch, config.patch])
                    .init(device),
            },
            cls_token: small([1, 1, dim]),
            reg_token: (config.registers > 0).then(|| small([1, config.registers, dim])),
            pos_embed: small([1, positions, dim]),
            blocks,
            norm: norm(),
            patch: config.patch,
            grid: config.grid,
            registers: config.registers,
            pos_embed_prefix: config.pos_embed_prefix,
            class_and_mean: config.pool == Pool::ClassAndMean,
        }
    }

    /// The position embeddings for a `rows × cols` patch grid: the stored ones, or their grid
    /// part resampled as timm does for other input sizes (antialiased bicubic), prefix rows kept.
    fn positions(&self, rows: usize, cols: usize) -> Tensor<3> {
        let stored = self.pos_embed.val();
        if rows == self.grid && cols == self.grid {
            return stored;
        }
        let [_, len, dim] = stored.dims();
        let prefix = len - self.grid * self.grid;
        let device = stored.device();
        let grid = stored
            .clone()
            .narrow(1, prefix, self.grid * self.grid)
            .reshape([self.grid * self.grid, dim]);
        let weights = resample_matrix(self.grid, rows, cols);
        let resampled = Tensor::<1>::from_floats(weights.as_slice(), &device)
            .reshape([rows * cols, self.grid * self.grid])
            .matmul(grid)
            .reshape([1, rows * cols, dim]);
        if prefix == 0 {
            resampled
        } else {
            Tensor::cat(vec![stored.narrow(1, 0, prefix), resampled], 1)
        }
    }

    /// The final-norm tokens `[B, 1 + registers + patches, D]` of images `[B, 3, H, W]`
    /// (normalised RGB, sides multiples of the patch size).
    pub fn tokens(&self, images: Tensor<4>) -> Tensor<3> {
        let [batch, _, height, width] = images.dims();
        let (rows, cols) = (height / self.patch, width / self.patch);
        let patches = self.patch_embed.proj.forward(images);
        let dim = patches.dims()[1];
        let patches = patches.flatten::<3>(2, 3).swap_dims(1, 2);
        let positions = self.positions(rows, cols);
        let mut prefix = vec![self.cls_token.val().expand([batch, 1, dim])];
        if let Some(reg) = &self.reg_token {
            prefix.push(reg.val().expand([batch, self.registers, dim]));
        }
        let mut x = if self.pos_embed_prefix {
            prefix.push(patches);
            Tensor::cat(prefix, 1) + positions
        } else {
            prefix.push(patches + positions);
            Tensor::cat(prefix, 1)
        };
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.norm.forward(x)
    }

    /// The pooled embedding `[B, F]`: the class token, or the class token followed by the mean
    /// of the patch tokens (registers excluded), as the model's authors define its output.
    pub fn embed(&self, images: Tensor<4>) -> Tensor<2> {
        let tokens = self.tokens(images);
        let [batch, len, dim] = tokens.dims();
        let class = tokens.clone().narrow(1, 0, 1).reshape([batch, dim]);
        if !self.class_and_mean {
            return class;
        }
        let first_patch = 1 + self.registers;
        let mean = tokens
            .narrow(1, first_patch, len - first_patch)
            .mean_dim(1)
            .reshape([batch, dim]);
        Tensor::cat(vec![class, mean], 1)
    }

    /// The patch side in pixels.
    pub fn patch(&self) -> usize {
        self.patch
    }
}
