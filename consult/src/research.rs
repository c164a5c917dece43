//! What consultation hands to the research tier: signed-out slides to curate, and patients'
//! opt-outs from research use.
//!
//! Sign-out (and each amendment) enqueues one `curate` job per slide of the case unless the
//! patient opted out; the research tier re-checks before it publishes. The opt-out is clinical data (it names the patient through the hospital's keyed hash), so it
//! is recorded here; removing the patient's research slides is the research tier's work, asked
//! for through the job queue (`forget-patient`), since only that tier holds the pseudonym key.
//! Curation and dataset builds read this table again before they publish anything.

use pathfed_core::accounts::{Principal, Role};
use pathfed_core::contracts::consent;
use pathfed_core::db::now;
use pathfed_core::jobs::kinds::{Curate, CuratePayload, ForgetPatient, ForgetPatientPayload};
use pathfed_core::jobs::{Job, Jobs, NewJob};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::Consult;
use crate::cases::Case;
use crate::error::{ConsultError, ConsultResult};
use crate::patient::PatientIds;

/// A recorded opt-out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OptOut {
    /// When it was recorded (Unix seconds).
    pub recorded_at: i64,
    /// Whether this request recorded it (false: it was on record already).
    pub newly_recorded: bool,
    /// The job removing the patient's research data.
    pub forget_job: String,
}

/// Records that the patient `patient_id` of the user's hospital opts out of research use, and
/// asks the research tier to remove what it holds. Idempotent.
pub async fn record(
    consult: &Consult,
    user: &Principal,
    patient_id: &str,
) -> ConsultResult<OptOut> {
    if !matches!(user.role, Role::Submitter | Role::Admin) {
        return Err(ConsultError::Forbidden(
            "only the patient's hospital (submitters or admins) records an opt-out".into(),
        ));
    }
    let id = PatientIds::check(patient_id)?;
    let hospital = &user.hospital.id;
    let hash = consult.patients.hash(hospital, id);
    let at = now();
    let inserted = sqlx::query(
        "INSERT INTO opt_outs (hospital_id, patient_hash, recorded_by, recorded_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (hospital_id, patient_hash) DO NOTHING",
    )
    .bind(hospital)
    .bind(&hash)
    .bind(&user.id)
    .bind(at)
    .execute(consult.platform.db.pool())
    .await?;
    let recorded_at: i64 = sqlx::query(
        "SELECT recorded_at FROM opt_outs WHERE hospital_id = $1 AND patient_hash = $2",
    )
    .bind(hospital)
    .bind(&hash)
    .fetch_one(consult.platform.db.pool())
    .await?
    .try_get("recorded_at")?;
    let job = forget(
        &Jobs::new(consult.platform.db.clone()),
        hospital,
        &hash,
        &user.id,
    )
    .await?;
    Ok(OptOut {
        recorded_at,
        newly_recorded: inserted.rows_affected() == 1,
        forget_job: job.id,
    })
}

/// Enqueues the removal of the patient's research data (again, if asked twice: a second
/// pass finds slides curated by jobs that were running during the first).
async fn forget(jobs: &Jobs, hospital: &str, hash: &str, by: &str) -> ConsultResult<Job> {
    Ok(jobs
        .enqueue(
            NewJob::of::<ForgetPatient>(&ForgetPatientPayload {
                hospital_id: hospital.to_string(),
                patient_hash: hash.to_string(),
            })
            .by(by),
        )
        .await?)
}

/// Enqueues, inside the caller's transaction on `conn` (the sign-out or amendment that issues
/// report `version`), curation of every slide of the case, unless the patient has opted out.
/// Returns the number of slides handed over.
pub async fn enqueue_curation(
    conn: &mut AnyConnection,
    case: &Case,
    version: i64,
) -> ConsultResult<usize> {
    // The same read the research tier makes before it publishes.
    if consent::is_opted_out(conn, &case.spoke_id, &case.patient_hash).await? {
        tracing::info!(case = %case.id, "patient opted out: nothing curated");
        return Ok(0);
    }
    let slides: Vec<String> =
        sqlx::query("SELECT slide_id FROM case_slides WHERE case_id = $1 ORDER BY position")
            .bind(&case.id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|row| row.try_get("slide_id"))
            .collect::<Result<_, _>>()?;
    for slide in &slides {
        let payload = CuratePayload {
            case_id: case.id.clone(),
            slide_id: slide.clone(),
            report_version: version,
        };
        Jobs::enqueue_in(conn, &NewJob::of::<Curate>(&payload)).await?;
    }
    Ok(slides.len())
}
