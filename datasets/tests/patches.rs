//! Patch extraction on generated slides whose tissue layout is known: patches lie on tissue, at
//! the requested resolution, labelled from regions where asked.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use pathfed_datasets::curate::Region;
use pathfed_datasets::patches::{ExtractParams, ShardIndex, SlideLabels, extract_slide};
use pathfed_slide::SlideLimits;
use pathfed_synth::{SynthCompression, SynthFormat, SynthSpec, TissueClass, TissueField, generate};
use serde_json::json;

fn spec(mpp: f64, seed: u64) -> SynthSpec {
    SynthSpec {
        width: 3072,
        height: 2048,
        format: SynthFormat::GenericTiff,
        compression: SynthCompression::Jpeg,
        mpp,
        tissue_fraction: 0.45,
        seed,
        ..SynthSpec::default()
    }
}

fn generated(dir: &Path, spec: &SynthSpec) -> PathBuf {
    let path = dir.join(format!("s{}-{}.tiff", spec.seed, spec.mpp));
    generate(spec, &path, &|_, _| {}).unwrap();
    path
}

fn field(spec: &SynthSpec) -> TissueField {
    TissueField::new(
        spec.seed,
        spec.width,
        spec.height,
        &spec.classes,
        spec.tissue_fraction,
    )
}

/// Share of the level-0 rectangle that the generator made tissue, on a 16×16 sample; with
/// `stained_only`, fat (empty cells between thin membranes, nearly glass-white, which
/// saturation-based detection leaves out as the standard pipelines do) does not count.
fn true_tissue(field: &TissueField, x: u64, y: u64, w: u64, h: u64, stained_only: bool) -> f64 {
    let mut hits = 0;
    for i in 0..16 {
        for j in 0..16 {
            let (px, py) = (x + (2 * i + 1) * w / 32, y + (2 * j + 1) * h / 32);
            hits += u32::from(match field.class_at(px, py) {
                Some(TissueClass::Adipose) => !stained_only,
                Some(_) => true,
                None => false,
            });
        }
    }
    f64::from(hits) / 256.0
}

fn extract(path: &Path, labels: &SlideLabels<'_>, params: &ExtractParams) -> (ShardIndex, Vec<u8>) {
    let reader = pathfed_slide::open(path, &SlideLimits::default()).unwrap();
    let mut bin = Vec::new();
    let index = extract_slide(
        reader.as_ref(),
        "rs-test",
        labels,
        params,
        &mut bin,
        &|_, _| true,
    )
    .unwrap();
    (index, bin)
}

/// Checks every patch against the generator's layout and returns (patches, tissue patches missed).
fn check_on_tissue(spec: &SynthSpec, index: &ShardIndex, bin: &[u8]) -> (usize, usize) {
    let truth = field(spec);
    let (fw, fh) = index.footprint;
    for entry in &index.patches {
        let share = true_tissue(&truth, entry.x, entry.y, fw, fh, false);
        assert!(
            share >= 0.35,
            "patch at ({}, {}) is only {share:.2} tissue",
            entry.x,
            entry.y
        );
        let jpeg = index.patch(bin, entry).unwrap();
        let image = image::load_from_memory(jpeg).unwrap();
        assert_eq!((image.width(), image.height()), (256, 256));
    }
    // Grid positions that are almost all stained tissue should have been taken.
    let taken: std::collections::HashSet<(u64, u64)> =
        index.patches.iter().map(|p| (p.x, p.y)).collect();
    let mut missed = 0;
    for row in 0..spec.height / fh {
        for col in 0..spec.width / fw {
            let (x, y) = (col * fw, row * fh);
            if true_tissue(&truth, x, y, fw, fh, true) >= 0.9 && !taken.contains(&(x, y)) {
                missed += 1;
            }
        }
    }
    (index.patches.len(), missed)
}

#[test]
fn patches_lie_on_tissue_at_the_requested_resolution() {
    let dir = tempfile::tempdir().unwrap();
    // 0.25 µm/px: 256 px at 0.5 µm/px is 512 level-0 pixels, one stored tile of level 1.
    let fine = spec(0.25, 7);
    let path = generated(dir.path(), &fine);
    let labels = SlideLabels {
        slide: "gastric.adenocarcinoma",
        regions: &[],
    };
    let (index, bin) = extract(&path, &labels, &ExtractParams::default());
    assert_eq!(index.footprint, (512, 512));
    assert_eq!(index.mpp, (0.5, 0.5));
    let (patches, missed) = check_on_tissue(&fine, &index, &bin);
    assert!(patches >= 6, "{patches} patches");
    assert!(
        missed * 10 <= patches,
        "{missed} tissue positions missed of {patches}"
    );
    assert_eq!(
        index.qc.copied_tiles, patches as u64,
        "stored tiles taken as is"
    );
    assert!(index.qc.tissue_fraction > 0.2 && index.qc.tissue_fraction < 0.7);
    assert_eq!(index.qc.pen_fraction, 0.0);
    assert!(
        index.qc.blur_fraction < 0.1,
        "generated tissue is in focus: {:?}",
        index.qc
    );
    assert!(
        index
            .patches
            .iter()
            .all(|p| p.label == "gastric.adenocarcinoma")
    );

    // 0.3 µm/px: the footprint is rounded to 427 px and the patches resampled to 256.
    let odd = spec(0.3, 8);
    let path = generated(dir.path(), &odd);
    let (index, bin) = extract(&path, &labels, &ExtractParams::default());
    assert_eq!(index.footprint, (427, 427));
    assert!((index.mpp.0 - 0.5).abs() < 0.001, "{:?}", index.mpp);
    let (patches, missed) = check_on_tissue(&odd, &index, &bin);
    assert!(
        patches >= 6 && missed * 10 <= patches,
        "{patches}, {missed}"
    );
    assert_eq!(index.qc.copied_tiles, 0);

    // A coarser resolution: fewer, larger patches over the same tissue.
    let mut coarse = ExtractParams::default();
    coarse.grid.patch_mpp = 1.0;
    let (coarse_index, bin) = extract(&path, &labels, &coarse);
    assert_eq!(coarse_index.footprint, (853, 853));
    assert_ne!(coarse_index.params_hash, index.params_hash);
    check_on_tissue(&odd, &coarse_index, &bin);
    assert!(coarse_index.patches.len() < index.patches.len());
}

