//! Helpers shared by the integration tests: fixtures, generated slides, pixel comparison.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use image::RgbImage;
use pathfed_slide::synth::{SynthSpec, generate};

/// The real Aperio slide shipped with the tests.
pub fn real_slide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/CMU-1-Small-Region.svs")
}

/// Generates `spec` into `dir` under `name` and returns the path.
pub fn synth(dir: &Path, name: &str, spec: &SynthSpec) -> PathBuf {
    let path = dir.join(name);
    generate(spec, &path, &|_, _| {}).unwrap();
    path
}

/// Mean absolute difference per channel between two images of equal size.
pub fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "images differ in size");
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}
