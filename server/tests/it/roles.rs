//! Roles scoped to their hospital, through the running server on both backends:
//! - `pathfed admin init` makes the platform admin; `--role platform-admin` makes another;
//! - a hospital's admin, spoke or hub, is refused everything beyond its hospital: the research
//!   tier (datasets, research slides), training, the registry, deploying and retiring models,
//!   and `/metrics`; the platform admin may do all of it; a researcher trains and reads the
//!   registry but neither deploys nor retires;
//! - a hub's double-check volumes are for its own pathologists and admins (and the platform
//!   admin), never for researchers, and no hub admin reaches another hub's case;
//! - a model whose test balanced accuracy does not show it beats chance is deployed only with
//!   a written reason, which the deployment, the model card and the audit log keep.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::time::Duration;

use pathfed_core::audit::recent;
use pathfed_models::aggregate::Aggregation;
use pathfed_models::model::{Architecture, ModelConfig};
use pathfed_models::registry::{InferenceConfig, Registration, register};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::people::{sign_out_with, staff, wait_for};
use crate::support::{As, BACKENDS, TestServer, client, password, submit_case, synth_slide};

/// Why the chance-level model is deployed all the same.
const REASON: &str = "Pilot at Hub H: shown beside the slide only, every call reviewed";

/// Registers `name@1` for skin slides (no case of these tests is of skin, so deploying it
/// queues no inference) with `summary` as its headline metrics (as training stores them: the
/// registry row and `metrics.json`). The weights are never loaded.
async fn register_model(
    platform: &pathfed_core::Platform,
    creator: &str,
    name: &str,
    summary: Value,
) {
    let created_by: String = sqlx::query("SELECT id FROM users WHERE username = $1")
        .bind(creator)
        .fetch_one(platform.db.pool())
        .await
        .unwrap()
        .get("id");
    let card = json!({
        "notice": "Decision support only.",
        "intended_use": "Role tests.",
        "limitations": [],
        "training_data": { "dataset": "roles", "version": 1, "taxonomy": "gastric-group",
            "patients": 1, "research_hospitals": 1 },
    });
    let metrics = serde_json::to_vec(&json!({ "summary": summary })).unwrap();
    register(
        platform,
        Registration {
            name: name.into(),
            run_id: "roles".into(),
            architecture: "resnet-small".into(),
            dataset: "roles".into(),
            dataset_version: 1,
            dataset_hash: "roles".into(),
            taxonomy: "gastric-group".into(),
            organ: Some("skin".into()),
            config: InferenceConfig {
                model: Some(ModelConfig {
                    architecture: Architecture::ResnetSmall,
                    classes: 2,
                    input_px: 64,
                }),
                encoder: None,
                classes: vec!["GAS-G1".into(), "GAS-G3".into()],
                positive: "GAS-G1".into(),
                aggregation: Aggregation::Mean,
                attention: None,
                threshold: 0.5,
                patch_px: 64,
                patch_mpp: 2.0,
                mpp_tolerance: 0.02,
            },
            code_version: "test".into(),
            summary,
            created_by,
            files: vec![
                ("model.bpk".into(), b"never loaded".to_vec()),
                ("card.json".into(), serde_json::to_vec(&card).unwrap()),
                ("metrics.json".into(), metrics),
            ],
        },
    )
    .await
    .unwrap();
}

/// Headline metrics with this test balanced accuracy.
fn balanced_accuracy(value: f64, low: f64, high: f64) -> Value {
    json!({ "test_slides": 40, "threshold": 0.5,
        "balanced_accuracy": { "value": value, "low": low, "high": high } })
}

fn deploy_path(model: &str) -> String {
    format!("/api/v1/models/{model}/versions/1/deploy")
}

fn retire_path(model: &str) -> String {
    format!("/api/v1/models/{model}/versions/1/retire")
}

