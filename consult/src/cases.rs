//! Cases: what a spoke sends, where it goes, and the states it passes through.
//!
//! `draft → submitted → assigned → diagnosed → in_double_check → ready_for_sign_out →
//! signed_out`, with `adjudication` between double-check and sign-out when the two reads
//! disagree, and `cancelled` while nobody has started reading. Every transition is one
//! conditional `UPDATE … WHERE status = <expected>`, so two people acting at once cannot both
//! succeed; the loser gets a clear 409.

use std::collections::HashMap;

use pathfed_core::Db;
use pathfed_core::accounts::{self, HospitalKind, Principal, Role};
use pathfed_core::contracts::slides;
use pathfed_core::db::{new_id, now};
use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

pub use crate::case::{Case, Status, Urgency};
use crate::error::{ConsultError, ConsultResult};
use crate::patient::PatientIds;
use crate::taxonomy::Taxonomies;

/// Age bands a case may carry (never a birth date).
pub const AGE_BANDS: [&str; 11] = [
    "0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+", "unknown",
];
/// Sexes a case may carry.
pub const SEXES: [&str; 4] = ["female", "male", "other", "unknown"];

const CASE_COLUMNS: &str = "c.id, c.spoke_id, c.hub_id, c.created_by, c.patient_hash, \
     c.patient_cipher, c.age_band, c.sex, c.organ, c.specimen, c.clinical_question, c.urgency, \
     c.taxonomy, c.status, c.primary_reader, c.second_reader, \
     c.concordant, c.final_code, c.final_findings, c.final_by, c.final_note, c.report_version, \
     c.report_seen_version, c.created_at, c.submitted_at, c.closed_at, c.updated_at";
const CASE_FROM: &str = "FROM cases c";

/// The rows as cases with their hospitals' names, looked up once for all of them. A case
/// whose spoke is unknown is left out, as a join with `hospitals` would leave it out.
async fn cases_from_rows(db: &Db, rows: &[AnyRow]) -> ConsultResult<Vec<Case>> {
    let mut ids = Vec::with_capacity(rows.len() * 2);
    for row in rows {
        ids.push(row.try_get::<String, _>("spoke_id")?);
        ids.extend(row.try_get::<Option<String>, _>("hub_id")?);
    }
    let names = accounts::hospital_names(db, &ids).await?;
    let mut cases = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(case) = case_from_row(row, &names)? {
            cases.push(case);
        }
    }
    Ok(cases)
}

fn case_from_row(row: &AnyRow, names: &HashMap<String, String>) -> ConsultResult<Option<Case>> {
    let spoke_id: String = row.try_get("spoke_id")?;
    let Some(spoke_name) = names.get(&spoke_id).cloned() else {
        return Ok(None);
    };
    let hub_id: Option<String> = row.try_get("hub_id")?;
    let hub_name = hub_id.as_ref().and_then(|id| names.get(id).cloned());
    let concordant: Option<i64> = row.try_get("concordant")?;
    Ok(Some(Case {
        id: row.try_get("id")?,
        spoke_id,
        spoke_name,
        hub_id,
        hub_name,
        created_by: row.try_get("created_by")?,
        patient_hash: row.try_get("patient_hash")?,
        patient_cipher: row.try_get("patient_cipher")?,
        age_band: row.try_get("age_band")?,
        sex: row.try_get("sex")?,
        organ: row.try_get("organ")?,
        specimen: row.try_get("specimen")?,
        clinical_question: row.try_get("clinical_question")?,
        urgency: Urgency::parse(&row.try_get::<String, _>("urgency")?)?,
        taxonomy: row.try_get("taxonomy")?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        primary_reader: row.try_get("primary_reader")?,
        second_reader: row.try_get("second_reader")?,
        concordant: concordant.map(|c| c != 0),
        final_code: row.try_get("final_code")?,
        final_findings: row.try_get("final_findings")?,
        final_by: row.try_get("final_by")?,
        final_note: row.try_get("final_note")?,
        report_version: row.try_get("report_version")?,
        report_seen_version: row.try_get("report_seen_version")?,
        created_at: row.try_get("created_at")?,
        submitted_at: row.try_get("submitted_at")?,
        closed_at: row.try_get("closed_at")?,
        updated_at: row.try_get("updated_at")?,
    }))
}

