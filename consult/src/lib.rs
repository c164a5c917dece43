//! Telepathology consultation: a spoke sends a case (patient data, slides, a question) to a
//! hub; a hub pathologist reads it, a second pathologist double-checks blind, discordant reads
//! are adjudicated, and the signed report goes back to the spoke.
//!
//! Modules by step: [`cases`] (drafts, submission, worklists), [`access`] (who sees what),
//! [`reads`] (first read, blind double-check, adjudication), [`report`] (sign-out, versions,
//! HTML/PDF via [`render`]), [`annotations`] (per-slide shapes and GeoJSON), [`stats`]
//! (concordance), [`research`] (curation at sign-out, opt-outs), [`ai`] (AI support: jobs,
//! blinding until the first read, agreement at sign-out), [`api`] (the HTTP routes).

pub mod access;
pub mod ai;
pub mod annotations;
pub mod api;
mod case;
pub mod cases;
pub mod error;
pub mod notifications;
pub mod organs;
pub mod patient;
pub mod reads;
pub mod render;
pub mod report;
mod report_content;
pub mod research;
pub mod stats;
pub mod taxonomy;

use std::sync::Arc;

use pathfed_core::Platform;

pub use api::router;
pub use error::{ConsultError, ConsultResult};

/// The consultation service's state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Consult {
    /// Shared platform handles.
    pub platform: Platform,
    /// Taxonomies in force.
    pub taxonomies: Arc<taxonomy::Taxonomies>,
    /// Patient-id hashing and encryption.
    pub patients: patient::PatientIds,
}

impl Consult {
    /// Loads taxonomies and keys for `platform`.
    pub fn new(platform: Platform) -> ConsultResult<Self> {
        let taxonomies =
            taxonomy::Taxonomies::load(platform.config.consult.taxonomy_file.as_deref())?;
        let patients = patient::PatientIds::load(&platform.config)?;
        Ok(Self {
            platform,
            taxonomies: Arc::new(taxonomies),
            patients,
        })
    }

    /// Seconds a hub keeps access after a case closes.
    pub fn access_after_close_s(&self) -> u64 {
        self.platform.config.consult.access_after_close_s
    }

    /// The taxonomy a case uses.
    pub fn taxonomy_of(&self, case: &cases::Case) -> ConsultResult<&taxonomy::Taxonomy> {
        self.taxonomies.get(&case.taxonomy).ok_or_else(|| {
            ConsultError::Invalid(format!(
                "the case uses taxonomy {:?}, which is no longer configured",
                case.taxonomy
            ))
        })
    }
}
