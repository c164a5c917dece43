//! Clinical data and who sees it, through the running server on both backends:
//! - AI support belongs to the pathologists who diagnose the slide: the referring spoke is
//!   refused every AI endpoint (403 `ai_for_diagnosing_pathologists`) and its case and slide
//!   answers carry nothing of the model's, before and after a result exists; a draft's slides
//!   are not analysed until the case is submitted; the hub's pathologists see the result (after
//!   their own read where the hub says so); a hub's own slide in no case is its pathologists',
//!   until the hub refers it;
//! - the reading hub checks the patient's identity: its pathologists see the slide label and
//!   the patient's id unless the spoke turns sharing off (`admin hospital share-with-hub`), and
//!   a slide's `has_label`/`label_url` always say what the label endpoint answers that user;
//! - a new case records an age band and a sex only when someone chose them: missing is refused
//!   with a clear message, `unknown` is accepted and stored.

use pathfed_core::jobs::Jobs;
use pathfed_core::jobs::kinds::{Infer, JobKind as _};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::inference::{finished_job, mostly_dense, register_texture_model};
use crate::support::people::{read, staff};
use crate::support::{As, BACKENDS, TestServer, submit_case, synth_slide, upload};

/// The refusal code of every AI endpoint for users AI support is not for.
const NOT_FOR_USER: &str = "ai_for_diagnosing_pathologists";

/// Asserts that `user` is refused `method path` with `status` and the error `code`.
async fn refused_with(
    user: &As<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
    code: &str,
) {
    let (got, value) = user.call(method.clone(), path, body).await;
    assert_eq!(got.as_u16(), status, "{method} {path}: {value}");
    assert_eq!(value["error"]["code"], code, "{method} {path}: {value}");
}

/// A draft case for `patient` in the stomach (where the model is deployed), with `slide`.
async fn draft_with(user: &As<'_>, patient: &str, hub: Option<&str>, slide: &str) -> String {
    let draft = user
        .ok(
            Method::POST,
            "/api/v1/cases",
            Some(json!({
                "patient_id": patient, "age_band": "60-69", "sex": "female",
                "organ": "stomach", "specimen": "gastric biopsy",
                "clinical_question": "Dysplasia?", "hub": hub,
            })),
        )
        .await;
    let case = draft["id"].as_str().unwrap().to_string();
    user.ok(
        Method::POST,
        &format!("/api/v1/cases/{case}/slides"),
        Some(json!({ "slide_id": slide })),
    )
    .await;
    case
}

/// The slide's `infer` jobs, read from the queue.
async fn infer_jobs(server: &TestServer, slide: &str) -> usize {
    Jobs::new(server.db().await)
        .list_by_key_prefix(Infer::NAME, &Infer::slide_key_prefix(slide), 50)
        .await
        .unwrap()
        .len()
}

/// Every AI endpoint of `slide` (with `job`, one of its runs) refuses `user` with 403 `code`.
async fn refused_everywhere(user: &As<'_>, slide: &str, job: &str, code: &str) {
    let ai = format!("/api/v1/slides/{slide}/ai");
    let result = format!("{ai}/textures/1");
    for path in [
        ai.clone(),
        result.clone(),
        format!("{result}/heatmap.png"),
        format!("{result}/overlay.dzi"),
        format!("{result}/overlay_files/0/0_0.png"),
    ] {
        refused_with(user, Method::GET, &path, None, 403, code).await;
    }
    refused_with(user, Method::POST, &ai, Some(json!({})), 403, code).await;
    let runs = format!("{ai}/jobs/{job}/cancel");
    refused_with(user, Method::POST, &runs, None, 403, code).await;
}

/// The case and slide as `user` gets them, as text with the taxonomy's label list left out
/// (it names every code of the taxonomy; it says nothing about the slide).
async fn case_and_slide_text(user: &As<'_>, case: &str, slide: &str) -> String {
    let mut view = user
        .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
        .await;
    if let Some(object) = view.as_object_mut() {
        object.remove("taxonomy_labels");
    }
    let meta = user
        .ok(Method::GET, &format!("/api/v1/slides/{slide}"), None)
        .await;
    format!("{view}\n{meta}")
}

