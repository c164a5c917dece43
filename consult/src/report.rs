//! Sign-out and report versions.
//!
//! A report is built once from the case as it stands ([`ReportContent`]), hashed (SHA-256 of
//! its canonical JSON), rendered to HTML and PDF, and stored with the hash in the clinical
//! tier. Reports never change: an amendment after sign-out issues the next version, which
//! names the hash of the one it supersedes, and every earlier version stays retrievable.
//! A report speaks the reading hospital's language and keeps its clock; it names people by
//! full name and qualification, and slides by their label and file name.

use std::collections::HashMap;

use pathfed_core::CoreError;
use pathfed_core::accounts::{self, Principal, User};
use pathfed_core::contracts::slides;
use pathfed_core::db::now;
use pathfed_core::locale::{DEFAULT_TIME_ZONE, Lang};
use pathfed_core::store::{delete_prefix, get_bytes, put_bytes};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::Consult;
use crate::cases::{self, Case, Status, check_text, require_status};
use crate::error::{ConsultError, ConsultResult};
use crate::reads;
use crate::render;
pub use crate::report_content::{
    FinalDiagnosis, REPORT_FORMAT, ReportContent, ReportPerson, ReportRead, ReportSlide,
    ReportSlideRead,
};
use crate::taxonomy::{self, Taxonomy};

/// A stored report version.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportVersion {
    /// Case id.
    pub case_id: String,
    /// Version.
    pub version: i64,
    /// SHA-256 of the content (printed on the report).
    pub content_hash: String,
    /// SHA-256 of the PDF file.
    pub pdf_sha256: String,
    /// Who signed.
    pub signed_by: String,
    /// When.
    pub signed_at: i64,
    /// Why it was amended (versions after the first).
    pub amendment_reason: Option<String>,
}

/// A code's label in the report's language: the taxonomy's translation where it has one,
/// else the label as configured, else the code.
fn label_in(taxonomy: &Taxonomy, code: &str, lang: Lang) -> String {
    taxonomy::label_in(&taxonomy.id, code, lang).unwrap_or_else(|| {
        taxonomy
            .label(code)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| code.to_string())
    })
}

/// How a report names a user: full name and qualification as registered.
fn report_person(user: &User) -> ReportPerson {
    ReportPerson {
        username: user.username.clone(),
        name: user.shown_name().to_string(),
        qualification: user.qualification.clone().filter(|q| !q.is_empty()),
    }
}

fn person_of(users: &HashMap<String, User>, id: &str) -> ConsultResult<ReportPerson> {
    users
        .get(id)
        .map(report_person)
        .ok_or_else(|| ConsultError::Core(CoreError::NotFound(format!("user {id}"))))
}

/// The reading hospital's language and time zone, which its reports use.
async fn hub_locale(consult: &Consult, case: &Case) -> ConsultResult<(Lang, String)> {
    let hub = match &case.hub_id {
        Some(id) => accounts::find_hospital(&consult.platform.db, id).await?,
        None => None,
    };
    Ok(match hub {
        Some(hub) => (hub.language, hub.time_zone),
        None => (Lang::Ja, DEFAULT_TIME_ZONE.to_string()),
    })
}

async fn report_slides(consult: &Consult, case: &Case) -> ConsultResult<Vec<ReportSlide>> {
    let mut listed = Vec::new();
    for entry in cases::slides(&consult.platform.db, &case.id).await? {
        let slide = slides::get(&consult.platform.db, &entry.id)
            .await?
            .ok_or(ConsultError::NotFound("slide"))?;
        listed.push(ReportSlide {
            id: entry.id,
            label: entry.label,
            filename: slide.filename,
            width: slide.width,
            height: slide.height,
            mpp: slide.mpp_x,
        });
    }
    Ok(listed)
}

