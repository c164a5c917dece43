//! Aperio JPEG 2000 SVS (TIFF compressions 33003, YCbCr, and 33005, RGB) through the pure-Rust
//! fast path. The slides are the real CMU-1-Small-Region fixture re-encoded at test time by
//! `fixtures/aperio_jp2k.py` (tifffile and imagecodecs' OpenJPEG), lossless and lossy, with
//! Aperio's 4:2:2 chroma; OpenSlide is the oracle, level by level. Damaged tiles (truncated,
//! corrupt, larger than declared or than the limits) are refused with clear errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use pathfed_slide::j2k::{self, J2kColour};
use pathfed_slide::tiff::file::tag;
use pathfed_slide::tiff::writer::{Directory, TiffWriter, Value};
use pathfed_slide::tiff::{DEFAULT_TILE_CACHE_BYTES, TiffSlide};
use pathfed_slide::{SlideError, SlideLimits, SlideReader};

/// Writes `dir/{variant}.svs` for each variant (see the script's header), all at once.
fn write_fixtures(dir: &Path, variants: &[&str]) -> Vec<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aperio_jp2k.py");
    let python = common::tools_python();
    let children: Vec<_> = variants
        .iter()
        .map(|variant| {
            let out = dir.join(format!("{variant}.svs"));
            let child = Command::new(&python)
                .arg(&script)
                .arg(common::real_slide())
                .arg(&out)
                .arg(variant)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
            (variant, out, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(variant, out, child)| {
            let done = child.wait_with_output().unwrap();
            assert!(
                done.status.success(),
                "aperio_jp2k.py {variant} failed: {}",
                String::from_utf8_lossy(&done.stderr)
            );
            out
        })
        .collect()
}

#[cfg(feature = "openslide")]
mod against_openslide {
    use pathfed_slide::Detected;
    use pathfed_slide::openslide::OpenSlideReader;
    use pathfed_slide::tiff::TiffKind;

    use super::*;

    /// The largest per-channel difference and the share of samples that differ at all.
    fn difference(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
        assert_eq!(a.dimensions(), b.dimensions(), "images differ in size");
        let (mut max, mut differing) = (0u8, 0usize);
        for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
            let d = x.abs_diff(*y);
            max = max.max(d);
            differing += usize::from(d != 0);
        }
        (max, differing as f64 / a.as_raw().len() as f64)
    }

    /// The fixtures, each of which must equal OpenSlide's pixels exactly. OpenSlide decodes with
    /// OpenJPEG; pathfed's JPEG 2000 decoder follows OpenJPEG's 9/7 arithmetic
    /// (vendor/hayro-jpeg2000/PATCHES.md), so even lossy samples round alike, and 33003's YCbCr
    /// goes through the same integer tables. Before that change the lossy 4:2:2 fixture differed
    /// by up to 3 on 0.05% of samples.
    const VARIANTS: [&str; 4] = ["ycbcr422-97", "ycbcr444-53", "rgb-53", "rgb-97"];

    /// The whole level, regions straddling tile borders, and one running past the edge.
    fn regions(width: u64, height: u64, tile: u64) -> Vec<(u64, u64, u32, u32)> {
        let mut out = vec![
            (0, 0, width as u32, height as u32),
            (tile - 37, tile - 53, 100, 120),
            (tile / 2, tile + 7, (tile * 2) as u32, 90),
        ];
        if width > 300 && height > 300 {
            out.push((width - 150, height - 120, 300, 200));
        }
        out.retain(|&(x, y, _, _)| x < width && y < height);
        out
    }

    #[test]
    fn every_level_of_both_compressions_matches_openslide() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_fixtures(dir.path(), &VARIANTS);
        let limits = SlideLimits::default();
        let source =
            TiffSlide::open(&common::real_slide(), &limits, DEFAULT_TILE_CACHE_BYTES).unwrap();
        for (variant, path) in VARIANTS.iter().zip(&paths) {
            assert_eq!(
                pathfed_slide::detect(path, &limits).unwrap(),
                Detected::FastPath(TiffKind::Aperio),
                "{variant}"
            );
            assert_eq!(
                pathfed_slide::open(path, &limits)
                    .unwrap()
                    .properties()
                    .backend,
                "tiff"
            );
            let fast = TiffSlide::open(path, &limits, DEFAULT_TILE_CACHE_BYTES).unwrap();
            let os = OpenSlideReader::open(path, &limits).unwrap();
            let (pf, po) = (fast.properties(), os.properties());
            assert_eq!(
                (pf.vendor.as_str(), po.vendor.as_str()),
                ("aperio", "aperio")
            );
            assert_eq!(pf.levels.len(), 3, "{variant}: levels");
            assert_eq!(pf.levels.len(), po.levels.len(), "{variant}: level count");
            for (a, b) in pf.levels.iter().zip(&po.levels) {
                assert_eq!((a.width, a.height), (b.width, b.height), "{variant}");
                assert!((a.downsample - b.downsample).abs() < 1e-9, "{variant}");
            }
            assert_eq!(pf.mpp_x, po.mpp_x, "{variant}: MPP");
            assert_eq!(pf.mpp_x, Some(0.499));
            assert_eq!(pf.objective_power, po.objective_power, "{variant}");

            for (level, info) in pf.levels.iter().enumerate() {
                let tile = u64::from(info.tile_size.unwrap().0);
                assert_eq!(tile, 240);
                for (x, y, w, h) in regions(info.width, info.height, tile) {
                    let ours = fast.read_region(level, x, y, w, h).unwrap();
                    let theirs = os.read_region(level, x, y, w, h).unwrap();
                    let (max, share) = difference(&ours, &theirs);
                    assert!(
                        max == 0,
                        "{variant} level {level} region ({x}, {y}, {w}, {h}): largest \
                         difference {max} (allowed 0), {:.6}% of samples differ",
                        share * 100.0
                    );
                    if level == 0 && (x, y) == (0, 0) && w > 1000 {
                        // The decoded slide is the slide: both readers agreeing on something
                        // else (a blank or mis-coloured tile) would fail here.
                        let original = source.read_region(0, 0, 0, w, h).unwrap();
                        let mad = common::mean_abs_diff(&ours, &original);
                        assert!(mad < 5.0, "{variant}: {mad} from the original slide");
                    }
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
            assert_eq!(names(pf), names(po), "{variant}: associated images");
            assert_eq!(
                pf.associated_images.len(),
                2,
                "{variant}: thumbnail and label"
            );
            for a in &pf.associated_images {
                let (max, _) = difference(
                    &fast.associated_image(&a.name).unwrap(),
                    &os.associated_image(&a.name).unwrap(),
                );
                assert_eq!(max, 0, "{variant}: associated image {}", a.name);
            }
        }
    }
}

/// A one-tile Aperio SVS of `size × size` px whose tile is `codestream` (compression 33003).
fn one_tile_svs(path: &Path, codestream: &[u8], size: u32) {
    let mut w = TiffWriter::create(path, false).unwrap();
    let (offset, len) = w.append(codestream).unwrap();
    let mut d = Directory::default();
    d.set(
        tag::IMAGE_DESCRIPTION,
        Value::Ascii(format!(
            "Aperio Image Library v11.2.1 \r\n{size}x{size} [0,0 {size}x{size}] ({size}x{size}) \
             J2K/YUV16 Q=70|AppMag = 20|MPP = 0.499"
        )),
    )
    .set(tag::IMAGE_WIDTH, Value::Long(vec![size]))
    .set(tag::IMAGE_LENGTH, Value::Long(vec![size]))
    .set(tag::BITS_PER_SAMPLE, Value::Short(vec![8, 8, 8]))
    .set(tag::COMPRESSION, Value::Short(vec![33003]))
    .set(tag::PHOTOMETRIC, Value::Short(vec![2]))
    .set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![3]))
    .set(tag::TILE_WIDTH, Value::Long(vec![size]))
    .set(tag::TILE_LENGTH, Value::Long(vec![size]))
    .set(tag::TILE_OFFSETS, Value::Long(vec![offset as u32]))
    .set(tag::TILE_BYTE_COUNTS, Value::Long(vec![len as u32]));
    w.finish(&[d]).unwrap();
}

