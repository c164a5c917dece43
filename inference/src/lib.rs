//! AI diagnostic support: deployed models run on clinical slides and their results come back
//! to the pathologists as a second reader, never as the diagnosis.
//!
//! Modules by step: [`pipeline`] (tissue → patch grid → concurrent read/decode, batching and
//! model → slide scores), [`heatmap`] (score maps as a PNG and as Deep Zoom overlay tiles
//! aligned with the slide's), [`results`] (stored results and their rows), [`job`] (the
//! `infer` job and how it is asked for), [`concordance`] (agreement with the final diagnoses,
//! for model cards), [`api`] (model cards for every reader of a result). Slide-level routes live
//! with the slide API, which owns slide access.

pub mod api;
pub mod concordance;
pub mod error;
pub mod heatmap;
pub mod job;
pub mod pipeline;
pub mod results;

use pathfed_core::Platform;

pub use error::{InferError, InferResult};

/// The inference service's state; cheap to clone.
#[derive(Clone, Debug)]
pub struct Inference {
    /// Shared platform handles.
    pub platform: Platform,
    /// Device `infer` jobs run models on (from `[inference] device`).
    pub device: String,
}

impl Inference {
    /// The service over `platform`, on the configured device.
    pub fn new(platform: Platform) -> Self {
        let device = platform.config.inference.device.clone();
        Self { platform, device }
    }
}
