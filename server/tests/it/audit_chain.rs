//! The audit log cannot be rewritten quietly, and admins can review it.
//!
//! On both backends: rows are keyed (HMAC with a key outside the database), so an edit with the
//! later hashes recomputed by plain SHA-256 or under another key is named; signed write-once
//! checkpoints in the object store reveal the newest rows removed and a chain recomputed from
//! its first row; a forged checkpoint is named; a checkpoint's name cannot be written twice.
//! Rows carry the client's address; thumbnails, heatmaps and research patches are audited as
//! views; commands record the operating-system account they ran as. The review API searches
//! (actor, patient, slide, action, outcome, time, pages), exports CSV, reports who accessed a
//! patient's slides, runs the chain check, refuses non-admins, and audits its own use without
//! writing the patient's id; a patient's id goes in a POST body only, never in a URL.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pathfed_core::Db;
use pathfed_core::audit::{AuditRecord, recent};
use pathfed_core::audit_checkpoint::{Checkpoint, object_key, put_once};
use pathfed_core::keys::SecretKey;
use pathfed_core::store::{get_bytes, list_keys};
use reqwest::Method;
use serde_json::{Value, json};

use crate::inference::{finished_job, mostly_dense, register_texture_model};
use crate::support::people::staff;
use crate::support::{
    As, BACKENDS, Backend, Reaped, TestServer, client, sha256_hex, submit_case, synth_slide,
};

