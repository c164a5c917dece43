//! Importing pretrained weights: a resnet-small written by numpy under torchvision's names loads
//! and reproduces the logits numpy computed for it; a head for other classes, a wrong kernel,
//! missing tensors, another network's file and files that are no checkpoint at all are refused
//! with messages naming what does not fit; extra tensors are reported, not loaded.
//!
//! The reference files come from `tests/python/resnet_weights.py`.

use std::path::Path;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use pathfed_models::import::{ImportOptions, ImportReport, load_pretrained};
use pathfed_models::model::{Architecture, ModelConfig, ResNet};
use tempfile::TempDir;

fn fixtures() -> TempDir {
    super::fixtures("resnet_weights.py")
}

/// What numpy computed.
struct Expected {
    input: Tensor<4>,
    classes: usize,
    logits: Vec<Vec<f64>>,
}

fn expected(dir: &Path, device: &Device) -> Expected {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let shape: Vec<usize> = serde_json::from_value(json["input_shape"].clone()).expect("shape");
    let input: Vec<f32> = serde_json::from_value(json["input"].clone()).expect("input");
    let shape: [usize; 4] = shape.try_into().expect("a 4-D input");
    Expected {
        input: Tensor::from_data(TensorData::new(input, shape), device),
        classes: serde_json::from_value(json["classes"].clone()).expect("classes"),
        logits: serde_json::from_value(json["logits"].clone()).expect("logits"),
    }
}

fn small(classes: usize, device: &Device) -> ResNet {
    ResNet::new(
        &ModelConfig {
            architecture: Architecture::ResnetSmall,
            classes,
            input_px: 32,
        },
        device,
    )
}

fn rows(t: Tensor<2>) -> Vec<Vec<f32>> {
    let [_, cols] = t.dims();
    let flat = t.into_data().try_to_vec::<f32>().expect("f32 values");
    flat.chunks(cols).map(<[f32]>::to_vec).collect()
}

fn load(file: &Path, classes: usize, skip_head: bool) -> Result<(ResNet, ImportReport), String> {
    load_pretrained(
        small(classes, &Device::flex()),
        file,
        &ImportOptions { skip_head },
    )
    .map_err(|e| e.to_string())
}

fn refusal(file: &Path, classes: usize, skip_head: bool) -> String {
    match load(file, classes, skip_head) {
        Ok((_, report)) => panic!("{} loaded: {report:?}", file.display()),
        Err(e) => e,
    }
}

/// Asserts logits agree with numpy's within 1e-4. numpy sums in float64 and Burn in float32 in
/// its own order; across the ~1,200 products behind each activation that rounding stays near
/// 1e-6 on these logits of order one, while a misplaced or untransposed tensor moves them by
/// tenths.
fn assert_logits(got: Tensor<2>, want: &[Vec<f64>]) {
    let got = rows(got);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            assert!(
                (f64::from(*a) - b).abs() < 1e-4,
                "logits {got:?}, numpy {want:?}"
            );
        }
    }
}

#[test]
fn torchvision_weights_reproduce_the_numpy_logits() {
    let dir = fixtures();
    let device = Device::flex();
    let want = expected(dir.path(), &device);
    let (model, report) = load(&dir.path().join("weights.safetensors"), want.classes, false)
        .expect("the reference weights load");
    // Every tensor of the model: 17 convolutions and the head's two, plus four per batch norm.
    assert_eq!(
        report,
        ImportReport {
            loaded: 62,
            skipped: vec![],
            unused: vec![],
        }
    );
    assert_logits(model.forward(want.input), &want.logits);
}

#[test]
fn float64_weights_load_in_the_models_precision() {
    let dir = fixtures();
    let device = Device::flex();
    let want = expected(dir.path(), &device);
    let (model, report) = load(
        &dir.path().join("weights_f64.safetensors"),
        want.classes,
        false,
    )
    .expect("float64 weights load");
    assert_eq!(report.loaded, 62);
    assert_logits(model.forward(want.input), &want.logits);
}

