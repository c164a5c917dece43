//! What loading, importing, registering and running models refuse or fail with.

use axum::http::StatusCode;
use pathfed_core::CoreError;
use pathfed_core::http::ApiError;

/// A refused or failed model operation.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The request cannot work as asked: a bad name, a file that does not fit (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or not visible to this user (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Conflicts with the current state, e.g. deploying a retired model (409).
    #[error("{0}")]
    Conflict(String),
    /// The compute device cannot be used.
    #[error("device {device}: {reason}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The platform (database, object store) failed underneath.
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl ModelError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl pathfed_core::worker::Transient for ModelError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Core(core) => core.is_transient(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for ModelError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::Database(e))
    }
}

// The same answers training gave for these errors before the registry moved here.
impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Invalid(message) => ApiError::bad_request("invalid", message),
            ModelError::Device { .. } => ApiError::bad_request("device_unavailable", e.to_string()),
            ModelError::NotFound(what) => ApiError::not_found(&what),
            ModelError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            ModelError::Io { .. } => ApiError::internal(e),
            ModelError::Core(core) => core.into(),
        }
    }
}

/// Result of model operations.
pub type ModelResult<T> = Result<T, ModelError>;
