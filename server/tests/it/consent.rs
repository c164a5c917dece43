//! Opt-outs say what they matched, on both backends. A patient id is keyed the way staff type
//! it, on a case and on an opt-out alike: full-width characters from a Japanese IME equal
//! ASCII, surrounding spaces (the ideographic one included) do not count, and letter case
//! counts unless the hospital says its ids ignore it. The answer says how many of the
//! hospital's cases and research slides the id matched, zero included; a matched research
//! slide is withdrawn and audited; a zero-match opt-out still keeps the patient's later cases
//! out of curation. Only a spoke's submitters and admins record or list opt-outs, for their own
//! hospital only.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::time::Duration;

use pathfed_core::audit::{AuditRecord, recent};
use pathfed_core::jobs::kinds::{Curate, JobKind as _};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::people::{Staff, sign_out_with, staff, tombstone, wait_for};
use crate::support::{As, BACKENDS, TestServer, submit_case, synth_slide};

/// A draft case for `patient` (as typed) from `user`; returns the case as created.
async fn draft(user: &As<'_>, patient: &str) -> Value {
    user.ok(
        Method::POST,
        "/api/v1/cases",
        Some(json!({
            "patient_id": patient, "age_band": "50-59", "sex": "female", "organ": "colon",
            "specimen": "biopsy", "clinical_question": "IBD?",
        })),
    )
    .await
}

/// Records an opt-out for `patient` (as typed); returns (status, answer).
async fn opt_out(user: &As<'_>, patient: &str) -> (u16, Value) {
    let (status, answer) = user
        .call(
            Method::POST,
            "/api/v1/opt-outs",
            Some(json!({ "patient_id": patient })),
        )
        .await;
    (status.as_u16(), answer)
}

