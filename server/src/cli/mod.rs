//! Command-line interface: argument parsing and dispatch to the subcommands.

mod admin;
mod api;
mod backup;
mod bench;
mod case;
mod infer;
mod progress;
mod research;
mod slide;
mod tls;
mod train;
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
    /// Run background jobs (curation, ...) without the web application.
    Worker {
        /// Job kinds to run, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        kinds: Vec<String>,
        /// Jobs run at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Stop when this process is gone (set by `pathfed serve` for its own workers).
        #[arg(long, hide = true)]
        parent: Option<u32>,
    },
    /// De-identify a local slide into a canonical pyramidal BigTIFF, printing what was removed.
    Deid(research::DeidArgs),
    /// Build, list, compare and export dataset versions of the research tier.
    #[command(subcommand)]
    Dataset(research::DatasetCommand),
    /// Record that a patient of your hospital opts out of research use.
    OptOut(research::OptOutArgs),
    /// Train a model on a dataset version (or resume a run) and follow it.
    Train(train::TrainArgs),
    /// Embed a dataset version's patches with a foundation-model encoder from the pretrained
    /// folder, reusing what is stored, and follow it.
    Embed(train::EmbedArgs),
    /// The model registry: list, show, deploy and retire model versions.
    #[command(subcommand)]
    Model(train::ModelCommand),
    /// AI support: run a model on a server's slide, or offline on a local slide file.
    Infer(infer::InferArgs),
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
    /// Print every route the HTTP application registers, one `METHOD PATH` per line (for the
    /// OpenAPI test, which compares them with `/openapi.json`).
    #[command(hide = true)]
    Routes,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Before the configuration: listing routes needs none, so a test can run it anywhere.
    if let Command::Routes = cli.command {
        for (method, path) in crate::http::routes().listed() {
            println!("{method} {path}");
        }
        return Ok(());
    }
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
            let launch = crate::workers::supervise::Launch {
                config: cli.config.clone(),
                concurrency: config.research.serve_workers,
            };
            runtime()?.block_on(crate::http::serve(config, launch))
        }
        Command::Worker {
            kinds,
            concurrency,
            parent,
        } => runtime()?.block_on(worker(config, kinds, concurrency, parent)),
        Command::Deid(args) => research::deid(args, &config),
        Command::Dataset(cmd) => runtime()?.block_on(research::dataset(cmd)),
        Command::OptOut(args) => runtime()?.block_on(research::opt_out(args)),
        Command::Train(args) => runtime()?.block_on(train::train(args)),
        Command::Embed(args) => runtime()?.block_on(train::embed(args)),
        Command::Model(cmd) => runtime()?.block_on(train::model(cmd)),
        Command::Infer(args) => runtime()?.block_on(infer::run(args, &config)),
        Command::Upload(args) => runtime()?.block_on(upload::run(args)),
        Command::Case(cmd) => runtime()?.block_on(case::run(cmd)),
        Command::Admin(cmd) => runtime()?.block_on(admin::run(cmd, &config)),
        Command::Audit(cmd) => runtime()?.block_on(admin::run_audit(cmd, &config)),
        Command::Slide(cmd) => slide::run(cmd, &config),
        Command::Bench(cmd) => bench::run(cmd, &config),
        // Answered above, before the configuration is loaded.
        Command::Routes => Ok(()),
    }
}

/// Runs workers until Ctrl-C, SIGTERM, or the end of `parent`.
async fn worker(
    config: Config,
    kinds: Vec<String>,
    concurrency: usize,
    parent: Option<u32>,
) -> anyhow::Result<()> {
    if let Some(parent) = parent {
        crate::workers::supervise::exit_with_parent(parent);
    }
    let platform = pathfed_core::Platform::open(config)
        .await
        .context("opening the platform")?;
    let research =
        pathfed_datasets::Research::new(platform).context("loading the research pseudonym key")?;
    let mut pools = crate::workers::pools(&research, &kinds, concurrency)?;
    if let Some(parent) = parent {
        let gone: std::sync::Arc<dyn Fn() -> bool + Send + Sync> =
            std::sync::Arc::new(move || std::os::unix::process::parent_id() != parent);
        for pool in &mut pools {
            pool.stop_claiming_when(gone.clone());
        }
    }
    let names: Vec<String> = pools.iter().flat_map(|p| p.kinds()).collect();
    println!(
        "pathfed worker running {} ({concurrency} at once; training one run at a time)",
        names.join(", ")
    );
    let running = futures::future::join_all(pools.into_iter().map(|p| p.run()));
    tokio::select! {
        _ = running => {}
        _ = crate::http::shutdown_signal() => println!("pathfed worker stopped"),
    }
    Ok(())
}
