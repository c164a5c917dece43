//! Training runs as researchers see them: a request is checked against its dataset version
//! before anything is queued (so a bad request costs nothing), then becomes a run row and a
//! `train` job for a worker that has the device. The run keeps its per-epoch metrics for live
//! curves; cancel and resume go through its job.

use pathfed_core::accounts::{self, Principal};
use pathfed_core::db::now;
use pathfed_core::jobs::kinds::{Train, TrainPayload};
use pathfed_core::jobs::{JobStatus, NewJob};
use pathfed_datasets::Research;
use pathfed_datasets::manifest::Manifest;
use pathfed_datasets::versions::{parse_reference, published_manifest, require_researcher};
use pathfed_models::aggregate::Aggregation;
use pathfed_models::device;
use pathfed_models::model::Architecture;
use pathfed_models::registry;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::error::{TrainError, TrainResult};

/// At most this many seeds per run: each is a full training.
pub const MAX_SEEDS: usize = 10;

/// What a researcher asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// Dataset version, `NAME@N`.
    pub dataset: String,
    /// Architecture: `resnet18` or `resnet-small`.
    #[serde(default = "default_model")]
    #[schema(default = default_model)]
    pub model: String,
    /// Registry name (default: `{dataset}-{model}`).
    #[serde(default)]
    pub name: Option<String>,
    /// Epochs at most.
    #[serde(default = "default_epochs")]
    #[schema(default = default_epochs)]
    pub epochs: usize,
    /// Patches per batch.
    #[serde(default = "default_batch")]
    #[schema(default = default_batch)]
    pub batch: usize,
    /// Initial learning rate.
    #[serde(default = "default_lr")]
    #[schema(default = default_lr)]
    pub lr: f64,
    /// First seed.
    #[serde(default = "default_seed")]
    #[schema(default = default_seed)]
    pub seed: u64,
    /// Seeds to train (seed, seed+1, ...): metrics are reported as mean ± sd over them.
    #[serde(default = "default_seeds")]
    #[schema(default = default_seeds)]
    pub seeds: usize,
    /// Model input side (default: 224 for resnet18, the patch size for resnet-small).
    #[serde(default)]
    pub input_px: Option<u32>,
    /// Early-stopping patience in epochs (0: off).
    #[serde(default = "default_patience")]
    #[schema(default = default_patience)]
    pub patience: usize,
    /// `mean`, `top-k:K` or `attention`.
    #[serde(default = "default_aggregation")]
    #[schema(default = default_aggregation)]
    pub aggregation: String,
    /// Threshold on the slide score.
    #[serde(default = "default_threshold")]
    #[schema(default = default_threshold)]
    pub threshold: f64,
    /// Positive class (default: the last class code).
    #[serde(default)]
    pub positive: Option<String>,
    /// `flex`, `cuda` or `wgpu`.
    #[serde(default = "default_device")]
    #[schema(default = default_device)]
    pub device: String,
    /// Flips, rotations, colour and HED jitter on training patches.
    #[serde(default = "default_true")]
    #[schema(default = default_true)]
    pub augment: bool,
    /// Pretrained weights to start from: a safetensors or PyTorch file in the platform's
    /// `pretrained/` folder, torchvision names; the classification head is always trained anew.
    #[serde(default)]
    pub pretrained: Option<String>,
    /// A frozen encoder from the pretrained folder (a preset such as `uni`, or a ViT described
    /// by `NAME.json`): the run embeds the version's patches with it, reusing stored
    /// embeddings, and trains a slide-level head on them instead of a CNN. `model`,
    /// `aggregation` and `augment` do not apply; `batch` is the encoder's batch.
    #[serde(default)]
    pub encoder: Option<String>,
    /// The head of an encoder run: `abmil` (gated attention, the default), `transmil`
    /// (TransMIL-style transformer), `attention` or
    /// `mean` (mean pooling + linear, the baseline).
    #[serde(default)]
    pub head: Option<String>,
    /// Cross-validation folds by patient of an encoder run (default 5; 0: none; 3–10).
    #[serde(default)]
    pub folds: Option<usize>,
}

