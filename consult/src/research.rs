//! What consultation hands to the research tier: signed-out slides to curate, and patients'
//! opt-outs from research use.
//!
//! Sign-out (and each amendment) enqueues one `curate` job per slide of the case unless the
//! patient opted out; the research tier re-checks before it publishes. The opt-out is clinical
//! data (it names the patient through the hospital's keyed hash, and keeps the normalised id
//! encrypted, as cases do, for the hospital's own list), so it is recorded here; removing the
//! patient's research slides is the research tier's work, asked for through the job queue
//! (`forget-patient`), since only that tier holds the pseudonym key. Curation and dataset
//! builds read this table again before they publish anything.
//!
//! Only the patient's own hospital records an opt-out, always for itself: the patient id is
//! keyed exactly as its cases key it ([`crate::patient::PatientIds::seal`]), and the answer
//! says how many of its cases and research slides the id matched, zero included, so a
//! mistyped id shows.

use pathfed_core::accounts::{self, HospitalKind, Principal, Role};
use pathfed_core::contracts::consent::{self, PatientIdCase};
use pathfed_core::db::now;
use pathfed_core::jobs::kinds::{Curate, CuratePayload, ForgetPatient, ForgetPatientPayload};
use pathfed_core::jobs::{Job, Jobs, NewJob};
use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::Consult;
use crate::cases::Case;
use crate::error::{ConsultError, ConsultResult};

/// Hex digits of the keyed hash that name an opt-out in lists and audit rows.
const HASH_PREFIX_CHARS: usize = 12;

/// A recorded opt-out and what it matched.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OptOut {
    /// The patient id as the hospital keys it (NFKC, trimmed, letter case per the hospital's
    /// setting): what was matched against the hospital's cases.
    pub normalised_patient_id: String,
    /// When the opt-out was first recorded (Unix seconds).
    pub recorded_at: i64,
    /// Whether this request recorded it.
    pub newly_recorded: bool,
    /// Whether it was on record already (the opposite of `newly_recorded`); removal is
    /// re-checked all the same.
    pub already_opted_out: bool,
    /// The hospital's cases of this patient. Zero is still recorded: the patient's future
    /// cases are excluded from research.
    pub matched_cases: i64,
    /// Slides of those cases handed to the research tier when they were signed out before the
    /// opt-out: the research slides the `forget_job` withdraws.
    pub matched_research_slides: i64,
    /// The job removing the patient's research data.
    pub forget_job: String,
    /// The hospital's keyed hash of the id (for the audit row; never sent).
    #[serde(skip)]
    pub patient_hash: String,
}

impl OptOut {
    /// What the audit row records: the patient by hash prefix only, and what was matched.
    pub fn audit_detail(&self) -> String {
        format!(
            "patient {}: {} case(s), {} research slide(s) matched; {}; forget job {}",
            hash_prefix(&self.patient_hash),
            self.matched_cases,
            self.matched_research_slides,
            if self.newly_recorded {
                "recorded"
            } else {
                "already on record"
            },
            self.forget_job
        )
    }
}

/// One opt-out in the hospital's list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OptOutEntry {
    /// The normalised patient id; null for an opt-out recorded before ids were kept with
    /// opt-outs (recording it again fills it in).
    pub patient_id: Option<String>,
    /// The first hex digits of the hospital's keyed hash of the id.
    pub patient_hash_prefix: String,
    /// Who first recorded it (user name).
    pub recorded_by: String,
    /// When (Unix seconds).
    pub recorded_at: i64,
    /// Cases it matched when last recorded; null for one recorded before counts were kept.
    pub matched_cases: Option<i64>,
    /// Research slides it matched when last recorded; null as for `matched_cases`.
    pub matched_research_slides: Option<i64>,
    /// The hospital's cases of this patient now, later ones included (none of them is
    /// curated).
    pub cases_now: i64,
}

