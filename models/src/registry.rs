//! The model registry: every finished run becomes a version of a named model, with its files
//! under `models/{name}/{version}/` (weights, config, card, metrics, plots) and a row that says
//! where it came from. A version is reserved first (`registering`), its objects written, then
//! marked `registered`; anything failing in between removes what was written, so a listed model
//! is always complete. Deploying picks the model inference uses for an organ and taxonomy; a
//! version whose test metrics do not show it does better than chance needs a written reason.

use burn::prelude::*;
use burn::store::{BurnpackStore, ModuleSnapshot as _};
use burn::tensor::Bytes;
use pathfed_core::Platform;
use pathfed_core::accounts::{self, Principal};
use pathfed_core::contracts::deployments as deployed;
use pathfed_core::db::now;
use pathfed_core::names::{check_versioned_name, parse_versioned_reference};
use pathfed_core::store::{delete_prefix, get_bytes, put_bytes};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::Row as _;

use crate::aggregate::{Aggregation, Aggregator};
use crate::error::{ModelError, ModelResult};
use crate::metrics::{CHANCE_BALANCED_ACCURACY, Interval, above_chance};
use crate::mil::{AttentionMil, MilConfig};
use crate::model::{ModelConfig, ResNet};
use crate::vit::{EncoderSpec, Vit};

/// Files a model version may have; nothing else is served from its folder.
pub const MODEL_FILES: [&str; 7] = [
    "model.bpk",
    "aggregator.bpk",
    "config.json",
    "card.json",
    "metrics.json",
    "roc.png",
    "loss.png",
];

/// The frozen encoder an encoder + head model reads patches with. Its weights stay in the
/// pretrained folder (they are the hospital's licensed copy, often gigabytes); the registry
/// records their hash, and loading refuses any other file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderRef {
    /// Its name in the pretrained folder.
    pub name: String,
    /// SHA-256 of the weights file it was trained with.
    pub weights_sha256: String,
    /// Architecture and preprocessing, as trained.
    pub spec: EncoderSpec,
}

/// What inference needs besides the weights: saved as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceConfig {
    /// The patch classifier's shape (a CNN model; absent for an encoder + head model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelConfig>,
    /// The frozen encoder (an encoder + head model, whose `model.bpk` is the head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder: Option<EncoderRef>,
    /// Class codes, index order.
    pub classes: Vec<String>,
    /// The class whose probability scores a slide.
    pub positive: String,
    /// Slide aggregation.
    pub aggregation: Aggregation,
    /// The attention head's shape, when aggregating by attention.
    pub attention: Option<MilConfig>,
    /// Threshold on the slide score.
    pub threshold: f64,
    /// Patch side in pixels as extracted for training.
    pub patch_px: u32,
    /// Patch resolution in µm per pixel as extracted for training.
    pub patch_mpp: f64,
    /// The grid's tolerance as extracted for training: a slide level this close to
    /// `patch_mpp` is read as stored (models registered before it existed: 0, always resampled).
    #[serde(default)]
    pub mpp_tolerance: f64,
}

impl InferenceConfig {
    /// Side in pixels of what the network reads.
    pub fn input_px(&self) -> u32 {
        match (&self.encoder, &self.model) {
            (Some(encoder), _) => encoder.spec.preprocess.input_px,
            (None, Some(model)) => model.input_px,
            (None, None) => self.patch_px,
        }
    }

    /// Per-channel mean and deviation the network's input is normalised with.
    pub fn normalisation(&self) -> ([f32; 3], [f32; 3]) {
        match &self.encoder {
            Some(encoder) => (encoder.spec.preprocess.mean, encoder.spec.preprocess.std),
            None => (crate::model::MEAN, crate::model::STD),
        }
    }

    /// What the registry lists as the architecture: `resnet18`, or `ENCODER+HEAD`.
    pub fn architecture(&self) -> String {
        match (&self.encoder, &self.model, &self.attention) {
            (Some(encoder), _, Some(head)) => format!("{}+{}", encoder.name, head.pooling.name()),
            (Some(encoder), _, None) => encoder.name.clone(),
            (None, Some(model), _) => model.architecture.name().to_string(),
            (None, None, _) => "unknown".into(),
        }
    }
}

