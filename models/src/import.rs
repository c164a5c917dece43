//! Pretrained weights for the ResNet from a safetensors file or a PyTorch checkpoint, so a
//! researcher can fine-tune an ImageNet (or pathology) backbone instead of training from
//! scratch. torchvision's names map onto ours with one rename; what does not fit is refused with
//! a message naming the tensors, rather than loading a half-initialised model.

use std::path::Path;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    ApplyError, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PathFilter,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, ModelResult};
use crate::model::ResNet;

/// Files above this are refused before any parsing: ResNet-152 is about 240 MB, so anything this
/// large is not a ResNet checkpoint, and the stores would map or read all of it.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// How many names an error message lists before summarising the rest.
const LISTED: usize = 5;

/// What to load besides the backbone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportOptions {
    /// Leave the classification head (`fc`) freshly initialised: for fine-tuning a backbone
    /// trained on other classes (ImageNet's 1,000) on ours.
    pub skip_head: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Model tensors filled from the file (batch-norm running statistics included).
    pub loaded: usize,
    /// Model tensors left as initialised on request (the head, with `skip_head`).
    pub skipped: Vec<String>,
    /// Tensors of the file that no layer of the model takes, by their names in the file.
    /// torchvision's `num_batches_tracked` counters are left out: Burn's batch norm keeps none.
    pub unused: Vec<String>,
}

/// The container, told by the file name's extension.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Format {
    Safetensors,
    Pytorch,
}

impl Format {
    pub(crate) fn of(path: &Path) -> ModelResult<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("safetensors") => Ok(Self::Safetensors),
            Some("pt" | "pth" | "bin") => Ok(Self::Pytorch),
            _ => Err(ModelError::Invalid(format!(
                "{}: unknown weight format; expected a .safetensors file or a PyTorch \
                 .pt/.pth/.bin checkpoint",
                path.display()
            ))),
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Safetensors => "safetensors file",
            Self::Pytorch => "PyTorch checkpoint",
        }
    }
}

/// Loads pretrained weights from `path` into `model` and returns the model with them.
///
/// The format follows the extension: `.safetensors`, or `.pt`/`.pth`/`.bin` for a PyTorch
/// checkpoint (a plain state dict). Names are torchvision's (`layer2.0.downsample.0.weight`,
/// batch-norm `weight`/`bias`); floating-point tensors are converted to the model's precision.
/// Every model tensor must come from the file, except the head when
/// [`ImportOptions::skip_head`] is set; file tensors the model has no place for are listed in
/// the report. A file that is missing, unreadable, of the wrong shape or missing tensors is
/// refused with [`ModelError::Invalid`] naming what does not fit.
pub fn load_pretrained(
    mut model: ResNet,
    path: &Path,
    options: &ImportOptions,
) -> ModelResult<(ResNet, ImportReport)> {
    let format = Format::of(path)?;
    check_file(path, MAX_FILE_BYTES, "ResNet weights")?;
    let tensors = read_tensors(path, format)?;
    if tensors.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{} holds no tensors",
            path.display()
        )));
    }
    let file_names: Vec<String> = tensors.iter().map(|t| file_name(&t.name)).collect();

    // A file keeps its own precision on load (an f64 or f16 export would make an f64 or f16
    // layer), so floats are cast to what the model computes in.
    let float: DType = model
        .devices()
        .first()
        .map_or(DType::F32, |d| d.settings().float_dtype.into());
    let adapter: Box<dyn ModuleAdapter> =
        Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(float)));
    let filter = options
        .skip_head
        .then(|| PathFilter::new().with_predicate(|path, _| !is_head(path)));
    let result = model.apply(tensors, filter, Some(adapter), false);

    let arch = model.architecture().name();
    if result.applied.is_empty() && result.errors.is_empty() {
        return Err(ModelError::Invalid(format!(
            "no tensor of {} matches a {arch} layer: the file has {} tensors such as {}, \
             where the model's are named like conv1.weight, bn1.weight, layer1.0.conv1.weight",
            path.display(),
            file_names.len(),
            listing(&file_names),
        )));
    }

    let (head_missing, missing): (Vec<String>, Vec<String>) = result
        .missing
        .iter()
        .map(|(p, _)| p.clone())
        .partition(|p| options.skip_head && is_head(p));
    let mut problems = Vec::new();
    if !result.errors.is_empty() {
        problems.push(tensor_errors(&result.errors, result.applied.len(), arch));
    }
    if !missing.is_empty() {
        let mut names: Vec<String> = missing.iter().map(|p| torchvision_name(p)).collect();
        names.sort();
        let mut problem = format!(
            "the file lacks {} tensor(s) the model needs: {}",
            names.len(),
            listing(&names)
        );
        if missing.iter().all(|p| is_head(p)) {
            problem.push_str(
                "; it has no classification head: pass skip_head (--skip-head) to train a \
                 fresh one",
            );
        }
        problems.push(problem);
    }
    if !problems.is_empty() {
        return Err(ModelError::Invalid(format!(
            "cannot load {} into the {arch} model: {}",
            path.display(),
            problems.join("; ")
        )));
    }

    let mut skipped: Vec<String> = result.skipped.into_iter().chain(head_missing).collect();
    skipped.sort();
    skipped.dedup();
    let unused: Vec<String> = result
        .unused
        .iter()
        .filter(|n| !n.ends_with(".num_batches_tracked"))
        .map(|n| file_name(n))
        .collect();
    let report = ImportReport {
        loaded: result.applied.len(),
        skipped,
        unused,
    };
    tracing::info!(
        file = %path.display(),
        loaded = report.loaded,
        skipped = report.skipped.len(),
        unused = report.unused.len(),
        "imported pretrained weights"
    );
    Ok((model, report))
}