/// The hub names in a concordance answer.
fn hubs(stats: &Value) -> Vec<String> {
    stats["concordance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["hub"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn hospital_admins_stay_in_their_hospital_and_the_platform_admin_runs_the_platform() {
    for backend in BACKENDS {
        // A tiny platform: its operator lowers the small-cell floor to 1.
        let server = TestServer::start_with(backend, &[("PATHFED_RESEARCH_MIN_CELL_SIZE", "1")]);

        // The first user is the platform admin; a second one can be added by role name.
        let pw = server.dir.path().join("root.pw");
        std::fs::write(&pw, password("root")).unwrap();
        let out = server.cli_ok(&[
            "admin",
            "init",
            "--hospital",
            "Hub H",
            "--kind",
            "hub",
            "--user",
            "root",
            "--password-file",
            pw.to_str().unwrap(),
        ]);
        assert!(out.contains("platform admin \"root\""), "{out}");
        let users = server.cli_ok(&["admin", "user", "list"]);
        assert!(users.contains("root\tplatform-admin\tHub H"), "{users}");
        let person = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let staff = staff(&server);
        let operator = person("Hub H", "hub", "operator", "platform-admin");
        let hub_admin = person("Hub H", "hub", "admin_h", "admin");
        let spoke_admin = person("Spoke A", "spoke", "admin_a", "admin");
        let other_hub_admin = person("Hub X", "hub", "admin_x", "admin");
        let session = operator.ok(Method::GET, "/api/v1/session", None).await;
        assert_eq!(session["user"]["role"], "platform-admin", "{session}");
        // The API description names the role as it is stored and sent.
        let (_, doc) = operator.call(Method::GET, "/openapi.json", None).await;
        assert!(
            doc.to_string().contains("\"platform-admin\""),
            "the Role schema lacks the new role: {}",
            doc["components"]["schemas"]["Role"]
        );

        // Opened before the server caches a slide, as the inference tests open it.
        let platform = server.platform().await;

        // A signed-out case: double-check volumes at Hub H, and a research slide.
        let file = synth_slide(server.dir.path(), "roles.svs", 2400, 1800, 17);
        let (case, slide) = submit_case(&server, &staff.spoke.token, &file, "ROLES-1");
        sign_out_with(&staff.first, &staff.second, &case, &slide, "GAS-G1").await;
        let db = server.db().await;
        let research_slide = wait_for("the research slide", Duration::from_secs(180), || {
            let db = db.clone();
            async move {
                sqlx::query("SELECT id FROM research_slides WHERE deleted_at IS NULL")
                    .fetch_optional(db.pool())
                    .await
                    .unwrap()
                    .map(|row| row.get::<String, _>("id"))
            }
        })
        .await;

        // Each hospital's admin keeps to its hospital's clinical work.
        hub_admin
            .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
            .await;
        spoke_admin
            .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
            .await;
        other_hub_admin
            .refused(Method::GET, &format!("/api/v1/cases/{case}"), None, 404)
            .await;
        other_hub_admin
            .refused(
                Method::POST,
                &format!("/api/v1/cases/{case}/assign"),
                Some(json!({"username": "path1"})),
                404,
            )
            .await;

        // Hub volumes: the hub's own pathologists and admins, and the platform admin.
        let stats = "/api/v1/stats/concordance";
        for (who, user) in [("pathologist", &staff.first), ("hub admin", &hub_admin)] {
            let seen = user.ok(Method::GET, stats, None).await;
            assert_eq!(hubs(&seen), ["Hub H"], "{backend:?} {who}: {seen}");
            assert_eq!(seen["concordance"][0]["double_checked"], 1, "{seen}");
        }
        let all = operator.ok(Method::GET, stats, None).await;
        assert!(hubs(&all).contains(&"Hub H".to_string()), "{all}");
        for user in [&other_hub_admin, &spoke_admin] {
            let seen = user.ok(Method::GET, stats, None).await;
            assert_eq!(hubs(&seen), Vec::<String>::new(), "{seen}");
        }
        for user in [&staff.researcher, &staff.spoke] {
            let (status, body) = user.call(Method::GET, stats, None).await;
            assert_eq!(status.as_u16(), 403, "{backend:?}: {body}");
            assert!(!body.to_string().contains("Hub H"), "{body}");
            assert!(body["concordance"].is_null(), "{body}");
        }

        // The research tier, training and the registry: no hospital admin.
        let dataset = json!({"name": "roles", "params": {"labels": "gastric-group",
            "min_cell_size": 1, "extraction": null}});
        let run = json!({"dataset": "roles@1", "model": "resnet-small"});
        for admin in [&spoke_admin, &hub_admin] {
            admin
                .refused(Method::GET, "/api/v1/datasets", None, 403)
                .await;
            admin
                .refused(Method::POST, "/api/v1/datasets", Some(dataset.clone()), 403)
                .await;
            admin
                .refused(
                    Method::GET,
                    &format!("/api/v1/research/slides/{research_slide}"),
                    None,
                    403,
                )
                .await;
            admin
                .refused(
                    Method::POST,
                    "/api/v1/training/runs",
                    Some(run.clone()),
                    403,
                )
                .await;
            admin
                .refused(Method::GET, "/api/v1/models", None, 403)
                .await;
        }
        // The platform admin reaches all of it.
        operator.ok(Method::GET, "/api/v1/datasets", None).await;
        let (status, bytes) = operator
            .raw(&format!("/api/v1/research/slides/{research_slide}"))
            .await;
        assert_eq!(status.as_u16(), 200, "{backend:?}");
        assert!(!bytes.is_empty());
        let (status, body) = operator
            .call(Method::POST, "/api/v1/datasets", Some(dataset.clone()))
            .await;
        assert_eq!(status.as_u16(), 201, "{backend:?}: {body}");
        // Training passes the role check and stops at the dataset (it has no patches), for the
        // platform admin and the researcher alike.
        for user in [&operator, &staff.researcher] {
            let message = user
                .refused(
                    Method::POST,
                    "/api/v1/training/runs",
                    Some(run.clone()),
                    400,
                )
                .await;
            assert!(message.contains("no patches"), "{message}");
        }

        // Models: one clearly better than chance, one whose interval reaches chance, one never
        // measured.
        register_model(
            &platform,
            "res_h",
            "sharp",
            balanced_accuracy(0.95, 0.9, 1.0),
        )
        .await;
        register_model(
            &platform,
            "res_h",
            "chancy",
            balanced_accuracy(0.55, 0.3, 0.8),
        )
        .await;
        register_model(&platform, "res_h", "blank", json!({})).await;
        staff
            .researcher
            .ok(Method::GET, "/api/v1/models", None)
            .await;
        for (who, user) in [
            ("spoke admin", &spoke_admin),
            ("hub admin", &hub_admin),
            ("researcher", &staff.researcher),
        ] {
            let message = user
                .refused(Method::POST, &deploy_path("sharp"), Some(json!({})), 403)
                .await;
            assert!(message.contains("platform admin"), "{who}: {message}");
            user.refused(Method::POST, &retire_path("sharp"), None, 403)
                .await;
        }
        let deployed = operator
            .ok(Method::POST, &deploy_path("sharp"), Some(json!({})))
            .await;
        assert_eq!(deployed["organ"], "skin", "{deployed}");
        assert!(deployed["reason"].is_null(), "{deployed}");

        // At chance: refused without a reason (a blank one is none), with the figures.
        for body in [json!({}), json!({"reason": "   "})] {
            let (status, answer) = operator
                .call(Method::POST, &deploy_path("chancy"), Some(body))
                .await;
            assert_eq!(status.as_u16(), 409, "{backend:?}: {answer}");
            assert_eq!(answer["error"]["code"], "deploy_needs_reason", "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            for figure in ["0.550", "0.300", "0.800", "chance 0.500"] {
                assert!(message.contains(figure), "{figure} not in {message}");
            }
        }
        let (status, answer) = operator
            .call(Method::POST, &deploy_path("blank"), Some(json!({})))
            .await;
        assert_eq!(status.as_u16(), 409, "{answer}");
        assert_eq!(answer["error"]["code"], "deploy_needs_reason", "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("never measured"),
            "{answer}"
        );
        let listed = operator.ok(Method::GET, "/api/v1/deployments", None).await;
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["model"], "sharp", "nothing changed: {listed}");

        // With a reason: deployed, and the reason kept where people look.
        let deployed = operator
            .ok(
                Method::POST,
                &deploy_path("chancy"),
                Some(json!({"reason": format!("  {REASON}\n")})),
            )
            .await;
        assert_eq!(deployed["model"], "chancy", "{deployed}");
        assert_eq!(deployed["reason"], REASON, "{deployed}");
        let version = operator
            .ok(Method::GET, "/api/v1/models/chancy/versions/1", None)
            .await;
        assert_eq!(
            version["model"]["deployed_for"][0]["reason"], REASON,
            "{version}"
        );
        // The card, as the hub's pathologists read it.
        let card = staff
            .first
            .ok(Method::GET, "/api/v1/models/chancy/versions/1/card", None)
            .await;
        assert_eq!(card["model"]["deployed_for"][0]["reason"], REASON, "{card}");
        let rows = recent(&db, 5000).await.unwrap();
        let target = "model:chancy@1";
        assert!(
            rows.iter().any(|r| r.event.action == "model.deploy"
                && r.event.target == target
                && r.event.outcome == "ok"
                && r.event.detail.contains(REASON)
                && r.event.detail.contains("0.550")),
            "{backend:?}: no audited deployment with its reason"
        );
        assert!(
            rows.iter().any(|r| r.event.action == "model.deploy"
                && r.event.target == target
                && r.event.outcome == "refused"
                && r.event.detail.contains("written reason")),
            "{backend:?}: the refusal is not audited"
        );
        assert!(
            rows.iter().any(|r| r.event.action == "model.deploy"
                && r.event.actor == "admin_a"
                && r.event.outcome == "denied"),
            "{backend:?}: the spoke admin's attempt is not audited"
        );

        // Retiring: the platform admin's.
        let retired = operator.ok(Method::POST, &retire_path("sharp"), None).await;
        assert_eq!(retired["retired"], "sharp@1", "{retired}");

        // Metrics: the platform admin's token, nobody else.
        let url = format!("{}/metrics", server.url);
        let anonymous = client().get(&url).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{backend:?}");
        let body: Value = anonymous.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
        for user in [&staff.researcher, &hub_admin] {
            let (status, body) = user.call(Method::GET, "/metrics", None).await;
            assert_eq!(status.as_u16(), 403, "{backend:?}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
        }
        let scraped = client()
            .get(&url)
            .bearer_auth(&operator.token)
            .send()
            .await
            .unwrap();
        assert_eq!(scraped.status().as_u16(), 200, "{backend:?}");
        let content_type = scraped.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = scraped.text().await.unwrap();
        assert!(text.contains("pathfed_http_requests"), "{text}");
    }
}
