//! The background workers this binary runs: every job kind of the domain crates, each bound
//! to its handler. `pathfed serve` runs them in-process; `pathfed worker` runs them alone.

use std::sync::Arc;

use anyhow::bail;
use pathfed_core::jobs::Jobs;
use pathfed_core::worker::{Handler, WorkerPool};
use pathfed_datasets::Research;
use pathfed_datasets::curate::{CURATE_JOB, FORGET_JOB};
use pathfed_datasets::extract::EXTRACT_JOB;
use pathfed_inference::Inference;
use pathfed_inference::job::INFER_JOB;

/// Every job kind this binary can run: the research tier's, training on each device this
/// build has, and inference.
pub fn all_kinds() -> Vec<String> {
    let mut kinds: Vec<String> = [CURATE_JOB, FORGET_JOB, EXTRACT_JOB, INFER_JOB]
        .iter()
        .map(|k| k.to_string())
        .collect();
    kinds.extend(
        pathfed_training::device::compiled()
            .into_iter()
            .map(pathfed_training::device::train_job_kind),
    );
    kinds
}

/// Pools for `kinds` (all when empty): research-tier jobs `concurrency` at once; training and
/// inference each in a pool of its own, one at a time, so an hours-long run never holds up
/// curation and AI support never waits behind a training run.
pub fn pools(
    research: &Research,
    kinds: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<WorkerPool>> {
    let wanted: Vec<String> = if kinds.is_empty() {
        all_kinds()
    } else {
        kinds.to_vec()
    };
    let (training, other): (Vec<String>, Vec<String>) =
        wanted.into_iter().partition(|k| k.starts_with("train"));
    let (inference, other): (Vec<String>, Vec<String>) =
        other.into_iter().partition(|k| k == INFER_JOB);
    let mut pools = Vec::new();
    for (kinds, at_once) in [(other, concurrency), (training, 1), (inference, 1)] {
        if !kinds.is_empty() {
            pools.push(pool(research, &kinds, at_once)?);
        }
    }
    Ok(pools)
}

/// A pool running `kinds` (all when empty), `concurrency` jobs at once.
pub fn pool(
    research: &Research,
    kinds: &[String],
    concurrency: usize,
) -> anyhow::Result<WorkerPool> {
    let known = all_kinds();
    for kind in kinds {
        if !known.contains(kind) {
            bail!("unknown job kind {kind:?} (known: {})", known.join(", "));
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
    if wanted(INFER_JOB) {
        let inference = Inference::new(research.platform.clone());
        let handler: Handler = Arc::new(move |job| {
            Box::pin(pathfed_inference::job::run_infer(inference.clone(), job))
        });
        pool.register(INFER_JOB, handler);
    }
    for kind in known.iter().filter(|k| k.starts_with("train")) {
        if wanted(kind) {
            let r = research.clone();
            let handler: Handler =
                Arc::new(move |job| Box::pin(pathfed_training::job::run_train(r.clone(), job)));
            pool.register(kind, handler);
        }
    }
    Ok(pool)
}
