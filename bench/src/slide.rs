//! `pathfed bench slide`: the TIFF fast path against OpenSlide, measured in the same run on a
//! generated ~40,000 × 30,000 px slide, on a real slide, and on Aperio JPEG 2000 versions of the
//! real slide (written by the JPEG 2000 test's fixture script, `slide/tests/fixtures/
//! aperio_jp2k.py`, with the tools venv's tifffile and imagecodecs).
//!
//! 1. Aligned 256 px level-0 region reads per second, with 1 and 2 threads.
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
    /// The Python that writes the JPEG 2000 slides (needs tifffile and imagecodecs; default: the
    /// repository's .tools/venv, else python3).
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
    let mut slides = vec![("synthetic".to_string(), synthetic, args.reads, JPEG_TARGETS)];
    let default_real = PathBuf::from("slide/tests/fixtures/CMU-1-Small-Region.svs");
    let real = match &args.real {
        Some(real) => Some(real.clone()),
        None if default_real.exists() => Some(default_real),
        None => None,
    };
    match &real {
        Some(real) => slides.push(("real".into(), real.clone(), args.reads, JPEG_TARGETS)),
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
                    Ok(path) => slides.push((
                        format!("JPEG 2000 {variant} (from the real slide)"),
                        path,
                        args.jpeg2000_reads,
                        JPEG2000_TARGETS,
                    )),
                    Err(e) => println!("(skipping JPEG 2000 {variant}: {e:#})"),
                }
            }
        }
    }
    let geometries = args
        .geometry
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| parse_geometry(g))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (kind, path, reads, targets) in &slides {
        measure::slide(kind, path, args, *reads, *targets, &geometries, config)?;
    }
    Ok(())
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
    let venv = PathBuf::from(".tools/venv/bin/python");
    let python = match &args.python {
        Some(p) => p.clone(),
        None if venv.is_file() => venv,
        None => PathBuf::from("python3"),
    };
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
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Instant;

    use anyhow::Context;
    use openslide_rs::deepzoom::{DeepZoomGenerator, DeepZoomOptions as OsDzOptions};
    use openslide_rs::{Address, OpenSlide};
    use pathfed_core::Config;
    use pathfed_core::config::TilesConfig;
    use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
    use pathfed_slide::openslide::OpenSlideReader;
    use pathfed_slide::tiff::TiffSlide;
    use pathfed_slide::{SlideReader, jpeg};

    /// Runs both measurements on one slide (about `reads` region reads) and prints them.
    pub fn slide(
        kind: &str,
        path: &Path,
        args: &super::SlideBenchArgs,
        reads: usize,
        targets: super::Targets,
        geometries: &[(u32, u32)],
        config: &Config,
    ) -> anyhow::Result<()> {
        let limits = &config.slide;
        let cache = args.tile_cache_mb << 20;
        let fast = TiffSlide::open(path, limits, cache)
            .with_context(|| format!("{} is not readable by the fast path", path.display()))?;
        let (w, h) = fast.properties().dimensions();
        println!(
            "\n== {kind} slide: {} ({w} × {h} px, {} levels)",
            path.display(),
            fast.properties().levels.len()
        );
        drop(fast);

        let positions = aligned_positions(w, h, reads);
        // A small slide has few distinct regions: repeat the pass with fresh readers (so no pass
        // profits from an earlier one's cache) until about `reads` regions have been read.
        let rounds = reads.div_ceil(positions.len().max(1));
        println!(
            "-- aligned 256 px level-0 region reads ({} distinct regions x {rounds} rounds, fresh readers each round)",
            positions.len()
        );
        // Untimed pass so both backends find the file's pages in the page cache.
        rate(1, &positions, 1, || {
            Ok(Arc::new(TiffSlide::open(path, limits, cache)?) as Arc<dyn SlideReader>)
        })?;
        for threads in [1usize, 2] {
            let fast_rate = rate(rounds, &positions, threads, || {
                Ok(Arc::new(TiffSlide::open(path, limits, cache)?) as Arc<dyn SlideReader>)
            })?;
            let os_rate = rate(rounds, &positions, threads, || {
                Ok(Arc::new(OpenSlideReader::open(path, limits)?) as Arc<dyn SlideReader>)
            })?;
            println!(
                "   {threads} thread{}: pathfed {fast_rate:>8.0} reads/s | OpenSlide {os_rate:>8.0} reads/s | ratio {:.2}x (target >= {}x)",
                if threads == 1 { " " } else { "s" },
                fast_rate / os_rate,
                targets.reads
            );
        }

        for &(size, overlap) in geometries {
            let fast: Arc<dyn SlideReader> = Arc::new(TiffSlide::open(path, limits, cache)?);
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

            let slide = OpenSlide::new(path).map_err(|e| anyhow::anyhow!("OpenSlide: {e}"))?;
            let generator = DeepZoomGenerator::new(
                &slide,
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

    /// Reads per second over `rounds` passes, each with a reader from `open` (not timed).
    fn rate(
        rounds: usize,
        positions: &[(u64, u64)],
        threads: usize,
        open: impl Fn() -> anyhow::Result<Arc<dyn SlideReader>>,
    ) -> anyhow::Result<f64> {
        let mut seconds = 0.0;
        for _ in 0..rounds {
            let slide = open()?;
            seconds += positions.len() as f64 / reads_per_second(&slide, positions, threads)?;
        }
        Ok((rounds * positions.len()) as f64 / seconds)
    }

    /// Reads every position once, split over `threads` threads by area (thread `t` takes the
    /// `t`-th horizontal band), as separate viewers looking at different parts of a slide would.
    fn reads_per_second(
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
        let started = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = bands
                .iter()
                .map(|band| {
                    let slide = Arc::clone(slide);
                    scope.spawn(move || -> anyhow::Result<()> {
                        for &(x, y) in band {
                            slide.read_region(0, x, y, 256, 256)?;
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
        Ok(positions.len() as f64 / started.elapsed().as_secs_f64())
    }
}
