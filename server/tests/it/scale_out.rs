//! Scale-out on the existing engines: two `pathfed serve` replicas and two `pathfed worker`
//! processes against one PostgreSQL and one S3-compatible server. A browser session made on one
//! replica is valid on the other; slides uploaded through either are served by both; every job
//! is claimed and run exactly once, by one of the two workers; a replica killed in the middle of
//! an upload leaves the other serving, and the client resumes the upload through it from the
//! offset the dead replica acknowledged.
//!
//! The replicas share the upload staging folder (`ingest.staging_dir`, see
//! `TestServer::replica`) as they share the database and the object store; the staging file's
//! lock keeps the two from writing to one upload at once.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pathfed_core::jobs::kinds::{Curate, JobKind as _};
use pathfed_core::keys::SecretKey;
use pathfed_datasets::pseudonym::{self, Pseudonyms};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::support::people::{sign_out_with, staff, wait_for};
use crate::support::{
    As, Backend, Reaped, TestServer, client, password, sha256_hex, submit_case, synth_slide,
};
use crate::tus::{self, TUS, head, offset_of};

/// Generous: the machine may be busy with other tests.
const PATIENCE: Duration = Duration::from_secs(90);

/// The same user, through another replica.
fn on<'s>(server: &'s TestServer, who: &As<'_>) -> As<'s> {
    As {
        server,
        token: who.token.clone(),
    }
}

/// A `pathfed worker` process (every job kind, one job at a time) with a server's settings and
/// data folder; its stdout and its log (each job started and ended) go to files.
struct Worker {
    process: Reaped,
    out: PathBuf,
    log: PathBuf,
}

