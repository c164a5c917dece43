//! A password change ends what the old password opened: every session and API token of that
//! user stops working at once, on both backends, while other users keep theirs.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{As, BACKENDS, TestServer, password};

const SESSION: &str = "/api/v1/session";

#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_ends_the_users_sessions_and_tokens() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Spoke P", "spoke", "pw_user", "submitter");
        let other = As {
            token: server.user("Spoke P", "spoke", "pw_other", "submitter"),
            server: &server,
        };
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let sign_in = |pw: String| {
            let browser = browser.clone();
            let url = format!("{}{SESSION}", server.url);
            async move {
                browser
                    .post(url)
                    .json(&json!({"username": "pw_user", "password": pw}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        };
        assert_eq!(sign_in(password("pw_user")).await, 200);
        let session_status = || async {
            browser
                .get(format!("{}{SESSION}", server.url))
                .send()
                .await
                .unwrap()
                .status()
        };
        assert_eq!(session_status().await, 200, "{backend:?}: signed in");
        let user = As {
            token: token.clone(),
            server: &server,
        };
        user.ok(Method::GET, SESSION, None).await;

        let new_password = server.dir.path().join("new.pw");
        std::fs::write(&new_password, "a-new-password-for-pw_user").unwrap();
        let said = server.cli_ok(&[
            "admin",
            "user",
            "password",
            "pw_user",
            "--password-file",
            new_password.to_str().unwrap(),
        ]);
        assert!(
            said.contains("ended 1 session(s) and revoked 1 API token(s)"),
            "{backend:?}: {said}"
        );

        assert_eq!(
            session_status().await,
            401,
            "{backend:?}: the session ended"
        );
        let (status, body): (_, Value) = user.call(Method::GET, SESSION, None).await;
        assert_eq!(
            status.as_u16(),
            401,
            "{backend:?}: the token was revoked: {body}"
        );
        other.ok(Method::GET, SESSION, None).await;
        assert_eq!(sign_in(password("pw_user")).await, 401, "the old password");
        assert_eq!(sign_in("a-new-password-for-pw_user".into()).await, 200);
        assert_eq!(
            session_status().await,
            200,
            "{backend:?}: the new password signs in"
        );
    }
}

/// A sign-in attempt as a browser makes it; the status and the `Retry-After` seconds, if any.
async fn attempt(server: &TestServer, username: &str, pw: &str) -> (u16, Option<i64>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{SESSION}", server.url))
        .json(&json!({"username": username, "password": pw}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failed_sign_ins_lock_the_name_and_the_address() {
    for backend in BACKENDS {
        let server = TestServer::start_with(
            backend,
            &[
                ("PATHFED_AUTH_MAX_FAILURES_PER_ACCOUNT", "5"),
                ("PATHFED_AUTH_MAX_FAILURES_PER_ADDRESS", "12"),
                ("PATHFED_AUTH_LOCKOUT_MINUTES", "15"),
            ],
        );
        server.user("Spoke T", "spoke", "locked_user", "submitter");
        let right = password("locked_user");

        // Four wrong passwords are answered as wrong; the fifth locks the name.
        for n in 1..=5 {
            let (status, retry, body) = attempt(&server, "locked_user", "wrong").await;
            assert_eq!(status, 401, "{backend:?}: attempt {n}: {body}");
            assert_eq!(retry, None);
        }
        // Locked: even the right password gets 429, with the wait.
        let (status, retry, body) = attempt(&server, "locked_user", &right).await;
        assert_eq!(status, 429, "{backend:?}: {body}");
        assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
        let wait = retry.expect("Retry-After");
        assert!((1..=900).contains(&wait), "{backend:?}: Retry-After {wait}");
        // A name that does not exist is answered exactly alike.
        for _ in 1..=5 {
            assert_eq!(attempt(&server, "nobody_here", "wrong").await.0, 401);
        }
        let (status, retry, _) = attempt(&server, "nobody_here", "wrong").await;
        assert_eq!(
            (status, retry.is_some()),
            (429, true),
            "{backend:?}: unknown names too"
        );

        // An administrator lifts the lock; the right password then signs in.
        let said = server.cli_ok(&["admin", "user", "unlock", "locked_user"]);
        assert!(said.contains("unlocked locked_user"), "{said}");
        assert_eq!(attempt(&server, "locked_user", &right).await.0, 200);

        // One address guessing across many names is locked as a whole (12 failures so far).
        for n in 0..2 {
            let name = format!("spray{n}");
            assert_eq!(attempt(&server, &name, "wrong").await.0, 401, "{backend:?}");
        }
        let (status, _, body) = attempt(&server, "locked_user", &right).await;
        assert_eq!(status, 429, "{backend:?}: the address is locked: {body}");

        // Locks end by themselves.
        server.advance_clock(15 * 60 + 1);
        assert_eq!(
            attempt(&server, "locked_user", &right).await.0,
            200,
            "{backend:?}"
        );

        let db = server.db().await;
        let actions: Vec<String> = pathfed_core::audit::recent(&db, 200)
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{} {} {}", r.event.action, r.event.target, r.event.outcome))
            .collect();
        for expected in [
            "login.lock user:locked_user ok",
            "login.lock user:nobody_here ok",
            "login.lock addr:127.0.0.1 ok",
            "admin.user.unlock user:locked_user ok",
        ] {
            assert!(
                actions.iter().any(|a| a == expected),
                "{backend:?}: no audit row {expected:?} in {actions:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_tokens_expire() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        // The harness's own token lasts the default 90 days.
        let lasting = server.user("Spoke E", "spoke", "token_user", "submitter");
        let short = server.cli_ok(&[
            "admin",
            "token",
            "create",
            "--user",
            "token_user",
            "--name",
            "one day",
            "--expires-days",
            "1",
        ]);
        let short = short.trim().to_string();
        let status = |token: String| {
            let url = format!("{}{SESSION}", server.url);
            async move {
                reqwest::Client::new()
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status(short.clone()).await, 200, "{backend:?}");
        server.advance_clock(86_400 + 1);
        assert_eq!(
            status(short.clone()).await,
            401,
            "{backend:?}: expired after a day"
        );
        assert_eq!(
            status(lasting.clone()).await,
            200,
            "{backend:?}: the default lasts longer"
        );
        let listed = server.cli_ok(&["admin", "token", "list"]);
        assert!(
            listed
                .lines()
                .any(|l| l.contains("one day") && l.ends_with("expired")),
            "{listed}"
        );
        // A token lasts at least a day and at most a year.
        for days in ["0", "367"] {
            let refused = server.cli(&[
                "admin",
                "token",
                "create",
                "--user",
                "token_user",
                "--expires-days",
                days,
            ]);
            assert!(!refused.status.success(), "{days} days accepted");
        }
    }
}
