//! Building, listing and reading dataset versions (`name@N`), stored as immutable manifests
//! under `research/datasets/{name}/{version}/manifest.json`.
//!
//! A manifest is read as it stands now ([`Current`]): an entry withdrawn since publication
//! (its patient opted out, or it was retired) keeps only its id and the fact, never its label
//! or quasi-identifiers, and services (training) see only the entries still live.

use std::collections::{BTreeMap, BTreeSet};

use pathfed_core::accounts::{self, Principal, Role};
use pathfed_core::contracts::consent;
use pathfed_core::db::now;
use pathfed_core::jobs::kinds::{Extract, ExtractPayload};
use pathfed_core::jobs::{JobStatus, NewJob};
use pathfed_core::names::{check_versioned_name, parse_versioned_reference};
use pathfed_core::store::{get_bytes, put_bytes};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::Research;
use crate::anonymity::{self, TierDecision, TierSlide};
use crate::deid::DeidOptions;
use crate::error::{DatasetError, DatasetResult};
use crate::manifest::{self, Candidate, Content, Entry, Manifest, Quasi, VersionParams};

/// Ids looked up per statement when checking a manifest's entries.
const IDS_PER_QUERY: usize = 500;

/// A version as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionSummary {
    /// Dataset name.
    pub dataset: String,
    /// Version number.
    pub version: i64,
    /// Content hash.
    pub content_hash: Option<String>,
    /// Slides per split and label.
    #[schema(value_type = Object)]
    pub counts: serde_json::Value,
    /// Who built it.
    pub created_by: String,
    /// When (Unix seconds).
    pub created_at: i64,
}

/// Only researchers and the platform admin, who runs the platform, reach the research tier. A
/// hospital's admin does not: research slides derive from every hospital's patients.
pub fn require_researcher(user: &Principal) -> DatasetResult<()> {
    match user.role {
        Role::Researcher | Role::PlatformAdmin => Ok(()),
        Role::Submitter | Role::Pathologist | Role::Admin => Err(DatasetError::Forbidden(
            "the research tier is for researchers and the platform admin".into(),
        )),
    }
}

/// Checks a dataset name.
pub fn check_name(name: &str) -> DatasetResult<()> {
    check_versioned_name("dataset", name).map_err(DatasetError::Invalid)
}

/// Parses a dataset's `name@N`.
pub fn parse_reference(reference: &str) -> DatasetResult<(String, i64)> {
    parse_versioned_reference("dataset", reference).map_err(DatasetError::Invalid)
}

fn manifest_key(name: &str, version: i64) -> String {
    format!("research/datasets/{name}/{version}/manifest.json")
}

/// Where a version stands: `building` (its extraction job runs), `published` or `failed`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VersionState {
    /// Dataset name.
    pub dataset: String,
    /// Version number.
    pub version: i64,
    /// `building`, `published` or `failed`.
    pub status: String,
    /// The extraction job, where there is one.
    pub job_id: Option<String>,
    /// The job's progress (0–1).
    pub progress: f64,
    /// What the job is doing.
    pub note: String,
    /// Why it failed.
    pub error: Option<String>,
    /// The content hash, once published.
    pub content_hash: Option<String>,
}

/// Starts the next version of `name`: checks that something matches, numbers it, and either
/// publishes it at once (no extraction) or enqueues its `extract` job, which publishes it.
pub async fn create(
    research: &Research,
    user: &Principal,
    name: &str,
    params: VersionParams,
) -> DatasetResult<VersionState> {
    require_researcher(user)?;
    check_name(name)?;
    params.check()?;
    let floor = min_cell_floor(research);
    if let Some(asked) = params.min_cell_size
        && asked < floor
    {
        return Err(DatasetError::BelowFloor { asked, floor });
    }
    // Refuse now what the job would refuse later.
    let content = select(research, &params).await?;
    let version = reserve(research, user, name, &params).await?;
    if params.extraction.is_none() {
        finish(research, name, version, content).await?;
        return state(research, user, name, version).await;
    }
    let job = research
        .jobs
        .enqueue(
            NewJob::of::<Extract>(&ExtractPayload {
                dataset: name.to_string(),
                version,
            })
            .by(&user.id),
        )
        .await?;
    sqlx::query("UPDATE dataset_versions SET job_id = $1 WHERE name = $2 AND version = $3")
        .bind(&job.id)
        .bind(name)
        .bind(version)
        .execute(research.platform.db.pool())
        .await?;
    state(research, user, name, version).await
}

