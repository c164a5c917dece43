//! Shared foundations of pathfed: configuration, limits, the database, the object store,
//! accounts (hospitals, users, sessions, tokens), the audit log and the slide cache.
//!
//! Every domain crate depends on this one and nothing here depends on a domain crate.

pub mod accounts;
pub mod audit;
pub mod cache;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod platform;
pub mod secrets;
pub mod store;
pub mod worker;

pub use config::{Config, ConfigError};
pub use db::Db;
pub use error::{CoreError, CoreResult};
pub use limits::SlideLimits;
pub use platform::Platform;
