//! Deep Zoom: the descriptor matches the slide, every tile exists with the right size and
//! matches a reference rendering, and pass-through tiles are the stored bytes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use image::imageops::{self, FilterType};
use pathfed_core::config::TilesConfig;
use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
use pathfed_slide::tiff::file::TiffFile;
use pathfed_slide::tiff::image::TiffImage;
use pathfed_slide::{SlideLimits, SlideReader};
use pathfed_synth::{SynthCompression, SynthSpec};

fn attr(xml: &str, name: &str) -> u64 {
    let start = xml.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    xml[start..].split('"').next().unwrap().parse().unwrap()
}

fn check_pyramid(spec: &SynthSpec, tile_size: u32, overlap: u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = common::synth(dir.path(), "slide.svs", spec);
    let slide: Arc<dyn SlideReader> =
        Arc::from(pathfed_slide::open(&path, &SlideLimits::default()).unwrap());
    let config = TilesConfig {
        tile_size,
        overlap,
        jpeg_quality: 95,
        ..TilesConfig::default()
    };
    let options = DeepZoomOptions::for_slide(slide.properties(), &config);
    let dz = DeepZoom::new(Arc::clone(&slide), options).unwrap();
    let out = dir.path().join("out");
    let stats = dz.write_pyramid(&out, "slide", &|_, _| {}).unwrap();
    assert_eq!(stats.tiles, dz.tile_count());

    let (w, h) = slide.properties().dimensions();
    let dzi = std::fs::read_to_string(out.join("slide.dzi")).unwrap();
    assert_eq!((attr(&dzi, "Width"), attr(&dzi, "Height")), (w, h));
    assert_eq!(attr(&dzi, "TileSize"), u64::from(options.tile_size));
    assert_eq!(attr(&dzi, "Overlap"), u64::from(overlap));
    assert_eq!(
        dz.level_count(),
        (w.max(h) as f64).log2().ceil() as usize + 1
    );

    // Reference: the whole level 0 read once, shrunk to each level with a different filter.
    let full = slide.read_region(0, 0, 0, w as u32, h as u32).unwrap();
    let ts = u64::from(options.tile_size);
    let ov = u64::from(overlap);
    let mut files = 0;
    for level in 0..dz.level_count() {
        let (lw, lh) = dz.level_dimensions(level).unwrap();
        let reference = imageops::resize(&full, lw as u32, lh as u32, FilterType::Triangle);
        let (cols, rows) = dz.level_tiles(level).unwrap();
        for row in 0..rows {
            for col in 0..cols {
                let file = out.join(format!("slide_files/{level}/{col}_{row}.jpeg"));
                let tile = image::open(&file).unwrap().to_rgb8();
                files += 1;
                let x0 = (col * ts).saturating_sub(if col > 0 { ov } else { 0 });
                let y0 = (row * ts).saturating_sub(if row > 0 { ov } else { 0 });
                let x1 = ((col + 1) * ts + ov).min(lw);
                let y1 = ((row + 1) * ts + ov).min(lh);
                assert_eq!(
                    tile.dimensions(),
                    ((x1 - x0) as u32, (y1 - y0) as u32),
                    "{file:?}"
                );
                let expected = imageops::crop_imm(
                    &reference,
                    x0 as u32,
                    y0 as u32,
                    tile.width(),
                    tile.height(),
                )
                .to_image();
                let mad = common::mean_abs_diff(&tile, &expected);
                // JPEG at q95 plus two different resampling filters on a fine texture.
                assert!(
                    mad < 6.0,
                    "{file:?}: mean abs diff {mad} from the reference rendering"
                );
            }
        }
    }
    assert_eq!(files, stats.tiles);
}

#[test]
fn native_grid_pyramid_is_complete_and_correct() {
    let spec = SynthSpec {
        width: 2300,
        height: 1700,
        seed: 3,
        ..SynthSpec::default()
    };
    check_pyramid(&spec, 0, 0);
}

#[test]
fn overlapping_pyramid_is_complete_and_correct() {
    let spec = SynthSpec {
        width: 1500,
        height: 1100,
        seed: 4,
        compression: SynthCompression::Jpeg,
        ..SynthSpec::default()
    };
    check_pyramid(&spec, 254, 1);
}