impl Worker {
    fn start(server: &TestServer, name: &str) -> Self {
        let out = server.dir.path().join(format!("{name}.out"));
        let log = server.dir.path().join(format!("{name}.log"));
        let child = server
            .command(&["worker"])
            // The pool logs `job started` / `job ended` with the job's id at info.
            .env("PATHFED_LOG", "warn,pathfed_core::worker=info")
            .env("NO_COLOR", "1")
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start pathfed worker");
        Self {
            process: Reaped(child),
            out,
            log,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.process.0.id() as i32)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Lines of the log that say `what` (`job started`, `job ended`) about job `id`.
    fn lines_about(&self, what: &str, id: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains(what) && line.contains(id))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the worker has opened the platform and runs its pools.
    async fn ready(&mut self) {
        let (out, log) = (self.out.clone(), self.log.clone());
        let process = &mut self.process.0;
        wait_for("the worker to start", PATIENCE, || {
            if let Some(status) = process.try_wait().unwrap() {
                panic!(
                    "the worker exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let running = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("pathfed worker running");
            async move { running.then_some(()) }
        })
        .await;
    }
}

/// A row of the `jobs` table.
#[derive(Debug)]
struct JobRow {
    id: String,
    kind: String,
    status: String,
    attempts: i64,
    payload: Value,
    result: Value,
    last_error: Option<String>,
}

async fn all_jobs(db: &pathfed_core::Db) -> Vec<JobRow> {
    sqlx::query(
        "SELECT id, kind, status, attempts, payload, result, last_error FROM jobs \
         ORDER BY created_at, id",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| JobRow {
        id: r.get("id"),
        kind: r.get("kind"),
        status: r.get("status"),
        attempts: r.get("attempts"),
        payload: serde_json::from_str(&r.get::<String, _>("payload")).unwrap(),
        result: r
            .get::<Option<String>, _>("result")
            .map(|text| serde_json::from_str(&text).unwrap())
            .unwrap_or(Value::Null),
        last_error: r.get("last_error"),
    })
    .collect()
}

async fn patient_hash(db: &pathfed_core::Db, case: &str) -> String {
    sqlx::query("SELECT patient_hash FROM cases WHERE id = $1")
        .bind(case)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get("patient_hash")
}

/// The research pseudonyms under the key in `server`'s data folder (read, never created).
fn pseudonyms_of(server: &TestServer) -> Pseudonyms {
    let path = server
        .dir
        .path()
        .join(format!("data/keys/{}.key", pseudonym::KEY_NAME));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let bytes: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
    Pseudonyms::with_key(SecretKey::from_bytes(bytes))
}

/// The slide's metadata and a tile at `level`, as `who` sees them; both must be served.
async fn served(who: &As<'_>, slide: &str, level: u32) {
    who.ok(Method::GET, &format!("/api/v1/slides/{slide}"), None)
        .await;
    let (status, tile) = who
        .raw(&format!(
            "/api/v1/slides/{slide}/slide_files/{level}/0_0.jpeg"
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}: tile of {slide}: {}",
        who.server.url,
        String::from_utf8_lossy(&tile)
    );
    assert!(tile.starts_with(&[0xFF, 0xD8]), "a JPEG tile");
}

/// tus creation of an upload of `data` on `server`; returns the upload's path, so that any
/// replica can be asked about it.
async fn create(server: &TestServer, token: &str, data: &[u8], name: &str) -> String {
    let url = tus::create(server, token, data.len(), name, &sha256_hex(data)).await;
    url.strip_prefix(&server.url).unwrap().to_string()
}

/// A tus PATCH without a checksum.
async fn patch(url: &str, token: &str, offset: usize, chunk: &[u8]) -> reqwest::Response {
    tus::patch(url, token, offset, chunk, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_and_two_workers_share_one_platform() {
    // Jobs run only in the two worker processes started below, never beside the servers.
    let mut a = TestServer::start_with(Backend::Remote, &[("PATHFED_RESEARCH_SERVE_WORKERS", "0")]);
    let b = a.replica();
    assert_ne!(a.url, b.url);
    assert!(a.worker_processes().is_empty() && b.worker_processes().is_empty());
    let people = staff(&a);
    let db = a.db().await;

    // A browser session made on A is valid on B (same user, same CSRF token), and signing out
    // on B ends it on A too.
    let login = client()
        .post(format!("{}/api/v1/session", a.url))
        .json(&json!({ "username": "path1", "password": password("path1") }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("pathfed_session="), "{cookie}");
    let made: Value = login.json().await.unwrap();
    let csrf = made["csrf_token"].as_str().unwrap().to_string();
    assert!(!csrf.is_empty());
    let session = |server: &TestServer| {
        client()
            .get(format!("{}/api/v1/session", server.url))
            .header(header::COOKIE, cookie.as_str())
            .send()
    };
    let on_b = session(&b).await.unwrap();
    assert_eq!(on_b.status(), StatusCode::OK, "{}", b.log());
    let on_b: Value = on_b.json().await.unwrap();
    assert_eq!(on_b["user"]["username"], "path1");
    assert_eq!(on_b["user"]["id"], made["user"]["id"]);
    assert_eq!(on_b["csrf_token"], made["csrf_token"]);
    let worklist = client()
        .get(format!("{}/api/v1/cases", b.url))
        .header(header::COOKIE, cookie.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(worklist.status(), StatusCode::OK);
    let signed_out = client()
        .delete(format!("{}/api/v1/session", b.url))
        .header(header::COOKIE, cookie.as_str())
        .header("X-CSRF-Token", csrf.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        session(&a).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "signed out on B is signed out on A"
    );

    // Two workers, one beside each replica (its settings and data folder, so B's copy of the
    // keys is the one its worker uses). Once both run, they are frozen while the sign-outs
    // below queue their jobs, then let go together to compete for the same queue.
    let mut workers = [Worker::start(&a, "worker-1"), Worker::start(&b, "worker-2")];
    for worker in &mut workers {
        worker.ready().await;
    }
    for worker in &workers {
        kill(worker.pid(), Signal::SIGSTOP).unwrap();
    }

    // Uploads through either replica (`pathfed case create --upload`, the CLI's tus client);
    // every slide and case is served by both. Patient SCALE-1 comes through both replicas.
    let replicas = [&a, &b];
    let patients = ["SCALE-1", "SCALE-1", "SCALE-2", "SCALE-3"];
    let mut cases = Vec::new();
    for (i, patient) in patients.iter().enumerate() {
        let through = replicas[i % 2];
        let file = synth_slide(
            through.dir.path(),
            &format!("scale-{i}.svs"),
            1024,
            768,
            70 + i as u32,
        );
        let (case, slide) = submit_case(through, &people.spoke.token, &file, patient);
        for server in replicas {
            let spoke = on(server, &people.spoke);
            served(&spoke, &slide, 8).await;
            let view = spoke
                .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
                .await;
            assert_eq!(view["patient_id"], *patient, "{}: {view}", server.url);
        }
        cases.push((case, slide));
    }
    // The patient-id keys are shared: one patient, one keyed hash, whichever replica took it.
    assert_eq!(
        patient_hash(&db, &cases[0].0).await,
        patient_hash(&db, &cases[1].0).await
    );
    assert_ne!(
        patient_hash(&db, &cases[0].0).await,
        patient_hash(&db, &cases[2].0).await
    );

    // Each case is read and signed out through the replica it was not uploaded through.
    for (i, (case, slide)) in cases.iter().enumerate() {
        let server = replicas[(i + 1) % 2];
        sign_out_with(
            &on(server, &people.first),
            &on(server, &people.second),
            case,
            slide,
            "GAS-G3",
        )
        .await;
    }
    let queued = all_jobs(&db).await;
    assert_eq!(
        queued.len(),
        cases.len(),
        "one curate job per slide: {queued:?}"
    );
    assert!(
        queued
            .iter()
            .all(|j| j.kind == Curate::NAME && j.status == "queued" && j.attempts == 0),
        "nothing runs jobs while both workers are frozen: {queued:?}"
    );
    for worker in &workers {
        kill(worker.pid(), Signal::SIGCONT).unwrap();
    }

    // Every job claimed and run exactly once: one attempt each, started in exactly one
    // worker's log (and ended there), and both workers had a share.
    let done = wait_for("every job to finish", PATIENCE, || {
        let db = db.clone();
        async move {
            let jobs = all_jobs(&db).await;
            jobs.iter()
                .all(|j| j.status != "queued" && j.status != "running")
                .then_some(jobs)
        }
    })
    .await;
    let logs = || {
        workers
            .iter()
            .map(|w| w.log())
            .collect::<Vec<_>>()
            .join("\n--- next worker ---\n")
    };
    let pseudonyms = pseudonyms_of(&a);
    let mut ran = [0usize; 2];
    for job in &done {
        assert_eq!(job.kind, Curate::NAME);
        assert_eq!(
            (job.status.as_str(), job.attempts),
            ("succeeded", 1),
            "{job:?}\n{}",
            logs()
        );
        assert_eq!(job.last_error, None, "{job:?}");
        let slide = job.payload["slide_id"].as_str().unwrap();
        assert_eq!(
            job.result["research_slide"],
            pseudonyms.slide(slide),
            "{job:?}"
        );
        let started: Vec<usize> = workers
            .iter()
            .map(|w| w.lines_about("job started", &job.id).len())
            .collect();
        assert_eq!(
            started.iter().sum::<usize>(),
            1,
            "job {} started {started:?} times (per worker)\n{}",
            job.id,
            logs()
        );
        let by = started.iter().position(|n| *n == 1).unwrap();
        assert!(
            workers[by]
                .lines_about("job ended", &job.id)
                .iter()
                .any(|line| line.contains("succeeded")),
            "job {} did not end in the worker that started it\n{}",
            job.id,
            logs()
        );
        ran[by] += 1;
    }
    assert!(ran.iter().all(|n| *n > 0), "both workers ran jobs: {ran:?}");
    let mut curated: Vec<&str> = done
        .iter()
        .map(|j| j.payload["slide_id"].as_str().unwrap())
        .collect();
    curated.sort_unstable();
    let mut slides: Vec<&str> = cases.iter().map(|(_, slide)| slide.as_str()).collect();
    slides.sort_unstable();
    assert_eq!(curated, slides, "one curate job per signed-out slide");

    // Exactly one research slide per signed-out slide, under the one platform key; one
    // research patient for the patient who came through both replicas.
    let research: HashMap<String, String> =
        sqlx::query("SELECT id, research_patient FROM research_slides WHERE deleted_at IS NULL")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("id"), r.get("research_patient")))
            .collect();
    assert_eq!(research.len(), cases.len(), "{research:?}");
    let patient_of = |slide: &str| {
        research
            .get(&pseudonyms.slide(slide))
            .unwrap_or_else(|| panic!("no research slide for {slide}: {research:?}"))
            .clone()
    };
    assert_eq!(patient_of(&cases[0].1), patient_of(&cases[1].1));
    assert_ne!(patient_of(&cases[0].1), patient_of(&cases[2].1));
    let objects = pathfed_core::store::list_keys(&a.store(), "research/slides/")
        .await
        .unwrap();
    assert_eq!(objects.len(), cases.len(), "{objects:?}");

    // A dies in the middle of an upload. B goes on serving everything, and the client resumes
    // the upload through B from the offset A acknowledged.
    let token = people.spoke.token.clone();
    let spoke_b = on(&b, &people.spoke);
    let file = synth_slide(b.dir.path(), "failover.svs", 1024, 768, 79);
    let data = std::fs::read(&file).unwrap();
    let path = create(&a, &token, &data, "failover.svs").await;
    let half = data.len() / 2;
    let r = patch(&format!("{}{path}", a.url), &token, 0, &data[..half]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), half);
    a.kill();
    assert!(
        client()
            .get(format!("{}/healthz", a.url))
            .send()
            .await
            .is_err(),
        "A is down"
    );
    let slide = resume(&b, &token, &path, &data, half).await;
    served(&spoke_b, &slide, 8).await;
    for (_, slide) in &cases {
        served(&spoke_b, slide, 9).await;
    }
    assert!(b.staging_files().is_empty(), "{:?}", b.staging_files());
    drop(workers);
}

/// Finishes the upload at `path` through `server`, which did not receive its first `acked`
/// bytes: its offset there is `acked`, and the rest of `data` completes it. Returns the slide.
async fn resume(server: &TestServer, token: &str, path: &str, data: &[u8], acked: usize) -> String {
    let url = format!("{}{path}", server.url);
    let r = head(&url, token).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", server.log());
    assert_eq!(
        offset_of(&r),
        acked,
        "the offset the dead replica acknowledged"
    );
    let r = patch(&url, token, acked, &data[acked..]).await;
    let status = r.status();
    let slide = r
        .headers()
        .get("pathfed-slide-id")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(status, StatusCode::NO_CONTENT, "{:?}", r.text().await);
    slide.expect("the last chunk names the slide")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_cut_off_by_a_dead_replica_resumes_on_the_other_from_its_offset() {
    let mut a = TestServer::start_with(Backend::Remote, &[("PATHFED_RESEARCH_SERVE_WORKERS", "0")]);
    let b = a.replica();
    assert_eq!(a.staging_dir(), b.staging_dir(), "one staging folder");
    let token = a.user("Spoke", "spoke", "sam", "submitter");
    let file = synth_slide(a.dir.path(), "resume.svs", 1024, 768, 83);
    let data = std::fs::read(&file).unwrap();
    let path = create(&a, &token, &data, "resume.svs").await;
    let (on_a, on_b) = (format!("{}{path}", a.url), format!("{}{path}", b.url));
    let (quarter, half) = (data.len() / 4, data.len() / 2);

    // A receives the first half as one request whose body comes in two parts. Between them, B
    // sees the bytes A has so far, and refuses to write to the upload while A does, as one
    // server refuses a second request for an upload it is writing to.
    let (parts, body) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    parts.unbounded_send(Ok(data[..quarter].to_vec())).unwrap();
    let first_half = tokio::spawn(
        client()
            .patch(&on_a)
            .bearer_auth(&token)
            .header(TUS.0, TUS.1)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", 0)
            .body(reqwest::Body::wrap_stream(body))
            .send(),
    );
    wait_for("B to see the bytes A received", PATIENCE, || {
        let (on_b, token) = (on_b.clone(), token.clone());
        async move {
            let r = head(&on_b, &token).await;
            (r.status() == StatusCode::OK && offset_of(&r) == quarter).then_some(())
        }
    })
    .await;
    // A small chunk: refused unread, a large one could be cut off by the closing connection.
    let r = patch(&on_b, &token, quarter, &data[quarter..quarter + 1024]).await;
    assert_eq!(r.status(), StatusCode::LOCKED, "{}", b.log());
    let refused: Value = r.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "upload_busy", "{refused}");
    parts
        .unbounded_send(Ok(data[quarter..half].to_vec()))
        .unwrap();
    drop(parts);
    let r = first_half.await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", a.log());
    assert_eq!(offset_of(&r), half);
    a.kill();

    // The same upload, through B: its offset is what A acknowledged, and the rest completes it
    // (B never hashed the first half: the whole-file digest comes from the shared file).
    let slide = resume(&b, &token, &path, &data, half).await;
    served(&As { server: &b, token }, &slide, 8).await;
    assert!(b.staging_files().is_empty(), "{:?}", b.staging_files());
}
