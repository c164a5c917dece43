//! The `extract` job: cuts a dataset version's slides into patch shards, then publishes the
//! version with each slide's extraction QC in its manifest.
//!
//! Shards already made with the same parameter hash are reused (that is what the hash is for).
//! Opt-outs are re-checked after the last shard and before publishing: the selection is run
//! again, slides that arrived meanwhile are extracted too, and the shards of slides whose
//! patient opted out meanwhile are deleted, so no patch of theirs stays behind.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write as _};

use pathfed_core::cache::SlideFile;
use pathfed_core::jobs::kinds::ExtractPayload;
use pathfed_core::store::{self, get_bytes, put_bytes};
use pathfed_core::worker::{JobFailure, RunningJob};
use serde_json::{Value, json};
use sqlx::Row;

use crate::Research;
use crate::curate::{Region, delete_object};
use crate::error::{DatasetError, DatasetResult};
use crate::manifest::{Content, Entry};
use crate::patches::{
    ExtractParams, SHARD_FORMAT, ShardIndex, SlideLabels, extract_slide, shard_keys,
};
use crate::versions::{building_params, fail, finish, opted_out_patients, select};

/// Selections re-run while slides keep arriving, before the job gives up for a later retry.
const MAX_ROUNDS: usize = 4;

/// What the manifest keeps of one slide's shard.
struct Extracted {
    patient: String,
    qc: Value,
    labels: BTreeMap<String, u64>,
}

/// Runs one `extract` job.
pub async fn run_extract(
    research: Research,
    payload: ExtractPayload,
    job: RunningJob,
) -> Result<Value, JobFailure> {
    let (name, version) = (payload.dataset.as_str(), payload.version);
    let outcome = match build(&research, &job, name, version).await {
        Ok(result) => result,
        Err(e) => Err(JobFailure::from_error(&e)),
    };
    if let Err(stop) = &outcome
        && !stop.retryable
    {
        let _ = fail(&research, name, version, &stop.message).await;
    }
    outcome
}

async fn build(
    research: &Research,
    job: &RunningJob,
    name: &str,
    version: i64,
) -> DatasetResult<Result<Value, JobFailure>> {
    let params = building_params(research, name, version).await?;
    let extraction = params
        .extraction
        .clone()
        .ok_or_else(|| DatasetError::Invalid(format!("{name}@{version} asks for no extraction")))?;
    let hash = extraction.hash();
    let mut done: BTreeMap<String, Extracted> = BTreeMap::new();
    let mut content: Option<Content> = None;
    for _ in 0..MAX_ROUNDS {
        let selected = select(research, &params).await?;
        let todo: Vec<Entry> = selected
            .slides
            .iter()
            .filter(|e| !done.contains_key(&e.slide.id))
            .cloned()
            .collect();
        if todo.is_empty() {
            content = Some(selected);
            break;
        }
        let count = todo.len();
        for (i, entry) in todo.iter().enumerate() {
            let note = format!("slide {} of {count}: {}", i + 1, entry.slide.id);
            if let Err(stop) = job.progress(overall(i, count, 0.0), note.clone()) {
                return Ok(Err(stop));
            }
            let reporter = job.clone();
            let report = Box::new(move |fraction: f64| {
                reporter
                    .progress(overall(i, count, fraction), note.clone())
                    .is_ok()
            });
            match shard(research, job, &extraction, &hash, entry, report).await {
                Ok(Some(extracted)) => {
                    done.insert(entry.slide.id.clone(), extracted);
                }
                Ok(None) => {}
                // A cancelled extraction stops the job as cancelled, not as a failure.
                Err(e) => {
                    return match job.check_cancel() {
                        Err(stop) => Ok(Err(stop)),
                        Ok(()) => Err(e),
                    };
                }
            }
        }
    }
    let Some(mut content) = content else {
        return Ok(Err(JobFailure::retryable(
            "research slides kept arriving while extracting; trying again",
        )));
    };
    // Shards of patients who opted out while we worked must not outlive this job.
    let opted_out = opted_out_patients(research).await?;
    let published: BTreeSet<&str> = content.slides.iter().map(|e| e.slide.id.as_str()).collect();
    for (id, extracted) in &done {
        if !published.contains(id.as_str()) && opted_out.contains(&extracted.patient) {
            delete_shard(research, &hash, id).await?;
        }
    }
    content.extraction = Some(summary(&content, &done, &extraction, &hash));
    if let Err(stop) = job.progress(0.98, "publishing") {
        return Ok(Err(stop));
    }
    let manifest = finish(research, name, version, content).await?;
    Ok(Ok(json!({
        "dataset": name,
        "version": version,
        "content_hash": manifest.content_hash,
        "params_hash": hash,
    })))
}

/// Job progress while cutting slide `i` of `count`, `fraction` of the way through it.
fn overall(i: usize, count: usize, fraction: f64) -> f64 {
    0.02 + 0.95 * (i as f64 + fraction) / count as f64
}

