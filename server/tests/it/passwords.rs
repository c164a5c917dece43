//! A password change ends what the old password opened: every session and API token of that
//! user stops working at once, on both backends, while other users keep theirs (the user's own
//! change keeps the session it was made in). Passwords follow the rules (13 characters, or 8
//! with a second factor; nothing easy to guess), wherever they are set. Failed sign-ins lock
//! the name and the address, a burst of parallel guesses included; API tokens expire.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::totp::{Browser, enrol};
use crate::support::{As, BACKENDS, Backend, TestServer, password};

const SESSION: &str = "/api/v1/session";
const PASSWORD: &str = "/api/v1/session/password";

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
async fn a_burst_of_parallel_guesses_gets_no_more_tries_than_the_limit() {
    for backend in BACKENDS {
        let server = TestServer::start_with(
            backend,
            &[
                ("PATHFED_AUTH_MAX_FAILURES_PER_ACCOUNT", "5"),
                ("PATHFED_AUTH_MAX_FAILURES_PER_ADDRESS", "100"),
                ("PATHFED_AUTH_LOCKOUT_MINUTES", "15"),
            ],
        );
        server.user("Spoke G", "spoke", "burst_user", "submitter");

        // 40 guesses at once: each is counted before its password is looked at, so only as
        // many as the limit are checked; the rest are refused unchecked.
        let guesses: Vec<String> = (0..40).map(|n| format!("guess-number-{n}")).collect();
        let answers = futures::future::join_all(
            guesses
                .iter()
                .map(|guess| attempt(&server, "burst_user", guess)),
        )
        .await;
        let checked = answers
            .iter()
            .filter(|(status, _, _)| *status == 401)
            .count();
        let refused = answers
            .iter()
            .filter(|(status, _, _)| *status == 429)
            .count();
        assert!(
            (1..=5).contains(&checked),
            "{backend:?}: {checked} guesses were checked, the limit is 5"
        );
        assert_eq!(
            checked + refused,
            40,
            "{backend:?}: every other guess is refused: {:?}",
            answers
                .iter()
                .map(|(status, _, _)| status)
                .collect::<Vec<_>>()
        );
        for (status, retry, body) in &answers {
            if *status == 429 {
                assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
                assert!(retry.is_some(), "{backend:?}: no Retry-After");
            }
        }
        // The name is locked: the right password is refused too.
        let (status, _, _) = attempt(&server, "burst_user", &password("burst_user")).await;
        assert_eq!(status, 429, "{backend:?}: locked after the burst");

        // One lock, audited once.
        let db = server.db().await;
        let locks = pathfed_core::audit::recent(&db, 200)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.event.action == "login.lock" && r.event.target == "user:burst_user")
            .count();
        assert_eq!(locks, 1, "{backend:?}");

        // A right password signs in once the lock is lifted, and clears the count.
        server.cli_ok(&["admin", "user", "unlock", "burst_user"]);
        for n in 1..=4 {
            let (status, _, _) = attempt(&server, "burst_user", "still-not-it").await;
            assert_eq!(status, 401, "{backend:?}: attempt {n} after the unlock");
        }
        let right = password("burst_user");
        assert_eq!(attempt(&server, "burst_user", &right).await.0, 200);
        for n in 1..=4 {
            let (status, _, _) = attempt(&server, "burst_user", "still-not-it").await;
            assert_eq!(
                status, 401,
                "{backend:?}: the sign-in cleared the count ({n})"
            );
        }
        assert_eq!(attempt(&server, "burst_user", &right).await.0, 200);
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

#[tokio::test(flavor = "multi_thread")]
async fn changing_ones_own_password_keeps_this_session_and_ends_the_rest() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Spoke S", "spoke", "self_user", "submitter");
        let old = password("self_user");
        let mut here = Browser::new(&server);
        assert_eq!(here.sign_in("self_user", &old, None).await.0, 200);
        let mut elsewhere = Browser::new(&server);
        assert_eq!(elsewhere.sign_in("self_user", &old, None).await.0, 200);
        let api = As {
            server: &server,
            token,
        };
        api.ok(Method::GET, SESSION, None).await;

        let change =
            |current: &str, new: &str| json!({"current_password": current, "new_password": new});
        let (status, body) = here
            .call(
                Method::PUT,
                PASSWORD,
                Some(change("not-my-password-1", "violet tractor embassy")),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_credentials")),
            "{backend:?}: {body}"
        );
        // Each rule is named when it is broken.
        for (weak, rule) in [
            ("short-pw-1", "at least 13 characters"),
            ("passwordpassword", "too easy to guess"),
            ("self_user-2024", "too easy to guess"),
        ] {
            let (status, body) = here
                .call(Method::PUT, PASSWORD, Some(change(old.as_str(), weak)))
                .await;
            assert_eq!(status, 400, "{backend:?}: {weak} accepted: {body}");
            assert_eq!(body["error"]["code"], "weak_password", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(rule), "{weak}: {message}");
        }
        // Refusals changed nothing.
        assert_eq!(elsewhere.call(Method::GET, SESSION, None).await.0, 200);

        let new = "violet tractor embassy";
        let (status, body) = here
            .call(Method::PUT, PASSWORD, Some(change(old.as_str(), new)))
            .await;
        assert_eq!(status, 204, "{backend:?}: {body}");
        assert_eq!(
            here.call(Method::GET, SESSION, None).await.0,
            200,
            "{backend:?}: the session that changed it stays"
        );
        assert_eq!(
            elsewhere.call(Method::GET, SESSION, None).await.0,
            401,
            "{backend:?}: the other session ended"
        );
        let (status, _) = api.call(Method::GET, SESSION, None).await;
        assert_eq!(
            status.as_u16(),
            401,
            "{backend:?}: the API token was revoked"
        );
        let mut fresh = Browser::new(&server);
        assert_eq!(fresh.sign_in("self_user", &old, None).await.0, 401);
        assert_eq!(fresh.sign_in("self_user", new, None).await.0, 200);

        let db = server.db().await;
        let changed: Option<i64> =
            sqlx::query_scalar("SELECT password_changed_at FROM users WHERE username = $1")
                .bind("self_user")
                .fetch_one(db.pool())
                .await
                .unwrap();
        assert!(changed.is_some(), "{backend:?}: the change time is kept");
        let rows = pathfed_core::audit::recent(&db, 100).await.unwrap();
        for outcome in ["ok", "refused", "denied"] {
            assert!(
                rows.iter().any(|r| r.event.action == "session.password"
                    && r.event.target == "user:self_user"
                    && r.event.outcome == outcome),
                "{backend:?}: no {outcome} session.password row"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn weak_passwords_are_refused_and_a_second_factor_allows_eight_characters() {
    let server = TestServer::start(Backend::Local);
    // An administrator on the server host is held to the same rules.
    let weak = server.dir.path().join("weak.pw");
    server.cli_ok(&["admin", "hospital", "add", "Spoke W", "--kind", "spoke"]);
    for (refused, rule) in [
        ("tiny-pw-12", "at least 13 characters"),
        ("aaaaaaaaaaaaaaaa", "too easy to guess"),
        ("1234567890123", "too easy to guess"),
    ] {
        std::fs::write(&weak, refused).unwrap();
        let out = server.cli(&[
            "admin",
            "user",
            "add",
            "weak_user",
            "--hospital",
            "Spoke W",
            "--role",
            "submitter",
            "--password-file",
            weak.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{refused} accepted");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(rule), "{refused}: {said}");
    }
    server.user("Spoke W", "spoke", "eight_user", "submitter");
    std::fs::write(&weak, "password1234").unwrap();
    let out = server.cli(&[
        "admin",
        "user",
        "password",
        "eight_user",
        "--password-file",
        weak.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a reset to a weak password");

    // Eight characters need a second factor.
    let short = "Vx9#qT4!";
    let mut browser = Browser::new(&server);
    let pw = password("eight_user");
    assert_eq!(browser.sign_in("eight_user", &pw, None).await.0, 200);
    let body = json!({"current_password": pw, "new_password": short});
    let (status, answer) = browser
        .call(Method::PUT, PASSWORD, Some(body.clone()))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("8 for a user who also signs in with a second factor"),
        "{answer}"
    );
    let (app, _) = enrol(&browser).await;
    let (status, answer) = browser.call(Method::PUT, PASSWORD, Some(body)).await;
    assert_eq!(status, 204, "{answer}");
    let mut again = Browser::new(&server);
    let (status, answer) = again
        .sign_in("eight_user", short, Some(&app.next_code(&server)))
        .await;
    assert_eq!(status, 200, "{answer}");
    // Even with a second factor a common password is refused.
    let (status, answer) = again
        .call(
            Method::PUT,
            PASSWORD,
            Some(json!({"current_password": short, "new_password": "iloveyou"})),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("weak_password")),
        "{answer}"
    );
}
