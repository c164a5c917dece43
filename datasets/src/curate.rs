//! The jobs that fill and prune the research tier.
//!
//! `curate` (enqueued at sign-out, per slide): de-identifies the slide into
//! `research/slides/{research id}.tiff` and records its labels: the case's final diagnosis code
//! and the labelled annotations as regions (the research slide keeps the source's level-0
//! geometry, so coordinates carry over unchanged). An amendment re-runs it and only the labels
//! change. The patient's opt-out is checked before the work and again, in the transaction of
//! the insert, before anything is published.
//!
//! What curation reads of consultation and ingest (the case, its annotations, opt-outs, AI
//! feedback, the slide's files) comes through `pathfed_core::contracts`; this module writes
//! only `research_slides`.
//!
//! `forget-patient` (enqueued by an opt-out): deletes the patient's research slides, their
//! patch shards and every copy in this node's slide cache (every process's folder, not only
//! the job's), and leaves a tombstone row and an audit entry for each.
//!
//! [`recurate`] (an admin command) re-enqueues curation that is missing under the current
//! pseudonym key and retires what an earlier key made: the key-rotation path.

use std::collections::HashSet;
use std::path::PathBuf;

use object_store::ObjectStoreExt as _;
use pathfed_core::audit::AuditEvent;
use pathfed_core::contracts::curation::{self, CaseFacts};
use pathfed_core::contracts::{ai_feedback, consent, slides};
use pathfed_core::db::now;
use pathfed_core::digest::sha256_file;
use pathfed_core::jobs::NewJob;
use pathfed_core::jobs::kinds::{Curate, CuratePayload, ForgetPatientPayload};
use pathfed_core::store::{self, list_keys};
use pathfed_core::worker::{JobFailure, RunningJob};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

use crate::Research;
use crate::deid::{DeidOptions, DeidReport, deidentify_file};
use crate::error::{DatasetError, DatasetResult};

/// The object key of a research slide.
pub fn research_slide_key(id: &str) -> String {
    format!("research/slides/{id}.tiff")
}

/// A labelled region of a research slide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    /// Taxonomy code.
    pub label: String,
    /// "polygon", "rectangle" or "point".
    pub kind: String,
    /// The annotation's geometry in level-0 pixels, as consultation stores it.
    pub geometry: Value,
}

fn failure(e: DatasetError) -> JobFailure {
    JobFailure::from_error(&e)
}

/// Runs one `curate` job.
pub async fn run_curate(
    research: Research,
    payload: CuratePayload,
    job: RunningJob,
) -> Result<Value, JobFailure> {
    curate(&research, &job, &payload).await.map_err(failure)?
}