/// The network that turns patches into what the head or classifier reads.
pub enum Backbone {
    /// A CNN patch classifier (its embeddings feed an attention head, when there is one).
    Cnn(Box<ResNet>),
    /// A frozen foundation-model encoder; the head scores its embeddings.
    Encoder(Box<Vit>),
}

/// A model version as listed.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelRecord {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// The run that trained it.
    pub run_id: String,
    /// Architecture.
    pub architecture: String,
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub dataset_version: i64,
    /// The dataset version's content hash.
    pub dataset_hash: String,
    /// Taxonomy of the labels.
    pub taxonomy: String,
    /// Organ of the dataset's slides, when the dataset was limited to one.
    pub organ: Option<String>,
    /// Class codes.
    pub classes: Vec<String>,
    /// Positive class.
    pub positive: String,
    /// Code version that trained it.
    pub code_version: String,
    /// Headline metrics.
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
    /// SHA-256 of `model.bpk`.
    pub weights_sha256: String,
    /// `registered` or `retired`.
    pub status: String,
    /// Who trained it.
    pub created_by: String,
    /// When (Unix seconds).
    pub created_at: i64,
    /// Where it is deployed: `organ/taxonomy` pairs.
    pub deployed_for: Vec<Deployment>,
}

/// A deployment: the model inference uses for an organ's slides in a taxonomy.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Deployment {
    /// Organ.
    pub organ: String,
    /// Taxonomy.
    pub taxonomy: String,
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: i64,
    /// Who deployed it.
    pub deployed_by: String,
    /// When (Unix seconds).
    pub deployed_at: i64,
    /// Why it was deployed although its test metrics do not show it does better than chance
    /// (or a note given with any deployment); `None` when none was given.
    pub reason: Option<String>,
}

/// Why a version's test metrics do not show that it tells its classes apart: its slide-level
/// balanced accuracy is at chance, its interval reaches chance, or it was never measured (a
/// test split without both classes). Deploying such a version takes a written reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ChanceLevel {
    /// `name@version`.
    pub model: String,
    /// The test balanced accuracy with its 95 % interval, when measured.
    pub balanced_accuracy: Option<Interval>,
    /// The balanced accuracy of a model that cannot discriminate.
    pub chance: f64,
}

impl ChanceLevel {
    /// The figures alone, for the audit log: `balanced accuracy 0.550, 95 % CI 0.300–0.800;
    /// chance 0.500`.
    pub fn figures(&self) -> String {
        match &self.balanced_accuracy {
            Some(i) => format!(
                "balanced accuracy {:.3}, 95 % CI {:.3}–{:.3}; chance {:.3}",
                i.value, i.low, i.high, self.chance
            ),
            None => format!("balanced accuracy not measured; chance {:.3}", self.chance),
        }
    }
}

impl std::fmt::Display for ChanceLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match &self.balanced_accuracy {
            Some(i) if i.value <= self.chance => "its test balanced accuracy is not above chance",
            Some(_) => "the interval of its test balanced accuracy reaches chance",
            None => "its test balanced accuracy was never measured (the test split lacks a class)",
        };
        write!(
            f,
            "{} may not tell its classes apart: {why} ({}). Deploying it needs a written reason.",
            self.model,
            self.figures()
        )
    }
}

/// Whether `model` needs a written reason to be deployed, and why (see [`ChanceLevel`]).
pub fn chance_level(model: &ModelRecord) -> Option<ChanceLevel> {
    let measured = model
        .summary
        .get("balanced_accuracy")
        .and_then(|v| serde_json::from_value::<Interval>(v.clone()).ok());
    if above_chance(measured.as_ref()) {
        return None;
    }
    Some(ChanceLevel {
        model: format!("{}@{}", model.name, model.version),
        balanced_accuracy: measured,
        chance: CHANCE_BALANCED_ACCURACY,
    })
}

/// The longest deployment reason kept.
const MAX_REASON_CHARS: usize = 2000;

/// A reason trimmed, or `None` when blank; refused when too long or holding control characters
/// other than line breaks and tabs.
fn checked_reason(reason: Option<&str>) -> ModelResult<Option<String>> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ModelError::Invalid(format!(
            "the deployment reason is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if reason
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ModelError::Invalid(
            "the deployment reason holds control characters".into(),
        ));
    }
    Ok(Some(reason.to_string()))
}

