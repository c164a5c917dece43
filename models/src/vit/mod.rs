//! Frozen pathology foundation-model encoders: a Vision Transformer family in Burn that covers
//! what UNI, UNI2-h, Virchow2, H-optimus and Prov-GigaPath need (patch 14 or 16, class and
//! register tokens, LayerScale, GELU or packed-SwiGLU MLPs, interpolated position embeddings,
//! each model's pooling), named presets that fix each model's architecture and preprocessing,
//! and the import of their timm weights (`safetensors` or PyTorch `.bin`) from the platform's
//! pretrained folder. Weights are gated downloads a hospital's researchers obtain themselves:
//! nothing here downloads anything.
//!
//! A ViT that is not a preset is described by `NAME.json` beside its weights
//! (`{"vit": VitConfig, "preprocess": Preprocess}`), which is also how the tests build small
//! random ones.

pub mod import;
pub mod model;
pub mod pos_embed;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};

pub use model::Vit;

/// The feed-forward branch of each block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mlp {
    /// `fc2(gelu(fc1(x)))`, exact GELU.
    Gelu,
    /// timm's `SwiGLUPacked`: `fc1` emits both halves, `fc2(silu(a) * b)`.
    Swiglu,
}

/// What an encoder returns per image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pool {
    /// The class token (UNI, UNI2-h, H-optimus, Prov-GigaPath).
    #[serde(rename = "class")]
    Class,
    /// The class token followed by the mean of the patch tokens (Virchow2).
    #[serde(rename = "class+mean")]
    ClassAndMean,
}

/// A ViT's shape, in timm's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// Patch side in pixels (14 or 16 for the published models).
    pub patch: usize,
    /// Token width.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP kind.
    pub mlp: Mlp,
    /// Output width of each block's `fc1` (for SwiGLU both halves together).
    pub mlp_hidden: usize,
    /// Register tokens after the class token.
    #[serde(default)]
    pub registers: usize,
    /// Whether `pos_embed` has rows for the class and register tokens (timm's
    /// `no_embed_class = False`) or for the patches only.
    pub pos_embed_prefix: bool,
    /// Whether blocks scale their branches (`ls1`/`ls2`, timm's `init_values`).
    pub layer_scale: bool,
    /// The pooled output.
    pub pool: Pool,
    /// Side of the patch grid the position embeddings were trained for.
    pub grid: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
}

fn default_eps() -> f64 {
    1e-6
}

impl VitConfig {
    /// Refuses shapes the model cannot be built with, before any weight is read.
    pub fn check(&self) -> ModelResult<()> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("patch", self.patch),
            ("dim", self.dim),
            ("depth", self.depth),
            ("heads", self.heads),
            ("mlp_hidden", self.mlp_hidden),
            ("grid", self.grid),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        }
        if self.heads > 0 && !self.dim.is_multiple_of(self.heads) {
            problems.push(format!(
                "dim {} is not a multiple of heads {}",
                self.dim, self.heads
            ));
        }
        if self.mlp == Mlp::Swiglu && !self.mlp_hidden.is_multiple_of(2) {
            problems.push(format!(
                "a SwiGLU mlp_hidden must be even (both halves), not {}",
                self.mlp_hidden
            ));
        }
        // Far above ViT-g (1,536 wide, 40 deep, 8 registers): a typo, not a model.
        if self.dim > 8192
            || self.depth > 128
            || self.mlp_hidden > 65_536
            || self.grid > 256
            || self.patch > 64
            || self.registers > 64
        {
            problems.push(
                "dim ≤ 8192, depth ≤ 128, mlp_hidden ≤ 65536, grid ≤ 256, patch ≤ 64 and \
                 registers ≤ 64"
                    .into(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Invalid(format!(
                "ViT configuration: {}",
                problems.join("; ")
            )))
        }
    }

    /// Width of the pooled embedding.
    pub fn features(&self) -> usize {
        match self.pool {
            Pool::Class => self.dim,
            Pool::ClassAndMean => 2 * self.dim,
        }
    }
}