fn default_model() -> String {
    "resnet18".into()
}
fn default_epochs() -> usize {
    10
}
fn default_batch() -> usize {
    64
}
fn default_lr() -> f64 {
    1e-3
}
fn default_seed() -> u64 {
    1
}
fn default_seeds() -> usize {
    1
}
fn default_patience() -> usize {
    3
}
fn default_aggregation() -> String {
    "mean".into()
}
fn default_threshold() -> f64 {
    0.5
}
fn default_device() -> String {
    "flex".into()
}
fn default_true() -> bool {
    true
}

/// A request checked against its dataset version.
#[derive(Debug, Clone)]
pub struct CheckedRequest {
    /// The request.
    pub request: TrainRequest,
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub version: i64,
    /// Architecture.
    pub architecture: Architecture,
    /// Aggregation.
    pub aggregation: Aggregation,
    /// Registry name.
    pub name: String,
    /// Model input side.
    pub input_px: u32,
    /// The version's manifest.
    pub manifest: Manifest,
    /// Pretrained weights: the file and its SHA-256.
    pub pretrained: Option<(std::path::PathBuf, String)>,
    /// The encoder and head, for an encoder run.
    pub encoder: Option<EncoderPlan>,
}

/// What an encoder run will use.
#[derive(Debug, Clone)]
pub struct EncoderPlan {
    /// The encoder in the pretrained folder.
    pub found: pathfed_models::vit::ResolvedEncoder,
    /// The head's pooling.
    pub pooling: pathfed_models::mil::Pooling,
    /// Cross-validation folds (0: none).
    pub folds: usize,
}

/// Most cross-validation folds a run may ask for.
pub const MAX_FOLDS: usize = 10;

impl CheckedRequest {
    /// The architecture as the registry lists it: `resnet18`, or `ENCODER+HEAD`.
    pub fn architecture_name(&self) -> String {
        match &self.encoder {
            Some(plan) => format!("{}+{}", plan.found.name, plan.pooling.name()),
            None => self.architecture.name().to_string(),
        }
    }
}

/// The folder pretrained weight files are taken from (no download happens anywhere: an
/// administrator places them there).
pub fn pretrained_dir(research: &Research) -> std::path::PathBuf {
    registry::pretrained_dir(&research.platform)
}

/// Finds `name` in the pretrained folder and checks that it fits `config`'s layout.
fn check_pretrained(
    research: &Research,
    name: &str,
    config: &pathfed_models::model::ModelConfig,
) -> TrainResult<(std::path::PathBuf, String)> {
    use sha2::Digest as _;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain {
        return Err(TrainError::Invalid(format!(
            "pretrained file {name:?}: a plain file name in the pretrained folder"
        )));
    }
    let path = pretrained_dir(research).join(name);
    if !path.is_file() {
        return Err(TrainError::NotFound(format!(
            "pretrained file {name} (place it in the platform's pretrained folder)"
        )));
    }
    // Loading it now turns a mismatched file into a refusal instead of a failed job.
    let probe = pathfed_models::model::ResNet::new(config, &burn::prelude::Device::flex());
    pathfed_models::import::load_pretrained(
        probe,
        &path,
        &pathfed_models::import::ImportOptions { skip_head: true },
    )?;
    let bytes = std::fs::read(&path).map_err(|e| TrainError::io(format!("reading {name}"), e))?;
    Ok((path, hex::encode(sha2::Sha256::digest(&bytes))))
}

/// A published version's manifest, refusing one that is missing or has no patches.
pub(crate) async fn manifest_with_patches(
    research: &Research,
    dataset: &str,
    version: i64,
) -> TrainResult<pathfed_datasets::manifest::Manifest> {
    let manifest = published_manifest(research, dataset, version)
        .await
        .map_err(|e| match e {
            pathfed_datasets::DatasetError::NotFound(_) => {
                TrainError::NotFound(format!("published dataset version {dataset}@{version}"))
            }
            other => other.into(),
        })?;
    if manifest.content.extraction.is_none() {
        return Err(TrainError::Invalid(format!(
            "{dataset}@{version} has no patches (built with --no-patches): build a version with \
             patches"
        )));
    }
    Ok(manifest)
}

