//! What consultation hands to AI support and takes back from it, through the database and
//! the job queue (the inference crate runs the jobs and owns the results):
//!
//! - the slides of a case get an `infer` job when it is submitted, if a model is deployed for
//!   the case's organ and taxonomy (once per slide and model version); drafts are never
//!   analysed, since the result is for the hub and the spoke may still change the case;
//! - AI support belongs to the pathologists who diagnose the slide ([`refusal`]): the referring
//!   hospital's staff never see it;
//! - a hub may hide AI results from a pathologist until they have entered their own read, so
//!   the model cannot anchor the diagnosis;
//! - sign-out and amendments record, per slide with a result, whether the model's call was the
//!   final diagnosis: the concordance on the model's card and the review flag on the slide's
//!   research copy come from these rows.
//!
//! What is deployed and what the models said are read through `pathfed_core::contracts`
//! (`deployments`, `ai_results`); the hub's setting through `pathfed_core::accounts`.

use pathfed_core::Db;
use pathfed_core::accounts::{self, HospitalKind, Principal, Role};
use pathfed_core::contracts::{ai_results, deployments};
use pathfed_core::db::now;
use pathfed_core::jobs::kinds::{Infer, InferPayload};
use pathfed_core::jobs::{Jobs, NewJob};
use sqlx::{AnyConnection, Row};

use crate::case::Case;
use crate::error::ConsultResult;

/// Queues, inside the caller's transaction on `conn`, the deployed model's run on `slide_id`
/// of `case`, unless no model is deployed for the case's organ or this version already ran
/// (or is queued) there.
async fn queue_slide(conn: &mut AnyConnection, case: &Case, slide_id: &str) -> ConsultResult<bool> {
    let Some(deployed) = deployments::deployed_for(conn, &case.organ, &case.taxonomy).await? else {
        return Ok(false);
    };
    let payload = InferPayload {
        slide_id: slide_id.to_string(),
        model: deployed.model,
        version: deployed.version,
    };
    Jobs::enqueue_in(conn, &NewJob::of::<Infer>(&payload)).await?;
    Ok(true)
}

/// The slides of `case` in order, read on `conn`.
async fn case_slides(conn: &mut AnyConnection, case: &Case) -> ConsultResult<Vec<String>> {
    let slides: Vec<String> = sqlx::query(
        "SELECT slide_id FROM case_slides WHERE case_id = $1 ORDER BY position, slide_id",
    )
    .bind(&case.id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("slide_id"))
    .collect::<Result<_, _>>()?;
    Ok(slides)
}

/// [`queue_slide`] for every slide of `case`, inside the caller's transaction: when the case
/// is submitted, never while it is a draft.
pub async fn queue_case(conn: &mut AnyConnection, case: &Case) -> ConsultResult<()> {
    let slides = case_slides(conn, case).await?;
    for slide in slides {
        queue_slide(conn, case, &slide).await?;
    }
    Ok(())
}

/// Why `user`, who may see `slide_id` (a slide of hospital `owner_id`; the caller has checked
/// that), may not see AI support on it at all, if so. AI support belongs to the pathologists
/// who diagnose the slide: those of the hub reading a case that holds it (they see it through
/// the case, not as its owner) and, for a slide in no case, the pathologists of its own
/// hospital if that is a hub. The referring hospital's staff (a spoke's always, a hub's once it
/// put the slide in a case), submitters and admins never see it.
pub async fn refusal(
    db: &Db,
    user: &Principal,
    slide_id: &str,
    owner_id: &str,
) -> ConsultResult<Option<String>> {
    if user.role != Role::Pathologist {
        return Ok(Some(
            "AI support is for the pathologists who diagnose the slide".into(),
        ));
    }
    if owner_id != user.hospital.id {
        return Ok(None);
    }
    if user.hospital.kind != HospitalKind::Hub {
        return Ok(Some(
            "AI support is for the hub pathologists who diagnose the referred slides".into(),
        ));
    }
    // A hub that referred its own slide is the spoke of that case: the reading hub decides.
    let referred = sqlx::query(
        "SELECT 1 AS one FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         WHERE cs.slide_id = $1 AND c.spoke_id = $2 AND c.status <> 'cancelled' LIMIT 1",
    )
    .bind(slide_id)
    .bind(&user.hospital.id)
    .fetch_optional(db.pool())
    .await?;
    Ok(referred.map(|_| {
        "this slide is referred for consultation: AI support is for the hub that reads it"
            .to_string()
    }))
}

/// Why `user` may not see AI results of `slide_id` yet, if so: a pathologist of a hub that
/// hides them until the reader's own read, reading an open case of that hub with the slide,
/// who has not entered a read in it. Everyone else [`refusal`] lets in sees its results.
pub async fn hidden_until_read(
    db: &Db,
    user: &Principal,
    slide_id: &str,
) -> ConsultResult<Option<String>> {
    // Only the user's own hub's cases count, so its setting decides for all of them.
    if user.role != Role::Pathologist
        || !accounts::hides_ai_until_read(db, &user.hospital.id).await?
    {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT c.id, c.status FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         WHERE cs.slide_id = $1 AND c.hub_id = $2 \
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

/// Whether a hub hides AI results until a pathologist's own read (stored on the hospital by
/// `pathfed_core::accounts`; what it means is decided here, in [`hidden_until_read`]).
pub async fn set_hidden_until_read(db: &Db, hub_id: &str, hidden: bool) -> ConsultResult<()> {
    Ok(accounts::set_hides_ai_until_read(db, hub_id, hidden).await?)
}

/// Records, for every AI result on the slides of `case`, whether the model's call was the
/// final diagnosis `final_code` of report `version` (replacing what an earlier version said).
pub async fn record_agreement(
    conn: &mut AnyConnection,
    case: &Case,
    final_code: &str,
    version: i64,
) -> ConsultResult<usize> {
    let slides = case_slides(conn, case).await?;
    let calls = ai_results::calls_for_slides(conn, &slides).await?;
    let at = now();
    for call in &calls {
        // A diagnosis the model cannot name (non-diagnostic, say) is neither agreement nor not.
        let agree = call
            .classes
            .iter()
            .any(|c| c == final_code)
            .then(|| i64::from(call.predicted == final_code));
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
        .bind(&call.slide_id)
        .bind(&call.model)
        .bind(call.version)
        .bind(&call.predicted)
        .bind(i64::from(call.score >= call.threshold))
        .bind(final_code)
        .bind(i64::from(final_code == call.positive))
        .bind(agree)
        .bind(version)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(calls.len())
}

/// What decides which model serves a slide: the organ and taxonomy of a case holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlideContext {
    /// The case's organ.
    pub organ: String,
    /// The case's taxonomy.
    pub taxonomy: String,
}

/// The organ and taxonomy of every case holding `slide_id` that was not cancelled, latest
/// case first. The model deployed for the slide is the one deployed for the first of these
/// that has one (the server composes this with the registry, which consultation does not
/// link).
pub async fn slide_contexts(db: &Db, slide_id: &str) -> ConsultResult<Vec<SlideContext>> {
    let rows = sqlx::query(
        "SELECT c.organ, c.taxonomy FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         WHERE cs.slide_id = $1 AND c.status <> 'cancelled' ORDER BY c.created_at DESC",
    )
    .bind(slide_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SlideContext {
                organ: r.try_get("organ")?,
                taxonomy: r.try_get("taxonomy")?,
            })
        })
        .collect()
}
