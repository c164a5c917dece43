//! Sign-in and sign-out for browsers: `POST/GET/DELETE /api/v1/session`, and the user's
//! language choice: `PUT /api/v1/session/language`.
//!
//! The session secret travels only in an HttpOnly, SameSite=Strict cookie; the CSRF token is
//! returned in the body for the page to echo in `X-CSRF-Token`. The login request itself must be
//! JSON, which a cross-site form cannot send without a CORS preflight. Unknown users and wrong
//! passwords get the same answer in the same time.

use axum::extract::{ConnectInfo, Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::Platform;
use pathfed_core::accounts::{self, ProfileChange, User};
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{
    ApiError, Authenticated, ErrorBody, JsonBody, SESSION_COOKIE, session_cookie,
};
use pathfed_core::locale::Lang;
use pathfed_core::routes::{Routes, post, put};
use pathfed_core::throttle;
use serde::{Deserialize, Serialize};

use super::AppState;

/// The session routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/session", post(login).get(me).delete(logout))
        .route("/api/v1/session/language", put(set_language))
}

/// The session routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(login, me, logout, set_language),
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

/// 429 with `Retry-After`: the sign-in is locked for `wait` more seconds.
fn too_many_attempts(wait: i64) -> Response {
    let minutes = (wait + 59) / 60;
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!(
            "too many failed sign-ins: try again in {minutes} minute(s), or ask an administrator \
             to unlock the account"
        ),
    )
    .into_response();
    if let Ok(value) = HeaderValue::from_str(&wait.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The CSRF token of the request's session cookie; empty for API tokens, which have none.
async fn request_csrf(platform: &Platform, headers: &HeaderMap) -> Result<String, ApiError> {
    Ok(match session_cookie(headers) {
        Some(secret) => accounts::session_user(&platform.db, &secret)
            .await?
            .map(|(_, csrf)| csrf)
            .unwrap_or_default(),
        None => String::new(),
    })
}

/// The language a user reads the pages (and their e-mails) in.
#[derive(Deserialize, utoipa::ToSchema)]
struct LanguageChoice {
    /// `ja` or `en`; null returns to the browser's languages (and the hospital's for e-mail).
    language: Option<String>,
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
        (status = 429, description = "too many failed sign-ins for this user name or client address: \
            locked for the minutes `Retry-After` gives in seconds (`auth.lockout_minutes`)", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds until the lock ends"))),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn login(
    State(platform): State<Platform>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(credentials) = body.map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("send JSON {{username, password}}: {e}"),
        )
    })?;
    let target = format!("user:{}", credentials.username);
    let account = throttle::account_key(&credentials.username);
    let address = throttle::address_key(&client.ip());
    let now = pathfed_core::clock::now();
    // A locked name or address is refused before the password is looked at, so guessing on
    // cannot tell a right password from a wrong one.
    if let Some(wait) =
        throttle::retry_after(&platform.db, &[account.clone(), address.clone()], now).await?
    {
        let _ = platform
            .audit(
                AuditEvent::anonymous("login", &target, "denied").detail(format!(
                    "locked after failed sign-ins (from {})",
                    client.ip()
                )),
            )
            .await;
        return Ok(too_many_attempts(wait));
    }
    let Some(user) =
        accounts::authenticate(&platform.db, &credentials.username, &credentials.password).await?
    else {
        let auth = &platform.config.auth;
        let account_locked =
            throttle::failed(&platform.db, &account, auth.account_limit(), now).await?;
        let address_locked =
            throttle::failed(&platform.db, &address, auth.address_limit(), now).await?;
        let _ = platform
            .audit(
                AuditEvent::anonymous("login", &target, "denied").detail(format!(
                    "wrong user name or password (from {})",
                    client.ip()
                )),
            )
            .await;
        for (locked, what) in [(account_locked, &target), (address_locked, &address)] {
            if locked {
                let _ = platform
                    .audit(
                        AuditEvent::anonymous("login.lock", what, "ok").detail(format!(
                            "locked for {} minutes after repeated failed sign-ins",
                            auth.lockout_minutes
                        )),
                    )
                    .await;
            }
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong user name or password",
        ));
    };
    throttle::clear(&platform.db, &account, now).await?;
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
    let csrf = request_csrf(&platform, &headers).await?;
    Ok(Json(session_body(&user, &csrf)).into_response())
}

/// Choose the language of the pages (ja, en, or null for the browser's)
#[utoipa::path(
    put,
    path = "/api/v1/session/language",
    tag = "session",
    request_body = LanguageChoice,
    responses(
        (status = 200, description = "saved; the session with the user's new choice", body = SessionBody),
        (status = 400, description = "not `ja`, `en` or null, or the body is not JSON", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn set_language(
    State(platform): State<Platform>,
    Authenticated(mut user): Authenticated,
    headers: HeaderMap,
    JsonBody(choice): JsonBody<LanguageChoice>,
) -> Result<Response, ApiError> {
    let target = format!("user:{}", user.username);
    // Only the two codes the pages send; `Lang`'s parser also takes names, which would store
    // the same but make the API looser than it is documented.
    let language = match choice.language.as_deref() {
        None => None,
        Some(code) => {
            let Some(lang) = Lang::ALL.into_iter().find(|l| l.as_str() == code) else {
                let message = format!("unknown language {code:?} (ja, en, or null)");
                let _ = platform
                    .audit(
                        AuditEvent::by(&user, "session.language", &target, "refused")
                            .detail(message.clone()),
                    )
                    .await;
                return Err(ApiError::bad_request("invalid", message));
            };
            Some(lang)
        }
    };
    let change = ProfileChange {
        language: Some(language),
        ..ProfileChange::default()
    };
    accounts::set_profile(&platform.db, &user.id, &change).await?;
    let shown = language.map_or("browser", Lang::as_str);
    let _ = platform
        .audit(AuditEvent::by(&user, "session.language", &target, "ok").detail(shown))
        .await;
    user.language = language;
    let csrf = request_csrf(&platform, &headers).await?;
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