/// How patches are prepared for an encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Input side in pixels.
    pub input_px: u32,
    /// Per-channel mean subtracted from RGB in [0, 1].
    pub mean: [f32; 3],
    /// Per-channel deviation divided by.
    pub std: [f32; 3],
    /// Resolution the model was trained at, µm per pixel.
    pub mpp: f64,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// An encoder: its architecture and preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSpec {
    /// Architecture.
    pub vit: VitConfig,
    /// Preprocessing.
    pub preprocess: Preprocess,
}

/// One named preset: what its published timm configuration fixes.
pub struct Preset {
    /// The name researchers use (`--encoder uni2-h`).
    pub name: &'static str,
    /// Who publishes it, for listings.
    pub model: &'static str,
    /// Architecture and preprocessing.
    pub spec: fn() -> EncoderSpec,
}

fn at_20x(input_px: u32, mean: [f32; 3], std: [f32; 3]) -> Preprocess {
    Preprocess {
        input_px,
        mean,
        std,
        mpp: 0.5,
    }
}

/// The supported models, from their authors' timm configurations. All are read at 0.5 µm/px
/// (20×) on 224 px patches.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "uni",
        model: "UNI (MahmoodLab), ViT-L/16",
        spec: || EncoderSpec {
            vit: VitConfig {
                patch: 16,
                dim: 1024,
                depth: 24,
                heads: 16,
                mlp: Mlp::Gelu,
                mlp_hidden: 4096,
                registers: 0,
                pos_embed_prefix: true,
                layer_scale: true,
                pool: Pool::Class,
                grid: 14,
                norm_eps: 1e-6,
            },
            preprocess: at_20x(224, IMAGENET_MEAN, IMAGENET_STD),
        },
    },
    Preset {
        name: "uni2-h",
        model: "UNI2-h (MahmoodLab), ViT-H/14, 8 registers",
        spec: || EncoderSpec {
            vit: VitConfig {
                patch: 14,
                dim: 1536,
                depth: 24,
                heads: 24,
                mlp: Mlp::Swiglu,
                mlp_hidden: 8192,
                registers: 8,
                pos_embed_prefix: false,
                layer_scale: true,
                pool: Pool::Class,
                grid: 16,
                norm_eps: 1e-6,
            },
            preprocess: at_20x(224, IMAGENET_MEAN, IMAGENET_STD),
        },
    },
    Preset {
        name: "virchow2",
        model: "Virchow2 (Paige), ViT-H/14, 4 registers",
        spec: || EncoderSpec {
            vit: VitConfig {
                patch: 14,
                dim: 1280,
                depth: 32,
                heads: 16,
                mlp: Mlp::Swiglu,
                mlp_hidden: 6832,
                registers: 4,
                pos_embed_prefix: true,
                layer_scale: true,
                pool: Pool::ClassAndMean,
                grid: 16,
                norm_eps: 1e-6,
            },
            preprocess: at_20x(224, IMAGENET_MEAN, IMAGENET_STD),
        },
    },
    Preset {
        name: "h-optimus-0",
        model: "H-optimus-0 (Bioptimus), ViT-g/14, 4 registers",
        spec: h_optimus,
    },
    Preset {
        name: "h-optimus-1",
        model: "H-optimus-1 (Bioptimus), ViT-g/14, 4 registers",
        spec: h_optimus,
    },
    Preset {
        name: "prov-gigapath",
        model: "Prov-GigaPath tile encoder (Microsoft), ViT-g/16",
        spec: || EncoderSpec {
            vit: VitConfig {
                patch: 16,
                dim: 1536,
                depth: 40,
                heads: 24,
                mlp: Mlp::Swiglu,
                mlp_hidden: 8192,
                registers: 0,
                pos_embed_prefix: true,
                layer_scale: true,
                pool: Pool::Class,
                grid: 14,
                norm_eps: 1e-6,
            },
            preprocess: at_20x(224, IMAGENET_MEAN, IMAGENET_STD),
        },
    },
];

