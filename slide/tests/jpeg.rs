//! JPEG pixels equal libjpeg-turbo's, byte for byte, as OpenSlide and wsidicom decode them: JPEGs
//! of every chroma sampling, of sizes that are not whole MCUs, progressive, with restart
//! intervals and as RGB without colour transform, written and decoded by Pillow at test time
//! (tests/fixtures/jpeg_oracle.py). Each is decoded through the SIMD code this CPU takes and
//! through the portable code a CPU without AVX2 (or an ARM one) takes (`set_use_unsafe(false)`,
//! which the vendored decoder honours for every step it patches).
#![allow(clippy::unwrap_used)]

mod common;

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// Decodes with zune-jpeg's portable code only (no SIMD).
fn decode_portable(data: &[u8]) -> Vec<u8> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_use_unsafe(false);
    JpegDecoder::new_with_options(ZCursor::new(data), options)
        .decode()
        .unwrap()
}

/// How many samples differ, and by how much at most.
fn difference(ours: &[u8], theirs: &[u8]) -> (usize, u8) {
    assert_eq!(ours.len(), theirs.len(), "decoded sizes differ");
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| a.abs_diff(*b))
        .filter(|&d| d > 0)
        .fold((0, 0), |(n, max), d| (n + 1, max.max(d)))
}

#[test]
fn jpeg_pixels_equal_libjpeg_turbo_through_simd_and_portable_code() {
    let dir = tempfile::tempdir().unwrap();
    common::run_fixture_script("jpeg_oracle.py", &[dir.path().as_os_str()]);
    let manifest = std::fs::read_to_string(dir.path().join("manifest.txt")).unwrap();
    let cases: Vec<(&str, u32, u32)> = manifest
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (f[0], f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert!(cases.len() >= 60, "only {} JPEGs written", cases.len());

    let mut failures = Vec::new();
    for (name, width, height) in cases {
        let data = std::fs::read(dir.path().join(format!("{name}.jpg"))).unwrap();
        let theirs = std::fs::read(dir.path().join(format!("{name}.rgb"))).unwrap();
        let (w, h, ours) = pathfed_slide::jpeg::decode_rgb(&data, 4096).unwrap();
        assert_eq!((w, h), (width, height), "{name}: size");
        for (path, pixels) in [("simd", ours), ("portable", decode_portable(&data))] {
            let (differing, max) = difference(&pixels, &theirs);
            if differing > 0 {
                failures.push(format!(
                    "{name} ({path}): {differing} samples differ, by up to {max}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