async fn curate(
    research: &Research,
    job: &RunningJob,
    payload: &CuratePayload,
) -> DatasetResult<Result<Value, JobFailure>> {
    let db = research.platform.db.pool();
    let case = curation::case(&research.platform.db, &payload.case_id)
        .await?
        .ok_or_else(|| DatasetError::NotFound(format!("case {}", payload.case_id)))?;
    let final_code = case.final_code.clone().unwrap_or_default();
    if case.status != "signed_out" {
        return Ok(Err(JobFailure::permanent(format!(
            "case {} is {}, not signed out",
            payload.case_id, case.status
        ))));
    }
    if payload.report_version < case.report_version {
        return Ok(Ok(
            json!({ "skipped": "a later report version is curated by its own job" }),
        ));
    }
    if opted_out(research, &case).await? {
        return Ok(Ok(json!({ "skipped": "the patient opted out" })));
    }
    let id = research.pseudonyms.slide(&payload.slide_id);
    let regions = regions(research, &payload.case_id, &payload.slide_id).await?;
    let existing = sqlx::query("SELECT deleted_at FROM research_slides WHERE id = $1")
        .bind(&id)
        .fetch_optional(db)
        .await?;
    if let Some(row) = existing {
        if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
            return Ok(Ok(json!({ "skipped": "the research slide was deleted" })));
        }
        // Pixels never change after sign-out: an amendment only relabels.
        sqlx::query(
            "UPDATE research_slides SET label_code = $1, regions = $2, report_version = $3, \
             ai_discordant = $5 WHERE id = $4 AND deleted_at IS NULL AND report_version < $3",
        )
        .bind(&final_code)
        .bind(serde_json::to_string(&regions).unwrap_or_default())
        .bind(payload.report_version)
        .bind(&id)
        .bind(ai_discordant(research, &payload.case_id, &payload.slide_id).await?)
        .execute(db)
        .await?;
        return Ok(Ok(json!({ "research_slide": id, "relabelled": true })));
    }

    if let Err(stop) = job.progress(0.05, "fetching the original") {
        return Ok(Err(stop));
    }
    let slide = slides::files(&research.platform.db, &payload.slide_id)
        .await?
        .ok_or_else(|| DatasetError::NotFound(format!("slide {}", payload.slide_id)))?;
    let platform = &research.platform;
    let cached = platform
        .cache
        .get(&payload.slide_id, &slide.files, &platform.store)
        .await?;
    let source = cached.dir.join(&slide.main_file);
    let work = tempfile::Builder::new()
        .prefix("curate-")
        .tempdir_in(&platform.config.data_dir)
        .map_err(|e| DatasetError::io("creating a work folder", e))?;
    let out: PathBuf = work.path().join("research.tiff");

    if let Err(stop) = job.progress(0.15, "de-identifying") {
        return Ok(Err(stop));
    }
    let limits = platform.config.slide.clone();
    let (out_path, source_path) = (out.clone(), source.clone());
    let report: DeidReport = tokio::task::spawn_blocking(move || {
        deidentify_file(&source_path, &out_path, &limits, &DeidOptions::default())
    })
    .await
    .map_err(|e| DatasetError::Invalid(format!("de-identification stopped: {e}")))??;
    drop(cached);

    if let Err(stop) = job.progress(0.8, "storing the research slide") {
        return Ok(Err(stop));
    }
    let hashed = out.clone();
    let sha256 = tokio::task::spawn_blocking(move || sha256_file(&hashed, |_| {}))
        .await
        .map_err(|e| DatasetError::Invalid(format!("hashing stopped: {e}")))?
        .map_err(|e| DatasetError::io("hashing the research slide", e))?;
    let key = research_slide_key(&id);
    store::put_file(&platform.store, &key, &out).await?;

    // Publish only if the patient has still not opted out: the consent read follows the insert
    // in its transaction, so on SQLite the insert's write lock keeps any opt-out from
    // committing between the read and the commit (on PostgreSQL the window is the commit
    // itself, as it was for the statement's own guard), and an opted-out patient's row is
    // rolled back instead of published.
    let (w, h) = report.kept.levels.first().copied().unwrap_or((0, 0));
    let year = year_of(case.closed_at.unwrap_or_else(now));
    let discordant = ai_discordant(research, &payload.case_id, &payload.slide_id).await?;
    let mut tx = platform.db.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO research_slides (id, research_patient, research_hospital, taxonomy, \
         label_code, organ, age_band, sex, year, object_key, sha256, bytes, width, height, \
         mpp_x, mpp_y, objective_power, vendor, pixel_path, regions, report_version, curated_at, \
         ai_discordant) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&id)
    .bind(
        research
            .pseudonyms
            .patient(&case.spoke_id, &case.patient_hash),
    )
    .bind(research.pseudonyms.hospital(&case.spoke_id))
    .bind(&case.taxonomy)
    .bind(&final_code)
    .bind(&case.organ)
    .bind(&case.age_band)
    .bind(&case.sex)
    .bind(year)
    .bind(&key)
    .bind(&sha256)
    .bind(report.output_bytes as i64)
    .bind(w as i64)
    .bind(h as i64)
    .bind(report.kept.mpp.map(|m| m.0))
    .bind(report.kept.mpp.map(|m| m.1))
    .bind(report.kept.objective_power)
    .bind(&report.kept.vendor)
    .bind(match report.pixel_path {
        crate::deid::PixelPath::Lossless => "lossless",
        crate::deid::PixelPath::ReEncoded => "re-encoded",
    })
    .bind(serde_json::to_string(&regions).unwrap_or_default())
    .bind(payload.report_version)
    .bind(now())
    .bind(discordant)
    .execute(&mut *tx)
    .await?;
    let refused = consent::is_opted_out(&mut tx, &case.spoke_id, &case.patient_hash).await?;
    if refused {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    if refused || inserted.rows_affected() != 1 {
        // Opted out while we worked (or another attempt won): nothing of ours may stay.
        if refused || opted_out(research, &case).await? {
            let _ = platform
                .store
                .delete(&object_store::path::Path::from(key.as_str()))
                .await;
            return Ok(Ok(
                json!({ "skipped": "the patient opted out during curation" }),
            ));
        }
        return Ok(Ok(json!({ "research_slide": id, "already_curated": true })));
    }
    Ok(Ok(json!({
        "research_slide": id,
        "pixel_path": report.pixel_path,
        "tiles": report.tiles,
        "bytes": report.output_bytes,
        "removed": report.removed.len(),
    })))
}

