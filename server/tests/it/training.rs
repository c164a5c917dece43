//! Training through the running server, on both backends: signed-out cases become a dataset
//! version with patches; `pathfed train` runs it as a job and follows it; the run's curves,
//! the registered model (weights, config, card, metrics, plots) and its deployment are what a
//! researcher reads; the deployed model reloads and predicts what the run evaluated; a run
//! cancelled mid-way resumes from its checkpoint; bad requests are refused with nothing
//! registered; clinical staff see none of it.
//!
//! DICOM: one patient's slide is a DICOM series (the generated SVS converted by wsidicomizer at
//! test time, uploaded as a zip), so a DICOM slide goes through the whole flow: its Deep Zoom
//! tiles are served, its case is read, double-checked and signed out, curation re-encodes it
//! into a research slide, and the dataset version the runs train and evaluate on holds its
//! patches.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::time::Duration;

use pathfed_core::store::{get_bytes, list_keys};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::dicom::dicom_zip;
use crate::support::people::{Staff, sign_out_with, staff, wait_for};
use crate::support::{self, As, BACKENDS, TestServer, submit_case};

/// Six patients, three per diagnosis, so a 1:1:1 split per diagnosis fills every split.
const CODES: [&str; 6] = ["GAS-G1", "GAS-G3", "GAS-G1", "GAS-G3", "GAS-G1", "GAS-G3"];
/// The patient whose slide is uploaded as DICOM (a zip of its series).
const DICOM_PATIENT: usize = 0;

/// The viewer's view of a DICOM slide: registered as `dicom`, its Deep Zoom descriptor and a
/// full-resolution tile served.
async fn dicom_slide_is_viewable(owner: &As<'_>, slide: &str) {
    let shown = owner
        .ok(Method::GET, &format!("/api/v1/slides/{slide}"), None)
        .await;
    assert_eq!(shown["format"], "dicom", "{shown}");
    let (status, dzi) = owner
        .raw(&format!("/api/v1/slides/{slide}/slide.dzi"))
        .await;
    assert_eq!(status.as_u16(), 200);
    let dzi = String::from_utf8(dzi).unwrap();
    assert!(dzi.contains("Width=\"2400\""), "{dzi}");
    // 2400 px wide: Deep Zoom level 12 is full resolution.
    let (status, tile) = owner
        .raw(&format!("/api/v1/slides/{slide}/slide_files/12/0_0.jpeg"))
        .await;
    assert_eq!(status.as_u16(), 200);
    let tile = image::load_from_memory_with_format(&tile, image::ImageFormat::Jpeg).unwrap();
    assert!(tile.width() > 0 && tile.height() > 0);
}

async fn count(db: &pathfed_core::Db, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(db.pool())
    .await
    .unwrap()
    .get("n")
}

