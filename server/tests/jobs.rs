//! The job queue on both databases: concurrent workers never share a job, a dead worker's
//! lease runs out and another worker takes over, failures are retried after a backoff until
//! the attempts run out, cancellation stops queued and running jobs, progress is recorded.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use pathfed_core::jobs::{Heartbeat, JobStatus, Jobs, NewJob, QueuePolicy};
use serde_json::json;
use support::{BACKENDS, TestServer};

fn quick(db: pathfed_core::Db) -> Jobs {
    Jobs::with_policy(
        db,
        QueuePolicy {
            lease_s: 1,
            backoff_base_s: 1,
            backoff_max_s: 4,
        },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_leases_retries_and_cancellation() {
    for backend in BACKENDS {
        // The queue is driven by hand here: the server's own workers stay off.
        let server = TestServer::start_with(backend, &[("PATHFED_RESEARCH_SERVE_WORKERS", "0")]);
        let jobs = quick(server.db().await);

        // Idempotent enqueue.
        let first = jobs
            .enqueue(NewJob::new("curate", json!({"slide": "s1"})).dedupe("curate:s1"))
            .await
            .unwrap();
        let again = jobs
            .enqueue(NewJob::new("curate", json!({"slide": "s1"})).dedupe("curate:s1"))
            .await
            .unwrap();
        assert_eq!(first.id, again.id);

        // Twenty jobs, eight workers claiming at once: each job goes to exactly one worker.
        for i in 0..20 {
            jobs.enqueue(NewJob::new("extract", json!({ "n": i })))
                .await
                .unwrap();
        }
        let mut workers = Vec::new();
        for w in 0..8 {
            let jobs = jobs.clone();
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(job) = jobs.claim(&format!("w{w}"), &["extract"]).await.unwrap() {
                    mine.push(job.id.clone());
                    jobs.succeed(&job, &format!("w{w}"), json!({"ok": true}))
                        .await
                        .unwrap();
                }
                mine
            }));
        }
        let mut seen = HashSet::new();
        for worker in workers {
            for id in worker.await.unwrap() {
                assert!(seen.insert(id), "a job was claimed twice ({backend:?})");
            }
        }
        assert_eq!(seen.len(), 20);
        assert!(jobs.claim("w0", &["extract"]).await.unwrap().is_none());
        assert!(
            jobs.claim("w0", &["train"]).await.unwrap().is_none(),
            "other kinds stay"
        );

        // Progress and a lost lease: worker A stops answering; B takes the job over.
        let job = jobs.claim("a", &["curate"]).await.unwrap().unwrap();
        assert_eq!(job.attempts, 1);
        assert_eq!(
            jobs.heartbeat(&job, "a", 0.25, "copying level 2")
                .await
                .unwrap(),
            Heartbeat::Continue
        );
        let stored = jobs.get(&job.id).await.unwrap();
        assert_eq!(
            (stored.progress, stored.progress_note.as_str()),
            (0.25, "copying level 2")
        );
        assert!(
            jobs.claim("b", &["curate"]).await.unwrap().is_none(),
            "leased jobs stay put"
        );
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        let taken = jobs.claim("b", &["curate"]).await.unwrap().unwrap();
        assert_eq!((taken.id.as_str(), taken.attempts), (job.id.as_str(), 2));
        assert!(
            jobs.heartbeat(&job, "a", 0.5, "late").await.is_err(),
            "A lost the lease"
        );
        assert!(jobs.succeed(&job, "a", json!({})).await.is_err());

        // A retryable failure comes back after the backoff, not before.
        assert_eq!(
            jobs.fail(&taken, "b", "object store unreachable", true)
                .await
                .unwrap(),
            JobStatus::Queued
        );
        assert!(
            jobs.claim("b", &["curate"]).await.unwrap().is_none(),
            "backing off"
        );
        // Second attempt failed: 1 s doubled once, plus up to a second of clock granularity.
        tokio::time::sleep(Duration::from_millis(3_100)).await;
        let third = jobs.claim("c", &["curate"]).await.unwrap().unwrap();
        assert_eq!(third.attempts, 3);
        // The last attempt fails for good; the error is kept.
        assert_eq!(
            jobs.fail(&third, "c", "still unreachable", true)
                .await
                .unwrap(),
            JobStatus::Failed
        );
        let failed = jobs.get(&job.id).await.unwrap();
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.last_error.as_deref(), Some("still unreachable"));

        // A non-retryable failure ends at once.
        jobs.enqueue(NewJob::new("infer", json!({}))).await.unwrap();
        let bad = jobs.claim("d", &["infer"]).await.unwrap().unwrap();
        assert_eq!(
            jobs.fail(&bad, "d", "corrupt slide", false).await.unwrap(),
            JobStatus::Failed
        );

        // Cancellation: queued jobs stop at once, running ones at their next heartbeat.
        let queued = jobs.enqueue(NewJob::new("train", json!({}))).await.unwrap();
        assert_eq!(
            jobs.cancel(&queued.id).await.unwrap().status,
            JobStatus::Cancelled
        );
        assert!(jobs.claim("e", &["train"]).await.unwrap().is_none());
        jobs.enqueue(NewJob::new("train", json!({}))).await.unwrap();
        let running = jobs.claim("e", &["train"]).await.unwrap().unwrap();
        assert_eq!(
            jobs.cancel(&running.id).await.unwrap().status,
            JobStatus::Running
        );
        assert_eq!(
            jobs.heartbeat(&running, "e", 0.1, "epoch 1").await.unwrap(),
            Heartbeat::CancelRequested
        );
        jobs.acknowledge_cancel(&running, "e").await.unwrap();
        assert_eq!(
            jobs.get(&running.id).await.unwrap().status,
            JobStatus::Cancelled
        );

        // A worker that dies on the last attempt leaves a failed job, not a stuck one.
        jobs.enqueue(NewJob::new("infer", json!({})).attempts(1))
            .await
            .unwrap();
        let once = jobs.claim("f", &["infer"]).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(2_100)).await;
        assert!(jobs.claim("g", &["infer"]).await.unwrap().is_none());
        let dead = jobs.get(&once.id).await.unwrap();
        assert_eq!(dead.status, JobStatus::Failed, "{backend:?}");
        assert!(dead.last_error.unwrap().contains("lease expired"));
        assert_eq!(jobs.list(Some("train"), 10).await.unwrap().len(), 2);
    }
}
