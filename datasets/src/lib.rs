//! The research tier: signed-out slides become de-identified, pseudonymised training data.
//!
//! Modules by step: [`deid`] (canonical research slides with an allow-list of metadata).

pub mod deid;
pub mod error;

pub use error::{DatasetError, DatasetResult};