/// Fetches a version's patch shards into this node's cache, reporting them as the first
/// `share` of `job`'s progress.
pub(crate) async fn fetch_patches(
    research: &Research,
    manifest: &pathfed_datasets::manifest::Manifest,
    job: &pathfed_core::worker::RunningJob,
    share: f64,
) -> TrainResult<crate::data::PatchSet> {
    let _ = job.progress(0.0, "fetching patches");
    let cache = research
        .platform
        .config
        .data_dir
        .join("training")
        .join("cache");
    crate::data::PatchSet::fetch(&research.platform.store, manifest, &cache, |done, total| {
        let _ = job.progress(
            share * done as f64 / total.max(1) as f64,
            format!("fetching patches: slide {done} of {total}"),
        );
    })
    .await
}

/// Refuses a device that is no device, or that no worker of this platform has.
pub(crate) fn check_device(research: &Research, name: &str) -> TrainResult<()> {
    device::check_name(name)?;
    let devices = research.platform.config.training.device_list();
    if !devices.iter().any(|d| d == name) {
        return Err(TrainError::Device {
            device: name.to_string(),
            reason: format!(
                "no worker of this platform trains on it (configured: {}); start a worker built with that backend and add it to [training] devices",
                devices.join(", ")
            ),
        });
    }
    Ok(())
}

/// The encoder and head of an encoder run, refusing options that belong to the other kind.
fn check_encoder_choice(
    research: &Research,
    request: &TrainRequest,
) -> TrainResult<Option<EncoderPlan>> {
    let Some(name) = &request.encoder else {
        if request.head.is_some() || request.folds.is_some() {
            return Err(TrainError::Invalid(
                "head and folds belong to encoder runs: name an encoder, or leave them out".into(),
            ));
        }
        return Ok(None);
    };
    if request.pretrained.is_some() {
        return Err(TrainError::Invalid(
            "pretrained starts a CNN from weights; an encoder run names its encoder alone".into(),
        ));
    }
    let found = pathfed_models::vit::resolve(&pretrained_dir(research), name)?;
    let input = found.spec.preprocess.input_px;
    if request.input_px.is_some_and(|px| px != input) {
        return Err(TrainError::Invalid(format!(
            "encoder {name} reads {input} px patches; leave input_px out"
        )));
    }
    let pooling = pathfed_models::mil::Pooling::parse(request.head.as_deref().unwrap_or("abmil"))?;
    let folds = request.folds.unwrap_or(5);
    if folds != 0 && !(3..=MAX_FOLDS).contains(&folds) {
        return Err(TrainError::Invalid(format!(
            "folds must be 0 (no cross-validation) or 3–{MAX_FOLDS}, not {folds}"
        )));
    }
    Ok(Some(EncoderPlan {
        found,
        pooling,
        folds,
    }))
}

/// Refuses cross-validation with fewer patients (with patches) in the training and validation
/// splits than folds.
fn check_folds(manifest: &Manifest, folds: usize) -> TrainResult<()> {
    // Only slides with patches have embeddings, and so a place in a fold.
    let extracted = |id: &str| {
        manifest.content.extraction.as_ref().is_some_and(|x| {
            x["slides"][id]["qc"]["patches"]
                .as_u64()
                .is_some_and(|n| n > 0)
        })
    };
    let patients: std::collections::BTreeSet<&str> = manifest
        .content
        .slides
        .iter()
        .filter(|e| e.split != "test" && extracted(&e.slide.id))
        .map(|e| e.slide.patient.as_str())
        .collect();
    if folds > patients.len() {
        return Err(TrainError::Invalid(format!(
            "{folds}-fold cross-validation needs at least {folds} patients in the training and \
             validation splits; this version has {}: ask for fewer folds, or 0",
            patients.len()
        )));
    }
    Ok(())
}

