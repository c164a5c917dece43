//! HTTP plumbing every service router shares: JSON errors and the authentication extractor.
//!
//! A request is authenticated by an API token (`Authorization: Bearer pf_…`, for the CLI) or a
//! session cookie (browsers). Cookie-authenticated requests that change state must echo the
//! session's CSRF token in `X-CSRF-Token`. A session ends when idle or old
//! ([`crate::accounts::session_user`]); a page's own polling, marked with [`BACKGROUND_HEADER`],
//! does not count as activity. One whose user must still set up a second factor reaches
//! only `/api/v1/session…`. Every refusal is written to the audit log.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::accounts::{Principal, SessionStage, session_user, token_user};
use crate::audit::AuditEvent;
use crate::error::CoreError;
use crate::platform::Platform;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "pathfed_session";
/// Header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Header (value `1`) marking a request a page makes by itself, such as polling: it does not
/// count as the user's activity, so it does not keep an idle session alive.
pub const BACKGROUND_HEADER: &str = "x-pathfed-background";

/// An error answered as `{"error": {"code", "message"}}` with its status.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What a person should read.
    pub message: String,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: the same answer for "does not exist" and "not yours", so ids cannot be probed.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 401.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 500 with the cause logged under a fresh id, not shown: the answer carries the id, so an
    /// operator finds the cause in the log without the client seeing paths or internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let id = crate::db::new_id();
        tracing::error!(error_id = %id, error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error {id}; the cause is in the server log under this id"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

/// How a request ended, as the audit log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Ok,
    /// Not this user's to see or do (404/403).
    Denied,
    /// Not acceptable as asked (400/409/422).
    Refused,
    /// The platform failed underneath (500).
    Failed,
}

impl Outcome {
    /// The word stored in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// A domain error as the API answers it ([`ApiError`]) and the audit log records it.
pub trait AuditedError: std::fmt::Display + Into<ApiError> {
    /// How a request that ended in this error is recorded.
    fn outcome(&self) -> Outcome;
}

/// Records `action` on `target` by `user` with how `result` ended (a failure's message as the
/// detail), then answers it: the one audit step of every service's handlers.
pub async fn audited<T, E: AuditedError>(
    platform: &Platform,
    user: &Principal,
    action: &str,
    target: &str,
    result: Result<T, E>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => Outcome::Ok,
        Err(e) => e.outcome(),
    };
    let mut event = AuditEvent::by(user, action, target, outcome.as_str());
    if let Err(e) = &result {
        event = event.detail(e.to_string());
    }
    // A failed append is logged by the platform; the answer stands.
    let _ = platform.audit(event).await;
    result.map_err(Into::into)
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            CoreError::NotFound(what) => Self::not_found(&what),
            CoreError::Invalid(message) => Self::bad_request("invalid", message),
            quota @ CoreError::QuotaExceeded { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota_exceeded",
                quota.to_string(),
            ),
            CoreError::WeakPassword(message) => {
                Self::new(StatusCode::BAD_REQUEST, "weak_password", message)
            }
            CoreError::WrongSecondFactor(message) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_second_factor", message)
            }
            CoreError::FreshSecondFactorRequired(message) => Self::new(
                StatusCode::FORBIDDEN,
                "fresh_second_factor_required",
                message,
            ),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody::new(self.code, self.message)),
        )
            .into_response()
    }
}

/// The body of every error answer, `{"error": {"code", "message"}}`: what [`ApiError`] writes
/// and what the OpenAPI description names for every 4xx and 5xx, so the two cannot differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and message of an error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `bad_request`, `conflict`.
    pub code: String,
    /// What a person should read.
    pub message: String,
}

impl ErrorBody {
    /// An error body with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// A JSON request body whose rejections answer like every other error: a status and a JSON
/// body saying what was wrong.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                rejection.status(),
                "bad_body",
                format!(
                    "the request body is not what this endpoint takes: {}",
                    rejection.body_text()
                ),
            )),
        }
    }
}

/// The signed-in user of a request; extracting it refuses (and audits) everyone else.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

/// The session secret from the `Cookie` header, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// Whether `path` is one of the session's own routes (`/api/v1/session` and below it), the
/// only ones a session in stage [`SessionStage::Enrol`] reaches.
pub fn is_session_route(path: &str) -> bool {
    path == "/api/v1/session" || path.starts_with("/api/v1/session/")
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S> FromRequestParts<S> for Authenticated
where
    Platform: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let platform = Platform::from_ref(state);
        let target = parts.uri.path().to_string();
        let deny = |event: AuditEvent, error: ApiError| {
            let platform = platform.clone();
            async move {
                let _ = platform.audit(event.detail(error.message.clone())).await;
                Err(error)
            }
        };
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string());
        if let Some(token) = bearer {
            return match token_user(&platform.db, &token).await? {
                Some(user) => Ok(Self(user)),
                None => {
                    deny(
                        AuditEvent::anonymous("auth.token", &target, "denied"),
                        ApiError::unauthenticated("the API token is invalid or revoked"),
                    )
                    .await
                }
            };
        }
        let Some(secret) = session_cookie(&parts.headers) else {
            return deny(
                AuditEvent::anonymous("auth.required", &target, "denied"),
                ApiError::unauthenticated("sign in first"),
            )
            .await;
        };
        let idle_minutes = platform.config.auth.idle_minutes;
        // A page's own polling is answered but does not count as the user being there.
        let background = parts
            .headers
            .get(BACKGROUND_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1");
        let Some(session) = session_user(&platform.db, &secret, idle_minutes, !background).await?
        else {
            return deny(
                AuditEvent::anonymous("auth.session", &target, "denied"),
                ApiError::unauthenticated("your session has ended; sign in again"),
            )
            .await;
        };
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !constant_time_eq(sent, session.csrf_token.as_bytes()) {
                return deny(
                    AuditEvent::by(&session.user, "auth.csrf", &target, "denied"),
                    ApiError::forbidden("missing or wrong CSRF token; reload the page"),
                )
                .await;
            }
        }
        // A user who must set up a second factor reaches only the session's own routes, where
        // it is set up, until they have.
        if session.stage == SessionStage::Enrol && !is_session_route(&target) {
            return deny(
                AuditEvent::by(&session.user, "auth.second_factor", &target, "denied"),
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "second_factor_enrolment_required",
                    "your account must sign in with a second factor: set one up on the Security \
                     page first",
                ),
            )
            .await;
        }
        Ok(Self(session.user))
    }
}
