//! What training, evaluation and the model registry refuse or fail with.

use pathfed_core::CoreError;

/// A refused or failed training operation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The request cannot work as asked: bad parameters, an unusable dataset version (400).
    #[error("{0}")]
    Invalid(String),
    /// Unknown, or not visible to this user (404).
    #[error("{0} not found")]
    NotFound(String),
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

/// Result of training operations.
pub type TrainResult<T> = Result<T, TrainError>;
