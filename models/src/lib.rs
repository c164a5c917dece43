//! What training and inference both need, so that inference links neither the training loop
//! nor the research tier: the ResNet patch classifier and its weight import, the attention-MIL
//! head and slide aggregation, slide-level metrics, compute devices by name, and the model
//! registry (the one owner of the `models` and `deployments` tables).

pub mod aggregate;
pub mod device;
pub mod error;
pub mod import;
pub mod metrics;
pub mod mil;
pub mod model;
pub mod registry;
pub mod step;
pub mod vit;

pub use error::{ModelError, ModelResult};
