//! Shared foundations of pathfed: configuration, limits, the database, the object store,
//! accounts (hospitals, users, sessions, tokens), the audit log, the slide cache, and the typed
//! reads ([`contracts`]) through which crates that must not know each other share facts.
//!
//! Every domain crate depends on this one and nothing here depends on a domain crate.

pub mod accounts;
pub mod audit;
pub mod audit_checkpoint;
pub mod backup;
pub mod cache;
pub mod clock;
pub mod config;
pub mod contracts;
pub mod db;
pub mod digest;
pub mod error;
pub mod hospital_settings;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod locale;
pub mod names;
pub mod password_policy;
pub mod platform;
pub mod quota;
pub mod request_context;
pub mod routes;
pub mod second_factor;
pub mod secrets;
pub mod store;
pub mod throttle;
pub mod worker;

pub use config::{Config, ConfigError};
pub use db::Db;
pub use error::{CoreError, CoreResult};
pub use limits::SlideLimits;
pub use platform::Platform;
