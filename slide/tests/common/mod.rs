//! Helpers shared by the integration tests: fixtures, generated slides, pixel comparison.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use image::RgbImage;
use pathfed_slide::tiff::file::tag;
use pathfed_slide::tiff::writer::{Directory, TiffWriter, Value};
use pathfed_synth::{SynthSpec, generate};

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

/// The largest per-sample difference between two images of equal size.
pub fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions(), "images differ in size");
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Fails unless `ours` equals `theirs` byte for byte, naming `what` with the mean and largest
/// difference.
pub fn assert_same_pixels(ours: &RgbImage, theirs: &RgbImage, what: &str) {
    let max = max_abs_diff(ours, theirs);
    assert!(
        max == 0,
        "{what}: mean abs diff {:.4}, max {max}",
        mean_abs_diff(ours, theirs)
    );
}

/// Runs `tests/fixtures/{script}` with `args` under the tools' Python, failing the test with
/// the script's error output if it fails.
pub fn run_fixture_script(script: &str, args: &[&std::ffi::OsStr]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let output = std::process::Command::new(tools_python())
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A one-tile (16 × 16, uncompressed) generic TIFF, written with the project's writer after
/// `edit` has changed its tags.
pub fn one_tile_tiff(path: &Path, edit: impl FnOnce(&mut Directory)) {
    let mut w = TiffWriter::create(path, false).unwrap();
    let (offset, len) = w.append(&vec![200u8; 16 * 16 * 3]).unwrap();
    let mut d = Directory::default();
    d.set(tag::IMAGE_WIDTH, Value::Long(vec![16]))
        .set(tag::IMAGE_LENGTH, Value::Long(vec![16]))
        .set(tag::BITS_PER_SAMPLE, Value::Short(vec![8, 8, 8]))
        .set(tag::COMPRESSION, Value::Short(vec![1]))
        .set(tag::PHOTOMETRIC, Value::Short(vec![2]))
        .set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![3]))
        .set(tag::TILE_WIDTH, Value::Long(vec![16]))
        .set(tag::TILE_LENGTH, Value::Long(vec![16]))
        .set(tag::TILE_OFFSETS, Value::Long(vec![offset as u32]))
        .set(tag::TILE_BYTE_COUNTS, Value::Long(vec![len as u32]));
    edit(&mut d);
    w.finish(&[d]).unwrap();
}

/// `PATHFED_TEST_PYTHON`, else the tools venv's interpreter in the nearest directory above this
/// crate (`scripts/setup.sh` installs there the fixture writers and oracles: tifffile,
/// imagecodecs, wsidicomizer, wsidicom, pydicom).
pub fn tools_python() -> PathBuf {
    if let Some(path) = std::env::var_os("PATHFED_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join(".tools/venv/bin/python"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no .tools/venv/bin/python above {}; run scripts/setup.sh",
                manifest_dir.display()
            )
        })
}
