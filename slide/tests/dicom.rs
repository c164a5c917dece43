//! The DICOM whole-slide reader on series converted from the real Aperio fixture at test time
//! (tests/fixtures/dicom_wsi.py: wsidicomizer, pydicom rewrites): geometry, properties and
//! pixels level by level against wsidicom, an independent reader; pixels equal to the TIFF fast
//! path's on the same JPEG bytes; every offset table, TILED_SPARSE, concatenations and
//! multi-fragment frames read alike; broken series refused with typed errors, quickly and
//! without allocating what they declare.
#![allow(clippy::unwrap_used)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use image::RgbImage;
use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
use pathfed_slide::tiff::{DEFAULT_TILE_CACHE_BYTES, TiffSlide};
use pathfed_slide::{Detected, SlideError, SlideLimits, SlideReader};

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

/// Counts the heap bytes the current thread holds while tracking is on, so a test can bound
/// what opening a hostile file costs whatever other tests do meanwhile.
struct Tracking;

fn note(delta: i64) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let live = LIVE.with(|l| {
                l.set(l.get() + delta);
                l.get()
            });
            PEAK.with(|p| p.set(p.get().max(live)));
        }
    });
}

#[allow(unsafe_code)]
// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as i64));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the most heap this thread held meanwhile.
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, u64) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, PEAK.with(Cell::get).max(0) as u64)
}

/// The series the fixture script writes, made once per test run.
fn fixtures() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dicom-wsi");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        common::run_fixture_script(
            "dicom_wsi.py",
            &[common::real_slide().as_os_str(), root.as_os_str()],
        );
        root
    })
}

