//! Embedding extraction as a job: a researcher asks (API or `pathfed embed NAME@N --encoder E`)
//! for a dataset version's patches to be embedded by an encoder from the pretrained folder; the
//! request is checked before anything is queued (version, encoder and its weights, device),
//! and the `embed` job fills the embedding store ([`crate::embed`]), reporting progress per
//! slide and how many slides it found stored already.

use std::collections::HashSet;
use std::sync::Arc;

use object_store::ObjectStoreExt as _;
use object_store::path::Path as ObjectPath;
use pathfed_core::accounts::Principal;
use pathfed_core::jobs::kinds::{Embed, EmbedPayload, JobKind as _};
use pathfed_core::jobs::{Job, NewJob};
use pathfed_core::worker::{JobFailure, RunningJob};
use pathfed_datasets::Research;
use pathfed_datasets::versions::{parse_reference, require_researcher};
use pathfed_models::{device, vit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::embed::{Encoder, ExtractReport, extract, object_key};
use crate::error::{TrainError, TrainResult};
use crate::runs::{check_device, fetch_patches, manifest_with_patches, pretrained_dir};

/// Patches per encoder call.
const BATCH: usize = 64;

/// Embed a dataset version's patches with an encoder.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    /// Dataset version with patches, NAME@N.
    pub dataset: String,
    /// Encoder: a preset (uni, uni2-h, virchow2, h-optimus-0, h-optimus-1, prov-gigapath) or a
    /// ViT described by NAME.json, with its weights in the pretrained folder.
    pub encoder: String,
    /// Device: flex (CPU), cuda or wgpu.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    pathfed_core::jobs::kinds::CPU_DEVICE.to_string()
}

/// An extraction as it stands.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EmbedState {
    /// The job's id, to follow or cancel it.
    pub job_id: String,
    /// NAME@N.
    pub dataset: String,
    /// Encoder name.
    pub encoder: String,
    /// Device.
    pub device: String,
    /// queued, running, succeeded, failed or cancelled.
    pub status: String,
    /// 0–1.
    pub progress: f64,
    /// What it is doing now.
    pub note: String,
    /// Why it failed.
    pub error: Option<String>,
    /// What it did, once done.
    #[schema(value_type = Option<Object>)]
    pub result: Option<ExtractReport>,
}

fn state_of(job: &Job) -> TrainResult<EmbedState> {
    let payload: EmbedPayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| TrainError::Invalid(format!("stored embed job: {e}")))?;
    Ok(EmbedState {
        job_id: job.id.clone(),
        dataset: format!("{}@{}", payload.dataset, payload.version),
        encoder: payload.encoder,
        device: payload.device,
        status: job.status.as_str().to_string(),
        progress: job.progress,
        note: job.progress_note.clone(),
        error: job.last_error.clone(),
        result: job
            .result
            .as_ref()
            .and_then(|r| serde_json::from_value(r.clone()).ok()),
    })
}

/// Checks a request and queues its job, or returns the job of the same work still running.
pub async fn start(
    research: &Research,
    user: &Principal,
    request: EmbedRequest,
) -> TrainResult<EmbedState> {
    require_researcher(user)?;
    let (dataset, version) = parse_reference(&request.dataset)?;
    check_device(research, &request.device)?;
    let encoder = vit::resolve(&pretrained_dir(research), &request.encoder)?;
    let manifest = manifest_with_patches(research, &dataset, version).await?;
    check_resolution(&encoder.spec, &manifest)?;
    let payload = EmbedPayload {
        dataset,
        version,
        encoder: request.encoder,
        device: request.device,
    };
    let kind = Embed::kind_for_device(&payload.device);
    let same = serde_json::to_value(&payload).unwrap_or(Value::Null);
    let running = research
        .jobs
        .list(Some(&kind), 200)
        .await?
        .into_iter()
        .find(|job| !job.status.is_final() && job.payload == same);
    let job = match running {
        Some(job) => job,
        None => {
            research
                .jobs
                .enqueue(NewJob::of::<Embed>(&payload).by(&user.id))
                .await?
        }
    };
    state_of(&job)
}