/// Loads a case by id, whoever asks (callers check access).
pub async fn load(db: &Db, id: &str) -> ConsultResult<Case> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CASE_COLUMNS} {CASE_FROM} WHERE c.id = $1"
    )))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    cases_from_rows(db, row.as_slice())
        .await?
        .pop()
        .ok_or(ConsultError::NotFound("case"))
}

/// What a spoke fills in for a new case (or a draft's edit).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseForm {
    /// The patient's id at the spoke.
    pub patient_id: String,
    /// One of [`AGE_BANDS`]: `0-9`, `10-19`, … `80-89`, `90+` or `unknown`; required, so that
    /// nothing is recorded by default (`unknown` says it is not known).
    #[serde(default)]
    #[schema(required = true)]
    pub age_band: String,
    /// One of [`SEXES`]: `female`, `male`, `other` or `unknown`; required, as the age band.
    #[serde(default)]
    #[schema(required = true)]
    pub sex: String,
    /// Organ, e.g. `stomach`.
    pub organ: String,
    /// Specimen, e.g. `endoscopic biopsy, antrum`.
    pub specimen: String,
    /// The question for the pathologist.
    pub clinical_question: String,
    /// `routine` (default) or `urgent`.
    #[serde(default)]
    pub urgency: Option<String>,
    /// The hub to send it to (name or id); the spoke's default hub when absent.
    #[serde(default)]
    pub hub: Option<String>,
}

/// Longest free text accepted in any form field.
pub const MAX_TEXT_CHARS: usize = 20_000;

