//! Runs queued jobs: a pool that claims jobs of the kinds it has handlers for, keeps their
//! leases alive, and records how each ended.
//!
//! A handler gets a [`RunningJob`]; it reports progress through it (cheap: kept in memory and
//! sent with the next heartbeat) and learns there that someone asked to cancel. A heartbeat
//! task renews the lease every few seconds whatever the handler is doing, so long blocking
//! steps (a slide re-encode) never lose their job to another worker.
//!
//! Handlers are registered per declared kind ([`WorkerPool::handle`]) and get the kind's typed
//! payload; whether a failure is worth another attempt follows one rule for every kind
//! ([`Transient`], [`JobFailure::from_error`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::jobs::kinds::JobKind;
use crate::jobs::{Heartbeat, Job, Jobs};

/// How much lower than the web server's CPU priority a worker process runs (`nice`): training
/// and slide re-encodes fill every core, and the viewer's tiles must not wait behind them.
pub const WORKER_NICENESS: u8 = 10;

/// The command that runs `exe` with `args` (a `pathfed worker …`) as a worker process, at
/// [`WORKER_NICENESS`] through coreutils' `nice`.
pub fn worker_command(exe: &std::path::Path, args: &[String]) -> std::process::Command {
    let mut command = std::process::Command::new("nice");
    command
        .arg("-n")
        .arg(WORKER_NICENESS.to_string())
        .arg(exe)
        .args(args);
    command
}

/// Whether an error is worth another attempt of the job that met it. Every crate's error says
/// so in one place, by the one rule: the platform failing underneath (database, object store,
/// file system) is transient; the work itself being wrong (bad input, missing data, a refused
/// request) is not, since another attempt would end the same way.
pub trait Transient {
    /// Another attempt may succeed.
    fn is_transient(&self) -> bool;
}

impl Transient for crate::CoreError {
    fn is_transient(&self) -> bool {
        crate::CoreError::is_transient(self)
    }
}

/// Why a handler stopped without a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// What went wrong, for the job's `last_error`.
    pub message: String,
    /// Worth another attempt (I/O, a busy database) or not (bad input, missing data).
    pub retryable: bool,
    /// The handler stopped because cancellation was requested.
    pub cancelled: bool,
}

impl JobFailure {
    /// A failure another attempt will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            cancelled: false,
        }
    }

    /// A failure worth retrying after the backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            cancelled: false,
        }
    }

    /// The failure for `error`: retried when it is [`Transient`], final otherwise.
    pub fn from_error<E: Transient + std::fmt::Display>(error: &E) -> Self {
        if error.is_transient() {
            Self::retryable(error.to_string())
        } else {
            Self::permanent(error.to_string())
        }
    }

    fn cancelled() -> Self {
        Self {
            message: "cancelled on request".into(),
            retryable: false,
            cancelled: true,
        }
    }
}

/// A claimed job as its handler sees it.
#[derive(Clone)]
pub struct RunningJob {
    /// The job, as claimed.
    pub job: Job,
    progress: Arc<Mutex<(f64, String)>>,
    cancel: Arc<AtomicBool>,
}

impl RunningJob {
    /// Records progress (0.0–1.0) and a note; fails with a cancellation once one was asked for,
    /// so handlers stop at their next step with `?`.
    pub fn progress(&self, fraction: f64, note: impl Into<String>) -> Result<(), JobFailure> {
        if let Ok(mut p) = self.progress.lock() {
            *p = (fraction, note.into());
        }
        self.check_cancel()
    }

    /// Fails with a cancellation if one was asked for.
    pub fn check_cancel(&self) -> Result<(), JobFailure> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(JobFailure::cancelled())
        } else {
            Ok(())
        }
    }

    /// A handle for blocking code (a rayon or `spawn_blocking` closure) to poll cancellation.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }
}

/// What a handler returns.
type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, JobFailure>> + Send>>;

/// A job handler, its payload not yet decoded.
type Handler = Arc<dyn Fn(RunningJob) -> HandlerFuture + Send + Sync>;

