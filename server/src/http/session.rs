//! Sign-in and sign-out for browsers: `POST/GET/DELETE /api/v1/session`.
//!
//! The session secret travels only in an HttpOnly, SameSite=Strict cookie; the CSRF token is
//! returned in the body for the page to echo in `X-CSRF-Token`. The login request itself must be
//! JSON, which a cross-site form cannot send without a CORS preflight. Unknown users and wrong
//! passwords get the same answer in the same time.

use axum::Router;
use axum::extract::{Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use pathfed_core::Platform;
use pathfed_core::accounts::{self, User};
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, SESSION_COOKIE, session_cookie};
use serde::Deserialize;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/session", post(login).get(me).delete(logout))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn session_body(user: &User, csrf: &str) -> serde_json::Value {
    serde_json::json!({"user": user, "csrf_token": csrf})
}

async fn login(
    State(platform): State<Platform>,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(credentials) = body.map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("send JSON {{username, password}}: {e}"),
        )
    })?;
    let Some(user) =
        accounts::authenticate(&platform.db, &credentials.username, &credentials.password).await?
    else {
        let _ = platform
            .audit(
                AuditEvent::anonymous("login", &format!("user:{}", credentials.username), "denied")
                    .detail("wrong user name or password"),
            )
            .await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong user name or password",
        ));
    };
    let hours = platform.config.auth.session_hours;
    let (secret, csrf) = accounts::create_session(&platform.db, &user, hours).await?;
    let _ = platform
        .audit(AuditEvent::by(
            &user,
            "login",
            &format!("user:{}", user.username),
            "ok",
        ))
        .await;
    let secure = if platform.config.auth.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        hours * 3600
    );
    let mut response = Json(session_body(&user, &csrf)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

async fn me(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Token clients have no CSRF token; browsers get theirs back after a reload.
    let csrf = match session_cookie(&headers) {
        Some(secret) => accounts::session_user(&platform.db, &secret)
            .await?
            .map(|(_, csrf)| csrf)
            .unwrap_or_default(),
        None => String::new(),
    };
    Ok(Json(session_body(&user, &csrf)).into_response())
}

async fn logout(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(secret) = session_cookie(&headers) {
        accounts::delete_session(&platform.db, &secret).await?;
    }
    let _ = platform
        .audit(AuditEvent::by(
            &user,
            "logout",
            &format!("user:{}", user.username),
            "ok",
        ))
        .await;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("pathfed_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(response)
}