/// A model version to register.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Model name.
    pub name: String,
    /// The run.
    pub run_id: String,
    /// Architecture.
    pub architecture: String,
    /// Dataset name.
    pub dataset: String,
    /// Dataset version.
    pub dataset_version: i64,
    /// Its content hash.
    pub dataset_hash: String,
    /// Taxonomy.
    pub taxonomy: String,
    /// Organ, if the dataset is limited to one.
    pub organ: Option<String>,
    /// Inference configuration (classes, positive class, aggregation, encoder).
    pub config: InferenceConfig,
    /// Code version.
    pub code_version: String,
    /// Headline metrics.
    pub summary: serde_json::Value,
    /// User id of the researcher.
    pub created_by: String,
    /// Files by name ([`MODEL_FILES`]); `model.bpk` is required.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Checks a model name: 1–64 of `[a-z0-9._-]`, starting with a letter or digit.
pub fn check_name(name: &str) -> ModelResult<()> {
    check_versioned_name("model", name).map_err(ModelError::Invalid)
}

/// Parses `name@N`.
pub fn parse_reference(reference: &str) -> ModelResult<(String, i64)> {
    parse_versioned_reference("model", reference).map_err(ModelError::Invalid)
}

fn prefix(name: &str, version: i64) -> String {
    format!("models/{name}/{version}/")
}

/// The model bytes of `model` in Burn's own format.
pub fn model_bytes<M: Module>(model: &M) -> ModelResult<Vec<u8>> {
    let mut store = BurnpackStore::from_bytes(None);
    model
        .save_into(&mut store)
        .map_err(|e| ModelError::Invalid(format!("serialising weights: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| ModelError::Invalid(format!("serialising weights: {e}")))?;
    Ok(bytes.to_vec())
}

fn load_into<M: Module>(mut module: M, bytes: Vec<u8>, what: &str) -> ModelResult<M> {
    let mut store = BurnpackStore::from_bytes(Some(Bytes::from_bytes_vec(bytes)));
    let result = module
        .load_from(&mut store)
        .map_err(|e| ModelError::Invalid(format!("loading {what}: {e}")))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{what} does not fit its configuration: {} missing, {} errors",
            result.missing.len(),
            result.errors.len()
        )));
    }
    Ok(module)
}

