//! Training on the research tier: a ResNet-style patch classifier written with Burn, the data
//! pipeline from a dataset version's patch shards (with augmentation), training runs with
//! checkpoints and resume, and slide-level evaluation. This crate never links OpenSlide: it
//! reads patch shards only, so its binaries run on a bare GPU node.

pub mod augment;
pub mod batch;
pub mod bench;
pub mod data;
pub mod error;
pub mod metrics;
pub mod model;
pub mod run;
pub mod synthetic;
