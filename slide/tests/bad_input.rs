//! A corpus of broken and hostile files, made here: each must give its typed error, quickly and
//! without allocating much, and never panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pathfed_slide::tiff::file::tag;
use pathfed_slide::tiff::writer::Value;
use pathfed_slide::{SlideError, SlideLimits};
use pathfed_synth::{SynthFormat, SynthSpec};

/// Counts live and peak heap bytes so the test can bound what parsing a hostile file costs.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Little-endian classic TIFF with one directory at offset 8 holding `entries`
/// (tag, type, count, inline value) and pointing to `next`.
fn raw_tiff(entries: &[(u16, u16, u32, u32)], next: u32) -> Vec<u8> {
    let mut b = vec![b'I', b'I', 42, 0, 8, 0, 0, 0];
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for &(tag, typ, count, value) in entries {
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&typ.to_le_bytes());
        b.extend_from_slice(&count.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
    }
    b.extend_from_slice(&next.to_le_bytes());
    b
}

#[test]
fn every_bad_file_gets_its_typed_error_quickly_and_cheaply() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);

    // A valid one-tile TIFF first: the corpus edits must be what breaks the others.
    common::one_tile_tiff(&p("valid.tif"), |_| {});
    pathfed_slide::open(&p("valid.tif"), &SlideLimits::default()).unwrap();

    let slide = common::synth(
        dir.path(),
        "whole.svs",
        &SynthSpec {
            width: 1200,
            height: 900,
            ..SynthSpec::default()
        },
    );
    let bytes = std::fs::read(&slide).unwrap();
    std::fs::write(p("truncated.svs"), &bytes[..bytes.len() / 2]).unwrap();
    let real = std::fs::read(common::real_slide()).unwrap();
    std::fs::write(p("truncated-real.svs"), &real[..real.len() / 2]).unwrap();
    let random: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(p("random.svs"), random).unwrap();
    std::fs::write(
        p("page.tif"),
        b"<!DOCTYPE html><html><body>not a slide</body></html>",
    )
    .unwrap();
    std::fs::write(p("empty.svs"), b"").unwrap();
    common::one_tile_tiff(&p("huge.tif"), |d| {
        d.set(tag::IMAGE_WIDTH, Value::Long(vec![1_000_000]))
            .set(tag::IMAGE_LENGTH, Value::Long(vec![1_000_000]));
    });
    // 256 × 256 tiles of a 400k × 400k image: within the dimension limit, over the pixel limit.
    common::one_tile_tiff(&p("many-pixels.tif"), |d| {
        d.set(tag::IMAGE_WIDTH, Value::Long(vec![400_000]))
            .set(tag::IMAGE_LENGTH, Value::Long(vec![400_000]));
    });
    std::fs::write(
        p("loop.tif"),
        raw_tiff(&[(256, 3, 1, 16), (257, 3, 1, 16)], 8),
    )
    .unwrap();
    let mut far = raw_tiff(&[], 0);
    far[4..8].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(p("ifd-past-eof.tif"), far).unwrap();
    common::one_tile_tiff(&p("zero-tile.tif"), |d| {
        d.set(tag::TILE_BYTE_COUNTS, Value::Long(vec![0]));
    });
    common::one_tile_tiff(&p("spp.tif"), |d| {
        d.set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![65529]));
    });
    common::one_tile_tiff(&p("tile-past-eof.tif"), |d| {
        d.set(tag::TILE_OFFSETS, Value::Long(vec![4_000_000_000]));
    });
    common::one_tile_tiff(&p("wrong-tile-count.tif"), |d| {
        d.set(tag::IMAGE_WIDTH, Value::Long(vec![64]));
    });
    // A directory claiming 60,000 entries: over the entry limit before anything is read.
    std::fs::write(p("many-entries.tif"), {
        let mut b = raw_tiff(&[], 0);
        b[8..10].copy_from_slice(&60_000u16.to_le_bytes());
        b
    })
    .unwrap();

    type Check = fn(&SlideError) -> bool;
    let corpus: &[(&str, Check)] = &[
        ("truncated.svs", |e| {
            matches!(e, SlideError::OffsetPastEnd { .. })
        }),
        ("truncated-real.svs", |e| {
            matches!(e, SlideError::OffsetPastEnd { .. })
        }),
        ("random.svs", |e| matches!(e, SlideError::NotASlide(_))),
        ("page.tif", |e| matches!(e, SlideError::NotASlide(_))),
        ("empty.svs", |e| matches!(e, SlideError::NotASlide(_))),
        ("huge.tif", |e| {
            matches!(
                e,
                SlideError::LimitExceeded {
                    what: "image width",
                    ..
                }
            )
        }),
        ("many-pixels.tif", |e| {
            matches!(
                e,
                SlideError::LimitExceeded {
                    what: "image pixel count",
                    ..
                }
            )
        }),
        ("loop.tif", |e| matches!(e, SlideError::IfdLoop(8))),
        ("ifd-past-eof.tif", |e| {
            matches!(
                e,
                SlideError::OffsetPastEnd {
                    offset: 1_000_000,
                    ..
                }
            )
        }),
        ("zero-tile.tif", |e| {
            matches!(e, SlideError::ZeroLengthTile { image: 0, index: 0 })
        }),
        (
            "spp.tif",
            |e| matches!(e, SlideError::Unsupported(m) if m.contains("65529")),
        ),
        ("tile-past-eof.tif", |e| {
            matches!(
                e,
                SlideError::OffsetPastEnd {
                    what: "tile/strip data",
                    ..
                }
            )
        }),
        ("wrong-tile-count.tif", |e| {
            matches!(e, SlideError::InvalidTiff(_))
        }),
        ("many-entries.tif", |e| {
            matches!(
                e,
                SlideError::LimitExceeded {
                    what: "entries in a TIFF directory",
                    ..
                }
            )
        }),
    ];
    for (name, is_expected) in corpus {
        let baseline = LIVE.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let started = Instant::now();
        let result = pathfed_slide::open(&p(name), &SlideLimits::default());
        let elapsed = started.elapsed();
        let extra = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
        let err = match result {
            Ok(_) => panic!("{name}: opened without error"),
            Err(e) => e,
        };
        assert!(is_expected(&err), "{name}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
        // Safety bounds, not speed targets: a hostile file must not stall or balloon the server.
        assert!(elapsed < Duration::from_secs(5), "{name}: took {elapsed:?}");
        assert!(extra < 16 << 20, "{name}: allocated {extra} bytes");
    }
}

