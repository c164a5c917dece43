//! The two reads of a case: the assigned pathologist's, then a second pathologist's blind
//! double-check, and adjudication when they disagree.
//!
//! Blinding is enforced here, for every endpoint at once: while a case is in a blind state
//! ([`Status::is_blind`]) a read is shown to its own reader only, and the spoke sees reads only
//! once the case is signed out.

use pathfed_core::accounts::{self, Principal, Role};
use pathfed_core::db::now;
use pathfed_core::{CoreError, Db};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::cases::{
    self, Case, Status, Value, bind_values, check_text, require_status, transition,
};
use crate::error::{ConsultError, ConsultResult};
use crate::taxonomy::Taxonomy;

/// Which read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadKind {
    /// The assigned pathologist's.
    Primary,
    /// The blind double-check.
    Second,
}

impl ReadKind {
    fn as_str(self) -> &'static str {
        match self {
            ReadKind::Primary => "primary",
            ReadKind::Second => "second",
        }
    }
}

/// A diagnosis of one slide within a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlideRead {
    /// The slide.
    pub slide_id: String,
    /// Its label code, if the pathologist gives one per slide.
    #[serde(default)]
    pub code: Option<String>,
    /// Findings on this slide.
    #[serde(default)]
    pub findings: String,
}

/// What a pathologist enters.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadForm {
    /// Case-level label code from the case's taxonomy.
    pub code: String,
    /// Free-text findings for the case.
    #[serde(default)]
    pub findings: String,
    /// Optional per-slide diagnoses.
    #[serde(default)]
    pub slides: Vec<SlideRead>,
}

/// A stored read.
#[derive(Debug, Clone, Serialize)]
pub struct Read {
    /// Primary or second.
    pub kind: ReadKind,
    /// Reader's user id.
    pub reader_id: String,
    /// Reader's user name.
    pub reader: String,
    /// Case-level code.
    pub code: String,
    /// Case-level findings.
    pub findings: String,
    /// Per-slide diagnoses.
    pub slides: Vec<SlideRead>,
    /// When entered (unix seconds).
    pub entered_at: i64,
}

fn is_hub_pathologist(user: &Principal, case: &Case) -> bool {
    user.role == Role::Pathologist && case.hub_id.as_deref() == Some(user.hospital.id.as_str())
}

fn require_hub_pathologist(user: &Principal, case: &Case) -> ConsultResult<()> {
    if is_hub_pathologist(user, case) {
        Ok(())
    } else {
        Err(ConsultError::Forbidden(
            "only pathologists of the case's hub can do this".into(),
        ))
    }
}

async fn hub_pathologist_id(db: &Db, case: &Case, username: &str) -> ConsultResult<String> {
    let not_one = || {
        ConsultError::Invalid(format!(
            "{username:?} is not an active pathologist of this hub"
        ))
    };
    let user = match accounts::user_by_name(db, username).await {
        Ok(user) => user,
        Err(CoreError::NotFound(_)) => return Err(not_one()),
        Err(e) => return Err(e.into()),
    };
    let of_hub = case.hub_id.as_deref() == Some(user.hospital.id.as_str());
    if !of_hub || user.role != Role::Pathologist || user.disabled {
        return Err(not_one());
    }
    Ok(user.id)
}

/// A hub pathologist takes a submitted case.
pub async fn claim(db: &Db, user: &Principal, case: &Case) -> ConsultResult<Case> {
    require_hub_pathologist(user, case)?;
    require_status(case, &[Status::Submitted], "claim the case")?;
    transition(
        db,
        case,
        Status::Submitted,
        Status::Assigned,
        "primary_reader = $2",
        &[Value::Text(Some(user.id.clone()))],
    )
    .await
}

/// A hub pathologist or admin gives a case (not yet read) to a pathologist of the hub.
pub async fn assign(db: &Db, user: &Principal, case: &Case, assignee: &str) -> ConsultResult<Case> {
    let same_hub = case.hub_id.as_deref() == Some(user.hospital.id.as_str());
    if !(same_hub
        && matches!(
            user.role,
            Role::Pathologist | Role::Admin | Role::PlatformAdmin
        ))
    {
        return Err(ConsultError::Forbidden(
            "only the hub's pathologists and admins assign its cases".into(),
        ));
    }
    require_status(
        case,
        &[Status::Submitted, Status::Assigned],
        "assign the case",
    )?;
    let assignee_id = hub_pathologist_id(db, case, assignee).await?;
    transition(
        db,
        case,
        case.status,
        Status::Assigned,
        "primary_reader = $2",
        &[Value::Text(Some(assignee_id))],
    )
    .await
}