/// Checks free text: bounded, no control characters but newlines and tabs.
pub fn check_text(field: &str, text: &str, required: bool) -> ConsultResult<String> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(ConsultError::Invalid(format!("{field} is required")));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(ConsultError::Invalid(format!(
            "{field} is longer than {MAX_TEXT_CHARS} characters"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
    {
        return Err(ConsultError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(text.to_string())
}

/// Checks a required choice. Missing (or empty) is refused rather than defaulted: a clinical
/// form records only what someone chose, and `unknown` is a choice.
fn check_choice(field: &str, value: &str, allowed: &[&str]) -> ConsultResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ConsultError::Invalid(format!(
            "{field} is required: one of {} (\"unknown\" when it is not known)",
            allowed.join(", ")
        )));
    }
    if !allowed.contains(&value) {
        return Err(ConsultError::Invalid(format!(
            "{field} must be one of {}, not {value:?}",
            allowed.join(", ")
        )));
    }
    Ok(value.to_string())
}

struct CheckedForm {
    patient_id: String,
    age_band: String,
    sex: String,
    organ: String,
    specimen: String,
    clinical_question: String,
    urgency: Urgency,
}

fn check_form(form: &CaseForm) -> ConsultResult<CheckedForm> {
    let patient_id = PatientIds::check(&form.patient_id)?.to_string();
    let age_band = check_choice("age_band", &form.age_band, &AGE_BANDS)?;
    let sex = check_choice("sex", &form.sex, &SEXES)?;
    let organ = check_text("organ", &form.organ, true)?.to_lowercase();
    if organ.chars().count() > 64 {
        return Err(ConsultError::Invalid(
            "organ is longer than 64 characters".into(),
        ));
    }
    Ok(CheckedForm {
        patient_id,
        age_band,
        sex,
        organ,
        specimen: check_text("specimen", &form.specimen, true)?,
        clinical_question: check_text("clinical_question", &form.clinical_question, true)?,
        urgency: Urgency::parse(form.urgency.as_deref().unwrap_or("routine"))?,
    })
}

/// True when `user` works at the case's spoke with a clinical role.
pub fn is_spoke_member(user: &Principal, case: &Case) -> bool {
    user.hospital.id == case.spoke_id && user.role.sees_clinical_data()
}

/// Resolves a hub by id or name; it must be a hub other than the spoke itself.
async fn resolve_hub(db: &Db, spoke_id: &str, hub: &str) -> ConsultResult<String> {
    let found = accounts::find_hospital(db, hub)
        .await?
        .ok_or_else(|| ConsultError::Invalid(format!("no hospital {hub:?}")))?;
    let id = found.id;
    if found.kind != HospitalKind::Hub {
        return Err(ConsultError::Invalid(format!(
            "{hub:?} is not a hub: cases go to hub hospitals"
        )));
    }
    if id == spoke_id {
        return Err(ConsultError::Invalid(
            "a hospital cannot send a case to itself".into(),
        ));
    }
    Ok(id)
}

/// Creates a draft case for the user's hospital.
pub async fn create(
    db: &Db,
    ids: &PatientIds,
    taxonomies: &Taxonomies,
    user: &Principal,
    form: &CaseForm,
) -> ConsultResult<Case> {
    if !matches!(
        user.role,
        Role::Submitter | Role::Pathologist | Role::Admin | Role::PlatformAdmin
    ) {
        return Err(ConsultError::Forbidden(
            "only clinical staff create cases".into(),
        ));
    }
    let checked = check_form(form)?;
    let hub_id = match &form.hub {
        Some(hub) if !hub.trim().is_empty() => {
            Some(resolve_hub(db, &user.hospital.id, hub.trim()).await?)
        }
        _ => None,
    };
    // Keyed by the id as the hospital keys it, as an opt-out is, so each finds the other.
    let patient = ids.seal(db, &user.hospital.id, &checked.patient_id).await?;
    let id = new_id();
    let at = now();
    sqlx::query(
        "INSERT INTO cases (id, spoke_id, hub_id, created_by, patient_hash, patient_cipher, \
         age_band, sex, organ, specimen, clinical_question, urgency, taxonomy, status, \
         report_version, report_seen_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'draft', 0, 0, $14, $14)",
    )
    .bind(&id)
    .bind(&user.hospital.id)
    .bind(&hub_id)
    .bind(&user.id)
    .bind(&patient.hash)
    .bind(&patient.cipher)
    .bind(&checked.age_band)
    .bind(&checked.sex)
    .bind(&checked.organ)
    .bind(&checked.specimen)
    .bind(&checked.clinical_question)
    .bind(checked.urgency.as_str())
    .bind(&taxonomies.for_organ(&checked.organ).id)
    .bind(at)
    .execute(db.pool())
    .await?;
    load(db, &id).await
}

/// Replaces a draft's details.
pub async fn update_draft(
    db: &Db,
    ids: &PatientIds,
    taxonomies: &Taxonomies,
    user: &Principal,
    case: &Case,
    form: &CaseForm,
) -> ConsultResult<Case> {
    require_spoke(user, case)?;
    let checked = check_form(form)?;
    let hub_id = match &form.hub {
        Some(hub) if !hub.trim().is_empty() => {
            Some(resolve_hub(db, &user.hospital.id, hub.trim()).await?)
        }
        _ => case.hub_id.clone(),
    };
    let patient = ids.seal(db, &case.spoke_id, &checked.patient_id).await?;
    let done = sqlx::query(
        "UPDATE cases SET hub_id = $1, patient_hash = $2, patient_cipher = $3, age_band = $4, \
         sex = $5, organ = $6, specimen = $7, clinical_question = $8, urgency = $9, \
         taxonomy = $10, updated_at = $11 WHERE id = $12 AND status = 'draft'",
    )
    .bind(&hub_id)
    .bind(&patient.hash)
    .bind(&patient.cipher)
    .bind(&checked.age_band)
    .bind(&checked.sex)
    .bind(&checked.organ)
    .bind(&checked.specimen)
    .bind(&checked.clinical_question)
    .bind(checked.urgency.as_str())
    .bind(&taxonomies.for_organ(&checked.organ).id)
    .bind(now())
    .bind(&case.id)
    .execute(db.pool())
    .await?;
    if done.rows_affected() != 1 {
        return Err(ConsultError::Transition(
            "only a draft can be edited; this case has been submitted".into(),
        ));
    }
    load(db, &case.id).await
}

fn require_spoke(user: &Principal, case: &Case) -> ConsultResult<()> {
    if is_spoke_member(user, case) && user.role != Role::Researcher {
        Ok(())
    } else {
        Err(ConsultError::Forbidden(
            "only the submitting hospital can do this".into(),
        ))
    }
}

/// Slides attached to a case, in order.
pub async fn slide_ids(db: &Db, case_id: &str) -> ConsultResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT slide_id FROM case_slides WHERE case_id = $1 ORDER BY position, slide_id",
    )
    .bind(case_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| r.try_get("slide_id").map_err(ConsultError::from))
        .collect()
}

