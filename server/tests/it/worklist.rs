//! The worklist through the HTTP API, on both backends: search by case id prefix, specimen or
//! organ (its Japanese name too), and (for the submitting hospital only) by a patient id typed
//! differently but the same once normalised; cases assigned to the caller; open cases urgent
//! first, then those waiting longest; and the columns the list adds: who reads it, how long it
//! has waited, and once signed out, the final diagnosis in both languages.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::people::{read, staff};
use crate::support::{As, BACKENDS, TestServer, submit_case, synth_slide};

/// The cases `who` gets for `query`, in the order listed.
async fn listed(who: &As<'_>, query: &str) -> Vec<Value> {
    let answer = who
        .ok(Method::GET, &format!("/api/v1/cases?{query}"), None)
        .await;
    answer["cases"].as_array().unwrap().clone()
}

/// The ids of `cases`, in order.
fn ids(cases: &[Value]) -> Vec<String> {
    cases
        .iter()
        .map(|case| case["id"].as_str().unwrap().to_string())
        .collect()
}

/// The listed case with `id`.
fn item<'a>(cases: &'a [Value], id: &str) -> &'a Value {
    cases
        .iter()
        .find(|case| case["id"] == id)
        .unwrap_or_else(|| panic!("case {id} not listed: {cases:?}"))
}

/// The waiting time the list gives the case with `id`.
fn waited(cases: &[Value], id: &str) -> Option<i64> {
    item(cases, id)["waiting_seconds"].as_i64()
}

/// `q=` with `text` percent-encoded.
fn search(text: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    format!("q={encoded}")
}

