//! Sign-in and sign-out for browsers: `POST/GET/DELETE /api/v1/session`.
//!
//! The session secret travels only in an HttpOnly, SameSite=Strict cookie; the CSRF token is
//! returned in the body for the page to echo in `X-CSRF-Token`. The login request itself must be
//! JSON, which a cross-site form cannot send without a CORS preflight. Unknown users and wrong
//! passwords get the same answer in the same time.

use axum::extract::{Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::Platform;
use pathfed_core::accounts::{self, User};
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, SESSION_COOKIE, session_cookie};
use pathfed_core::routes::{Routes, post};
use serde::{Deserialize, Serialize};

use super::AppState;

/// The session routes.
pub fn router() -> Routes<AppState> {
    Routes::new().route("/api/v1/session", post(login).get(me).delete(logout))
}

/// The session routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(login, me, logout),
    tags((name = "session", description = "Browser sign-in: the session cookie and its CSRF token"))
)]
pub struct Api;

/// A sign-in.
#[derive(Deserialize, utoipa::ToSchema)]
struct Credentials {
    /// The user name.
    username: String,
    /// The password.
    password: String,
}

/// The signed-in user and the session's CSRF token.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionBody {
    /// Who is signed in.
    user: User,
    /// What to echo in `X-CSRF-Token` on requests that change state; empty for API tokens.
    csrf_token: String,
}

fn session_body(user: &User, csrf: &str) -> SessionBody {
    SessionBody {
        user: user.clone(),
        csrf_token: csrf.to_string(),
    }
}

/// Sign in (JSON username/password); sets the session cookie
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    security(()),
    request_body = Credentials,
    responses(
        (status = 200, description = "signed in", body = SessionBody,
            headers(("Set-Cookie" = String, description = "the session cookie, HttpOnly, SameSite=Strict"))),
        (status = 400, description = "the body is not JSON `{username, password}`", body = ErrorBody),
        (status = 401, description = "wrong user name or password", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
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

/// The signed-in user and CSRF token
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "session",
    responses(
        (status = 200, description = "session", body = SessionBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
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

/// Sign out
#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "session",
    responses(
        (status = 204, description = "signed out; the cookie is cleared"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
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
