//! The user's language choice, on both backends: `PUT /api/v1/session/language` stores `ja` or
//! `en` (or null, back to the browser's languages) for the caller alone, refuses anything else
//! with a JSON error, checks a browser session's CSRF token like every other change, and is
//! audited. The session answer carries the choice and the hospital's time zone and language.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use pathfed_core::audit::recent;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{As, BACKENDS, TestServer, password};

const LANGUAGE: &str = "/api/v1/session/language";
const SESSION: &str = "/api/v1/session";

#[tokio::test(flavor = "multi_thread")]
async fn language_choice_is_saved_refused_reset_and_csrf_checked() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let reader = As {
            token: server.user("Hub L", "hub", "lang_reader", "pathologist"),
            server: &server,
        };
        let colleague = As {
            token: server.user("Hub L", "hub", "lang_colleague", "pathologist"),
            server: &server,
        };

        // Nothing chosen yet: the pages follow the browser; the hospital's defaults are Japan's.
        let session = reader.ok(Method::GET, SESSION, None).await;
        assert_eq!(
            session["user"]["language"],
            Value::Null,
            "{backend:?}: {session}"
        );
        assert_eq!(
            session["user"]["hospital"]["time_zone"], "Asia/Tokyo",
            "{session}"
        );
        assert_eq!(session["user"]["hospital"]["language"], "ja", "{session}");

        // Japanese, chosen with an API token (no CSRF token there, none answered).
        let answer = reader
            .ok(Method::PUT, LANGUAGE, Some(json!({"language": "ja"})))
            .await;
        assert_eq!(answer["user"]["language"], "ja", "{backend:?}: {answer}");
        assert_eq!(answer["user"]["username"], "lang_reader", "{answer}");
        assert_eq!(answer["csrf_token"], "", "{answer}");
        let session = reader.ok(Method::GET, SESSION, None).await;
        assert_eq!(session["user"]["language"], "ja", "{backend:?}: saved");
        let other = colleague.ok(Method::GET, SESSION, None).await;
        assert_eq!(
            other["user"]["language"],
            Value::Null,
            "{backend:?}: only the caller's choice changes"
        );

        // Anything but ja, en or null is refused as JSON and changes nothing.
        for refused in [json!({"language": "fr"}), json!({"language": "Japanese"})] {
            let (status, body) = reader.call(Method::PUT, LANGUAGE, Some(refused)).await;
            assert_eq!(status.as_u16(), 400, "{backend:?}: {body}");
            assert_eq!(body["error"]["code"], "invalid", "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("ja, en"),
                "{body}"
            );
        }
        let message = reader
            .refused(Method::PUT, LANGUAGE, Some(json!({"language": 5})), 422)
            .await;
        assert!(!message.is_empty());
        let session = reader.ok(Method::GET, SESSION, None).await;
        assert_eq!(session["user"]["language"], "ja", "{backend:?}: kept");

        // Null returns to the browser's languages.
        let answer = reader
            .ok(Method::PUT, LANGUAGE, Some(json!({"language": null})))
            .await;
        assert_eq!(
            answer["user"]["language"],
            Value::Null,
            "{backend:?}: {answer}"
        );
        let session = reader.ok(Method::GET, SESSION, None).await;
        assert_eq!(
            session["user"]["language"],
            Value::Null,
            "{backend:?}: reset"
        );

        // A browser session must echo its CSRF token, and gets it back in the answer.
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let login: Value = browser
            .post(format!("{}{SESSION}", server.url))
            .json(&json!({"username": "lang_reader", "password": password("lang_reader")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let csrf = login["csrf_token"].as_str().unwrap().to_string();
        assert!(!csrf.is_empty(), "{login}");
        let url = format!("{}{LANGUAGE}", server.url);
        let without = browser
            .put(&url)
            .json(&json!({"language": "en"}))
            .send()
            .await
            .unwrap();
        assert_eq!(without.status().as_u16(), 403, "{backend:?}: no CSRF token");
        let with = browser
            .put(&url)
            .header("X-CSRF-Token", csrf.as_str())
            .json(&json!({"language": "en"}))
            .send()
            .await
            .unwrap();
        assert_eq!(with.status().as_u16(), 200, "{backend:?}");
        let answer: Value = with.json().await.unwrap();
        assert_eq!(answer["user"]["language"], "en", "{answer}");
        assert_eq!(answer["csrf_token"], csrf.as_str(), "{answer}");
        let session: Value = browser
            .get(format!("{}{SESSION}", server.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(session["user"]["language"], "en", "{backend:?}: {session}");

        // Each choice and each refusal is in the audit log.
        let rows = recent(&server.db().await, 500).await.unwrap();
        let events: Vec<_> = rows
            .iter()
            .filter(|r| r.event.action == "session.language" && r.event.actor == "lang_reader")
            .map(|r| (r.event.outcome.as_str(), r.event.detail.as_str()))
            .collect();
        for (outcome, detail) in [("ok", "ja"), ("ok", "browser"), ("ok", "en")] {
            assert!(
                events.contains(&(outcome, detail)),
                "{backend:?}: no {outcome} {detail} in {events:?}"
            );
        }
        assert_eq!(
            events.iter().filter(|(o, _)| *o == "refused").count(),
            2,
            "{backend:?}: {events:?}"
        );
    }
}