#[tokio::test(flavor = "multi_thread")]
async fn train_register_deploy_reload_cancel_and_resume() {
    // The slides, written once for both backends; one of them as a zipped DICOM series.
    let fixtures = tempfile::tempdir().unwrap();
    let files: Vec<std::path::PathBuf> = (0..CODES.len())
        .map(|i| {
            let svs = support::synth_slide(
                fixtures.path(),
                &format!("t{i}.svs"),
                2400,
                1800,
                60 + i as u32,
            );
            if i == DICOM_PATIENT {
                dicom_zip(&svs, fixtures.path(), &format!("t{i}-dicom")).1
            } else {
                svs
            }
        })
        .collect();
    for backend in BACKENDS {
        // A tiny platform: its operator lowers the small-cell floor to 1.
        let server = TestServer::start_with(backend, &[("PATHFED_RESEARCH_MIN_CELL_SIZE", "1")]);
        let staff = staff(&server);
        let researcher = &staff.researcher;
        // Researchers train and register; the platform admin deploys and retires.
        let operator = As {
            server: &server,
            token: server.user("Hub H", "hub", "operator", "platform-admin"),
        };
        let db = server.db().await;
        for (i, code) in CODES.iter().enumerate() {
            let (case, slide) =
                submit_case(&server, &staff.spoke.token, &files[i], &format!("T-{i}"));
            if i == DICOM_PATIENT {
                dicom_slide_is_viewable(&staff.spoke, &slide).await;
            }
            sign_out_with(&staff.first, &staff.second, &case, &slide, code).await;
        }
        wait_for("six research slides", Duration::from_secs(180), || {
            let db = db.clone();
            async move {
                let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM research_slides")
                    .fetch_one(db.pool())
                    .await
                    .unwrap()
                    .get("n");
                (n == 6).then_some(())
            }
        })
        .await;
        let token = researcher.token.clone();
        let with_server = |args: &[&str]| {
            let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            all.extend([
                "--server".into(),
                server.url.clone(),
                "--token".into(),
                token.clone(),
            ]);
            all
        };
        let cli_ok = |args: &[&str]| {
            let all = with_server(args);
            server.cli_ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
        };
        cli_ok(&[
            "dataset",
            "create",
            "stomach",
            "--labels",
            "gastric-group",
            "--filter",
            "organ=stomach",
            "--min-cell-size",
            "1",
            "--split",
            "0.34,0.33,0.33",
            "--patch-size",
            "64",
            "--patch-mpp",
            "2",
        ]);
        // The DICOM slide's research copy (re-encoded: curation writes canonical TIFFs only)
        // is in the version with patches of its own.
        let dicom: Vec<String> =
            sqlx::query("SELECT id FROM research_slides WHERE vendor = $1 AND pixel_path = $2")
                .bind("dicom")
                .bind("re-encoded")
                .fetch_all(db.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| r.get("id"))
                .collect();
        assert_eq!(dicom.len(), 1, "{backend:?}: {dicom:?}");
        let version = researcher
            .ok(Method::GET, "/api/v1/datasets/stomach/versions/1", None)
            .await;
        let qc = &version["content"]["extraction"]["slides"][&dicom[0]]["qc"];
        assert!(
            qc["patches"].as_u64().is_some_and(|n| n > 0),
            "{backend:?}: no patches of the DICOM slide: {version}"
        );

        // Pretrained weights as an administrator would place them (written by numpy, named as
        // torchvision names them): one with a 1000-class head, one with a wrong kernel.
        let pretrained = server.dir.path().join("data/pretrained");
        std::fs::create_dir_all(&pretrained).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = support::tools_python();
        // Small ViTs in timm's layout beside them, each described by its NAME.json.
        for script in ["resnet_weights.py", "vit_weights.py"] {
            let written = std::process::Command::new(&python)
                .arg(root.join("models/tests/python").join(script))
                .arg(&pretrained)
                .output()
                .expect("the Python interpreter of scripts/setup.sh");
            assert!(
                written.status.success(),
                "{script} (run scripts/setup.sh): {}",
                String::from_utf8_lossy(&written.stderr)
            );
        }
        // The version's 64 px patches at 2 µm/px reach these ViTs' 32 and 24 px inputs at 4 and
        // 5.33 µm/px: their descriptions say so, as a researcher's would for such a model.
        for (name, mpp) in [("vit_gelu", 4.0), ("vit_reg_prefix", 64.0 * 2.0 / 24.0)] {
            let file = pretrained.join(format!("{name}.json"));
            let mut spec: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            spec["preprocess"]["mpp"] = json!(mpp);
            std::fs::write(&file, spec.to_string()).unwrap();
        }
        embeddings_are_stored_reused_and_refused_clearly(&server, researcher, &staff, &cli_ok)
            .await;

        // Refused before anything is queued: nothing in the runs table or the registry.
        let start = |body: Value| async move {
            researcher
                .call(Method::POST, "/api/v1/training/runs", Some(body))
                .await
        };
        let (status, body) = start(json!({"dataset": "stomach@9", "model": "resnet-small"})).await;
        assert_eq!(status.as_u16(), 404, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("stomach@9"),
            "{body}"
        );
        let (status, body) =
            start(json!({"dataset": "stomach@1", "model": "resnet-small", "batch": 4000})).await;
        assert_eq!(status.as_u16(), 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("larger than the train split"),
            "{body}"
        );
        let (status, body) =
            start(json!({"dataset": "stomach@1", "model": "resnet-small", "device": "cuda"})).await;
        assert_eq!(status.as_u16(), 400, "{body}");
        assert_eq!(body["error"]["code"], "device_unavailable", "{body}");
        let (status, body) = start(json!({"dataset": "stomach@1", "model": "vgg"})).await;
        assert_eq!(status.as_u16(), 400, "{body}");
        let (status, body) = start(json!({
            "dataset": "stomach@1", "model": "resnet-small", "batch": 16, "pretrained": "wrong_conv.safetensors",
        }))
        .await;
        assert_eq!(status.as_u16(), 400, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("layer3.0.conv2.weight"),
            "{body}"
        );
        let (status, body) = start(json!({
            "dataset": "stomach@1", "model": "resnet-small", "batch": 16, "pretrained": "../pathfed.db",
        }))
        .await;
        assert_eq!(status.as_u16(), 400, "{body}");
        let (status, body) = start(json!({
            "dataset": "stomach@1", "model": "resnet-small", "batch": 16, "pretrained": "absent.safetensors",
        }))
        .await;
        assert_eq!(status.as_u16(), 404, "{body}");
        let (status, body) = staff
            .first
            .call(
                Method::POST,
                "/api/v1/training/runs",
                Some(json!({"dataset": "stomach@1"})),
            )
            .await;
        assert_eq!(status.as_u16(), 403, "{body}");
        assert_eq!(count(&db, "training_runs").await, 0, "{backend:?}");
        assert_eq!(count(&db, "models").await, 0, "{backend:?}");
        let (status, _) = staff.first.call(Method::GET, "/api/v1/models", None).await;
        assert_eq!(status.as_u16(), 403);

        // A run from the CLI, followed to the end.
        let out = cli_ok(&[
            "train",
            "--dataset",
            "stomach@1",
            "--model",
            "resnet-small",
            "--epochs",
            "2",
            "--batch",
            "16",
            "--patience",
            "0",
            "--name",
            "stomach-small",
            "--seeds",
            "2",
        ]);
        assert!(out.contains("registered stomach-small@1"), "{out}");
        assert!(out.contains("AUC") && out.contains("over 2 seeds"), "{out}");
        assert!(out.contains("seed 1 epoch 2 valid"), "{out}");

        // The run's curves: loss, accuracy and AUROC per epoch, per seed, both splits.
        let runs = researcher
            .ok(Method::GET, "/api/v1/training/runs", None)
            .await;
        let run = &runs.as_array().unwrap()[0];
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["model"], "stomach-small@1");
        let history = run["history"].as_array().unwrap();
        for seed in [1, 2] {
            for split in ["train", "valid"] {
                let epochs: Vec<u64> = history
                    .iter()
                    .filter(|p| p["seed"] == seed && p["split"] == split && p["name"] == "Loss")
                    .map(|p| p["epoch"].as_u64().unwrap())
                    .collect();
                assert_eq!(
                    epochs,
                    [1, 2],
                    "{backend:?} seed {seed} {split}: {history:?}"
                );
            }
        }
        assert!(
            history
                .iter()
                .any(|p| p["name"].as_str().unwrap().starts_with("AUROC"))
        );

        // The registry entry: complete, traceable, with a card that says what it is for.
        let shown = researcher
            .ok(Method::GET, "/api/v1/models/stomach-small/versions/1", None)
            .await;
        let model = &shown["model"];
        let manifest = researcher
            .ok(Method::GET, "/api/v1/datasets/stomach/versions/1", None)
            .await;
        assert_eq!(model["dataset_hash"], manifest["content_hash"]);
        assert_eq!(model["taxonomy"], "gastric-group");
        assert_eq!(model["organ"], "stomach");
        assert_eq!(model["classes"], json!(["GAS-G1", "GAS-G3"]));
        assert!(
            model["code_version"].as_str().unwrap().starts_with("0."),
            "{model}"
        );
        let card = &shown["card"];
        assert!(
            card["notice"]
                .as_str()
                .unwrap()
                .starts_with("Decision support only")
        );
        assert!(card["intended_use"].as_str().unwrap().contains("stomach"));
        assert!(
            card["limitations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l.as_str().unwrap().contains("test slides")),
            "{card}"
        );
        assert_eq!(
            card["training_data"]["content_hash"],
            manifest["content_hash"]
        );
        let summary = &model["summary"];
        assert_eq!(summary["test_slides"], 2, "{summary}");
        assert_eq!(summary["seeds"], 2);
        assert_eq!(summary["over_seeds"]["auc"]["n"], 2, "{summary}");
        let store = server.store();
        assert_eq!(
            model_files(&server, "stomach-small/1").await,
            PLAIN_MODEL_FILES
        );
        let weights = get_bytes(&store, "models/stomach-small/1/model.bpk")
            .await
            .unwrap();
        assert_eq!(support::sha256_hex(&weights), model["weights_sha256"]);
        for plot in ["roc.png", "loss.png"] {
            let (status, bytes) = researcher
                .raw(&format!(
                    "/api/v1/models/stomach-small/versions/1/files/{plot}"
                ))
                .await;
            assert!(status.is_success());
            let image = image::load_from_memory(&bytes).unwrap();
            assert_eq!((image.width(), image.height()), (640, 480), "{plot}");
        }
        let (status, _) = researcher
            .raw("/api/v1/models/stomach-small/versions/1/files/..%2Fsecret")
            .await;
        assert_eq!(status.as_u16(), 404);

        // Deploy; the deployed model reloads and scores the test slides exactly as the run did.
        // Two test slides rarely show that a model beats chance, so a reason is given (taken
        // either way; `pathfed model deploy` cannot send one yet, hence the API).
        let deployment = operator
            .ok(
                Method::POST,
                "/api/v1/models/stomach-small/versions/1/deploy",
                Some(json!({"reason": "registry test: reload what the run evaluated"})),
            )
            .await;
        assert_eq!(deployment["organ"], "stomach", "{deployment}");
        assert_eq!(deployment["taxonomy"], "gastric-group", "{deployment}");
        let platform = server.platform().await;
        let (name, version) =
            pathfed_models::registry::deployed_for(&platform, "stomach", "gastric-group")
                .await
                .unwrap()
                .unwrap();
        let device = pathfed_models::device::open("flex").unwrap();
        let loaded = pathfed_models::registry::load(&platform, &name, version, &device)
            .await
            .unwrap();
        let manifest: pathfed_datasets::manifest::Manifest = serde_json::from_slice(
            &get_bytes(&store, "research/datasets/stomach/1/manifest.json")
                .await
                .unwrap(),
        )
        .unwrap();
        let cache = server.dir.path().join("reload-cache");
        let set = std::sync::Arc::new(
            pathfed_training::data::PatchSet::fetch(&store, &manifest, &cache, |_, _| {})
                .await
                .unwrap(),
        );
        let (_, slides) = pathfed_training::run::evaluate_slides(
            match &loaded.model {
                pathfed_models::registry::Backbone::Cnn(cnn) => cnn,
                pathfed_models::registry::Backbone::Encoder(_) => panic!("a CNN run's model"),
            },
            &set,
            "test",
            loaded.config.input_px(),
            16,
            &loaded.config.positive,
            loaded.config.aggregation,
            loaded.config.threshold,
            1,
            &device,
        )
        .unwrap();
        let metrics = researcher
            .ok(
                Method::GET,
                "/api/v1/models/stomach-small/versions/1/files/metrics.json",
                None,
            )
            .await;
        let recorded = metrics["seeds"][0]["slides"].as_array().unwrap();
        assert_eq!(slides.len(), recorded.len());
        for (now, then) in slides.iter().zip(recorded) {
            assert_eq!(now.slide, then["slide"].as_str().unwrap());
            let then = then["score"].as_f64().unwrap();
            // Same weights, same inputs, same kernels: only summation order could differ.
            assert!((now.score - then).abs() < 1e-5, "{} vs {then}", now.score);
        }

        // A run cancelled mid-way resumes from its last checkpoint and registers v2. The worker
        // sees a cancel at its next heartbeat (≤ 2 s); 192 px inputs make an epoch long enough
        // (~0.7 s here, longer on slower machines) that 12 of them outlast that several times.
        let run = researcher
            .ok(
                Method::POST,
                "/api/v1/training/runs",
                Some(json!({
                    "dataset": "stomach@1", "model": "resnet-small", "epochs": 12, "batch": 16,
                    "input_px": 192, "patience": 0, "name": "stomach-small",
                    "aggregation": "attention",
                })),
            )
            .await;
        let id = run["id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/training/runs/{id}");
        let checkpoint = server.dir.path().join(format!(
            "data/training/runs/{id}/seed-1/checkpoint/model-1.bpk"
        ));
        wait_for("the first checkpoint", Duration::from_secs(120), || {
            let exists = checkpoint.exists();
            async move { exists.then_some(()) }
        })
        .await;
        researcher
            .ok(Method::POST, &format!("{path}/cancel"), None)
            .await;
        let stopped = wait_for("the cancel", Duration::from_secs(60), || async {
            let state = researcher.ok(Method::GET, &path, None).await;
            (state["status"] != "running" && state["status"] != "queued").then_some(state)
        })
        .await;
        assert_eq!(stopped["status"], "cancelled", "{stopped}");
        assert_eq!(stopped["resumable"], true);
        assert!(stopped["model"].is_null());
        assert_eq!(
            count(&db, "models").await,
            1,
            "{backend:?}: nothing registered"
        );
        let done_before = stopped["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["epoch"].as_u64())
            .max()
            .unwrap();
        assert!(
            done_before < 12,
            "{backend:?}: the cancel came too late to test"
        );
        let out = cli_ok(&["train", "--resume", &id]);
        assert!(out.contains("registered stomach-small@2"), "{out}");
        let state = researcher.ok(Method::GET, &path, None).await;
        let epochs: Vec<u64> = state["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["split"] == "valid" && p["name"] == "Loss")
            .map(|p| p["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(
            epochs,
            (1..=12).collect::<Vec<u64>>(),
            "{backend:?}: every epoch once, resumed after epoch {done_before}"
        );
        let keys = list_keys(&store, "models/stomach-small/2").await.unwrap();
        assert!(
            keys.iter().any(|k| k.ends_with("aggregator.bpk")),
            "{keys:?}"
        );
        let v2 = platform.clone();
        let loaded = pathfed_models::registry::load(&v2, "stomach-small", 2, &device)
            .await
            .unwrap();
        assert!(loaded.aggregator.is_some());

        // Retiring undeploys; a retired model cannot be deployed again.
        let out = server.cli_ok(&[
            "model",
            "retire",
            "stomach-small@1",
            "--server",
            &server.url,
            "--token",
            &operator.token,
        ]);
        assert!(out.contains("removed from 1 deployment"), "{out}");
        let deployments = researcher
            .ok(Method::GET, "/api/v1/deployments", None)
            .await;
        assert_eq!(deployments, json!([]));
        let message = operator
            .refused(
                Method::POST,
                "/api/v1/models/stomach-small/versions/1/deploy",
                Some(json!({})),
                409,
            )
            .await;
        assert!(message.contains("retired"), "{message}");
        let listed = cli_ok(&["model", "list"]);
        assert!(
            listed.contains("stomach-small@2") && listed.contains("retired"),
            "{listed}"
        );
        let audit = pathfed_core::audit::recent(&db, 200).await.unwrap();
        for action in [
            "training.start",
            "model.deploy",
            "model.retire",
            "training.cancel",
        ] {
            assert!(
                audit.iter().any(|e| e.event.action == action),
                "{backend:?}: no {action} in the audit log"
            );
        }

        an_encoder_run_is_deployed_and_reads_a_new_slide(
            &server,
            &staff,
            &operator,
            &cli_ok,
            fixtures.path(),
        )
        .await;

        // A patient's opt-out deletes their slide's embeddings (by both encoders) with the rest
        // of its research data; the other patients' stay.
        let before = embedding_objects(&server).await;
        let (status, body) = staff
            .spoke
            .call(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "T-0" })),
            )
            .await;
        assert_eq!(status.as_u16(), 201, "{body}");
        let gone: String = wait_for("the opted-out slide", Duration::from_secs(60), || {
            let db = db.clone();
            async move {
                sqlx::query("SELECT id FROM research_slides WHERE deleted_reason = 'opt-out'")
                    .fetch_optional(db.pool())
                    .await
                    .unwrap()
                    .map(|row| row.get::<String, _>("id"))
            }
        })
        .await;
        let after = embedding_objects(&server).await;
        assert!(
            before.iter().any(|k| k.contains(&gone)),
            "{backend:?}: {before:?}"
        );
        assert!(
            !after.iter().any(|k| k.contains(&gone)) && after.len() == before.len() - 2,
            "{backend:?}: {gone} still embedded: {after:?}"
        );
    }
}