fn check_read(
    db_slides: &[String],
    taxonomy: &Taxonomy,
    form: &ReadForm,
) -> ConsultResult<ReadForm> {
    taxonomy.require_label(&form.code)?;
    let mut slides = Vec::with_capacity(form.slides.len());
    for slide in &form.slides {
        if !db_slides.contains(&slide.slide_id) {
            return Err(ConsultError::Invalid(format!(
                "slide {} is not part of this case",
                slide.slide_id
            )));
        }
        if let Some(code) = &slide.code {
            taxonomy.require_label(code)?;
        }
        slides.push(SlideRead {
            slide_id: slide.slide_id.clone(),
            code: slide.code.clone(),
            findings: check_text("slide findings", &slide.findings, false)?,
        });
    }
    Ok(ReadForm {
        code: form.code.clone(),
        findings: check_text("findings", &form.findings, false)?,
        slides,
    })
}

/// Stores `form` as the `kind` read and moves the case from `from` to `to` in one
/// transaction; the move also requires `reader_column = user`.
#[allow(clippy::too_many_arguments)]
async fn store_read(
    db: &Db,
    user: &Principal,
    case: &Case,
    kind: ReadKind,
    form: &ReadForm,
    from: Status,
    to: Status,
    reader_column: &str,
    extra_sets: &str,
    extra: &[Value],
) -> ConsultResult<()> {
    let slides = serde_json::to_string(&form.slides)
        .map_err(|e| ConsultError::Invalid(format!("per-slide reads: {e}")))?;
    let mut tx = db.pool().begin().await?;
    sqlx::query("DELETE FROM case_reads WHERE case_id = $1 AND kind = $2")
        .bind(&case.id)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO case_reads (case_id, kind, reader_id, code, findings, slides, entered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&case.id)
    .bind(kind.as_str())
    .bind(&user.id)
    .bind(&form.code)
    .bind(&form.findings)
    .bind(slides)
    .bind(now())
    .execute(&mut *tx)
    .await?;
    let mut sql = format!(
        "UPDATE cases SET status = '{}', updated_at = $1",
        to.as_str()
    );
    if !extra_sets.is_empty() {
        sql.push_str(", ");
        sql.push_str(extra_sets);
    }
    let (id_param, user_param) = (extra.len() + 2, extra.len() + 3);
    sql.push_str(&format!(
        " WHERE id = ${id_param} AND status = '{}' AND {reader_column} = ${user_param}",
        from.as_str()
    ));
    // Only our own constants and parameter numbers are formatted into the statement.
    let query = bind_values(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now()), extra);
    let done = query
        .bind(&case.id)
        .bind(&user.id)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(ConsultError::Transition(
            "the case changed meanwhile; reload it".into(),
        ));
    }
    tx.commit().await?;
    Ok(())
}

/// The assigned pathologist enters (or, until a double-check starts, revises) the first read.
pub async fn enter_primary(
    db: &Db,
    taxonomy: &Taxonomy,
    user: &Principal,
    case: &Case,
    form: &ReadForm,
) -> ConsultResult<Case> {
    require_status(
        case,
        &[Status::Assigned, Status::Diagnosed],
        "enter the first read",
    )?;
    if case.primary_reader.as_deref() != Some(user.id.as_str()) {
        return Err(ConsultError::Forbidden(
            "only the assigned pathologist enters the first read".into(),
        ));
    }
    let form = check_read(&cases::slide_ids(db, &case.id).await?, taxonomy, form)?;
    store_read(
        db,
        user,
        case,
        ReadKind::Primary,
        &form,
        case.status,
        Status::Diagnosed,
        "primary_reader",
        "",
        &[],
    )
    .await?;
    cases::load(db, &case.id).await
}

/// A second hub pathologist (not the first reader) takes the double-check; `assignee` lets a
/// colleague or admin give it to someone.
pub async fn start_double_check(
    db: &Db,
    user: &Principal,
    case: &Case,
    assignee: Option<&str>,
) -> ConsultResult<Case> {
    let second_id = match assignee {
        None => {
            require_hub_pathologist(user, case)?;
            user.id.clone()
        }
        Some(name) => {
            let same_hub = case.hub_id.as_deref() == Some(user.hospital.id.as_str());
            if !(same_hub
                && matches!(
                    user.role,
                    Role::Pathologist | Role::Admin | Role::PlatformAdmin
                ))
            {
                return Err(ConsultError::Forbidden(
                    "only the hub's pathologists and admins assign double-checks".into(),
                ));
            }
            hub_pathologist_id(db, case, name).await?
        }
    };
    require_status(case, &[Status::Diagnosed], "start the double-check")?;
    if case.primary_reader.as_deref() == Some(second_id.as_str()) {
        return Err(ConsultError::Transition(
            "the double-check must be read by a different pathologist than the first read".into(),
        ));
    }
    transition(
        db,
        case,
        Status::Diagnosed,
        Status::InDoubleCheck,
        "second_reader = $2",
        &[Value::Text(Some(second_id))],
    )
    .await
}