/// Reserves the next version of `reg.name`, writes its files and marks it registered.
pub async fn register(platform: &Platform, reg: Registration) -> ModelResult<(String, i64)> {
    check_name(&reg.name)?;
    let weights = reg
        .files
        .iter()
        .find(|(name, _)| name == "model.bpk")
        .ok_or_else(|| ModelError::Invalid("a model version needs model.bpk".into()))?;
    let weights_sha256 = hex::encode(Sha256::digest(&weights.1));
    if let Some((bad, _)) = reg
        .files
        .iter()
        .find(|(name, _)| !MODEL_FILES.contains(&name.as_str()))
    {
        return Err(ModelError::Invalid(format!("{bad} is not a model file")));
    }
    let db = platform.db.pool();
    // Reserve: a concurrent registration of the same name takes the next number.
    let mut version = 0;
    for _ in 0..20 {
        let next: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) + 1 AS next FROM models WHERE name = $1")
                .bind(&reg.name)
                .fetch_one(db)
                .await?
                .try_get("next")?;
        let inserted = sqlx::query(
            "INSERT INTO models (name, version, run_id, architecture, dataset, dataset_version, \
             dataset_hash, taxonomy, organ, classes, positive, code_version, summary, \
             weights_sha256, status, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'registering', $15, $16)",
        )
        .bind(&reg.name)
        .bind(next)
        .bind(&reg.run_id)
        .bind(&reg.architecture)
        .bind(&reg.dataset)
        .bind(reg.dataset_version)
        .bind(&reg.dataset_hash)
        .bind(&reg.taxonomy)
        .bind(&reg.organ)
        .bind(serde_json::to_string(&reg.config.classes).unwrap_or_default())
        .bind(&reg.config.positive)
        .bind(&reg.code_version)
        .bind(reg.summary.to_string())
        .bind(&weights_sha256)
        .bind(&reg.created_by)
        .bind(now())
        .execute(db)
        .await;
        match inserted {
            Ok(_) => {
                version = next;
                break;
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if version == 0 {
        return Err(ModelError::Conflict(format!(
            "could not reserve a version of {}",
            reg.name
        )));
    }
    let written = write_files(platform, &reg, version).await;
    let marked = match written {
        Ok(()) => {
            sqlx::query("UPDATE models SET status = 'registered' WHERE name = $1 AND version = $2")
                .bind(&reg.name)
                .bind(version)
                .execute(db)
                .await
                .map(|_| ())
                .map_err(ModelError::from)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = marked {
        let _ = delete_prefix(&platform.store, &prefix(&reg.name, version)).await;
        let _ = sqlx::query("DELETE FROM models WHERE name = $1 AND version = $2")
            .bind(&reg.name)
            .bind(version)
            .execute(db)
            .await;
        return Err(e);
    }
    Ok((reg.name, version))
}

async fn write_files(platform: &Platform, reg: &Registration, version: i64) -> ModelResult<()> {
    let base = prefix(&reg.name, version);
    for (file, bytes) in &reg.files {
        put_bytes(&platform.store, &format!("{base}{file}"), bytes.clone()).await?;
    }
    let config = serde_json::to_vec_pretty(&reg.config)
        .map_err(|e| ModelError::Invalid(format!("model config: {e}")))?;
    put_bytes(&platform.store, &format!("{base}config.json"), config).await?;
    Ok(())
}

fn record(row: &sqlx::any::AnyRow) -> ModelResult<ModelRecord> {
    let classes: String = row.try_get("classes")?;
    let summary: String = row.try_get("summary")?;
    Ok(ModelRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        run_id: row.try_get("run_id")?,
        architecture: row.try_get("architecture")?,
        dataset: row.try_get("dataset")?,
        dataset_version: row.try_get("dataset_version")?,
        dataset_hash: row.try_get("dataset_hash")?,
        taxonomy: row.try_get("taxonomy")?,
        organ: row.try_get("organ")?,
        classes: serde_json::from_str(&classes).unwrap_or_default(),
        positive: row.try_get("positive")?,
        code_version: row.try_get("code_version")?,
        summary: serde_json::from_str(&summary).unwrap_or(serde_json::Value::Null),
        weights_sha256: row.try_get("weights_sha256")?,
        status: row.try_get("status")?,
        // The creator's user id until [`named`] puts the name in its place.
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        deployed_for: Vec::new(),
    })
}

/// The rows as records with their creators' user names, in one lookup for all of them. A
/// record whose creator is unknown is left out, as a join with `users` would leave it out.
async fn named(platform: &Platform, rows: &[sqlx::any::AnyRow]) -> ModelResult<Vec<ModelRecord>> {
    let records = rows.iter().map(record).collect::<ModelResult<Vec<_>>>()?;
    let creators: Vec<String> = records.iter().map(|r| r.created_by.clone()).collect();
    let names = accounts::user_names(&platform.db, &creators).await?;
    Ok(records
        .into_iter()
        .filter_map(|mut r| {
            r.created_by = names.get(&r.created_by)?.clone();
            Some(r)
        })
        .collect())
}

const SELECT_MODELS: &str = "SELECT m.name, m.version, m.run_id, m.architecture, m.dataset, \
     m.dataset_version, m.dataset_hash, m.taxonomy, m.organ, m.classes, m.positive, \
     m.code_version, m.summary, m.weights_sha256, m.status, m.created_by, m.created_at \
     FROM models m";

/// Registered and retired versions, newest first, with their deployments.
pub async fn list(platform: &Platform) -> ModelResult<Vec<ModelRecord>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_MODELS} WHERE m.status <> 'registering' ORDER BY m.created_at DESC, m.name, m.version DESC"
    )))
    .fetch_all(platform.db.pool())
    .await?;
    let deployments = deployments(platform).await?;
    let mut records = named(platform, &rows).await?;
    for r in &mut records {
        r.deployed_for = deployments
            .iter()
            .filter(|d| d.model == r.name && d.version == r.version)
            .cloned()
            .collect();
    }
    Ok(records)
}

/// One version.
pub async fn get(platform: &Platform, name: &str, version: i64) -> ModelResult<ModelRecord> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SELECT_MODELS} WHERE m.name = $1 AND m.version = $2 AND m.status <> 'registering'"
    )))
    .bind(name)
    .bind(version)
    .fetch_optional(platform.db.pool())
    .await?;
    let mut r = named(platform, rows.as_slice())
        .await?
        .pop()
        .ok_or_else(|| ModelError::NotFound(format!("model {name}@{version}")))?;
    r.deployed_for = deployments(platform)
        .await?
        .into_iter()
        .filter(|d| d.model == r.name && d.version == r.version)
        .collect();
    Ok(r)
}