async fn build_content(
    consult: &Consult,
    case: &Case,
    signer: &Principal,
    version: i64,
    supersedes_hash: Option<String>,
    amendment_reason: Option<String>,
) -> ConsultResult<ReportContent> {
    let taxonomy = consult.taxonomy_of(case)?;
    let reads = reads::all_reads(&consult.platform.db, &case.id).await?;
    let final_code = case
        .final_code
        .clone()
        .ok_or_else(|| ConsultError::Transition("the case has no final diagnosis yet".into()))?;
    let (language, time_zone) = hub_locale(consult, case).await?;
    // Everyone the report names, looked up once.
    let mut ids: Vec<String> = reads.iter().map(|r| r.reader_id.clone()).collect();
    ids.extend(case.final_by.clone());
    let users = accounts::users_by_id(&consult.platform.db, &ids).await?;
    let decided_by = match &case.final_by {
        Some(id) => Some(person_of(&users, id)?),
        None => None,
    };
    let mut report_reads = Vec::with_capacity(reads.len());
    for read in &reads {
        report_reads.push(ReportRead {
            kind: read.kind,
            reader: person_of(&users, &read.reader_id)?,
            code: read.code.clone(),
            label: label_in(taxonomy, &read.code, language),
            findings: read.findings.clone(),
            slides: read
                .slides
                .iter()
                .map(|s| ReportSlideRead {
                    slide_id: s.slide_id.clone(),
                    label: s.code.as_deref().map(|c| label_in(taxonomy, c, language)),
                    code: s.code.clone(),
                    findings: s.findings.clone(),
                })
                .collect(),
            entered_at: read.entered_at,
        });
    }
    Ok(ReportContent {
        format: REPORT_FORMAT,
        language,
        time_zone,
        case_id: case.id.clone(),
        version,
        supersedes_hash,
        amendment_reason,
        spoke: case.spoke_name.clone(),
        hub: case.hub_name.clone().unwrap_or_default(),
        patient_id: consult
            .patients
            .decrypt(&case.patient_cipher)
            .unwrap_or_else(|| "(unreadable: key changed)".into()),
        age_band: case.age_band.clone(),
        sex: case.sex.clone(),
        // As the reading hospital names it (`stomach` is 胃 in Japanese); free text as entered.
        organ: crate::organs::name_in(&case.organ, language),
        specimen: case.specimen.clone(),
        clinical_question: case.clinical_question.clone(),
        urgency: case.urgency.as_str().to_string(),
        submitted_at: case.submitted_at.unwrap_or(case.created_at),
        taxonomy: taxonomy.id.clone(),
        slides: report_slides(consult, case).await?,
        reads: report_reads,
        concordant: case.concordant.unwrap_or(false),
        final_diagnosis: FinalDiagnosis {
            label: label_in(taxonomy, &final_code, language),
            code: final_code,
            findings: case.final_findings.clone().unwrap_or_default(),
            decided_by,
            note: case.final_note.clone().unwrap_or_default(),
        },
        signed_by: report_person(signer),
        signed_at: now(),
    })
}

/// Where a report version's files live.
pub fn report_prefix(case: &Case, version: i64) -> String {
    format!(
        "clinical/{}/cases/{}/reports/v{version}",
        case.spoke_id, case.id
    )
}

/// Renders and stores a version's JSON, HTML and PDF; returns the PDF's SHA-256.
async fn store_version(
    consult: &Consult,
    case: &Case,
    content: &ReportContent,
    content_hash: &str,
) -> ConsultResult<String> {
    let store = &consult.platform.store;
    let prefix = report_prefix(case, content.version);
    let json = serde_json::to_vec_pretty(content)
        .map_err(|e| ConsultError::Invalid(format!("report content: {e}")))?;
    let html = render::html(content, content_hash);
    // Laying out and subsetting the font takes a moment of CPU: off the async threads.
    let pdf = {
        let (content, content_hash) = (content.clone(), content_hash.to_string());
        tokio::task::spawn_blocking(move || render::pdf(&content, &content_hash)).await
    };
    let pdf = match pdf {
        Ok(Ok(pdf)) => pdf,
        Ok(Err(e)) => return Err(render_failed(e)),
        Err(e) => return Err(render_failed(e)),
    };
    let pdf_sha256 = hex::encode(Sha256::digest(&pdf));
    let stored = async {
        put_bytes(store, &format!("{prefix}/report.json"), json).await?;
        put_bytes(store, &format!("{prefix}/report.html"), html.into_bytes()).await?;
        put_bytes(store, &format!("{prefix}/report.pdf"), pdf).await
    }
    .await;
    if let Err(e) = stored {
        let _ = delete_prefix(store, &prefix).await;
        return Err(e.into());
    }
    Ok(pdf_sha256)
}

