//! Browser sessions end on their own, as a shared hospital workstation needs: after
//! `auth.idle_minutes` without a request (while requests keep a session alive, but a page's own
//! polling does not), and after `auth.session_hours` whatever happens. The cookie lasts only
//! until the browser closes, is `Secure` when asked to be, and the session records the
//! client's address. The server's clock is moved, not waited for.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use reqwest::Method;
use serde_json::json;

use crate::support::totp::Browser;
use crate::support::{BACKENDS, Backend, TestServer, password};

const SESSION: &str = "/api/v1/session";

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_ends_and_requests_keep_one_alive() {
    for backend in BACKENDS {
        // The default: 30 idle minutes.
        let server = TestServer::start(backend);
        server.user("Spoke I", "spoke", "idle_user", "submitter");
        let mut browser = Browser::new(&server);
        let (status, body) = browser
            .sign_in("idle_user", &password("idle_user"), None)
            .await;
        assert_eq!(status, 200, "{backend:?}: {body}");

        // A request every 20 minutes keeps the session: each one counts as activity.
        for round in 1..=3 {
            server.advance_clock(20 * 60);
            let (status, body) = browser.call(Method::GET, "/api/v1/cases", None).await;
            assert_eq!(status, 200, "{backend:?}: round {round}: {body}");
        }
        // 31 minutes without one ends it, whatever is asked next.
        server.advance_clock(31 * 60);
        let (status, body) = browser.call(Method::GET, SESSION, None).await;
        assert_eq!(status, 401, "{backend:?}: idle session still open: {body}");
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
        // And it stays ended (it was deleted, not merely refused once).
        let db = server.db().await;
        let left: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE u.username = $1",
        )
        .bind("idle_user")
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(left, 0, "{backend:?}");
        let rows = pathfed_core::audit::recent(&db, 50).await.unwrap();
        assert!(
            rows.iter()
                .any(|r| r.event.action == "auth.session" && r.event.outcome == "denied"),
            "{backend:?}: the refusal is audited"
        );
        // Signing in again works.
        assert_eq!(
            browser
                .sign_in("idle_user", &password("idle_user"), None)
                .await
                .0,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pages_own_polling_does_not_keep_a_session_alive() {
    for backend in BACKENDS {
        // The default: 30 idle minutes.
        let server = TestServer::start(backend);
        server.user("Spoke Q", "spoke", "poll_user", "submitter");
        let mut browser = Browser::new(&server);
        let poll = |browser: &Browser<'_>| {
            // As the notification bell and the case list ask every 30 seconds.
            let request = browser
                .client
                .get(format!("{}/api/v1/notifications", server.url))
                .header("X-Pathfed-Background", "1");
            async move { request.send().await.unwrap().status().as_u16() }
        };
        let (status, body) = browser
            .sign_in("poll_user", &password("poll_user"), None)
            .await;
        assert_eq!(status, 200, "{backend:?}: {body}");

        // Polls are answered while the session lives...
        for minute in [10, 20] {
            server.advance_clock(10 * 60);
            assert_eq!(
                poll(&browser).await,
                200,
                "{backend:?}: poll at minute {minute}"
            );
        }
        // ...but are not the user's activity: 31 minutes after the sign-in it has ended.
        server.advance_clock(11 * 60);
        assert_eq!(
            poll(&browser).await,
            401,
            "{backend:?}: polls kept it alive"
        );
        assert_eq!(browser.call(Method::GET, SESSION, None).await.0, 401);

        // The user's own requests do count; polls after them are answered until the idle
        // time has passed since the last of them.
        let (status, body) = browser
            .sign_in("poll_user", &password("poll_user"), None)
            .await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        server.advance_clock(20 * 60);
        let (status, body) = browser.call(Method::GET, "/api/v1/cases", None).await;
        assert_eq!(status, 200, "{backend:?}: {body}");
        server.advance_clock(20 * 60);
        assert_eq!(
            poll(&browser).await,
            200,
            "{backend:?}: 20 minutes after a request"
        );
        server.advance_clock(11 * 60);
        assert_eq!(
            poll(&browser).await,
            401,
            "{backend:?}: 31 minutes after it"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_ends_after_its_lifetime_however_busy() {
    let server = TestServer::start_with(
        Backend::Local,
        &[
            ("PATHFED_AUTH_SESSION_HOURS", "1"),
            ("PATHFED_AUTH_IDLE_MINUTES", "15"),
            ("PATHFED_AUTH_SECURE_COOKIES", "true"),
        ],
    );
    server.user("Spoke L", "spoke", "busy_user", "submitter");
    let response = reqwest::Client::new()
        .post(format!("{}{SESSION}", server.url))
        .json(&json!({"username": "busy_user", "password": password("busy_user")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(
            cookie.split("; ").any(|p| p == part),
            "{part} missing from {cookie}"
        );
    }
    // A browser-session cookie: closing the browser on a shared workstation forgets it (the
    // server still ends the session when idle or old).
    let attributes = cookie.to_ascii_lowercase();
    assert!(
        !attributes.contains("max-age") && !attributes.contains("expires"),
        "the cookie outlives the browser: {cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let get = |path: &'static str| {
        let request = reqwest::Client::new()
            .get(format!("{}{path}", server.url))
            .header("cookie", session.clone());
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Busy all along: a request every 10 minutes, under the idle limit.
    for minute in (10..=50).step_by(10) {
        server.advance_clock(10 * 60);
        assert_eq!(get("/api/v1/cases").await, 200, "at minute {minute}");
    }
    server.advance_clock(11 * 60);
    assert_eq!(get(SESSION).await, 401, "past the hour it ends anyway");

    // Each session row holds the client's address.
    let mut browser = Browser::new(&server);
    assert_eq!(
        browser
            .sign_in("busy_user", &password("busy_user"), None)
            .await
            .0,
        200
    );
    let db = server.db().await;
    let addresses: Vec<String> = sqlx::query_scalar("SELECT address FROM sessions")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(
        !addresses.is_empty() && addresses.iter().all(|a| a == "127.0.0.1"),
        "{addresses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cookies_are_not_secure_over_plain_http_by_default() {
    let server = TestServer::start(Backend::Local);
    server.user("Spoke C", "spoke", "plain_user", "submitter");
    let response = reqwest::Client::new()
        .post(format!("{}{SESSION}", server.url))
        .json(&json!({"username": "plain_user", "password": password("plain_user")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(
        !cookie.split("; ").any(|p| p == "Secure"),
        "a Secure cookie over plain HTTP would never come back: {cookie}"
    );
}