/// Reads the whole tile of a one-tile slide through the fast path.
fn read_tile(path: &Path, limits: &SlideLimits) -> Result<RgbImage, SlideError> {
    let slide = TiffSlide::open(path, limits, DEFAULT_TILE_CACHE_BYTES)?;
    slide.read_region(0, 0, 0, 240, 240)
}

/// The message of a tile decoding error, which must name the directory and tile.
fn decode_message(result: Result<RgbImage, SlideError>) -> String {
    match result {
        Err(SlideError::Decode {
            image: 0,
            index: 0,
            message,
        }) => message,
        Err(other) => panic!("expected a decoding error for tile 0, got: {other}"),
        Ok(_) => panic!("the damaged tile decoded"),
    }
}

#[test]
fn damaged_and_oversized_tiles_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let slide = write_fixtures(dir.path(), &["ycbcr422-97"]).remove(0);
    let limits = SlideLimits::default();
    let fixture = TiffSlide::open(&slide, &limits, DEFAULT_TILE_CACHE_BYTES).unwrap();
    // Tile (1, 1): tissue, not background.
    let cols = fixture.pyramid()[0].cols as usize;
    let codestream = fixture.stored_chunk(0, cols + 1).unwrap();
    let expected = fixture.read_region(0, 240, 240, 240, 240).unwrap();

    // The intact tile, alone in a file, reads as it does in the slide.
    one_tile_svs(&p("intact.svs"), &codestream, 240);
    assert_eq!(read_tile(&p("intact.svs"), &limits).unwrap(), expected);
    assert_eq!(
        pathfed_slide::open(&p("intact.svs"), &limits)
            .unwrap()
            .properties()
            .backend,
        "tiff"
    );

    // Cut in half: refused as truncated, not shown half-decoded.
    one_tile_svs(
        &p("truncated.svs"),
        &codestream[..codestream.len() / 2],
        240,
    );
    let message = decode_message(read_tile(&p("truncated.svs"), &limits));
    assert!(
        message.contains("JPEG 2000") && message.contains("truncated"),
        "{message}"
    );

    // The marker after the SIZ header overwritten: the decoder's own error, passed on.
    let siz_end = 4 + usize::from(u16::from_be_bytes([codestream[4], codestream[5]]));
    let mut corrupt = codestream.clone();
    corrupt[siz_end..siz_end + 2].copy_from_slice(&[0xFF, 0x00]);
    one_tile_svs(&p("corrupt.svs"), &corrupt, 240);
    let message = decode_message(read_tile(&p("corrupt.svs"), &limits));
    assert!(message.starts_with("JPEG 2000: "), "{message}");

    // Not a codestream at all.
    let noise: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    one_tile_svs(&p("noise.svs"), &noise, 240);
    let message = decode_message(read_tile(&p("noise.svs"), &limits));
    assert!(message.contains("not a JPEG 2000 codestream"), "{message}");

    // A codestream declaring 60,000 × 60,000 px inside a 240 × 240 tile: refused from its
    // header, before the decoder allocates for it.
    let mut oversized = codestream.clone();
    for at in [8, 12, 24, 28] {
        oversized[at..at + 4].copy_from_slice(&60_000u32.to_be_bytes());
    }
    one_tile_svs(&p("oversized.svs"), &oversized, 240);
    let message = decode_message(read_tile(&p("oversized.svs"), &limits));
    assert!(
        message.contains("60000×60000") && message.contains("240×240"),
        "{message}"
    );

    // Tiles larger than the limits: refused when the slide is opened, and by the decoder.
    let small = SlideLimits {
        max_tile_dimension: 128,
        ..SlideLimits::default()
    };
    assert!(matches!(
        read_tile(&p("intact.svs"), &small),
        Err(SlideError::LimitExceeded {
            what: "tile width",
            ..
        })
    ));
    assert!(matches!(
        j2k::decode_rgb(&codestream, 240, 240, J2kColour::YCbCr, &small),
        Err(SlideError::LimitExceeded {
            value: 240,
            limit: 128,
            ..
        })
    ));

    // Every prefix and many single-byte corruptions: an image or an error, never a panic.
    let step = (codestream.len() / 40).max(1);
    for cut in (1..codestream.len()).step_by(step) {
        let result = j2k::decode_rgb(&codestream[..cut], 240, 240, J2kColour::YCbCr, &limits);
        assert!(result.is_err(), "a codestream cut at {cut} bytes decoded");
    }
    for at in (0..codestream.len()).step_by(step) {
        let mut damaged = codestream.clone();
        damaged[at] ^= 0x5A;
        if let Ok(pixels) = j2k::decode_rgb(&damaged, 240, 240, J2kColour::YCbCr, &limits) {
            assert_eq!(pixels.len(), 240 * 240 * 3);
        }
    }
}
