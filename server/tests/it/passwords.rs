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