fn series(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn open(path: &Path) -> Box<dyn SlideReader> {
    pathfed_slide::open(path, &SlideLimits::default())
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// What wsidicom saw, from the fixture script's manifest.
#[derive(Default)]
struct Oracle {
    levels: Vec<(u64, u64, u32, u32)>,
    regions: Vec<(usize, u64, u64, u32, u32, PathBuf)>,
    mpp: (f64, f64),
    objective: Option<f64>,
    associated: Vec<(String, u64, u64, Option<PathBuf>)>,
}

fn oracle(variant: &str) -> Oracle {
    let folder = fixtures().join("oracle").join(variant);
    let manifest = std::fs::read_to_string(folder.join("manifest.txt")).unwrap();
    let mut oracle = Oracle::default();
    for line in manifest.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        match f[0] {
            "level" => oracle.levels.push((n(2), n(3), n(4) as u32, n(5) as u32)),
            "region" => oracle.regions.push((
                n(1) as usize,
                n(2),
                n(3),
                n(4) as u32,
                n(5) as u32,
                folder.join(f[6]),
            )),
            "mpp" => oracle.mpp = (f[1].parse().unwrap(), f[2].parse().unwrap()),
            "objective" => oracle.objective = f[1].parse().ok(),
            "assoc" => oracle.associated.push((
                f[1].to_string(),
                n(2),
                n(3),
                (f[4] != "-").then(|| folder.join(f[4])),
            )),
            other => panic!("unknown manifest line {other}"),
        }
    }
    oracle
}

fn raw_rgb(path: &Path, w: u32, h: u32) -> RgbImage {
    RgbImage::from_raw(w, h, std::fs::read(path).unwrap()).unwrap()
}

// Our pixels must be wsidicom's, byte for byte: JPEG frames (pathfed's decoder follows
// libjpeg-turbo's arithmetic, and wsidicom decodes them with Pillow, i.e. libjpeg-turbo), JPEG
// 2000 (pathfed's decoder follows OpenJPEG's, which wsidicom uses), and raw pixels.
#[test]
fn levels_properties_and_pixels_match_wsidicom_level_by_level() {
    for variant in ["jpeg-bot", "j2k-lossless", "j2k-lossy", "native", "sparse"] {
        let expected = oracle(variant);
        let slide = open(&series(variant));
        let p = slide.properties();
        assert_eq!(p.vendor, "dicom", "{variant}");
        assert_eq!(p.backend, "dicom", "{variant}");
        let levels: Vec<_> = p
            .levels
            .iter()
            .map(|l| {
                (
                    l.width,
                    l.height,
                    l.tile_size.unwrap().0,
                    l.tile_size.unwrap().1,
                )
            })
            .collect();
        assert_eq!(levels, expected.levels, "{variant}: levels");
        for l in &p.levels {
            let ds = (2220.0 / l.width as f64 + 2967.0 / l.height as f64) / 2.0;
            assert!((l.downsample - ds).abs() < 1e-9, "{variant}: downsample");
        }
        let (mpp_x, mpp_y) = (p.mpp_x.unwrap(), p.mpp_y.unwrap());
        assert!(
            (mpp_x - expected.mpp.0).abs() < 1e-9,
            "{variant}: mpp x {mpp_x}"
        );
        assert!(
            (mpp_y - expected.mpp.1).abs() < 1e-9,
            "{variant}: mpp y {mpp_y}"
        );
        assert_eq!(
            p.objective_power, expected.objective,
            "{variant}: objective"
        );

        for (level, x, y, w, h, file) in &expected.regions {
            let ours = slide.read_region(*level, *x, *y, *w, *h).unwrap();
            let theirs = raw_rgb(file, *w, *h);
            common::assert_same_pixels(
                &ours,
                &theirs,
                &format!("{variant} level {level} region ({x},{y},{w},{h})"),
            );
        }

        let mut ours: Vec<_> = p
            .associated_images
            .iter()
            .map(|a| (a.name.clone(), a.width, a.height))
            .collect();
        ours.sort();
        let mut theirs: Vec<_> = expected
            .associated
            .iter()
            .map(|(name, w, h, _)| (name.clone(), *w, *h))
            .collect();
        theirs.sort();
        assert_eq!(ours, theirs, "{variant}: associated images");
        for (name, w, h, file) in &expected.associated {
            let image = slide.associated_image(name).unwrap();
            assert_eq!(
                image.dimensions(),
                (*w as u32, *h as u32),
                "{variant} {name}"
            );
            if let Some(file) = file {
                let theirs = raw_rgb(file, *w as u32, *h as u32);
                common::assert_same_pixels(&image, &theirs, &format!("{variant} {name}"));
            }
        }
        assert!(matches!(
            slide.associated_image("nonexistent"),
            Err(SlideError::NoSuchAssociatedImage(_))
        ));
    }
}

#[test]
fn properties_are_named_as_openslide_names_them() {
    let slide = open(&series("sparse"));
    let p = slide.properties();
    let raw = |key: &str| p.raw.get(key).map(String::as_str);
    assert_eq!(raw("dicom.Manufacturer"), Some("Aperio"));
    assert_eq!(raw("dicom.ImageType[2]"), Some("VOLUME"));
    assert_eq!(raw("dicom.DimensionOrganizationType"), Some("TILED_SPARSE"));
    assert_eq!(
        raw("dicom.TransferSyntaxUID"),
        Some("1.2.840.10008.1.2.4.50")
    );
    assert_eq!(
        raw("dicom.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[1]"),
        Some("0.000499")
    );
    assert_eq!(
        raw("dicom.OpticalPathSequence[0].ObjectiveLensPower"),
        Some("20")
    );
    assert_eq!(p.objective_power, Some(20.0));
    assert!(raw("dicom.SeriesInstanceUID").is_some_and(|uid| uid.starts_with("1.2.")));
    // Binary values (the ICC profile, the offset tables) are not properties.
    assert!(p.raw.keys().all(|k| !k.contains("ICCProfile")));
}

#[test]
fn jpeg_frames_decode_exactly_like_the_tiff_fast_path_and_pass_through_deep_zoom() {
    let limits = SlideLimits::default();
    let tiff = TiffSlide::open(&common::real_slide(), &limits, DEFAULT_TILE_CACHE_BYTES).unwrap();
    let slide: Arc<dyn SlideReader> = Arc::from(open(&series("jpeg-bot")));
    let (w, h) = (2220, 2967);
    assert_eq!(slide.properties().dimensions(), (w, h));
    // wsidicomizer passes the SVS tiles through: the same JPEG bytes, the same decoder.
    let ours = slide.read_region(0, 0, 0, w as u32, h as u32).unwrap();
    let theirs = tiff.read_region(0, 0, 0, w as u32, h as u32).unwrap();
    assert_eq!(
        common::max_abs_diff(&ours, &theirs),
        0,
        "level 0 differs from the SVS"
    );
    // Past the edge is glass.
    let edge = slide.read_region(0, w - 10, h - 10, 20, 20).unwrap();
    assert_eq!(edge.get_pixel(15, 15).0, [255, 255, 255]);
    assert_eq!(
        edge.get_pixel(5, 5),
        ours.get_pixel(w as u32 - 5, h as u32 - 5)
    );

    // Stored frames are served as complete JPEGs that decode to the level's pixels.
    for (col, row) in [(0, 0), (3, 5), (9, 12)] {
        let raw = slide.raw_tile(0, col, row).unwrap().unwrap();
        assert_eq!((raw.width, raw.height), (240, 240));
        let (tw, th, pixels) = pathfed_slide::jpeg::decode_rgb(&raw.jpeg, 240).unwrap();
        let decoded = RgbImage::from_raw(tw, th, pixels).unwrap();
        let region = slide
            .read_region(0, col * 240, row * 240, 240, 240)
            .unwrap();
        let (vw, vh) = (
            (w - col * 240).min(240) as u32,
            (h - row * 240).min(240) as u32,
        );
        let view = |i: &RgbImage| image::imageops::crop_imm(i, 0, 0, vw, vh).to_image();
        assert_eq!(view(&decoded), view(&region), "raw tile ({col}, {row})");
    }
    assert!(matches!(
        slide.raw_tile(0, 10, 0),
        Err(SlideError::OutOfRange(_))
    ));
    assert!(
        open(&series("j2k-lossless"))
            .raw_tile(0, 0, 0)
            .unwrap()
            .is_none()
    );

    let options = DeepZoomOptions {
        tile_size: 240,
        overlap: 0,
        jpeg_quality: 90,
    };
    let dz = DeepZoom::new(Arc::clone(&slide), options).unwrap();
    let top = dz.level_count() - 1;
    let tile = dz.tile(top, 2, 3).unwrap();
    assert!(tile.passthrough, "a stored frame is passed through");
    assert_eq!(tile.jpeg, slide.raw_tile(0, 2, 3).unwrap().unwrap().jpeg);
}

/// Every level of `variant`, whole.
fn whole_levels(slide: &dyn SlideReader) -> Vec<RgbImage> {
    slide
        .properties()
        .levels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            slide
                .read_region(i, 0, 0, l.width as u32, l.height as u32)
                .unwrap()
        })
        .collect()
}

