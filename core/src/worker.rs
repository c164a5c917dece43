//! Runs queued jobs: a pool that claims jobs of the kinds it has handlers for, keeps their
//! leases alive, and records how each ended.
//!
//! A handler gets a [`RunningJob`]; it reports progress through it (cheap: kept in memory and
//! sent with the next heartbeat) and learns there that someone asked to cancel. A heartbeat
//! task renews the lease every few seconds whatever the handler is doing, so long blocking
//! steps (a slide re-encode) never lose their job to another worker.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::jobs::{Heartbeat, Job, Jobs};

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
pub type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, JobFailure>> + Send>>;

/// A job handler.
pub type Handler = Arc<dyn Fn(RunningJob) -> HandlerFuture + Send + Sync>;

/// Claims and runs jobs of the registered kinds.
pub struct WorkerPool {
    jobs: Jobs,
    name: String,
    handlers: HashMap<String, Handler>,
    concurrency: usize,
    idle_poll: Duration,
    heartbeat_every: Duration,
}

impl WorkerPool {
    /// A pool named `name` (host and process, for `lease_owner`) running `concurrency` jobs at once.
    pub fn new(jobs: Jobs, name: impl Into<String>, concurrency: usize) -> Self {
        Self {
            jobs,
            name: name.into(),
            handlers: HashMap::new(),
            concurrency: concurrency.max(1),
            idle_poll: Duration::from_millis(500),
            heartbeat_every: Duration::from_secs(2),
        }
    }

    /// Adds the handler for `kind`.
    pub fn register(&mut self, kind: &str, handler: Handler) -> &mut Self {
        self.handlers.insert(kind.to_string(), handler);
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