#[test]
fn region_labels_follow_the_annotations() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(0.25, 7);
    let path = generated(dir.path(), &spec);
    // The left half of the slide is annotated as intestinal metaplasia.
    let regions = [Region {
        label: "gastric.metaplasia".into(),
        kind: "polygon".into(),
        geometry: json!([[0.0, 0.0], [1536.0, 0.0], [1536.0, 2048.0], [0.0, 2048.0]]),
    }];
    let labels = SlideLabels {
        slide: "gastric.adenocarcinoma",
        regions: &regions,
    };
    let (index, _) = extract(&path, &labels, &ExtractParams::default());
    let left = index.patches.iter().filter(|p| p.x + 256 < 1536).count();
    assert!(
        left > 0 && left < index.patches.len(),
        "tissue on both sides"
    );
    for p in &index.patches {
        let expected = if p.x + 256 < 1536 {
            "gastric.metaplasia"
        } else {
            "gastric.adenocarcinoma"
        };
        assert_eq!(p.label, expected, "patch at ({}, {})", p.x, p.y);
    }
    assert_eq!(index.qc.region_labelled, left as u64);

    let without = ExtractParams {
        region_labels: false,
        ..ExtractParams::default()
    };
    let (plain, _) = extract(&path, &labels, &without);
    assert!(
        plain
            .patches
            .iter()
            .all(|p| p.label == "gastric.adenocarcinoma")
    );
    assert_ne!(plain.params_hash, index.params_hash);
}

#[test]
fn the_real_slide_gives_patches_on_its_tissue() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../slide/tests/fixtures/CMU-1-Small-Region.svs");
    let labels = SlideLabels {
        slide: "x",
        regions: &[],
    };
    let reader = pathfed_slide::open(&fixture, &SlideLimits::default()).unwrap();
    assert!((reader.properties().mpp_x.unwrap() - 0.499).abs() < 0.001);
    let (index, bin) = extract(&fixture, &labels, &ExtractParams::default());
    // 2220 × 2967 at 0.499 µm/px, within 2% of 0.5: 256 px of its own pixels per patch, read
    // as stored, 8 × 11 positions, tissue on part of them.
    assert_eq!(index.footprint, (256, 256));
    assert!(index.qc.patches >= 10, "{:?}", index.qc);
    assert!(index.qc.tissue_fraction > 0.1 && index.qc.tissue_fraction < 0.95);
    for entry in &index.patches {
        let jpeg = index.patch(&bin, entry).unwrap();
        let image = image::load_from_memory(jpeg).unwrap().to_rgb8();
        // Tissue patches are stained: well below glass brightness on average.
        let mean: f64 =
            image.as_raw().iter().map(|v| f64::from(*v)).sum::<f64>() / image.as_raw().len() as f64;
        assert!(
            mean < 225.0,
            "patch at ({}, {}) is glass: {mean}",
            entry.x,
            entry.y
        );
    }
    eprintln!("{:?}", index.qc);
}

#[test]
fn a_cancelled_extraction_stops_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(0.25, 9);
    let path = generated(dir.path(), &spec);
    let reader = pathfed_slide::open(&path, &SlideLimits::default()).unwrap();
    let labels = SlideLabels {
        slide: "x",
        regions: &[],
    };
    let result = extract_slide(
        reader.as_ref(),
        "rs-test",
        &labels,
        &ExtractParams::default(),
        &mut Vec::new(),
        &|_, _| false,
    );
    assert!(result.unwrap_err().to_string().contains("cancelled"));
    let bad = ExtractParams {
        jpeg_quality: 0,
        ..ExtractParams::default()
    };
    let err = extract_slide(
        reader.as_ref(),
        "rs-test",
        &labels,
        &bad,
        &mut Vec::new(),
        &|_, _| true,
    )
    .unwrap_err();
    assert!(err.to_string().contains("JPEG quality"), "{err}");
}