/// The platform's minimum cell size, in patients (`research.min_cell_size`, which only the
/// platform's operator sets): a version may ask for more, never less.
pub fn min_cell_floor(research: &Research) -> u64 {
    research.platform.config.research.min_cell_size.max(1)
}

/// The slides a version of `params` would hold now: live research slides that match, minus
/// opted-out patients, protected against small cells as decided over the whole research tier
/// (see [`crate::anonymity`]), split by patient. No extraction yet.
pub async fn select(research: &Research, params: &VersionParams) -> DatasetResult<Content> {
    let db = research.platform.db.pool();
    let floor = min_cell_floor(research);
    let k = params.min_cell_size.unwrap_or(floor).max(floor);
    // Every live research slide, of every taxonomy and organ, in one read: small cells are
    // decided over the whole tier. The heavy columns come only for this version's taxonomy.
    let rows = sqlx::query(
        "SELECT id, research_patient, research_hospital, taxonomy, label_code, organ, age_band, \
         sex, year, object_key, sha256, width, height, mpp_x, mpp_y, \
         CASE WHEN taxonomy = $1 THEN regions ELSE NULL END AS regions, \
         CASE WHEN taxonomy = $1 THEN ai_discordant ELSE NULL END AS ai_discordant \
         FROM research_slides WHERE deleted_at IS NULL ORDER BY id",
    )
    .bind(&params.labels)
    .fetch_all(db)
    .await?;
    let excluded = opted_out_patients(research).await?;
    let mut tier = Vec::with_capacity(rows.len());
    let mut candidates = Vec::new();
    let mut opted_out = BTreeSet::new();
    for row in &rows {
        let patient: String = row.try_get("research_patient")?;
        let taxonomy: String = row.try_get("taxonomy")?;
        let organ: String = row.try_get("organ")?;
        let selected =
            taxonomy == params.labels && params.organ.as_ref().is_none_or(|o| *o == organ);
        if excluded.contains(&patient) {
            // Its forget job has not run yet: it enters no version and counts in no cell.
            if selected {
                opted_out.insert(patient);
            }
            continue;
        }
        let id: String = row.try_get("id")?;
        let label: String = row.try_get("label_code")?;
        let quasi = Quasi {
            age_band: row.try_get("age_band")?,
            sex: row.try_get("sex")?,
            hospital: row.try_get("research_hospital")?,
            year: row.try_get::<i64, _>("year")?.to_string(),
        };
        if selected {
            let regions: Option<String> = row.try_get("regions")?;
            let (mpp_x, mpp_y): (Option<f64>, Option<f64>) =
                (row.try_get("mpp_x")?, row.try_get("mpp_y")?);
            candidates.push(Candidate {
                id: id.clone(),
                patient: patient.clone(),
                label: label.clone(),
                quasi: quasi.clone(),
                object_key: row.try_get("object_key")?,
                sha256: row.try_get("sha256")?,
                dimensions: (
                    row.try_get::<i64, _>("width")? as u64,
                    row.try_get::<i64, _>("height")? as u64,
                ),
                mpp: mpp_x.zip(mpp_y),
                regions: regions
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or(Value::Null),
                ai_discordant: row
                    .try_get::<Option<String>, _>("ai_discordant")?
                    .and_then(|text| serde_json::from_str(&text).ok()),
            });
        }
        tier.push(TierSlide {
            id,
            patient,
            taxonomy,
            organ,
            label,
            quasi,
        });
    }
    if candidates.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "no research slides match (labels {:?}, organ {:?})",
            params.labels, params.organ
        )));
    }
    let decision = TierDecision::decide(&tier, floor);
    let (kept, small_cells) = anonymity::protect_version(candidates, &decision, k);
    if kept.is_empty() {
        return Err(DatasetError::Invalid(format!(
            "every group is smaller than the minimum of {k} patients: nothing can be published"
        )));
    }
    let slides = manifest::split_by_patient(kept, params.fractions, params.seed);
    Ok(Content {
        counts: manifest::count(&slides),
        curation: json!({ "format": "pyramidal BigTIFF", "deid": DeidOptions::default() }),
        extraction: None,
        opted_out_excluded: opted_out.len() as u64,
        small_cells,
        slides,
        params: params.clone(),
    })
}

