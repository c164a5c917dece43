//! `pathfed bench slide`: pathfed's readers against OpenSlide, measured in the same run on a
//! generated ~40,000 × 30,000 px slide, on a real slide, on Aperio JPEG 2000 versions of the
//! real slide (written by the JPEG 2000 test's fixture script, `slide/tests/fixtures/
//! aperio_jp2k.py`, with the tools venv's tifffile and imagecodecs), and on DICOM WSI versions of
//! the generated and the real slide (written by wsidicomizer, which passes the SVS's JPEG tiles
//! through as frames unchanged).
//!
//! The DICOM reader is measured against OpenSlide reading the SVS the series was converted from:
//! the same compressed tiles, so the same decoding work, and OpenSlide before 4.0 (Debian 12 ships
//! 3.4) cannot open DICOM at all.
//!
//! 1. Aligned 256 px level-0 region reads per second, with 1 and 2 threads. The reads are cut
//!    into passes that pathfed and OpenSlide take in turn, and the ratio is the passes' median:
//!    on a shared machine the speed drifts by a fifth within a minute, which moved a ratio taken
//!    from two back-to-back totals as much.
//! 2. Deep Zoom tiles per second over a whole pyramid (tiles rendered and JPEG-encoded in
//!    memory), pathfed's `DeepZoom` against openslide-rs's `DeepZoomGenerator` plus the same
//!    JPEG encoder.

#[cfg(feature = "openslide")]
use std::path::Path;
use std::path::PathBuf;
#[cfg(feature = "openslide")]
use std::process::Command;

use anyhow::Context;
use clap::Args;
use pathfed_core::Config;
use pathfed_synth::SynthSpec;

use crate::cached_synthetic;

/// Options of `pathfed bench slide`.
#[derive(Debug, Args)]
pub struct SlideBenchArgs {
    /// Width of the generated slide.
    #[arg(long, default_value_t = 40_000)]
    width: u64,
    /// Height of the generated slide.
    #[arg(long, default_value_t = 30_000)]
    height: u64,
    /// Where the generated slide is kept between runs.
    #[arg(long, default_value = "data/bench")]
    work_dir: PathBuf,
    /// A real slide to measure as well (default: the project's CMU-1-Small-Region.svs fixture, if present).
    #[arg(long)]
    real: Option<PathBuf>,
    /// Region reads per measurement.
    #[arg(long, default_value_t = 6000)]
    reads: usize,
    /// Deep Zoom tile geometries as SIZE:OVERLAP; 0:0 is the slide's native tile size; "" skips Deep Zoom.
    #[arg(long, value_delimiter = ',', default_value = "0:0,254:1")]
    geometry: Vec<String>,
    /// Decoded-tile cache of pathfed's reader, in MiB (OpenSlide keeps its own default cache).
    #[arg(long, default_value_t = 64)]
    tile_cache_mb: usize,
    /// Aperio JPEG 2000 versions of the real slide to measure, as variants of
    /// slide/tests/fixtures/aperio_jp2k.py (ycbcr422-97, ycbcr444-53, rgb-53, rgb-97); ""
    /// skips them.
    #[arg(long, value_delimiter = ',', default_value = "ycbcr422-97,rgb-97")]
    jpeg2000: Vec<String>,
    /// Region reads per measurement on the JPEG 2000 slides (each tile costs far more to decode).
    #[arg(long, default_value_t = 1000)]
    jpeg2000_reads: usize,
    /// Measure DICOM versions of the generated and the real slide (written once with wsidicomizer).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    dicom: bool,
    /// The Python that writes the JPEG 2000 slides and the DICOM series (needs tifffile,
    /// imagecodecs and wsidicomizer; default: the repository's .tools/venv, else python3).
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Ratios a slide's figures are held to.
#[cfg(feature = "openslide")]
#[derive(Debug, Clone, Copy)]
struct Targets {
    /// Region reads per second, pathfed over OpenSlide.
    reads: f64,
    /// Deep Zoom tiles per second, pathfed over OpenSlide.
    deep_zoom: f64,
}

/// JPEG, the fast path's home ground.
#[cfg(feature = "openslide")]
const JPEG_TARGETS: Targets = Targets {
    reads: 4.0,
    deep_zoom: 5.0,
};

/// JPEG 2000: both sides spend their time in a wavelet decoder, so parity is the bar.
#[cfg(feature = "openslide")]
const JPEG2000_TARGETS: Targets = Targets {
    reads: 1.0,
    deep_zoom: 1.0,
};

/// Without OpenSlide there is no reference to measure against.
#[cfg(not(feature = "openslide"))]
pub fn run(_args: &SlideBenchArgs, _config: &Config) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no OpenSlide backend to compare against; build with the `openslide` feature"
    )
}

