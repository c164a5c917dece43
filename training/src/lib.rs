//! Training on the research tier: the data pipeline from a dataset version's patch shards (with
//! augmentation), training runs with checkpoints and resume, slide-level evaluation (mean,
//! top-k or attention MIL), the embedding store of frozen foundation-model encoders and the
//! slide-level heads trained on it (with cross-validation by patient), model cards and plots,
//! and registering finished runs. The models
//! themselves, weight import, metrics, devices and the registry are `pathfed-models`, which
//! inference shares. This crate never links OpenSlide: it reads patch shards only, so its
//! binaries run on a bare GPU node.

pub mod api;
pub mod augment;
pub mod batch;
pub mod card;
pub mod data;
pub mod embed;
pub mod embeddings;
pub mod error;
pub mod head_run;
pub mod heads;
pub mod job;
pub mod mil;
pub mod plots;
pub mod run;
pub mod runs;
pub mod synthetic;
