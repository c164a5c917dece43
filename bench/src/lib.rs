//! The `pathfed bench` measurements. Each figure stands next to a reference measured in the
//! same run, so it says something whatever the machine: slide reading and Deep Zoom tiling
//! against OpenSlide ([`slide`]), upload and tile serving over HTTP against `sha256sum` and
//! OpenSlide ([`serve`]), patch extraction against OpenSlide ([`extract`]), training throughput
//! against ndarray and PyTorch ([`train`], timed by [`throughput`]), slide inference against
//! the model's pure compute ([`infer`]) and embedding extraction against the encoder's compute
//! ([`embed`]). Targets live in the README, never in tests.
//!
//! The `pathfed` binary keeps the `pathfed bench …` command: it parses each module's arguments
//! and calls its `run`, handing `bench serve` the HTTP application, which lives in the binary.
//! Features: `openslide` (the OpenSlide references), `cuda` and `wgpu` (GPU devices) and
//! `ndarray-reference` (Burn's ndarray backend, the CPU reference of `bench train`; the slowest
//! crate to compile, so only `make bench` builds it).

pub mod embed;
pub mod extract;
pub mod infer;
pub mod progress;
pub mod serve;
pub mod slide;
pub mod throughput;
pub mod torch;
pub mod train;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use pathfed_synth::{SynthSpec, generate};

/// `work_dir/{stem}.svs` as `spec` describes it, generated unless an identical one is already
/// there (its spec is kept beside it as `{stem}.spec.json`).
fn cached_synthetic(work_dir: &Path, stem: &str, spec: &SynthSpec) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let path = work_dir.join(format!("{stem}.svs"));
    let spec_path = path.with_extension("spec.json");
    let spec_json = serde_json::to_string_pretty(spec)?;
    if path.exists()
        && std::fs::read_to_string(&spec_path).ok().as_deref() == Some(spec_json.as_str())
    {
        println!(
            "using {} (generated earlier from the same spec)",
            path.display()
        );
        return Ok(path);
    }
    // The bar is hidden when stderr is not a terminal; this line says why nothing moves.
    eprintln!(
        "generating {} ({} x {} px)...",
        path.display(),
        spec.width,
        spec.height
    );
    let bar = progress::bar("generating benchmark slide", "tiles");
    let started = Instant::now();
    let report = generate(spec, &path, &progress::reporter(&bar))?;
    bar.finish_and_clear();
    std::fs::write(&spec_path, spec_json)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    println!(
        "generated {} ({} tiles, {:.0} MB) in {:.1} s",
        path.display(),
        report.tiles,
        report.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(path)
}