/// The AI results on the clinical slide that this case's final diagnosis contradicted, as the JSON
/// the research slide carries (`None` where there were none). Only the model and its call
/// travel: nothing of the case.
async fn ai_discordant(
    research: &Research,
    case_id: &str,
    slide_id: &str,
) -> DatasetResult<Option<String>> {
    let calls = ai_feedback::discordant(&research.platform.db, case_id, slide_id).await?;
    if calls.is_empty() {
        return Ok(None);
    }
    let list: Vec<Value> = calls
        .iter()
        .map(|c| json!({ "model": c.model, "version": c.version, "predicted": c.predicted }))
        .collect();
    Ok(Some(serde_json::Value::Array(list).to_string()))
}

async fn opted_out(research: &Research, case: &CaseFacts) -> DatasetResult<bool> {
    let mut conn = research.platform.db.pool().acquire().await?;
    Ok(consent::is_opted_out(&mut conn, &case.spoke_id, &case.patient_hash).await?)
}

/// Labelled annotations of the slide in the case, as research regions.
async fn regions(research: &Research, case_id: &str, slide_id: &str) -> DatasetResult<Vec<Region>> {
    Ok(
        curation::labelled_regions(&research.platform.db, case_id, slide_id)
            .await?
            .into_iter()
            .map(|r| Region {
                label: r.label,
                kind: r.kind,
                geometry: r.geometry,
            })
            .collect(),
    )
}