/// Takes the next version number of `name` (creating the dataset on first use) as `building`;
/// [`finish`] publishes it.
pub async fn reserve(
    research: &Research,
    user: &Principal,
    name: &str,
    params: &VersionParams,
) -> DatasetResult<i64> {
    let db = research.platform.db.pool();
    sqlx::query("INSERT INTO datasets (name, created_by, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .bind(&user.id)
        .bind(now())
        .execute(db)
        .await?;
    for _ in 0..5 {
        let next: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 AS next FROM dataset_versions WHERE name = $1",
        )
        .bind(name)
        .fetch_one(db)
        .await?
        .try_get("next")?;
        let claimed = sqlx::query(
            "INSERT INTO dataset_versions (name, version, status, params, created_by, created_at) \
             VALUES ($1, $2, 'building', $3, $4, $5) ON CONFLICT (name, version) DO NOTHING",
        )
        .bind(name)
        .bind(next)
        .bind(serde_json::to_string(params).unwrap_or_default())
        .bind(&user.id)
        .bind(now())
        .execute(db)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(next);
        }
    }
    Err(DatasetError::Conflict(format!(
        "dataset {name} is being versioned by others; try again"
    )))
}

/// The parameters a reserved version was asked with, while it is still building.
pub async fn building_params(
    research: &Research,
    name: &str,
    version: i64,
) -> DatasetResult<VersionParams> {
    let row =
        sqlx::query("SELECT params, status FROM dataset_versions WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(research.platform.db.pool())
            .await?
            .ok_or_else(|| DatasetError::NotFound(format!("dataset version {name}@{version}")))?;
    let status: String = row.try_get("status")?;
    if status != "building" {
        return Err(DatasetError::Conflict(format!(
            "{name}@{version} is already {status}"
        )));
    }
    serde_json::from_str(&row.try_get::<String, _>("params")?)
        .map_err(|e| DatasetError::Invalid(format!("parameters of {name}@{version}: {e}")))
}

/// Stores the manifest of a reserved version and publishes it.
pub async fn finish(
    research: &Research,
    name: &str,
    version: i64,
    content: Content,
) -> DatasetResult<Manifest> {
    let db = research.platform.db.pool();
    let manifest = Manifest {
        dataset: name.to_string(),
        version,
        created_at: now(),
        content_hash: content.hash(),
        content,
        withdrawn: Vec::new(),
    };
    let key = manifest_key(name, version);
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    if let Err(e) = put_bytes(&research.platform.store, &key, bytes).await {
        fail(research, name, version, &e.to_string()).await?;
        return Err(e.into());
    }
    sqlx::query(
        "UPDATE dataset_versions SET status = 'published', manifest_key = $1, content_hash = $2, \
         summary = $3, published_at = $4 WHERE name = $5 AND version = $6",
    )
    .bind(&key)
    .bind(&manifest.content_hash)
    .bind(serde_json::to_string(&manifest.content.counts).unwrap_or_default())
    .bind(now())
    .bind(name)
    .bind(version)
    .execute(db)
    .await?;
    Ok(manifest)
}

/// Marks a reserved version failed, with why.
pub async fn fail(research: &Research, name: &str, version: i64, error: &str) -> DatasetResult<()> {
    sqlx::query(
        "UPDATE dataset_versions SET status = 'failed', error = $1 \
         WHERE name = $2 AND version = $3 AND status = 'building'",
    )
    .bind(error)
    .bind(name)
    .bind(version)
    .execute(research.platform.db.pool())
    .await?;
    Ok(())
}

/// Where a version stands, with its job's progress; a version whose job gave up is `failed`.
pub async fn state(
    research: &Research,
    user: &Principal,
    name: &str,
    version: i64,
) -> DatasetResult<VersionState> {
    require_researcher(user)?;
    let row = sqlx::query(
        "SELECT status, job_id, error, content_hash FROM dataset_versions \
         WHERE name = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(research.platform.db.pool())
    .await?
    .ok_or_else(|| DatasetError::NotFound(format!("dataset version {name}@{version}")))?;
    let mut state = VersionState {
        dataset: name.to_string(),
        version,
        status: row.try_get("status")?,
        job_id: row.try_get("job_id")?,
        progress: 0.0,
        note: String::new(),
        error: row.try_get("error")?,
        content_hash: row.try_get("content_hash")?,
    };
    if state.status == "published" {
        state.progress = 1.0;
    }
    if let (Some(id), "building") = (state.job_id.clone(), state.status.as_str()) {
        let job = research.jobs.get(&id).await?;
        state.progress = job.progress;
        state.note = job.progress_note.clone();
        if job.status.is_final() && job.status != JobStatus::Succeeded {
            state.status = "failed".into();
            state.error = job.last_error.clone().or(Some("the job stopped".into()));
        }
    }
    Ok(state)
}

/// Asks a building version's job to stop; the version ends `failed` ("cancelled").
pub async fn cancel(
    research: &Research,
    user: &Principal,
    name: &str,
    version: i64,
) -> DatasetResult<VersionState> {
    let current = state(research, user, name, version).await?;
    match (&current.job_id, current.status.as_str()) {
        (Some(id), "building") => {
            let job = research.jobs.cancel(id).await?;
            if job.status == JobStatus::Cancelled {
                fail(research, name, version, "cancelled").await?;
            }
            state(research, user, name, version).await
        }
        _ => Err(DatasetError::Conflict(format!(
            "{name}@{version} is {}: nothing to cancel",
            current.status
        ))),
    }
}

/// Research patient ids of everyone who opted out, recomputed from the clinical records.
pub async fn opted_out_patients(research: &Research) -> DatasetResult<BTreeSet<String>> {
    Ok(consent::all(&research.platform.db)
        .await?
        .iter()
        .map(|o| research.pseudonyms.patient(&o.hospital_id, &o.patient_hash))
        .collect())
}

/// Published versions, newest first.
pub async fn list(research: &Research, user: &Principal) -> DatasetResult<Vec<VersionSummary>> {
    require_researcher(user)?;
    let rows = sqlx::query(
        "SELECT name, version, content_hash, summary, created_by, created_at \
         FROM dataset_versions WHERE status = 'published' ORDER BY name, version DESC",
    )
    .fetch_all(research.platform.db.pool())
    .await?;
    let creators: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("created_by"))
        .collect::<Result<_, _>>()?;
    let names = accounts::user_names(&research.platform.db, &creators).await?;
    let mut listed = Vec::with_capacity(rows.len());
    for r in &rows {
        // Left out without a known creator, as a join with `users` would leave it out.
        let Some(created_by) = names.get(&r.try_get::<String, _>("created_by")?) else {
            continue;
        };
        let summary: Option<String> = r.try_get("summary")?;
        listed.push(VersionSummary {
            dataset: r.try_get("name")?,
            version: r.try_get("version")?,
            content_hash: r.try_get("content_hash")?,
            counts: summary
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null),
            created_by: created_by.clone(),
            created_at: r.try_get("created_at")?,
        });
    }
    Ok(listed)
}

