//! The people of the consultation and research tests, and the steps they take: a spoke
//! submitter, two hub pathologists and a hub researcher; reading and signing a case out.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use super::{As, TestServer};

/// A read of `slide` with `code`.
pub fn read(code: &str, slide: &str) -> Value {
    json!({
        "code": code,
        "findings": "Tubular adenoma, low grade",
        "slides": [{ "slide_id": slide, "code": code, "findings": "" }],
    })
}

/// First read, concordant blind double-check, sign-out with `code`.
pub async fn sign_out_with(first: &As<'_>, second: &As<'_>, case: &str, slide: &str, code: &str) {
    let path = format!("/api/v1/cases/{case}");
    first.ok(Method::POST, &format!("{path}/claim"), None).await;
    first
        .ok(
            Method::PUT,
            &format!("{path}/reads/primary"),
            Some(read(code, slide)),
        )
        .await;
    second
        .ok(Method::POST, &format!("{path}/double-check"), None)
        .await;
    second
        .ok(
            Method::PUT,
            &format!("{path}/reads/second"),
            Some(read(code, slide)),
        )
        .await;
    first
        .ok(Method::POST, &format!("{path}/sign-out"), None)
        .await;
}

/// Polls `probe` until it gives a value or `timeout` passes.
pub async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until research slide `id` is tombstoned; returns the reason recorded.
pub async fn tombstone(db: &pathfed_core::Db, id: &str) -> String {
    wait_for("the tombstone", Duration::from_secs(60), || {
        let (db, id) = (db.clone(), id.to_string());
        async move {
            sqlx::query(
                "SELECT deleted_reason FROM research_slides WHERE id = $1 \
                 AND deleted_at IS NOT NULL",
            )
            .bind(id)
            .fetch_optional(db.pool())
            .await
            .unwrap()
            .map(|row| row.get::<String, _>("deleted_reason"))
        }
    })
    .await
}

/// The people of both tests: a spoke submitter, two hub pathologists and a hub researcher.
pub struct Staff<'a> {
    /// Submitter of Spoke A.
    pub spoke: As<'a>,
    /// First reader at Hub H.
    pub first: As<'a>,
    /// Second reader at Hub H.
    pub second: As<'a>,
    /// Researcher at Hub H.
    pub researcher: As<'a>,
}

/// Creates Spoke A (routed to Hub H by default) and its staff.
pub fn staff(server: &TestServer) -> Staff<'_> {
    let who = |hospital: &str, kind: &str, name: &str, role: &str| As {
        server,
        token: server.user(hospital, kind, name, role),
    };
    let staff = Staff {
        spoke: who("Spoke A", "spoke", "sub_a", "submitter"),
        first: who("Hub H", "hub", "path1", "pathologist"),
        second: who("Hub H", "hub", "path2", "pathologist"),
        researcher: who("Hub H", "hub", "res_h", "researcher"),
    };
    server.cli_ok(&["admin", "hospital", "default-hub", "Spoke A", "Hub H"]);
    staff
}
