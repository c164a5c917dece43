//! Command-line interface: argument parsing and dispatch to the subcommands.

mod bench;
mod progress;
mod slide;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pathfed_core::Config;

/// pathfed: telepathology consultation and pathology AI platform.
#[derive(Debug, Parser)]
#[command(name = "pathfed", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (default: ./pathfed.toml if present; PATHFED_* variables override it).
    #[arg(long, global = true, env = "PATHFED_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, tile and generate whole-slide images.
    #[command(subcommand)]
    Slide(slide::SlideCommand),
    /// Measure performance against reference implementations in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    match cli.command {
        Command::Slide(cmd) => slide::run(cmd, &config),
        Command::Bench(cmd) => bench::run(cmd, &config),
    }
}
