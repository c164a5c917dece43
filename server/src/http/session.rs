//! Sign-in and sign-out for browsers: `POST/GET/DELETE /api/v1/session`; the user's second
//! factor: `POST/DELETE /api/v1/session/second-factor` and `…/second-factor/confirm`; the
//! user's own password: `PUT /api/v1/session/password`; and the user's language choice:
//! `PUT /api/v1/session/language`.
//!
//! The session secret travels only in an HttpOnly, SameSite=Strict cookie (`Secure` over
//! HTTPS) that lasts until the browser closes; the CSRF token is returned in the body for the
//! page to echo in `X-CSRF-Token`. The login request itself must be JSON, which a cross-site
//! form cannot send without a CORS preflight. Unknown users and wrong passwords get the same
//! answer in the same time. Every attempt is counted against the name and the address before
//! it is checked (`throttle::reserve`), so parallel guesses get no more tries than the limit.
//!
//! A user with a second factor signs in with the password and a code (TOTP or a recovery code);
//! the password alone answers `second_factor_required`, which tells the page to ask for the
//! code. A wrong code counts as a failed sign-in. A user who must have a second factor but has
//! none yet gets a session in stage `enrol`, which reaches only these routes until the second
//! factor is set up (`pathfed_core::http::Authenticated` enforces it).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Json, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::Platform;
use pathfed_core::accounts::{self, NewSession, ProfileChange, Session, SessionStage, User};
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{
    ApiError, Authenticated, ErrorBody, JsonBody, SESSION_COOKIE, session_cookie,
};
use pathfed_core::locale::Lang;
use pathfed_core::routes::{Routes, post, put};
use pathfed_core::second_factor::{self, Check, Enrolment};
use pathfed_core::{CoreError, request_context, throttle};
use serde::{Deserialize, Serialize};

use super::AppState;

/// The session routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/session", post(login).get(me).delete(logout))
        .route("/api/v1/session/language", put(set_language))
        .route(
            "/api/v1/session/second-factor",
            post(begin_second_factor).delete(remove_second_factor),
        )
        .route(
            "/api/v1/session/second-factor/confirm",
            post(confirm_second_factor),
        )
        .route("/api/v1/session/password", put(change_password))
}

/// The session routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        login,
        me,
        logout,
        set_language,
        begin_second_factor,
        confirm_second_factor,
        remove_second_factor,
        change_password
    ),
    tags((name = "session", description = "Browser sign-in: the session cookie and its CSRF \
        token, the user's second factor and password"))
)]
pub struct Api;

/// A sign-in.
#[derive(Deserialize, utoipa::ToSchema)]
struct Credentials {
    /// The user name.
    username: String,
    /// The password.
    password: String,
    /// The second-factor code (6 digits from the authenticator app, or a recovery code), for
    /// users who have a second factor.
    #[serde(default)]
    code: Option<String>,
}

/// The signed-in user and the session's CSRF token.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionBody {
    /// Who is signed in.
    user: User,
    /// What to echo in `X-CSRF-Token` on requests that change state; empty for API tokens.
    csrf_token: String,
    /// The user must set up a second factor before anything but `/api/v1/session…` answers
    /// (the session is in stage `enrol`).
    second_factor_enrolment_required: bool,
}

/// A second-factor code.
#[derive(Deserialize, utoipa::ToSchema)]
struct CodeBody {
    /// 6 digits from the authenticator app (or, to remove the second factor, a recovery code).
    code: String,
}

/// The recovery codes of a confirmed second factor, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
struct RecoveryCodes {
    /// Ten one-time codes for signing in without the phone; each works once.
    recovery_codes: Vec<String>,
}

/// The user's own password change.
#[derive(Deserialize, utoipa::ToSchema)]
struct PasswordChange {
    /// The password now.
    current_password: String,
    /// The new password: at least 13 characters (8 with a second factor), not easy to guess.
    new_password: String,
}