/// Refuses what is not a regular file of a plausible size (at most `limit` bytes of `what`)
/// before a store maps or parses it: the path may come from a researcher's upload.
pub(crate) fn check_file(path: &Path, limit: u64, what: &str) -> ModelResult<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Invalid(format!(
                "{} does not exist",
                path.display()
            )));
        }
        Err(e) => return Err(ModelError::io(format!("reading {}", path.display()), e)),
    };
    if !meta.is_file() {
        return Err(ModelError::Invalid(format!(
            "{} is not a file",
            path.display()
        )));
    }
    if meta.len() > limit {
        return Err(ModelError::Invalid(format!(
            "{} is {} MiB, more than the {} MiB accepted for {what}",
            path.display(),
            meta.len() >> 20,
            limit >> 20
        )));
    }
    Ok(())
}

/// torchvision wraps a projection shortcut in a Sequential (`downsample.0`/`.1`); ours names
/// its two layers.
const RESNET_RENAMES: [(&str, &str); 2] = [
    (r"\.downsample\.0\.", ".downsample.conv."),
    (r"\.downsample\.1\.", ".downsample.bn."),
];

fn read_tensors(path: &Path, format: Format) -> ModelResult<Vec<PackTensor>> {
    read_renamed(path, format, &RESNET_RENAMES)
}

/// The file's tensors (lazily: only the header is read here), renamed by the `(pattern,
/// replacement)` pairs to our layout.
pub(crate) fn read_renamed(
    path: &Path,
    format: Format,
    renames: &[(&str, &str)],
) -> ModelResult<Vec<PackTensor>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        ModelError::Invalid(format!(
            "{} is not a readable {}: {e}",
            path.display(),
            format.describe()
        ))
    };
    match format {
        Format::Safetensors => {
            let mut store = SafetensorsStore::from_file(path);
            for &(from, to) in renames {
                store = store.with_key_remapping(from, to);
            }
            let tensors = store.get_all_tensors().map_err(|e| unreadable(&e))?;
            Ok(tensors.values().cloned().collect())
        }
        Format::Pytorch => {
            // Renumbering layer indices would silently shift `layer1.1` into a missing
            // `layer1.0`; the layouts we load number their layers contiguously already.
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            for &(from, to) in renames {
                store = store.with_key_remapping(from, to);
            }
            let tensors = store.get_all_tensors().map_err(|e| unreadable(&e))?;
            Ok(tensors.values().cloned().collect())
        }
    }
}

/// Whether a model path belongs to the classification head.
fn is_head(path: &str) -> bool {
    path.starts_with("fc.")
}

/// A (renamed) file tensor's name as the file spells it.
fn file_name(name: &str) -> String {
    name.replace(".downsample.conv.", ".downsample.0.")
        .replace(".downsample.bn.", ".downsample.1.")
}

/// A model path as torchvision names it, which is what a researcher finds in their file.
fn torchvision_name(path: &str) -> String {
    let name = file_name(path);
    if let Some(layer) = name.strip_suffix(".gamma") {
        format!("{layer}.weight")
    } else if let Some(layer) = name.strip_suffix(".beta") {
        format!("{layer}.bias")
    } else {
        name
    }
}

