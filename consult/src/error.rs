//! What consultation operations refuse or fail with, and how the API answers each.

use axum::http::StatusCode;
use pathfed_core::CoreError;
use pathfed_core::http::ApiError;

/// A refused or failed consultation operation.
#[derive(Debug, thiserror::Error)]
pub enum ConsultError {
    /// The request itself is malformed or incomplete (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or not visible to this user: the same answer for both (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Visible, but this user may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Not allowed in the case's current state (409).
    #[error("{0}")]
    Transition(String),
    /// The platform failed underneath.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<sqlx::Error> for ConsultError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::Database(e))
    }
}

impl From<ConsultError> for ApiError {
    fn from(e: ConsultError) -> Self {
        match e {
            ConsultError::Invalid(message) => ApiError::bad_request("invalid", message),
            ConsultError::NotFound(what) => ApiError::not_found(what),
            ConsultError::Forbidden(message) => ApiError::forbidden(message),
            ConsultError::Transition(message) => {
                ApiError::new(StatusCode::CONFLICT, "invalid_transition", message)
            }
            ConsultError::Core(core) => core.into(),
        }
    }
}

impl pathfed_core::http::AuditedError for ConsultError {
    fn outcome(&self) -> pathfed_core::http::Outcome {
        use pathfed_core::http::Outcome;
        match self {
            Self::NotFound(_) | Self::Forbidden(_) => Outcome::Denied,
            Self::Invalid(_) | Self::Transition(_) => Outcome::Refused,
            Self::Core(_) => Outcome::Failed,
        }
    }
}

/// Result with [`ConsultError`].
pub type ConsultResult<T> = Result<T, ConsultError>;