/// An extraction job's state.
pub async fn state(research: &Research, user: &Principal, id: &str) -> TrainResult<EmbedState> {
    require_researcher(user)?;
    let job = research.jobs.get(id).await.map_err(|e| match e {
        pathfed_core::CoreError::NotFound(_) => TrainError::NotFound(format!("embedding job {id}")),
        other => other.into(),
    })?;
    if !job.kind.starts_with(Embed::NAME) {
        return Err(TrainError::NotFound(format!("embedding job {id}")));
    }
    state_of(&job)
}

/// Asks an extraction to stop; slides stored so far are kept and reused by the next one.
pub async fn cancel(research: &Research, user: &Principal, id: &str) -> TrainResult<EmbedState> {
    let current = state(research, user, id).await?;
    if !matches!(current.status.as_str(), "queued" | "running") {
        return Err(TrainError::Conflict(format!(
            "embedding job {id} is {}: nothing to cancel",
            current.status
        )));
    }
    let job = research.jobs.cancel(id).await?;
    state_of(&job)
}

/// Every encoder a researcher can choose, and whether its weights are installed.
pub fn encoders(research: &Research, user: &Principal) -> TrainResult<Vec<vit::EncoderEntry>> {
    require_researcher(user)?;
    Ok(vit::list(&pretrained_dir(research)))
}

/// Runs an `embed` job.
pub async fn run_embed(
    research: Research,
    payload: EmbedPayload,
    job: RunningJob,
) -> Result<Value, JobFailure> {
    match embed_version(&research, &payload, &job).await {
        Ok(report) => Ok(serde_json::to_value(report).unwrap_or(Value::Null)),
        Err(TrainError::Cancelled) => Err(job
            .check_cancel()
            .err()
            .unwrap_or_else(|| JobFailure::permanent("stopped"))),
        Err(e) => Err(JobFailure::from_error(&e)),
    }
}

async fn embed_version(
    research: &Research,
    payload: &EmbedPayload,
    job: &RunningJob,
) -> TrainResult<ExtractReport> {
    let manifest = manifest_with_patches(research, &payload.dataset, payload.version).await?;
    let hash = patches_hash(&manifest)?;
    let device = device::open(&payload.device)?;
    let found = vit::resolve(&pretrained_dir(research), &payload.encoder)?;
    check_resolution(&found.spec, &manifest)?;
    let set = fetch_patches(research, &manifest, job, 0.1).await?;
    job.check_cancel().map_err(|_| TrainError::Cancelled)?;
    let _ = job.progress(0.1, format!("loading encoder {}", payload.encoder));
    let pretrained = pretrained_dir(research);
    let name = payload.encoder.clone();
    let open_device = device.clone();
    let encoder =
        tokio::task::spawn_blocking(move || Encoder::open(&pretrained, &name, &open_device))
            .await
            .map_err(|e| TrainError::Invalid(format!("loading the encoder: {e}")))??;
    let (report, _) = embed_set(
        research,
        job,
        Arc::new(set),
        hash,
        encoder,
        BATCH,
        (0.1, 0.9),
    )
    .await?;
    Ok(report)
}