/// A slide of a case with the label the case gives it, as the case detail lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CaseSlide {
    /// Slide id.
    pub id: String,
    /// The specimen/block label (e.g. `A1`, `#2 HE`), if one was given.
    pub label: Option<String>,
}

/// Slides attached to a case with their labels, in order.
pub async fn slides(db: &Db, case_id: &str) -> ConsultResult<Vec<CaseSlide>> {
    let rows = sqlx::query(
        "SELECT slide_id, label FROM case_slides WHERE case_id = $1 ORDER BY position, slide_id",
    )
    .bind(case_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| -> ConsultResult<CaseSlide> {
            Ok(CaseSlide {
                id: r.try_get("slide_id")?,
                label: r.try_get("label")?,
            })
        })
        .collect()
}

/// Longest slide label, in characters.
pub const MAX_SLIDE_LABEL_CHARS: usize = 40;

/// Checks a slide label: any script, trimmed, at most [`MAX_SLIDE_LABEL_CHARS`] characters, no
/// control characters. An empty label clears it (`None`).
pub fn check_slide_label(label: &str) -> ConsultResult<Option<String>> {
    let label = label.trim();
    if label.chars().count() > MAX_SLIDE_LABEL_CHARS {
        return Err(ConsultError::Invalid(format!(
            "a slide label has at most {MAX_SLIDE_LABEL_CHARS} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(ConsultError::Invalid(
            "a slide label must not contain control characters".into(),
        ));
    }
    Ok((!label.is_empty()).then(|| label.to_string()))
}

/// Refuses what [`attach_slide`] refuses before it looks at the slide: a user outside the
/// case's spoke (or a researcher), a case that is no longer a draft.
pub fn check_attach(user: &Principal, case: &Case) -> ConsultResult<()> {
    require_spoke(user, case)?;
    require_status(case, &[Status::Draft], "attach slides")
}

/// Attaches one of the spoke's slides to a draft, with its label if one is given (attaching
/// an attached slide again with a label relabels it).
pub async fn attach_slide(
    db: &Db,
    user: &Principal,
    case: &Case,
    slide_id: &str,
    label: Option<&str>,
) -> ConsultResult<()> {
    check_attach(user, case)?;
    let label = match label {
        Some(label) => check_slide_label(label)?,
        None => None,
    };
    if !slides::belongs_to(db, &case.spoke_id, slide_id).await? {
        return Err(ConsultError::NotFound("slide"));
    }
    let position = slide_ids(db, &case.id).await?.len() as i64;
    // No AI run here: a draft is the spoke's and AI support is the hub's, so the slides are
    // analysed when the case is submitted (`submit`). The insert holds only while the case is
    // still a draft, so a slide cannot slip into a case submitted meanwhile, and miss its run.
    // Attaching twice is harmless: the second insert is skipped, not an error.
    let done = sqlx::query(
        "INSERT INTO case_slides (case_id, slide_id, position, label) SELECT $1, $2, $3, $4 \
         WHERE EXISTS (SELECT 1 FROM cases WHERE id = $1 AND status = 'draft') \
         ON CONFLICT DO NOTHING",
    )
    .bind(&case.id)
    .bind(slide_id)
    .bind(position)
    .bind(&label)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 && label.is_some() {
        sqlx::query(
            "UPDATE case_slides SET label = $1 WHERE case_id = $2 AND slide_id = $3 \
             AND EXISTS (SELECT 1 FROM cases WHERE id = $2 AND status = 'draft')",
        )
        .bind(&label)
        .bind(&case.id)
        .bind(slide_id)
        .execute(db.pool())
        .await?;
    }
    let attached =
        done.rows_affected() == 1 || slide_ids(db, &case.id).await?.iter().any(|s| s == slide_id);
    if !attached {
        return Err(moved_meanwhile(db, case).await);
    }
    Ok(())
}

/// While the spoke may still label its slides: until a hub pathologist takes the case.
const SPOKE_LABELS: [Status; 2] = [Status::Draft, Status::Submitted];
/// While the case's assigned pathologist may label its slides: until the double-check starts,
/// so that nothing the first reader writes reaches the blinded second reader.
const READER_LABELS: [Status; 2] = [Status::Assigned, Status::Diagnosed];

/// Sets or clears the label of one of the case's slides (see [`check_slide_label`]): the
/// spoke's clinical staff while the case is a draft or waiting at the hub, the case's assigned
/// (primary) pathologist from then until the double-check starts. Returns the label as stored.
pub async fn set_slide_label(
    db: &Db,
    user: &Principal,
    case: &Case,
    slide_id: &str,
    label: &str,
) -> ConsultResult<Option<String>> {
    let assigned = case.primary_reader.as_deref() == Some(user.id.as_str())
        && case.hub_id.as_deref() == Some(user.hospital.id.as_str());
    let allowed: &[Status] = if is_spoke_member(user, case) && user.role != Role::Researcher {
        &SPOKE_LABELS
    } else if assigned {
        &READER_LABELS
    } else {
        return Err(ConsultError::Forbidden(
            "only the submitting hospital (until the hub takes the case) or the case's \
             assigned pathologist (until the double-check starts) can label its slides"
                .into(),
        ));
    };
    require_status(case, allowed, "label slides")?;
    let label = check_slide_label(label)?;
    let statuses: Vec<String> = allowed
        .iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect();
    // Only our own status names are formatted into the statement; the values are bound. The
    // condition on the case's status makes a label and a concurrent move exclusive.
    let sql = format!(
        "UPDATE case_slides SET label = $1 WHERE case_id = $2 AND slide_id = $3 \
         AND EXISTS (SELECT 1 FROM cases WHERE id = $2 AND status IN ({}))",
        statuses.join(", ")
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&label)
        .bind(&case.id)
        .bind(slide_id)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 1 {
        return Ok(label);
    }
    if !slide_ids(db, &case.id).await?.iter().any(|s| s == slide_id) {
        return Err(ConsultError::NotFound("slide"));
    }
    Err(moved_meanwhile(db, case).await)
}

/// Detaches a slide from a draft.
pub async fn detach_slide(
    db: &Db,
    user: &Principal,
    case: &Case,
    slide_id: &str,
) -> ConsultResult<()> {
    require_spoke(user, case)?;
    require_status(case, &[Status::Draft], "detach slides")?;
    let done = sqlx::query("DELETE FROM case_slides WHERE case_id = $1 AND slide_id = $2")
        .bind(&case.id)
        .bind(slide_id)
        .execute(db.pool())
        .await?;
    if done.rows_affected() == 0 {
        return Err(ConsultError::NotFound("slide"));
    }
    Ok(())
}

/// The refusal for an action not allowed in the case's state.
pub fn require_status(case: &Case, allowed: &[Status], action: &str) -> ConsultResult<()> {
    if allowed.contains(&case.status) {
        return Ok(());
    }
    let wanted: Vec<_> = allowed.iter().map(|s| s.as_str()).collect();
    Err(ConsultError::Transition(format!(
        "cannot {action}: the case is {}, and this needs {}",
        case.status.as_str(),
        wanted.join(" or ")
    )))
}

/// A value bound into a transition's extra assignments.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// A text column (or NULL).
    Text(Option<String>),
    /// An integer column (or NULL).
    Int(Option<i64>),
}