/// A published version as it reads now.
#[derive(Debug, Clone)]
pub struct Current {
    /// The stored manifest less the entries withdrawn since publication (and their extraction
    /// QC). Its content hash still names the version as it was published.
    pub manifest: Manifest,
    /// Ids of the entries withdrawn since publication (their patients opted out, or they were
    /// retired), in id order.
    pub withdrawn: Vec<String>,
}

impl Current {
    /// The manifest as researchers see it: every entry of the version, where each withdrawn
    /// one is only `{"id": …, "withdrawn": true}` (no label, patient or quasi-identifier).
    pub fn presented(&self) -> Value {
        let mut value = serde_json::to_value(&self.manifest).unwrap_or(Value::Null);
        if let Some(slides) = value
            .pointer_mut("/content/slides")
            .and_then(Value::as_array_mut)
        {
            slides.extend(
                self.withdrawn
                    .iter()
                    .map(|id| json!({ "id": id, "withdrawn": true })),
            );
            slides.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }
        value
    }
}

/// The manifest of a published version as researchers read it (see [`Current`]).
pub async fn read(
    research: &Research,
    user: &Principal,
    name: &str,
    version: i64,
) -> DatasetResult<Current> {
    require_researcher(user)?;
    current(research, name, version).await
}

/// The live entries of a published version (see [`Current::manifest`]).
pub async fn manifest(
    research: &Research,
    user: &Principal,
    name: &str,
    version: i64,
) -> DatasetResult<Manifest> {
    Ok(read(research, user, name, version).await?.manifest)
}