/// What the commands record as their actor: the account this test (and so they) run as.
fn cli_actor() -> String {
    let id = |arg: &str| {
        let out = Command::new("id").arg(arg).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    format!("cli:{} (uid {})", id("-un"), id("-u"))
}

/// Every row, oldest first.
async fn all_rows(db: &Db) -> Vec<AuditRecord> {
    let mut rows = recent(db, 1_000_000).await.unwrap();
    rows.reverse();
    rows
}

/// Puts the log back as `saved` had it (after a scenario tampered with it).
async fn put_back(db: &Db, saved: &[AuditRecord]) {
    sqlx::query("DELETE FROM audit_log")
        .execute(db.pool())
        .await
        .unwrap();
    for r in saved {
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, hospital_id, action, target, outcome, \
             detail, address, keyed, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(r.seq)
        .bind(r.at)
        .bind(&r.event.actor)
        .bind(&r.event.hospital_id)
        .bind(&r.event.action)
        .bind(&r.event.target)
        .bind(&r.event.outcome)
        .bind(&r.event.detail)
        .bind(&r.address)
        .bind(i64::from(r.keyed))
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .execute(db.pool())
        .await
        .unwrap();
    }
}

/// The pre-key row hash: SHA-256 of the previous hash and the fields without the address.
fn plain_hash(r: &AuditRecord, prev: &str) -> String {
    let e = &r.event;
    let fields = json!([
        r.seq,
        r.at,
        e.actor,
        e.hospital_id,
        e.action,
        e.target,
        e.outcome,
        e.detail
    ]);
    sha256_hex(format!("{prev}{fields}").as_bytes())
}

/// The keyed construction, under a key that is not the platform's.
fn wrong_key_hash(r: &AuditRecord, prev: &str) -> String {
    let e = &r.event;
    let fields = json!([
        r.seq,
        r.at,
        e.actor,
        e.hospital_id,
        e.action,
        e.target,
        e.outcome,
        e.detail,
        r.address
    ]);
    SecretKey::from_bytes([9; 32]).keyed_hash(&[prev, &fields.to_string()])
}

/// Recomputes the hashes of rows `first..` of `rows` with `hash` and stores them as `keyed`,
/// relinking each to the one before: what someone with the database but not the key can do.
async fn rechain(
    db: &Db,
    rows: &[AuditRecord],
    first: i64,
    keyed: bool,
    hash: impl Fn(&AuditRecord, &str) -> String,
) {
    let mut prev = rows
        .iter()
        .find(|r| r.seq == first - 1)
        .map(|r| r.hash.clone())
        .unwrap_or_else(|| "0".repeat(64));
    for r in rows.iter().filter(|r| r.seq >= first) {
        let h = hash(r, &prev);
        sqlx::query(
            "UPDATE audit_log SET detail = $1, prev_hash = $2, hash = $3, keyed = $4 \
             WHERE seq = $5",
        )
        .bind(&r.event.detail)
        .bind(&prev)
        .bind(&h)
        .bind(i64::from(keyed))
        .bind(r.seq)
        .execute(db.pool())
        .await
        .unwrap();
        prev = h;
    }
}

/// `pathfed audit verify` fails, naming row `seq` and saying `why`.
fn verify_fails_at(server: &TestServer, seq: i64, why: &str) {
    let out = server.cli(&["audit", "verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{:?}: not detected ({why})",
        server.backend
    );
    assert!(
        stderr.contains(&format!("at row {seq}:")) && stderr.contains(why),
        "{:?}: expected row {seq} ({why}): {stderr}",
        server.backend
    );
}

/// `pathfed audit verify` passes, having checked `rows` rows.
fn verify_passes(server: &TestServer, rows: i64) {
    let out = server.cli_ok(&["audit", "verify"]);
    assert!(
        out.starts_with(&format!("audit log intact: {rows} rows,")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_recomputed_chains_removed_rows_and_forged_checkpoints_are_named() {
    for backend in BACKENDS {
        let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        syslog
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let sink = syslog.local_addr().unwrap().to_string();
        let server =
            TestServer::start_with(backend, &[("PATHFED_AUDIT_SYSLOG_ADDRESS", sink.as_str())]);
        for i in 0..3 {
            server.user("Hub", "hub", &format!("user{i}"), "pathologist");
        }
        let db = server.db().await;
        let store = server.store();
        let saved = all_rows(&db).await;
        let last = saved.last().unwrap().seq;
        assert!(last >= 6, "{backend:?}: {last} rows");
        // Every row is keyed, and the commands name the account they ran as.
        assert!(saved.iter().all(|r| r.keyed), "{backend:?}: unkeyed rows");
        let actor = cli_actor();
        assert!(
            saved.iter().all(|r| r.event.actor == actor),
            "{backend:?}: expected {actor}: {:?}",
            saved.iter().map(|r| &r.event.actor).collect::<Vec<_>>()
        );

        // A checkpoint of the head, once: the second finds nothing new.
        let before = list_keys(&store, "audit/checkpoints").await.unwrap().len();
        let out = server.cli_ok(&["audit", "checkpoint"]);
        assert!(
            out.starts_with(&format!("checkpoint of row {last} ")),
            "{out}"
        );
        let again = server.cli_ok(&["audit", "checkpoint"]);
        assert!(again.starts_with("no new rows"), "{again}");
        let checkpoints = list_keys(&store, "audit/checkpoints").await.unwrap();
        assert_eq!(checkpoints.len(), before + 1, "{checkpoints:?}");
        let written = checkpoints.iter().max().unwrap().clone();
        let checkpoint: Checkpoint =
            serde_json::from_slice(&get_bytes(&store, &written).await.unwrap()).unwrap();
        assert_eq!(checkpoint.seq, last);
        assert_eq!(checkpoint.hash, saved.last().unwrap().hash);
        // The syslog sink got the same checkpoint as one RFC 5424 line.
        let message =
            |line: &str| -> Option<Value> { serde_json::from_str(line.split_once(" - ")?.1).ok() };
        let line = loop {
            let mut buf = [0u8; 4096];
            // Times out (and fails) if the line never comes.
            let n = syslog.recv(&mut buf).unwrap();
            let line = String::from_utf8_lossy(&buf[..n]).to_string();
            if message(&line).is_some_and(|m| m["seq"] == last) {
                break line;
            }
        };
        assert!(line.starts_with("<109>1 "), "{line}");
        assert_eq!(
            message(&line).unwrap()["mac"],
            checkpoint.mac.as_str(),
            "{line}"
        );
        verify_passes(&server, last);

        // Row 2 edited, later hashes recomputed with plain SHA-256 (as rows were before the
        // key): an unkeyed row after a keyed one.
        let mut edited = saved.clone();
        edited[1].event.detail = "edited".into();
        rechain(&db, &edited, 2, false, plain_hash).await;
        verify_fails_at(&server, 2, "unkeyed row after keyed rows");
        put_back(&db, &saved).await;
        // The same with the keyed construction under another key.
        rechain(&db, &edited, 2, true, wrong_key_hash).await;
        verify_fails_at(&server, 2, "keyed hash");
        put_back(&db, &saved).await;
        // The whole chain recomputed from row 1 as a pre-key chain: every link holds, but the
        // checkpoint recorded another head.
        rechain(&db, &edited, 1, false, plain_hash).await;
        verify_fails_at(&server, last, "differs from the checkpoint");
        put_back(&db, &saved).await;
        // The newest three rows removed: still a valid chain, but the checkpoint recorded them.
        sqlx::query("DELETE FROM audit_log WHERE seq > $1")
            .bind(last - 3)
            .execute(db.pool())
            .await
            .unwrap();
        verify_fails_at(&server, last - 2, "removed");
        put_back(&db, &saved).await;
        verify_passes(&server, last);

        // A checkpoint's name is written once: the store refuses to replace it.
        let original = get_bytes(&store, &written).await.unwrap();
        let replaced = put_once(&store, &written, b"{}".to_vec()).await;
        assert!(replaced.is_err(), "{backend:?}: a checkpoint was replaced");
        assert_eq!(get_bytes(&store, &written).await.unwrap(), original);

        // A checkpoint signed with another key is named as forged.
        let forged = Checkpoint::sign(
            &SecretKey::from_bytes([9; 32]),
            last,
            checkpoint.hash.clone(),
            checkpoint.at + 7,
            last,
        );
        put_once(
            &store,
            &object_key(last, checkpoint.at + 7),
            serde_json::to_vec(&forged).unwrap(),
        )
        .await
        .unwrap();
        verify_fails_at(&server, last, "forged");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_checkpoints_when_it_starts_and_when_it_stops() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let mut server = TestServer::start(Backend::Local);
    server.user("Hub", "hub", "early", "pathologist");
    server.kill();
    let db = server.db().await;
    let store = server.store();
    let head = |db: Db| async move { pathfed_core::audit::head(&db).await.unwrap().unwrap().0 };
    let checkpointed = |store: pathfed_core::store::Store| async move {
        let mut seqs = Vec::new();
        for key in list_keys(&store, "audit/checkpoints").await.unwrap() {
            let c: Checkpoint =
                serde_json::from_slice(&get_bytes(&store, &key).await.unwrap()).unwrap();
            seqs.push(c.seq);
        }
        seqs
    };
    let at_start = head(db.clone()).await;
    assert!(
        checkpointed(store.clone()).await.is_empty(),
        "the first start had no rows to checkpoint"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let log = std::fs::File::create(server.dir.path().join("own-server.log")).unwrap();
    let mut child = Reaped(
        server
            .command(&["serve"])
            .env("PATHFED_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "no server");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Written before it listens, covering at least the rows there were.
    let at_listen = checkpointed(store.clone()).await;
    assert!(
        at_listen.iter().any(|seq| *seq >= at_start),
        "no checkpoint at start: {at_listen:?}"
    );

    server.user("Hub", "hub", "late", "pathologist");
    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).unwrap();
    let stopping = Instant::now();
    while child.0.try_wait().unwrap().is_none() {
        assert!(stopping.elapsed() < Duration::from_secs(60), "no stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let at_stop = head(db.clone()).await;
    assert!(at_stop > at_start);
    let seqs = checkpointed(store.clone()).await;
    assert!(
        seqs.contains(&at_stop),
        "no checkpoint at shutdown: {seqs:?}"
    );
    verify_passes(&server, at_stop);
}

/// A minimal RFC 4180 reader: records of fields, quotes doubled inside quoted fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => record.push(std::mem::take(&mut field)),
            '\r' => assert_eq!(chars.peek(), Some(&'\n'), "a bare CR"),
            '\n' => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            _ => field.push(c),
        }
    }
    assert!(field.is_empty() && record.is_empty(), "no final CRLF");
    records
}

/// A page of `GET /api/v1/admin/audit?{query}` as `who` sees it.
async fn search(who: &As<'_>, query: &str) -> Value {
    who.ok(Method::GET, &format!("/api/v1/admin/audit?{query}"), None)
        .await
}

/// A page of `POST /api/v1/admin/audit/search` with the filters `body`, as `who` sees it.
async fn search_by_body(who: &As<'_>, body: Value) -> Value {
    who.ok(Method::POST, "/api/v1/admin/audit/search", Some(body))
        .await
}

fn rows_of(page: &Value) -> &Vec<Value> {
    page["rows"].as_array().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn admins_review_the_log_by_user_patient_slide_and_time() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let staff = staff(&server);
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let spoke_admin = who("Spoke A", "spoke", "admin_a", "admin");
        let root = who("Hub H", "hub", "root", "platform-admin");
        let outsider = who("Hub X", "hub", "path_x", "pathologist");
        let a = synth_slide(server.dir.path(), "a.svs", 1200, 900, 3);
        let (case_a, slide_a) = submit_case(&server, &staff.spoke.token, &a, "PT-77");
        let b = synth_slide(server.dir.path(), "b.svs", 1200, 900, 4);
        let (case_b, slide_b) = submit_case(&server, &staff.spoke.token, &b, "PT-88");

        // The hub pathologist views the spoke patient's slide and its thumbnail; another
        // hospital's pathologist is refused the thumbnail; research patches are for
        // researchers; the researcher lists datasets (a row of the hub's own).
        let first = &staff.first;
        first
            .ok(Method::GET, &format!("/api/v1/slides/{slide_a}"), None)
            .await;
        let thumbnail = format!("/api/v1/slides/{slide_a}/thumbnail");
        let (status, jpeg) = first.raw(&thumbnail).await;
        assert_eq!(status.as_u16(), 200);
        assert!(!jpeg.is_empty());
        assert_eq!(outsider.raw(&thumbnail).await.0.as_u16(), 404);
        let patch = "/api/v1/research/patches/abcd/r-1/0";
        assert_eq!(first.raw(patch).await.0.as_u16(), 403);
        staff
            .researcher
            .ok(Method::GET, "/api/v1/datasets", None)
            .await;

        let db = server.db().await;
        let rows = all_rows(&db).await;
        let find = |action: &str, actor: &str, outcome: &str| {
            rows.iter()
                .find(|r| {
                    r.event.action == action && r.event.actor == actor && r.event.outcome == outcome
                })
                .unwrap_or_else(|| panic!("{backend:?}: no {action} {outcome} by {actor}"))
        };
        let viewed = find("slide.thumbnail", "path1", "ok");
        assert_eq!(viewed.event.target, format!("slide:{slide_a}"));
        // The test's requests come from the loopback address.
        assert_eq!(viewed.address, "127.0.0.1", "{backend:?}");
        assert_eq!(find("slide.view", "path1", "ok").address, "127.0.0.1");
        find("slide.thumbnail", "path_x", "denied");
        assert_eq!(
            find("research.patch", "path1", "denied").event.target,
            "research_slide:r-1"
        );
        // Commands have no client address and name the account they ran as.
        let command = find("admin.user.create", &cli_actor(), "ok");
        assert_eq!(command.address, "");

        // A spoke admin sees the hub pathologist's rows on its slides, not the hub's own rows.
        let by_path1 = search(&spoke_admin, "actor=path1").await;
        let listed = rows_of(&by_path1);
        assert!(
            listed
                .iter()
                .any(|r| r["action"] == "slide.view" && r["target"] == format!("slide:{slide_a}")),
            "{backend:?}: {by_path1}"
        );
        assert!(listed.iter().all(|r| r["actor"] == "path1"));
        assert!(listed.iter().all(|r| r["action"] != "research.patch"));
        assert!(listed.iter().all(|r| r["address"] == "127.0.0.1"));
        let seqs: Vec<i64> = listed.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first");
        let hub_rows = search(&spoke_admin, "actor=res_h").await;
        assert_eq!(rows_of(&hub_rows).len(), 0, "{backend:?}: {hub_rows}");
        let everywhere = search(&root, "actor=res_h").await;
        assert!(!rows_of(&everywhere).is_empty(), "{everywhere}");

        // By patient: the rows on that patient's case and slide only. The id goes in a body:
        // in a URL, which proxies and logs keep, it is refused.
        let patient = search_by_body(&spoke_admin, json!({"patient_id": "PT-77"})).await;
        let on_patient = rows_of(&patient);
        assert!(!on_patient.is_empty(), "{backend:?}: {patient}");
        for r in on_patient {
            let target = r["target"].as_str().unwrap();
            assert!(
                target.contains(&slide_a) || target.contains(&case_a),
                "{target}"
            );
            assert!(!target.contains(&slide_b) && !target.contains(&case_b));
        }
        let nobody = search_by_body(&spoke_admin, json!({"patient_id": "PT-00"})).await;
        assert_eq!(rows_of(&nobody).len(), 0);
        for path in [
            "/api/v1/admin/audit?patient_id=PT-77",
            "/api/v1/admin/audit.csv?patient_id=PT-77",
            "/api/v1/admin/audit/patient?patient_id=PT-77",
        ] {
            let (status, body) = spoke_admin.call(Method::GET, path, None).await;
            assert!(
                status.is_client_error(),
                "{backend:?}: GET {path}: {status} {body}"
            );
        }
        let (_, in_url) = spoke_admin
            .call(Method::GET, "/api/v1/admin/audit?patient_id=PT-77", None)
            .await;
        assert_eq!(
            in_url["error"]["code"], "patient_id_in_url",
            "{backend:?}: {in_url}"
        );
        // The body takes the other filters too, numbers as numbers.
        let same = search_by_body(&spoke_admin, json!({"actor": "path1", "limit": 1})).await;
        assert_eq!(
            rows_of(&same)[0]["seq"],
            rows_of(&by_path1)[0]["seq"],
            "{backend:?}: {same}"
        );
        spoke_admin
            .refused(
                Method::POST,
                "/api/v1/admin/audit/search",
                Some(json!({"patientid": "PT-77"})),
                400,
            )
            .await;

        // Filters combine; an action prefix; time bounds (from included, to excluded).
        let thumbs = search(
            &spoke_admin,
            &format!("slide={slide_a}&action=slide.thumbnail&outcome=ok"),
        )
        .await;
        let thumbs = rows_of(&thumbs);
        assert!(!thumbs.is_empty());
        assert!(thumbs.iter().all(|r| r["action"] == "slide.thumbnail"
            && r["outcome"] == "ok"
            && r["target"] == format!("slide:{slide_a}")));
        let slide_actions = search(&spoke_admin, "actor=path1&action=slide.*").await;
        assert!(
            rows_of(&slide_actions)
                .iter()
                .all(|r| r["action"].as_str().unwrap().starts_with("slide."))
        );
        let t = viewed.at;
        let until = search(&spoke_admin, &format!("actor=path1&to={t}")).await;
        assert!(
            rows_of(&until)
                .iter()
                .all(|r| r["at"].as_i64().unwrap() < t)
        );
        assert!(rows_of(&until).iter().all(|r| r["seq"] != viewed.seq));
        let since = search(&spoke_admin, &format!("actor=path1&from={t}")).await;
        assert!(rows_of(&since).iter().any(|r| r["seq"] == viewed.seq));

        // Pages by sequence number.
        let page1 = search(&spoke_admin, "actor=path1&limit=1").await;
        assert_eq!(rows_of(&page1).len(), 1);
        let next = page1["next_before"].as_i64().unwrap();
        assert_eq!(rows_of(&page1)[0]["seq"], next);
        let page2 = search(&spoke_admin, &format!("actor=path1&limit=1&before={next}")).await;
        assert!(rows_of(&page2)[0]["seq"].as_i64().unwrap() < next);

        // Bad filters are refused with a message; other hospitals' logs and non-admins too.
        for query in ["limit=abc", "outcome=maybe", "slide=a'b", "from=5&to=5"] {
            spoke_admin
                .refused(
                    Method::GET,
                    &format!("/api/v1/admin/audit?{query}"),
                    None,
                    400,
                )
                .await;
        }
        spoke_admin
            .refused(
                Method::GET,
                "/api/v1/admin/audit?hospital=Hub%20H",
                None,
                403,
            )
            .await;
        for path in [
            "/api/v1/admin/audit",
            "/api/v1/admin/audit.csv",
            "/api/v1/admin/audit/verify",
        ] {
            first.refused(Method::GET, path, None, 403).await;
        }
        for path in [
            "/api/v1/admin/audit/search",
            "/api/v1/admin/audit.csv",
            "/api/v1/admin/audit/patient",
        ] {
            first
                .refused(
                    Method::POST,
                    path,
                    Some(json!({"patient_id": "PT-77"})),
                    403,
                )
                .await;
        }

        // The CSV export of the same search, as a spreadsheet opens it.
        let response = client()
            .post(format!("{}/api/v1/admin/audit.csv", server.url))
            .bearer_auth(&spoke_admin.token)
            .json(&json!({"patient_id": "PT-77"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert!(header("content-type").starts_with("text/csv"));
        let disposition = header("content-disposition");
        assert!(
            disposition.starts_with("attachment; filename=\"audit-")
                && disposition.ends_with(".csv\""),
            "{disposition}"
        );
        let bytes = response.bytes().await.unwrap();
        assert_eq!(&bytes[..3], b"\xEF\xBB\xBF", "a byte-order mark for Excel");
        let records = parse_csv(std::str::from_utf8(&bytes[3..]).unwrap());
        assert_eq!(
            records[0],
            [
                "seq",
                "time_utc",
                "actor",
                "hospital_id",
                "action",
                "target",
                "outcome",
                "detail",
                "address"
            ]
        );
        let json_rows = rows_of(&patient);
        assert_eq!(records.len() - 1, json_rows.len(), "{records:?}");
        for (record, row) in records[1..].iter().zip(json_rows) {
            assert_eq!(record[0], row["seq"].as_i64().unwrap().to_string());
            let time = &record[1];
            assert!(
                time.len() == 20 && time.ends_with('Z') && time.contains('T'),
                "{time}"
            );
            assert_eq!(
                *time,
                pathfed_core::audit_checkpoint::iso_time(row["at"].as_i64().unwrap())
            );
            assert_eq!(record[2], row["actor"].as_str().unwrap());
            assert_eq!(record[5], row["target"].as_str().unwrap());
            assert_eq!(record[8], row["address"].as_str().unwrap());
        }

        // The patient's access report: the hub pathologist's view of the slide, from where.
        let report = spoke_admin
            .ok(
                Method::POST,
                "/api/v1/admin/audit/patient",
                Some(json!({"patient_id": "PT-77"})),
            )
            .await;
        assert_eq!(report["cases"], json!([case_a]), "{report}");
        assert_eq!(report["slides"], json!([slide_a]));
        let accesses = report["accesses"].as_array().unwrap();
        assert!(
            accesses.iter().any(|r| r["actor"] == "path1"
                && r["action"] == "slide.view"
                && r["target"] == format!("slide:{slide_a}")
                && r["address"] == "127.0.0.1"),
            "{report}"
        );
        let order: Vec<i64> = accesses
            .iter()
            .map(|r| r["seq"].as_i64().unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "oldest first");
        let by_root = root
            .ok(
                Method::POST,
                "/api/v1/admin/audit/patient",
                Some(json!({"patient_id": "PT-77", "hospital": "Spoke A"})),
            )
            .await;
        assert_eq!(by_root["cases"], json!([case_a]));

        // The chain check.
        let verified = spoke_admin
            .ok(Method::GET, "/api/v1/admin/audit/verify", None)
            .await;
        assert_eq!(verified["intact"], true, "{verified}");
        assert!(verified["rows"].as_u64().unwrap() > 10);

        // The review is itself audited, and the patient's id is written nowhere in the log.
        let rows = all_rows(&db).await;
        for action in [
            "audit.search",
            "audit.export",
            "audit.patient_report",
            "audit.verify",
        ] {
            assert!(
                rows.iter().any(|r| r.event.action == action
                    && r.event.actor == "admin_a"
                    && r.event.outcome == "ok"),
                "{backend:?}: {action} not audited"
            );
        }
        assert!(rows.iter().any(|r| r.event.action == "audit.search"
            && r.event.actor == "path1"
            && r.event.outcome == "denied"));
        for r in &rows {
            let text = format!("{} {} {}", r.event.target, r.event.detail, r.event.action);
            assert!(
                !text.contains("PT-77"),
                "{backend:?}: the patient id in row {}: {text}",
                r.seq
            );
        }

        // An edit shows in the chain check.
        sqlx::query("UPDATE audit_log SET detail = 'edited' WHERE seq = 2")
            .execute(db.pool())
            .await
            .unwrap();
        let broken = root
            .ok(Method::GET, "/api/v1/admin/audit/verify", None)
            .await;
        assert_eq!(broken["intact"], false, "{broken}");
        assert_eq!(broken["problem"]["seq"], 2, "{broken}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn heatmap_views_are_audited() {
    let server = TestServer::start(Backend::Local);
    let staff = staff(&server);
    let platform = server.platform().await;
    register_texture_model(&server, &platform, "res_h").await;
    let operator = server.user("Hub H", "hub", "operator", "platform-admin");
    server.cli_ok(&[
        "model",
        "deploy",
        "textures@1",
        "--server",
        server.url.as_str(),
        "--token",
        operator.as_str(),
    ]);
    let file = mostly_dense(server.dir.path(), "heat.svs", 14);
    let (_case, slide) = submit_case(&server, &staff.spoke.token, &file, "HM-1");
    let ai = format!("/api/v1/slides/{slide}/ai");
    let overview = staff.first.ok(Method::GET, &ai, None).await;
    let job = overview["jobs"][0]["id"].as_str().unwrap().to_string();
    let done = finished_job(&staff.first, &slide, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let overview = staff.first.ok(Method::GET, &ai, None).await;
    let heatmap = overview["results"][0]["heatmap_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(staff.first.raw(&heatmap).await.0.as_u16(), 200);
    assert_eq!(staff.spoke.raw(&heatmap).await.0.as_u16(), 403);

    let rows = all_rows(&server.db().await).await;
    let viewed = rows
        .iter()
        .find(|r| r.event.action == "ai.heatmap" && r.event.outcome == "ok")
        .expect("the heatmap view is audited");
    assert_eq!(viewed.event.actor, "path1");
    assert_eq!(viewed.event.target, format!("slide:{slide}"));
    assert_eq!(viewed.event.detail, "textures@1");
    assert_eq!(viewed.address, "127.0.0.1");
    assert!(rows.iter().any(|r| r.event.action == "ai.heatmap"
        && r.event.actor == "sub_a"
        && r.event.outcome == "denied"));
}
