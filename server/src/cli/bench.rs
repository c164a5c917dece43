//! `pathfed bench …`: the measurements are `pathfed-bench`; this command parses their options
//! and hands `bench serve` the application it measures, which only this binary can build.

use clap::Subcommand;
use pathfed_bench::serve::Application;
use pathfed_bench::{embed, extract, infer, serve, slide, train};
use pathfed_core::{Config, Platform};

use crate::http::{AppState, app};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Slide reading and Deep Zoom tiling: fast path vs OpenSlide.
    Slide(slide::SlideBenchArgs),
    /// The HTTP service in-process: upload vs sha256sum, tile serving vs OpenSlide.
    Serve(serve::ServeBenchArgs),
    /// Tissue detection + patch grid + patch extraction: fast path vs OpenSlide.
    Extract(extract::ExtractBenchArgs),
    /// Training steps of the patch classifier: Burn vs ndarray (CPU) and PyTorch.
    Train(train::TrainBenchArgs),
    /// Slide inference end to end vs the model's pure compute on the same patches.
    Infer(infer::InferBenchArgs),
    /// Embedding extraction end to end vs the encoder's pure compute on the same patches.
    Embed(embed::EmbedBenchArgs),
}

pub fn run(cmd: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Slide(args) => slide::run(&args, config),
        BenchCommand::Serve(args) => serve::run(&args, config, &application),
        BenchCommand::Extract(args) => extract::run(&args, config),
        BenchCommand::Train(args) => train::run(&args),
        BenchCommand::Infer(args) => infer::run(&args, config),
        BenchCommand::Embed(args) => embed::run(&args),
    }
}

/// The application `pathfed serve` runs, on the benchmark's own platform.
fn application(platform: Platform) -> anyhow::Result<Application> {
    let state = AppState::new(platform)?;
    let slides = state.slides.clone();
    Ok(Application {
        router: app(state),
        clear_tiles: Box::new(move || slides.clear_tiles()),
    })
}