/// Binds `values` in order.
pub(crate) fn bind_values<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    values: &[Value],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for value in values {
        query = match value {
            Value::Text(text) => query.bind(text.clone()),
            Value::Int(int) => query.bind(*int),
        };
    }
    query
}

/// Moves the case from `from` to `to` with extra `SET` assignments; fails with a 409 if
/// someone else moved it first.
pub(crate) async fn transition(
    db: &Db,
    case: &Case,
    from: Status,
    to: Status,
    extra_sets: &str,
    binds: &[Value],
) -> ConsultResult<Case> {
    let mut conn = db.pool().acquire().await?;
    if !move_status(&mut conn, case, from, to, extra_sets, binds).await? {
        return Err(moved_meanwhile(db, case).await);
    }
    load(db, &case.id).await
}

/// The 409 for a case that someone else moved first.
async fn moved_meanwhile(db: &Db, case: &Case) -> ConsultError {
    match load(db, &case.id).await {
        Ok(current) => ConsultError::Transition(format!(
            "the case changed meanwhile: it is now {}",
            current.status.as_str()
        )),
        Err(e) => e,
    }
}

/// The conditional `UPDATE` of [`transition`] on `conn` (which may hold a transaction);
/// false when the case was not in `from` any more.
async fn move_status(
    conn: &mut AnyConnection,
    case: &Case,
    from: Status,
    to: Status,
    extra_sets: &str,
    binds: &[Value],
) -> ConsultResult<bool> {
    let mut sql = format!(
        "UPDATE cases SET status = '{}', updated_at = $1",
        to.as_str()
    );
    if !extra_sets.is_empty() {
        sql.push_str(", ");
        sql.push_str(extra_sets);
    }
    let id_param = binds.len() + 2;
    sql.push_str(&format!(
        " WHERE id = ${id_param} AND status = '{}'",
        from.as_str()
    ));
    // Only our own constants and parameter numbers are formatted into the statement.
    let query = bind_values(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now()), binds);
    let done = query.bind(&case.id).execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

