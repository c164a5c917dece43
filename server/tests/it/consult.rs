//! The consultation workflow through the HTTP API and the CLI, on both backends: two spokes,
//! a hub with two pathologists, another hub. Create → upload → submit → claim → first read →
//! blind double-check → discordant → adjudication → sign-out → report at the spoke, with the
//! invalid transitions refused, the first read invisible to the second reader everywhere, and
//! the report PDF rendered and verified.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::process::Command;

use pathfed_consult::taxonomy::label_in;
use pathfed_core::audit::recent;
use pathfed_core::locale::Lang;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::geojson_essence;
use crate::support::{As, BACKENDS, Backend, TestServer, client, submit_case, synth_slide};

struct Cast<'a> {
    spoke: As<'a>,
    other_spoke: As<'a>,
    first: As<'a>,
    second: As<'a>,
    other_hub: As<'a>,
    researcher: As<'a>,
    spoke_token: String,
}

fn cast(server: &TestServer) -> Cast<'_> {
    let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
        server,
        token: server.user(hospital, kind, name, role),
    };
    let spoke = who("Spoke A", "spoke", "sub_a", "submitter");
    let spoke_token = spoke.token.clone();
    let cast = Cast {
        other_spoke: who("Spoke B", "spoke", "sub_b", "submitter"),
        first: who("Hub H", "hub", "path1", "pathologist"),
        second: who("Hub H", "hub", "path2", "pathologist"),
        other_hub: who("Hub G", "hub", "path_g", "pathologist"),
        researcher: who("Hub H", "hub", "res_h", "researcher"),
        spoke,
        spoke_token,
    };
    server.cli_ok(&["admin", "hospital", "default-hub", "Spoke A", "Hub H"]);
    cast
}

/// `pathfed case create --upload … --submit` as the spoke; returns (case id, slide id).
fn create_and_submit(server: &TestServer, token: &str, seed: u32) -> (String, String) {
    let file = synth_slide(
        server.dir.path(),
        &format!("biopsy{seed}.svs"),
        2400,
        1800,
        seed,
    );
    submit_case(server, token, &file, "MRN-77031")
}

fn read(code: &str, findings: &str, slide: &str) -> Value {
    json!({
        "code": code,
        "findings": findings,
        "slides": [{ "slide_id": slide, "code": code, "findings": "representative area" }],
    })
}

const FIRST_FINDINGS: &str = "Atypical glands with high-grade nuclear features, first reader";

