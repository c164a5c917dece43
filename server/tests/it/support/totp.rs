//! Signing in as a browser does, second factor included: an [`Authenticator`] makes TOTP codes
//! (RFC 6238: SHA-1, 6 digits, 30-second steps) as a phone app would, at the server's clock;
//! a [`Browser`] keeps the session cookie and echoes the CSRF token; [`enrol`] sets up a
//! second factor through the API.
//!
//! The server accepts each step's code once, one step either side of its clock. So that a test
//! can sign in several times without waiting for the next step, [`Authenticator::next_code`]
//! hands out each step once, and moves the server's clock on by a step when the present and
//! next steps are both used.

use std::sync::Mutex;

use reqwest::Method;
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use super::TestServer;

/// Seconds per step.
const STEP_S: i64 = 30;

/// The server's clock: the system clock plus the offset [`TestServer::advance_clock`] wrote.
pub fn server_now(server: &TestServer) -> i64 {
    let path = server
        .env
        .iter()
        .find(|(k, _)| k == pathfed_core::clock::OFFSET_FILE_VAR)
        .map(|(_, v)| std::path::PathBuf::from(v))
        .unwrap_or_else(|| server.dir.path().join("clock-offset"));
    let offset: i64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    let system = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    system + offset
}

/// A phone's authenticator app holding one secret.
pub struct Authenticator {
    totp: TOTP,
    /// The last step this app handed out a code of.
    last_step: Mutex<Option<i64>>,
}

impl Authenticator {
    /// The app for a base32 secret (as the enrolment shows it).
    pub fn new(secret_base32: &str) -> Self {
        let secret = Secret::Encoded(secret_base32.to_string())
            .to_bytes()
            .expect("a base32 secret");
        let totp = TOTP::new(Algorithm::SHA1, 6, 1, 30, secret, None, "test".into())
            .expect("a valid TOTP secret");
        Self {
            totp,
            last_step: Mutex::new(None),
        }
    }

    /// The code of the step that holds `unix` seconds.
    pub fn code_at(&self, unix: i64) -> String {
        self.totp.generate(unix as u64)
    }

    /// A code the server accepts now: of a step no code was handed out for before, at most
    /// one step ahead of the server's clock (moved on a step when there is none left).
    pub fn next_code(&self, server: &TestServer) -> String {
        let mut last = self.last_step.lock().unwrap();
        let mut present = server_now(server).div_euclid(STEP_S);
        let step = match *last {
            Some(used) if used >= present => used + 1,
            _ => present,
        };
        if step > present + 1 {
            server.advance_clock(STEP_S);
            present += 1;
        }
        assert!(step <= present + 1, "step {step} is beyond the skew");
        *last = Some(step);
        self.code_at(step * STEP_S)
    }

    /// A 6-digit code the server refuses now: none of the steps within its skew.
    pub fn wrong_code(&self, server: &TestServer) -> String {
        let present = server_now(server).div_euclid(STEP_S);
        let near: Vec<String> = (present - 2..=present + 2)
            .map(|step| self.code_at(step * STEP_S))
            .collect();
        (0..1_000_000u64)
            .map(|n| format!("{:06}", (n * 7919 + 123_457) % 1_000_000))
            .find(|code| !near.contains(code))
            .unwrap()
    }
}

/// A browser: a cookie jar, and the CSRF token of its session.
pub struct Browser<'a> {
    /// The server.
    pub server: &'a TestServer,
    /// The client with the cookie jar.
    pub client: reqwest::Client,
    /// The CSRF token of the session, once signed in.
    pub csrf: String,
}

impl<'a> Browser<'a> {
    /// A browser with no session.
    pub fn new(server: &'a TestServer) -> Self {
        Self {
            server,
            client: reqwest::Client::builder()
                .cookie_store(true)
                .build()
                .unwrap(),
            csrf: String::new(),
        }
    }

    /// `POST /api/v1/session` with the password and, if given, a second-factor code; keeps
    /// the CSRF token of a session it opens. Returns the status and the body.
    pub async fn sign_in(
        &mut self,
        username: &str,
        password: &str,
        code: Option<&str>,
    ) -> (u16, Value) {
        let mut body = json!({"username": username, "password": password});
        if let Some(code) = code {
            body["code"] = json!(code);
        }
        let response = self
            .client
            .post(format!("{}/api/v1/session", self.server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 {
            self.csrf = body["csrf_token"].as_str().unwrap().to_string();
        }
        (status, body)
    }

    /// A request in the session (with the CSRF token); the status and the body (JSON, or the
    /// text as a JSON string, or null when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.server.url))
            .header("X-CSRF-Token", &self.csrf);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }
}

/// Sets up a second factor in the browser's session: starts the enrolment, confirms it with a
/// code from a new [`Authenticator`]; returns the app and the ten recovery codes.
pub async fn enrol(browser: &Browser<'_>) -> (Authenticator, Vec<String>) {
    let (status, started) = browser
        .call(Method::POST, "/api/v1/session/second-factor", None)
        .await;
    assert_eq!(status, 200, "start enrolment: {started}");
    let app = Authenticator::new(started["secret"].as_str().unwrap());
    let code = app.next_code(browser.server);
    let (status, confirmed) = browser
        .call(
            Method::POST,
            "/api/v1/session/second-factor/confirm",
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, 200, "confirm enrolment: {confirmed}");
    let codes = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (app, codes)
}