/// The live entries of a published version, for services acting for a researcher already
/// checked (a training job): what was withdrawn since is not there.
pub async fn published_manifest(
    research: &Research,
    name: &str,
    version: i64,
) -> DatasetResult<Manifest> {
    Ok(current(research, name, version).await?.manifest)
}

/// A published version as it reads now, for services acting for a researcher already checked.
pub async fn current(research: &Research, name: &str, version: i64) -> DatasetResult<Current> {
    let manifest = stored_manifest(research, name, version).await?;
    live(research, manifest).await
}

/// `manifest` (as stored) less what was withdrawn since publication.
async fn live(research: &Research, mut manifest: Manifest) -> DatasetResult<Current> {
    let mut withdrawn = withdrawn_entries(research, &manifest).await?;
    // Entries a withdrawal already scrubbed from the stored object.
    withdrawn.extend(manifest.withdrawn.iter().cloned());
    manifest
        .content
        .slides
        .retain(|e| !withdrawn.contains(&e.slide.id));
    if let Some(qc) = manifest
        .content
        .extraction
        .as_mut()
        .and_then(|x| x.get_mut("slides"))
        .and_then(Value::as_object_mut)
    {
        qc.retain(|id, _| !withdrawn.contains(id));
    }
    if !withdrawn.is_empty() {
        // Totals over what is left, so none gives a withdrawn slide's label away by difference.
        manifest.content.counts = manifest::count(&manifest.content.slides);
        if let Some(extraction) = manifest.content.extraction.as_mut() {
            recount_patches(extraction, &manifest.content.slides);
        }
    }
    let withdrawn: Vec<String> = withdrawn.into_iter().collect();
    manifest.withdrawn.clone_from(&withdrawn);
    Ok(Current {
        manifest,
        withdrawn,
    })
}

/// Rewrites the stored manifest of every published version that still holds an entry
/// withdrawn since (a tombstoned research slide, or a patient who opted out), so that the
/// stored object keeps only its id, in `withdrawn`, and totals without it; the version's
/// summary row is recounted too. Readers already see the live view ([`current`]); this makes
/// the stored object say no more. Each withdrawal runs it, so one that failed half-way is
/// finished by the next. Returns how many manifests were rewritten.
pub async fn scrub_withdrawn(research: &Research) -> DatasetResult<usize> {
    let rows = sqlx::query(
        "SELECT name, version, manifest_key FROM dataset_versions \
         WHERE status = 'published' AND manifest_key IS NOT NULL",
    )
    .fetch_all(research.platform.db.pool())
    .await?;
    let mut rewritten = 0;
    for row in rows {
        let name: String = row.try_get("name")?;
        let version: i64 = row.try_get("version")?;
        let key: String = row.try_get("manifest_key")?;
        // One unreadable manifest must not stop every later withdrawal: it is logged and
        // left (its readers get an error naming it).
        let stored = match stored_manifest(research, &name, version).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(dataset = %name, version, error = %e, "manifest not scrubbed");
                continue;
            }
        };
        let held: BTreeSet<String> = stored
            .content
            .slides
            .iter()
            .map(|e| e.slide.id.clone())
            .collect();
        let now_live = live(research, stored).await?;
        if !now_live.withdrawn.iter().any(|id| held.contains(id)) {
            continue;
        }
        let bytes = serde_json::to_vec_pretty(&now_live.manifest)
            .map_err(|e| DatasetError::Invalid(format!("manifest {key}: {e}")))?;
        put_bytes(&research.platform.store, &key, bytes).await?;
        let summary = serde_json::to_string(&now_live.manifest.content.counts)
            .map_err(|e| DatasetError::Invalid(format!("manifest {key}: {e}")))?;
        sqlx::query("UPDATE dataset_versions SET summary = $1 WHERE name = $2 AND version = $3")
            .bind(summary)
            .bind(&name)
            .bind(version)
            .execute(research.platform.db.pool())
            .await?;
        rewritten += 1;
    }
    Ok(rewritten)
}

