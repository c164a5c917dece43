//! The research tier: signed-out slides become de-identified, pseudonymised training data.
//!
//! Modules by step: [`deid`] (canonical research slides with an allow-list of metadata),
//! [`pseudonym`] (keyed research ids), [`curate`] (the `curate` and `forget-patient` jobs),
//! [`manifest`] and [`versions`] (dataset versions), [`anonymity`] (small cells decided over the
//! whole tier, in patients), [`patches`] (grids, shards, QC), [`extract`] (the job),
//! [`api`] (the research HTTP routes).

pub mod anonymity;
pub mod api;
pub mod catalogue;
pub mod curate;
pub mod deid;
pub mod error;
pub mod extract;
pub mod manifest;
pub mod patches;
pub mod pseudonym;
pub mod versions;

use pathfed_core::Platform;
use pathfed_core::jobs::Jobs;

pub use error::{DatasetError, DatasetResult};

/// The research service's state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Research {
    /// Shared platform handles.
    pub platform: Platform,
    /// Research pseudonyms.
    pub pseudonyms: pseudonym::Pseudonyms,
    /// The job queue.
    pub jobs: Jobs,
}

impl Research {
    /// Loads the pseudonym key for `platform`.
    pub fn new(platform: Platform) -> DatasetResult<Self> {
        let pseudonyms = pseudonym::Pseudonyms::load(&platform.config)?;
        let jobs = Jobs::new(platform.db.clone());
        Ok(Self {
            platform,
            pseudonyms,
            jobs,
        })
    }
}
