//! Training on the research tier: a ResNet-style patch classifier written with Burn, the data
//! pipeline from a dataset version's patch shards (with augmentation), training runs with
//! checkpoints and resume, slide-level evaluation (mean, top-k or attention MIL), the model
//! registry with model cards and plots, and pretrained weights imported from safetensors or
//! PyTorch files. This crate never links OpenSlide: it reads patch shards only,
//! so its binaries run on a bare GPU node.

pub mod api;
pub mod augment;
pub mod batch;
pub mod bench;
pub mod card;
pub mod data;
pub mod device;
pub mod error;
pub mod import;
pub mod job;
pub mod metrics;
pub mod mil;
pub mod model;
pub mod plots;
pub mod registry;
pub mod run;
pub mod runs;
pub mod synthetic;
