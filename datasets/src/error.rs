//! What research-tier operations refuse or fail with, and how the API answers each.

use axum::http::StatusCode;
use pathfed_core::CoreError;
use pathfed_core::http::ApiError;
use pathfed_slide::SlideError;

/// A refused or failed research-tier operation.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The request itself is malformed or incomplete (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or not visible to this user: the same answer for both (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Visible, but this user may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Conflicts with the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// A dataset version asked for a smaller minimum cell size than the platform's
    /// (400, `min_cell_size_below_floor`).
    #[error(
        "min_cell_size {asked} is below this platform's minimum cell size of {floor} patients: \
         ask for {floor} or more (the minimum is the platform setting research.min_cell_size, \
         which only the platform's operator sets)"
    )]
    BelowFloor {
        /// What was asked for.
        asked: u64,
        /// The platform's minimum (`research.min_cell_size`).
        floor: u64,
    },
    /// The slide could not be read or written.
    #[error(transparent)]
    Slide(#[from] SlideError),
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The platform failed underneath.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl DatasetError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl pathfed_core::worker::Transient for DatasetError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Core(core) => core.is_transient(),
            _ => false,
        }
    }
}

impl pathfed_core::http::AuditedError for DatasetError {
    fn outcome(&self) -> pathfed_core::http::Outcome {
        use pathfed_core::http::Outcome;
        match self {
            Self::NotFound(_) | Self::Forbidden(_) => Outcome::Denied,
            Self::Invalid(_) | Self::Conflict(_) | Self::BelowFloor { .. } => Outcome::Refused,
            _ => Outcome::Failed,
        }
    }
}

impl From<sqlx::Error> for DatasetError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::Database(e))
    }
}

impl From<DatasetError> for ApiError {
    fn from(e: DatasetError) -> Self {
        match e {
            DatasetError::Invalid(message) => ApiError::bad_request("invalid", message),
            DatasetError::BelowFloor { .. } => {
                ApiError::bad_request("min_cell_size_below_floor", e.to_string())
            }
            DatasetError::NotFound(what) => ApiError::not_found(&what),
            DatasetError::Forbidden(message) => ApiError::forbidden(message),
            DatasetError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            DatasetError::Slide(e) => ApiError::bad_request("unreadable_slide", e.to_string()),
            DatasetError::Io { .. } => ApiError::internal(e),
            DatasetError::Core(core) => core.into(),
        }
    }
}

/// Result with [`DatasetError`].
pub type DatasetResult<T> = Result<T, DatasetError>;