#[test]
fn offset_tables_concatenations_and_fragments_read_the_same_frames() {
    let reference = whole_levels(open(&series("jpeg-bot")).as_ref());
    assert_eq!(reference.len(), 5);
    for variant in ["jpeg-eot", "jpeg-empty", "concat", "fragments"] {
        let levels = whole_levels(open(&series(variant)).as_ref());
        assert_eq!(levels.len(), reference.len(), "{variant}");
        for (i, (a, b)) in levels.iter().zip(&reference).enumerate() {
            assert_eq!(common::max_abs_diff(a, b), 0, "{variant} level {i}");
        }
    }

    // TILED_SPARSE: the same frames where present, glass where a frame was left out.
    let slide = open(&series("sparse"));
    let sparse = whole_levels(slide.as_ref());
    let mut expected = reference[0].clone();
    for tile in [0u32, 5, 17, 64] {
        let (col, row) = (tile % 10, tile / 10);
        for y in row * 240..((row + 1) * 240).min(2967) {
            for x in col * 240..((col + 1) * 240).min(2220) {
                expected.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
    }
    assert_eq!(
        common::max_abs_diff(&sparse[0], &expected),
        0,
        "sparse level 0"
    );
    assert_eq!(
        common::max_abs_diff(&sparse[1], &reference[1]),
        0,
        "sparse level 1"
    );
    assert!(
        slide.raw_tile(0, 5, 0).unwrap().is_none(),
        "a missing tile has no JPEG"
    );
    assert!(slide.raw_tile(0, 6, 0).unwrap().is_some());
}

#[test]
fn a_folder_or_one_file_of_the_series_opens_the_slide() {
    let limits = SlideLimits::default();
    let folder = series("jpeg-bot");
    assert_eq!(
        pathfed_slide::detect(&folder, &limits).unwrap(),
        Detected::Dicom
    );
    let files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        pathfed_slide::detect(&files[0], &limits).unwrap(),
        Detected::Dicom
    );
    let whole = open(&folder);
    for file in &files {
        // Any instance, level or label, finds its siblings.
        let one = open(file);
        assert_eq!(one.properties().levels, whole.properties().levels);
        assert_eq!(
            one.properties().associated_images,
            whole.properties().associated_images
        );
    }

    // A folder of two series is two slides: refused. One file of it opens its own series.
    let mixed = series("bad-two-series");
    let err = pathfed_slide::open(&mixed, &limits).err().unwrap();
    assert!(
        matches!(&err, SlideError::Unsupported(m) if m.contains("2 whole-slide series")),
        "{err}"
    );
    let lossy_file = std::fs::read_dir(&mixed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lossy-")
        })
        .unwrap();
    let lossy = open(&lossy_file);
    assert_eq!(lossy.properties().levels.len(), 5);
    assert!(
        lossy.raw_tile(0, 0, 0).unwrap().is_none(),
        "JPEG 2000 series chosen"
    );

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        pathfed_slide::open(empty.path(), &limits),
        Err(SlideError::NotASlide(_))
    ));
    std::fs::write(empty.path().join("notes.txt"), "not a slide").unwrap();
    assert!(matches!(
        pathfed_slide::detect(empty.path(), &limits),
        Err(SlideError::NotASlide(_))
    ));
}