/// A file of a version (one of [`MODEL_FILES`]).
pub async fn file(
    platform: &Platform,
    name: &str,
    version: i64,
    file: &str,
) -> ModelResult<Vec<u8>> {
    if !MODEL_FILES.contains(&file) {
        return Err(ModelError::NotFound(format!("model file {file}")));
    }
    get(platform, name, version).await?;
    get_bytes(&platform.store, &format!("{}{file}", prefix(name, version)))
        .await
        .map_err(|e| match e {
            pathfed_core::CoreError::Store(object_store::Error::NotFound { .. }) => {
                ModelError::NotFound(format!("{file} of {name}@{version}"))
            }
            other => other.into(),
        })
}

/// Every deployment.
pub async fn deployments(platform: &Platform) -> ModelResult<Vec<Deployment>> {
    let rows = sqlx::query(
        "SELECT organ, taxonomy, model_name, model_version, deployed_by, deployed_at, reason \
         FROM deployments ORDER BY organ, taxonomy",
    )
    .fetch_all(platform.db.pool())
    .await?;
    let by: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("deployed_by"))
        .collect::<Result<_, _>>()?;
    let names = accounts::user_names(&platform.db, &by).await?;
    let mut listed = Vec::with_capacity(rows.len());
    for r in &rows {
        // Left out without a known user, as a join with `users` would leave it out.
        let Some(deployed_by) = names.get(&r.try_get::<String, _>("deployed_by")?) else {
            continue;
        };
        listed.push(Deployment {
            organ: r.try_get("organ")?,
            taxonomy: r.try_get("taxonomy")?,
            model: r.try_get("model_name")?,
            version: r.try_get("model_version")?,
            deployed_by: deployed_by.clone(),
            deployed_at: r.try_get("deployed_at")?,
            reason: r.try_get("reason")?,
        });
    }
    Ok(listed)
}

/// The model deployed for `organ` and `taxonomy`, if any (the read consultation's triggers
/// share, `pathfed_core::contracts::deployments`).
pub async fn deployed_for(
    platform: &Platform,
    organ: &str,
    taxonomy: &str,
) -> ModelResult<Option<(String, i64)>> {
    let mut conn = platform.db.pool().acquire().await?;
    Ok(deployed::deployed_for(&mut conn, organ, taxonomy)
        .await?
        .map(|d| (d.model, d.version)))
}

/// Makes `name@version` the model for `organ` (default: the organ its dataset was limited to)
/// and the model's taxonomy, replacing what was deployed there. A version at chance level
/// ([`chance_level`]) is refused without a `reason`; a reason given is kept on the deployment.
pub async fn deploy(
    platform: &Platform,
    user: &Principal,
    name: &str,
    version: i64,
    organ: Option<&str>,
    reason: Option<&str>,
) -> ModelResult<Deployment> {
    let reason = checked_reason(reason)?;
    let model = get(platform, name, version).await?;
    if model.status != "registered" {
        return Err(ModelError::Conflict(format!(
            "{name}@{version} is {}: only registered models can be deployed",
            model.status
        )));
    }
    // Callers ask for the reason first (the API answers `deploy_needs_reason`); this keeps a
    // model that cannot discriminate from reaching the clinic through any other caller.
    if let (Some(doubt), None) = (chance_level(&model), &reason) {
        return Err(ModelError::Conflict(doubt.to_string()));
    }
    let organ = match organ.map(str::trim).filter(|o| !o.is_empty()) {
        Some(o) => o.to_ascii_lowercase(),
        None => model.organ.clone().ok_or_else(|| {
            ModelError::Invalid(format!(
                "{name}@{version} was trained on every organ: say which organ to deploy it for"
            ))
        })?,
    };
    let mut tx = platform.db.pool().begin().await?;
    sqlx::query("DELETE FROM deployments WHERE organ = $1 AND taxonomy = $2")
        .bind(&organ)
        .bind(&model.taxonomy)
        .execute(&mut *tx)
        .await?;
    let at = now();
    sqlx::query(
        "INSERT INTO deployments (organ, taxonomy, model_name, model_version, deployed_by, \
         deployed_at, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&organ)
    .bind(&model.taxonomy)
    .bind(name)
    .bind(version)
    .bind(&user.id)
    .bind(at)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Deployment {
        organ,
        taxonomy: model.taxonomy,
        model: name.to_string(),
        version,
        deployed_by: user.username.clone(),
        deployed_at: at,
        reason,
    })
}

