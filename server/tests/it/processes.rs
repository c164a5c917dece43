//! `pathfed serve` keeps heavy work in worker processes of its own: a worker killed in the
//! middle of a job takes nothing else down (tiles keep coming), the server starts it again and
//! the queue retries the job; an admin command run beside the server leaves the slide cache of
//! the server and its workers in place.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pathfed_core::jobs::kinds::{Curate, JobKind as _};
use reqwest::{Method, StatusCode};
use sqlx::Row as _;

use crate::support::people::{sign_out_with, staff, wait_for};
use crate::support::{Backend, TestServer, submit_case, synth_slide};

/// (status, attempts) of the curate job of `slide`, once one exists.
async fn curate_job(db: &pathfed_core::Db, slide: &str) -> Option<(String, i64)> {
    sqlx::query("SELECT status, attempts FROM jobs WHERE kind = $1 AND payload LIKE $2")
        .bind(Curate::NAME)
        .bind(format!("%{slide}%"))
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|r| (r.get("status"), r.get("attempts")))
}

/// Every slide folder materialised in the shared slide cache, by any process.
fn cached_slide_folders(server: &TestServer) -> Vec<String> {
    let shared = server.dir.path().join("data/cache");
    let mut found = Vec::new();
    for owner in std::fs::read_dir(&shared).unwrap().flatten() {
        if owner.path().is_dir() {
            for slide in std::fs::read_dir(owner.path()).unwrap().flatten() {
                found.push(slide.path().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_takes_nothing_down_and_its_job_is_retried() {
    // A short lease, so the killed worker's job is taken over within seconds.
    let server = TestServer::start_with(Backend::Local, &[("PATHFED_RESEARCH_JOB_LEASE_S", "3")]);
    let people = staff(&server);
    let db = server.db().await;
    let workers = wait_for("the worker processes", Duration::from_secs(30), || {
        let found = server.worker_processes();
        async move { (found.len() == 3).then_some(found) }
    })
    .await;
    let research_worker = workers
        .iter()
        .find(|(_, cmdline)| cmdline.contains(Curate::NAME))
        .map(|(pid, _)| *pid)
        .unwrap();

    let file = synth_slide(server.dir.path(), "killed.svs", 4096, 3072, 51);
    let (case, slide) = submit_case(&server, &people.spoke.token, &file, "MRN-KILL-1");
    let tile = |level: u32| format!("/api/v1/slides/{slide}/slide_files/{level}/0_0.jpeg");
    let (status, _) = people.spoke.raw(&tile(8)).await;
    assert_eq!(status, StatusCode::OK);
    let cached_before = cached_slide_folders(&server);
    assert!(
        !cached_before.is_empty(),
        "the server caches the slide it tiles"
    );

    // An admin command run beside the server leaves every process's cache alone.
    server.cli_ok(&["admin", "hospital", "default-hub", "Spoke A", "Hub H"]);
    assert_eq!(cached_slide_folders(&server), cached_before);

    sign_out_with(&people.first, &people.second, &case, &slide, "GAS-G3").await;
    // Caught in the act: frozen once its work folder exists, then killed.
    let data = server.dir.path().join("data");
    let start = Instant::now();
    while !std::fs::read_dir(&data).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("curate-")
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "curation never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = Pid::from_raw(research_worker as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let (status, attempts) = curate_job(&db, &slide).await.unwrap();
    assert_eq!((status.as_str(), attempts), ("running", 1));
    kill(pid, Signal::SIGKILL).unwrap();

    // The web server goes on serving, from tiles it has not served before too.
    for level in [9, 10, 11] {
        let (status, body) = people.spoke.raw(&tile(level)).await;
        assert_eq!(status, StatusCode::OK, "level {level}");
        assert!(body.starts_with(&[0xFF, 0xD8]), "a JPEG at level {level}");
    }
    let health = crate::support::client()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // A new worker takes the job over once its lease runs out, and finishes it.
    let (status, attempts) = wait_for("the retried curate job", Duration::from_secs(90), || {
        let (db, slide) = (db.clone(), slide.clone());
        async move {
            curate_job(&db, &slide)
                .await
                .filter(|(status, _)| status == "succeeded")
        }
    })
    .await;
    assert_eq!((status.as_str(), attempts), ("succeeded", 2));
    let restarted = server.worker_processes();
    assert_eq!(restarted.len(), 3, "{restarted:?}");
    assert!(restarted.iter().all(|(p, _)| *p != research_worker));
    assert!(
        server.log().contains("worker process exited; restarting"),
        "{}",
        server.log()
    );
    let case_now = people
        .spoke
        .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
        .await;
    assert_eq!(case_now["status"], "signed_out");
}