#[test]
fn passthrough_tiles_are_the_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        width: 4200,
        height: 2200,
        seed: 5,
        ..SynthSpec::default()
    };
    let path = common::synth(dir.path(), "slide.svs", &spec);
    let limits = SlideLimits::default();
    let slide: Arc<dyn SlideReader> = Arc::from(pathfed_slide::open(&path, &limits).unwrap());
    let levels = slide.properties().levels.clone();
    assert_eq!(
        levels.len(),
        2,
        "a 4× reduced level to pass through as well"
    );
    let options = DeepZoomOptions::for_slide(slide.properties(), &TilesConfig::default());
    assert_eq!(
        (options.tile_size, options.overlap),
        (256, 0),
        "native tile grid by default"
    );
    let dz = DeepZoom::new(Arc::clone(&slide), options).unwrap();
    let tiff = TiffFile::open(&path, &limits).unwrap();
    let top = dz.level_count() - 1;
    for (stored_level, dz_level) in [(0usize, top), (1, top - 2)] {
        let image = TiffImage::from_ifd(&tiff, &tiff.ifds()[if stored_level == 0 { 0 } else { 2 }])
            .unwrap();
        assert_eq!(image.width, levels[stored_level].width);
        let (cols, rows) = dz.level_tiles(dz_level).unwrap();
        let mut passed = 0;
        for row in 0..rows {
            for col in 0..cols {
                let tile = dz.tile(dz_level, col, row).unwrap();
                let full = (col + 1) * 256 <= image.width && (row + 1) * 256 <= image.height;
                assert_eq!(
                    tile.passthrough, full,
                    "level {dz_level} tile ({col},{row})"
                );
                if full {
                    passed += 1;
                    let i = (row * image.cols + col) as usize;
                    let stored = tiff
                        .read_exact_at(image.offsets[i], image.byte_counts[i], "tile")
                        .unwrap();
                    // The served stream is the stored tile after its SOI, preceded by the tables.
                    assert!(
                        tile.jpeg.ends_with(&stored[2..]),
                        "tile ({col},{row}) is not the stored bytes"
                    );
                    assert_eq!(
                        tile.jpeg,
                        slide
                            .raw_tile(stored_level, col, row)
                            .unwrap()
                            .unwrap()
                            .jpeg
                    );
                    let decoded = image::load_from_memory(&tile.jpeg).unwrap().to_rgb8();
                    let direct = slide
                        .read_region(stored_level, col * 256, row * 256, 256, 256)
                        .unwrap();
                    assert!(
                        common::mean_abs_diff(&decoded, &direct) <= 1.0,
                        "browser-style decode differs"
                    );
                }
            }
        }
        assert!(passed > 0);
    }
}

#[cfg(feature = "openslide")]
#[test]
fn real_slide_pyramid_matches_openslide_geometry() {
    use openslide_rs::OpenSlide;
    use openslide_rs::deepzoom::{DeepZoomGenerator, DeepZoomOptions as OsOptions};
    let path = common::real_slide();
    let slide: Arc<dyn SlideReader> =
        Arc::from(pathfed_slide::open(&path, &SlideLimits::default()).unwrap());
    let options = DeepZoomOptions::for_slide(
        slide.properties(),
        &TilesConfig {
            tile_size: 254,
            overlap: 1,
            jpeg_quality: 100,
            ..TilesConfig::default()
        },
    );
    let dz = DeepZoom::new(slide, options).unwrap();
    let os = OpenSlide::new(&path).unwrap();
    let generator = DeepZoomGenerator::new(&os, OsOptions::new(254).with_overlap(1)).unwrap();
    assert_eq!(generator.level_count() as usize, dz.level_count());
    for (level, grid) in generator.level_tiles().iter().enumerate() {
        assert_eq!(
            dz.level_tiles(level),
            Some((u64::from(grid.w), u64::from(grid.h)))
        );
    }
    let top = dz.level_count() - 1;
    let ours = image::load_from_memory(&dz.tile(top, 3, 4).unwrap().jpeg)
        .unwrap()
        .to_rgb8();
    let theirs = generator
        .tile_rgb(top as u32, openslide_rs::Address { x: 3, y: 4 })
        .unwrap();
    let mad = common::mean_abs_diff(&ours, &theirs);
    assert!(
        mad < 1.5,
        "mean abs diff {mad} from OpenSlide's Deep Zoom tile"
    );
}