/// Claims and runs jobs of the registered kinds.
pub struct WorkerPool {
    jobs: Jobs,
    name: String,
    handlers: HashMap<String, Handler>,
    concurrency: usize,
    idle_poll: Duration,
    heartbeat_every: Duration,
    stop_claiming: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl WorkerPool {
    /// A pool named `name` (host and process, for `lease_owner`) running `concurrency` jobs at once.
    pub fn new(jobs: Jobs, name: impl Into<String>, concurrency: usize) -> Self {
        // Three heartbeats per lease, so one slow round trip never loses the job.
        let lease = Duration::from_secs(jobs.policy().lease_s.max(1).unsigned_abs());
        let heartbeat_every = (lease / 3).min(Duration::from_secs(2));
        Self {
            jobs,
            name: name.into(),
            handlers: HashMap::new(),
            concurrency: concurrency.max(1),
            idle_poll: Duration::from_millis(500),
            heartbeat_every,
            stop_claiming: None,
        }
    }

    /// Claims no further job once `stop` answers true (asked before every claim): a worker
    /// whose server is gone must not take work under settings the server no longer has.
    pub fn stop_claiming_when(&mut self, stop: Arc<dyn Fn() -> bool + Send + Sync>) -> &mut Self {
        self.stop_claiming = Some(stop);
        self
    }

    /// Runs jobs of kind `K` with `handler`, which gets the decoded payload.
    pub fn handle<K, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        K: JobKind,
        F: Fn(K::Payload, RunningJob) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, JobFailure>> + Send + 'static,
    {
        self.handle_stored::<K, F, Fut>(K::NAME.to_string(), handler)
    }

    /// [`Self::handle`] for one stored variant of `K` (training on one device).
    pub fn handle_stored<K, F, Fut>(&mut self, stored_kind: String, handler: F) -> &mut Self
    where
        K: JobKind,
        F: Fn(K::Payload, RunningJob) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, JobFailure>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |job: RunningJob| {
            let handler = Arc::clone(&handler);
            Box::pin(async move {
                let payload: K::Payload =
                    serde_json::from_value(job.job.payload.clone()).map_err(|e| {
                        JobFailure::permanent(format!("bad {} payload: {e}", job.job.kind))
                    })?;
                handler(payload, job).await
            })
        });
        self.handlers.insert(stored_kind, erased);
        self
    }

    /// The kinds this pool runs.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    /// Runs until the process ends: `concurrency` loops, each claiming one job at a time.
    pub async fn run(self) {
        let pool = Arc::new(self);
        let mut loops = Vec::new();
        for slot in 0..pool.concurrency {
            let pool = Arc::clone(&pool);
            loops.push(tokio::spawn(async move { pool.claim_loop(slot).await }));
        }
        for handle in loops {
            let _ = handle.await;
        }
    }

    async fn claim_loop(&self, slot: usize) {
        let worker = format!("{}#{slot}", self.name);
        let kinds = self.kinds();
        let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
        loop {
            if self.stop_claiming.as_ref().is_some_and(|stop| stop()) {
                tracing::info!(worker = %worker, "claiming no more jobs");
                return;
            }
            match self.jobs.claim(&worker, &kinds).await {
                Ok(Some(job)) => self.run_one(&worker, job).await,
                Ok(None) => tokio::time::sleep(self.idle_poll).await,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed; retrying");
                    tokio::time::sleep(self.idle_poll * 4).await;
                }
            }
        }
    }

    async fn run_one(&self, worker: &str, job: Job) {
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            return;
        };
        tracing::info!(job = %job.id, kind = %job.kind, attempt = job.attempts, "job started");
        let running = RunningJob {
            job: job.clone(),
            progress: Arc::new(Mutex::new((0.0, "started".into()))),
            cancel: Arc::new(AtomicBool::new(false)),
        };
        let beat = {
            let (jobs, job, worker) = (self.jobs.clone(), job.clone(), worker.to_string());
            let (progress, cancel) = (Arc::clone(&running.progress), Arc::clone(&running.cancel));
            let every = self.heartbeat_every;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let (fraction, note) = progress
                        .lock()
                        .map(|p| p.clone())
                        .unwrap_or((0.0, String::new()));
                    match jobs.heartbeat(&job, &worker, fraction, &note).await {
                        Ok(Heartbeat::CancelRequested) => cancel.store(true, Ordering::Relaxed),
                        Ok(Heartbeat::Continue) => {}
                        Err(e) => tracing::warn!(job = %job.id, error = %e, "heartbeat failed"),
                    }
                }
            })
        };
        // A panicking handler is a failed attempt, not a dead worker.
        let outcome = tokio::spawn(handler(running))
            .await
            .unwrap_or_else(|e| Err(JobFailure::retryable(format!("the handler panicked: {e}"))));
        beat.abort();
        let recorded = match &outcome {
            Ok(result) => self
                .jobs
                .succeed(&job, worker, result.clone())
                .await
                .map(|()| "succeeded"),
            Err(f) if f.cancelled => self
                .jobs
                .acknowledge_cancel(&job, worker)
                .await
                .map(|()| "cancelled"),
            Err(f) => self
                .jobs
                .fail(&job, worker, &f.message, f.retryable)
                .await
                .map(|_| "failed"),
        };
        match recorded {
            Ok(how) => {
                tracing::info!(job = %job.id, kind = %job.kind, outcome = how, error = ?outcome.as_ref().err().map(|f| &f.message), "job ended")
            }
            Err(e) => tracing::warn!(job = %job.id, error = %e, "could not record the job's end"),
        }
    }
}