/// The opt-outs of the user's hospital.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OptOutList {
    /// The hospital's name.
    pub hospital: String,
    /// Whether the hospital's patient ids distinguish letter case.
    pub patient_id_case: PatientIdCase,
    /// Newest first.
    pub opt_outs: Vec<OptOutEntry>,
}

fn hash_prefix(hash: &str) -> &str {
    hash.get(..HASH_PREFIX_CHARS).unwrap_or(hash)
}

/// Refuses anyone but the submitters and admins of the patients' own hospital: a spoke, or a
/// hub that has referred cases of its own patients (a hub reading others' cases holds none).
async fn require_patients_hospital(consult: &Consult, user: &Principal) -> ConsultResult<()> {
    if user.hospital.kind == HospitalKind::Hub {
        let referred = sqlx::query("SELECT 1 AS one FROM cases WHERE spoke_id = $1 LIMIT 1")
            .bind(&user.hospital.id)
            .fetch_optional(consult.platform.db.pool())
            .await?;
        if referred.is_none() {
            return Err(ConsultError::Forbidden(
                "opt-outs are recorded by the patient's own hospital; this hub has referred no \
                 cases of its own patients"
                    .into(),
            ));
        }
    }
    if !matches!(
        user.role,
        Role::Submitter | Role::Admin | Role::PlatformAdmin
    ) {
        return Err(ConsultError::Forbidden(
            "only the patient's hospital (submitters or admins) records an opt-out".into(),
        ));
    }
    Ok(())
}

/// The hospital's cases of the patient, and the slides of those signed out by `until` (the
/// ones handed to the research tier before the opt-out stopped curation).
async fn count_matches(
    consult: &Consult,
    hospital: &str,
    hash: &str,
    until: i64,
) -> ConsultResult<(i64, i64)> {
    let pool = consult.platform.db.pool();
    let cases: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM cases WHERE spoke_id = $1 AND patient_hash = $2")
            .bind(hospital)
            .bind(hash)
            .fetch_one(pool)
            .await?
            .try_get("n")?;
    let slides: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM case_slides cs JOIN cases c ON c.id = cs.case_id \
         WHERE c.spoke_id = $1 AND c.patient_hash = $2 AND c.status = 'signed_out' \
         AND c.closed_at <= $3",
    )
    .bind(hospital)
    .bind(hash)
    .bind(until)
    .fetch_one(pool)
    .await?
    .try_get("n")?;
    Ok((cases, slides))
}

