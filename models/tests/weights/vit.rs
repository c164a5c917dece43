//! Foundation-model encoders without the real weights: small random ViTs written by numpy in
//! timm's layout (plain GELU; registers with SwiGLU and LayerScale; registers inside the
//! position embeddings with class + mean pooling) load from safetensors and from a PyTorch
//! `.bin`, and reproduce numpy's embeddings within 1e-4 at their native size and at other sizes
//! (resampled position embeddings). Mis-shaped, missing, extra and foreign tensors are named.
//!
//! The reference files come from `tests/python/vit_weights.py`.

use std::path::Path;

use burn::prelude::*;
use pathfed_models::import::ImportReport;
use pathfed_models::vit::{self, EncoderSpec, Vit};
use serde::Deserialize;
use tempfile::TempDir;

fn fixtures() -> TempDir {
    super::fixtures("vit_weights.py")
}

#[derive(Deserialize)]
struct Case {
    model: String,
    input_px: usize,
    input_shape: [usize; 4],
    input: Vec<f32>,
    embedding: Vec<Vec<f64>>,
    features: usize,
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

fn expected(dir: &Path) -> Expected {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("expected.json parses")
}

fn spec(dir: &Path, model: &str) -> EncoderSpec {
    let text = std::fs::read_to_string(dir.join(format!("{model}.json"))).expect("config");
    serde_json::from_str(&text).expect("an encoder description")
}

fn load(dir: &Path, model: &str, file: &str) -> Result<(Vit, ImportReport), String> {
    vit::import::load(&spec(dir, model), &dir.join(file), &Device::flex())
        .map_err(|e| e.to_string())
}

fn refusal(dir: &Path, file: &str) -> String {
    match load(dir, "vit_reg_swiglu", file) {
        Ok((_, report)) => panic!("{file} loaded: {report:?}"),
        Err(e) => e,
    }
}

/// numpy sums in float64 and Burn in float32 in its own order; through a few blocks of
/// attention that rounding stays near 1e-6 on embeddings of order one, where each mistake the
/// script checks for (qkv order, patch order, SwiGLU halves, LayerScale, registers, antialiasing)
/// moves them by at least 0.016.
fn assert_embeddings(model: &Vit, case: &Case) {
    let device = Device::flex();
    let input = Tensor::<4>::from_data(
        TensorData::new(case.input.clone(), case.input_shape),
        &device,
    );
    let got = model.embed(input);
    assert_eq!(
        got.dims(),
        [case.embedding.len(), case.features],
        "{}",
        case.model
    );
    let got = got.into_data().try_into_vec::<f32>().expect("f32 values");
    let mut worst = 0.0f64;
    for (row, want) in got.chunks(case.features).zip(&case.embedding) {
        for (a, b) in row.iter().zip(want) {
            worst = worst.max((f64::from(*a) - b).abs());
        }
    }
    assert!(
        worst <= 1e-4,
        "{} at {} px differs from numpy by {worst}",
        case.model,
        case.input_px
    );
}

#[test]
fn vit_embeddings_match_numpy_at_native_and_resampled_sizes() {
    let dir = fixtures();
    let cases = expected(dir.path()).cases;
    assert_eq!(cases.len(), 7, "three models, four resampled sizes");
    for case in &cases {
        let (model, report) = load(
            dir.path(),
            &case.model,
            &format!("{}.safetensors", case.model),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(report.unused.is_empty(), "{report:?}");
        assert_embeddings(&model, case);
    }
}

#[test]
fn vit_loads_a_pytorch_bin_as_it_loads_safetensors() {
    let dir = fixtures();
    let (model, report) =
        load(dir.path(), "vit_reg_swiglu", "vit_reg_swiglu.bin").unwrap_or_else(|e| panic!("{e}"));
    assert!(report.loaded > 20 && report.unused.is_empty(), "{report:?}");
    for case in expected(dir.path())
        .cases
        .iter()
        .filter(|c| c.model == "vit_reg_swiglu")
    {
        assert_embeddings(&model, case);
    }
}

#[test]
fn vit_refuses_mis_shaped_missing_and_foreign_tensors_by_name() {
    let dir = fixtures();
    let wrong = refusal(dir.path(), "wrong_shape.safetensors");
    assert!(
        wrong.contains("blocks.1.attn.qkv.weight is [144, 56] in the file but [144, 48]"),
        "{wrong}"
    );
    let missing = refusal(dir.path(), "missing.safetensors");
    assert!(missing.contains("lacks 2 tensor(s)"), "{missing}");
    assert!(
        missing.contains("blocks.0.ls1.gamma") && missing.contains("reg_token"),
        "{missing}"
    );
    let foreign = refusal(dir.path(), "unrelated.safetensors");
    assert!(foreign.contains("no tensor of"), "{foreign}");
    assert!(
        foreign.contains("encoder.layer.0.attention.query.bias"),
        "{foreign}"
    );
    assert!(foreign.contains("patch_embed.proj.weight"), "{foreign}");
    // A description without the registers (or LayerScale) the file has: refused, not loaded
    // into a model that would ignore them.
    let mut lacking = spec(dir.path(), "vit_reg_swiglu");
    lacking.vit.registers = 0;
    lacking.vit.layer_scale = false;
    let e = vit::import::load(
        &lacking,
        &dir.path().join("vit_reg_swiglu.safetensors"),
        &Device::flex(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("no place for") && e.contains("reg_token"), "{e}");
    assert!(e.contains("blocks.0.ls1.gamma"), "{e}");
    // The same weights under a preset of another shape: every block differs.
    let other = vit::preset("uni").expect("the uni preset");
    let e = vit::import::load(
        &other,
        &dir.path().join("vit_gelu.safetensors"),
        &Device::flex(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        e.contains("pos_embed is [1, 17, 32] in the file but [1, 197, 1024]"),
        "{e}"
    );
}

#[test]
fn vit_reports_a_head_and_mask_token_it_does_not_use() {
    let dir = fixtures();
    let (_, report) =
        load(dir.path(), "vit_reg_swiglu", "extra.safetensors").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        report.unused,
        vec!["head.bias", "head.weight", "mask_token"]
    );
}

#[test]
fn vit_found_in_the_pretrained_folder_by_name() {
    let fixtures = fixtures();
    let pretrained = tempfile::tempdir().expect("a temporary directory");
    let copy = |from: &str, to: &str| {
        std::fs::copy(fixtures.path().join(from), pretrained.path().join(to)).expect("copy");
    };
    copy("vit_reg_prefix.json", "mine.json");
    let missing = vit::resolve(pretrained.path(), "mine")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        missing.contains("no weights in the pretrained folder"),
        "{missing}"
    );
    std::fs::create_dir(pretrained.path().join("mine")).expect("mkdir");
    copy("vit_reg_prefix.safetensors", "mine/model.safetensors");
    let found = vit::resolve(pretrained.path(), "mine").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.spec.vit.features(), 64);
    assert!(found.weights.ends_with("mine/model.safetensors"));
    let listed = vit::list(pretrained.path());
    let mine = listed.iter().find(|e| e.name == "mine").expect("listed");
    assert!(mine.installed && mine.model == "custom ViT");
    assert!(listed.iter().any(|e| e.name == "uni2-h" && !e.installed));
}
