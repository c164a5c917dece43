//! Formats are recognised from the bytes, never the file name, and each reaches its backend.
#![allow(clippy::unwrap_used)]

mod common;

use pathfed_slide::tiff::TiffKind;
use pathfed_slide::tiff::file::tag;
use pathfed_slide::tiff::writer::Value;
use pathfed_slide::{Detected, SlideLimits, detect};
use pathfed_synth::{SynthFormat, SynthSpec};

#[test]
fn content_decides_not_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SlideLimits::default();
    let small = SynthSpec {
        width: 600,
        height: 500,
        ..SynthSpec::default()
    };
    let svs = common::synth(dir.path(), "scan.dat", &small);
    assert_eq!(
        detect(&svs, &limits).unwrap(),
        Detected::FastPath(TiffKind::Aperio)
    );
    let generic = common::synth(
        dir.path(),
        "scan.svs",
        &SynthSpec {
            format: SynthFormat::GenericTiff,
            ..small
        },
    );
    assert_eq!(
        detect(&generic, &limits).unwrap(),
        Detected::FastPath(TiffKind::Generic)
    );
    let slide = pathfed_slide::open(&generic, &limits).unwrap();
    assert_eq!(slide.properties().vendor, "generic-tiff");
}

#[test]
fn vendor_tiffs_go_to_openslide_and_aperio_jpeg_2000_to_the_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let limits = SlideLimits::default();
    let jp2k = dir.path().join("jp2k.svs");
    common::one_tile_tiff(&jp2k, |d| {
        d.set(
            tag::IMAGE_DESCRIPTION,
            Value::Ascii(
                "Aperio Image Library v12\r\n16x16 [0,0 16x16] (16x16) J2K/YUV16 Q=70".into(),
            ),
        )
        .set(tag::COMPRESSION, Value::Short(vec![33003]));
    });
    assert_eq!(
        detect(&jp2k, &limits).unwrap(),
        Detected::FastPath(TiffKind::Aperio)
    );
    let ndpi = dir.path().join("x.tif");
    common::one_tile_tiff(&ndpi, |d| {
        d.set(tag::NDPI_FORMAT_FLAG, Value::Long(vec![1]));
    });
    assert_eq!(
        detect(&ndpi, &limits).unwrap(),
        Detected::OpenSlide("hamamatsu".into())
    );
    let philips = dir.path().join("p.tiff");
    common::one_tile_tiff(&philips, |d| {
        d.set(
            tag::IMAGE_DESCRIPTION,
            Value::Ascii(
                "<?xml version=\"1.0\"?><DataObject ObjectType=\"DPUfsImport\"></DataObject>"
                    .into(),
            ),
        );
    });
    assert_eq!(
        detect(&philips, &limits).unwrap(),
        Detected::OpenSlide("philips".into())
    );
}