/// A report that could not be drawn: a failure of the server, not of the request.
fn render_failed(e: impl std::fmt::Display) -> ConsultError {
    ConsultError::Core(CoreError::io(
        "rendering the report",
        std::io::Error::other(e.to_string()),
    ))
}

fn require_reader(user: &Principal, case: &Case, action: &str) -> ConsultResult<()> {
    if case.is_reader(&user.id) {
        Ok(())
    } else {
        Err(ConsultError::Forbidden(format!(
            "only the case's two readers can {action}"
        )))
    }
}

/// Issues a stored version: records it and moves the case in one transaction with what the
/// version starts (AI agreement rows, curation jobs), so a crash leaves all of it or none.
/// If nothing was committed (the case moved meanwhile, or a step failed) the version's stored
/// files are removed.
async fn publish(
    consult: &Consult,
    case: &Case,
    user: &Principal,
    content: &ReportContent,
    content_hash: &str,
    pdf_sha256: &str,
    final_update: Option<(&str, &str)>,
) -> ConsultResult<()> {
    let committed = commit_version(
        consult,
        case,
        user,
        content,
        content_hash,
        pdf_sha256,
        final_update,
    )
    .await;
    if committed.is_err() {
        let _ = delete_prefix(
            &consult.platform.store,
            &report_prefix(case, content.version),
        )
        .await;
    }
    committed
}