/// Checks what can be checked before a job exists: parameters, the device, and the dataset
/// version (published, with patches, every split non-empty, two classes, batch ≤ train split).
pub async fn check_request(
    research: &Research,
    request: TrainRequest,
) -> TrainResult<CheckedRequest> {
    let (dataset, version) = parse_reference(&request.dataset)?;
    let architecture = Architecture::parse(&request.model)?;
    let aggregation = Aggregation::parse(&request.aggregation)?;
    check_device(research, &request.device)?;
    if request.epochs == 0 || request.epochs > 1000 {
        return Err(TrainError::Invalid("epochs must be 1–1000".into()));
    }
    if request.batch == 0 || request.batch > 4096 {
        return Err(TrainError::Invalid("batch must be 1–4096".into()));
    }
    if !(request.lr > 0.0 && request.lr < 1.0) {
        return Err(TrainError::Invalid(format!(
            "learning rate {} is not in (0, 1)",
            request.lr
        )));
    }
    if request.seeds == 0 || request.seeds > MAX_SEEDS {
        return Err(TrainError::Invalid(format!("seeds must be 1–{MAX_SEEDS}")));
    }
    if !(request.threshold > 0.0 && request.threshold < 1.0) {
        return Err(TrainError::Invalid(format!(
            "threshold {} is not in (0, 1)",
            request.threshold
        )));
    }
    let encoder = check_encoder_choice(research, &request)?;
    let name = match &request.name {
        Some(name) => {
            registry::check_name(name)?;
            name.clone()
        }
        None => {
            // Model names are lower case; an encoder's may not be.
            let name = match &encoder {
                Some(plan) => format!("{dataset}-{}-{}", plan.found.name, plan.pooling.name()),
                None => format!("{dataset}-{}", architecture.name()),
            }
            .to_lowercase();
            registry::check_name(&name).map_err(|e| {
                TrainError::Invalid(format!(
                    "the default model name does not fit ({e}): give the run a name"
                ))
            })?;
            name
        }
    };

    let manifest = manifest_with_patches(research, &dataset, version).await?;
    if let Some(plan) = &encoder {
        crate::embeddings::check_resolution(&plan.found.spec, &manifest)?;
        check_folds(&manifest, plan.folds)?;
    }
    let extraction = manifest
        .content
        .extraction
        .as_ref()
        .ok_or_else(|| TrainError::Invalid(format!("{dataset}@{version} has no patches")))?;
    let patch_px = extraction["params"]["patch_px"].as_u64().unwrap_or(0) as u32;
    let input_px = match &encoder {
        Some(plan) => plan.found.spec.preprocess.input_px,
        None => request.input_px.unwrap_or(match architecture {
            Architecture::Resnet18 => 224,
            Architecture::ResnetSmall => patch_px.max(16),
        }),
    };
    if !(16..=1024).contains(&input_px) {
        return Err(TrainError::Invalid(format!(
            "input size {input_px} px is not in 16–1024"
        )));
    }
    let counts = &extraction["patch_counts"];
    let split_total = |split: &str| -> u64 {
        counts[split]
            .as_object()
            .map(|labels| labels.values().filter_map(|v| v.as_u64()).sum())
            .unwrap_or(0)
    };
    for split in crate::data::SPLITS {
        if split_total(split) == 0 {
            return Err(TrainError::Invalid(format!(
                "the {split} split of {dataset}@{version} has no patches: build a version with more slides or other split fractions"
            )));
        }
    }
    let train_classes = counts["train"]
        .as_object()
        .map(|labels| labels.values().filter(|v| v.as_u64() > Some(0)).count())
        .unwrap_or(0);
    if train_classes < 2 {
        return Err(TrainError::Invalid(format!(
            "the train split of {dataset}@{version} holds one class only: a classifier needs at least two"
        )));
    }
    let train = split_total("train");
    if request.batch as u64 > train {
        return Err(TrainError::Invalid(format!(
            "batch {} is larger than the train split ({train} patches)",
            request.batch
        )));
    }
    if let Some(p) = &request.positive {
        let known = manifest.content.slides.iter().any(|s| &s.slide.label == p);
        if !known {
            return Err(TrainError::Invalid(format!(
                "positive class {p:?} is not a label of {dataset}@{version}"
            )));
        }
    }
    let pretrained = match &request.pretrained {
        Some(name) => {
            let config = pathfed_models::model::ModelConfig {
                architecture,
                classes: 2,
                input_px,
            };
            Some(check_pretrained(research, name, &config)?)
        }
        None => None,
    };
    Ok(CheckedRequest {
        encoder,
        pretrained,
        request,
        dataset,
        version,
        architecture,
        aggregation,
        name,
        input_px,
        manifest,
    })
}