/// Retires `name@version`: it stays listed and readable, but is no longer deployed anywhere and
/// cannot be deployed again. Returns the deployments it was removed from.
pub async fn retire(platform: &Platform, name: &str, version: i64) -> ModelResult<Vec<Deployment>> {
    let model = get(platform, name, version).await?;
    if model.status == "retired" {
        return Err(ModelError::Conflict(format!(
            "{name}@{version} is already retired"
        )));
    }
    let mut tx = platform.db.pool().begin().await?;
    sqlx::query(
        "UPDATE models SET status = 'retired', retired_at = $1 WHERE name = $2 AND version = $3",
    )
    .bind(now())
    .bind(name)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM deployments WHERE model_name = $1 AND model_version = $2")
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(model.deployed_for)
}

/// A registered model ready to predict.
pub struct LoadedModel {
    /// Its registry entry.
    pub record: ModelRecord,
    /// Classes, aggregation, threshold, patch geometry.
    pub config: InferenceConfig,
    /// The patch network.
    pub model: Backbone,
    /// The attention head, when it aggregates by attention (always, for an encoder + head).
    pub aggregator: Option<Aggregator>,
}

/// The folder pretrained weights are taken from: an administrator places them there, since
/// nothing is downloaded anywhere.
pub fn pretrained_dir(platform: &Platform) -> std::path::PathBuf {
    platform.config.data_dir.join("pretrained")
}

/// Loads `name@version` onto `device`, checking the weights (and an encoder's, in the pretrained
/// folder) against their recorded SHA-256.
pub async fn load(
    platform: &Platform,
    name: &str,
    version: i64,
    device: &Device,
) -> ModelResult<LoadedModel> {
    let record = get(platform, name, version).await?;
    let weights = file(platform, name, version, "model.bpk").await?;
    if hex::encode(Sha256::digest(&weights)) != record.weights_sha256 {
        return Err(pathfed_core::CoreError::Integrity(format!("model {name}@{version}")).into());
    }
    let config = file(platform, name, version, "config.json").await?;
    let head = match serde_json::from_slice::<InferenceConfig>(&config) {
        // An encoder + head model's head is its model.bpk.
        Ok(c) if c.attention.is_some() && c.encoder.is_none() => {
            Some(file(platform, name, version, "aggregator.bpk").await?)
        }
        _ => None,
    };
    let files = ModelFiles {
        config,
        weights,
        aggregator: head,
    };
    let (what, pretrained, device) = (
        format!("{name}@{version}"),
        pretrained_dir(platform),
        device.clone(),
    );
    // Hashing and reading an encoder's weights is seconds of blocking I/O.
    let (config, model, aggregator) =
        tokio::task::spawn_blocking(move || files.build(&what, &pretrained, &device))
            .await
            .map_err(|e| ModelError::Invalid(format!("loading the model: {e}")))??;
    Ok(LoadedModel {
        record,
        config,
        model,
        aggregator,
    })
}

/// A model version's files as bytes: what a registry entry, or a folder copied out of one
/// (`config.json`, `model.bpk`, and `aggregator.bpk` for attention), holds.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// `config.json`.
    pub config: Vec<u8>,
    /// `model.bpk`.
    pub weights: Vec<u8>,
    /// `aggregator.bpk`, when the model aggregates by attention.
    pub aggregator: Option<Vec<u8>>,
}