async fn commit_version(
    consult: &Consult,
    case: &Case,
    user: &Principal,
    content: &ReportContent,
    content_hash: &str,
    pdf_sha256: &str,
    final_update: Option<(&str, &str)>,
) -> ConsultResult<()> {
    let db = &consult.platform.db;
    let mut tx = db.pool().begin().await?;
    let at = now();
    let moved = match final_update {
        None => {
            sqlx::query(
                "UPDATE cases SET status = 'signed_out', report_version = $1, closed_at = $2, \
                 updated_at = $2 WHERE id = $3 AND status = 'ready_for_sign_out' \
                 AND report_version = $4",
            )
            .bind(content.version)
            .bind(at)
            .bind(&case.id)
            .bind(content.version - 1)
            .execute(&mut *tx)
            .await?
        }
        Some((code, findings)) => {
            sqlx::query(
                "UPDATE cases SET report_version = $1, final_code = $2, final_findings = $3, \
                 final_by = $4, updated_at = $5 WHERE id = $6 AND status = 'signed_out' \
                 AND report_version = $7",
            )
            .bind(content.version)
            .bind(code)
            .bind(findings)
            .bind(&user.id)
            .bind(at)
            .bind(&case.id)
            .bind(content.version - 1)
            .execute(&mut *tx)
            .await?
        }
    };
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Err(ConsultError::Transition(
            "the case changed meanwhile; reload it".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO case_reports (case_id, version, content_hash, pdf_sha256, signed_by, \
         signed_at, amendment_reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&case.id)
    .bind(content.version)
    .bind(content_hash)
    .bind(pdf_sha256)
    .bind(&user.id)
    .bind(content.signed_at)
    .bind(&content.amendment_reason)
    .execute(&mut *tx)
    .await?;
    // Agreement first: curation copies the disagreements along with the slides.
    let final_code = &content.final_diagnosis.code;
    crate::ai::record_agreement(&mut tx, case, final_code, content.version).await?;
    crate::research::enqueue_curation(&mut tx, case, content.version).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether `user` may sign the case out now: the case's diagnosis is settled and the user is
/// one of its two readers.
fn check_sign_out(user: &Principal, case: &Case) -> ConsultResult<()> {
    if case.status != Status::ReadyForSignOut {
        let why = match case.status {
            Status::Diagnosed | Status::InDoubleCheck => {
                "cannot sign out before the blind double-check is complete"
            }
            Status::Adjudication => "cannot sign out: the discordant reads need adjudication",
            Status::SignedOut => "the case is already signed out; amend it instead",
            _ => "cannot sign out: the case has no settled diagnosis",
        };
        return Err(ConsultError::Transition(why.into()));
    }
    require_reader(user, case, "sign the case out")
}

/// The report as it would be issued if `user` signed the case out now (same content, version
/// and signer, the present moment), as HTML marked as a preview; only for a user who may sign
/// the case out now.
pub async fn preview(consult: &Consult, user: &Principal, case: &Case) -> ConsultResult<String> {
    check_sign_out(user, case)?;
    let mut content =
        build_content(consult, case, user, case.report_version + 1, None, None).await?;
    // The reader signing out sees the patient's id only where the case panel shows it: the
    // issued report carries it for the referring hospital either way.
    let sharing =
        pathfed_core::hospital_settings::hub_sharing(&consult.platform.db, &case.spoke_id).await?;
    if !sharing.patient_id {
        content.patient_id = match content.language {
            pathfed_core::locale::Lang::Ja => "（依頼元の設定により非表示）",
            pathfed_core::locale::Lang::En => "(withheld by the referring hospital)",
        }
        .to_string();
    }
    Ok(render::preview_html(&content))
}

/// Signs the case out: the first report version, returned to the spoke.
pub async fn sign_out(
    consult: &Consult,
    user: &Principal,
    case: &Case,
) -> ConsultResult<ReportVersion> {
    check_sign_out(user, case)?;
    let content = build_content(consult, case, user, 1, None, None).await?;
    let content_hash = content.hash();
    let pdf_sha256 = store_version(consult, case, &content, &content_hash).await?;
    publish(
        consult,
        case,
        user,
        &content,
        &content_hash,
        &pdf_sha256,
        None,
    )
    .await?;
    version(consult, &case.id, 1).await
}

/// A correction after sign-out.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendForm {
    /// The corrected final code.
    pub code: String,
    /// The corrected findings.
    #[serde(default)]
    pub findings: String,
    /// Why (required; printed on the new version).
    pub reason: String,
    /// A current code from the signer's authenticator app, when their hospital asks for one to
    /// sign out (an amendment is signed like a sign-out); a code given in this session within
    /// `auth.fresh_second_factor_minutes` also counts.
    #[serde(default)]
    pub second_factor_code: Option<String>,
}

/// Issues the next report version with a corrected final diagnosis.
pub async fn amend(
    consult: &Consult,
    user: &Principal,
    case: &Case,
    form: &AmendForm,
) -> ConsultResult<ReportVersion> {
    require_status(case, &[Status::SignedOut], "amend the report")?;
    require_reader(user, case, "amend the report")?;
    consult.taxonomy_of(case)?.require_label(&form.code)?;
    let reason = check_text("reason", &form.reason, true)?;
    let findings = check_text("findings", &form.findings, false)?;
    let previous = version(consult, &case.id, case.report_version).await?;
    let mut amended = case.clone();
    amended.final_code = Some(form.code.clone());
    amended.final_findings = Some(findings.clone());
    amended.final_by = Some(user.id.clone());
    let next = case.report_version + 1;
    let content = build_content(
        consult,
        &amended,
        user,
        next,
        Some(previous.content_hash),
        Some(reason),
    )
    .await?;
    let content_hash = content.hash();
    let pdf_sha256 = store_version(consult, case, &content, &content_hash).await?;
    publish(
        consult,
        case,
        user,
        &content,
        &content_hash,
        &pdf_sha256,
        Some((&form.code, &findings)),
    )
    .await?;
    version(consult, &case.id, next).await
}

/// The rows as report versions with their signers' names, looked up once for all of them. A
/// version whose signer is unknown is left out, as a join with `users` would leave it out.
async fn versions_from_rows(
    consult: &Consult,
    rows: &[sqlx::any::AnyRow],
) -> ConsultResult<Vec<ReportVersion>> {
    let signers: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("signed_by"))
        .collect::<Result<_, _>>()?;
    let names = accounts::user_names(&consult.platform.db, &signers).await?;
    let mut listed = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(signed_by) = names.get(&row.try_get::<String, _>("signed_by")?) else {
            continue;
        };
        listed.push(ReportVersion {
            case_id: row.try_get("case_id")?,
            version: row.try_get("version")?,
            content_hash: row.try_get("content_hash")?,
            pdf_sha256: row.try_get("pdf_sha256")?,
            signed_by: signed_by.clone(),
            signed_at: row.try_get("signed_at")?,
            amendment_reason: row.try_get("amendment_reason")?,
        });
    }
    Ok(listed)
}

const VERSION_QUERY: &str = "SELECT r.case_id, r.version, r.content_hash, r.pdf_sha256, \
     r.signed_by, r.signed_at, r.amendment_reason FROM case_reports r";