fn session_body(user: &User, csrf: &str, stage: SessionStage) -> SessionBody {
    SessionBody {
        user: user.clone(),
        csrf_token: csrf.to_string(),
        second_factor_enrolment_required: stage == SessionStage::Enrol,
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

/// The request's live browser session and its secret, if it came with one of `user`'s (API
/// tokens have none; a cookie of another user's session beside a token is ignored, so that
/// token cannot act on that session).
async fn current_session(
    platform: &Platform,
    user: &User,
    headers: &HeaderMap,
) -> Result<Option<(Session, String)>, ApiError> {
    let Some(secret) = session_cookie(headers) else {
        return Ok(None);
    };
    let idle = platform.config.auth.idle_minutes;
    // The request was let in (and counted as activity, or not) by `Authenticated` already.
    let session = accounts::session_user(&platform.db, &secret, idle, false).await?;
    Ok(session
        .filter(|session| session.user.id == user.id)
        .map(|session| (session, secret)))
}

/// The answer about the request's session: its CSRF token and stage (an API token has neither).
async fn describe(
    platform: &Platform,
    user: &User,
    headers: &HeaderMap,
) -> Result<SessionBody, ApiError> {
    Ok(match current_session(platform, user, headers).await? {
        Some((session, _)) => session_body(user, &session.csrf_token, session.stage),
        None => session_body(user, "", SessionStage::Full),
    })
}

/// Audits a failed sign-in (already counted against the user name and the address when it was
/// reserved) and the locks its reservations set: `locks` pairs each key's "this attempt locked
/// it" with the key's audit target.
async fn count_failure(
    platform: &Platform,
    locks: [(bool, &str); 2],
    target: &str,
    why: &str,
    client: IpAddr,
) {
    let _ = platform
        .audit(
            AuditEvent::anonymous("login", target, "denied")
                .detail(format!("{why} (from {client})")),
        )
        .await;
    for (locked, what) in locks {
        if locked {
            audit_lock(platform, what).await;
        }
    }
}

/// Audits that failed attempts locked `what` (a user name's target or an address key).
async fn audit_lock(platform: &Platform, what: &str) {
    let minutes = platform.config.auth.lockout_minutes;
    let _ = platform
        .audit(
            AuditEvent::anonymous("login.lock", what, "ok").detail(format!(
                "locked for {minutes} minutes after repeated failed sign-ins"
            )),
        )
        .await;
}

/// Refuses a sign-in on a locked user name or address (audited), with the longest wait of
/// `keys` (at least `wait`, the refusing key's).
async fn refuse_locked(
    platform: &Platform,
    keys: &[String],
    target: &str,
    client: IpAddr,
    wait: i64,
) -> Result<Response, ApiError> {
    let now = pathfed_core::clock::now();
    let longest = throttle::retry_after(&platform.db, keys, now)
        .await?
        .map_or(wait, |w| w.max(wait));
    let _ = platform
        .audit(
            AuditEvent::anonymous("login", target, "denied")
                .detail(format!("locked after failed sign-ins (from {client})")),
        )
        .await;
    Ok(too_many_attempts(longest))
}

/// The language a user reads the pages (and their e-mails) in.
#[derive(Deserialize, utoipa::ToSchema)]
struct LanguageChoice {
    /// `ja` or `en`; null returns to the browser's languages (and the hospital's for e-mail).
    language: Option<String>,
}

/// Sign in (JSON username, password and, with a second factor, code); sets the session cookie
#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "session",
    security(()),
    request_body = Credentials,
    responses(
        (status = 200, description = "signed in; with `second_factor_enrolment_required` the \
            session reaches only `/api/v1/session…` until a second factor is set up", body = SessionBody,
            headers(("Set-Cookie" = String, description = "the session cookie, HttpOnly, SameSite=Strict, Secure over HTTPS; \
                without Max-Age, so it ends when the browser closes"))),
        (status = 400, description = "the body is not JSON `{username, password, code?}`", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: wrong user name or password; \
            `second_factor_required`: the password is right and the user has a second factor, so \
            send it again with `code`; `invalid_second_factor`: the code is wrong or was already \
            used (counted as a failed sign-in)", body = ErrorBody),
        (status = 429, description = "too many failed sign-ins for this user name or client address: \
            locked for the minutes `Retry-After` gives in seconds (`auth.lockout_minutes`)", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds until the lock ends"))),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn login(
    State(platform): State<Platform>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(credentials) = body.map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("send JSON {{username, password}} (and code, with a second factor): {e}"),
        )
    })?;
    // Behind a trusted proxy the client is the address it forwarded for, not the proxy.
    let client = request_context::client_address().unwrap_or_else(|| peer.ip());
    let target = format!("user:{}", credentials.username);
    let account = throttle::account_key(&credentials.username);
    let address = throttle::address_key(&client);
    let keys = [account.clone(), address.clone()];
    let auth = &platform.config.auth;
    let (account_limit, address_limit) = (auth.account_limit(), auth.address_limit());
    let now = pathfed_core::clock::now();
    // The attempt is counted against the name and the address before the password is looked
    // at, each in one statement: a locked name or address is refused unchecked, so guessing on
    // cannot tell a right password from a wrong one, and a burst of parallel guesses gets no
    // more tries than the limit. A right password gives its count back.
    let account_locks = match throttle::reserve(&platform.db, &account, account_limit, now).await? {
        throttle::Reservation::Allowed { locks } => locks,
        throttle::Reservation::Refused(wait) => {
            return refuse_locked(&platform, &keys, &target, client, wait).await;
        }
    };
    let address_locks = match throttle::reserve(&platform.db, &address, address_limit, now).await? {
        throttle::Reservation::Allowed { locks } => locks,
        throttle::Reservation::Refused(wait) => {
            // Not checked, so not a guess against the name.
            throttle::undo(&platform.db, &account, account_limit).await?;
            return refuse_locked(&platform, &keys, &target, client, wait).await;
        }
    };
    let locks = [
        (account_locks, target.as_str()),
        (address_locks, address.as_str()),
    ];
    let Some(user) =
        accounts::authenticate(&platform.db, &credentials.username, &credentials.password).await?
    else {
        count_failure(
            &platform,
            locks,
            &target,
            "wrong user name or password",
            client,
        )
        .await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong user name or password",
        ));
    };
    let mut second_factor_at = None;
    if user.second_factor {
        let code = credentials
            .code
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        let Some(code) = code else {
            // Not a failure: the page asks for the code and sends both again.
            throttle::undo(&platform.db, &account, account_limit).await?;
            throttle::undo(&platform.db, &address, address_limit).await?;
            let _ = platform
                .audit(
                    AuditEvent::by(&user, "login", &target, "refused")
                        .detail(format!("second factor required (from {client})")),
                )
                .await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "second_factor_required",
                "enter the 6-digit code from your authenticator app (or a recovery code)",
            ));
        };
        if !second_factor::verify(&platform, &user.id, code).await? {
            count_failure(&platform, locks, &target, "wrong second factor", client).await;
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_second_factor",
                "the code is wrong or was already used: enter the code your app shows now",
            ));
        }
        second_factor_at = Some(pathfed_core::clock::now());
    }
    let stage = if !user.second_factor && second_factor::required(&platform, &user).await? {
        SessionStage::Enrol
    } else {
        SessionStage::Full
    };
    throttle::clear(&platform.db, &account, now).await?;
    throttle::undo(&platform.db, &address, address_limit).await?;
    let hours = platform.config.auth.session_hours;
    let start = NewSession {
        stage,
        second_factor_at,
        address: Some(client),
    };
    let (secret, csrf) = accounts::open_session(&platform.db, &user, hours, &start).await?;
    let how = match (second_factor_at, stage) {
        (Some(_), _) => "with a second factor",
        (None, SessionStage::Enrol) => "password only; must set up a second factor",
        (None, SessionStage::Full) => "password",
    };
    let _ = platform
        .audit(
            AuditEvent::by(&user, "login", &format!("user:{}", user.username), "ok")
                .detail(format!("{how} (from {client})")),
        )
        .await;
    let secure = if platform.config.auth.secure_cookies || request_context::is_https() {
        "; Secure"
    } else {
        ""
    };
    // No Max-Age or Expires: the browser forgets the cookie when it closes (a shared hospital
    // workstation); the server ends the session when idle or old in any case.
    let cookie = format!("{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/{secure}");
    let mut response = Json(session_body(&user, &csrf, stage)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
    );
    Ok(response)
}