/// A case the spoke creates, attaches `slide` to and submits; returns its id.
async fn new_case(
    spoke: &As<'_>,
    slide: &str,
    patient: &str,
    organ: &str,
    specimen: &str,
    urgency: &str,
) -> String {
    let created = spoke
        .ok(
            Method::POST,
            "/api/v1/cases",
            Some(json!({
                "patient_id": patient, "age_band": "60-69", "sex": "female", "organ": organ,
                "specimen": specimen, "clinical_question": "Neoplasia?", "urgency": urgency,
            })),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    spoke
        .ok(
            Method::POST,
            &format!("/api/v1/cases/{id}/slides"),
            Some(json!({ "slide_id": slide })),
        )
        .await;
    spoke
        .ok(Method::POST, &format!("/api/v1/cases/{id}/submit"), None)
        .await;
    id
}

/// Whether `text` holds kana or kanji.
fn has_japanese(text: &str) -> bool {
    text.chars()
        .any(|c| ('\u{3040}'..='\u{30FF}').contains(&c) || ('\u{4E00}'..='\u{9FFF}').contains(&c))
}

#[tokio::test(flavor = "multi_thread")]
async fn worklist_searches_filters_orders_and_describes_cases() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let staff = staff(&server);
        let (spoke, first, second) = (&staff.spoke, &staff.first, &staff.second);
        let db = server.db().await;
        sqlx::query("UPDATE users SET display_name = $1 WHERE username = $2")
            .bind("山田 太郎")
            .bind("path1")
            .execute(db.pool())
            .await
            .unwrap();

        // Three cases an hour apart: A (routine stomach biopsy), B (urgent colon polyp, its
        // patient id typed in ASCII), C (routine stomach ESD). One slide serves all three.
        let file = synth_slide(server.dir.path(), "worklist.svs", 1200, 900, 23);
        let (a_id, slide) = submit_case(&server, &spoke.token, &file, "MRN-1001");
        server.advance_clock(3600);
        let b_id = new_case(
            spoke,
            &slide,
            "AB-123",
            "colon",
            "Polypectomy, sigmoid colon",
            "urgent",
        )
        .await;
        server.advance_clock(3600);
        let c_id = new_case(
            spoke,
            &slide,
            "P-555",
            "stomach",
            "ESD specimen, antrum",
            "routine",
        )
        .await;
        let (a, b, c) = (a_id.as_str(), b_id.as_str(), c_id.as_str());

        // Open lists: urgent first, then the longest waiting; other lists: the latest first.
        let open = listed(first, "open=1").await;
        assert_eq!(ids(&open), [b, a, c], "{open:?}");
        assert!(item(&open, a)["waiting_seconds"].as_i64().unwrap() >= 7200);
        assert!(item(&open, b)["waiting_seconds"].as_i64().unwrap() >= 3600);
        assert!(item(&open, c)["waiting_seconds"].as_i64().unwrap() >= 0);
        for case in &open {
            assert_eq!(case["assigned_to_me"], false, "{case}");
            assert!(case["assignee_name"].is_null(), "{case}");
            assert!(case["final_diagnosis"].is_null(), "{case}");
        }
        assert_eq!(ids(&listed(first, "").await), [c, b, a]);
        assert_eq!(ids(&listed(spoke, "open=1").await), [b, a, c]);

        // Search by case id prefix (letter case ignored), specimen and organ substring.
        let prefix = a[..8].to_uppercase();
        for who in [first, spoke] {
            assert_eq!(ids(&listed(who, &search(&prefix)).await), [a]);
            assert_eq!(ids(&listed(who, &search("POLYPECTOMY")).await), [b]);
            assert_eq!(ids(&listed(who, &search("colo")).await), [b]);
            // An organ by its Japanese name.
            assert_eq!(ids(&listed(who, &search("結腸")).await), [b]);
            let stomach = format!("open=1&{}", search("胃"));
            assert_eq!(ids(&listed(who, &stomach).await), [a, c]);
            // Full-width letters, as a Japanese input method types them.
            let antrum = format!("open=1&{}", search("ａｎｔｒｕｍ"));
            assert_eq!(ids(&listed(who, &antrum).await), [a, c]);
            assert!(listed(who, &search("no such specimen")).await.is_empty());
        }

        // The spoke finds its patient however the id is typed, and only by the whole id.
        let typed = "\u{3000}ＡＢ－１２３\u{3000}";
        assert_eq!(ids(&listed(spoke, &search(typed)).await), [b]);
        assert_eq!(ids(&listed(spoke, &search("MRN-1001")).await), [a]);
        assert!(listed(spoke, &search("AB-12")).await.is_empty());
        // A hub never finds a case by the patient's id.
        for who in [first, second] {
            assert!(listed(who, &search("AB-123")).await.is_empty());
            assert!(listed(who, &search(typed)).await.is_empty());
            assert!(listed(who, &search("MRN-1001")).await.is_empty());
        }

        // Assigned to me: the primary reader's and the double-checker's cases, no others.
        let case_path = |id: &str| format!("/api/v1/cases/{id}");
        first
            .ok(Method::POST, &format!("{}/claim", case_path(a)), None)
            .await;
        second
            .ok(Method::POST, &format!("{}/claim", case_path(c)), None)
            .await;
        first
            .ok(
                Method::PUT,
                &format!("{}/reads/primary", case_path(a)),
                Some(read("GAS-G4", &slide)),
            )
            .await;
        second
            .ok(
                Method::POST,
                &format!("{}/double-check", case_path(a)),
                None,
            )
            .await;
        let mine = listed(first, "mine=1").await;
        assert_eq!(ids(&mine), [a], "{mine:?}");
        assert_eq!(mine[0]["assigned_to_me"], true);
        assert_eq!(mine[0]["assignee_name"], "山田 太郎");
        let mine = listed(second, "mine=1&open=1").await;
        assert_eq!(ids(&mine), [a, c], "{mine:?}");
        assert!(mine.iter().all(|case| case["assigned_to_me"] == true));
        assert_eq!(item(&mine, c)["assignee_name"], "path2");
        // Nothing of the blind read shows while it is being checked.
        assert!(item(&mine, a)["final_diagnosis"].is_null());
        let all = listed(first, "open=1").await;
        assert_eq!(item(&all, b)["assigned_to_me"], false);
        assert_eq!(item(&all, c)["assigned_to_me"], false);
        assert_eq!(item(&all, a)["assigned_to_me"], true);
        first
            .refused(Method::GET, "/api/v1/cases?mine=yes", None, 400)
            .await;
        first
            .refused(
                Method::GET,
                &format!("/api/v1/cases?{}", search(&"x".repeat(201))),
                None,
                400,
            )
            .await;

        // Signed out: out of the open lists, into the signed-out view with its diagnosis.
        second
            .ok(
                Method::PUT,
                &format!("{}/reads/second", case_path(a)),
                Some(read("GAS-G4", &slide)),
            )
            .await;
        first
            .ok(Method::POST, &format!("{}/sign-out", case_path(a)), None)
            .await;
        for who in [first, spoke] {
            assert_eq!(ids(&listed(who, "open=1").await), [b, c]);
            let signed = listed(who, "status=signed_out").await;
            assert_eq!(ids(&signed), [a], "{signed:?}");
            let diagnosis = &signed[0]["final_diagnosis"];
            assert_eq!(diagnosis["code"], "GAS-G4", "{diagnosis}");
            let label = diagnosis["label"].as_str().unwrap();
            let label_ja = diagnosis["label_ja"].as_str().unwrap();
            assert!(label.contains("Group 4"), "{diagnosis}");
            assert!(has_japanese(label_ja) && label_ja != label, "{diagnosis}");
        }

        // A signed-out case stops waiting; an open one keeps waiting.
        let before = listed(first, "").await;
        server.advance_clock(3600);
        let after = listed(first, "").await;
        assert!(waited(&before, a).unwrap() >= 7200);
        assert_eq!(waited(&after, a), waited(&before, a));
        assert!(waited(&after, c).unwrap() >= waited(&before, c).unwrap() + 3600);
    }
}
