//! Slide inference with the small model the learning tests train (two generated textures):
//! on a slide whose left half is one texture and right half the other, the heatmap separates
//! the halves; the slide score follows the majority texture; overlay tiles line up with the
//! slide's tiles at every Deep Zoom level; corrupt slides, blank slides and broken models fail
//! with clear errors; a cancelled run stops.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::*;
use pathfed_inference::InferError;
use pathfed_inference::heatmap::{ScoreMap, overlay_tile};
use pathfed_inference::pipeline::{PatchModel, RunOptions, SlidePrediction, predict_slide};
use pathfed_models::aggregate::{Aggregation, Aggregator};
use pathfed_models::mil::{AttentionMil, MilConfig};
use pathfed_models::model::{Architecture, ModelConfig, ResNet};
use pathfed_models::registry::{Backbone, InferenceConfig, ModelFiles};
use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
use pathfed_synth::{ClassLayout, SynthSpec, TissueClass, TissueField, generate};
use pathfed_training::synthetic::{LABELS, texture_model};

use crate::support::one_at_a_time;

/// Shared with the other test programs that need the trained model.
fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/texture-model")
}

async fn trained() -> PatchModel {
    let files = one_at_a_time(texture_model(&model_dir())).await.unwrap();
    PatchModel::from_files(files, "texture model", Path::new("."), Device::flex()).unwrap()
}

/// A 0.5 µm/px slide of `classes` in vertical bands, left to right.
fn banded(dir: &Path, name: &str, classes: &[TissueClass], seed: u64) -> (PathBuf, SynthSpec) {
    let spec = SynthSpec {
        width: 4096,
        height: 2048,
        mpp: 0.5,
        classes: classes.to_vec(),
        layout: ClassLayout::Columns,
        tissue_fraction: 0.6,
        seed,
        ..SynthSpec::default()
    };
    let path = dir.join(name);
    generate(&spec, &path, &|_, _| {}).unwrap();
    (path, spec)
}

fn run(path: &Path, model: &PatchModel) -> SlidePrediction {
    let reader = pathfed_slide::open(path, &Default::default()).unwrap();
    predict_slide(
        reader.as_ref(),
        model,
        &RunOptions::default(),
        &|_, _| {},
        &AtomicBool::new(false),
    )
    .unwrap()
}

