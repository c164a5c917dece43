//! `pathfed bench extract`: tissue detection + patch grid + patch extraction of a generated
//! 40,000 × 30,000 slide, through the TIFF fast path and through OpenSlide, in the same run.
//!
//! Two slides: a generic TIFF scanned at exactly 0.5 µm/px (patches are stored tiles, which
//! the fast path hands over as they are) and an SVS at 0.499 µm/px (within the grid's 2%
//! tolerance of 0.5, so its patches are its own 256 px tiles as well). Peak RSS is reset before each run and read after it.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use pathfed_core::Config;
use pathfed_synth::{SynthCompression, SynthFormat, SynthSpec};

/// Options of `pathfed bench extract`.
#[derive(Debug, Args)]
pub struct ExtractBenchArgs {
    /// Width of the generated slides.
    #[arg(long, default_value_t = 40_000)]
    width: u64,
    /// Height of the generated slides.
    #[arg(long, default_value_t = 30_000)]
    height: u64,
    /// Where the generated slides are kept between runs.
    #[arg(long, default_value = "data/bench")]
    work_dir: std::path::PathBuf,
    /// Decoded-tile cache of pathfed's reader, in MiB.
    #[arg(long, default_value_t = 64)]
    tile_cache_mb: usize,
}

/// Without OpenSlide there is no reference to measure against.
#[cfg(not(feature = "openslide"))]
pub fn run(_args: &ExtractBenchArgs, _config: &Config) -> anyhow::Result<()> {
    anyhow::bail!("this build has no OpenSlide backend to compare against")
}

/// Measures the patch pipeline on the fast path and on OpenSlide and prints both.
#[cfg(feature = "openslide")]
pub fn run(args: &ExtractBenchArgs, config: &Config) -> anyhow::Result<()> {
    use std::sync::Arc;

    use pathfed_slide::SlideReader;
    use pathfed_slide::openslide::OpenSlideReader;
    use pathfed_slide::tiff::TiffSlide;

    let slides = [
        (
            "generic TIFF at 0.5 µm/px (patches are stored tiles)",
            "extract-generic-0.5",
            SynthSpec {
                width: args.width,
                height: args.height,
                format: SynthFormat::GenericTiff,
                compression: SynthCompression::Jpeg,
                big_tiff: true,
                mpp: 0.5,
                ..SynthSpec::default()
            },
        ),
        (
            "SVS at 0.499 µm/px (its own 256 px patches, within 2% of 0.5)",
            "extract-svs-0.499",
            SynthSpec {
                width: args.width,
                height: args.height,
                ..SynthSpec::default()
            },
        ),
    ];
    let limits = &config.slide;
    let cache = args.tile_cache_mb << 20;
    for (what, stem, spec) in &slides {
        let path = super::cached_synthetic(&args.work_dir, stem, spec)?;
        println!(
            "\n== {what}: {} ({} × {} px)",
            path.display(),
            spec.width,
            spec.height
        );
        // Untimed pass so both paths find the file in the page cache.
        warm_page_cache(&path)?;
        let fast = measure(&path, || {
            Ok(Arc::new(TiffSlide::open(&path, limits, cache)?) as Arc<dyn SlideReader>)
        })?;
        report("pathfed  ", &fast);
        let os = measure(&path, || {
            Ok(Arc::new(OpenSlideReader::open(&path, limits)?) as Arc<dyn SlideReader>)
        })?;
        report("OpenSlide", &os);
        // JPEG decoders differ by a grey level here and there, which can flip a position on
        // the tissue threshold; more than that would mean the paths measure different work.
        anyhow::ensure!(
            fast.patches.abs_diff(os.patches) * 100 <= fast.patches.max(1),
            "the two paths cut different grids ({} vs {} patches)",
            fast.patches,
            os.patches
        );
        println!(
            "   ratio {:.2}x patches/s (target >= 3x); {} patches, tissue {:.1} %, {} copied as stored",
            fast.rate() / os.rate(),
            fast.patches,
            fast.tissue * 100.0,
            fast.copied
        );
    }
    Ok(())
}

/// One run of the whole pipeline.
struct Run {
    seconds: f64,
    patches: u64,
    bytes: u64,
    tissue: f64,
    copied: u64,
    peak_rss: Option<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.patches as f64 / self.seconds
    }
}

fn report(label: &str, run: &Run) {
    println!(
        "   {label}: {:>7.1} s/slide | {:>7.0} patches/s | {:>6.0} MB of patches | peak RSS {}",
        run.seconds,
        run.rate(),
        run.bytes as f64 / 1e6,
        run.peak_rss
            .map_or("n/a".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0))
    );
}

#[cfg(feature = "openslide")]
fn measure(
    path: &Path,
    open: impl Fn() -> anyhow::Result<std::sync::Arc<dyn pathfed_slide::SlideReader>>,
) -> anyhow::Result<Run> {
    use pathfed_datasets::patches::{ExtractParams, SlideLabels, extract_slide};

    reset_peak_rss();
    let started = Instant::now();
    let reader = open().with_context(|| format!("opening {}", path.display()))?;
    let mut sink = CountingSink(0);
    let labels = SlideLabels {
        slide: "bench",
        regions: &[],
    };
    let index = extract_slide(
        reader.as_ref(),
        "rs-bench",
        &labels,
        &ExtractParams::default(),
        &mut sink,
        &|_, _| true,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Run {
        seconds,
        patches: index.qc.patches,
        bytes: sink.0,
        tissue: index.qc.tissue_fraction,
        copied: index.qc.copied_tiles,
        peak_rss: peak_rss(),
    })
}

/// Counts what would be written.
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn warm_page_cache(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    while file.read(&mut buf)? > 0 {}
    Ok(())
}

/// Linux: writing 5 to clear_refs resets the peak resident set size.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Linux: the peak resident set size (VmHWM) in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
