//! An encoder + head run: the version's patches are embedded by a frozen encoder from the
//! pretrained folder (slides already in the embedding store are reused, so a second run with
//! the same encoder does not run it at all), then a slide-level head is trained on the stored
//! embeddings per seed, evaluated on the test split and, for the first seed, by k-fold
//! cross-validation by patient. What it registers is one model version: the head's weights,
//! and the encoder by name and weights hash.

use std::sync::Arc;

use burn::prelude::Device;
use pathfed_core::store::Store;
use pathfed_core::worker::RunningJob;
use pathfed_datasets::Research;
use pathfed_models::aggregate::Aggregation;
use pathfed_models::registry::{self, EncoderRef, InferenceConfig};

use crate::data::PatchSet;
use crate::embed::{Encoder, bags};
use crate::embeddings::embed_set;
use crate::error::{TrainError, TrainResult};
use crate::heads::{HeadParams, train_head};
use crate::job::{TrainedFiles, patch_geometry};
use crate::run::SeedResult;
use crate::runs::{CheckedRequest, EncoderPlan, pretrained_dir};

/// Attention width of the heads a run trains.
const HEAD_HIDDEN: usize = 128;

/// Embeds `set` with the plan's encoder and trains its head once per seed of `seeds`.
pub(crate) async fn train(
    research: &Research,
    job: &RunningJob,
    checked: &CheckedRequest,
    plan: &EncoderPlan,
    device: &Device,
    set: Arc<PatchSet>,
    seeds: &[u64],
) -> TrainResult<(Vec<SeedResult>, TrainedFiles)> {
    let patches_hash = crate::embeddings::patches_hash(&checked.manifest)?;
    let name = plan.found.name.clone();
    let _ = job.progress(0.05, format!("loading encoder {name}"));
    let encoder = {
        let (pretrained, name, device) = (pretrained_dir(research), name.clone(), device.clone());
        tokio::task::spawn_blocking(move || Encoder::open(&pretrained, &name, &device))
            .await
            .map_err(|e| TrainError::Invalid(format!("loading the encoder: {e}")))??
    };
    let reference = EncoderRef {
        name: encoder.name.clone(),
        weights_sha256: encoder.weights_sha256.clone(),
        spec: encoder.spec.clone(),
    };
    let key = encoder.store_key(&patches_hash);
    // A patient who opted out while the encoder ran has no embeddings left: their slides drop
    // out of the head's training, as they would from the next version.
    let (report, withdrawn) = embed_set(
        research,
        job,
        set.clone(),
        patches_hash,
        encoder,
        checked.request.batch,
        (0.05, 0.75),
    )
    .await?;
    job.check_cancel().map_err(|_| TrainError::Cancelled)?;
    let _ = job.progress(
        0.8,
        format!(
            "training the {} head: {} slides embedded now, {} reused from the store",
            plan.pooling.name(),
            report.computed,
            report.reused
        ),
    );
    let (slide_bags, features) = {
        let (store, set, key): (Store, _, _) = (research.platform.store.clone(), set.clone(), key);
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || bags(&runtime, &store, &set, &key, &withdrawn))
            .await
            .map_err(|e| TrainError::Invalid(format!("reading embeddings: {e}")))??
    };
    let slide_bags = Arc::new(slide_bags);
    let mut results = Vec::with_capacity(seeds.len());
    let mut first = None;
    for (index, &seed) in seeds.iter().enumerate() {
        job.check_cancel().map_err(|_| TrainError::Cancelled)?;
        let _ = job.progress(
            0.8 + 0.15 * index as f64 / seeds.len() as f64,
            format!("seed {seed}: training the {} head", plan.pooling.name()),
        );
        let params = HeadParams {
            pooling: plan.pooling,
            hidden: HEAD_HIDDEN,
            epochs: checked.request.epochs,
            lr: checked.request.lr,
            // Cross-validation once: its spread, not the seeds', is what the card reports.
            folds: if index == 0 { plan.folds } else { 0 },
            seed,
            positive: checked.request.positive.clone(),
            threshold: checked.request.threshold,
        };
        let head = {
            let (set, slide_bags, device) = (set.clone(), slide_bags.clone(), device.clone());
            tokio::task::spawn_blocking(move || {
                train_head(&set, &slide_bags, features, &params, &device)
            })
            .await
            .map_err(|e| TrainError::Invalid(format!("training the head: {e}")))??
        };
        results.push(SeedResult {
            seed,
            history: head.history.clone(),
            evaluation: head.evaluation.clone(),
            slides: head.slides.clone(),
        });
        if first.is_none() {
            first = Some(head);
        }
    }
    let head = first.ok_or_else(|| TrainError::Invalid("a run needs at least one seed".into()))?;
    let (patch_px, patch_mpp, mpp_tolerance) = patch_geometry(checked)?;
    let config = InferenceConfig {
        model: None,
        encoder: Some(reference),
        classes: head.classes.clone(),
        positive: head.positive.clone(),
        aggregation: Aggregation::Attention,
        attention: Some(head.aggregator.config.clone()),
        threshold: checked.request.threshold,
        patch_px,
        patch_mpp,
        mpp_tolerance,
    };
    let trained = TrainedFiles {
        config,
        weights: registry::model_bytes(&head.aggregator.head)?,
        aggregator: None,
        cross_validation: head.cross_validation,
    };
    Ok((results, trained))
}
