//! What inference refuses or fails with, and how the API answers each.

use axum::http::StatusCode;
use pathfed_core::CoreError;
use pathfed_core::http::ApiError;
use pathfed_models::ModelError;
use pathfed_slide::SlideError;

/// A refused or failed inference operation.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The request cannot work as asked (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or not visible to this user (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Conflicts with the current state, e.g. a retired model (409).
    #[error("{0}")]
    Conflict(String),
    /// The slide has no tissue the model could look at.
    #[error("no tissue found on the slide at {mpp} µm/px (tissue fraction {fraction:.3})")]
    NoTissue {
        /// Resolution of the patch grid.
        mpp: f64,
        /// Share of the slide the mask called tissue.
        fraction: f64,
    },
    /// The slide could not be read: corrupt, truncated or over limits.
    #[error("reading the slide: {0}")]
    Slide(#[from] SlideError),
    /// The model could not be loaded or run.
    #[error("the model: {0}")]
    Model(#[from] ModelError),
    /// Stopped on request.
    #[error("cancelled")]
    Cancelled,
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

impl InferError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

impl pathfed_core::worker::Transient for InferError {
    /// The store, the database or a file system failing underneath, not the slide or the model
    /// being wrong.
    fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Core(core) => core.is_transient(),
            Self::Model(model) => pathfed_core::worker::Transient::is_transient(model),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for InferError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::Database(e))
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::Invalid(message) => ApiError::bad_request("invalid", message),
            InferError::NotFound(what) => ApiError::not_found(&what),
            InferError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            InferError::NoTissue { .. } => ApiError::bad_request("no_tissue", e.to_string()),
            InferError::Slide(_) => ApiError::bad_request("unreadable_slide", e.to_string()),
            InferError::Model(t) => t.into(),
            InferError::Cancelled => ApiError::new(StatusCode::CONFLICT, "cancelled", "cancelled"),
            InferError::Io { .. } => ApiError::internal(e),
            InferError::Core(core) => core.into(),
        }
    }
}

/// Result of inference operations.
pub type InferResult<T> = Result<T, InferError>;