/// The entry for `patient` (normalised) in the user's list of opt-outs.
async fn listed(user: &As<'_>, patient: &str) -> Option<Value> {
    let list = user.ok(Method::GET, "/api/v1/opt-outs", None).await;
    list["opt_outs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["patient_id"] == patient)
        .cloned()
}

/// The live research slide curated since `known` research slides existed.
async fn research_slide(db: &pathfed_core::Db, known: i64) -> String {
    wait_for("the research slide", Duration::from_secs(90), || {
        let db = db.clone();
        async move {
            let rows = sqlx::query("SELECT id FROM research_slides ORDER BY curated_at, id")
                .fetch_all(db.pool())
                .await
                .unwrap();
            (rows.len() as i64 > known).then(|| rows.last().unwrap().get::<String, _>("id"))
        }
    })
    .await
}

/// The audit rows of `action` with `outcome`.
async fn audited(db: &pathfed_core::Db, action: &str, outcome: &str) -> Vec<AuditRecord> {
    recent(db, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.action == action && e.event.outcome == outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_width_and_ascii_ids_match_and_the_research_slide_is_withdrawn() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let Staff {
            spoke,
            first,
            second,
            ..
        } = staff(&server);
        let db = server.db().await;

        // Typed with a Japanese IME: full-width letters and digits, kept as ASCII.
        let file = synth_slide(server.dir.path(), "full-width.svs", 2400, 1800, 41);
        let (case, slide) = submit_case(&server, &spoke.token, &file, "ＡＢ１２３");
        let view = spoke
            .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
            .await;
        assert_eq!(view["patient_id"], "AB123", "{backend:?}: {view}");
        sign_out_with(&first, &second, &case, &slide, "GAS-G3").await;
        let research = research_slide(&db, 0).await;

        // The opt-out typed in ASCII finds the case and its research slide.
        let (status, recorded) = opt_out(&spoke, "AB123").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        assert_eq!(recorded["normalised_patient_id"], "AB123");
        assert_eq!(recorded["matched_cases"], 1, "{recorded}");
        assert_eq!(recorded["matched_research_slides"], 1, "{recorded}");
        assert_eq!(recorded["already_opted_out"], false);
        assert_eq!(recorded["newly_recorded"], true);
        assert!(recorded.get("patient_hash").is_none(), "{recorded}");
        assert_eq!(tombstone(&db, &research).await, "opt-out");

        // Typed again full-width, with ideographic spaces: the same patient, on record.
        let (status, again) = opt_out(&spoke, "\u{3000}ＡＢ１２３ ").await;
        assert_eq!(status, 200, "{backend:?}: {again}");
        assert_eq!(again["already_opted_out"], true);
        assert_eq!(again["recorded_at"], recorded["recorded_at"]);
        assert_eq!(again["matched_cases"], 1, "{again}");

        // And the other way round: a case typed in ASCII with surrounding spaces (U+3000
        // included), an opt-out typed full-width.
        let created = draft(&spoke, "  12345\u{3000}").await;
        assert_eq!(created["patient_id"], "12345", "{created}");
        let (status, recorded) = opt_out(&spoke, "１２３４５").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        assert_eq!(recorded["normalised_patient_id"], "12345");
        assert_eq!(recorded["matched_cases"], 1, "{recorded}");
        assert_eq!(
            recorded["matched_research_slides"], 0,
            "a draft reached no research"
        );

        // One audit row per withdrawn research slide, and the opt-out's own with its counts.
        let deleted = audited(&db, "research_slide.delete", "ok").await;
        assert!(
            deleted
                .iter()
                .any(|e| e.event.target == format!("research_slide:{research}")
                    && e.event.detail.contains("opted out")),
            "{backend:?}: {deleted:?}"
        );
        let recorded = audited(&db, "patient.opt_out", "ok").await;
        assert_eq!(recorded.len(), 3, "{backend:?}: {recorded:?}");
        assert!(
            recorded.iter().any(|e| e
                .event
                .detail
                .contains("1 case(s), 1 research slide(s) matched; recorded")),
            "{recorded:?}"
        );
        assert!(
            recorded.iter().all(|e| !e.event.detail.contains("AB123")),
            "the audit log names the patient by hash prefix only: {recorded:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn letter_case_matches_only_where_the_hospital_ignores_it() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let spoke_a = As {
            server: &server,
            token: server.user("Spoke A", "spoke", "sub_a", "submitter"),
        };
        let spoke_b = As {
            server: &server,
            token: server.user("Spoke B", "spoke", "sub_b", "submitter"),
        };

        // Spoke A keeps the default: ab123 and AB123 are two patients.
        draft(&spoke_a, "ab123").await;
        let (status, recorded) = opt_out(&spoke_a, "AB123").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        assert_eq!(recorded["normalised_patient_id"], "AB123");
        assert_eq!(recorded["matched_cases"], 0, "{backend:?}: {recorded}");
        let list = spoke_a.ok(Method::GET, "/api/v1/opt-outs", None).await;
        assert_eq!(list["patient_id_case"], "sensitive", "{list}");

        // Spoke B ignores letter case: its ids are folded to upper case, on both sides.
        server.cli_ok(&[
            "admin",
            "hospital",
            "patient-id-case",
            "Spoke B",
            "insensitive",
        ]);
        let created = draft(&spoke_b, "ab123").await;
        assert_eq!(created["patient_id"], "AB123", "{created}");
        let (status, recorded) = opt_out(&spoke_b, "Ａｂ１２３").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        assert_eq!(recorded["normalised_patient_id"], "AB123");
        assert_eq!(recorded["matched_cases"], 1, "{backend:?}: {recorded}");
        let list = spoke_b.ok(Method::GET, "/api/v1/opt-outs", None).await;
        assert_eq!(list["patient_id_case"], "insensitive", "{list}");

        // Spoke A cannot switch now: its case keyed as `ab123` would no longer be found by the
        // id it was typed with, nor match its patient's opt-out.
        let out = server.cli(&[
            "admin",
            "hospital",
            "patient-id-case",
            "Spoke A",
            "insensitive",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{backend:?}: the switch was allowed");
        assert!(stderr.contains("keyed differently"), "{stderr}");
        let list = spoke_a.ok(Method::GET, "/api/v1/opt-outs", None).await;
        assert_eq!(list["patient_id_case"], "sensitive", "{list}");
        // Switching back is always possible: folded ids stay as they are.
        server.cli_ok(&[
            "admin",
            "hospital",
            "patient-id-case",
            "Spoke B",
            "sensitive",
        ]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zero_match_opt_out_is_recorded_plainly_and_keeps_later_cases_out() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let Staff {
            spoke,
            first,
            second,
            ..
        } = staff(&server);
        let db = server.db().await;

        // No case has this patient yet: recorded, and said so.
        let (status, recorded) = opt_out(&spoke, " MRN-9000 ").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        assert_eq!(recorded["normalised_patient_id"], "MRN-9000");
        assert_eq!(recorded["matched_cases"], 0);
        assert_eq!(recorded["matched_research_slides"], 0);
        assert_eq!(recorded["already_opted_out"], false);
        assert!(
            recorded["forget_job"]
                .as_str()
                .is_some_and(|j| !j.is_empty())
        );
        let entry = listed(&spoke, "MRN-9000").await.unwrap();
        assert_eq!(entry["recorded_by"], "sub_a", "{entry}");
        assert_eq!(entry["recorded_at"], recorded["recorded_at"], "{entry}");
        assert_eq!(entry["matched_cases"], 0, "{entry}");
        assert_eq!(entry["cases_now"], 0, "{entry}");
        assert_eq!(entry["patient_hash_prefix"].as_str().unwrap().len(), 12);
        // The case below closes strictly after the opt-out, whatever the test's speed.
        server.advance_clock(60);

        // The patient's case arrives later, typed full-width, and is signed out: nothing of
        // it is handed to the research tier (the curate jobs are queued in the sign-out's own
        // transaction, so there is nothing to wait for).
        let file = synth_slide(server.dir.path(), "later.svs", 2400, 1800, 42);
        let (case, slide) = submit_case(&server, &spoke.token, &file, "ＭＲＮ－９０００");
        sign_out_with(&first, &second, &case, &slide, "GAS-G3").await;
        let curate_jobs: Vec<String> = sqlx::query("SELECT payload FROM jobs WHERE kind = $1")
            .bind(Curate::NAME)
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("payload"))
            .collect();
        assert!(
            curate_jobs.iter().all(|p| !p.contains(&slide)),
            "{backend:?}: the opted-out patient's slide was queued for curation"
        );
        let entry = listed(&spoke, "MRN-9000").await.unwrap();
        assert_eq!(entry["cases_now"], 1, "{entry}");

        // Recorded again, it counts the case, and no research slide: it was signed out after
        // the opt-out, so it never reached the research tier.
        let (status, again) = opt_out(&spoke, "MRN-9000").await;
        assert_eq!(status, 200, "{backend:?}: {again}");
        assert_eq!(again["already_opted_out"], true);
        assert_eq!(again["matched_cases"], 1, "{again}");
        assert_eq!(again["matched_research_slides"], 0, "{again}");
        let entry = listed(&spoke, "MRN-9000").await.unwrap();
        assert_eq!(entry["matched_cases"], 1, "{entry}");

        // The command line says the same, plainly.
        let out = server.cli_ok(&[
            "opt-out",
            "--server",
            &server.url,
            "--token",
            &spoke.token,
            "\u{3000}P-CLI-1\u{3000}",
        ]);
        assert!(
            out.contains(
                "opt-out recorded for P-CLI-1: no case of this hospital has patient id P-CLI-1 \
                 yet; future cases will be excluded"
            ),
            "{out}"
        );
        let out = server.cli_ok(&[
            "opt-out",
            "--server",
            &server.url,
            "--token",
            &spoke.token,
            "--list",
        ]);
        assert!(out.contains("P-CLI-1") && out.contains("MRN-9000"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_patients_own_hospital_records_and_lists_its_opt_outs() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
            server: &server,
            token: server.user(hospital, kind, name, role),
        };
        let spoke_a = who("Spoke A", "spoke", "sub_a", "submitter");
        let admin_a = who("Spoke A", "spoke", "adm_a", "admin");
        let pathologist_a = who("Spoke A", "spoke", "path_a", "pathologist");
        let spoke_b = who("Spoke B", "spoke", "sub_b", "submitter");
        let hub_admin = who("Hub H", "hub", "adm_h", "admin");
        let hub_pathologist = who("Hub H", "hub", "path_h", "pathologist");
        let researcher = who("Hub H", "hub", "res_h", "researcher");
        let db = server.db().await;
        let body = json!({ "patient_id": "P-1" });

        // A hub that referred no cases holds no patients of its own; a spoke's pathologist does
        // not record them.
        for user in [&hub_admin, &hub_pathologist, &researcher] {
            let message = user
                .refused(Method::POST, "/api/v1/opt-outs", Some(body.clone()), 403)
                .await;
            assert!(message.contains("own hospital"), "{message}");
            user.refused(Method::GET, "/api/v1/opt-outs", None, 403)
                .await;
        }
        // A hub that refers cases of its own patients is their hospital: it records theirs.
        let hub_j = who("Hub J", "hub", "sub_j", "submitter");
        hub_j
            .ok(
                Method::POST,
                "/api/v1/cases",
                Some(json!({
                    "patient_id": "J-7", "age_band": "unknown", "sex": "unknown",
                    "organ": "colon", "specimen": "biopsy", "clinical_question": "?",
                    "hub": "Hub H",
                })),
            )
            .await;
        let (status, recorded) = opt_out(&hub_j, "Ｊ－７").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        assert_eq!(recorded["matched_cases"], 1, "{backend:?}: {recorded}");
        pathologist_a
            .refused(Method::POST, "/api/v1/opt-outs", Some(body.clone()), 403)
            .await;
        pathologist_a
            .refused(Method::GET, "/api/v1/opt-outs", None, 403)
            .await;

        // Naming another hospital is refused; naming one's own is fine.
        let message = spoke_b
            .refused(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "P-1", "hospital": "Spoke A" })),
                403,
            )
            .await;
        assert!(message.contains("Spoke B"), "{message}");
        let (status, recorded) = spoke_b
            .call(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "P-1", "hospital": "Spoke B" })),
            )
            .await;
        assert_eq!(status.as_u16(), 201, "{backend:?}: {recorded}");

        // The same id at Spoke A is another patient: recorded again there, by its admin.
        let (status, recorded) = opt_out(&admin_a, "P-1").await;
        assert_eq!(status, 201, "{backend:?}: {recorded}");
        let (status, _) = opt_out(&spoke_a, "P-2").await;
        assert_eq!(status, 201);

        // Each hospital lists its own, with who recorded each.
        let list_a = spoke_a.ok(Method::GET, "/api/v1/opt-outs", None).await;
        assert_eq!(list_a["hospital"], "Spoke A");
        let entries: Vec<(String, String)> = list_a["opt_outs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["patient_id"].as_str().unwrap().to_string(),
                    e["recorded_by"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(entries.len(), 2, "{list_a}");
        assert!(
            entries.contains(&("P-1".into(), "adm_a".into())),
            "{list_a}"
        );
        assert!(
            entries.contains(&("P-2".into(), "sub_a".into())),
            "{list_a}"
        );
        let list_b = spoke_b.ok(Method::GET, "/api/v1/opt-outs", None).await;
        assert_eq!(list_b["opt_outs"].as_array().unwrap().len(), 1, "{list_b}");
        assert_eq!(list_b["opt_outs"][0]["recorded_by"], "sub_b", "{list_b}");

        // Every refusal and every recording is in the audit log.
        assert_eq!(audited(&db, "patient.opt_out", "denied").await.len(), 5);
        // Spoke B's, Spoke A's two and Hub J's.
        assert_eq!(audited(&db, "patient.opt_out", "ok").await.len(), 4);
        assert_eq!(
            audited(&db, "patient.opt_out.list", "denied").await.len(),
            4
        );
        // None of them matched anything but Hub J's, which matched its one draft.
        let details: Vec<String> = audited(&db, "patient.opt_out", "ok")
            .await
            .into_iter()
            .map(|e| e.event.detail)
            .collect();
        let zero = "0 case(s), 0 research slide(s) matched";
        assert_eq!(
            details.iter().filter(|d| d.contains(zero)).count(),
            3,
            "{backend:?}: {details:?}"
        );
        assert!(
            details
                .iter()
                .any(|d| d.contains("1 case(s), 0 research slide(s) matched")),
            "{backend:?}: {details:?}"
        );
    }
}