fn h_optimus() -> EncoderSpec {
    EncoderSpec {
        vit: VitConfig {
            patch: 14,
            dim: 1536,
            depth: 40,
            heads: 24,
            mlp: Mlp::Swiglu,
            mlp_hidden: 8192,
            registers: 4,
            pos_embed_prefix: false,
            layer_scale: true,
            pool: Pool::Class,
            grid: 16,
            norm_eps: 1e-6,
        },
        preprocess: at_20x(
            224,
            [0.707_223, 0.578_729, 0.703_617],
            [0.211_883, 0.230_117, 0.177_517],
        ),
    }
}

/// The preset called `name`.
pub fn preset(name: &str) -> Option<EncoderSpec> {
    PRESETS.iter().find(|p| p.name == name).map(|p| (p.spec)())
}

/// Weight file names looked for, in order, for encoder `NAME`: beside the folder's other files,
/// or in a folder of its own as the models' authors publish them.
fn weight_candidates(dir: &Path, name: &str) -> Vec<PathBuf> {
    let own = dir.join(name);
    vec![
        dir.join(format!("{name}.safetensors")),
        dir.join(format!("{name}.bin")),
        dir.join(format!("{name}.pth")),
        own.join("model.safetensors"),
        own.join("pytorch_model.bin"),
    ]
}

/// An encoder found in the pretrained folder.
#[derive(Debug, Clone)]
pub struct ResolvedEncoder {
    /// Its name.
    pub name: String,
    /// Architecture and preprocessing.
    pub spec: EncoderSpec,
    /// The weights file.
    pub weights: PathBuf,
}

/// Finds encoder `name` in the pretrained folder `dir`: a preset's weights, or a ViT described
/// by `NAME.json`. Refuses, saying what it would need, a name that is neither and weights that
/// are not there.
pub fn resolve(dir: &Path, name: &str) -> ModelResult<ResolvedEncoder> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !plain {
        return Err(ModelError::Invalid(format!(
            "encoder {name:?}: a plain name (letters, digits, '-', '_', '.') such as {}",
            preset_names()
        )));
    }
    let sidecar = dir.join(format!("{name}.json"));
    // The size first: the description is read whole.
    let read = std::fs::metadata(&sidecar).and_then(|meta| {
        if meta.len() > 64 << 10 {
            Ok(Vec::new())
        } else {
            std::fs::read(&sidecar)
        }
    });
    let spec = match read {
        Ok(bytes) if !bytes.is_empty() => {
            serde_json::from_slice::<EncoderSpec>(&bytes).map_err(|e| {
                ModelError::Invalid(format!(
                    "{name}.json in the pretrained folder is not an encoder description: {e}; \
                     it needs {{\"vit\": {{\"patch\", \"dim\", \"depth\", \"heads\", \"mlp\": \
                     \"gelu\"|\"swiglu\", \"mlp_hidden\", \"registers\", \"pos_embed_prefix\", \
                     \"layer_scale\", \"pool\": \"class\"|\"class+mean\", \"grid\"}}, \
                     \"preprocess\": {{\"input_px\", \"mean\", \"std\", \"mpp\"}}}}"
                ))
            })?
        }
        Ok(_) => {
            return Err(ModelError::Invalid(format!(
                "{name}.json in the pretrained folder is empty or larger than 64 KiB"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match preset(name) {
            Some(spec) => spec,
            None => {
                return Err(ModelError::Invalid(format!(
                    "unknown encoder {name:?}: use a preset ({}) or describe your ViT in \
                     {name}.json beside its weights in the pretrained folder",
                    preset_names()
                )));
            }
        },
        Err(e) => return Err(ModelError::io(format!("reading {}", sidecar.display()), e)),
    };
    spec.vit.check()?;
    let pre = &spec.preprocess;
    if !(pre.input_px as usize).is_multiple_of(spec.vit.patch)
        || !(16..=2048).contains(&pre.input_px)
    {
        return Err(ModelError::Invalid(format!(
            "encoder {name}: input_px {} must be 16–2048 and a multiple of the patch size {}",
            pre.input_px, spec.vit.patch
        )));
    }
    let sane = pre.std.iter().all(|s| s.is_finite() && *s > 0.0)
        && pre.mean.iter().all(|m| m.is_finite())
        && pre.mpp.is_finite()
        && pre.mpp > 0.0;
    if !sane {
        return Err(ModelError::Invalid(format!(
            "encoder {name}: std must be positive, mean finite and mpp a positive number"
        )));
    }
    // A preset's name stands for that model: a description under it would replace it unseen.
    if preset(name).is_some() && sidecar.exists() {
        return Err(ModelError::Invalid(format!(
            "{name}.json in the pretrained folder would replace the {name} preset: rename it"
        )));
    }
    let candidates = weight_candidates(dir, name);
    let weights = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            ModelError::Invalid(format!(
                "encoder {name}: no weights in the pretrained folder; place the model's timm \
             weights, obtained from its authors, as {name}.safetensors, {name}.bin or \
             {name}/pytorch_model.bin"
            ))
        })?;
    Ok(ResolvedEncoder {
        name: name.to_string(),
        spec,
        weights,
    })
}

/// An encoder a researcher can choose, for listings.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EncoderEntry {
    /// Name to choose it by.
    pub name: String,
    /// The published model, or "custom ViT" for a `NAME.json`.
    pub model: String,
    /// Width of its embeddings.
    pub features: usize,
    /// Input side and resolution.
    pub input_px: u32,
    /// µm per pixel it reads at.
    pub mpp: f64,
    /// Whether its weights are in the pretrained folder.
    pub installed: bool,
}

