//! The TIFF fast path and OpenSlide must agree on geometry, MPP, pixels and associated images,
//! on the real Aperio fixture and on generated slides of every layout and compression.
#![cfg(feature = "openslide")]
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use pathfed_slide::openslide::OpenSlideReader;
use pathfed_slide::tiff::{DEFAULT_TILE_CACHE_BYTES, TiffSlide};
use pathfed_slide::{SlideLimits, SlideReader};
use pathfed_synth::{SynthCompression, SynthFormat, SynthSpec};

fn both(path: &Path) -> (TiffSlide, OpenSlideReader) {
    let limits = SlideLimits::default();
    (
        TiffSlide::open(path, &limits, DEFAULT_TILE_CACHE_BYTES).unwrap(),
        OpenSlideReader::open(path, &limits).unwrap(),
    )
}

/// Regions per level that straddle tile borders, touch the image edge and run past it.
fn regions(width: u64, height: u64, tile: u64) -> Vec<(u64, u64, u32, u32)> {
    let mut out = vec![
        (tile - 37, tile - 53, 100, 120),
        (0, 0, 64, 64),
        (tile / 2, tile + 7, (tile * 2) as u32, 90),
    ];
    if width > 300 && height > 300 {
        out.push((width - 150, height - 120, 300, 200));
    }
    out.retain(|&(x, y, _, _)| x < width && y < height);
    out
}

/// Geometry, MPP, associated images and pixels agree; pixels byte for byte, since the JPEG
/// decoder follows libjpeg-turbo's arithmetic, which OpenSlide decodes with.
fn assert_agree(path: &Path, expect_mpp: bool) {
    let (fast, os) = both(path);
    let (pf, po) = (fast.properties(), os.properties());
    assert_eq!(pf.vendor, po.vendor, "vendor");
    assert_eq!(pf.levels.len(), po.levels.len(), "level count");
    for (a, b) in pf.levels.iter().zip(&po.levels) {
        assert_eq!((a.width, a.height), (b.width, b.height), "level size");
        assert!(
            (a.downsample - b.downsample).abs() < 1e-6,
            "downsample {} vs {}",
            a.downsample,
            b.downsample
        );
    }
    if expect_mpp {
        assert!(po.mpp_x.is_some(), "OpenSlide reports MPP");
        assert_eq!(pf.mpp_x, po.mpp_x, "MPP x");
        assert_eq!(pf.mpp_y, po.mpp_y, "MPP y");
        assert_eq!(pf.objective_power, po.objective_power, "objective power");
    }
    for (level, info) in pf.levels.iter().enumerate() {
        let tile = u64::from(info.tile_size.unwrap().0);
        for (x, y, w, h) in regions(info.width, info.height, tile) {
            let a = fast.read_region(level, x, y, w, h).unwrap();
            let b = os.read_region(level, x, y, w, h).unwrap();
            common::assert_same_pixels(
                &a,
                &b,
                &format!("{}: level {level} region ({x},{y},{w},{h})", path.display()),
            );
        }
    }
    let names = |p: &pathfed_slide::SlideProperties| {
        let mut v: Vec<_> = p
            .associated_images
            .iter()
            .map(|a| (a.name.clone(), a.width, a.height))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(pf), names(po), "associated images");
    for a in &pf.associated_images {
        let mine = fast.associated_image(&a.name).unwrap();
        let theirs = os.associated_image(&a.name).unwrap();
        common::assert_same_pixels(&mine, &theirs, &format!("associated image {}", a.name));
    }
}

#[test]
fn real_aperio_slide_agrees_with_openslide() {
    let path = common::real_slide();
    assert_agree(&path, true);
    let (fast, _) = both(&path);
    let p = fast.properties();
    assert_eq!(p.dimensions(), (2220, 2967));
    assert_eq!(p.mpp_x, Some(0.499));
    let mut names: Vec<_> = p
        .associated_images
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["label", "macro", "thumbnail"]);
}

#[test]
fn generated_slides_agree_with_openslide() {
    let dir = tempfile::tempdir().unwrap();
    let base = SynthSpec {
        width: 2600,
        height: 2000,
        seed: 7,
        ..SynthSpec::default()
    };
    let cases = [
        (
            "svs-jpeg-rgb.svs",
            SynthFormat::Svs,
            SynthCompression::JpegRgb,
            false,
        ),
        (
            "svs-jpeg-ycc.svs",
            SynthFormat::Svs,
            SynthCompression::Jpeg,
            false,
        ),
        (
            "svs-lzw.svs",
            SynthFormat::Svs,
            SynthCompression::Lzw,
            false,
        ),
        (
            "generic-jpeg.tiff",
            SynthFormat::GenericTiff,
            SynthCompression::Jpeg,
            false,
        ),
        (
            "generic-deflate-big.tiff",
            SynthFormat::GenericTiff,
            SynthCompression::Deflate,
            true,
        ),
        (
            "generic-raw.tiff",
            SynthFormat::GenericTiff,
            SynthCompression::None,
            false,
        ),
        (
            "generic-lzw-big.tiff",
            SynthFormat::GenericTiff,
            SynthCompression::Lzw,
            true,
        ),
    ];
    for (name, format, compression, big_tiff) in cases {
        let spec = SynthSpec {
            format,
            compression,
            big_tiff,
            ..base.clone()
        };
        let path = common::synth(dir.path(), name, &spec);
        // OpenSlide 3.4 reports MPP for Aperio only; generic TIFF MPP is checked in synth tests.
        assert_agree(&path, format == SynthFormat::Svs);
    }
}
