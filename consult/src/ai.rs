//! What consultation hands to AI support and takes back from it, through the database and
//! the job queue (the inference crate runs the jobs and owns the results):
//!
//! - a slide that joins a case, and the slides of a submitted case, get an `infer` job when a
//!   model is deployed for the case's organ and taxonomy (once per slide and model version);
//! - a hub may hide AI results from a pathologist until they have entered their own read, so
//!   the model cannot anchor the diagnosis;
//! - sign-out and amendments record, per slide with a result, whether the model's call was the
//!   final diagnosis: the concordance on the model's card and the review flag on the slide's
//!   research copy come from these rows.

use pathfed_core::Db;
use pathfed_core::accounts::{Principal, Role};
use pathfed_core::db::now;
use pathfed_core::jobs::{Jobs, NewJob};
use serde_json::json;
use sqlx::Row;

use crate::cases::Case;
use crate::error::ConsultResult;

/// The job kind that runs a model on a slide (the inference crate's `infer`).
pub const INFER_JOB: &str = "infer";

/// The model deployed for `organ` in `taxonomy`, if any.
pub async fn deployed_model(
    db: &Db,
    organ: &str,
    taxonomy: &str,
) -> ConsultResult<Option<(String, i64)>> {
    let row = sqlx::query(
        "SELECT model_name, model_version FROM deployments WHERE organ = $1 AND taxonomy = $2",
    )
    .bind(organ)
    .bind(taxonomy)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => Some((r.try_get("model_name")?, r.try_get("model_version")?)),
        None => None,
    })
}

/// Queues the deployed model's run on `slide_id` of `case`, unless no model is deployed for
/// the case's organ or this version already ran (or is queued) there.
pub async fn queue_slide(db: &Db, case: &Case, slide_id: &str) -> ConsultResult<bool> {
    let Some((model, version)) = deployed_model(db, &case.organ, &case.taxonomy).await? else {
        return Ok(false);
    };
    // The key names the slide first: the slide's jobs are listed by it.
    let job = NewJob::new(
        INFER_JOB,
        json!({ "slide_id": slide_id, "model": model, "version": version }),
    )
    .dedupe(format!("infer:{slide_id}:{model}@{version}"));
    Jobs::new(db.clone()).enqueue(job).await?;
    Ok(true)
}

/// [`queue_slide`] for every slide of `case`; failures are logged, never returned, because
/// the consultation step that asked has already happened.
pub async fn queue_case(db: &Db, case: &Case) {
    let slides = match crate::cases::slide_ids(db, &case.id).await {
        Ok(slides) => slides,
        Err(e) => {
            tracing::error!(case = %case.id, error = %e, "listing slides for AI support failed");
            return;
        }
    };
    for slide in slides {
        if let Err(e) = queue_slide(db, case, &slide).await {
            tracing::error!(case = %case.id, slide = %slide, error = %e, "could not queue AI support");
        }
    }
}

/// Why `user` may not see AI results of `slide_id` yet, if so: a pathologist of a hub that
/// hides them until the reader's own read, reading an open case of that hub with the slide,
/// who has not entered a read in it. Everyone else who may see the slide sees its results.
pub async fn hidden_until_read(
    db: &Db,
    user: &Principal,
    slide_id: &str,
) -> ConsultResult<Option<String>> {
    if user.role != Role::Pathologist {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT c.id, c.status FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         JOIN hospitals h ON h.id = c.hub_id \
         WHERE cs.slide_id = $1 AND c.hub_id = $2 AND h.ai_after_first_read = 1 \
         AND c.status NOT IN ('draft', 'cancelled', 'signed_out')",
    )
    .bind(slide_id)
    .bind(&user.hospital.id)
    .fetch_all(db.pool())
    .await?;
    for row in rows {
        let case_id: String = row.try_get("id")?;
        let read =
            sqlx::query("SELECT 1 AS one FROM case_reads WHERE case_id = $1 AND reader_id = $2")
                .bind(&case_id)
                .bind(&user.id)
                .fetch_optional(db.pool())
                .await?;
        if read.is_none() {
            return Ok(Some(
                "your hub shows AI support after you have entered your own read of the case".into(),
            ));
        }
    }
    Ok(None)
}

/// Whether a hub hides AI results until a pathologist's own read.
pub async fn set_hidden_until_read(db: &Db, hub_id: &str, hidden: bool) -> ConsultResult<()> {
    sqlx::query("UPDATE hospitals SET ai_after_first_read = $1 WHERE id = $2 AND kind = 'hub'")
        .bind(i64::from(hidden))
        .bind(hub_id)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Records, for every AI result on the slides of `case`, whether the model's call was the
/// final diagnosis `final_code` of report `version` (replacing what an earlier version said).
pub async fn record_agreement(
    db: &Db,
    case: &Case,
    final_code: &str,
    version: i64,
) -> ConsultResult<usize> {
    let rows = sqlx::query(
        "SELECT r.slide_id, r.model_name, r.model_version, r.predicted, r.positive, \
         r.score, r.threshold, r.classes FROM inference_results r \
         JOIN case_slides cs ON cs.slide_id = r.slide_id WHERE cs.case_id = $1",
    )
    .bind(&case.id)
    .fetch_all(db.pool())
    .await?;
    let at = now();
    for row in &rows {
        let predicted: String = row.try_get("predicted")?;
        let positive: String = row.try_get("positive")?;
        let score: f64 = row.try_get("score")?;
        let threshold: f64 = row.try_get("threshold")?;
        let classes: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("classes")?).unwrap_or_default();
        // A diagnosis the model cannot name (non-diagnostic, say) is neither agreement nor not.
        let agree = classes
            .iter()
            .any(|c| c == final_code)
            .then(|| i64::from(predicted == final_code));
        sqlx::query(
            "INSERT INTO ai_feedback (case_id, slide_id, model_name, model_version, predicted, \
             ai_positive, final_code, final_positive, agree, report_version, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (case_id, slide_id, model_name, model_version) DO UPDATE SET \
             predicted = excluded.predicted, ai_positive = excluded.ai_positive, \
             final_code = excluded.final_code, final_positive = excluded.final_positive, \
             agree = excluded.agree, report_version = excluded.report_version, \
             recorded_at = excluded.recorded_at",
        )
        .bind(&case.id)
        .bind(row.try_get::<String, _>("slide_id")?)
        .bind(row.try_get::<String, _>("model_name")?)
        .bind(row.try_get::<i64, _>("model_version")?)
        .bind(&predicted)
        .bind(i64::from(score >= threshold))
        .bind(final_code)
        .bind(i64::from(final_code == positive))
        .bind(agree)
        .bind(version)
        .bind(at)
        .execute(db.pool())
        .await?;
    }
    Ok(rows.len())
}

/// The model deployed for the organ and taxonomy of the latest case holding `slide_id`.
pub async fn deployed_for_slide(db: &Db, slide_id: &str) -> ConsultResult<Option<(String, i64)>> {
    let row = sqlx::query(
        "SELECT d.model_name, d.model_version FROM case_slides cs \
         JOIN cases c ON c.id = cs.case_id \
         JOIN deployments d ON d.organ = c.organ AND d.taxonomy = c.taxonomy \
         WHERE cs.slide_id = $1 AND c.status <> 'cancelled' \
         ORDER BY c.created_at DESC LIMIT 1",
    )
    .bind(slide_id)
    .fetch_optional(db.pool())
    .await?;
    Ok(match row {
        Some(r) => Some((r.try_get("model_name")?, r.try_get("model_version")?)),
        None => None,
    })
}