/// The first few names, and how many more.
pub(crate) fn listing(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(LISTED)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED {
        out.push_str(&format!(" and {} more", names.len() - LISTED));
    }
    out
}

/// A shape in PyTorch's orientation: the adapter transposed the head's weight to Burn's
/// `[in, out]`, but the researcher knows it as `[out, in]`.
fn torch_shape(path: &str, dims: &[usize]) -> Vec<usize> {
    let mut dims = dims.to_vec();
    if path == "fc.weight" {
        dims.reverse();
    }
    dims
}

/// The classes a head tensor of Burn shape `dims` stands for.
fn head_classes(path: &str, dims: &[usize]) -> Option<usize> {
    match path {
        "fc.weight" => dims.get(1).copied(),
        "fc.bias" => dims.first().copied(),
        _ => None,
    }
}

/// One sentence on the tensors that were found but could not be used.
fn tensor_errors(errors: &[ApplyError], applied: usize, arch: &str) -> String {
    let mut head = None;
    let described: Vec<String> = errors
        .iter()
        .map(|e| {
            if let ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } = e
                && let (Some(file), Some(model)) = (
                    head_classes(path, found.as_slice()),
                    head_classes(path, expected.as_slice()),
                )
            {
                head = Some((file, model));
            }
            describe_error(e, torchvision_name, torch_shape, "model")
        })
        .collect();
    let mut out = format!(
        "{} tensor(s) do not fit: {}",
        described.len(),
        listing(&described)
    );
    if let Some((file, model)) = head {
        out.push_str(&format!(
            "; the file has a {file}-class head (fc) and the model {model} classes: pass \
             skip_head (--skip-head) to load the backbone only and train a fresh head"
        ));
    }
    if errors.len() > applied {
        out.push_str(&format!(
            "; most layers differ, so the file is probably for another architecture than {arch}"
        ));
    }
    out
}

/// One tensor that was found but could not be used, in the file's own names (`name`) and
/// PyTorch's shapes (`shape`), against the `holder` it was meant for.
pub(crate) fn describe_error(
    error: &ApplyError,
    name: fn(&str) -> String,
    shape: fn(&str, &[usize]) -> Vec<usize>,
    holder: &str,
) -> String {
    match error {
        ApplyError::ShapeMismatch {
            path,
            expected,
            found,
        } => format!(
            "{} is {:?} in the file but {:?} in the {holder}",
            name(path),
            shape(path, found.as_slice()),
            shape(path, expected.as_slice())
        ),
        ApplyError::DTypeMismatch {
            path,
            expected,
            found,
        } => format!(
            "{} holds {found:?} values where the {holder} takes {expected:?}",
            name(path)
        ),
        ApplyError::AdapterError { path, message } | ApplyError::LoadError { path, message } => {
            format!("{} could not be read: {message}", name(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_names_map_back_to_torchvision() {
        assert_eq!(
            torchvision_name("layer2.0.downsample.bn.gamma"),
            "layer2.0.downsample.1.weight"
        );
        assert_eq!(
            torchvision_name("layer2.0.downsample.conv.weight"),
            "layer2.0.downsample.0.weight"
        );
        assert_eq!(torchvision_name("bn1.beta"), "bn1.bias");
        assert_eq!(
            torchvision_name("layer1.0.bn2.running_var"),
            "layer1.0.bn2.running_var"
        );
        assert_eq!(torch_shape("fc.weight", &[128, 3]), vec![3, 128]);
        assert_eq!(
            torch_shape("conv1.weight", &[16, 3, 3, 3]),
            vec![16, 3, 3, 3]
        );
    }

    #[test]
    fn import_format_follows_the_extension() {
        assert!(matches!(
            Format::of(Path::new("a/resnet18.SafeTensors")),
            Ok(Format::Safetensors)
        ));
        for name in ["w.pt", "w.pth", "pytorch_model.bin"] {
            assert!(matches!(Format::of(Path::new(name)), Ok(Format::Pytorch)));
        }
        let err = Format::of(Path::new("weights.h5"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("unknown weight format")),
            "{err:?}"
        );
    }

    #[test]
    fn import_lists_a_few_names_and_counts_the_rest() {
        let names: Vec<String> = (0..8).map(|i| format!("t{i}")).collect();
        assert_eq!(listing(&names), "t0, t1, t2, t3, t4 and 3 more");
        assert_eq!(listing(&names[..2]), "t0, t1");
    }
}