/// Intersection over union of the cells called `wanted` and the cells that are `wanted`.
fn iou(map: &ScoreMap, truth: &TissueField, wanted: TissueClass, threshold: f32) -> f64 {
    let (mut both, mut either) = (0, 0);
    for &(col, row, score) in &map.cells {
        let centre = (
            u64::from(col) * map.cell.0 + map.cell.0 / 2,
            u64::from(row) * map.cell.1 + map.cell.1 / 2,
        );
        let Some(class) = truth.class_at(centre.0, centre.1) else {
            continue;
        };
        let called = if wanted == TissueClass::NucleusDense {
            score >= threshold
        } else {
            score < threshold
        };
        let is = class == wanted;
        both += usize::from(called && is);
        either += usize::from(called || is);
    }
    both as f64 / either.max(1) as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn heatmap_separates_the_halves_and_the_score_follows_the_majority() {
    let model = trained().await;
    assert_eq!(
        model.config.positive, LABELS[0],
        "dense nuclei are positive"
    );
    let dir = tempfile::tempdir().unwrap();
    let (path, spec) = banded(
        dir.path(),
        "halves.svs",
        &[TissueClass::NucleusDense, TissueClass::Stroma],
        11,
    );
    let prediction = run(&path, &model);
    assert!(prediction.patches > 150, "{} patches", prediction.patches);
    let truth = spec.tissue_field();
    let threshold = model.config.threshold as f32;
    let dense = iou(
        &prediction.map,
        &truth,
        TissueClass::NucleusDense,
        threshold,
    );
    let stroma = iou(&prediction.map, &truth, TissueClass::Stroma, threshold);
    println!("heatmap IoU against the layout: dense half {dense:.3}, stromal half {stroma:.3}");
    assert!(dense >= 0.8, "IoU of the dense half {dense:.3}");
    assert!(stroma >= 0.8, "IoU of the stromal half {stroma:.3}");

    // Three middle bands of one texture between two of the other: tissue lies mostly in the
    // middle, so the three hold the majority (checked against the known layout), and the
    // slide goes with them.
    use TissueClass::{NucleusDense as D, Stroma as S};
    let mut outcomes = Vec::new();
    for (name, bands, seed, majority) in [
        ("dense.svs", [S, D, D, D, S], 12, LABELS[0]),
        ("stroma.svs", [D, S, S, S, D], 13, LABELS[1]),
    ] {
        let (path, spec) = banded(dir.path(), name, &bands, seed);
        let truth = spec.tissue_field();
        let prediction = run(&path, &model);
        let dense_share = {
            let classes: Vec<_> = prediction
                .map
                .cells
                .iter()
                .filter_map(|&(col, row, _)| {
                    truth.class_at(u64::from(col) * 128 + 64, u64::from(row) * 128 + 64)
                })
                .collect();
            classes.iter().filter(|c| **c == D).count() as f64 / classes.len() as f64
        };
        let truly = if dense_share > 0.5 {
            LABELS[0]
        } else {
            LABELS[1]
        };
        assert_eq!(truly, majority, "{name}: dense share {dense_share:.2}");
        assert!((dense_share - 0.5).abs() > 0.1, "{name}: no clear majority");
        assert_eq!(prediction.predicted, majority, "{name}: {prediction:?}");
        outcomes.push(prediction);
    }
    let (mostly_dense, mostly_stroma) = (&outcomes[0], &outcomes[1]);
    assert!(mostly_dense.score > 0.5, "{}", mostly_dense.score);
    assert!(mostly_stroma.score < 0.5, "{}", mostly_stroma.score);
    let sums: f64 = mostly_stroma.class_scores.iter().sum();
    assert!((sums - 1.0).abs() < 1e-3, "class scores sum to {sums}");

    // Overlay tiles cover exactly the slide's tiles, level by level, tile by tile.
    let reader: Arc<dyn pathfed_slide::SlideReader> =
        Arc::from(pathfed_slide::open(&path, &Default::default()).unwrap());
    let options = DeepZoomOptions::for_slide(reader.properties(), &Default::default());
    let deepzoom = DeepZoom::new(reader, options).unwrap();
    let dense_map = prediction.map.dense();
    let mut coloured = 0;
    for level in 0..deepzoom.level_count() {
        let (cols, rows) = deepzoom.level_tiles(level).unwrap();
        for row in 0..rows {
            for col in 0..cols {
                let slide_tile =
                    image::load_from_memory(&deepzoom.tile(level, col, row).unwrap().jpeg).unwrap();
                let png = overlay_tile(
                    &prediction.map,
                    &dense_map,
                    deepzoom.geometry(),
                    level,
                    col,
                    row,
                )
                .unwrap();
                let overlay = image::load_from_memory(&png).unwrap().to_rgba8();
                assert_eq!(
                    overlay.dimensions(),
                    (slide_tile.width(), slide_tile.height()),
                    "level {level} tile ({col}, {row})"
                );
                coloured += overlay.pixels().filter(|p| p[3] == 255).count();
            }
        }
    }
    assert!(coloured > 0, "the overlay shows the scores somewhere");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_slides_and_broken_models_fail_clearly_and_cancel_stops() {
    let model = trained().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = banded(
        dir.path(),
        "whole.svs",
        &[TissueClass::NucleusDense, TissueClass::Stroma],
        21,
    );

    // A truncated copy: the reader refuses it, or the first patch past the end fails.
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.svs");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let outcome = pathfed_slide::open(&truncated, &Default::default())
        .map_err(InferError::from)
        .and_then(|reader| {
            predict_slide(
                reader.as_ref(),
                &model,
                &RunOptions::default(),
                &|_, _| {},
                &AtomicBool::new(false),
            )
        });
    let message = outcome.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(!message.is_empty(), "a truncated slide must fail");

    // Blank glass: no tissue, said as such.
    let blank = dir.path().join("blank.svs");
    let spec = SynthSpec {
        width: 2048,
        height: 1024,
        mpp: 0.5,
        tissue_fraction: 0.0,
        ..SynthSpec::default()
    };
    generate(&spec, &blank, &|_, _| {}).unwrap();
    let reader = pathfed_slide::open(&blank, &Default::default()).unwrap();
    let e = predict_slide(
        reader.as_ref(),
        &model,
        &RunOptions::default(),
        &|_, _| {},
        &AtomicBool::new(false),
    )
    .err()
    .unwrap();
    assert!(matches!(e, InferError::NoTissue { .. }), "{e}");
    assert!(e.to_string().contains("no tissue"), "{e}");

    // Cancelled after the first batch: the run stops with Cancelled.
    let cancel = AtomicBool::new(false);
    let batches = std::sync::atomic::AtomicUsize::new(0);
    let reader = pathfed_slide::open(&path, &Default::default()).unwrap();
    let e = predict_slide(
        reader.as_ref(),
        &model,
        &RunOptions {
            batch: 8,
            ..RunOptions::default()
        },
        &|_, _| {
            batches.fetch_add(1, Ordering::Relaxed);
            cancel.store(true, Ordering::Relaxed);
        },
        &cancel,
    )
    .err()
    .unwrap();
    assert!(matches!(e, InferError::Cancelled), "{e}");
    assert_eq!(
        batches.load(Ordering::Relaxed),
        1,
        "no batch after the cancel"
    );

    // Model folders: a missing weights file and a config that does not fit are named.
    let folder = dir.path().join("model");
    std::fs::create_dir_all(&folder).unwrap();
    let files = one_at_a_time(texture_model(&model_dir())).await.unwrap();
    std::fs::write(folder.join("config.json"), &files.config).unwrap();
    let e = ModelFiles::read_dir(&folder).err().unwrap().to_string();
    assert!(e.contains("model.bpk"), "{e}");
    let mut config: InferenceConfig = serde_json::from_slice(&files.config).unwrap();
    config.classes.push("EXTRA".into());
    let broken = ModelFiles {
        config: serde_json::to_vec(&config).unwrap(),
        ..files
    };
    let e = PatchModel::from_files(broken, "broken", Path::new("."), Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("do not fit"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn attention_models_pool_embeddings_into_slide_probabilities() {
    let device = Device::flex();
    device.seed(3);
    let shape = ModelConfig {
        architecture: Architecture::ResnetSmall,
        classes: 2,
        input_px: 64,
    };
    let head = MilConfig {
        features: 128,
        hidden: 16,
        classes: 2,
        pooling: pathfed_models::mil::Pooling::Attention,
    };
    let model = PatchModel {
        config: InferenceConfig {
            model: Some(shape.clone()),
            encoder: None,
            classes: vec!["A".into(), "B".into()],
            positive: "B".into(),
            aggregation: Aggregation::Attention,
            attention: Some(head.clone()),
            threshold: 0.5,
            patch_px: 64,
            patch_mpp: 1.0,
            mpp_tolerance: 0.02,
        },
        model: Backbone::Cnn(Box::new(ResNet::new(&shape, &device))),
        aggregator: Some(Aggregator {
            head: AttentionMil::new(&head, &device),
            config: head,
        }),
        device,
    };
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = banded(dir.path(), "a.svs", &[TissueClass::Stroma], 31);
    let prediction = run(&path, &model);
    let sum: f64 = prediction.class_scores.iter().sum();
    assert!((sum - 1.0).abs() < 1e-4, "{:?}", prediction.class_scores);
    assert_eq!(prediction.score, prediction.class_scores[1]);
    assert!(
        prediction
            .map
            .cells
            .iter()
            .all(|c| (0.0..=1.0).contains(&c.2))
    );
}