#[test]
fn tighter_limits_reject_what_defaults_accept() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        width: 1200,
        height: 900,
        format: SynthFormat::GenericTiff,
        ..SynthSpec::default()
    };
    let path = common::synth(dir.path(), "ok.tiff", &spec);
    pathfed_slide::open(&path, &SlideLimits::default()).unwrap();
    let tight = SlideLimits {
        max_pixels: 1000 * 1000,
        ..SlideLimits::default()
    };
    let err = pathfed_slide::open(&path, &tight).err().unwrap();
    assert!(
        matches!(
            err,
            SlideError::LimitExceeded {
                what: "image pixel count",
                value: 1_080_000,
                ..
            }
        ),
        "{err:?}"
    );
    let tight = SlideLimits {
        max_ifds: 2,
        ..SlideLimits::default()
    };
    let err = pathfed_slide::open(&path, &tight).err().unwrap();
    assert!(
        matches!(
            err,
            SlideError::LimitExceeded {
                what: "number of TIFF directories",
                ..
            }
        ),
        "{err:?}"
    );
    let slide = pathfed_slide::open(
        &path,
        &SlideLimits {
            max_region_pixels: 100,
            ..SlideLimits::default()
        },
    )
    .unwrap();
    let err = slide.read_region(0, 0, 0, 11, 10).err().unwrap();
    assert!(
        matches!(
            err,
            SlideError::LimitExceeded {
                what: "region pixel count",
                ..
            }
        ),
        "{err:?}"
    );
}