#[tokio::test(flavor = "multi_thread")]
async fn full_workflow_with_blind_double_check_adjudication_and_report() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let c = cast(&server);
        let (case_id, slide) = create_and_submit(&server, &c.spoke_token, 11);
        let case_path = format!("/api/v1/cases/{case_id}");
        let tile = format!("/api/v1/slides/{slide}/slide_files/8/0_0.jpeg");

        // The hub's worklist shows it, without the patient's id.
        let worklist = c
            .first
            .ok(
                Method::GET,
                "/api/v1/cases?status=submitted&organ=stomach",
                None,
            )
            .await;
        let listed = worklist["cases"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{worklist}");
        assert_eq!(listed[0]["taxonomy"], "gastric-group");
        assert!(!worklist.to_string().contains("MRN-77031"));
        let spoke_view = c.spoke.ok(Method::GET, &case_path, None).await;
        assert_eq!(spoke_view["patient_id"], "MRN-77031");
        assert_eq!(spoke_view["hub_name"], "Hub H");

        // Consultation grants the hub read access to the case's slides, and to their labels so
        // that the reader can check the patient's identity (unless the spoke keeps them to
        // itself: `clinical.rs`); other hubs get nothing.
        assert_eq!(c.first.raw(&tile).await.0, StatusCode::OK);
        assert_eq!(c.other_hub.raw(&tile).await.0, StatusCode::NOT_FOUND);
        let label = format!("/api/v1/slides/{slide}/label");
        assert_eq!(c.first.raw(&label).await.0, StatusCode::OK);
        assert_eq!(c.other_hub.raw(&label).await.0, StatusCode::NOT_FOUND);

        // Nothing to sign out yet; the spoke cannot claim; the hub claims.
        c.first
            .refused(Method::POST, &format!("{case_path}/sign-out"), None, 409)
            .await;
        c.spoke
            .refused(Method::POST, &format!("{case_path}/claim"), None, 403)
            .await;
        let claimed = c
            .first
            .ok(Method::POST, &format!("{case_path}/claim"), None)
            .await;
        assert_eq!(claimed["status"], "assigned");

        // First read and an annotation carrying the label.
        c.first
            .ok(
                Method::PUT,
                &format!("{case_path}/reads/primary"),
                Some(read("GAS-G4", FIRST_FINDINGS, &slide)),
            )
            .await;
        c.first
            .ok(
                Method::POST,
                &format!("{case_path}/slides/{slide}/annotations"),
                Some(json!({
                    "kind": "polygon", "points": [[100, 100], [400, 120], [300, 500]],
                    "label_code": "GAS-G4", "note": "first reader's focus",
                })),
            )
            .await;
        let message = c
            .first
            .refused(
                Method::POST,
                &format!("{case_path}/double-check"),
                None,
                409,
            )
            .await;
        assert!(message.contains("different pathologist"), "{message}");
        c.first
            .refused(Method::POST, &format!("{case_path}/sign-out"), None, 409)
            .await;

        // The second reader is blind: no endpoint shows the first read.
        let started = c
            .second
            .ok(Method::POST, &format!("{case_path}/double-check"), None)
            .await;
        assert_eq!(started["status"], "in_double_check");
        let mut seen = String::new();
        for path in [
            case_path.clone(),
            "/api/v1/cases".to_string(),
            "/api/v1/cases?status=in_double_check".to_string(),
            format!("{case_path}/slides/{slide}/annotations"),
            format!("{case_path}/slides/{slide}/annotations.geojson"),
            format!("{case_path}/reports"),
            "/api/v1/stats/concordance".to_string(),
        ] {
            let (_, mut body) = c.second.call(Method::GET, &path, None).await;
            // The taxonomy's label list names every code; it says nothing about the read.
            if let Some(case) = body.as_object_mut() {
                case.remove("taxonomy_labels");
            }
            seen.push_str(&body.to_string());
        }
        assert!(!seen.contains("GAS-G4"), "first read leaked: {seen}");
        assert!(!seen.contains("first reader"), "first read leaked: {seen}");
        let own = c.first.ok(Method::GET, &case_path, None).await;
        assert_eq!(
            own["reads"].as_array().unwrap().len(),
            1,
            "the reader sees their own"
        );
        c.second
            .refused(Method::POST, &format!("{case_path}/sign-out"), None, 409)
            .await;

        // Discordant → adjudication, where both see both reads.
        let second = c
            .second
            .ok(
                Method::PUT,
                &format!("{case_path}/reads/second"),
                Some(read("GAS-G5", "Invasive carcinoma, second reader", &slide)),
            )
            .await;
        assert_eq!(second["status"], "adjudication");
        assert_eq!(second["reads"].as_array().unwrap().len(), 2);
        c.second
            .refused(Method::POST, &format!("{case_path}/sign-out"), None, 409)
            .await;
        c.other_spoke
            .refused(
                Method::POST,
                &format!("{case_path}/adjudication"),
                Some(json!({"code": "GAS-G5"})),
                404,
            )
            .await;
        let settled = c
            .first
            .ok(
                Method::POST,
                &format!("{case_path}/adjudication"),
                Some(json!({
                    "code": "GAS-G5", "findings": "Well differentiated adenocarcinoma",
                    "note": "Agreed at the multi-head microscope",
                })),
            )
            .await;
        assert_eq!(settled["status"], "ready_for_sign_out");
        assert_eq!(settled["final_code"], "GAS-G5");
        let spoke_before = c.spoke.ok(Method::GET, &case_path, None).await;
        assert!(
            spoke_before["final_code"].is_null(),
            "spoke sees nothing before sign-out"
        );
        assert!(spoke_before["reads"].as_array().unwrap().is_empty());

        let signed = c
            .first
            .ok(Method::POST, &format!("{case_path}/sign-out"), None)
            .await;
        assert_eq!(signed["version"], 1);
        let content_hash = signed["content_hash"].as_str().unwrap().to_string();

        // Nothing changes after sign-out.
        c.first
            .refused(
                Method::PUT,
                &format!("{case_path}/reads/primary"),
                Some(read("GAS-G1", "late edit", &slide)),
                409,
            )
            .await;
        c.first
            .refused(
                Method::POST,
                &format!("{case_path}/slides/{slide}/annotations"),
                Some(json!({"kind": "point", "points": [[10, 10]]})),
                409,
            )
            .await;
        c.first
            .refused(Method::POST, &format!("{case_path}/sign-out"), None, 409)
            .await;

        // The spoke is notified, reads the report, and the notice clears.
        let spoke_list = c.spoke.ok(Method::GET, "/api/v1/cases", None).await;
        assert_eq!(spoke_list["cases"][0]["new_report"], true, "{spoke_list}");
        let (status, html) = c
            .spoke
            .raw(&format!("{case_path}/reports/1/report.html"))
            .await;
        assert_eq!(status, StatusCode::OK);
        let html = String::from_utf8(html).unwrap();
        // The hub works in Japanese (a hospital's default), so its report names the
        // diagnoses in Japanese.
        let label = |code| label_in("gastric-group", code, Lang::Ja).unwrap();
        let (final_label, first_label) = (label("GAS-G5"), label("GAS-G4"));
        for expected in [
            "MRN-77031",
            final_label.as_str(),
            first_label.as_str(),
            "Agreed at the multi-head microscope",
            content_hash.as_str(),
            "path1",
        ] {
            assert!(html.contains(expected), "report lacks {expected:?}");
        }
        let spoke_list = c.spoke.ok(Method::GET, "/api/v1/cases", None).await;
        assert_eq!(spoke_list["cases"][0]["new_report"], false);
        assert_eq!(
            c.spoke.ok(Method::GET, &case_path, None).await["reads"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // The PDF renders and verifies; an altered copy does not.
        let pdf = server.dir.path().join("report.pdf");
        server.cli_ok(&[
            "case",
            "report",
            &case_id,
            "--out",
            pdf.to_str().unwrap(),
            "--server",
            &server.url,
            "--token",
            &c.spoke_token,
        ]);
        assert_pdf_renders(&pdf);
        let verified = server.cli_ok(&[
            "case",
            "report",
            "--verify",
            pdf.to_str().unwrap(),
            "--server",
            &server.url,
            "--token",
            &c.spoke_token,
        ]);
        assert!(
            verified.contains("verified") && verified.contains(&content_hash),
            "{verified}"
        );
        let mut altered = std::fs::read(&pdf).unwrap();
        // One byte of the first stream (the page's compressed text or the embedded font).
        let at = altered.windows(6).position(|w| w == b"stream").unwrap() + 20;
        altered[at] ^= 0xff;
        let altered_path = server.dir.path().join("altered.pdf");
        std::fs::write(&altered_path, altered).unwrap();
        let rejected = server.cli(&[
            "case",
            "report",
            "--verify",
            altered_path.to_str().unwrap(),
            "--server",
            &server.url,
            "--token",
            &c.spoke_token,
        ]);
        assert!(!rejected.status.success());
        assert!(String::from_utf8_lossy(&rejected.stderr).contains("NOT VERIFIED"));

        // An amendment issues version 2 and keeps version 1.
        let amended = c
            .second
            .ok(
                Method::POST,
                &format!("{case_path}/amendments"),
                Some(json!({
                    "code": "GAS-G5", "findings": "Adenocarcinoma, moderately differentiated",
                    "reason": "Grade corrected after deeper levels",
                })),
            )
            .await;
        assert_eq!(amended["version"], 2);
        let versions = c
            .spoke
            .ok(Method::GET, &format!("{case_path}/reports"), None)
            .await;
        assert_eq!(versions["reports"].as_array().unwrap().len(), 2);
        assert_eq!(
            c.spoke
                .raw(&format!("{case_path}/reports/1/report.pdf"))
                .await
                .0,
            StatusCode::OK
        );
        let (_, v2) = c
            .spoke
            .raw(&format!("{case_path}/reports/2/report.html"))
            .await;
        let v2 = String::from_utf8(v2).unwrap();
        assert!(v2.contains("Grade corrected") && v2.contains(&content_hash));

        // Concordance statistics and the audit trail.
        let stats = c
            .first
            .ok(Method::GET, "/api/v1/stats/concordance", None)
            .await;
        assert_eq!(stats["concordance"][0]["double_checked"], 1, "{stats}");
        assert_eq!(stats["concordance"][0]["concordant"], 0);
        let actions: Vec<String> = recent(&server.db().await, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.outcome == "ok")
            .map(|r| r.event.action)
            .collect();
        for action in [
            "case.view",
            "slide.tiles",
            "case.diagnose",
            "case.double_check_read",
            "case.adjudicate",
            "case.sign_out",
            "case.report.download",
            "case.amend",
        ] {
            assert!(
                actions.iter().any(|a| a == action),
                "no {action} in the audit log"
            );
        }
    }
}

/// Renders the first page with poppler and checks it holds dark text on a white page.
fn assert_pdf_renders(pdf: &std::path::Path) {
    let prefix = pdf.with_file_name("report-page1");
    let status = Command::new("pdftoppm")
        .args(["-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile"])
        .arg(pdf)
        .arg(&prefix)
        .status()
        .expect("run pdftoppm (poppler-utils)");
    assert!(status.success(), "pdftoppm could not render the report");
    let png = pdf.with_file_name("report-page1.png");
    let artifacts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    let _ = std::fs::create_dir_all(&artifacts);
    let _ = std::fs::copy(&png, artifacts.join("report-page1.png"));
    let page = image::open(&png).unwrap().to_luma8();
    let dark = page.pixels().filter(|p| p.0[0] < 128).count();
    let share = dark as f64 / (page.width() * page.height()) as f64;
    assert!(
        (0.005..0.3).contains(&share),
        "page 1 should be mostly white with text; dark share {share}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outsiders_are_denied_everything_and_the_hub_loses_access_after_the_window() {
    let server = TestServer::start_with(
        Backend::Local,
        &[("PATHFED_CONSULT_ACCESS_AFTER_CLOSE_S", "3600")],
    );
    let c = cast(&server);
    let (case_id, slide) = create_and_submit(&server, &c.spoke_token, 12);
    let case_path = format!("/api/v1/cases/{case_id}");
    // A colleague assigns the case: not to someone of another hub, but to path1.
    c.second
        .refused(
            Method::POST,
            &format!("{case_path}/assign"),
            Some(json!({"username": "path_g"})),
            400,
        )
        .await;
    let assigned = c
        .second
        .ok(
            Method::POST,
            &format!("{case_path}/assign"),
            Some(json!({"username": "path1"})),
        )
        .await;
    assert_eq!(assigned["status"], "assigned");
    c.second
        .refused(
            Method::PUT,
            &format!("{case_path}/reads/primary"),
            Some(read("GAS-G3", "adenoma", &slide)),
            403,
        )
        .await;
    c.first
        .ok(
            Method::PUT,
            &format!("{case_path}/reads/primary"),
            Some(read("GAS-G3", "adenoma", &slide)),
        )
        .await;
    let annotation = c
        .first
        .ok(
            Method::POST,
            &format!("{case_path}/slides/{slide}/annotations"),
            Some(json!({"kind": "point", "points": [[50, 60]], "label_code": "GAS-G3"})),
        )
        .await;
    c.second
        .ok(Method::POST, &format!("{case_path}/double-check"), None)
        .await;
    let concordant = c
        .second
        .ok(
            Method::PUT,
            &format!("{case_path}/reads/second"),
            Some(read("GAS-G3", "adenoma", &slide)),
        )
        .await;
    assert_eq!(concordant["status"], "ready_for_sign_out");
    assert_eq!(concordant["concordant"], true);
    c.second
        .ok(Method::POST, &format!("{case_path}/sign-out"), None)
        .await;

    let paths = [
        case_path.clone(),
        format!("{case_path}/reports"),
        format!("{case_path}/reports/1/report.pdf"),
        format!("{case_path}/slides/{slide}/annotations"),
        format!("{case_path}/slides/{slide}/annotations.geojson"),
        format!("/api/v1/slides/{slide}"),
        format!("/api/v1/slides/{slide}/slide_files/8/0_0.jpeg"),
        format!("/api/v1/slides/{slide}/thumbnail"),
    ];
    let db = server.db().await;
    let denied_count = |records: &[pathfed_core::audit::AuditRecord]| {
        records
            .iter()
            .filter(|r| r.event.outcome == "denied")
            .count()
    };
    let before = denied_count(&recent(&db, 100_000).await.unwrap());
    let mut expected = 0;
    for outsider in [&c.other_spoke, &c.other_hub, &c.researcher] {
        for path in &paths {
            let (status, _) = outsider.raw(path).await;
            assert!(
                matches!(status.as_u16(), 403 | 404),
                "{path} answered {status} to an outsider"
            );
            expected += 1;
        }
        let (status, _) = outsider
            .call(
                Method::DELETE,
                &format!(
                    "{case_path}/annotations/{}",
                    annotation["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert!(matches!(status.as_u16(), 403 | 404));
        expected += 1;
    }
    for path in &paths {
        let status = client()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        expected += 1;
    }
    let after = denied_count(&recent(&db, 100_000).await.unwrap());
    assert!(
        after - before >= expected,
        "{} denials audited for {expected} refused requests",
        after - before
    );
    // The other spoke's case list and the other hub's worklist stay empty.
    for outsider in [&c.other_spoke, &c.other_hub] {
        let listed = outsider.ok(Method::GET, "/api/v1/cases", None).await;
        assert!(listed["cases"].as_array().unwrap().is_empty(), "{listed}");
    }

    // Within the window the hub still reads; after it, the hub sees nothing, the spoke still does.
    assert_eq!(c.first.raw(&paths[6]).await.0, StatusCode::OK);
    server.advance_clock(3601);
    for path in [&paths[0], &paths[2], &paths[6]] {
        assert_eq!(c.first.raw(path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(c.spoke.raw(&paths[2]).await.0, StatusCode::OK);
    assert_eq!(c.spoke.raw(&paths[6]).await.0, StatusCode::OK);
    // A slide in a signed-out case is part of the record: the spoke cannot delete it.
    c.spoke
        .refused(
            Method::DELETE,
            &format!("/api/v1/slides/{slide}"),
            None,
            409,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drafts_validate_their_input_and_transitions() {
    let server = TestServer::start(Backend::Local);
    let c = cast(&server);
    let base = json!({
        "patient_id": "P-1", "age_band": "40-49", "sex": "female", "organ": "colon",
        "specimen": "biopsy", "clinical_question": "IBD?",
    });
    for (field, bad) in [
        ("age_band", json!("41")),
        ("sex", json!("x")),
        ("patient_id", json!("  ")),
        ("urgency", json!("asap")),
        ("hub", json!("Spoke B")),
    ] {
        let mut form = base.clone();
        form[field] = bad;
        c.spoke
            .refused(Method::POST, "/api/v1/cases", Some(form), 400)
            .await;
    }
    c.spoke
        .refused(
            Method::POST,
            "/api/v1/cases",
            Some(json!({"nonsense": 1})),
            422,
        )
        .await;
    c.researcher
        .refused(Method::POST, "/api/v1/cases", Some(base.clone()), 403)
        .await;
    let draft = c
        .spoke
        .ok(Method::POST, "/api/v1/cases", Some(base.clone()))
        .await;
    assert_eq!(draft["taxonomy"], "general");
    let path = format!("/api/v1/cases/{}", draft["id"].as_str().unwrap());
    let message = c
        .spoke
        .refused(Method::POST, &format!("{path}/submit"), None, 400)
        .await;
    assert!(message.contains("at least one slide"), "{message}");
    c.spoke
        .refused(
            Method::POST,
            &format!("{path}/slides"),
            Some(json!({"slide_id": "nope"})),
            404,
        )
        .await;
    // A draft is invisible to the hub.
    c.first.refused(Method::GET, &path, None, 404).await;
    let cancelled = c
        .spoke
        .ok(Method::POST, &format!("{path}/cancel"), None)
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    c.spoke.refused(Method::PUT, &path, Some(base), 409).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn geojson_round_trips_and_malformed_input_is_refused() {
    let server = TestServer::start(Backend::Local);
    let c = cast(&server);
    let (case_id, slide) = create_and_submit(&server, &c.spoke_token, 13);
    let case_path = format!("/api/v1/cases/{case_id}");
    let annotations = format!("{case_path}/slides/{slide}/annotations");
    let geojson = format!("{annotations}.geojson");
    c.first
        .ok(Method::POST, &format!("{case_path}/claim"), None)
        .await;
    for shape in [
        json!({"kind": "polygon", "points": [[10.5, 20], [600, 40], [500, 700], [30, 650]], "label_code": "GAS-G3", "note": "adenoma"}),
        json!({"kind": "rectangle", "points": [[100, 100], [300, 250]], "label_code": "GAS-G1"}),
        json!({"kind": "point", "points": [[1200, 900]], "label_code": "GAS-G5"}),
        json!({"kind": "text", "points": [[50, 1700]], "note": "ink at the margin"}),
    ] {
        c.first.ok(Method::POST, &annotations, Some(shape)).await;
    }
    let exported = c.first.ok(Method::GET, &geojson, None).await;
    assert_eq!(exported["type"], "FeatureCollection");
    let features = exported["features"].as_array().unwrap();
    assert_eq!(features.len(), 4);
    let polygon = features
        .iter()
        .find(|f| f["properties"]["pathfed"]["kind"] == "polygon")
        .unwrap();
    assert_eq!(polygon["properties"]["objectType"], "annotation");
    assert_eq!(
        polygon["properties"]["classification"]["name"],
        "Group 3: adenoma"
    );

    // Delete everything, import the export, export again: same shapes and labels.
    let listed = c.first.ok(Method::GET, &annotations, None).await;
    for a in listed["annotations"].as_array().unwrap() {
        c.first
            .ok(
                Method::DELETE,
                &format!("{case_path}/annotations/{}", a["id"].as_str().unwrap()),
                None,
            )
            .await;
    }
    let text = exported.to_string();
    let imported = client()
        .post(format!("{}{geojson}", server.url))
        .bearer_auth(&c.first.token)
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), StatusCode::CREATED);
    let again = c.first.ok(Method::GET, &geojson, None).await;
    // Same shapes, kinds, labels and notes; order and ids may differ.
    assert_eq!(geojson_essence(&exported), geojson_essence(&again));

    // QuPath's own export (no pathfed properties) imports by class name.
    let qupath = json!({"type": "FeatureCollection", "features": [{
        "type": "Feature", "id": "x",
        "geometry": {"type": "Polygon", "coordinates": [[[1, 1], [50, 1], [50, 40], [1, 1]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "Group 2: indefinite for neoplasia", "color": [1, 2, 3]}}
    }]});
    let (status, body) = c.first.call(Method::POST, &geojson, Some(qupath)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["annotations"][0]["label_code"], "GAS-G2");

    let count = || async {
        c.first.ok(Method::GET, &annotations, None).await["annotations"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    for (bad, why) in [
        ("{not json", "not valid GeoJSON"),
        (r#"{"type":"Point","coordinates":[1,2]}"#, "bare geometry"),
        // A two-point LineString is a kept ruler measurement; other line shapes are not kept.
        (
            r#"{"type":"Feature","geometry":{"type":"MultiLineString","coordinates":[[[1,2],[3,4]]]},"properties":{}}"#,
            "LineString",
        ),
        (
            r#"{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[1,1],[5,1],[5,5],[2,2]]]},"properties":{}}"#,
            "closed",
        ),
        (
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[99999,5]},"properties":{}}"#,
            "outside the slide",
        ),
        (
            r#"{"type":"Feature","geometry":{"type":"Point","coordinates":[5,5]},"properties":{"classification":{"name":"Tumour"}}}"#,
            "not a label",
        ),
    ] {
        let response = client()
            .post(format!("{}{geojson}", server.url))
            .bearer_auth(&c.first.token)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{bad}: {message}");
    }
    assert_eq!(count().await, before, "a refused import adds nothing");
}
