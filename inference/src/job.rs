//! The `infer` job: runs a registered model version on a clinical slide and stores the
//! result. Enqueued automatically when a slide joins (or its case is submitted with) an organ
//! that has a deployed model, and on demand from the case page, the API and `pathfed infer`.
//!
//! Retry policy: the store, the database or the file system failing underneath is retried
//! (three attempts, with the queue's backoff); a slide that cannot be read, a slide without
//! tissue or MPP, and a model that is missing or retired fail at once with the reason, since
//! another attempt would end the same way.

use burn::prelude::Device;
use pathfed_core::Platform;
use pathfed_core::contracts::slides;
use pathfed_core::jobs::kinds::{Infer, JobKind as _};
use pathfed_core::jobs::{Job, Jobs, NewJob};
use pathfed_core::worker::{JobFailure, RunningJob};
use pathfed_models::registry::{self, ModelFiles};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Inference;
use crate::error::{InferError, InferResult};
use crate::pipeline::{PatchModel, RunOptions, predict_slide};
use crate::results::{self, InferenceResult, ModelRef};

pub use pathfed_core::jobs::kinds::InferPayload;

/// Queues a run asked for by a user: a fresh job, even if one ran before, unless one of the
/// same model version on the slide is queued or running, which is then the answer. So one
/// slide never has two runs of a version at once (they would write the same objects).
pub async fn request(jobs: &Jobs, payload: &InferPayload, user_id: &str) -> InferResult<Job> {
    let active = active_jobs_for_slide(jobs, &payload.slide_id)
        .await?
        .into_iter()
        .find(|j| {
            j.payload["model"] == payload.model.as_str() && j.payload["version"] == payload.version
        });
    if let Some(job) = active {
        return Ok(job);
    }
    let job = NewJob::of::<Infer>(payload)
        .repeat(&pathfed_core::db::new_id())
        .by(user_id);
    Ok(jobs.enqueue(job).await?)
}

/// A slide's `infer` jobs, newest first.
pub async fn jobs_for_slide(jobs: &Jobs, slide_id: &str) -> InferResult<Vec<Job>> {
    Ok(jobs
        .list_by_key_prefix(Infer::NAME, &Infer::slide_key_prefix(slide_id), 50)
        .await?)
}

/// A slide's `infer` jobs still queued or running, newest first.
pub async fn active_jobs_for_slide(jobs: &Jobs, slide_id: &str) -> InferResult<Vec<Job>> {
    let mut listed = jobs_for_slide(jobs, slide_id).await?;
    listed.retain(|j| !j.status.is_final());
    Ok(listed)
}

/// Ends a deleted slide's AI support: runs still queued or running are cancelled (one that
/// finishes anyway finds no slide to list under) and its stored results are removed, even when
/// cancelling failed.
pub async fn forget_slide(platform: &Platform, slide_id: &str) -> InferResult<()> {
    let jobs = Jobs::new(platform.db.clone());
    let stopped = async {
        for job in active_jobs_for_slide(&jobs, slide_id).await? {
            jobs.cancel(&job.id).await?;
        }
        InferResult::Ok(())
    }
    .await;
    results::forget_slide(platform, slide_id).await?;
    stopped
}

/// Runs one `infer` job.
pub async fn run_infer(
    inference: Inference,
    payload: InferPayload,
    job: RunningJob,
) -> Result<Value, JobFailure> {
    match infer(&inference, &job, &payload).await {
        Ok(done) => Ok(done),
        Err(InferError::Cancelled) => Err(job
            .check_cancel()
            .err()
            .unwrap_or_else(|| JobFailure::permanent("stopped"))),
        Err(e) => Err(JobFailure::from_error(&e)),
    }
}

async fn infer(
    inference: &Inference,
    job: &RunningJob,
    payload: &InferPayload,
) -> InferResult<Value> {
    let platform = &inference.platform;
    let _ = job.progress(0.0, "loading the model");
    let device = pathfed_models::device::open(&inference.device)?;
    let record = match registry::get(platform, &payload.model, payload.version).await {
        Ok(record) => record,
        Err(pathfed_models::ModelError::NotFound(_)) => {
            return Err(InferError::NotFound(format!(
                "model {}@{}",
                payload.model, payload.version
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if record.status != "registered" {
        return Err(InferError::Conflict(format!(
            "model {}@{} is {}: it no longer runs on slides",
            payload.model, payload.version, record.status
        )));
    }
    let loaded = registry::load(platform, &payload.model, payload.version, &device).await?;
    let model = PatchModel {
        config: loaded.config,
        model: loaded.model,
        aggregator: loaded.aggregator,
        device,
    };
    let model_ref = model_ref(&loaded.record, &model);

    let _ = job.progress(0.02, "fetching the slide");
    let slide = slides::files(&platform.db, &payload.slide_id)
        .await?
        .ok_or_else(|| InferError::NotFound(format!("slide {}", payload.slide_id)))?;
    let cached = platform
        .cache
        .get(&payload.slide_id, &slide.files, &platform.store)
        .await?;
    let path = cached.dir.join(&slide.main_file);
    job.check_cancel().map_err(|_| InferError::Cancelled)?;

    let limits = platform.config.slide.clone();
    let options = RunOptions {
        batch: platform.config.inference.batch,
        readers: platform.config.inference.readers,
        ..RunOptions::default()
    };
    let cancel = job.cancel_flag();
    let progress_job = job.clone();
    let prediction = tokio::task::spawn_blocking(move || {
        let reader = pathfed_slide::open(&path, &limits)?;
        let progress = |done: usize, total: usize| {
            let fraction = 0.05 + 0.9 * done as f64 / total.max(1) as f64;
            let _ = progress_job.progress(fraction, format!("{done} of {total} patches"));
        };
        predict_slide(reader.as_ref(), &model, &options, &progress, &cancel)
    })
    .await
    .map_err(|e| InferError::Invalid(format!("inference stopped: {e}")))??;
    drop(cached);

    let _ = job.progress(0.97, "storing the result");
    let result = InferenceResult::new(
        &payload.slide_id,
        model_ref,
        prediction,
        Some(job.job.id.clone()),
    );
    results::store(platform, &result).await?;
    tracing::info!(slide = %payload.slide_id, model = %payload.model, version = payload.version,
        score = result.score, patches = result.patches, seconds = result.seconds, "AI result stored");
    Ok(json!({
        "slide_id": result.slide_id,
        "model": result.model.name,
        "version": result.model.version,
        "score": result.score,
        "predicted": result.predicted,
        "patches": result.patches,
        "seconds": result.seconds,
    }))
}

/// What a result records of the model that made it.
pub fn model_ref(record: &registry::ModelRecord, model: &PatchModel) -> ModelRef {
    ModelRef::new(
        &record.name,
        record.version,
        &record.weights_sha256,
        &model.config,
    )
}

/// A model outside the registry (a folder of its files), for offline runs; named after its
/// folder, version 0. An encoder + head model finds its encoder in `pretrained`.
pub fn local_model(
    dir: &std::path::Path,
    pretrained: &std::path::Path,
    device: Device,
) -> InferResult<(PatchModel, ModelRef)> {
    let files = ModelFiles::read_dir(dir)?;
    let weights_sha256 = hex::encode(Sha256::digest(&files.weights));
    let model = PatchModel::from_files(files, &dir.display().to_string(), pretrained, device)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "local".into());
    let model_ref = ModelRef::new(&name, 0, &weights_sha256, &model.config);
    Ok((model, model_ref))
}
