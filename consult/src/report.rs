//! Sign-out and report versions.
//!
//! A report is built once from the case as it stands ([`ReportContent`]), hashed (SHA-256 of
//! its canonical JSON), rendered to HTML and PDF, and stored with the hash in the clinical
//! tier. Reports never change: an amendment after sign-out issues the next version, which
//! names the hash of the one it supersedes, and every earlier version stays retrievable.

use pathfed_core::accounts::{self, Principal};
use pathfed_core::contracts::slides;
use pathfed_core::db::now;
use pathfed_core::store::{delete_prefix, get_bytes, put_bytes};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::Consult;
use crate::cases::{self, Case, Status, check_text, require_status};
use crate::error::{ConsultError, ConsultResult};
use crate::reads::{self, ReadKind};
use crate::render;
pub use crate::report_content::{
    FinalDiagnosis, ReportContent, ReportRead, ReportSlide, ReportSlideRead,
};
use crate::taxonomy::Taxonomy;

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

fn label_name(taxonomy: &Taxonomy, code: &str) -> String {
    taxonomy
        .label(code)
        .map(|l| l.name.clone())
        .unwrap_or_else(|| code.to_string())
}

async fn username(consult: &Consult, id: &str) -> ConsultResult<String> {
    accounts::user_names(&consult.platform.db, &[id.to_string()])
        .await?
        .remove(id)
        .ok_or_else(|| ConsultError::Core(pathfed_core::CoreError::NotFound(format!("user {id}"))))
}

async fn report_slides(consult: &Consult, case: &Case) -> ConsultResult<Vec<ReportSlide>> {
    let mut listed = Vec::new();
    for id in cases::slide_ids(&consult.platform.db, &case.id).await? {
        let slide = slides::get(&consult.platform.db, &id)
            .await?
            .ok_or(ConsultError::NotFound("slide"))?;
        listed.push(ReportSlide {
            id,
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
    let decided_by = match &case.final_by {
        Some(id) => Some(username(consult, id).await?),
        None => None,
    };
    Ok(ReportContent {
        format: "pathfed-report/1",
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
        organ: case.organ.clone(),
        specimen: case.specimen.clone(),
        clinical_question: case.clinical_question.clone(),
        urgency: case.urgency.as_str().to_string(),
        submitted_at: case.submitted_at.unwrap_or(case.created_at),
        taxonomy: taxonomy.id.clone(),
        slides: report_slides(consult, case).await?,
        reads: reads
            .iter()
            .map(|read| ReportRead {
                kind_name: match read.kind {
                    ReadKind::Primary => "First".into(),
                    ReadKind::Second => "Second (double-check)".into(),
                },
                reader: read.reader.clone(),
                code: read.code.clone(),
                label: label_name(taxonomy, &read.code),
                findings: read.findings.clone(),
                slides: read
                    .slides
                    .iter()
                    .map(|s| ReportSlideRead {
                        slide_id: s.slide_id.clone(),
                        label: s.code.as_deref().map(|c| label_name(taxonomy, c)),
                        code: s.code.clone(),
                        findings: s.findings.clone(),
                    })
                    .collect(),
                entered_at: read.entered_at,
            })
            .collect(),
        concordant: case.concordant.unwrap_or(false),
        final_diagnosis: FinalDiagnosis {
            label: label_name(taxonomy, &final_code),
            code: final_code,
            findings: case.final_findings.clone().unwrap_or_default(),
            decided_by,
            note: case.final_note.clone().unwrap_or_default(),
        },
        signed_by: signer.username.clone(),
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
    let pdf = render::pdf(content, content_hash);
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

/// Signs the case out: the first report version, returned to the spoke.
pub async fn sign_out(
    consult: &Consult,
    user: &Principal,
    case: &Case,
) -> ConsultResult<ReportVersion> {
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
    require_reader(user, case, "sign the case out")?;
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
pub fn pdf_claim(pdf: &[u8]) -> Option<PdfClaim> {
    let marker = render::PDF_MARKER.as_bytes();
    let start = pdf.windows(marker.len()).position(|w| w == marker)?;
    let tail = &pdf[start..pdf.len().min(start + 300)];
    let end = tail.iter().position(|&b| b == b')')?;
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
