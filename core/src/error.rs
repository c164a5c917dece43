//! The error type of the platform foundations.

/// What went wrong in the database, the object store or an account operation.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The database failed or refused a statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A unique name is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// A named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// Stored data does not match its recorded SHA-256.
    #[error("integrity check failed for {0}")]
    Integrity(String),
    /// An upload would take its hospital past its upload quota (bytes).
    #[error("{}", crate::quota::exceeded_message(.used, .limit, .incoming))]
    QuotaExceeded {
        /// Bytes the hospital uses now.
        used: i64,
        /// The hospital's quota.
        limit: i64,
        /// The upload's size.
        incoming: u64,
    },
    /// A password breaks the password rules; the message names the rule.
    #[error("{0}")]
    WeakPassword(String),
    /// A second-factor code is wrong, already used, or not a code at all.
    #[error("{0}")]
    WrongSecondFactor(String),
    /// The action needs a second-factor code given just now (the hospital's policy), and none
    /// was; the message says why.
    #[error("{0}")]
    FreshSecondFactorRequired(String),
}

impl CoreError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when the database refused a duplicate of a unique value.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// Whether another attempt may succeed: the database, the object store or a file system
    /// failing underneath, not a missing object, a bad argument or a failed integrity check.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(object_store::Error::NotFound { .. }) => false,
            Self::Database(_) | Self::Migrate(_) | Self::Store(_) | Self::Io { .. } => true,
            Self::Conflict(_) | Self::NotFound(_) | Self::Invalid(_) | Self::Integrity(_) => false,
            Self::QuotaExceeded { .. } => false,
            Self::WeakPassword(_)
            | Self::WrongSecondFactor(_)
            | Self::FreshSecondFactorRequired(_) => false,
        }
    }

    /// True when SQLite refused a write because another connection wrote first: a read
    /// transaction cannot be upgraded past a newer commit, whatever the busy timeout.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("5" | "517" | "261"))
                || e.message().contains("database is locked"))
    }
}

/// Result with [`CoreError`].
pub type CoreResult<T> = Result<T, CoreError>;