/// Fills the embedding store for `set` (patches extracted with `patches_hash`) with
/// `encoder`, reporting progress over `(start, share)` of `job`; slides withdrawn meanwhile are
/// neither stored nor left behind, and are returned.
pub(crate) async fn embed_set(
    research: &Research,
    job: &RunningJob,
    set: Arc<crate::data::PatchSet>,
    patches_hash: String,
    encoder: Encoder,
    batch: usize,
    (start, share): (f64, f64),
) -> TrainResult<(ExtractReport, HashSet<String>)> {
    let runtime = tokio::runtime::Handle::current();
    let store = research.platform.store.clone();
    let cancel = job.cancel_flag();
    let progress_job = job.clone();
    let swept = set.clone();
    let db = research.platform.db.clone();
    let live_runtime = runtime.clone();
    let report = tokio::task::spawn_blocking(move || {
        // A slide withdrawn (opt-out) while the job ran is not stored.
        let live = |slide: &str| {
            live_runtime
                .block_on(still_live(&db, slide))
                .unwrap_or(true)
        };
        extract(
            &runtime,
            &store,
            &set,
            &patches_hash,
            &encoder,
            batch,
            &|done, total| {
                let _ = progress_job.progress(
                    start + share * done as f64 / total.max(1) as f64,
                    format!("embedding: slide {done} of {total}"),
                );
            },
            &live,
            &cancel,
        )
    })
    .await
    .map_err(|e| TrainError::Invalid(format!("embedding: {e}")))??;
    // A withdrawal between that check and the store, or during the whole job, listed the
    // embedding objects before this one existed: sweep what the job stored for such slides.
    let mut withdrawn = HashSet::new();
    for slide in &swept.slides {
        if !still_live(&research.platform.db, &slide.id).await? {
            withdrawn.insert(slide.id.clone());
            let object = ObjectPath::from(object_key(&report.key, &slide.id));
            match research.platform.store.delete(&object).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(pathfed_core::CoreError::from(e).into()),
            }
        }
    }
    Ok((report, withdrawn))
}

/// The hash of the parameters a version's patches were cut with: part of its embeddings' key.
pub(crate) fn patches_hash(manifest: &pathfed_datasets::manifest::Manifest) -> TrainResult<String> {
    manifest
        .content
        .extraction
        .as_ref()
        .and_then(|x| x["params_hash"].as_str())
        .map(str::to_string)
        .ok_or_else(|| TrainError::Invalid("the version's patches have no parameter hash".into()))
}

/// Whether a research slide is still in the research tier (not withdrawn or opted out).
async fn still_live(db: &pathfed_core::db::Db, slide: &str) -> TrainResult<bool> {
    let row = sqlx::query("SELECT id FROM research_slides WHERE id = $1 AND deleted_at IS NULL")
        .bind(slide)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.is_some())
}

/// How far the resolution an encoder sees may be from the one it was trained at.
const RESOLUTION_TOLERANCE: f64 = 0.1;

/// Refuses a version whose patches, resized to the encoder's input, would show the encoder
/// another magnification than it was trained at (a 1 µm/px version to a 20× model, say):
/// the embeddings would be computed, stored and reused, and silently wrong.
pub(crate) fn check_resolution(
    spec: &vit::EncoderSpec,
    manifest: &pathfed_datasets::manifest::Manifest,
) -> TrainResult<()> {
    let grid = manifest
        .content
        .extraction
        .as_ref()
        .map(|x| &x["params"]["grid"]);
    let (patch_px, patch_mpp) = match grid {
        Some(g) => (g["patch_px"].as_f64(), g["patch_mpp"].as_f64()),
        None => (None, None),
    };
    let (Some(patch_px), Some(patch_mpp)) = (patch_px, patch_mpp) else {
        return Err(TrainError::Invalid(
            "the version's patch size and resolution are not recorded".into(),
        ));
    };
    let seen = patch_mpp * patch_px / f64::from(spec.preprocess.input_px);
    let wanted = spec.preprocess.mpp;
    if (seen / wanted - 1.0).abs() > RESOLUTION_TOLERANCE {
        return Err(TrainError::Invalid(format!(
            "the encoder reads {} px at {wanted} µm/px, but this version's {patch_px} px patches \
             at {patch_mpp} µm/px would reach it at {seen:.3} µm/px; build a version with \
             patches of {} px at {wanted} µm/px",
            spec.preprocess.input_px, spec.preprocess.input_px
        )));
    }
    Ok(())
}
