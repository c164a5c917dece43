//! `pathfed`: the platform's server and command-line tool.

mod cli;
mod http;
mod workers;

use std::process::ExitCode;

use clap::Parser;

// Tile reads allocate and free buffers of a few hundred KiB at a high rate from many threads;
// glibc returns such blocks to the kernel, so every read would page-fault under the process's
// memory-map lock. mimalloc keeps them in per-thread heaps.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PATHFED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