#[tokio::test(flavor = "multi_thread")]
async fn ai_support_is_for_the_pathologists_who_diagnose_the_slide() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let staff = staff(&server);
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let hub_admin = who("Hub H", "hub", "admin_h", "admin");
        let hub_submitter = who("Hub H", "hub", "sub_h", "submitter");
        let outsider = who("Hub X", "hub", "path_x", "pathologist");
        let platform = server.platform().await;
        register_texture_model(&server, &platform, "res_h").await;
        // Deploying is the platform admin's call (`roles.rs`).
        let operator = server.user("Hub H", "hub", "operator", "platform-admin");
        server.cli_ok(&[
            "model",
            "deploy",
            "textures@1",
            "--server",
            &server.url,
            "--token",
            &operator,
        ]);
        server.cli_ok(&["admin", "hospital", "ai-after-first-read", "Hub H", "on"]);

        // A draft is the spoke's: attaching its slide queues no run, and the spoke sees no AI.
        let file = mostly_dense(server.dir.path(), "clinical-ai.svs", 21);
        let slide = upload(&server, &staff.spoke.token, &file).await;
        let case = draft_with(&staff.spoke, "MRN-AI-7", None, &slide).await;
        assert_eq!(infer_jobs(&server, &slide).await, 0, "a draft was analysed");
        let ai = format!("/api/v1/slides/{slide}/ai");
        refused_with(&staff.spoke, Method::GET, &ai, None, 403, NOT_FOR_USER).await;
        let draft = staff
            .spoke
            .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
            .await;
        assert_eq!(draft["ai_support"], false, "{draft}");

        // Submitted: the run is queued, for the hub; the spoke is refused every AI endpoint.
        let submitted = staff
            .spoke
            .ok(Method::POST, &format!("/api/v1/cases/{case}/submit"), None)
            .await;
        assert_eq!(submitted["ai_support"], false, "{submitted}");
        assert_eq!(infer_jobs(&server, &slide).await, 1);
        let first = &staff.first;
        let overview = first.ok(Method::GET, &ai, None).await;
        let job = overview["jobs"][0]["id"].as_str().unwrap().to_string();
        refused_everywhere(&staff.spoke, &slide, &job, NOT_FOR_USER).await;
        let done = finished_job(first, &slide, &job).await;
        assert_eq!(done["status"], "succeeded", "{done}");

        // With a result stored, still nothing for the spoke, in no answer.
        refused_everywhere(&staff.spoke, &slide, &job, NOT_FOR_USER).await;
        let seen = case_and_slide_text(&staff.spoke, &case, &slide).await;
        for word in ["textures", "predicted", "score", "/ai", "GAS-G1"] {
            assert!(!seen.contains(word), "the spoke sees {word:?}: {seen}");
        }
        // Nor for the hub's admin (no slides for admins), researchers or another hospital.
        refused_with(&hub_admin, Method::GET, &ai, None, 404, "not_found").await;
        let admin_view = hub_admin
            .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
            .await;
        assert_eq!(admin_view["ai_support"], false, "{admin_view}");
        refused_with(&staff.researcher, Method::GET, &ai, None, 403, "forbidden").await;
        refused_with(&outsider, Method::GET, &ai, None, 404, "not_found").await;

        // The hub's pathologist: the panel is theirs, hidden until their own read.
        let reader_view = first
            .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
            .await;
        assert_eq!(reader_view["ai_support"], true, "{reader_view}");
        let hidden = first.ok(Method::GET, &ai, None).await;
        assert_eq!(hidden["hidden"], true, "{hidden}");
        assert_eq!(hidden["results"], json!([]));
        let result = format!("{ai}/textures/1");
        refused_with(
            first,
            Method::GET,
            &result,
            None,
            403,
            "ai_hidden_until_read",
        )
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
        let shown = first.ok(Method::GET, &ai, None).await;
        assert_eq!(shown["hidden"], false, "{shown}");
        assert_eq!(shown["results"][0]["model"], "textures", "{shown}");
        first.ok(Method::GET, &result, None).await;
        let (status, _) = first.raw(&format!("{result}/heatmap.png")).await;
        assert_eq!(status.as_u16(), 200);
        // Reading changes nothing for the spoke.
        refused_with(&staff.spoke, Method::GET, &result, None, 403, NOT_FOR_USER).await;

        // A hub's own slide in no case is its pathologists' (not its submitters')...
        let own = synth_slide(server.dir.path(), "hub-own.svs", 1200, 900, 22);
        let own = upload(&server, &first.token, &own).await;
        let own_ai = format!("/api/v1/slides/{own}/ai");
        let listed = first.ok(Method::GET, &own_ai, None).await;
        assert_eq!(listed["hidden"], false, "{listed}");
        refused_with(
            &hub_submitter,
            Method::GET,
            &own_ai,
            None,
            403,
            NOT_FOR_USER,
        )
        .await;
        // ...until the hub refers it: then the reading hub's; cancelling gives it back.
        let referred = draft_with(first, "MRN-HUB-1", Some("Hub X"), &own).await;
        refused_with(first, Method::GET, &own_ai, None, 403, NOT_FOR_USER).await;
        first
            .ok(
                Method::POST,
                &format!("/api/v1/cases/{referred}/cancel"),
                None,
            )
            .await;
        first.ok(Method::GET, &own_ai, None).await;
    }
}

