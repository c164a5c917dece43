//! Worker processes of `pathfed serve`: one `pathfed worker` child per pool (research tier,
//! training, inference), restarted when it exits. Curation, extraction, training and inference
//! run there, so a panic, an out-of-memory kill or a codec crash ends one worker process, its
//! job is retried by the queue once its lease runs out, and the web server goes on serving.
//!
//! Each child is told the server's process id and leaves when the server is gone, so killing
//! the server never leaves workers behind. Children run at a lower CPU priority than the server
//! (`core::worker::worker_command`), so tiles keep coming while they fill every core.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pathfed_core::jobs::kinds::PoolKind;

/// Shortest and longest pause before a worker that exited is started again.
const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A worker that ran this long before exiting is restarted at once (the pause starts over).
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// How `pathfed serve` was started, so its workers read the same configuration.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The configuration file given on the command line, if any (the environment is inherited).
    pub config: Option<PathBuf>,
    /// Research-tier jobs at once.
    pub concurrency: usize,
}

/// Starts one supervised worker process per pool this build runs; each runs until the server
/// ends.
pub fn start(launch: &Launch) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    for pool in super::POOLS {
        let kinds = super::kinds_of(pool);
        if kinds.is_empty() {
            continue;
        }
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--kinds".into(),
            kinds.join(","),
            // The child runs its pool at the pool's own concurrency (`workers::pools`).
            "--concurrency".into(),
            launch.concurrency.to_string(),
            "--parent".into(),
            std::process::id().to_string(),
        ];
        if let Some(config) = &launch.config {
            args.push("--config".into());
            args.push(config.display().to_string());
        }
        tracing::info!(?pool, kinds = %kinds.join(","), "starting worker process");
        tokio::spawn(supervise(exe.clone(), args, pool));
    }
    Ok(())
}

/// Runs the worker and starts it again whenever it exits, pausing longer after each quick
/// exit so a worker that cannot start does not spin.
async fn supervise(exe: PathBuf, args: Vec<String>, pool: PoolKind) {
    let mut pause = RESTART_MIN;
    loop {
        let started = Instant::now();
        let mut command =
            tokio::process::Command::from(pathfed_core::worker::worker_command(&exe, &args));
        command.kill_on_drop(true);
        match command.spawn() {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                tracing::info!(?pool, pid, "worker process running");
                match child.wait().await {
                    Ok(status) => {
                        tracing::warn!(?pool, pid, %status, "worker process exited; restarting")
                    }
                    Err(e) => {
                        tracing::error!(?pool, pid, error = %e, "waiting for a worker failed")
                    }
                }
            }
            Err(e) => tracing::error!(?pool, error = %e, "could not start a worker process"),
        }
        if started.elapsed() >= HEALTHY_RUN {
            pause = RESTART_MIN;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RESTART_MAX);
    }
}

/// Ends this process when the process `parent` is gone (a worker of `pathfed serve` whose
/// server was killed): checked ten times a second, and its pools claim nothing once it is.
pub fn exit_with_parent(parent: u32) {
    tokio::spawn(async move {
        loop {
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!(parent, "the server is gone; worker stopping");
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
