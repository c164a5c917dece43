//! A foundation model's timm weights into [`Vit`]: the state dict's names are ours already, so
//! loading is a matter of checking that every tensor is there with the shape the preset
//! expects. What does not fit is refused naming the tensors in timm's terms (PyTorch's
//! `[out, in]` for linear weights), never a half-loaded encoder.

use std::path::Path;

use burn::prelude::*;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter,
    SafetensorsStore,
};
use burn::tensor::DType;

use super::{EncoderSpec, Vit};
use crate::error::{ModelError, ModelResult};
use crate::import::{Format, ImportReport, check_file, describe_error, listing, read_renamed};

/// Files above this are refused before parsing: ViT-g in float32 (H-optimus, Prov-GigaPath) is
/// about 4.5 GB.
pub const MAX_FILE_BYTES: u64 = 8 << 30;

/// Builds the encoder `spec` describes on `device` and fills it from `path` (`.safetensors`, or a
/// PyTorch `.bin`/`.pth`/`.pt` state dict, under timm's names). Floats are cast to the device's
/// precision. Every tensor of the model must come from the file; tensors the encoder has no
/// place for (a classification head, DINOv2's `mask_token`) are listed in the report.
pub fn load(spec: &EncoderSpec, path: &Path, device: &Device) -> ModelResult<(Vit, ImportReport)> {
    spec.vit.check()?;
    let format = Format::of(path)?;
    check_file(path, MAX_FILE_BYTES, "ViT weights")?;
    let tensors = read_renamed(path, format, &[])?;
    if tensors.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{} holds no tensors",
            path.display()
        )));
    }
    let file_names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let mut model = Vit::new(&spec.vit, device);
    let float: DType = device.settings().float_dtype.into();
    let adapter: Box<dyn ModuleAdapter> =
        Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(float)));
    let result = model.apply(tensors, None, Some(adapter), false);

    if result.applied.is_empty() && result.errors.is_empty() {
        let mut names = file_names;
        names.sort();
        return Err(ModelError::Invalid(format!(
            "no tensor of {} matches a ViT layer: the file has {} tensors such as {}, where a \
             timm ViT's are named like patch_embed.proj.weight, cls_token, pos_embed, \
             blocks.0.attn.qkv.weight and norm.weight",
            path.display(),
            names.len(),
            listing(&names),
        )));
    }
    let mut problems = Vec::new();
    if !result.errors.is_empty() {
        let described: Vec<String> = result
            .errors
            .iter()
            .map(|e| describe_error(e, timm_name, torch_shape, "encoder"))
            .collect();
        problems.push(format!(
            "{} tensor(s) do not fit: {}",
            described.len(),
            listing(&described)
        ));
        if result.errors.len() > result.applied.len() {
            problems.push(
                "most layers differ, so the file is probably for another model than this \
                 preset"
                    .into(),
            );
        }
    }
    if !result.missing.is_empty() {
        let mut names: Vec<String> = result.missing.iter().map(|(p, _)| timm_name(p)).collect();
        names.sort();
        problems.push(format!(
            "the file lacks {} tensor(s) the encoder needs: {}",
            names.len(),
            listing(&names)
        ));
    }
    if !problems.is_empty() {
        return Err(ModelError::Invalid(format!(
            "cannot load {} as this ViT ({} wide, {} blocks, patch {}): {}",
            path.display(),
            spec.vit.dim,
            spec.vit.depth,
            spec.vit.patch,
            problems.join("; ")
        )));
    }
    // A classification head or DINOv2's mask token is expected in a checkpoint and not needed;
    // anything else unused means the description lacks a part the model has (registers,
    // LayerScale, a norm), and the embeddings would be wrong.
    let mut unused = result.unused;
    unused.sort();
    let unexpected: Vec<String> = unused
        .iter()
        .filter(|n| !n.starts_with("head.") && n.as_str() != "mask_token")
        .cloned()
        .collect();
    if !unexpected.is_empty() {
        return Err(ModelError::Invalid(format!(
            "cannot load {} as this ViT: the file has {} tensor(s) it has no place for: {}; \
             the description probably lacks registers, LayerScale or a norm the model has",
            path.display(),
            unexpected.len(),
            listing(&unexpected)
        )));
    }
    let report = ImportReport {
        loaded: result.applied.len(),
        skipped: Vec::new(),
        unused,
    };
    tracing::info!(
        file = %path.display(),
        loaded = report.loaded,
        unused = report.unused.len(),
        "imported encoder weights"
    );
    Ok((model, report))
}

/// Writes `model` to `path` as a safetensors file under timm's names and PyTorch's layouts, as
/// [`load`] reads it: for benchmarks and tests, which have no published weights to use.
pub fn save_timm(model: &Vit, path: &Path) -> ModelResult<()> {
    let mut store = SafetensorsStore::from_file(path).with_to_adapter(BurnToPyTorchAdapter);
    model
        .save_into(&mut store)
        .map_err(|e| ModelError::Invalid(format!("writing {}: {e}", path.display())))
}

/// A model path as timm names it: LayerNorms' `gamma`/`beta` are `weight`/`bias` there, while
/// LayerScale's `gamma` keeps its name.
fn timm_name(path: &str) -> String {
    let layer_scale = path.ends_with(".ls1.gamma") || path.ends_with(".ls2.gamma");
    if let (false, Some(layer)) = (layer_scale, path.strip_suffix(".gamma")) {
        format!("{layer}.weight")
    } else if let Some(layer) = path.strip_suffix(".beta") {
        format!("{layer}.bias")
    } else {
        path.to_string()
    }
}

/// A shape as PyTorch shows it: the adapter transposed linear weights to Burn's `[in, out]`.
fn torch_shape(path: &str, dims: &[usize]) -> Vec<usize> {
    let mut dims = dims.to_vec();
    let linear = [".qkv.weight", ".proj.weight", ".fc1.weight", ".fc2.weight"]
        .iter()
        .any(|s| path.ends_with(s))
        && !path.starts_with("patch_embed.");
    if linear {
        dims.reverse();
    }
    dims
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_shapes_are_reported_as_timm_spells_them() {
        assert_eq!(timm_name("blocks.3.norm1.gamma"), "blocks.3.norm1.weight");
        assert_eq!(timm_name("norm.beta"), "norm.bias");
        assert_eq!(timm_name("blocks.0.ls1.gamma"), "blocks.0.ls1.gamma");
        assert_eq!(
            torch_shape("blocks.1.attn.qkv.weight", &[48, 144]),
            vec![144, 48]
        );
        assert_eq!(
            torch_shape("patch_embed.proj.weight", &[48, 3, 7, 7]),
            vec![48, 3, 7, 7]
        );
    }
}
