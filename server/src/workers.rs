//! The background workers this binary runs: every job kind of the domain crates, each bound
//! to its handler. `pathfed serve` runs them in-process; `pathfed worker` runs them alone.

use std::sync::Arc;

use anyhow::bail;
use pathfed_core::jobs::Jobs;
use pathfed_core::worker::{Handler, WorkerPool};
use pathfed_datasets::Research;
use pathfed_datasets::curate::{CURATE_JOB, FORGET_JOB};
use pathfed_datasets::extract::EXTRACT_JOB;

/// Every job kind this binary can run.
pub const ALL_KINDS: &[&str] = &[CURATE_JOB, FORGET_JOB, EXTRACT_JOB];

/// A pool running `kinds` (all when empty), `concurrency` jobs at once.
pub fn pool(
    research: &Research,
    kinds: &[String],
    concurrency: usize,
) -> anyhow::Result<WorkerPool> {
    for kind in kinds {
        if !ALL_KINDS.contains(&kind.as_str()) {
            bail!(
                "unknown job kind {kind:?} (known: {})",
                ALL_KINDS.join(", ")
            );
        }
    }
    let wanted = |kind: &str| kinds.is_empty() || kinds.iter().any(|k| k == kind);
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let name = format!("{host}:{}", std::process::id());
    let mut pool = WorkerPool::new(Jobs::new(research.platform.db.clone()), name, concurrency);
    if wanted(CURATE_JOB) {
        let r = research.clone();
        let handler: Handler =
            Arc::new(move |job| Box::pin(pathfed_datasets::curate::run_curate(r.clone(), job)));
        pool.register(CURATE_JOB, handler);
    }
    if wanted(FORGET_JOB) {
        let r = research.clone();
        let handler: Handler =
            Arc::new(move |job| Box::pin(pathfed_datasets::curate::run_forget(r.clone(), job)));
        pool.register(FORGET_JOB, handler);
    }
    if wanted(EXTRACT_JOB) {
        let r = research.clone();
        let handler: Handler =
            Arc::new(move |job| Box::pin(pathfed_datasets::extract::run_extract(r.clone(), job)));
        pool.register(EXTRACT_JOB, handler);
    }
    Ok(pool)
}