/// `has_label` and `label_url` of `user`'s slide answer agree with what the label endpoint
/// answers them; returns the label endpoint's status.
async fn label_status(user: &As<'_>, slide: &str) -> u16 {
    let label = format!("/api/v1/slides/{slide}/label");
    let (status, bytes) = user.raw(&label).await;
    let shown = status.as_u16() == 200;
    if shown {
        let image = image::load_from_memory(&bytes).unwrap();
        assert!(image.width() > 0, "an empty label image");
    }
    let (meta_status, meta) = user
        .call(Method::GET, &format!("/api/v1/slides/{slide}"), None)
        .await;
    if meta_status.is_success() {
        assert_eq!(meta["has_label"], shown, "{meta}");
        let url = if shown { json!(label) } else { Value::Null };
        assert_eq!(meta["label_url"], url, "{meta}");
    } else {
        assert!(!shown, "a label without the slide");
    }
    status.as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reading_hub_checks_identity_unless_the_spoke_withholds_it() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let staff = staff(&server);
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let hub_admin = who("Hub H", "hub", "admin_h", "admin");
        let other_hub = who("Hub G", "hub", "path_g", "pathologist");
        let other_spoke = who("Spoke B", "spoke", "sub_b", "submitter");
        let spoke_researcher = who("Spoke A", "spoke", "res_a", "researcher");
        let file = synth_slide(server.dir.path(), "identity.svs", 2400, 1800, 31);
        let (case, slide) = submit_case(&server, &staff.spoke.token, &file, "MRN-CLIN-1");
        let case_path = format!("/api/v1/cases/{case}");

        // Labels: the spoke and the reading hub's pathologists; nobody else.
        let first = &staff.first;
        assert_eq!(label_status(&staff.spoke, &slide).await, 200);
        assert_eq!(label_status(first, &slide).await, 200);
        assert_eq!(label_status(&hub_admin, &slide).await, 404);
        assert_eq!(label_status(&other_hub, &slide).await, 404);
        assert_eq!(label_status(&other_spoke, &slide).await, 404);
        assert_eq!(label_status(&spoke_researcher, &slide).await, 403);
        assert_eq!(label_status(&staff.researcher, &slide).await, 403);

        // The patient's id: in the reader's case panel, not in the worklist or the admin's view.
        let view = first.ok(Method::GET, &case_path, None).await;
        assert_eq!(view["patient_id"], "MRN-CLIN-1", "{view}");
        let worklist = first.ok(Method::GET, "/api/v1/cases", None).await;
        assert!(!worklist.to_string().contains("MRN-CLIN-1"), "{worklist}");
        let admin_view = hub_admin.ok(Method::GET, &case_path, None).await;
        assert!(admin_view["patient_id"].is_null(), "{admin_view}");

        // The spoke keeps its labels to itself: the hub is refused, and told so by the slide.
        server.cli_ok(&[
            "admin",
            "hospital",
            "share-with-hub",
            "Spoke A",
            "label",
            "off",
        ]);
        assert_eq!(label_status(first, &slide).await, 403);
        refused_with(
            first,
            Method::GET,
            &format!("/api/v1/slides/{slide}/label"),
            None,
            403,
            "label_not_shared",
        )
        .await;
        assert_eq!(label_status(&staff.spoke, &slide).await, 200);
        let view = first.ok(Method::GET, &case_path, None).await;
        assert_eq!(view["patient_id"], "MRN-CLIN-1", "{view}");

        // And its patients' ids.
        server.cli_ok(&[
            "admin",
            "hospital",
            "share-with-hub",
            "Spoke A",
            "patient-id",
            "off",
        ]);
        let view = first.ok(Method::GET, &case_path, None).await;
        assert!(view["patient_id"].is_null(), "{view}");
        let spoke_view = staff.spoke.ok(Method::GET, &case_path, None).await;
        assert_eq!(spoke_view["patient_id"], "MRN-CLIN-1");

        // Sharing again takes effect at once.
        server.cli_ok(&[
            "admin",
            "hospital",
            "share-with-hub",
            "Spoke A",
            "label",
            "on",
        ]);
        assert_eq!(label_status(first, &slide).await, 200);
        let refused = server.cli(&[
            "admin",
            "hospital",
            "share-with-hub",
            "Nowhere",
            "label",
            "off",
        ]);
        assert!(!refused.status.success());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_cases_record_age_band_and_sex_only_when_chosen() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let staff = staff(&server);
        let spoke = &staff.spoke;
        let form = json!({
            "patient_id": "P-9", "age_band": "40-49", "sex": "female", "organ": "colon",
            "specimen": "biopsy", "clinical_question": "IBD?",
        });

        // Missing or empty is refused, naming the field and the way out ("unknown").
        for (field, value) in [
            ("age_band", None),
            ("sex", None),
            ("age_band", Some("")),
            ("sex", Some(" ")),
        ] {
            let mut body = form.clone();
            match value {
                Some(value) => body[field] = json!(value),
                None => {
                    body.as_object_mut().unwrap().remove(field);
                }
            }
            let message = spoke
                .refused(Method::POST, "/api/v1/cases", Some(body), 400)
                .await;
            assert!(
                message.contains(&format!("{field} is required")) && message.contains("unknown"),
                "{field}: {message}"
            );
        }
        let listed = spoke.ok(Method::GET, "/api/v1/cases", None).await;
        assert_eq!(listed["cases"], json!([]), "a refused form left a case");

        // "unknown" is a choice: accepted and stored as such.
        let mut body = form.clone();
        body["age_band"] = json!("unknown");
        body["sex"] = json!("unknown");
        let created = spoke
            .ok(Method::POST, "/api/v1/cases", Some(body.clone()))
            .await;
        assert_eq!(created["age_band"], "unknown", "{created}");
        assert_eq!(created["sex"], "unknown", "{created}");
        let id = created["id"].as_str().unwrap();
        let db = server.db().await;
        let row = sqlx::query("SELECT age_band, sex FROM cases WHERE id = $1")
            .bind(id)
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(row.get::<String, _>("age_band"), "unknown");
        assert_eq!(row.get::<String, _>("sex"), "unknown");

        // Editing a draft follows the same rule.
        body.as_object_mut().unwrap().remove("sex");
        let message = spoke
            .refused(Method::PUT, &format!("/api/v1/cases/{id}"), Some(body), 400)
            .await;
        assert!(message.contains("sex is required"), "{message}");
    }
}