/// The signed-in user, CSRF token and whether a second factor must be set up first
#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "session",
    responses(
        (status = 200, description = "session", body = SessionBody),
        (status = 401, description = "not signed in, or the session ended (idle too long, or too old)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn me(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Token clients have no CSRF token; browsers get theirs back after a reload.
    Ok(Json(describe(&platform, &user, &headers).await?).into_response())
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
    Ok(Json(describe(&platform, &user, &headers).await?).into_response())
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
    if let Some((_, secret)) = current_session(&platform, &user, &headers).await? {
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

/// Start setting up a second factor (TOTP): a new secret, its otpauth URI and QR code
#[utoipa::path(
    post,
    path = "/api/v1/session/second-factor",
    tag = "session",
    responses(
        (status = 200, description = "the new secret (base32), its `otpauth://` URI and the URI as \
            an SVG QR code; not in force until confirmed with a code. Starting again replaces an \
            unconfirmed secret", body = Enrolment),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 409, description = "a confirmed second factor is in force: remove it (with a code) first", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn begin_second_factor(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let target = format!("user:{}", user.username);
    match second_factor::begin_enrolment(&platform, &user).await {
        Ok(enrolment) => {
            let _ = platform
                .audit(AuditEvent::by(&user, "second_factor.begin", &target, "ok"))
                .await;
            Ok(Json(enrolment).into_response())
        }
        Err(CoreError::Conflict(_)) => {
            let message = "a second factor is already set up: remove it with a current code \
                           before setting up another";
            let _ = platform
                .audit(
                    AuditEvent::by(&user, "second_factor.begin", &target, "refused")
                        .detail(message),
                )
                .await;
            Err(ApiError::new(StatusCode::CONFLICT, "conflict", message))
        }
        Err(e) => Err(e.into()),
    }
}

/// Confirm the second factor with a first code from the app; returns the recovery codes (shown once)
#[utoipa::path(
    post,
    path = "/api/v1/session/second-factor/confirm",
    tag = "session",
    request_body = CodeBody,
    responses(
        (status = 200, description = "the second factor is in force from now on, and this session \
            is a full one; ten one-time recovery codes, shown this once", body = RecoveryCodes),
        (status = 400, description = "`invalid_second_factor`: the code does not match; `invalid`: \
            no enrolment under way", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "a cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 409, description = "a second factor is already in force", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn confirm_second_factor(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Response, ApiError> {
    let target = format!("user:{}", user.username);
    let codes = match second_factor::confirm_enrolment(&platform, &user, &body.code).await {
        Ok(codes) => codes,
        Err(e) => {
            let outcome = if matches!(e, CoreError::Database(_) | CoreError::Io { .. }) {
                "failed"
            } else {
                "refused"
            };
            let _ = platform
                .audit(
                    AuditEvent::by(&user, "second_factor.confirm", &target, outcome)
                        .detail(e.to_string()),
                )
                .await;
            return Err(e.into());
        }
    };
    if let Some(secret) = session_cookie(&headers) {
        // The code just given is this session's second factor: it may now reach everything.
        // Only the user's own session: a token's request may carry another user's cookie.
        let now = pathfed_core::clock::now();
        accounts::set_session_stage(&platform.db, &secret, &user.id, SessionStage::Full).await?;
        accounts::record_second_factor(&platform.db, &secret, &user.id, now).await?;
    }
    let _ = platform
        .audit(
            AuditEvent::by(&user, "second_factor.confirm", &target, "ok")
                .detail(format!("{} recovery codes issued", codes.len())),
        )
        .await;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    })
    .into_response())
}

/// Remove the user's second factor, with a current code (not when the user must have one)
#[utoipa::path(
    delete,
    path = "/api/v1/session/second-factor",
    tag = "session",
    request_body = CodeBody,
    responses(
        (status = 204, description = "removed: the user signs in with the password alone"),
        (status = 400, description = "`invalid_second_factor`: the code is wrong or was already \
            used (counted as a failed sign-in); `invalid`: the user has no second factor", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "`second_factor_required_by_policy`: the user's role or \
            hospital requires a second factor; or a cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 429, description = "too many wrong codes or passwords lately", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds until the lock ends"))),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn remove_second_factor(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Response, ApiError> {
    let target = format!("user:{}", user.username);
    let refuse = |outcome: &'static str, error: ApiError| {
        let platform = platform.clone();
        let event = AuditEvent::by(&user, "second_factor.remove", &target, outcome)
            .detail(error.message.clone());
        async move {
            let _ = platform.audit(event).await;
            Err::<Response, ApiError>(error)
        }
    };
    if second_factor::required(&platform, &user).await? {
        return refuse(
            "denied",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "second_factor_required_by_policy",
                "your role or your hospital requires a second factor: it cannot be removed (an \
                 administrator can reset it when the phone is lost)",
            ),
        )
        .await;
    }
    if !user.second_factor {
        return refuse(
            "refused",
            ApiError::bad_request("invalid", "there is no second factor to remove"),
        )
        .await;
    }
    match second_factor::verify_throttled(&platform, &user, &body.code).await? {
        Check::Accepted => {}
        Check::Wrong => {
            return refuse(
                "refused",
                ApiError::bad_request(
                    "invalid_second_factor",
                    "the code is wrong or was already used",
                ),
            )
            .await;
        }
        Check::Locked(wait) => {
            let _ = platform
                .audit(
                    AuditEvent::by(&user, "second_factor.remove", &target, "denied")
                        .detail("locked after failed sign-ins"),
                )
                .await;
            return Ok(too_many_attempts(wait));
        }
    }
    second_factor::remove(&platform.db, &user.id).await?;
    let _ = platform
        .audit(AuditEvent::by(&user, "second_factor.remove", &target, "ok"))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Change the user's own password; ends the user's other sessions and every API token
#[utoipa::path(
    put,
    path = "/api/v1/session/password",
    tag = "session",
    request_body = PasswordChange,
    responses(
        (status = 204, description = "changed; this session stays, the user's other sessions and \
            all their API tokens have ended"),
        (status = 400, description = "`weak_password`: the new password breaks a rule (the message \
            names it: at least 13 characters, or 8 with a second factor; nothing easy to guess)", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: the current password is wrong (counted \
            as a failed sign-in); or not signed in", body = ErrorBody),
        (status = 403, description = "a cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 415, description = "the body is not sent as JSON", body = ErrorBody),
        (status = 422, description = "the body is JSON of another shape", body = ErrorBody),
        (status = 429, description = "too many failed sign-ins lately", body = ErrorBody,
            headers(("Retry-After" = String, description = "seconds until the lock ends"))),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn change_password(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
    JsonBody(change): JsonBody<PasswordChange>,
) -> Result<Response, ApiError> {
    let target = format!("user:{}", user.username);
    let account = throttle::account_key(&user.username);
    let limit = platform.config.auth.account_limit();
    let now = pathfed_core::clock::now();
    // The current password is asked so that a session left open cannot lock its owner out;
    // guessing it is throttled like signing in, counted before it is checked.
    let locks = match throttle::reserve(&platform.db, &account, limit, now).await? {
        throttle::Reservation::Allowed { locks } => locks,
        throttle::Reservation::Refused(wait) => {
            let _ = platform
                .audit(
                    AuditEvent::by(&user, "session.password", &target, "denied")
                        .detail("locked after failed sign-ins"),
                )
                .await;
            return Ok(too_many_attempts(wait));
        }
    };
    let right = accounts::authenticate(&platform.db, &user.username, &change.current_password)
        .await?
        .is_some_and(|u| u.id == user.id);
    if !right {
        let _ = platform
            .audit(
                AuditEvent::by(&user, "session.password", &target, "denied")
                    .detail("wrong current password"),
            )
            .await;
        if locks {
            audit_lock(&platform, &target).await;
        }
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    throttle::undo(&platform.db, &account, limit).await?;
    let keep = current_session(&platform, &user, &headers)
        .await?
        .map(|(_, secret)| secret);
    let ended = match accounts::change_password(
        &platform.db,
        &user.username,
        &change.new_password,
        keep.as_deref(),
    )
    .await
    {
        Ok(ended) => ended,
        Err(e @ CoreError::WeakPassword(_)) => {
            let _ = platform
                .audit(
                    AuditEvent::by(&user, "session.password", &target, "refused")
                        .detail(e.to_string()),
                )
                .await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let _ = platform
        .audit(
            AuditEvent::by(&user, "session.password", &target, "ok").detail(format!(
                "ended {} other session(s) and revoked {} API token(s)",
                ended.sessions, ended.tokens
            )),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
