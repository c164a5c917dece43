//! The research tier through the running server, on both backends: signing a case out curates
//! its slide into a research slide with no trace of the canaries planted in the original; an
//! opt-out recorded before sign-out stops curation and one recorded after deletes the research
//! slide, with audit entries; only the patient's hospital may record one.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pathfed_core::audit::recent;
use pathfed_core::store::get_bytes;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use support::{As, BACKENDS, TestServer, bin, submit_case};

const CANARY: &str = "CANARY";

/// A generated SVS with canaries in its description fields, label, barcode, JPEG segments and
/// an orphan directory.
fn canary_slide(dir: &Path, name: &str, seed: u32) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new(bin())
        .args([
            "slide", "synth", "--width", "2400", "--height", "1800", "--seed",
        ])
        .arg(seed.to_string())
        .args([
            "--meta",
            "Filename=CANARY-FILENAME-01",
            "--meta",
            "User=CANARY-USER-02",
        ])
        .args([
            "--meta",
            "Date=CANARY-DATE-03",
            "--label-line",
            "CANARY-LABEL-04",
        ])
        .args([
            "--barcode",
            "CANARY-BARCODE-05",
            "--hidden-text",
            "CANARY-HIDDEN-06",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(contains(&std::fs::read(&out).unwrap(), CANARY));
    out
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn read(code: &str, slide: &str) -> Value {
    json!({
        "code": code,
        "findings": "Tubular adenoma, low grade",
        "slides": [{ "slide_id": slide, "code": code, "findings": "" }],
    })
}

/// First read, concordant blind double-check, sign-out.
async fn sign_out(first: &As<'_>, second: &As<'_>, case: &str, slide: &str) {
    let path = format!("/api/v1/cases/{case}");
    first.ok(Method::POST, &format!("{path}/claim"), None).await;
    first
        .ok(
            Method::PUT,
            &format!("{path}/reads/primary"),
            Some(read("GAS-G3", slide)),
        )
        .await;
    second
        .ok(Method::POST, &format!("{path}/double-check"), None)
        .await;
    second
        .ok(
            Method::PUT,
            &format!("{path}/reads/second"),
            Some(read("GAS-G3", slide)),
        )
        .await;
    first
        .ok(Method::POST, &format!("{path}/sign-out"), None)
        .await;
}

/// Polls `probe` until it gives a value or `timeout` passes.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_out_curates_without_canaries_and_opt_outs_remove_research_data() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let spoke = who("Spoke A", "spoke", "sub_a", "submitter");
        let first = who("Hub H", "hub", "path1", "pathologist");
        let second = who("Hub H", "hub", "path2", "pathologist");
        let researcher = who("Hub H", "hub", "res_h", "researcher");
        server.cli_ok(&["admin", "hospital", "default-hub", "Spoke A", "Hub H"]);
        let db = server.db().await;
        let store = server.store();

        // Sign-out → a curated research slide, free of every canary.
        let file = canary_slide(server.dir.path(), "canary.svs", 21);
        let (case, slide) = submit_case(&server, &spoke.token, &file, "MRN-1001");
        sign_out(&first, &second, &case, &slide).await;
        let research = wait_for("the research slide", Duration::from_secs(90), || {
            let db = db.clone();
            async move {
                sqlx::query(
                    "SELECT id, object_key, label_code, sha256, width, height FROM research_slides",
                )
                .fetch_optional(db.pool())
                .await
                .unwrap()
            }
        })
        .await;
        let id: String = research.get("id");
        let key: String = research.get("object_key");
        assert!(
            id.starts_with("rs-") && !id.contains(&slide),
            "{backend:?}: pseudonym {id}"
        );
        assert_eq!(research.get::<String, _>("label_code"), "GAS-G3");
        assert_eq!(
            (
                research.get::<i64, _>("width"),
                research.get::<i64, _>("height")
            ),
            (2400, 1800)
        );
        let bytes = get_bytes(&store, &key).await.unwrap();
        assert!(
            !contains(&bytes, CANARY),
            "{backend:?}: a canary reached the research tier"
        );
        assert!(
            !contains(&bytes, &slide) && !contains(&bytes, &case) && !contains(&bytes, "MRN-1001")
        );
        assert_eq!(
            support::sha256_hex(&bytes),
            research.get::<String, _>("sha256")
        );
        let local = server.dir.path().join("research.tiff");
        std::fs::write(&local, &bytes).unwrap();
        let info: Value = serde_json::from_str(&server.cli_ok(&[
            "slide",
            "info",
            "--json",
            local.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(info["associated_images"], json!([]), "{info}");
        assert!(
            (info["mpp_x"].as_f64().unwrap() - 0.499).abs() < 1e-3,
            "{info}"
        );

        // Only the patient's hospital records an opt-out.
        let body = json!({ "patient_id": "MRN-1001" });
        researcher
            .refused(Method::POST, "/api/v1/opt-outs", Some(body.clone()), 403)
            .await;
        first
            .refused(Method::POST, "/api/v1/opt-outs", Some(body.clone()), 403)
            .await;
        spoke
            .refused(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": " " })),
                400,
            )
            .await;

        // Opt-out after curation: the research slide goes, a tombstone and audit entry stay.
        let (status, recorded) = spoke
            .call(Method::POST, "/api/v1/opt-outs", Some(body.clone()))
            .await;
        assert_eq!(status.as_u16(), 201, "{recorded}");
        let (status, _) = spoke
            .call(Method::POST, "/api/v1/opt-outs", Some(body))
            .await;
        assert_eq!(status.as_u16(), 200, "recording twice is harmless");
        wait_for("the tombstone", Duration::from_secs(60), || {
            let (db, id) = (db.clone(), id.clone());
            async move {
                sqlx::query("SELECT deleted_reason FROM research_slides WHERE id = $1 AND deleted_at IS NOT NULL")
                    .bind(id)
                    .fetch_optional(db.pool())
                    .await
                    .unwrap()
            }
        })
        .await;
        assert!(
            get_bytes(&store, &key).await.is_err(),
            "{backend:?}: the research object is gone"
        );
        let audit = recent(&db, 500).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "patient.opt_out" && e.event.outcome == "ok")
        );
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "research_slide.delete"
                    && e.event.target == format!("research_slide:{id}"))
        );
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "patient.opt_out" && e.event.outcome == "denied")
        );

        // Opt-out before sign-out: nothing is curated for that patient.
        spoke
            .ok(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "MRN-1002" })),
            )
            .await;
        let file = canary_slide(server.dir.path(), "second.svs", 22);
        let (case2, slide2) = submit_case(&server, &spoke.token, &file, "MRN-1002");
        sign_out(&first, &second, &case2, &slide2).await;
        // A third patient's case, signed out after, proves the worker is running meanwhile.
        let file = canary_slide(server.dir.path(), "third.svs", 23);
        let (case3, slide3) = submit_case(&server, &spoke.token, &file, "MRN-1003");
        sign_out(&first, &second, &case3, &slide3).await;
        wait_for(
            "the third patient's research slide",
            Duration::from_secs(90),
            || {
                let db = db.clone();
                async move {
                    let n: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM research_slides WHERE deleted_at IS NULL",
                    )
                    .fetch_one(db.pool())
                    .await
                    .unwrap()
                    .get("n");
                    (n == 1).then_some(())
                }
            },
        )
        .await;
        let curate_jobs: Vec<String> =
            sqlx::query("SELECT payload FROM jobs WHERE kind = 'curate'")
                .fetch_all(db.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get("payload"))
                .collect();
        assert!(
            curate_jobs.iter().all(|p| !p.contains(&slide2)),
            "{backend:?}: opted-out slide enqueued"
        );
        assert_eq!(curate_jobs.len(), 2);
    }
}
