//! The job queue on both databases: concurrent workers never share a job, a dead worker's
//! lease runs out and another worker takes over, failures are retried after a backoff until
//! the attempts run out, cancellation stops queued and running jobs, progress is recorded.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::collections::HashSet;

use pathfed_core::clock::Clock;
use pathfed_core::jobs::kinds::{
    Curate, CuratePayload, Extract, ExtractPayload, Infer, InferPayload, JobKind as _, Train,
    TrainPayload,
};
use pathfed_core::jobs::{Heartbeat, JobStatus, Jobs, NewJob, QueuePolicy};
use serde_json::json;

use crate::support::{BACKENDS, TestServer};

/// The queue with short leases and backoffs, on a clock the test moves instead of waiting.
fn quick(db: pathfed_core::Db, clock: &Clock) -> Jobs {
    Jobs::with_policy(
        db,
        QueuePolicy {
            lease_s: 1,
            backoff_base_s: 1,
            backoff_max_s: 4,
        },
    )
    .with_clock(clock.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_leases_retries_and_cancellation() {
    for backend in BACKENDS {
        // The queue is driven by hand here: the server's own workers stay off.
        let server = TestServer::start_with(backend, &[("PATHFED_RESEARCH_SERVE_WORKERS", "0")]);
        let clock = Clock::manual(pathfed_core::clock::now());
        let jobs = quick(server.db().await, &clock);

        // Idempotent enqueue.
        let curate = CuratePayload {
            case_id: "c1".into(),
            slide_id: "s1".into(),
            report_version: 1,
        };
        let first = jobs.enqueue(NewJob::of::<Curate>(&curate)).await.unwrap();
        let again = jobs.enqueue(NewJob::of::<Curate>(&curate)).await.unwrap();
        assert_eq!(first.id, again.id);

        // Twenty jobs, eight workers claiming at once: each job goes to exactly one worker.
        for i in 0..20 {
            let payload = ExtractPayload {
                dataset: "d".into(),
                version: i,
            };
            jobs.enqueue(NewJob::of::<Extract>(&payload)).await.unwrap();
        }
        let mut workers = Vec::new();
        for w in 0..8 {
            let jobs = jobs.clone();
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(job) = jobs
                    .claim(&format!("w{w}"), &[Extract::NAME])
                    .await
                    .unwrap()
                {
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
        assert!(jobs.claim("w0", &[Extract::NAME]).await.unwrap().is_none());
        assert!(
            jobs.claim("w0", &[Train::NAME]).await.unwrap().is_none(),
            "other kinds stay"
        );

        // Progress and a lost lease: worker A stops answering; B takes the job over.
        let job = jobs.claim("a", &[Curate::NAME]).await.unwrap().unwrap();
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
            jobs.claim("b", &[Curate::NAME]).await.unwrap().is_none(),
            "leased jobs stay put"
        );
        clock.advance(2);
        let taken = jobs.claim("b", &[Curate::NAME]).await.unwrap().unwrap();
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
            jobs.claim("b", &[Curate::NAME]).await.unwrap().is_none(),
            "backing off"
        );
        // Second attempt failed: 1 s doubled once.
        clock.advance(1);
        assert!(
            jobs.claim("c", &[Curate::NAME]).await.unwrap().is_none(),
            "still backing off after 1 s"
        );
        clock.advance(1);
        let third = jobs.claim("c", &[Curate::NAME]).await.unwrap().unwrap();
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
        let infer = InferPayload {
            slide_id: "s2".into(),
            model: "m".into(),
            version: 1,
        };
        jobs.enqueue(NewJob::of::<Infer>(&infer)).await.unwrap();
        let bad = jobs.claim("d", &[Infer::NAME]).await.unwrap().unwrap();
        assert_eq!(
            jobs.fail(&bad, "d", "corrupt slide", false).await.unwrap(),
            JobStatus::Failed
        );

        // Cancellation: queued jobs stop at once, running ones at their next heartbeat.
        let train = TrainPayload {
            run: "r1".into(),
            resume: false,
            device: "flex".into(),
        };
        let queued = jobs.enqueue(NewJob::of::<Train>(&train)).await.unwrap();
        assert_eq!(
            jobs.cancel(&queued.id).await.unwrap().status,
            JobStatus::Cancelled
        );
        assert!(jobs.claim("e", &[Train::NAME]).await.unwrap().is_none());
        jobs.enqueue(NewJob::of::<Train>(&train)).await.unwrap();
        let running = jobs.claim("e", &[Train::NAME]).await.unwrap().unwrap();
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

        // A worker that dies on the last attempt leaves a failed job, not a stuck one
        // (training has one attempt).
        jobs.enqueue(NewJob::of::<Train>(&train)).await.unwrap();
        let once = jobs.claim("f", &[Train::NAME]).await.unwrap().unwrap();
        clock.advance(2);
        assert!(jobs.claim("g", &[Train::NAME]).await.unwrap().is_none());
        let dead = jobs.get(&once.id).await.unwrap();
        assert_eq!(dead.status, JobStatus::Failed, "{backend:?}");
        assert!(dead.last_error.unwrap().contains("lease expired"));
        // Listing by kind: the two cancelled runs and the one whose worker died.
        assert_eq!(jobs.list(Some(Train::NAME), 10).await.unwrap().len(), 3);
    }
}