/// Sends a draft to its hub (the chosen one, else the spoke's default hub).
pub async fn submit(db: &Db, user: &Principal, case: &Case) -> ConsultResult<Case> {
    require_spoke(user, case)?;
    require_status(case, &[Status::Draft], "submit")?;
    if slide_ids(db, &case.id).await?.is_empty() {
        return Err(ConsultError::Invalid(
            "attach at least one slide before submitting".into(),
        ));
    }
    let hub_id = match &case.hub_id {
        Some(hub) => hub.clone(),
        None => {
            let default = accounts::default_hub(db, &case.spoke_id).await?;
            default.ok_or_else(|| {
                ConsultError::Invalid(
                    "choose a hub: this hospital has no default hub configured".into(),
                )
            })?
        }
    };
    let mut tx = db.pool().begin().await?;
    let moved = move_status(
        &mut tx,
        case,
        Status::Draft,
        Status::Submitted,
        "hub_id = $2, submitted_at = $3",
        &[Value::Text(Some(hub_id)), Value::Int(Some(now()))],
    )
    .await?;
    if !moved {
        tx.rollback().await?;
        return Err(moved_meanwhile(db, case).await);
    }
    // Every slide gets its run now, in the same transaction: drafts are never analysed, and a
    // submitted case never misses its AI support.
    crate::ai::queue_case(&mut tx, case).await?;
    tx.commit().await?;
    load(db, &case.id).await
}

/// Withdraws a case nobody has started reading.
pub async fn cancel(db: &Db, user: &Principal, case: &Case) -> ConsultResult<Case> {
    require_spoke(user, case)?;
    require_status(case, &[Status::Draft, Status::Submitted], "cancel")?;
    transition(
        db,
        case,
        case.status,
        Status::Cancelled,
        "closed_at = $2",
        &[Value::Int(Some(now()))],
    )
    .await
}

/// Filters of the list endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<String>,
    /// Only this urgency.
    pub urgency: Option<String>,
    /// Only this organ.
    pub organ: Option<String>,
    /// Only cases submitted at least this many hours ago.
    pub older_than_hours: Option<u64>,
    /// Search: a case id prefix, or a specimen or organ substring (the organ's code or its name
    /// in either language; letter case and full-width characters ignored); for the submitting
    /// hospital's own staff also a patient id, matched exactly once normalised as case creation
    /// normalises it.
    #[serde(default)]
    pub q: Option<String>,
    /// Only cases the user reads: as primary reader or as double-checker.
    #[serde(default)]
    pub mine: bool,
    /// Only open cases: neither signed out nor cancelled.
    #[serde(default)]
    pub open: bool,
}

/// Longest search text accepted, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;

/// A signed-out case's final diagnosis as lists show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FinalDiagnosis {
    /// The taxonomy code.
    pub code: String,
    /// Its label in English.
    pub label: String,
    /// Its label in Japanese (the English one where the taxonomy has none).
    pub label_ja: String,
}

