//! The platform context every service shares: configuration, database, object store, audit
//! log and slide cache, opened once from the configuration.

use std::sync::Arc;

use crate::audit::{AuditEvent, AuditLog};
use crate::cache::SlideCache;
use crate::config::Config;
use crate::db::Db;
use crate::error::{CoreError, CoreResult};
use crate::store::{Store, open_store};

/// Shared handles; cheap to clone.
#[derive(Clone)]
pub struct Platform {
    /// Configuration in effect.
    pub config: Arc<Config>,
    /// The database.
    pub db: Db,
    /// The object store.
    pub store: Store,
    /// The audit log writer.
    pub audit: Arc<AuditLog>,
    /// The node-local slide cache.
    pub cache: Arc<SlideCache>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("database", &self.db.kind())
            .field("object_store", &self.store.to_string())
            .finish()
    }
}

impl Platform {
    /// Opens (and migrates) everything the configuration names.
    pub async fn open(config: Config) -> CoreResult<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            CoreError::io(
                format!("creating data directory {}", config.data_dir.display()),
                e,
            )
        })?;
        let db = Db::connect(&config.database_url()).await?;
        let store = open_store(&config.object_store_url(), &config.s3)?;
        let cache = SlideCache::new(&config.data_dir.join("cache"), config.cache.max_bytes)?;
        Ok(Self {
            config: Arc::new(config),
            db,
            store,
            audit: Arc::new(AuditLog::new()),
            cache: Arc::new(cache),
        })
    }

    /// Records an audit event; a failure to record is logged loudly, never swallowed silently.
    pub async fn audit(&self, event: AuditEvent) -> CoreResult<i64> {
        let result = self.audit.append(&self.db, event).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit log append failed");
        }
        result
    }
}