/// Measures region reads and Deep Zoom tiling on both backends and prints the figures.
#[cfg(feature = "openslide")]
pub fn run(args: &SlideBenchArgs, config: &Config) -> anyhow::Result<()> {
    let synthetic = ensure_synthetic(args)?;
    let mut slides = vec![Measured::tiff(
        "synthetic",
        &synthetic,
        args.reads,
        JPEG_TARGETS,
    )];
    let default_real = PathBuf::from("slide/tests/fixtures/CMU-1-Small-Region.svs");
    let real = match &args.real {
        Some(real) => Some(real.clone()),
        None if default_real.exists() => Some(default_real),
        None => None,
    };
    match &real {
        Some(real) => slides.push(Measured::tiff("real", real, args.reads, JPEG_TARGETS)),
        None => println!(
            "(no real slide given and no fixture found; measuring the synthetic slide only)"
        ),
    }
    let variants: Vec<&String> = args.jpeg2000.iter().filter(|v| !v.is_empty()).collect();
    match (&real, variants.is_empty()) {
        (_, true) => {}
        (None, false) => println!("(no real slide to convert: skipping JPEG 2000)"),
        (Some(real), false) => {
            for variant in variants {
                match ensure_jpeg2000(args, real, variant) {
                    Ok(path) => slides.push(Measured::tiff(
                        &format!("JPEG 2000 {variant} (from the real slide)"),
                        &path,
                        args.jpeg2000_reads,
                        JPEG2000_TARGETS,
                    )),
                    Err(e) => println!("(skipping JPEG 2000 {variant}: {e:#})"),
                }
            }
        }
    }
    if args.dicom {
        let sources = std::iter::once(("synthetic", synthetic.as_path()))
            .chain(real.as_deref().map(|real| ("real", real)));
        for (kind, source) in sources {
            match ensure_dicom(args, source) {
                Ok(series) => slides.push(Measured {
                    kind: format!("DICOM WSI, JPEG frames (from the {kind} slide)"),
                    ours: series,
                    reference: source.to_path_buf(),
                    reader: Reader::Dicom,
                    reads: args.reads,
                    targets: JPEG_TARGETS,
                }),
                Err(e) => println!("(skipping DICOM from the {kind} slide: {e:#})"),
            }
        }
    }
    let geometries = args
        .geometry
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| parse_geometry(g))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for slide in &slides {
        measure::slide(slide, args, &geometries, config)?;
    }
    Ok(())
}

/// Which of pathfed's readers a measurement opens.
#[cfg(feature = "openslide")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// The TIFF fast path.
    Tiff,
    /// The DICOM WSI reader, on a folder holding the series.
    Dicom,
}

/// One slide to measure: what pathfed reads, and what OpenSlide reads as the reference (the
/// same file, or the SVS a DICOM series was converted from).
#[cfg(feature = "openslide")]
#[derive(Debug)]
struct Measured {
    kind: String,
    ours: PathBuf,
    reference: PathBuf,
    reader: Reader,
    reads: usize,
    targets: Targets,
}

#[cfg(feature = "openslide")]
impl Measured {
    /// A TIFF both sides read.
    fn tiff(kind: &str, path: &Path, reads: usize, targets: Targets) -> Self {
        Self {
            kind: kind.to_string(),
            ours: path.to_path_buf(),
            reference: path.to_path_buf(),
            reader: Reader::Tiff,
            reads,
            targets,
        }
    }
}

/// The Python with the fixture writers: `--python`, else the repository's tools venv, else
/// `python3`.
#[cfg(feature = "openslide")]
fn tools_python(args: &SlideBenchArgs) -> PathBuf {
    let venv = PathBuf::from(".tools/venv/bin/python");
    match &args.python {
        Some(p) => p.clone(),
        None if venv.is_file() => venv,
        None => PathBuf::from("python3"),
    }
}