/// One metric value of one epoch of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryPoint {
    /// Seed.
    pub seed: u64,
    /// Epoch (1-based).
    pub epoch: usize,
    /// "train" or "valid".
    pub split: String,
    /// "Loss", "Accuracy", "AUROC [Macro]".
    pub name: String,
    /// Value.
    pub value: f64,
}

impl HistoryPoint {
    /// Seed `seed`'s value of an epoch metric.
    pub fn of(seed: u64, metric: crate::run::EpochMetric) -> Self {
        Self {
            seed,
            epoch: metric.epoch,
            split: metric.split,
            name: metric.name,
            value: metric.value,
        }
    }
}

/// A run as listed and followed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunState {
    /// Run id.
    pub id: String,
    /// Dataset version, `NAME@N`.
    pub dataset: String,
    /// The request.
    pub request: TrainRequest,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// 0–1.
    pub progress: f64,
    /// What it is doing.
    pub note: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Per-epoch metrics so far.
    pub history: Vec<HistoryPoint>,
    /// The registered model, `NAME@V`, once done.
    pub model: Option<String>,
    /// Who started it.
    pub created_by: String,
    /// When (Unix seconds).
    pub created_at: i64,
    /// When it ended.
    pub finished_at: Option<i64>,
    /// Can be resumed from its checkpoints (stopped before registering).
    pub resumable: bool,
}

/// Checks `request` and queues it; the run's state.
pub async fn start(
    research: &Research,
    user: &Principal,
    request: TrainRequest,
) -> TrainResult<RunState> {
    require_researcher(user)?;
    let checked = check_request(research, request).await?;
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO training_runs (id, dataset, dataset_version, request, device, history, \
         model_name, created_by, created_at) VALUES ($1, $2, $3, $4, $5, '[]', $6, $7, $8)",
    )
    .bind(&id)
    .bind(&checked.dataset)
    .bind(checked.version)
    .bind(serde_json::to_string(&checked.request).unwrap_or_default())
    .bind(&checked.request.device)
    .bind(&checked.name)
    .bind(&user.id)
    .bind(now())
    .execute(research.platform.db.pool())
    .await?;
    enqueue(research, user, &id, &checked.request.device, false).await?;
    state(research, user, &id).await
}

async fn enqueue(
    research: &Research,
    user: &Principal,
    run: &str,
    device: &str,
    resume: bool,
) -> TrainResult<()> {
    let payload = TrainPayload {
        run: run.to_string(),
        resume,
        device: device.to_string(),
    };
    let job = research
        .jobs
        .enqueue(NewJob::of::<Train>(&payload).by(&user.id))
        .await?;
    sqlx::query("UPDATE training_runs SET job_id = $1, finished_at = NULL WHERE id = $2")
        .bind(&job.id)
        .bind(run)
        .execute(research.platform.db.pool())
        .await?;
    Ok(())
}

const SELECT_RUNS: &str = "SELECT r.id, r.dataset, r.dataset_version, r.request, r.job_id, \
     r.history, r.model_name, r.model_version, r.created_by, r.created_at, r.finished_at \
     FROM training_runs r";

/// The runs of `rows`, their creators named with one lookup for all of them. A run whose
/// creator is unknown is left out, as a join with `users` would leave it out.
async fn from_rows(research: &Research, rows: &[sqlx::any::AnyRow]) -> TrainResult<Vec<RunState>> {
    let creators: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("created_by"))
        .collect::<Result<_, _>>()?;
    let names = accounts::user_names(&research.platform.db, &creators).await?;
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(name) = names.get(&row.try_get::<String, _>("created_by")?) {
            runs.push(from_row(research, row, name).await?);
        }
    }
    Ok(runs)
}

