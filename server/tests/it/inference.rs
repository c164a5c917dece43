//! AI support through the running server, on both backends. The small texture model the
//! learning tests train is registered (its two classes named as the gastric taxonomy's G1 and
//! G3) and deployed for stomach slides; then a spoke submits a case whose slide is mostly the
//! G1 texture and:
//! - the `infer` job runs by itself; the hub hides its result until each pathologist's own
//!   read, then shows the result, its heatmap and overlay tiles that line up with the slide's
//!   tiles at every Deep Zoom level; the referring spoke, researchers and other hospitals see
//!   nothing of them (`clinical.rs` has the full access matrix);
//! - sign-out records the agreement, which the model card then shows, and the research copy
//!   of a discordant slide carries the flag;
//! - bad requests, a missing model and a corrupt slide fail clearly, with no retries where
//!   retrying cannot help, and the server stays up; a queued run can be cancelled;
//! - `pathfed infer` runs a model on the server's slide and offline on a local slide;
//! - deleting a hub's own slide (AI support on it is for that hub's pathologists) stops its
//!   runs and removes its results.
//!
//! DICOM: the case's slide is a DICOM series (the generated slide converted by wsidicomizer at
//! test time, uploaded as a zip), so the `infer` job, its heatmap and overlay tiles, the Deep
//! Zoom tiles they line up with, curation at sign-out and the offline CLI (on the folder of
//! instances) all run on a DICOM slide; the slide deleted at the end is an SVS.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pathfed_core::jobs::kinds::{Infer, InferPayload, JobKind as _};
use pathfed_core::jobs::{Jobs, NewJob};
use pathfed_core::store::list_keys;
use pathfed_models::registry::{InferenceConfig, Registration, register};
use pathfed_training::synthetic::texture_model;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::dicom::dicom_zip;
use crate::support::people::{read, staff, wait_for};
use crate::support::{As, BACKENDS, TestServer, bin, one_at_a_time, submit_case};

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/texture-model")
}

/// Registers the trained texture model as the next version of `textures` in the gastric
/// taxonomy (dense nuclei as GAS-G1, the positive class; stroma as GAS-G3) and returns its
/// folder of files. `platform` is opened once, before the server caches slides (opening one
/// empties the slide cache folder).
pub(crate) async fn register_texture_model(
    server: &TestServer,
    platform: &pathfed_core::Platform,
    researcher: &str,
) -> PathBuf {
    let files = one_at_a_time(texture_model(&model_dir())).await.unwrap();
    let mut config: InferenceConfig = serde_json::from_slice(&files.config).unwrap();
    assert_eq!(config.classes, ["TEX-DENSE", "TEX-STROMA"]);
    config.classes = vec!["GAS-G1".into(), "GAS-G3".into()];
    config.positive = "GAS-G1".into();
    let user: String = sqlx::query("SELECT id FROM users WHERE username = $1")
        .bind(researcher)
        .fetch_one(platform.db.pool())
        .await
        .unwrap()
        .get("id");
    let card = json!({
        "notice": "Decision support only.",
        "intended_use": "Test model: tells dense nuclei from stroma.",
        "limitations": ["Generated textures only."],
        "training_data": { "dataset": "textures", "version": 1, "taxonomy": "gastric-group",
            "patients": 24, "research_hospitals": 1 },
    });
    register(
        platform,
        Registration {
            name: "textures".into(),
            run_id: "test".into(),
            architecture: "resnet-small".into(),
            dataset: "textures".into(),
            dataset_version: 1,
            dataset_hash: "generated".into(),
            taxonomy: "gastric-group".into(),
            organ: Some("stomach".into()),
            config: config.clone(),
            code_version: "test".into(),
            // The texture model tells its two textures apart (the learning tests train it so);
            // its entry says so, so the platform admin deploys it without a reason.
            summary: json!({"balanced_accuracy": {"value": 0.95, "low": 0.9, "high": 1.0}}),
            created_by: user,
            files: vec![
                ("model.bpk".into(), files.weights.clone()),
                ("card.json".into(), serde_json::to_vec(&card).unwrap()),
            ],
        },
    )
    .await
    .unwrap();
    // The same model as a folder, for offline runs.
    let folder = server.dir.path().join("textures-model");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("model.bpk"), &files.weights).unwrap();
    std::fs::write(
        folder.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    folder
}