/// `work_dir/{source's stem}-dicom/`: the DICOM WSI series wsidicomizer writes from `source`,
/// unless it is already there and newer than the source.
#[cfg(feature = "openslide")]
fn ensure_dicom(args: &SlideBenchArgs, source: &Path) -> anyhow::Result<PathBuf> {
    let stem = source
        .file_stem()
        .map_or_else(|| "slide".into(), |s| s.to_string_lossy().into_owned());
    let out = args.work_dir.join(format!("{stem}-dicom"));
    // The marker is written last, so a conversion stopped half-way is redone.
    let done_marker = args.work_dir.join(format!("{stem}-dicom.complete"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(made), Some(s)) = (modified(&done_marker), modified(source))
        && made > s
    {
        println!("using {} (written earlier)", out.display());
        return Ok(out);
    }
    let _ = std::fs::remove_file(&done_marker);
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let python = tools_python(args);
    eprintln!(
        "writing {} with wsidicomizer ({})...",
        out.display(),
        python.display()
    );
    let done = Command::new(&python)
        .arg("-c")
        .arg(
            "import sys\nfrom wsidicomizer import WsiDicomizer\n\
             WsiDicomizer.convert(sys.argv[1], output_path=sys.argv[2], \
             add_missing_levels=True, workers=2)",
        )
        .arg(source)
        .arg(&out)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(
        done.status.success(),
        "wsidicomizer failed: {}",
        String::from_utf8_lossy(&done.stderr).trim()
    );
    std::fs::write(&done_marker, b"")
        .with_context(|| format!("writing {}", done_marker.display()))?;
    Ok(out)
}

/// `work_dir/{real's stem}-j2k-{variant}.svs`, written by the JPEG 2000 fixture script unless it
/// is already there and newer than both the script and the source slide.
#[cfg(feature = "openslide")]
fn ensure_jpeg2000(args: &SlideBenchArgs, real: &Path, variant: &str) -> anyhow::Result<PathBuf> {
    let script = Path::new("slide/tests/fixtures/aperio_jp2k.py");
    anyhow::ensure!(
        script.is_file(),
        "{} not found (run from the repository root)",
        script.display()
    );
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let stem = real
        .file_stem()
        .map_or_else(|| "slide".into(), |s| s.to_string_lossy().into_owned());
    let out = args.work_dir.join(format!("{stem}-j2k-{variant}.svs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(made), Some(s), Some(r)) = (modified(&out), modified(script), modified(real))
        && made > s
        && made > r
    {
        println!("using {} (written earlier)", out.display());
        return Ok(out);
    }
    let python = tools_python(args);
    eprintln!("writing {} with {}...", out.display(), python.display());
    let done = Command::new(&python)
        .arg(script)
        .arg(real)
        .arg(&out)
        .arg(variant)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    anyhow::ensure!(
        done.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&done.stderr).trim()
    );
    Ok(out)
}

fn parse_geometry(text: &str) -> anyhow::Result<(u32, u32)> {
    let (size, overlap) = text
        .split_once(':')
        .with_context(|| format!("geometry {text:?} is not SIZE:OVERLAP"))?;
    Ok((
        size.parse()
            .with_context(|| format!("tile size in {text:?}"))?,
        overlap
            .parse()
            .with_context(|| format!("overlap in {text:?}"))?,
    ))
}

/// Generates the synthetic benchmark slide unless an identical one is already there.
fn ensure_synthetic(args: &SlideBenchArgs) -> anyhow::Result<PathBuf> {
    let spec = SynthSpec {
        width: args.width,
        height: args.height,
        ..SynthSpec::default()
    };
    cached_synthetic(
        &args.work_dir,
        &format!("synthetic-{}x{}", args.width, args.height),
        &spec,
    )
}

#[cfg(feature = "openslide")]
mod measure {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use anyhow::Context;
    use openslide_rs::deepzoom::{DeepZoomGenerator, DeepZoomOptions as OsDzOptions};
    use openslide_rs::{Address, OpenSlide};
    use pathfed_core::Config;
    use pathfed_core::config::TilesConfig;
    use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
    use pathfed_slide::dicom::DicomSlide;
    use pathfed_slide::openslide::OpenSlideReader;
    use pathfed_slide::tiff::TiffSlide;
    use pathfed_slide::{SlideReader, jpeg};

    /// Opens pathfed's reader of the measured slide, with a decoded-tile cache of `cache` bytes.
    fn open_ours(
        slide: &super::Measured,
        limits: &pathfed_core::SlideLimits,
        cache: usize,
    ) -> anyhow::Result<Arc<dyn SlideReader>> {
        Ok(match slide.reader {
            super::Reader::Tiff => Arc::new(TiffSlide::open(&slide.ours, limits, cache)?),
            super::Reader::Dicom => Arc::new(DicomSlide::open(&slide.ours, limits, cache)?),
        })
    }

    /// Runs both measurements on one slide (about `reads` region reads) and prints them.
    pub fn slide(
        slide: &super::Measured,
        args: &super::SlideBenchArgs,
        geometries: &[(u32, u32)],
        config: &Config,
    ) -> anyhow::Result<()> {
        let (kind, reads, targets) = (&slide.kind, slide.reads, slide.targets);
        let reference = slide.reference.as_path();
        let limits = &config.slide;
        let cache = args.tile_cache_mb << 20;
        let ours = open_ours(slide, limits, cache).with_context(|| {
            format!(
                "{} is not readable by pathfed's reader",
                slide.ours.display()
            )
        })?;
        let (w, h) = ours.properties().dimensions();
        println!(
            "\n== {kind} slide: {} ({w} × {h} px, {} levels, pathfed's {} reader)",
            slide.ours.display(),
            ours.properties().levels.len(),
            ours.properties().backend,
        );
        if slide.ours != slide.reference {
            println!("   OpenSlide reads {}", reference.display());
        }
        drop(ours);

        let positions = aligned_positions(w, h, reads);
        // A small slide has few distinct regions: repeat the pass with fresh readers (so no pass
        // profits from an earlier one's cache) until about `reads` regions have been read.
        let rounds = reads.div_ceil(positions.len().max(1));
        let passes = passes(&positions, rounds);
        println!(
            "-- aligned 256 px level-0 region reads ({} distinct regions x {rounds} rounds, fresh readers each round; {} interleaved passes, pathfed then OpenSlide, the ratio is their median)",
            positions.len(),
            passes.len()
        );
        // Untimed pass so both backends find the file's pages in the page cache.
        let open_pathfed = || open_ours(slide, limits, cache);
        let open_theirs =
            || Ok(Arc::new(OpenSlideReader::open(reference, limits)?) as Arc<dyn SlideReader>);
        seconds(1, &positions, 1, &open_pathfed)?;
        seconds(1, &positions, 1, &open_theirs)?;
        for threads in [1usize, 2] {
            let (mut ours, mut theirs, mut ratios) = (0.0, 0.0, Vec::new());
            // Each pass is read by both right after each other, so a change in the machine's
            // speed (another tenant, frequency scaling) during the run moves both alike.
            for &(part, rounds) in &passes {
                let a = seconds(rounds, part, threads, &open_pathfed)?;
                let b = seconds(rounds, part, threads, &open_theirs)?;
                (ours, theirs) = (ours + a, theirs + b);
                ratios.push(b / a);
            }
            let total = passes.iter().map(|(p, r)| p.len() * r).sum::<usize>() as f64;
            println!(
                "   {threads} thread{}: pathfed {:>8.0} reads/s | OpenSlide {:>8.0} reads/s | ratio {:.2}x (passes {:.2}x to {:.2}x; target >= {}x)",
                if threads == 1 { " " } else { "s" },
                total / ours,
                total / theirs,
                crate::throughput::median(&ratios),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(0.0, f64::max),
                targets.reads
            );
        }

        for &(size, overlap) in geometries {
            let fast = open_ours(slide, limits, cache)?;
            let tiles = TilesConfig {
                tile_size: size,
                overlap,
                jpeg_quality: config.tiles.jpeg_quality,
                ..TilesConfig::default()
            };
            let options = DeepZoomOptions::for_slide(fast.properties(), &tiles);
            let dz = DeepZoom::new(fast, options)?;
            let started = Instant::now();
            let mut passthrough = 0u64;
            for level in 0..dz.level_count() {
                let (cols, rows) = dz.level_tiles(level).unwrap_or((0, 0));
                for row in 0..rows {
                    for col in 0..cols {
                        passthrough += u64::from(dz.tile(level, col, row)?.passthrough);
                    }
                }
            }
            let ours = dz.tile_count() as f64 / started.elapsed().as_secs_f64();

            let openslide =
                OpenSlide::new(reference).map_err(|e| anyhow::anyhow!("OpenSlide: {e}"))?;
            let generator = DeepZoomGenerator::new(
                &openslide,
                OsDzOptions::new(options.tile_size).with_overlap(options.overlap),
            )
            .map_err(|e| anyhow::anyhow!("OpenSlide Deep Zoom: {e}"))?;
            anyhow::ensure!(
                generator.level_count() as usize == dz.level_count()
                    && generator.tile_count() == dz.tile_count(),
                "the two Deep Zoom pyramids differ in shape"
            );
            let started = Instant::now();
            for (level, grid) in generator.level_tiles().iter().enumerate() {
                for y in 0..grid.h {
                    for x in 0..grid.w {
                        let image = generator
                            .tile_rgb(level as u32, Address { x, y })
                            .map_err(|e| anyhow::anyhow!("OpenSlide tile: {e}"))?;
                        jpeg::encode_rgb(&image, options.jpeg_quality)?;
                    }
                }
            }
            let theirs = generator.tile_count() as f64 / started.elapsed().as_secs_f64();
            println!(
                "-- Deep Zoom, whole pyramid, tile {} overlap {} ({} tiles, {} passed through), 1 thread:\n   pathfed {ours:>8.0} tiles/s | openslide-rs DeepZoomGenerator {theirs:>8.0} tiles/s | ratio {:.2}x (target >= {}x)",
                options.tile_size,
                options.overlap,
                dz.tile_count(),
                passthrough,
                ours / theirs,
                targets.deep_zoom
            );
        }
        Ok(())
    }

    /// Up to `count` distinct 256-aligned positions spread over the slide in a fixed order.
    fn aligned_positions(w: u64, h: u64, count: usize) -> Vec<(u64, u64)> {
        let (cols, rows) = ((w / 256).max(1), (h / 256).max(1));
        let total = cols * rows;
        // A multiplicative stride coprime with `total` visits cells in a scattered order.
        let stride = (1..)
            .map(|k| total / 2 + k)
            .find(|s| gcd(*s, total) == 1)
            .unwrap_or(1);
        (0..(count as u64).min(total))
            .map(|i| {
                let cell = (i * stride) % total;
                ((cell % cols) * 256, (cell / cols) * 256)
            })
            .collect()
    }

    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    /// How many interleaved passes a measurement is split into.
    const PASSES: usize = 9;

    /// The measurement's passes as (positions, rounds): the rounds spread over up to `PASSES`
    /// passes when there are several, so every round still reads all positions with one fresh
    /// reader (neighbouring reads sharing its cache, as on a small slide); a single round is cut
    /// into slices of positions instead (each still spread over the slide, as
    /// `aligned_positions` orders them).
    fn passes(positions: &[(u64, u64)], rounds: usize) -> Vec<(&[(u64, u64)], usize)> {
        if rounds > 1 {
            let n = rounds.min(PASSES);
            return (0..n)
                .map(|i| (positions, rounds * (i + 1) / n - rounds * i / n))
                .collect();
        }
        positions
            .chunks(positions.len().div_ceil(PASSES).max(1))
            .map(|part| (part, rounds))
            .collect()
    }

    /// Seconds to read `positions` `rounds` times, each round with a reader from `open` (opening
    /// not timed).
    fn seconds(
        rounds: usize,
        positions: &[(u64, u64)],
        threads: usize,
        open: &dyn Fn() -> anyhow::Result<Arc<dyn SlideReader>>,
    ) -> anyhow::Result<f64> {
        let mut seconds = 0.0;
        for _ in 0..rounds {
            seconds += read_every_position(&open()?, positions, threads)?;
        }
        Ok(seconds)
    }

    /// Seconds to read every position once, split over `threads` threads by area (thread `t` takes the
    /// `t`-th horizontal band), as separate viewers looking at different parts of a slide would.
    /// A thread done with its band goes on with the next one's unread positions, so the figure
    /// is both threads' throughput: a band with more tissue, whose tiles take longer to decode,
    /// would otherwise leave the other thread idle at the end.
    fn read_every_position(
        slide: &Arc<dyn SlideReader>,
        positions: &[(u64, u64)],
        threads: usize,
    ) -> anyhow::Result<f64> {
        let height = positions.iter().map(|&(_, y)| y + 256).max().unwrap_or(1);
        let bands: Vec<Vec<(u64, u64)>> = (0..threads as u64)
            .map(|t| {
                positions
                    .iter()
                    .copied()
                    .filter(|&(_, y)| y * threads as u64 / height == t)
                    .collect()
            })
            .collect();
        // The next unread position of each band.
        let cursors: Vec<AtomicUsize> = bands.iter().map(|_| AtomicUsize::new(0)).collect();
        let started = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (slide, bands, cursors) = (Arc::clone(slide), &bands, &cursors);
                    scope.spawn(move || -> anyhow::Result<()> {
                        for b in (t..threads).chain(0..t) {
                            while let Some(&(x, y)) =
                                bands[b].get(cursors[b].fetch_add(1, Ordering::Relaxed))
                            {
                                slide.read_region(0, x, y, 256, 256)?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a reader thread panicked"))?
            })
        })?;
        Ok(started.elapsed().as_secs_f64())
    }
}
