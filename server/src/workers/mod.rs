//! The background workers this binary runs: every declared job kind bound to its handler, in
//! the pool its declaration names. `pathfed worker` runs pools; `pathfed serve` starts and
//! supervises worker processes of its own ([`supervise`]), so heavy work never shares the web
//! server's fate.

pub mod supervise;

use anyhow::bail;
use pathfed_core::jobs::kinds::{
    Curate, Embed, Extract, ForgetPatient, Infer, JobKind, NotifyEmail, PoolKind, Train,
};
use pathfed_core::jobs::{Jobs, QueuePolicy};
use pathfed_core::worker::WorkerPool;
use pathfed_datasets::Research;
use pathfed_inference::Inference;

/// Every stored job kind this binary can run, with its pool: the research tier's, training and
/// embedding on each device this build has, and inference.
fn runnable() -> Vec<(String, PoolKind)> {
    let mut kinds: Vec<(String, PoolKind)> = [
        (Curate::NAME, Curate::POOL),
        (ForgetPatient::NAME, ForgetPatient::POOL),
        (Extract::NAME, Extract::POOL),
        (Infer::NAME, Infer::POOL),
        (NotifyEmail::NAME, NotifyEmail::POOL),
    ]
    .into_iter()
    .map(|(name, pool)| (name.to_string(), pool))
    .collect();
    for device in pathfed_models::device::compiled() {
        kinds.push((Train::kind_for_device(device), Train::POOL));
        kinds.push((Embed::kind_for_device(device), Embed::POOL));
    }
    kinds
}

/// The pools, in the order they are started.
pub const POOLS: [PoolKind; 3] = [PoolKind::Research, PoolKind::Training, PoolKind::Inference];

/// Jobs a pool runs at once: research-tier jobs `concurrency` at once; training and inference
/// each one at a time, so an hours-long run never holds up curation and AI support never waits
/// behind a training run.
fn at_once(pool: PoolKind, concurrency: usize) -> usize {
    match pool {
        PoolKind::Research => concurrency,
        PoolKind::Training | PoolKind::Inference => 1,
    }
}

/// The stored kinds of one pool that this build can run.
pub fn kinds_of(pool: PoolKind) -> Vec<String> {
    runnable()
        .into_iter()
        .filter(|(_, p)| *p == pool)
        .map(|(name, _)| name)
        .collect()
}

/// Pools for `kinds` (all when empty), one per [`PoolKind`], each running [`at_once`] jobs.
pub fn pools(
    research: &Research,
    kinds: &[String],
    concurrency: usize,
) -> anyhow::Result<Vec<WorkerPool>> {
    let known = runnable();
    for kind in kinds {
        if !known.iter().any(|(name, _)| name == kind) {
            let names: Vec<&str> = known.iter().map(|(name, _)| name.as_str()).collect();
            bail!("unknown job kind {kind:?} (known: {})", names.join(", "));
        }
    }
    let wanted: Vec<(String, PoolKind)> = known
        .into_iter()
        .filter(|(name, _)| kinds.is_empty() || kinds.contains(name))
        .collect();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let name = format!("{host}:{}", std::process::id());
    let policy = QueuePolicy {
        lease_s: i64::try_from(research.platform.config.research.job_lease_s)
            .unwrap_or(i64::MAX)
            .max(1),
        ..QueuePolicy::default()
    };
    let mut pools = Vec::new();
    for pool_kind in POOLS {
        let stored: Vec<&String> = wanted
            .iter()
            .filter(|(_, p)| *p == pool_kind)
            .map(|(name, _)| name)
            .collect();
        if stored.is_empty() {
            continue;
        }
        let jobs = Jobs::with_policy(research.platform.db.clone(), policy);
        let mut pool = WorkerPool::new(jobs, name.clone(), at_once(pool_kind, concurrency));
        for kind in stored {
            register(&mut pool, research, kind);
        }
        pools.push(pool);
    }
    Ok(pools)
}

/// Binds the stored kind `kind` to its handler.
fn register(pool: &mut WorkerPool, research: &Research, kind: &str) {
    let r = research.clone();
    match kind {
        k if k == Curate::NAME => pool.handle::<Curate, _, _>(move |payload, job| {
            pathfed_datasets::curate::run_curate(r.clone(), payload, job)
        }),
        k if k == ForgetPatient::NAME => pool.handle::<ForgetPatient, _, _>(move |payload, job| {
            pathfed_datasets::curate::run_forget(r.clone(), payload, job)
        }),
        k if k == Extract::NAME => pool.handle::<Extract, _, _>(move |payload, job| {
            pathfed_datasets::extract::run_extract(r.clone(), payload, job)
        }),
        k if k == NotifyEmail::NAME => {
            let platform = research.platform.clone();
            pool.handle::<NotifyEmail, _, _>(move |payload, job| {
                pathfed_consult::notifications::run_notify_email(platform.clone(), payload, job)
            })
        }
        k if k == Infer::NAME => {
            let inference = Inference::new(research.platform.clone());
            pool.handle::<Infer, _, _>(move |payload, job| {
                pathfed_inference::job::run_infer(inference.clone(), payload, job)
            })
        }
        k if k.starts_with(Embed::NAME) => pool
            .handle_stored::<Embed, _, _>(k.to_string(), move |payload, job| {
                pathfed_training::embeddings::run_embed(r.clone(), payload, job)
            }),
        // What is left is training on one of this build's devices (`runnable` lists no other).
        stored => pool.handle_stored::<Train, _, _>(stored.to_string(), move |payload, job| {
            pathfed_training::job::run_train(r.clone(), payload, job)
        }),
    };
}