/// Every version of a case's report, oldest first.
pub async fn versions(consult: &Consult, case_id: &str) -> ConsultResult<Vec<ReportVersion>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{VERSION_QUERY} WHERE r.case_id = $1 ORDER BY r.version"
    )))
    .bind(case_id)
    .fetch_all(consult.platform.db.pool())
    .await?;
    versions_from_rows(consult, &rows).await
}

/// One version.
pub async fn version(
    consult: &Consult,
    case_id: &str,
    version: i64,
) -> ConsultResult<ReportVersion> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{VERSION_QUERY} WHERE r.case_id = $1 AND r.version = $2"
    )))
    .bind(case_id)
    .bind(version)
    .fetch_optional(consult.platform.db.pool())
    .await?;
    versions_from_rows(consult, row.as_slice())
        .await?
        .pop()
        .ok_or(ConsultError::NotFound("report"))
}

/// The stored file of a version: `report.pdf`, `report.html` or `report.json`.
pub async fn file(
    consult: &Consult,
    case: &Case,
    version: i64,
    name: &str,
) -> ConsultResult<Vec<u8>> {
    Ok(get_bytes(
        &consult.platform.store,
        &format!("{}/{name}", report_prefix(case, version)),
    )
    .await?)
}

/// Notes that the spoke has opened the latest report (clears its "new report" flag).
pub async fn mark_seen(consult: &Consult, case: &Case, version: i64) -> ConsultResult<()> {
    sqlx::query(
        "UPDATE cases SET report_seen_version = $1 WHERE id = $2 AND report_seen_version < $1",
    )
    .bind(version)
    .bind(&case.id)
    .execute(consult.platform.db.pool())
    .await?;
    Ok(())
}

/// What a PDF report says about itself (from its keywords), for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfClaim {
    /// Case id.
    pub case_id: String,
    /// Version.
    pub version: i64,
    /// Content hash printed on it.
    pub content_hash: String,
}

/// Largest file `pathfed case report --verify` reads.
pub const MAX_REPORT_BYTES: usize = 64 << 20;

/// Finds the report marker in a PDF's bytes; `None` if it is not a pathfed report.
///
/// The keywords are a literal string of the document information (`(pathfed-report case=…)`)
/// in every format so far; PDF/A reports (format 2) repeat them in their XMP metadata
/// (`<pdf:Keywords>pathfed-report case=…</pdf:Keywords>`), so either closing mark ends them.
pub fn pdf_claim(pdf: &[u8]) -> Option<PdfClaim> {
    let marker = format!("{} case=", render::PDF_MARKER);
    let marker = marker.as_bytes();
    let start = pdf.windows(marker.len()).position(|w| w == marker)?;
    let tail = &pdf[start..pdf.len().min(start + 300)];
    let end = tail.iter().position(|&b| b == b')' || b == b'<')?;
    let text = std::str::from_utf8(&tail[..end]).ok()?;
    let mut case_id = None;
    let mut version = None;
    let mut content_hash = None;
    for part in text.split_whitespace() {
        if let Some(v) = part.strip_prefix("case=") {
            case_id = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("version=") {
            version = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("content-sha256=") {
            content_hash = Some(v.to_string());
        }
    }
    Some(PdfClaim {
        case_id: case_id?,
        version: version?,
        content_hash: content_hash?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn claims_are_read_from_old_and_new_reports() {
        let keywords = format!("pathfed-report case=c-1 version=2 content-sha256={HASH}");
        let want = PdfClaim {
            case_id: "c-1".into(),
            version: 2,
            content_hash: HASH.into(),
        };
        // Format 1: the document information only.
        let old = format!("%PDF-1.7\n5 0 obj\n<< /Keywords ({keywords}) >>\nendobj\n");
        assert_eq!(pdf_claim(old.as_bytes()), Some(want.clone()));
        // Format 2: XMP metadata may come first.
        let new = format!(
            "%PDF-1.7\n<pdf:Keywords>{keywords}</pdf:Keywords>\n<< /Keywords ({keywords}) >>"
        );
        assert_eq!(pdf_claim(new.as_bytes()), Some(want));
        // The word alone, or a claim without its hash, is not a report.
        assert_eq!(pdf_claim(b"%PDF-1.7 (pathfed-report) stream"), None);
        assert_eq!(pdf_claim(b"(pathfed-report case=c-1 version=2)"), None);
    }
}