#[test]
fn a_head_for_other_classes_is_refused_with_both_shapes() {
    let dir = fixtures();
    let err = refusal(&dir.path().join("imagenet_head.safetensors"), 3, false);
    for part in [
        "fc.weight is [1000, 128] in the file but [3, 128] in the model",
        "fc.bias is [1000] in the file but [3] in the model",
        "1000-class head",
        "--skip-head",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
}

#[test]
fn skip_head_loads_the_backbone_and_keeps_the_fresh_head() {
    let dir = fixtures();
    let device = Device::flex();
    let want = expected(dir.path(), &device);
    let fresh = small(want.classes, &device);
    let head = |m: &ResNet| -> Vec<Vec<f32>> {
        m.collect(None, None, false)
            .iter()
            .filter(|t| t.name.starts_with("fc."))
            .map(|t| {
                bridge::to_data(t)
                    .expect("the head's data")
                    .try_to_vec::<f32>()
                    .expect("f32 values")
            })
            .collect()
    };
    let (model, report) = load_pretrained(
        fresh.clone(),
        &dir.path().join("imagenet_head.safetensors"),
        &ImportOptions { skip_head: true },
    )
    .expect("the backbone loads");
    assert_eq!(
        report,
        ImportReport {
            loaded: 60,
            skipped: vec!["fc.bias".into(), "fc.weight".into()],
            unused: vec![],
        }
    );
    assert_eq!(
        head(&model),
        head(&fresh),
        "the head was left as initialised"
    );
    // The backbone is the reference one: its embedding equals that of the fully loaded model.
    let (reference, _) = load(&dir.path().join("weights.safetensors"), want.classes, false)
        .expect("the reference weights load");
    let a = rows(model.embed(want.input.clone()));
    let b = rows(reference.embed(want.input));
    assert_eq!(a, b);
}

#[test]
fn a_wrong_kernel_names_the_layer_and_both_shapes() {
    let dir = fixtures();
    let err = refusal(&dir.path().join("wrong_conv.safetensors"), 3, false);
    assert!(
        err.contains("layer3.0.conv2.weight is [64, 64, 5, 5] in the file but [64, 64, 3, 3]"),
        "{err}"
    );
    assert!(!err.contains("skip-head"), "no head hint for a conv: {err}");
}

#[test]
fn missing_tensors_are_listed_by_their_torchvision_names() {
    let dir = fixtures();
    let err = refusal(&dir.path().join("missing.safetensors"), 3, false);
    assert!(
        err.contains(
            "the file lacks 6 tensor(s) the model needs: bn1.running_var, \
             layer2.0.downsample.0.weight, layer2.0.downsample.1.bias"
        ),
        "{err}"
    );
    assert!(err.contains("and 1 more"), "{err}");
}

#[test]
fn extra_tensors_are_reported_and_not_loaded() {
    let dir = fixtures();
    let (_, report) =
        load(&dir.path().join("extra.safetensors"), 3, false).expect("extra tensors are no error");
    assert_eq!(report.loaded, 62);
    // num_batches_tracked is in the file too, but is torchvision bookkeeping, not news.
    assert_eq!(report.unused, ["projection.bias", "projection.weight"]);
}

#[test]
fn another_networks_file_matches_nothing() {
    let dir = fixtures();
    let err = refusal(&dir.path().join("unrelated.safetensors"), 3, false);
    assert!(
        err.contains("no tensor of") && err.contains("matches a resnet-small layer"),
        "{err}"
    );
    assert!(err.contains("encoder.block.0.bias"), "{err}");
}

#[test]
fn files_that_are_no_checkpoint_are_refused_without_panicking() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let junk: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for (name, says) in [
        ("junk.safetensors", "is not a readable safetensors file"),
        ("junk.pt", "is not a readable PyTorch checkpoint"),
        ("empty.safetensors", "is not a readable safetensors file"),
    ] {
        let path = dir.path().join(name);
        let bytes = if name.starts_with("empty") {
            &[][..]
        } else {
            &junk[..]
        };
        std::fs::write(&path, bytes).expect("write the file");
        let err = refusal(&path, 3, false);
        assert!(err.contains(says), "{name}: {err}");
    }

    let err = refusal(&dir.path().join("absent.safetensors"), 3, false);
    assert!(err.contains("does not exist"), "{err}");
    let err = refusal(&dir.path().join("weights.h5"), 3, false);
    assert!(err.contains("unknown weight format"), "{err}");
    let folder = dir.path().join("folder.safetensors");
    std::fs::create_dir(&folder).expect("a folder");
    let err = refusal(&folder, 3, false);
    assert!(err.contains("is not a file"), "{err}");

    // Sparse, so nothing is written; refused on its size before anything reads it.
    let huge = dir.path().join("huge.safetensors");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(3 << 30))
        .expect("a sparse file");
    let err = refusal(&huge, 3, false);
    assert!(err.contains("more than the 2048 MiB"), "{err}");
}

#[test]
fn a_truncated_file_is_refused() {
    let dir = fixtures();
    let full = std::fs::read(dir.path().join("weights.safetensors")).expect("the weights");
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &full[..full.len() / 2]).expect("write the file");
    let err = refusal(&cut, 3, false);
    assert!(err.contains("is not a readable safetensors file"), "{err}");
}