/// The calendar year (UTC) of a Unix time: coarse enough for small-cell checks.
pub fn year_of(unix: i64) -> i64 {
    // 400-year cycles of 146,097 days; civil-from-days (proleptic Gregorian).
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// Runs one `forget-patient` job.
pub async fn run_forget(
    research: Research,
    payload: ForgetPatientPayload,
    _job: RunningJob,
) -> Result<Value, JobFailure> {
    let patient = research
        .pseudonyms
        .patient(&payload.hospital_id, &payload.patient_hash);
    forget(&research, &patient).await.map_err(failure)
}

/// Deletes a research patient's slides and patches; tombstones and audits each.
pub async fn forget(research: &Research, research_patient: &str) -> DatasetResult<Value> {
    let ids: Vec<String> = sqlx::query(
        "SELECT id FROM research_slides WHERE research_patient = $1 AND deleted_at IS NULL",
    )
    .bind(research_patient)
    .fetch_all(research.platform.db.pool())
    .await?
    .iter()
    .map(|row| row.try_get("id"))
    .collect::<Result<_, _>>()?;
    let deleted = remove_slides(research, &ids, "opt-out", "patient opted out").await?;
    Ok(json!({ "deleted": deleted }))
}

/// Deletes live research slides' objects, patch shards, stored encoder embeddings and cached
/// copies, then audits and tombstones (with `reason`) each. Returns the ids removed.
async fn remove_slides(
    research: &Research,
    ids: &[String],
    reason: &str,
    detail: &str,
) -> DatasetResult<Vec<String>> {
    let platform = &research.platform;
    // Patch shards and the embeddings computed from them (training's embedding store) are
    // named after the research slide.
    let mut derived = list_keys(&platform.store, "research/patches/").await?;
    derived.extend(list_keys(&platform.store, "research/embeddings/").await?);
    let mut removed = Vec::new();
    for id in ids {
        let Some(row) = sqlx::query(
            "SELECT object_key FROM research_slides WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .fetch_optional(platform.db.pool())
        .await?
        else {
            continue;
        };
        let key: String = row.try_get("object_key")?;
        delete_object(research, &key).await?;
        for object in derived.iter().filter(|k| k.contains(&format!("/{id}."))) {
            delete_object(research, object).await?;
        }
        // An extraction on this node may have cached the slide (keyed by its research id), in
        // any process's folder: all copies go now, after the object, so none is fetched again.
        let copies = platform.cache.purge(id)?;
        if copies > 0 {
            tracing::info!(research_slide = %id, copies, "removed cached copies");
        }
        // Audited before the tombstone: whoever sees a slide withdrawn finds its deletion in
        // the log (a retry after a failed update audits it again, never not at all).
        platform
            .audit(
                AuditEvent::anonymous(
                    "research_slide.delete",
                    &format!("research_slide:{id}"),
                    "ok",
                )
                .detail(detail),
            )
            .await?;
        // The tombstone says when and why, and keeps nothing of the patient: no label,
        // regions, quasi-identifiers, pseudonyms, hash or model disagreements.
        sqlx::query(
            "UPDATE research_slides SET deleted_at = $1, deleted_reason = $2, \
             research_patient = '', research_hospital = '', label_code = '', regions = '[]', \
             age_band = '', sex = '', year = 0, sha256 = '', ai_discordant = NULL \
             WHERE id = $3 AND deleted_at IS NULL",
        )
        .bind(now())
        .bind(reason)
        .bind(id)
        .execute(platform.db.pool())
        .await?;
        removed.push(id.clone());
    }
    // Published manifests that named them keep their ids only (also finishing a run of this
    // that failed after its slides were gone, since it looks at every tombstone).
    let scrubbed = crate::versions::scrub_withdrawn(research).await?;
    if scrubbed > 0 {
        tracing::info!(
            manifests = scrubbed,
            "withdrawn entries scrubbed from manifests"
        );
    }
    Ok(removed)
}

/// What [`recurate`] found and did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Recuration {
    /// Slides of signed-out cases whose research slide (under the current key) exists.
    pub present: usize,
    /// Slides whose curate job is already queued or running.
    pub pending: usize,
    /// Curate jobs enqueued for slides that have none.
    pub enqueued: usize,
    /// Slides left out because their patient opted out.
    pub opted_out: usize,
    /// Research slides of other keys or of slides no longer signed out, removed
    /// (with `retire_stale` only).
    pub retired: Vec<String>,
}

/// Makes the research tier match the signed-out slides under the current pseudonym key:
/// enqueues `curate` for every signed-out slide (patient not opted out) whose research slide
/// is missing (a sign-out whose enqueue was lost, or a rotated key), and with `retire_stale`
/// removes live research slides that no signed-out slide maps to under this key (what an
/// earlier key made), tombstoned as "retired". Running it twice changes nothing more.
pub async fn recurate(research: &Research, retire_stale: bool) -> DatasetResult<Recuration> {
    let db = research.platform.db.pool();
    let signed_out = curation::signed_out_slides(&research.platform.db).await?;
    // Read after the slides, so an opt-out recorded by then is honoured; one recorded later
    // is caught by the curate job's own checks.
    let refusals: HashSet<(String, String)> = consent::all(&research.platform.db)
        .await?
        .into_iter()
        .map(|o| (o.hospital_id, o.patient_hash))
        .collect();
    // What exists already, read once rather than per slide.
    let known: HashSet<String> = sqlx::query("SELECT id FROM research_slides")
        .fetch_all(db)
        .await?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()?;
    let waiting: HashSet<String> = research
        .jobs
        .active_payloads::<Curate>()
        .await?
        .into_iter()
        .map(|p| p.slide_id)
        .collect();
    let mut done = Recuration::default();
    let mut current = HashSet::new();
    for row in signed_out {
        let slide = row.slide_id;
        let id = research.pseudonyms.slide(&slide);
        current.insert(id.clone());
        if refusals.contains(&(row.spoke_id, row.patient_hash)) {
            done.opted_out += 1;
        } else if known.contains(&id) {
            done.present += 1;
        } else if waiting.contains(&slide) {
            done.pending += 1;
        } else {
            // No dedupe key: a finished job that left no research slide (it failed, or ran
            // under another key) must not stop this one.
            research
                .jobs
                .enqueue(
                    NewJob::of::<Curate>(&CuratePayload {
                        case_id: row.case_id,
                        slide_id: slide,
                        report_version: row.report_version,
                    })
                    .always(),
                )
                .await?;
            done.enqueued += 1;
        }
    }
    if retire_stale {
        let stale: Vec<String> =
            sqlx::query("SELECT id FROM research_slides WHERE deleted_at IS NULL ORDER BY id")
                .fetch_all(db)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|id| !current.contains(id))
                .collect();
        done.retired = remove_slides(
            research,
            &stale,
            "retired",
            "no signed-out slide maps to it under the current key",
        )
        .await?;
    }
    Ok(done)
}

/// Deletes one object; one already gone is fine (a retried job).
pub(crate) async fn delete_object(research: &Research, key: &str) -> DatasetResult<()> {
    match research
        .platform
        .store
        .delete(&object_store::path::Path::from(key))
        .await
    {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(pathfed_core::CoreError::from(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn years_of_unix_times() {
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(951_782_400), 2000); // 2000-02-29
        assert_eq!(year_of(1_798_761_599), 2026); // 2026-12-31 23:59:59
        assert_eq!(year_of(1_798_761_600), 2027);
    }
}