/// The second reader enters their blind read; concordant reads settle the final diagnosis,
/// discordant ones go to adjudication.
pub async fn enter_second(
    db: &Db,
    taxonomy: &Taxonomy,
    user: &Principal,
    case: &Case,
    form: &ReadForm,
) -> ConsultResult<Case> {
    require_status(
        case,
        &[Status::InDoubleCheck],
        "enter the double-check read",
    )?;
    if case.second_reader.as_deref() != Some(user.id.as_str()) {
        return Err(ConsultError::Forbidden(
            "only the pathologist doing the double-check enters it".into(),
        ));
    }
    let form = check_read(&cases::slide_ids(db, &case.id).await?, taxonomy, form)?;
    let first = load_read(db, &case.id, ReadKind::Primary)
        .await?
        .ok_or_else(|| ConsultError::Transition("the first read is missing".into()))?;
    if first.code == form.code {
        store_read(
            db,
            user,
            case,
            ReadKind::Second,
            &form,
            Status::InDoubleCheck,
            Status::ReadyForSignOut,
            "second_reader",
            "concordant = 1, final_code = $2, final_findings = $3",
            &[
                Value::Text(Some(first.code.clone())),
                Value::Text(Some(first.findings.clone())),
            ],
        )
        .await?;
    } else {
        store_read(
            db,
            user,
            case,
            ReadKind::Second,
            &form,
            Status::InDoubleCheck,
            Status::Adjudication,
            "second_reader",
            "concordant = 0",
            &[],
        )
        .await?;
    }
    cases::load(db, &case.id).await
}

/// The agreed diagnosis after discordant reads.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinalForm {
    /// Final code.
    pub code: String,
    /// Final findings.
    #[serde(default)]
    pub findings: String,
    /// How the readers reached it.
    #[serde(default)]
    pub note: String,
}

/// One of the two readers records the diagnosis both agreed on.
pub async fn adjudicate(
    db: &Db,
    taxonomy: &Taxonomy,
    user: &Principal,
    case: &Case,
    form: &FinalForm,
) -> ConsultResult<Case> {
    require_status(
        case,
        &[Status::Adjudication],
        "record the adjudicated diagnosis",
    )?;
    if !case.is_reader(&user.id) {
        return Err(ConsultError::Forbidden(
            "only the two readers record the adjudicated diagnosis".into(),
        ));
    }
    taxonomy.require_label(&form.code)?;
    transition(
        db,
        case,
        Status::Adjudication,
        Status::ReadyForSignOut,
        "final_code = $2, final_findings = $3, final_by = $4, final_note = $5",
        &[
            Value::Text(Some(form.code.clone())),
            Value::Text(Some(check_text("findings", &form.findings, false)?)),
            Value::Text(Some(user.id.clone())),
            Value::Text(Some(check_text("note", &form.note, false)?)),
        ],
    )
    .await
}

async fn load_read(db: &Db, case_id: &str, kind: ReadKind) -> ConsultResult<Option<Read>> {
    Ok(all_reads(db, case_id)
        .await?
        .into_iter()
        .find(|r| r.kind == kind))
}

/// Every stored read of a case, unfiltered (reports and blinding decisions use it).
pub async fn all_reads(db: &Db, case_id: &str) -> ConsultResult<Vec<Read>> {
    let rows = sqlx::query(
        "SELECT kind, reader_id, code, findings, slides, entered_at FROM case_reads \
         WHERE case_id = $1 ORDER BY entered_at",
    )
    .bind(case_id)
    .fetch_all(db.pool())
    .await?;
    let reader_ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("reader_id"))
        .collect::<Result<_, _>>()?;
    let names = accounts::user_names(db, &reader_ids).await?;
    let mut reads = Vec::with_capacity(rows.len());
    for row in &rows {
        let reader_id: String = row.try_get("reader_id")?;
        // Left out without a known reader, as a join with `users` would leave it out.
        let Some(reader) = names.get(&reader_id) else {
            continue;
        };
        let kind: String = row.try_get("kind")?;
        let slides: String = row.try_get("slides")?;
        reads.push(Read {
            kind: if kind == "second" {
                ReadKind::Second
            } else {
                ReadKind::Primary
            },
            reader_id,
            reader: reader.clone(),
            code: row.try_get("code")?,
            findings: row.try_get("findings")?,
            slides: serde_json::from_str(&slides).unwrap_or_default(),
            entered_at: row.try_get("entered_at")?,
        });
    }
    Ok(reads)
}

/// The reads `user` may see: their own always; the hub's readers see both once the blind
/// phase is over; the spoke sees them once the case is signed out.
pub async fn visible_reads(db: &Db, user: &Principal, case: &Case) -> ConsultResult<Vec<Read>> {
    let all = all_reads(db, &case.id).await?;
    let hub_sees_all = is_hub_pathologist(user, case)
        && matches!(
            case.status,
            Status::Adjudication | Status::ReadyForSignOut | Status::SignedOut
        );
    let spoke_sees_all = cases::is_spoke_member(user, case) && case.status == Status::SignedOut;
    Ok(all
        .into_iter()
        .filter(|r| hub_sees_all || spoke_sees_all || r.reader_id == user.id)
        .collect())
}
