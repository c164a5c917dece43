//! Deny by default, on both backends: every slide endpoint refuses users of another hospital,
//! a role without clinical access, a logged-out client and a revoked token, and each refusal
//! is in the audit log. Browser sessions need the CSRF token for changes.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use pathfed_core::audit::recent;
use pathfed_ingest::client::{Phase, UploadClient};
use reqwest::Method;

use crate::support::{BACKENDS, TestServer, client, password, synth_slide};

fn endpoints(id: &str) -> Vec<(Method, String)> {
    let base = format!("/api/v1/slides/{id}");
    vec![
        (Method::GET, base.clone()),
        (Method::GET, format!("{base}/thumbnail")),
        (Method::GET, format!("{base}/label")),
        (Method::GET, format!("{base}/slide.dzi")),
        (Method::GET, format!("{base}/slide_files/8/0_0.jpeg")),
        (Method::DELETE, base),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn other_hospitals_roles_anonymous_and_revoked_tokens_are_denied_and_audited() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let owner = server.user("Spoke A", "spoke", "owner", "submitter");
        let other_hospital = server.user("Hub B", "hub", "pat_b", "pathologist");
        let researcher = server.user("Spoke A", "spoke", "res_a", "researcher");
        let revoked = server.user("Spoke A", "spoke", "gone_a", "submitter");
        let listing = server.cli_ok(&["admin", "token", "list"]);
        let revoked_id = listing
            .lines()
            .find(|l| l.contains("\tgone_a\t"))
            .and_then(|l| l.split('\t').next())
            .unwrap()
            .to_string();
        server.cli_ok(&["admin", "token", "revoke", &revoked_id]);

        let file = synth_slide(server.dir.path(), "case.svs", 3000, 2000, 4);
        let state = server.dir.path().join("state.json");
        let uploaded = UploadClient::new(&server.url, &owner, &state)
            .unwrap()
            .upload(&file, &|_: Phase, _: u64, _: u64| {})
            .await
            .unwrap();
        let id = uploaded.slide_id;

        let db = server.db().await;
        let denials_before = recent(&db, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.event.outcome == "denied")
            .count();
        let mut expected_denials = 0;
        let callers: [(&str, Option<&str>); 4] = [
            ("another hospital", Some(&other_hospital)),
            ("researcher", Some(&researcher)),
            ("logged out", None),
            ("revoked token", Some(&revoked)),
        ];
        for (who, token) in callers {
            for (method, path) in endpoints(&id) {
                let mut request = client().request(method.clone(), format!("{}{path}", server.url));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                assert!(
                    [401, 403, 404].contains(&status),
                    "{backend:?} {who} {method} {path}: {status}"
                );
                let body: serde_json::Value = response.json().await.unwrap();
                assert!(
                    body["error"]["message"].is_string(),
                    "{who} {path}: JSON error"
                );
                expected_denials += 1;
            }
        }
        let records = recent(&db, 10_000).await.unwrap();
        let denials = records
            .iter()
            .filter(|r| r.event.outcome == "denied")
            .count();
        assert!(
            denials - denials_before >= expected_denials,
            "{backend:?}: {} denials audited for {expected_denials} refusals",
            denials - denials_before
        );
        assert!(
            records
                .iter()
                .any(|r| r.event.actor == "pat_b" && r.event.target == format!("slide:{id}"))
        );
        assert!(
            records
                .iter()
                .any(|r| r.event.action == "auth.token" && r.event.outcome == "denied")
        );

        // The owner sees everything, including the label.
        for (method, path) in endpoints(&id) {
            if method == Method::DELETE {
                continue;
            }
            let r = client()
                .get(format!("{}{path}", server.url))
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{backend:?} owner {path}");
        }
        let list: serde_json::Value = client()
            .get(format!("{}/api/v1/slides", server.url))
            .bearer_auth(&other_hospital)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            list["slides"].as_array().unwrap().is_empty(),
            "other hospital lists nothing"
        );

        // A browser session: deleting without the CSRF token is refused, with it allowed.
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let r = browser
            .post(format!("{}/api/v1/session", server.url))
            .json(&serde_json::json!({"username": "owner", "password": "wrong-password-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = browser
            .post(format!("{}/api/v1/session", server.url))
            .json(&serde_json::json!({"username": "nobody", "password": "wrong-password-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            401,
            "unknown user answers like a wrong password"
        );
        let r = browser
            .post(format!("{}/api/v1/session", server.url))
            .json(&serde_json::json!({"username": "owner", "password": password("owner")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let csrf = r.json::<serde_json::Value>().await.unwrap()["csrf_token"]
            .as_str()
            .unwrap()
            .to_string();
        let slide_url = format!("{}/api/v1/slides/{id}", server.url);
        assert_eq!(
            browser.delete(&slide_url).send().await.unwrap().status(),
            403
        );
        assert_eq!(browser.get(&slide_url).send().await.unwrap().status(), 200);
        let r = browser
            .delete(&slide_url)
            .header("X-CSRF-Token", csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{backend:?}");
        assert_eq!(browser.get(&slide_url).send().await.unwrap().status(), 404);
        assert!(
            server.clinical_objects().await.is_empty(),
            "{backend:?}: objects deleted"
        );
    }
}
