//! Shared foundations of pathfed: configuration and the limits every component enforces.
//!
//! Later issues add the database, object store, audit log, accounts and job queue here; every
//! domain crate depends on this one and nothing here depends on a domain crate.

pub mod config;
pub mod limits;

pub use config::{Config, ConfigError};
pub use limits::SlideLimits;