/// A 4096 × 2048 slide at 0.5 µm/px: three middle bands of dense nuclei between two of
/// stroma (tissue lies mostly in the middle, so dense nuclei hold the majority).
pub(crate) fn mostly_dense(dir: &Path, name: &str, seed: u32) -> PathBuf {
    let out = dir.join(name);
    let status = std::process::Command::new(bin())
        .args(["slide", "synth", "--out"])
        .arg(&out)
        .args(["--width", "4096", "--height", "2048", "--mpp", "0.5"])
        .args([
            "--classes",
            "stroma,nucleus-dense,nucleus-dense,nucleus-dense,stroma",
        ])
        .args([
            "--layout",
            "columns",
            "--tissue-fraction",
            "0.6",
            "--seed",
            &seed.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// The infer job `job` of `slide` once it has ended, as `user`'s AI overview lists it.
pub(crate) async fn finished_job(user: &As<'_>, slide: &str, job: &str) -> Value {
    wait_for(
        "the infer job to finish",
        Duration::from_secs(300),
        || async {
            let overview = user
                .ok(Method::GET, &format!("/api/v1/slides/{slide}/ai"), None)
                .await;
            overview["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| {
                    j["id"] == job && !matches!(j["status"].as_str(), Some("queued" | "running"))
                })
                .cloned()
        },
    )
    .await
}

fn dims(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory(bytes).unwrap();
    (image.width(), image.height())
}

fn dzi_size(xml: &str) -> (String, String) {
    let attr = |name: &str| {
        let start = xml.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        xml[start..start + xml[start..].find('"').unwrap()].to_string()
    };
    (
        attr("Width"),
        format!("{}/{}", attr("TileSize"), attr("Overlap")),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn ai_support_from_deployment_to_feedback() {
    // The case's slide, as a zipped DICOM series written once for both backends.
    let fixtures = tempfile::tempdir().unwrap();
    let svs = mostly_dense(fixtures.path(), "ai.svs", 12);
    let (dicom, file) = dicom_zip(&svs, fixtures.path(), "ai-dicom");
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let staff = staff(&server);
        let outsider = As {
            server: &server,
            token: server.user("Hub X", "hub", "path_x", "pathologist"),
        };
        let platform = server.platform().await;
        let folder = register_texture_model(&server, &platform, "res_h").await;
        let with_server = |token: &str, args: &[&str]| {
            let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            all.extend([
                "--server".into(),
                server.url.clone(),
                "--token".into(),
                token.into(),
            ]);
            server.cli_ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
        };
        // Deploying is the platform admin's call, not the researcher's (`roles.rs`).
        let operator = server.user("Hub H", "hub", "operator", "platform-admin");
        let out = with_server(&operator, &["model", "deploy", "textures@1"]);
        assert!(
            out.contains("deployed for stomach slides in gastric-group"),
            "{out}"
        );
        server.cli_ok(&["admin", "hospital", "ai-after-first-read", "Hub H", "on"]);

        // The spoke submits a case; its slide gets the deployed model's run by itself. The run
        // is for the hub: the spoke is refused it (`clinical.rs` has every endpoint).
        let (case, slide) = submit_case(&server, &staff.spoke.token, &file, "AI-1");
        let shown = staff
            .spoke
            .ok(Method::GET, &format!("/api/v1/slides/{slide}"), None)
            .await;
        assert_eq!(shown["format"], "dicom", "{backend:?}: {shown}");
        let ai = format!("/api/v1/slides/{slide}/ai");
        staff.spoke.refused(Method::GET, &ai, None, 403).await;
        let first = &staff.first;
        let overview = first.ok(Method::GET, &ai, None).await;
        assert_eq!(overview["deployed"]["model"], "textures", "{overview}");
        let job = overview["jobs"][0]["id"].as_str().unwrap().to_string();
        let done = finished_job(first, &slide, &job).await;
        assert_eq!(done["status"], "succeeded", "{done}");

        // The hub's pathologists see results only after their own read.
        let result_url = format!("{ai}/textures/1");
        let tiles = format!("{result_url}/overlay_files");
        let top = (4096f64.log2().ceil()) as usize;
        let hidden = first.ok(Method::GET, &ai, None).await;
        assert_eq!(hidden["hidden"], true, "{hidden}");
        assert_eq!(hidden["results"], json!([]));
        assert!(hidden["jobs"][0].get("result").is_none());
        let message = first.refused(Method::GET, &result_url, None, 403).await;
        assert!(message.contains("your own read"), "{message}");
        first
            .refused(Method::GET, &format!("{tiles}/{top}/0_0.png"), None, 403)
            .await;
        let path = format!("/api/v1/cases/{case}");
        first.ok(Method::POST, &format!("{path}/claim"), None).await;
        first
            .ok(
                Method::PUT,
                &format!("{path}/reads/primary"),
                Some(read("GAS-G3", &slide)),
            )
            .await;
        let overview = first.ok(Method::GET, &ai, None).await;
        assert_eq!(overview["hidden"], false, "{overview}");
        let summary = &overview["results"][0];
        assert_eq!(summary["predicted"], "GAS-G1", "{overview}");
        assert_eq!(summary["result_url"], result_url.as_str());
        assert!(summary["score"].as_f64().unwrap() > 0.5, "{summary}");
        assert!(
            overview["notice"]
                .as_str()
                .unwrap()
                .starts_with("Decision support only")
        );
        let result = first.ok(Method::GET, &result_url, None).await;
        assert!(
            result["top_regions"].as_array().unwrap().len() >= 3,
            "{result}"
        );
        let (status, png) = first.raw(summary["heatmap_url"].as_str().unwrap()).await;
        assert_eq!(status.as_u16(), 200);
        assert!(dims(&png).0 > 0);

        // Overlay tiles have the slide's geometry: same descriptor, same tile sizes everywhere.
        let overlay = summary["overlay_url"].as_str().unwrap().to_string();
        let (_, slide_dzi) = first
            .raw(&format!("/api/v1/slides/{slide}/slide.dzi"))
            .await;
        let (_, overlay_dzi) = first.raw(&overlay).await;
        let (slide_dzi, overlay_dzi) = (
            String::from_utf8(slide_dzi).unwrap(),
            String::from_utf8(overlay_dzi).unwrap(),
        );
        assert_eq!(dzi_size(&slide_dzi), dzi_size(&overlay_dzi));
        assert!(overlay_dzi.contains("Format=\"png\""), "{overlay_dzi}");
        let (overlay_path, run) = overlay.split_once('?').unwrap();
        assert!(run.starts_with("run="), "{overlay}");
        assert_eq!(overlay_path.replace("overlay.dzi", "overlay_files"), tiles);
        for level in 0..=top {
            let (status, slide_tile) = first
                .raw(&format!(
                    "/api/v1/slides/{slide}/slide_files/{level}/0_0.jpeg"
                ))
                .await;
            assert_eq!(status.as_u16(), 200, "slide tile at level {level}");
            let (status, overlay_tile) = first.raw(&format!("{tiles}/{level}/0_0.png")).await;
            assert_eq!(status.as_u16(), 200, "overlay tile at level {level}");
            assert_eq!(dims(&slide_tile), dims(&overlay_tile), "level {level}");
        }
        let (status, _) = first.raw(&format!("{tiles}/{top}/999_0.png")).await;
        assert_eq!(status.as_u16(), 404);

        // Access: researchers and other hospitals see none of it, nor does the spoke now that
        // there is a result.
        staff.researcher.refused(Method::GET, &ai, None, 403).await;
        staff
            .researcher
            .refused(Method::GET, &format!("{tiles}/{top}/0_0.png"), None, 403)
            .await;
        outsider.refused(Method::GET, &ai, None, 404).await;
        outsider.refused(Method::GET, &result_url, None, 404).await;
        outsider
            .refused(Method::POST, &ai, Some(json!({})), 404)
            .await;
        staff
            .spoke
            .refused(Method::GET, &result_url, None, 403)
            .await;

        // The second reader sees them only after their own read too.
        let second = &staff.second;
        second
            .ok(Method::POST, &format!("{path}/double-check"), None)
            .await;
        assert_eq!(second.ok(Method::GET, &ai, None).await["hidden"], true);
        second
            .ok(
                Method::PUT,
                &format!("{path}/reads/second"),
                Some(read("GAS-G3", &slide)),
            )
            .await;
        assert_eq!(second.ok(Method::GET, &ai, None).await["hidden"], false);

        // Sign-out records the (dis)agreement; the card shows it; the research copy is flagged.
        first
            .ok(Method::POST, &format!("{path}/sign-out"), None)
            .await;
        let card = staff
            .researcher
            .ok(Method::GET, "/api/v1/models/textures/versions/1/card", None)
            .await;
        let c = &card["concordance"];
        assert_eq!(
            (c["slides"].as_i64(), c["comparable"].as_i64()),
            (Some(1), Some(1)),
            "{c}"
        );
        assert_eq!(
            (c["agreements"].as_i64(), c["discordant"].as_i64()),
            (Some(0), Some(1)),
            "{c}"
        );
        assert_eq!(
            (c["fp"].as_i64(), c["specificity"].as_f64()),
            (Some(1), Some(0.0)),
            "{c}"
        );
        // Pathologists follow the panel's link to the same card.
        let seen = first
            .ok(Method::GET, "/api/v1/models/textures/versions/1/card", None)
            .await;
        assert_eq!(seen["concordance"], card["concordance"]);
        let db = server.db().await;
        let flagged: Option<String> =
            wait_for("the research copy", Duration::from_secs(120), || {
                let db = db.clone();
                async move {
                    sqlx::query("SELECT ai_discordant FROM research_slides")
                        .fetch_optional(db.pool())
                        .await
                        .unwrap()
                        .map(|r| r.get::<Option<String>, _>("ai_discordant"))
                }
            })
            .await;
        let flagged: Value = serde_json::from_str(&flagged.unwrap()).unwrap();
        assert_eq!(
            flagged,
            json!([{"model": "textures", "version": 1, "predicted": "GAS-G1"}])
        );

        // Requests that cannot work are refused with a reason, and nothing is queued.
        let before = Jobs::new(db.clone())
            .list(Some(Infer::NAME), 100)
            .await
            .unwrap()
            .len();
        let m = first
            .refused(Method::POST, &ai, Some(json!({"model": "ghost@1"})), 404)
            .await;
        assert!(m.contains("ghost@1"), "{m}");
        let m = first
            .refused(Method::POST, &ai, Some(json!({"model": "textures"})), 400)
            .await;
        assert!(m.contains("NAME@VERSION"), "{m}");
        first
            .refused(Method::POST, &ai, Some(json!({"modle": "textures@1"})), 422)
            .await;
        let after = Jobs::new(db.clone())
            .list(Some(Infer::NAME), 100)
            .await
            .unwrap()
            .len();
        assert_eq!(before, after);

        // A job for a model that is not there fails at once with the reason; no retries.
        let ghost = Jobs::new(db.clone())
            .enqueue(NewJob::of::<Infer>(&InferPayload {
                slide_id: slide.clone(),
                model: "ghost".into(),
                version: 1,
            }))
            .await
            .unwrap();
        let failed = finished_job(first, &slide, &ghost.id).await;
        assert_eq!(failed["status"], "failed", "{failed}");
        assert!(
            failed["error"]
                .as_str()
                .unwrap()
                .contains("model ghost@1 not found"),
            "{failed}"
        );
        assert_eq!(failed["attempts"], 1);

        // One run of a version at a time: asking again while it is queued or running answers
        // with the same job. A run queued behind another's can be cancelled.
        register_texture_model(&server, &platform, "res_h").await;
        let running = first
            .ok(Method::POST, &ai, Some(json!({"model": "textures@2"})))
            .await;
        let again = first
            .ok(Method::POST, &ai, Some(json!({"model": "textures@2"})))
            .await;
        assert_eq!(again["id"], running["id"], "{again}");
        let queued = first
            .ok(Method::POST, &ai, Some(json!({"model": "textures@1"})))
            .await;
        assert_ne!(queued["id"], running["id"]);
        let cancelled = first
            .ok(
                Method::POST,
                &format!("{ai}/jobs/{}/cancel", queued["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        let rerun = finished_job(first, &slide, running["id"].as_str().unwrap()).await;
        assert_eq!(rerun["status"], "succeeded", "{rerun}");

        // A slide whose bytes went bad on disk fails with the reader's error, once. Every
        // process (the server, its inference worker) has its own cached copy of the level-0
        // instance, which the slide is opened from: all go bad.
        let main = dicom.main_name();
        let cached = find_files(&server.dir.path().join("data/cache"), &main);
        assert!(!cached.is_empty(), "{main} not in the slide cache");
        let bytes = std::fs::read(&cached[0]).unwrap();
        for copy in &cached {
            std::fs::write(copy, &bytes[..bytes.len() / 3]).unwrap();
        }
        let bad = first.ok(Method::POST, &ai, Some(json!({}))).await;
        let bad = finished_job(first, &slide, bad["id"].as_str().unwrap()).await;
        assert_eq!(bad["status"], "failed", "{bad}");
        assert!(
            bad["error"].as_str().unwrap().contains("reading the slide"),
            "{bad}"
        );
        assert_eq!(bad["attempts"], 1);
        let (status, _) = staff.spoke.call(Method::GET, "/healthz", None).await;
        assert_eq!(status.as_u16(), 200);

        // The CLI: on the server's slide, and offline on a local DICOM slide (its folder of
        // instances).
        for copy in &cached {
            std::fs::write(copy, &bytes).unwrap();
        }
        let out = with_server(&first.token, &["infer", &slide, "--model", "textures@1"]);
        assert!(out.contains("textures@1: GAS-G1 score"), "{out}");
        assert!(out.contains("Decision support only"), "{out}");
        let offline = server.dir.path().join("offline");
        let local = dicom.folder.to_str().unwrap();
        let out = server.cli_ok(&[
            "infer",
            local,
            "--model",
            folder.to_str().unwrap(),
            "--out",
            offline.to_str().unwrap(),
        ]);
        assert!(out.contains("GAS-G1 score"), "{out}");
        let written: Value =
            serde_json::from_slice(&std::fs::read(offline.join("result.json")).unwrap()).unwrap();
        assert_eq!(written["predicted"], "GAS-G1");
        assert!(offline.join("heatmap.png").exists());
        let refused = server.cli(&["infer", local, "--out", offline.to_str().unwrap()]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--model"));

        // Deleting a slide stops its runs still queued or running and removes its results. The
        // slide is the hub's own, in no case: AI support on it is for the hub's pathologists,
        // and deleting it for its submitters. It is an SVS, as uploads of one file are.
        let hub_submitter = As {
            server: &server,
            token: server.user("Hub H", "hub", "sub_h", "submitter"),
        };
        let loose = mostly_dense(server.dir.path(), "loose.svs", 13);
        let state = server.dir.path().join("loose-upload.json");
        let out = with_server(
            &first.token,
            &[
                "upload",
                loose.to_str().unwrap(),
                "--state-file",
                state.to_str().unwrap(),
            ],
        );
        let loose_id = out
            .lines()
            .find_map(|l| l.split("\tslide ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no slide id in {out:?}"))
            .to_string();
        let loose_ai = format!("/api/v1/slides/{loose_id}/ai");
        let ask = Some(json!({"model": "textures@1"}));
        let first_run = first.ok(Method::POST, &loose_ai, ask.clone()).await;
        let first_run = finished_job(first, &loose_id, first_run["id"].as_str().unwrap()).await;
        assert_eq!(first_run["status"], "succeeded", "{first_run}");
        let prefix = format!("inference/{loose_id}");
        let store = server.store();
        assert!(!list_keys(&store, &prefix).await.unwrap().is_empty());
        hub_submitter
            .refused(Method::GET, &loose_ai, None, 403)
            .await;
        let pending = first.ok(Method::POST, &loose_ai, ask).await;
        let (status, _) = hub_submitter
            .call(Method::DELETE, &format!("/api/v1/slides/{loose_id}"), None)
            .await;
        assert!(status.is_success(), "deleting the slide: {status}");
        let pending_id = pending["id"].as_str().unwrap().to_string();
        let job_state = || async {
            let row = sqlx::query("SELECT status, cancel_requested FROM jobs WHERE id = $1")
                .bind(&pending_id)
                .fetch_one(db.pool())
                .await
                .unwrap();
            (
                row.get::<String, _>("status"),
                row.get::<i64, _>("cancel_requested"),
            )
        };
        // Unless the run had ended before the slide went, it is told to stop.
        let (job_status, cancel_requested) = job_state().await;
        assert!(
            !matches!(job_status.as_str(), "queued" | "running") || cancel_requested == 1,
            "the pending run is {job_status} without a cancel request"
        );
        // Once it has stopped (a run that got as far as storing finds no slide), nothing is left.
        wait_for(
            "the pending run to end",
            Duration::from_secs(120),
            || async {
                let (status, _) = job_state().await;
                (!matches!(status.as_str(), "queued" | "running")).then_some(())
            },
        )
        .await;
        let listed: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM inference_results WHERE slide_id = $1")
                .bind(&loose_id)
                .fetch_one(db.pool())
                .await
                .unwrap()
                .get("n");
        assert_eq!(listed, 0);
        assert_eq!(
            list_keys(&store, &prefix).await.unwrap(),
            Vec::<String>::new()
        );
        first.refused(Method::GET, &loose_ai, None, 404).await;
    }
}

/// Every file called `name` under `dir`.
fn find_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(find_files(&path, name));
        } else if path.file_name().is_some_and(|n| n == name) {
            found.push(path);
        }
    }
    found
}
