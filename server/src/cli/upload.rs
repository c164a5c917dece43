//! `pathfed upload FILE... --server URL`: resumable uploads with progress bars, optionally
//! straight into a case.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pathfed_ingest::client::{Phase, UploadClient};

use super::api::Api;

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Slide files (or zips of multi-file slides).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The pathfed server, e.g. https://hub.example.org.
    #[arg(long, env = "PATHFED_SERVER")]
    server: String,
    /// API token (from `pathfed admin token create`).
    #[arg(long, env = "PATHFED_TOKEN", hide_env_values = true)]
    token: String,
    /// Attach the uploaded slides to this (draft) case.
    #[arg(long)]
    case: Option<String>,
    /// Where unfinished uploads are remembered, so a rerun resumes them.
    #[arg(long, env = "PATHFED_UPLOAD_STATE")]
    state_file: Option<PathBuf>,
    /// Bytes per request.
    #[arg(long, default_value_t = 32 << 20)]
    chunk_bytes: u64,
}

fn default_state_file() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pathfed").join("uploads.json")
}

/// Uploads every file in turn with a progress bar each; returns the slide ids of those that
/// succeeded and fails (after trying all) if any failed.
pub async fn upload_files(
    server: &str,
    token: &str,
    state_file: Option<&Path>,
    chunk_bytes: u64,
    files: &[PathBuf],
) -> anyhow::Result<Vec<String>> {
    let state = state_file
        .map(Path::to_path_buf)
        .unwrap_or_else(default_state_file);
    let client = UploadClient::new(server, token, &state)
        .context("preparing the HTTP client")?
        .with_chunk_bytes(chunk_bytes);
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:30!} {msg:10} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
    )
    .context("progress style")?
    .progress_chars("=> ");
    let mut failed = 0;
    let mut slides = Vec::new();
    for file in files {
        let bar = bars.add(ProgressBar::new(0).with_style(style.clone()));
        bar.set_prefix(file.display().to_string());
        let report = |phase: Phase, done: u64, total: u64| {
            bar.set_message(match phase {
                Phase::Hashing => "hashing",
                Phase::Uploading => "uploading",
                Phase::Processing => "checking",
            });
            bar.set_length(total);
            bar.set_position(done);
        };
        match client.upload(file, &report).await {
            Ok(done) => {
                bar.finish_with_message("done");
                let resumed = if done.resumed_from > 0 {
                    format!(" (resumed at byte {})", done.resumed_from)
                } else {
                    String::new()
                };
                println!("{}\tslide {}{resumed}", file.display(), done.slide_id);
                slides.push(done.slide_id);
            }
            Err(e) => {
                bar.abandon_with_message("failed");
                eprintln!("{}: {e}", file.display());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} uploads failed", files.len());
    }
    Ok(slides)
}

/// Uploads the files, then attaches them to the case if one is named.
pub async fn run(args: UploadArgs) -> anyhow::Result<()> {
    // Check the case first, so a typo does not cost a long upload.
    let api = Api::new(&args.server, &args.token)?;
    if let Some(case) = &args.case {
        api.get(&format!("/api/v1/cases/{case}"))
            .await
            .with_context(|| format!("case {case}"))?;
    }
    let slides = upload_files(
        &args.server,
        &args.token,
        args.state_file.as_deref(),
        args.chunk_bytes,
        &args.files,
    )
    .await?;
    if let Some(case) = &args.case {
        for slide in &slides {
            api.attach(case, slide).await?;
        }
        println!("attached {} slide(s) to case {case}", slides.len());
    }
    Ok(())
}