/// An encoder + ABMIL run from `pathfed train`: refused when it cannot work, trained on the
/// stored embeddings (the encoder does not run again), registered with the encoder's weights
/// hash and cross-validation by patient on its card, deployed, and run on a newly uploaded
/// slide, whose AI result and heatmap the hub pathologist reads.
async fn an_encoder_run_is_deployed_and_reads_a_new_slide(
    server: &TestServer,
    staff: &Staff<'_>,
    operator: &As<'_>,
    cli_ok: &dyn Fn(&[&str]) -> String,
    fixtures: &std::path::Path,
) {
    let researcher = &staff.researcher;
    let refused = |body: Value, status: u16| async move {
        researcher
            .refused(Method::POST, "/api/v1/training/runs", Some(body), status)
            .await
    };
    let message = refused(json!({"dataset": "stomach@1", "head": "abmil"}), 400).await;
    assert!(message.contains("encoder runs"), "{message}");
    let message = refused(
        json!({"dataset": "stomach@1", "encoder": "vit_gelu", "folds": 2}),
        400,
    )
    .await;
    assert!(message.contains("folds must be"), "{message}");
    // Four patients in the training and validation splits: five folds cannot be dealt.
    let message = refused(
        json!({"dataset": "stomach@1", "encoder": "vit_gelu", "folds": 5}),
        400,
    )
    .await;
    assert!(message.contains("this version has 4"), "{message}");
    let message = refused(
        json!({"dataset": "stomach@1", "encoder": "vit_gelu", "input_px": 64}),
        400,
    )
    .await;
    assert!(message.contains("32 px"), "{message}");
    let message = refused(json!({"dataset": "stomach@1", "encoder": "uni"}), 400).await;
    assert!(message.contains("uni/pytorch_model.bin"), "{message}");
    let message = refused(
        json!({"dataset": "stomach@1", "encoder": "vit_gelu", "head": "transformer"}),
        400,
    )
    .await;
    assert!(message.contains("unknown head"), "{message}");

    let stored = embedding_objects(server).await;
    let out = cli_ok(&[
        "train",
        "--dataset",
        "stomach@1",
        "--encoder",
        "vit_gelu",
        "--folds",
        "3",
        "--epochs",
        "15",
        "--batch",
        "16",
        "--name",
        "stomach-vit",
    ]);
    assert!(out.contains("registered stomach-vit@1"), "{out}");
    assert!(
        out.contains("3-fold cross-validation by patient: 4 patients, 4 slides"),
        "{out}"
    );
    assert!(out.contains("seed 1 epoch 15 valid"), "{out}");
    // Every slide was embedded by vit_gelu already: the run reused the store.
    assert_eq!(embedding_objects(server).await, stored);

    let shown = researcher
        .ok(Method::GET, "/api/v1/models/stomach-vit/versions/1", None)
        .await;
    let model = &shown["model"];
    assert_eq!(model["architecture"], "vit_gelu+abmil", "{model}");
    let weights =
        pathfed_models::vit::resolve(&server.dir.path().join("data/pretrained"), "vit_gelu")
            .unwrap()
            .weights;
    let encoder = &shown["card"]["model"]["encoder"];
    assert_eq!(
        encoder["weights_sha256"].as_str(),
        Some(support::sha256_hex(&std::fs::read(&weights).unwrap()).as_str()),
        "{encoder}"
    );
    let cv = &model["summary"]["cross_validation"];
    assert_eq!(
        (cv["folds"].as_u64(), cv["patients"].as_u64()),
        (Some(3), Some(4)),
        "{cv}"
    );
    assert!(
        cv["over_folds"]["balanced_accuracy"]["mean"].is_number(),
        "{cv}"
    );
    assert!(cv["pooled"]["auc"]["value"].is_number(), "{cv}");
    let card = researcher
        .ok(
            Method::GET,
            "/api/v1/models/stomach-vit/versions/1/card",
            None,
        )
        .await;
    assert_eq!(
        card["model"]["summary"]["cross_validation"]["folds"], 3,
        "{card}"
    );
    // The head is model.bpk; the encoder's weights stay in the pretrained folder.
    assert_eq!(
        model_files(server, "stomach-vit/1").await,
        PLAIN_MODEL_FILES
    );

    // Deployed, it runs on the next stomach slide a spoke uploads.
    operator
        .ok(
            Method::POST,
            "/api/v1/models/stomach-vit/versions/1/deploy",
            Some(json!({"reason": "registry test: an encoder + head model on a new slide"})),
        )
        .await;
    let file = support::synth_slide(fixtures, "new-after-encoder.svs", 2400, 1800, 97);
    let (_, slide) = submit_case(server, &staff.spoke.token, &file, "T-new");
    let ai = format!("/api/v1/slides/{slide}/ai");
    let overview = staff.first.ok(Method::GET, &ai, None).await;
    assert_eq!(overview["deployed"]["model"], "stomach-vit", "{overview}");
    let job = overview["jobs"][0]["id"].as_str().unwrap().to_string();
    let done = crate::inference::finished_job(&staff.first, &slide, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let overview = staff.first.ok(Method::GET, &ai, None).await;
    let summary = overview["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == "stomach-vit")
        .cloned()
        .unwrap_or_else(|| panic!("no result of stomach-vit: {overview}"));
    assert!(
        summary["score"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s)),
        "{summary}"
    );
    let result = staff
        .first
        .ok(Method::GET, summary["result_url"].as_str().unwrap(), None)
        .await;
    assert_eq!(
        result["model"]["architecture"], "vit_gelu+abmil",
        "{result}"
    );
    assert!(
        result["patches"].as_u64().is_some_and(|n| n > 0),
        "{result}"
    );
    let (status, png) = staff
        .first
        .raw(summary["heatmap_url"].as_str().unwrap())
        .await;
    assert_eq!(status.as_u16(), 200);
    let heatmap = image::load_from_memory(&png).unwrap();
    assert!(heatmap.width() > 0 && heatmap.height() > 0);
}

/// A model version's files without a separate aggregator: a CNN scored by mean or top-k, or
/// an encoder + head (the head is `model.bpk`).
const PLAIN_MODEL_FILES: [&str; 6] = [
    "card.json",
    "config.json",
    "loss.png",
    "metrics.json",
    "model.bpk",
    "roc.png",
];

/// The file names of model version `NAME/V` in the registry, sorted.
async fn model_files(server: &TestServer, version: &str) -> Vec<String> {
    let prefix = format!("models/{version}/");
    let mut names: Vec<String> = list_keys(&server.store(), &prefix)
        .await
        .unwrap()
        .iter()
        .map(|k| k.trim_start_matches(&prefix).to_string())
        .collect();
    names.sort();
    names
}

/// Object keys of the embedding store.
async fn embedding_objects(server: &TestServer) -> Vec<String> {
    pathfed_core::store::list_keys(&server.store(), "research/embeddings/")
        .await
        .unwrap()
}

/// `pathfed embed` fills the store once and reuses it; requests that cannot work are refused
/// before anything is queued, saying what is missing.
async fn embeddings_are_stored_reused_and_refused_clearly(
    server: &TestServer,
    researcher: &As<'_>,
    staff: &Staff<'_>,
    cli_ok: &dyn Fn(&[&str]) -> String,
) {
    let encoders = researcher.ok(Method::GET, "/api/v1/encoders", None).await;
    let entry = |name: &str| {
        encoders
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no encoder {name}: {encoders}"))
    };
    assert_eq!(entry("vit_gelu")["installed"], true, "{encoders}");
    assert_eq!(entry("vit_reg_prefix")["features"], 64, "{encoders}");
    assert_eq!(entry("uni2-h")["installed"], false, "{encoders}");
    let refused = |body: Value, status: u16| async move {
        researcher
            .refused(Method::POST, "/api/v1/embeddings", Some(body), status)
            .await
    };
    let message = refused(json!({"dataset": "stomach@1", "encoder": "uni"}), 400).await;
    assert!(message.contains("uni/pytorch_model.bin"), "{message}");
    let message = refused(json!({"dataset": "stomach@1", "encoder": "resnet"}), 400).await;
    assert!(message.contains("unknown encoder"), "{message}");
    refused(json!({"dataset": "stomach@9", "encoder": "vit_gelu"}), 404).await;
    // 28 px at 0.5 µm/px is not what 64 px patches at 2 µm/px become.
    let message = refused(
        json!({"dataset": "stomach@1", "encoder": "vit_reg_swiglu"}),
        400,
    )
    .await;
    assert!(
        message.contains("patches of 28 px at 0.5 µm/px"),
        "{message}"
    );
    staff
        .first
        .refused(
            Method::POST,
            "/api/v1/embeddings",
            Some(json!({"dataset": "stomach@1", "encoder": "vit_gelu"})),
            403,
        )
        .await;
    assert!(embedding_objects(server).await.is_empty());

    let first = cli_ok(&["embed", "stomach@1", "--encoder", "vit_gelu"]);
    assert!(
        first.contains("6 slides embedded") && first.contains("0 reused"),
        "{first}"
    );
    let again = cli_ok(&["embed", "stomach@1", "--encoder", "vit_gelu"]);
    assert!(
        again.contains("0 slides embedded (0 patches), 6 reused"),
        "{again}"
    );
    let other = cli_ok(&["embed", "stomach@1", "--encoder", "vit_reg_prefix"]);
    assert!(other.contains("6 slides embedded"), "{other}");
    assert_eq!(embedding_objects(server).await.len(), 12);
}