/// The manifest's `extraction` block: parameters, where the shards are, QC per slide (with
/// its patches per label, so totals can be recounted without a slide withdrawn later), patch
/// counts per split and label.
fn summary(
    content: &Content,
    done: &BTreeMap<String, Extracted>,
    params: &ExtractParams,
    hash: &str,
) -> Value {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut slides = BTreeMap::new();
    let mut total = 0;
    for entry in &content.slides {
        if let Some(extracted) = done.get(&entry.slide.id) {
            for (label, n) in &extracted.labels {
                *counts
                    .entry(entry.split.clone())
                    .or_default()
                    .entry(label.clone())
                    .or_default() += n;
                total += n;
            }
            let mut qc = extracted.qc.clone();
            if let Some(fields) = qc.as_object_mut() {
                fields.insert("labels".into(), json!(extracted.labels));
            }
            slides.insert(entry.slide.id.clone(), qc);
        }
    }
    json!({
        "format": SHARD_FORMAT,
        "params_hash": hash,
        "params": params,
        "shards": format!("research/patches/{hash}/"),
        "patches": total,
        "patch_counts": counts,
        "slides": slides,
    })
}

/// The slide's shard: reused when it exists, else extracted and stored. `None` when the slide
/// was withdrawn (its patient opted out) while it was being cut.
async fn shard(
    research: &Research,
    job: &RunningJob,
    params: &ExtractParams,
    hash: &str,
    entry: &Entry,
    progress: Box<dyn Fn(f64) -> bool + Send + Sync>,
) -> DatasetResult<Option<Extracted>> {
    let id = entry.slide.id.clone();
    let (index_key, bin_key) = shard_keys(hash, &id);
    let platform = &research.platform;
    if let Ok(bytes) = get_bytes(&platform.store, &index_key).await
        && let Ok(index) = serde_json::from_slice::<ShardIndex>(&bytes)
    {
        return Ok(Some(extracted(&entry.slide.patient, &index)));
    }
    let size: i64 = sqlx::query("SELECT bytes FROM research_slides WHERE id = $1")
        .bind(&id)
        .fetch_optional(platform.db.pool())
        .await?
        .map(|r| r.try_get("bytes"))
        .transpose()?
        .unwrap_or(0);
    let file = SlideFile {
        key: entry.slide.object_key.clone(),
        path: "slide.tiff".into(),
        size: size.max(0) as u64,
        sha256: entry.slide.sha256.clone(),
    };
    let cached = platform.cache.get(&id, &[file], &platform.store).await?;
    let source = cached.dir.join("slide.tiff");
    let work = tempfile::Builder::new()
        .prefix("extract-")
        .tempdir_in(&platform.config.data_dir)
        .map_err(|e| DatasetError::io("creating a work folder", e))?;
    let bin_path = work.path().join("patches.bin");
    let regions: Vec<Region> =
        serde_json::from_value(entry.slide.regions.clone()).unwrap_or_default();
    let (limits, params_owned, label) = (
        platform.config.slide.clone(),
        params.clone(),
        entry.slide.label.clone(),
    );
    let (slide_id, out) = (id.clone(), bin_path.clone());
    let cancel = job.cancel_flag();
    let index = tokio::task::spawn_blocking(move || -> DatasetResult<ShardIndex> {
        let reader = pathfed_slide::open(&source, &limits)?;
        let file = std::fs::File::create(&out)
            .map_err(|e| DatasetError::io("creating the patch file", e))?;
        let mut writer = BufWriter::new(file);
        let labels = SlideLabels {
            slide: &label,
            regions: &regions,
        };
        let index = extract_slide(
            reader.as_ref(),
            &slide_id,
            &labels,
            &params_owned,
            &mut writer,
            &|done, total| {
                !cancel.load(std::sync::atomic::Ordering::Relaxed)
                    && progress(done as f64 / total.max(1) as f64)
            },
        )?;
        writer
            .flush()
            .map_err(|e| DatasetError::io("writing the patch file", e))?;
        Ok(index)
    })
    .await
    .map_err(|e| DatasetError::Invalid(format!("extraction stopped: {e}")))??;
    drop(cached);
    store::put_file(&platform.store, &bin_key, &bin_path).await?;
    // The index goes last: a shard with an index is complete.
    put_bytes(
        &platform.store,
        &index_key,
        serde_json::to_vec(&index).unwrap_or_default(),
    )
    .await?;
    let live =
        sqlx::query("SELECT 1 AS live FROM research_slides WHERE id = $1 AND deleted_at IS NULL")
            .bind(&id)
            .fetch_optional(platform.db.pool())
            .await?
            .is_some();
    let opted_out = opted_out_patients(research).await?;
    if !live || opted_out.contains(&entry.slide.patient) {
        delete_shard(research, hash, &id).await?;
        return Ok(None);
    }
    Ok(Some(extracted(&entry.slide.patient, &index)))
}

fn extracted(patient: &str, index: &ShardIndex) -> Extracted {
    let mut labels = BTreeMap::new();
    for patch in &index.patches {
        *labels.entry(patch.label.clone()).or_default() += 1;
    }
    Extracted {
        patient: patient.to_string(),
        qc: index.manifest_entry(),
        labels,
    }
}

async fn delete_shard(research: &Research, hash: &str, id: &str) -> DatasetResult<()> {
    let (index_key, bin_key) = shard_keys(hash, id);
    // The index first: without it the shard no longer counts as made.
    delete_object(research, &index_key).await?;
    delete_object(research, &bin_key).await
}
