//! The test-slide generator: metadata, label and macro, tissue classes, determinism and
//! resolution tags come out as asked.
#![allow(clippy::unwrap_used)]

mod common;

use pathfed_slide::SlideLimits;
use pathfed_synth::{SynthCompression, SynthFormat, SynthSpec, TissueClass};

#[test]
fn svs_carries_the_given_metadata_label_and_macro() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        width: 3000,
        height: 2000,
        metadata: vec![
            ("Filename".into(), "Jane Doe 1961".into()),
            ("Date".into(), "03/04/25".into()),
        ],
        label_lines: vec!["HOSPITAL X".into(), "JANE DOE".into()],
        barcode: "MRN-123456".into(),
        ..SynthSpec::default()
    };
    let path = common::synth(dir.path(), "s.svs", &spec);
    let slide = pathfed_slide::open(&path, &SlideLimits::default()).unwrap();
    let p = slide.properties();
    assert_eq!(p.vendor, "aperio");
    assert_eq!(
        p.raw.get("aperio.Filename").map(String::as_str),
        Some("Jane Doe 1961")
    );
    assert_eq!(
        p.raw.get("aperio.Date").map(String::as_str),
        Some("03/04/25")
    );
    assert_eq!(p.mpp_x, Some(0.499));
    assert_eq!(p.objective_power, Some(20.0));
    assert_eq!(
        p.levels
            .iter()
            .map(|l| (l.width, l.height))
            .collect::<Vec<_>>(),
        [(3000, 2000), (750, 500)]
    );
    let label = slide.associated_image("label").unwrap();
    let dark = label
        .pixels()
        .filter(|px| px.0.iter().all(|&c| c < 80))
        .count();
    assert!(dark > 500, "the label has printed text and a barcode");
    let macro_image = slide.associated_image("macro").unwrap();
    assert_eq!(macro_image.dimensions(), (1280, 431));
    assert!(slide.associated_image("thumbnail").is_ok());
}

#[test]
fn generic_tiff_keeps_mpp_in_resolution_tags() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        width: 1800,
        height: 1200,
        format: SynthFormat::GenericTiff,
        compression: SynthCompression::Jpeg,
        mpp: 0.25,
        ..SynthSpec::default()
    };
    let path = common::synth(dir.path(), "g.tiff", &spec);
    let slide = pathfed_slide::open(&path, &SlideLimits::default()).unwrap();
    let p = slide.properties();
    assert_eq!(p.vendor, "generic-tiff");
    assert!((p.mpp_x.unwrap() - 0.25).abs() < 1e-6);
    assert!(p.associated_images.is_empty());
    let sizes: Vec<_> = p.levels.iter().map(|l| l.width).collect();
    assert_eq!(sizes, [1800, 900, 450]);
}

#[test]
fn same_spec_same_bytes_and_classes_look_different() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |classes: Vec<TissueClass>| SynthSpec {
        width: 1024,
        height: 1024,
        classes,
        tissue_fraction: 1.0,
        ..SynthSpec::default()
    };
    let a = common::synth(dir.path(), "a.svs", &spec(TissueClass::ALL.to_vec()));
    let b = common::synth(dir.path(), "b.svs", &spec(TissueClass::ALL.to_vec()));
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let darkness = |class: TissueClass| {
        let path = common::synth(
            dir.path(),
            &format!("{}.svs", class.name()),
            &spec(vec![class]),
        );
        let slide = pathfed_slide::open(&path, &SlideLimits::default()).unwrap();
        let region = slide.read_region(0, 256, 256, 512, 512).unwrap();
        region
            .as_raw()
            .iter()
            .map(|&v| f64::from(255 - v))
            .sum::<f64>()
            / region.as_raw().len() as f64
    };
    let (dense, stroma, fat) = (
        darkness(TissueClass::NucleusDense),
        darkness(TissueClass::Stroma),
        darkness(TissueClass::Adipose),
    );
    assert!(
        dense > stroma && stroma > fat,
        "darkness: dense {dense}, stroma {stroma}, adipose {fat}"
    );
}
