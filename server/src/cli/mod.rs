//! Command-line interface: argument parsing and dispatch to the subcommands.

mod admin;
mod bench;
mod case;
mod progress;
mod slide;
mod upload;

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
    /// Run the web application and API.
    Serve {
        /// Address to listen on (overrides the configuration).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Upload slides to a server (resumable).
    Upload(upload::UploadArgs),
    /// Create, submit and follow consultation cases; fetch and verify reports.
    #[command(subcommand)]
    Case(case::CaseCommand),
    /// Manage hospitals, users and API tokens.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// Check or read the audit log.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Inspect, tile and generate whole-slide images.
    #[command(subcommand)]
    Slide(slide::SlideCommand),
    /// Measure performance against reference implementations in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref()).context("loading configuration")?;
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    match cli.command {
        Command::Serve { listen } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            runtime()?.block_on(crate::http::serve(config))
        }
        Command::Upload(args) => runtime()?.block_on(upload::run(args)),
        Command::Case(cmd) => runtime()?.block_on(case::run(cmd)),
        Command::Admin(cmd) => runtime()?.block_on(admin::run(cmd, &config)),
        Command::Audit(cmd) => runtime()?.block_on(admin::run_audit(cmd, &config)),
        Command::Slide(cmd) => slide::run(cmd, &config),
        Command::Bench(cmd) => bench::run(cmd, &config),
    }
}