/// A case as the worklist lists it, with what the list shows beside it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The case.
    pub case: Case,
    /// Whether the user is its primary reader or its double-checker.
    pub assigned_to_me: bool,
    /// The primary reader's shown name, once someone has it.
    pub assignee_name: Option<String>,
    /// See [`waiting_seconds`].
    pub waiting_seconds: Option<i64>,
    /// See [`final_diagnosis`].
    pub final_diagnosis: Option<FinalDiagnosis>,
}

/// Seconds a case has waited since it was submitted: until `at` while it is open, until it
/// closed (signed out or cancelled) after that; `None` for a draft.
pub fn waiting_seconds(case: &Case, at: i64) -> Option<i64> {
    let submitted = case.submitted_at?;
    let until = if case.status.is_closed() {
        case.closed_at.unwrap_or(at)
    } else {
        at
    };
    Some(until.saturating_sub(submitted).max(0))
}

/// The final diagnosis of a signed-out case with its labels; `None` before sign-out, so that
/// nothing of a read shows in a list while the case is still being read.
pub fn final_diagnosis(taxonomies: &Taxonomies, case: &Case) -> Option<FinalDiagnosis> {
    use crate::taxonomy::label_in;
    use pathfed_core::locale::Lang;

    if case.status != Status::SignedOut {
        return None;
    }
    let code = case.final_code.clone()?;
    // As the report names it; a code no taxonomy knows any more still shows as itself.
    let label = label_in(&case.taxonomy, &code, Lang::En)
        .or_else(|| {
            let taxonomy = taxonomies.get(&case.taxonomy)?;
            Some(taxonomy.label(&code)?.name.clone())
        })
        .unwrap_or_else(|| code.clone());
    let label_ja = label_in(&case.taxonomy, &code, Lang::Ja).unwrap_or_else(|| label.clone());
    Some(FinalDiagnosis {
        code,
        label,
        label_ja,
    })
}