impl ModelFiles {
    /// Reads a model folder; names what is missing.
    pub fn read_dir(dir: &std::path::Path) -> ModelResult<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .map_err(|e| ModelError::io(format!("reading {}", path.display()), e))
        };
        let aggregator = dir.join("aggregator.bpk");
        Ok(Self {
            config: read("config.json")?,
            weights: read("model.bpk")?,
            aggregator: if aggregator.exists() {
                Some(read("aggregator.bpk")?)
            } else {
                None
            },
        })
    }

    /// The configuration, patch network and attention head (when configured) on `device`;
    /// an encoder's weights are taken from `pretrained`. `what` names the model in errors.
    pub fn build(
        self,
        what: &str,
        pretrained: &std::path::Path,
        device: &Device,
    ) -> ModelResult<(InferenceConfig, Backbone, Option<Aggregator>)> {
        let config: InferenceConfig = serde_json::from_slice(&self.config)
            .map_err(|e| ModelError::Invalid(format!("config of {what}: {e}")))?;
        if !(config.patch_px > 0 && config.patch_mpp > 0.0 && config.patch_mpp.is_finite()) {
            return Err(ModelError::Invalid(format!(
                "config of {what}: patch geometry {} px at {} µm/px cannot be cut",
                config.patch_px, config.patch_mpp
            )));
        }
        if let Some(encoder) = &config.encoder {
            let (backbone, head) =
                build_encoder_model(what, &config, encoder, self.weights, pretrained, device)?;
            return Ok((config, backbone, Some(head)));
        }
        let Some(shape) = &config.model else {
            return Err(ModelError::Invalid(format!(
                "config of {what}: neither a patch model nor an encoder"
            )));
        };
        if config.classes.len() != shape.classes || !config.classes.contains(&config.positive) {
            return Err(ModelError::Invalid(format!(
                "config of {what}: classes {:?} do not fit a {}-class model with positive class {:?}",
                config.classes, shape.classes, config.positive
            )));
        }
        if let Some(mil) = &config.attention
            && mil.classes != config.classes.len()
        {
            return Err(ModelError::Invalid(format!(
                "config of {what}: the attention head has {} classes, the model {}",
                mil.classes,
                config.classes.len()
            )));
        }
        let model = Backbone::Cnn(Box::new(load_into(
            ResNet::new(shape, device),
            self.weights,
            what,
        )?));
        let aggregator = match &config.attention {
            Some(mil) => {
                let bytes = self.aggregator.ok_or_else(|| {
                    ModelError::Invalid(format!(
                        "{what} aggregates by attention but has no aggregator.bpk"
                    ))
                })?;
                let head = load_into(AttentionMil::new(mil, device), bytes, "the attention head")?;
                Some(Aggregator {
                    config: mil.clone(),
                    head,
                })
            }
            None => None,
        };
        Ok((config, model, aggregator))
    }
}

/// An encoder + head model: the head from `head_bytes`, the encoder from the pretrained folder,
/// refused unless its weights are the ones the head was trained on.
fn build_encoder_model(
    what: &str,
    config: &InferenceConfig,
    encoder: &EncoderRef,
    head_bytes: Vec<u8>,
    pretrained: &std::path::Path,
    device: &Device,
) -> ModelResult<(Backbone, Aggregator)> {
    let Some(mil) = &config.attention else {
        return Err(ModelError::Invalid(format!(
            "config of {what}: an encoder without a head"
        )));
    };
    if mil.classes != config.classes.len()
        || !config.classes.contains(&config.positive)
        || mil.features != encoder.spec.vit.features()
    {
        return Err(ModelError::Invalid(format!(
            "config of {what}: a {}-class head on {} features does not fit classes {:?} (positive \
             {:?}) and encoder {}'s {} features",
            mil.classes,
            mil.features,
            config.classes,
            config.positive,
            encoder.name,
            encoder.spec.vit.features()
        )));
    }
    let head = load_into(AttentionMil::new(mil, device), head_bytes, "the head")?;
    let found = crate::vit::resolve(pretrained, &encoder.name).map_err(|e| {
        ModelError::NotFound(format!(
            "encoder {} that {what} reads patches with (SHA-256 {}): {e}; place the same \
             weights file in the pretrained folder",
            encoder.name, encoder.weights_sha256
        ))
    })?;
    let sha256 = pathfed_core::digest::sha256_file(&found.weights, |_| {})
        .map_err(|e| ModelError::io(format!("reading {}", found.weights.display()), e))?;
    if sha256 != encoder.weights_sha256 {
        return Err(ModelError::Conflict(format!(
            "{what} was trained on encoder {} with weights SHA-256 {}, but {} has {sha256}: \
             restore the weights it was trained with, or train a new version",
            encoder.name,
            encoder.weights_sha256,
            found.weights.display()
        )));
    }
    let (vit, _) = crate::vit::import::load(&encoder.spec, &found.weights, device)?;
    Ok((
        Backbone::Encoder(Box::new(vit)),
        Aggregator {
            config: mil.clone(),
            head,
        },
    ))
}
