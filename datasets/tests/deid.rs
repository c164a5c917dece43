//! De-identification of generated slides full of canaries, through both pixel paths, and of
//! the real Aperio slide: no canary survives, OpenSlide reads the result, pixels are kept.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use pathfed_datasets::deid::{DeidOptions, PixelPath, deidentify_file, reencode};
use pathfed_slide::openslide::OpenSlideReader;
use pathfed_slide::{SlideLimits, SlideReader};
use pathfed_synth::{SynthCompression, SynthFormat, SynthSpec, generate};

const CANARY: &str = "CANARY";

fn canary_spec(format: SynthFormat, compression: SynthCompression) -> SynthSpec {
    let field = |name: &str| format!("{CANARY}-{name}-5f1c");
    SynthSpec {
        width: 1800,
        height: 1300,
        format,
        compression,
        label_lines: vec![field("LABEL"), "Jane Roe 1957-03-02".into()],
        barcode: field("BARCODE"),
        metadata: vec![
            ("Filename".into(), field("FILENAME")),
            ("Date".into(), field("DATE")),
            ("ScanScope ID".into(), field("SERIAL")),
            ("User".into(), field("USER")),
            ("Software".into(), field("SOFTWARE")),
            ("Artist".into(), field("ARTIST")),
            ("DateTime".into(), field("DATETIME")),
            ("Make".into(), field("MAKE")),
            ("Model".into(), field("MODEL")),
        ],
        hidden_text: Some(field("HIDDEN")),
        ..SynthSpec::default()
    }
}

fn generated(dir: &Path, name: &str, spec: &SynthSpec) -> PathBuf {
    let path = dir.join(name);
    generate(spec, &path, &|_, _| {}).unwrap();
    path
}

/// Whether `needle` occurs anywhere in the file's bytes, as ASCII or UTF-16.
fn contains(path: &Path, needle: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let wide: Vec<u8> = needle.bytes().flat_map(|b| [b, 0]).collect();
    let lower = needle.to_ascii_lowercase();
    bytes
        .windows(needle.len())
        .any(|w| w == needle.as_bytes() || w.eq_ignore_ascii_case(lower.as_bytes()))
        || bytes.windows(wide.len()).any(|w| w == wide.as_slice())
}

/// Output checks every path shares: no associated images, geometry and MPP kept, OpenSlide
/// reads it as a generic TIFF with the resolution in centimetres.
fn assert_canonical(source: &dyn SlideReader, out: &Path) {
    let limits = SlideLimits::default();
    let mine = pathfed_slide::open(out, &limits).unwrap();
    let (ps, po) = (source.properties(), mine.properties());
    assert!(
        po.associated_images.is_empty(),
        "{:?}",
        po.associated_images
    );
    let dims = |p: &pathfed_slide::SlideProperties| {
        p.levels
            .iter()
            .map(|l| (l.width, l.height))
            .collect::<Vec<_>>()
    };
    assert_eq!(dims(ps), dims(po), "pyramid geometry");
    let close = |a: Option<f64>, b: Option<f64>| (a.unwrap() - b.unwrap()).abs() < 1e-4;
    assert!(
        close(ps.mpp_x, po.mpp_x) && close(ps.mpp_y, po.mpp_y),
        "{:?} vs {:?}",
        ps.mpp_x,
        po.mpp_x
    );

    let os = OpenSlideReader::open(out, &limits).unwrap();
    let p = os.properties();
    assert_eq!(p.vendor, "generic-tiff");
    assert!(p.associated_images.is_empty());
    assert_eq!(dims(ps), dims(p), "OpenSlide's geometry");
    assert_eq!(
        p.raw.get("tiff.ResolutionUnit").map(String::as_str),
        Some("centimeter")
    );
    // OpenSlide 4 turns the centimetre resolution into openslide.mpp-x; 3.x lists the tags.
    let mpp_x = p
        .mpp_x
        .unwrap_or_else(|| 10_000.0 / p.raw["tiff.XResolution"].parse::<f64>().unwrap());
    assert!(
        (mpp_x - ps.mpp_x.unwrap()).abs() < 1e-3,
        "OpenSlide's MPP {mpp_x}"
    );
    let keys: Vec<&String> = p
        .raw
        .keys()
        .filter(|k| !k.starts_with("openslide."))
        .collect();
    for key in keys {
        assert!(
            matches!(
                key.as_str(),
                "tiff.ImageDescription"
                    | "tiff.XResolution"
                    | "tiff.YResolution"
                    | "tiff.ResolutionUnit"
            ),
            "unexpected property {key} = {}",
            p.raw[key]
        );
    }
    // The base level's pixels, read by OpenSlide from the output, match the source.
    let (w, h) = (
        ps.levels[0].width.min(1024) as u32,
        ps.levels[0].height.min(1024) as u32,
    );
    let a = source.read_region(0, 0, 0, w, h).unwrap();
    let b = os.read_region(0, 0, 0, w, h).unwrap();
    let mad = mean_abs_diff(&a, &b);
    assert!(mad < 3.0, "OpenSlide's pixels differ by {mad}");
}

fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// Every level of the output decodes to exactly the source's pixels.
fn assert_pixels_equal(source: &dyn SlideReader, out: &Path) {
    let mine = pathfed_slide::open(out, &SlideLimits::default()).unwrap();
    for (level, info) in source.properties().levels.iter().enumerate() {
        let (w, h) = (info.width as u32, info.height as u32);
        let a = source.read_region(level, 0, 0, w, h).unwrap();
        let b = mine.read_region(level, 0, 0, w, h).unwrap();
        assert!(a == b, "level {level} pixels differ");
    }
}

#[test]
fn lossless_copy_of_generated_slides_drops_every_canary() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (SynthFormat::Svs, SynthCompression::JpegRgb),
        (SynthFormat::Svs, SynthCompression::Jpeg),
        (SynthFormat::Svs, SynthCompression::Lzw),
        (SynthFormat::GenericTiff, SynthCompression::Jpeg),
    ];
    for (i, (format, compression)) in cases.into_iter().enumerate() {
        let source = generated(
            dir.path(),
            &format!("in{i}.tiff"),
            &canary_spec(format, compression),
        );
        assert!(contains(&source, CANARY), "the source carries canaries");
        let out = dir.path().join(format!("out{i}.tiff"));
        let report = deidentify_file(
            &source,
            &out,
            &SlideLimits::default(),
            &DeidOptions::default(),
        )
        .unwrap();
        assert_eq!(
            report.pixel_path,
            PixelPath::Lossless,
            "{format:?} {compression:?}"
        );
        assert!(
            !contains(&out, CANARY),
            "{format:?} {compression:?}: a canary survived"
        );
        assert!(!contains(&out, "Jane Roe"));
        let reader = pathfed_slide::open(&source, &SlideLimits::default()).unwrap();
        assert_canonical(reader.as_ref(), &out);
        assert_pixels_equal(reader.as_ref(), &out);
        if format == SynthFormat::Svs {
            assert!(
                report.removed.iter().any(|r| r.contains("\"label\"")),
                "{:?}",
                report.removed
            );
            assert!(report.removed.iter().any(|r| r.contains("\"macro\"")));
        }
        assert_eq!(
            report.kept.objective_power.is_some(),
            format == SynthFormat::Svs
        );
    }
}

#[test]
fn reencoding_through_openslide_drops_every_canary() {
    let dir = tempfile::tempdir().unwrap();
    let spec = canary_spec(SynthFormat::Svs, SynthCompression::Jpeg);
    let source = generated(dir.path(), "in.svs", &spec);
    let reader = OpenSlideReader::open(&source, &SlideLimits::default()).unwrap();
    let out = dir.path().join("out.tiff");
    let report = reencode(&reader, &out, &DeidOptions::default()).unwrap();
    assert_eq!(report.pixel_path, PixelPath::ReEncoded);
    assert!(!contains(&out, CANARY), "a canary survived");
    assert_canonical(&reader, &out);
    let mine = pathfed_slide::open(&out, &SlideLimits::default()).unwrap();
    let a = reader.read_region(0, 0, 0, 1800, 1300).unwrap();
    let b = mine.read_region(0, 0, 0, 1800, 1300).unwrap();
    let mad = mean_abs_diff(&a, &b);
    assert!(mad < 2.5, "re-encoded pixels differ by {mad} on average");
    assert_eq!(report.kept.tile_sizes[0], (256, 256));
}

#[test]
fn the_real_aperio_slide_loses_its_identifying_fields() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../slide/tests/fixtures/CMU-1-Small-Region.svs");
    let limits = SlideLimits::default();
    let reader = pathfed_slide::open(&source, &limits).unwrap();
    let raw = reader.properties().raw.clone();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.tiff");
    let report = deidentify_file(&source, &out, &limits, &DeidOptions::default()).unwrap();
    assert_eq!(report.pixel_path, PixelPath::Lossless);
    for key in [
        "aperio.Filename",
        "aperio.Date",
        "aperio.Time",
        "aperio.User",
        "aperio.ScanScope ID",
    ] {
        let value = raw
            .get(key)
            .unwrap_or_else(|| panic!("the fixture has {key}"));
        assert!(!contains(&out, value), "{key} = {value} survived");
    }
    assert!(
        !contains(&out, "Aperio Image Library"),
        "the vendor description survived"
    );
    assert_canonical(reader.as_ref(), &out);
    assert_pixels_equal(reader.as_ref(), &out);
    assert_eq!(report.kept.vendor, "aperio");
    assert_eq!(report.kept.objective_power, Some(20.0));
}

#[test]
fn non_slides_and_half_written_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tiff");
    std::fs::write(&junk, b"not a slide at all").unwrap();
    let out = dir.path().join("out.tiff");
    let err = deidentify_file(
        &junk,
        &out,
        &SlideLimits::default(),
        &DeidOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("unrecognised"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial file left"
    );
}