/// Every preset, and every custom ViT described in `dir`, with whether its weights are there.
pub fn list(dir: &Path) -> Vec<EncoderEntry> {
    let mut out: Vec<EncoderEntry> = PRESETS
        .iter()
        .map(|p| {
            let spec = (p.spec)();
            EncoderEntry {
                name: p.name.to_string(),
                model: p.model.to_string(),
                features: spec.vit.features(),
                input_px: spec.preprocess.input_px,
                mpp: spec.preprocess.mpp,
                installed: weight_candidates(dir, p.name).iter().any(|w| w.is_file()),
            }
        })
        .collect();
    let mut custom: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_string)
        })
        .filter(|n| preset(n).is_none())
        .collect();
    custom.sort();
    for name in custom {
        if let Ok(found) = resolve(dir, &name) {
            out.push(EncoderEntry {
                model: "custom ViT".into(),
                features: found.spec.vit.features(),
                input_px: found.spec.preprocess.input_px,
                mpp: found.spec.preprocess.mpp,
                installed: true,
                name,
            });
        }
    }
    out
}

fn preset_names() -> String {
    PRESETS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_match_their_published_widths() {
        for p in PRESETS {
            let spec = (p.spec)();
            spec.vit
                .check()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(
                spec.preprocess.input_px as usize,
                spec.vit.grid * spec.vit.patch,
                "{}",
                p.name
            );
        }
        let width = |name| preset(name).map(|s| s.vit.features());
        assert_eq!(width("uni"), Some(1024));
        assert_eq!(width("uni2-h"), Some(1536));
        assert_eq!(width("virchow2"), Some(2560));
        assert_eq!(width("h-optimus-0"), Some(1536));
    }

    #[test]
    fn unknown_names_and_missing_weights_say_what_is_needed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = |name: &str| {
            resolve(dir.path(), name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("resnet").contains("unknown encoder \"resnet\""));
        assert!(err("resnet").contains("uni2-h"));
        assert!(err("../uni").contains("a plain name"));
        let missing = err("uni");
        assert!(missing.contains("uni/pytorch_model.bin"), "{missing}");
        std::fs::write(dir.path().join("mine.json"), b"{\"vit\": {}}").unwrap_or_default();
        assert!(err("mine").contains("not an encoder description"));
    }
}