async fn from_row(
    research: &Research,
    row: &sqlx::any::AnyRow,
    created_by: &str,
) -> TrainResult<RunState> {
    let request: String = row.try_get("request")?;
    let history: String = row.try_get("history")?;
    let job_id: Option<String> = row.try_get("job_id")?;
    let model_version: Option<i64> = row.try_get("model_version")?;
    let model_name: String = row.try_get("model_name")?;
    let mut state = RunState {
        id: row.try_get("id")?,
        dataset: format!(
            "{}@{}",
            row.try_get::<String, _>("dataset")?,
            row.try_get::<i64, _>("dataset_version")?
        ),
        request: serde_json::from_str(&request)
            .map_err(|e| TrainError::Invalid(format!("stored request: {e}")))?,
        status: "queued".into(),
        progress: 0.0,
        note: String::new(),
        error: None,
        history: serde_json::from_str(&history).unwrap_or_default(),
        model: model_version.map(|v| format!("{model_name}@{v}")),
        created_by: created_by.to_string(),
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        resumable: false,
    };
    if let Some(id) = job_id {
        let job = research.jobs.get(&id).await?;
        state.progress = job.progress;
        state.note = job.progress_note.clone();
        state.status = match job.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Running => "running",
            _ => "queued",
        }
        .into();
        state.error = job.last_error.clone();
        state.resumable =
            matches!(job.status, JobStatus::Failed | JobStatus::Cancelled) && state.model.is_none();
        if job.status == JobStatus::Succeeded {
            state.progress = 1.0;
        }
    }
    Ok(state)
}

/// A run's state.
pub async fn state(research: &Research, user: &Principal, id: &str) -> TrainResult<RunState> {
    require_researcher(user)?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_RUNS} WHERE r.id = $1"
    )))
    .bind(id)
    .fetch_optional(research.platform.db.pool())
    .await?;
    from_rows(research, row.as_slice())
        .await?
        .pop()
        .ok_or_else(|| TrainError::NotFound(format!("training run {id}")))
}

/// The latest runs, newest first.
pub async fn list(research: &Research, user: &Principal, limit: i64) -> TrainResult<Vec<RunState>> {
    require_researcher(user)?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_RUNS} ORDER BY r.created_at DESC, r.id LIMIT $1"
    )))
    .bind(limit.clamp(1, 500))
    .fetch_all(research.platform.db.pool())
    .await?;
    from_rows(research, &rows).await
}

/// Asks a queued or running run to stop; it ends `cancelled` with its checkpoints kept.
pub async fn cancel(research: &Research, user: &Principal, id: &str) -> TrainResult<RunState> {
    let current = state(research, user, id).await?;
    let job_id: Option<String> = sqlx::query("SELECT job_id FROM training_runs WHERE id = $1")
        .bind(id)
        .fetch_one(research.platform.db.pool())
        .await?
        .try_get("job_id")?;
    match (job_id, current.status.as_str()) {
        (Some(job), "queued" | "running") => {
            research.jobs.cancel(&job).await?;
            state(research, user, id).await
        }
        _ => Err(TrainError::Conflict(format!(
            "run {id} is {}: nothing to cancel",
            current.status
        ))),
    }
}

/// Queues a stopped run again; it continues from its last checkpoint.
pub async fn resume(research: &Research, user: &Principal, id: &str) -> TrainResult<RunState> {
    let current = state(research, user, id).await?;
    if !current.resumable {
        return Err(TrainError::Conflict(format!(
            "run {id} is {}: only a failed or cancelled run can be resumed",
            current.status
        )));
    }
    // The device may have gone from the configuration since.
    check_request(research, current.request.clone()).await?;
    enqueue(research, user, id, &current.request.device, true).await?;
    state(research, user, id).await
}