/// A broken fixture's name and what its error must look like.
type BrokenCase = (&'static str, fn(&SlideError) -> bool);

#[test]
fn broken_series_get_typed_errors_quickly_and_without_allocating_what_they_declare() {
    let cases: [BrokenCase; 7] = [
        ("bad-rle", |e| {
            matches!(e, SlideError::Unsupported(m)
                if m.contains("1.2.840.10008.1.2.5") && m.contains("RLE Lossless"))
        }),
        ("bad-truncated", |e| {
            matches!(
                e,
                SlideError::OffsetPastEnd { .. } | SlideError::Truncated(_)
            )
        }),
        ("bad-header", |e| {
            matches!(
                e,
                SlideError::OffsetPastEnd { .. } | SlideError::Truncated(_)
            )
        }),
        ("bad-offsets", |e| {
            matches!(e, SlideError::OffsetPastEnd { .. })
        }),
        ("bad-matrix", |e| {
            matches!(
                e,
                SlideError::LimitExceeded {
                    what: "image width",
                    ..
                }
            )
        }),
        ("bad-length", |e| {
            matches!(e, SlideError::LimitExceeded { .. })
        }),
        ("bad-length-eof", |e| {
            matches!(e, SlideError::OffsetPastEnd { .. })
        }),
    ];
    let limits = SlideLimits::default();
    for (name, expected) in cases {
        let folder = series(name);
        let start = Instant::now();
        let (result, peak) = peak_heap(|| pathfed_slide::open(&folder, &limits));
        let err = result.err().unwrap_or_else(|| panic!("{name} opened"));
        assert!(expected(&err), "{name}: unexpected error {err:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{name} took {:?}",
            start.elapsed()
        );
        assert!(peak < 16 << 20, "{name}: {peak} bytes allocated");
        // Opened as one file, the same.
        let file = std::fs::read_dir(&folder)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let err = pathfed_slide::open(&file, &limits).err().unwrap();
        assert!(expected(&err), "{name} (file): unexpected error {err:?}");
    }
}

#[test]
fn the_first_bytes_of_an_upload_tell_a_refused_transfer_syntax() {
    use pathfed_slide::dicom::{HeadVerdict, check_head};
    let head = |path: &Path| std::fs::read(path).unwrap()[..1024].to_vec();
    let first = |folder: &str| {
        std::fs::read_dir(series(folder))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    };
    assert_eq!(
        check_head(&head(&first("jpeg-bot"))).unwrap(),
        HeadVerdict::Readable
    );
    assert_eq!(
        check_head(&head(&first("j2k-lossy"))).unwrap(),
        HeadVerdict::Readable
    );
    let err = check_head(&head(&first("bad-rle"))).unwrap_err();
    assert!(
        matches!(&err, SlideError::Unsupported(m) if m.contains("1.2.840.10008.1.2.5 (RLE Lossless)")),
        "{err}"
    );
    assert!(matches!(
        check_head(&head(&first("jpeg-bot"))[..200]),
        Err(SlideError::Truncated(_))
    ));
    assert!(matches!(
        check_head(&head(&common::real_slide())),
        Err(SlideError::NotASlide(_))
    ));
}

#[test]
fn stored_frames_report_the_size_their_stream_holds() {
    // wsidicomizer crops the edge frames of the levels it adds. A stored tile that DICOMweb,
    // IIIF or Deep Zoom passes through as a whole frame must not be one of those, so a raw
    // tile's size is what its stream decodes to, not the series' frame size.
    let slide = open(&series("jpeg-bot"));
    let mut cropped = 0;
    for (level, info) in slide.properties().levels.iter().enumerate() {
        let (tw, th) = info.tile_size.unwrap();
        for row in 0..info.height.div_ceil(u64::from(th)) {
            for col in 0..info.width.div_ceil(u64::from(tw)) {
                let tile = slide.raw_tile(level, col, row).unwrap().unwrap();
                let (width, height, _) = pathfed_slide::jpeg::decode_rgb(&tile.jpeg, 4096).unwrap();
                assert_eq!(
                    (width, height),
                    (tile.width, tile.height),
                    "level {level} tile ({col}, {row})"
                );
                cropped += usize::from((tile.width, tile.height) != (tw, th));
            }
        }
    }
    assert!(
        cropped > 0,
        "the fixture has no cropped edge frame to check"
    );
}
