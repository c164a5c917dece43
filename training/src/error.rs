//! What training and evaluation refuse or fail with; the models crate's errors (registry,
//! devices, weight import) convert into these variant for variant.

use axum::http::StatusCode;
use pathfed_core::CoreError;
use pathfed_core::http::ApiError;
use pathfed_models::ModelError;

/// A refused or failed training operation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The request cannot work as asked: bad parameters, an unusable dataset version (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or not visible to this user (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Not allowed for this user (403).
    #[error("{0}")]
    Forbidden(String),
    /// Conflicts with the current state, e.g. deploying a retired model (409).
    #[error("{0}")]
    Conflict(String),
    /// Deploying a version whose test metrics do not show it does better than chance, without
    /// a written reason (409, `deploy_needs_reason`); the message gives the figures.
    #[error("{0}")]
    NeedsReason(String),
    /// The compute device cannot be used.
    #[error("device {device}: {reason}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
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
    /// The research tier refused or failed.
    #[error(transparent)]
    Dataset(#[from] pathfed_datasets::error::DatasetError),
}

impl TrainError {
    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

// Variant for variant, so callers that match on `Invalid`, `NotFound` or `Core` (retry policy,
// audit outcomes) treat a registry or device error exactly as before it moved to models.
impl From<ModelError> for TrainError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Invalid(message) => Self::Invalid(message),
            ModelError::NotFound(what) => Self::NotFound(what),
            ModelError::Conflict(message) => Self::Conflict(message),
            ModelError::Device { device, reason } => Self::Device { device, reason },
            ModelError::Io { what, source } => Self::Io { what, source },
            ModelError::Core(core) => Self::Core(core),
        }
    }
}

impl pathfed_core::worker::Transient for TrainError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } => true,
            Self::Core(core) => core.is_transient(),
            _ => false,
        }
    }
}

impl pathfed_core::http::AuditedError for TrainError {
    fn outcome(&self) -> pathfed_core::http::Outcome {
        use pathfed_core::http::Outcome;
        match self {
            Self::NotFound(_) | Self::Forbidden(_) => Outcome::Denied,
            Self::Invalid(_) | Self::Conflict(_) | Self::NeedsReason(_) | Self::Device { .. } => {
                Outcome::Refused
            }
            Self::Dataset(pathfed_datasets::DatasetError::Forbidden(_)) => Outcome::Denied,
            _ => Outcome::Failed,
        }
    }
}

impl From<sqlx::Error> for TrainError {
    fn from(e: sqlx::Error) -> Self {
        Self::Core(CoreError::Database(e))
    }
}

impl From<TrainError> for ApiError {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Invalid(message) => ApiError::bad_request("invalid", message),
            TrainError::Device { .. } => ApiError::bad_request("device_unavailable", e.to_string()),
            TrainError::NotFound(what) => ApiError::not_found(&what),
            TrainError::Forbidden(message) => ApiError::forbidden(message),
            TrainError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            TrainError::NeedsReason(message) => {
                ApiError::new(StatusCode::CONFLICT, "deploy_needs_reason", message)
            }
            TrainError::Cancelled => ApiError::new(StatusCode::CONFLICT, "cancelled", "cancelled"),
            TrainError::Io { .. } => ApiError::internal(e),
            TrainError::Core(core) => core.into(),
            TrainError::Dataset(d) => d.into(),
        }
    }
}

/// Result of training operations.
pub type TrainResult<T> = Result<T, TrainError>;
