//! The platform context every service shares: configuration, database, object store, audit
//! log and slide cache, opened once from the configuration.
//!
//! Opening it also loads (or creates) the `audit` key that keys the audit chain; every row
//! recorded through [`Platform::audit`] carries the client address of the request it was made
//! in, when there is one.

use std::sync::Arc;

use crate::audit::{self, AuditEvent, AuditLog, Verification};
use crate::cache::SlideCache;
use crate::config::Config;
use crate::db::Db;
use crate::error::{CoreError, CoreResult};
use crate::store::{Store, open_store};

/// The name of the key that keys the audit chain and signs its checkpoints
/// (`DATA_DIR/keys/audit.key`, or `PATHFED_KEY_AUDIT`).
pub const AUDIT_KEY: &str = "audit";

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
        let audit_key = crate::keys::load_or_create(&config, AUDIT_KEY)?;
        Ok(Self {
            config: Arc::new(config),
            db,
            store,
            audit: Arc::new(AuditLog::new(audit_key)),
            cache: Arc::new(cache),
        })
    }

    /// Records an audit event, with the client address of the request it is made in (none
    /// outside a request); a failure to record is logged loudly, never swallowed silently.
    pub async fn audit(&self, event: AuditEvent) -> CoreResult<i64> {
        let address = crate::request_context::client_address()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let result = self.audit.append(&self.db, event, &address).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "audit log append failed");
        }
        result
    }

    /// Checks the audit chain and its checkpoints ([`audit::verify`]).
    pub async fn verify_audit(&self) -> CoreResult<Verification> {
        audit::verify(&self.db, &self.store, self.audit.key()).await
    }
}