/// Text as a search compares it: full-width ASCII (as a Japanese input method types it) as
/// ASCII, the ideographic space as a space, lower case.
fn fold(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
            '\u{3000}' => ' ',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

/// A list's search, prepared once for every case of the list.
struct Search {
    /// The text as typed, folded.
    folded: String,
    /// The keyed hash of the text read as a patient id of the user's hospital, if it can be one.
    patient_hash: Option<String>,
}

impl Search {
    /// The search for `q`; `None` when there is nothing to search for.
    async fn new(
        db: &Db,
        ids: &PatientIds,
        user: &Principal,
        q: &str,
    ) -> ConsultResult<Option<Self>> {
        let q = q.trim();
        if q.is_empty() {
            return Ok(None);
        }
        if q.chars().count() > MAX_SEARCH_CHARS {
            return Err(ConsultError::Invalid(format!(
                "the search is longer than {MAX_SEARCH_CHARS} characters"
            )));
        }
        // Keyed exactly as case creation keys the id, so that however staff type it (full-width
        // digits, surrounding spaces) it finds the same patient, and only that patient.
        let patient_hash = match PatientIds::normalise(db, &user.hospital.id, q).await {
            Ok(id) => Some(ids.hash(&user.hospital.id, &id)),
            // Text that cannot be a patient id (control characters, too long) is searched as
            // text only.
            Err(ConsultError::Invalid(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(Some(Self {
            folded: fold(q),
            patient_hash,
        }))
    }

    fn matches(&self, user: &Principal, case: &Case) -> bool {
        use crate::organs::name_in;
        use pathfed_core::locale::Lang;

        // An organ is found by its code or stored text and by its name in either language, so
        // 胃 finds the stomach's cases.
        let organ = |lang| fold(&name_in(&case.organ, lang)).contains(&self.folded);
        fold(&case.id).starts_with(&self.folded)
            || fold(&case.specimen).contains(&self.folded)
            || fold(&case.organ).contains(&self.folded)
            || organ(Lang::Ja)
            || organ(Lang::En)
            // Only the submitting hospital knows its patients' ids: a hub never finds a case
            // by one, and the hash is of the user's own hospital anyway.
            || (is_spoke_member(user, case)
                && self.patient_hash.as_deref() == Some(case.patient_hash.as_str()))
    }
}

/// Cases the user's hospital sent (spoke view) or received (hub worklist). Open lists put
/// urgent cases first, then those waiting longest; other lists put the latest first.
pub async fn list(
    db: &Db,
    ids: &PatientIds,
    taxonomies: &Taxonomies,
    user: &Principal,
    filter: &ListFilter,
) -> ConsultResult<Vec<Listed>> {
    if !user.role.sees_clinical_data() {
        return Err(ConsultError::Forbidden(
            "your role has no access to clinical cases".into(),
        ));
    }
    let search = match filter.q.as_deref() {
        Some(q) => Search::new(db, ids, user, q).await?,
        None => None,
    };
    let mut sql = format!(
        "SELECT {CASE_COLUMNS} {CASE_FROM} WHERE (c.spoke_id = $1 OR (c.hub_id = $1 AND c.status <> 'draft'))"
    );
    let mut binds: Vec<String> = vec![user.hospital.id.clone()];
    if let Some(status) = &filter.status {
        binds.push(Status::parse(status)?.as_str().to_string());
        sql.push_str(&format!(" AND c.status = ${}", binds.len()));
    }
    if let Some(urgency) = &filter.urgency {
        binds.push(Urgency::parse(urgency)?.as_str().to_string());
        sql.push_str(&format!(" AND c.urgency = ${}", binds.len()));
    }
    if let Some(organ) = &filter.organ {
        binds.push(organ.trim().to_lowercase());
        sql.push_str(&format!(" AND c.organ = ${}", binds.len()));
    }
    if filter.mine {
        binds.push(user.id.clone());
        let me = binds.len();
        sql.push_str(&format!(
            " AND (c.primary_reader = ${me} OR c.second_reader = ${me})"
        ));
    }
    if filter.open {
        sql.push_str(" AND c.status NOT IN ('signed_out', 'cancelled')");
        // Drafts have not started waiting: after every submitted case, newest first.
        sql.push_str(
            " ORDER BY CASE c.urgency WHEN 'urgent' THEN 0 ELSE 1 END, \
             CASE WHEN c.submitted_at IS NULL THEN 1 ELSE 0 END, c.submitted_at, \
             c.created_at DESC, c.id",
        );
    } else {
        sql.push_str(" ORDER BY COALESCE(c.closed_at, c.submitted_at, c.created_at) DESC, c.id");
    }
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in &binds {
        query = query.bind(value.clone());
    }
    let rows = query.fetch_all(db.pool()).await?;
    let at = now();
    let cutoff = filter
        .older_than_hours
        .map(|h| at - (h as i64).saturating_mul(3600));
    let mut cases = cases_from_rows(db, &rows).await?;
    if let Some(cutoff) = cutoff {
        cases.retain(|case| case.submitted_at.is_some_and(|at| at <= cutoff));
    }
    // Searched here rather than in SQL so that letter case and full-width characters fold the
    // same way (Unicode's) on both database backends.
    if let Some(search) = &search {
        cases.retain(|case| search.matches(user, case));
    }
    let readers: Vec<String> = cases
        .iter()
        .filter_map(|case| case.primary_reader.clone())
        .collect();
    let names = accounts::users_by_id(db, &readers).await?;
    Ok(cases
        .into_iter()
        .map(|case| Listed {
            assigned_to_me: case.is_reader(&user.id),
            assignee_name: case
                .primary_reader
                .as_ref()
                .and_then(|id| names.get(id))
                .map(|reader| reader.shown_name().to_string()),
            waiting_seconds: waiting_seconds(&case, at),
            final_diagnosis: final_diagnosis(taxonomies, &case),
            case,
        })
        .collect())
}

/// Sets (or clears) the hub a spoke's cases go to by default.
pub async fn set_default_hub(db: &Db, spoke: &str, hub: Option<&str>) -> ConsultResult<()> {
    let spoke_id = accounts::find_hospital(db, spoke)
        .await?
        .ok_or_else(|| ConsultError::Invalid(format!("no hospital {spoke:?}")))?
        .id;
    let hub_id = match hub {
        Some(hub) => Some(resolve_hub(db, &spoke_id, hub).await?),
        None => None,
    };
    accounts::set_default_hub(db, &spoke_id, hub_id.as_deref()).await?;
    Ok(())
}