/// The extraction's patch totals (per split and label, and overall) over `slides`, from each
/// slide's QC; dropped where a slide's QC does not list its labels (versions extracted before
/// it did), since the published totals would give the withdrawn slides' labels away by
/// difference.
fn recount_patches(extraction: &mut Value, slides: &[Entry]) {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut total = 0;
    let mut unlisted = false;
    {
        let Some(qc) = extraction.get("slides").and_then(Value::as_object) else {
            return;
        };
        for entry in slides {
            let Some(labels) = qc
                .get(&entry.slide.id)
                .and_then(|q| q.get("labels"))
                .and_then(Value::as_object)
            else {
                unlisted = true;
                break;
            };
            for (label, n) in labels {
                let n = n.as_u64().unwrap_or(0);
                *counts
                    .entry(entry.split.clone())
                    .or_default()
                    .entry(label.clone())
                    .or_default() += n;
                total += n;
            }
        }
    }
    if let Some(fields) = extraction.as_object_mut() {
        if unlisted {
            fields.insert("patch_counts".into(), Value::Null);
            fields.insert("patches".into(), Value::Null);
        } else {
            fields.insert("patch_counts".into(), json!(counts));
            fields.insert("patches".into(), json!(total));
        }
    }
}

/// The manifest of a published version as it was stored.
async fn stored_manifest(research: &Research, name: &str, version: i64) -> DatasetResult<Manifest> {
    let key: Option<String> = sqlx::query(
        "SELECT manifest_key FROM dataset_versions WHERE name = $1 AND version = $2 AND status = 'published'",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(research.platform.db.pool())
    .await?
    .map(|r| r.try_get("manifest_key"))
    .transpose()?
    .flatten();
    let key =
        key.ok_or_else(|| DatasetError::NotFound(format!("dataset version {name}@{version}")))?;
    let bytes = get_bytes(&research.platform.store, &key).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| DatasetError::Invalid(format!("manifest {key}: {e}")))
}

/// The entries of `manifest` withdrawn since publication: tombstoned research slides, and the
/// slides of patients who opted out whose forget job has not run yet.
async fn withdrawn_entries(
    research: &Research,
    manifest: &Manifest,
) -> DatasetResult<BTreeSet<String>> {
    let ids: Vec<String> = manifest
        .content
        .slides
        .iter()
        .map(|e| e.slide.id.clone())
        .collect();
    let mut withdrawn = BTreeSet::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id FROM research_slides WHERE deleted_at IS NOT NULL AND id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.clone());
        }
        for row in query.fetch_all(research.platform.db.pool()).await? {
            withdrawn.insert(row.try_get::<String, _>("id")?);
        }
    }
    let opted_out = opted_out_patients(research).await?;
    withdrawn.extend(
        manifest
            .content
            .slides
            .iter()
            .filter(|e| opted_out.contains(&e.slide.patient))
            .map(|e| e.slide.id.clone()),
    );
    Ok(withdrawn)
}

/// The object key of a live research slide.
pub async fn research_slide_key(
    research: &Research,
    user: &Principal,
    id: &str,
) -> DatasetResult<String> {
    require_researcher(user)?;
    let gone = || DatasetError::NotFound(format!("research slide {id}"));
    let row = sqlx::query(
        "SELECT object_key, research_patient FROM research_slides \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(research.platform.db.pool())
    .await?
    .ok_or_else(gone)?;
    // A patient who opted out is withdrawn from the moment it is recorded, before the forget
    // job has deleted anything.
    let patient: String = row.try_get("research_patient")?;
    if opted_out_patients(research).await?.contains(&patient) {
        return Err(gone());
    }
    Ok(row.try_get("object_key")?)
}