/// Records that the patient `patient_id` (as typed) of the user's hospital opts out of
/// research use, and asks the research tier to remove what it holds. `hospital` (a name or
/// id), when the client names one, must be the user's own. Idempotent.
pub async fn record(
    consult: &Consult,
    user: &Principal,
    patient_id: &str,
    hospital: Option<&str>,
) -> ConsultResult<OptOut> {
    require_patients_hospital(consult, user).await?;
    if let Some(named) = hospital.map(str::trim).filter(|h| !h.is_empty())
        && named != user.hospital.id
        && named != user.hospital.name
    {
        return Err(ConsultError::Forbidden(format!(
            "an opt-out is recorded by the patient's own hospital: you record them for {} only",
            user.hospital.name
        )));
    }
    let db = &consult.platform.db;
    let hospital = &user.hospital.id;
    let sealed = consult.patients.seal(db, hospital, patient_id).await?;
    let select = "SELECT recorded_at FROM opt_outs WHERE hospital_id = $1 AND patient_hash = $2";
    let earlier: Option<i64> = sqlx::query(select)
        .bind(hospital)
        .bind(&sealed.hash)
        .fetch_optional(db.pool())
        .await?
        .map(|row| row.try_get("recorded_at"))
        .transpose()?;
    let at = now();
    let (cases, slides) =
        count_matches(consult, hospital, &sealed.hash, earlier.unwrap_or(at)).await?;
    let inserted = sqlx::query(
        "INSERT INTO opt_outs (hospital_id, patient_hash, recorded_by, recorded_at, \
         patient_cipher, matched_cases, matched_research_slides) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (hospital_id, patient_hash) DO NOTHING",
    )
    .bind(hospital)
    .bind(&sealed.hash)
    .bind(&user.id)
    .bind(at)
    .bind(&sealed.cipher)
    .bind(cases)
    .bind(slides)
    .execute(db.pool())
    .await?;
    let newly_recorded = inserted.rows_affected() == 1;
    if !newly_recorded {
        // On record already: the counts are today's, and a row from before ids were kept
        // with opt-outs gets its id.
        sqlx::query(
            "UPDATE opt_outs SET matched_cases = $1, matched_research_slides = $2, \
             patient_cipher = COALESCE(patient_cipher, $3) \
             WHERE hospital_id = $4 AND patient_hash = $5",
        )
        .bind(cases)
        .bind(slides)
        .bind(&sealed.cipher)
        .bind(hospital)
        .bind(&sealed.hash)
        .execute(db.pool())
        .await?;
    }
    let recorded_at: i64 = sqlx::query(select)
        .bind(hospital)
        .bind(&sealed.hash)
        .fetch_one(db.pool())
        .await?
        .try_get("recorded_at")?;
    let job = forget(
        &Jobs::new(consult.platform.db.clone()),
        hospital,
        &sealed.hash,
        &user.id,
    )
    .await?;
    tracing::info!(
        hospital = %hospital,
        patient = %hash_prefix(&sealed.hash),
        cases,
        research_slides = slides,
        newly_recorded,
        "opt-out recorded"
    );
    Ok(OptOut {
        normalised_patient_id: sealed.id.as_str().to_string(),
        recorded_at,
        newly_recorded,
        already_opted_out: !newly_recorded,
        matched_cases: cases,
        matched_research_slides: slides,
        forget_job: job.id,
        patient_hash: sealed.hash,
    })
}

/// The opt-outs of the user's hospital, newest first: the patient id (decrypted for the
/// hospital's own staff, as a case shows it), who recorded it and when, and what it matched.
pub async fn list(consult: &Consult, user: &Principal) -> ConsultResult<OptOutList> {
    require_patients_hospital(consult, user).await?;
    let db = &consult.platform.db;
    let hospital = &user.hospital.id;
    let rows = sqlx::query(
        "SELECT o.patient_hash, o.patient_cipher, o.recorded_by, o.recorded_at, \
         o.matched_cases, o.matched_research_slides, \
         (SELECT COUNT(*) FROM cases c WHERE c.spoke_id = o.hospital_id \
          AND c.patient_hash = o.patient_hash) AS cases_now \
         FROM opt_outs o WHERE o.hospital_id = $1 ORDER BY o.recorded_at DESC, o.patient_hash",
    )
    .bind(hospital)
    .fetch_all(db.pool())
    .await?;
    // One batched lookup names every recorder (it takes each id once).
    let recorders: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("recorded_by"))
        .collect::<Result<_, _>>()?;
    let names = accounts::user_names(db, &recorders).await?;
    let mut opt_outs = Vec::with_capacity(rows.len());
    for row in &rows {
        let hash: String = row.try_get("patient_hash")?;
        let cipher: Option<String> = row.try_get("patient_cipher")?;
        let by: String = row.try_get("recorded_by")?;
        opt_outs.push(OptOutEntry {
            patient_id: cipher.and_then(|c| consult.patients.decrypt(&c)),
            patient_hash_prefix: hash_prefix(&hash).to_string(),
            recorded_by: names.get(&by).cloned().unwrap_or(by),
            recorded_at: row.try_get("recorded_at")?,
            matched_cases: row.try_get("matched_cases")?,
            matched_research_slides: row.try_get("matched_research_slides")?,
            cases_now: row.try_get("cases_now")?,
        });
    }
    Ok(OptOutList {
        hospital: user.hospital.name.clone(),
        patient_id_case: accounts::patient_id_case(db, hospital).await?,
        opt_outs,
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
