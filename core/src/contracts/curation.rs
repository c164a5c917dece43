//! What the research tier reads of consultation's tables (`cases`, `case_slides`,
//! `annotations`, all written by `pathfed_consult`) to curate signed-out slides: the case's
//! facts, the slide's labelled regions, and every signed-out slide (for `admin recurate`).

use sqlx::Row;

use crate::db::Db;
use crate::error::CoreResult;

/// The facts of a case that curation uses: its state and what the research slide carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFacts {
    /// The sending (spoke) hospital.
    pub spoke_id: String,
    /// The spoke's keyed hash of the patient id.
    pub patient_hash: String,
    /// Age band.
    pub age_band: String,
    /// Sex.
    pub sex: String,
    /// Organ.
    pub organ: String,
    /// Taxonomy id.
    pub taxonomy: String,
    /// Final diagnosis code, once settled.
    pub final_code: Option<String>,
    /// Case status as stored (`signed_out`, …).
    pub status: String,
    /// Latest issued report version.
    pub report_version: i64,
    /// When the case closed (Unix seconds).
    pub closed_at: Option<i64>,
}

/// A labelled annotation of a slide in a case.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRegion {
    /// Taxonomy code.
    pub label: String,
    /// `polygon`, `rectangle` or `point`.
    pub kind: String,
    /// Level-0 pixel geometry as consultation stores it (`null` if it does not parse).
    pub geometry: serde_json::Value,
}

/// A slide of a signed-out case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOutSlide {
    /// The case.
    pub case_id: String,
    /// The clinical slide.
    pub slide_id: String,
    /// The case's latest report version.
    pub report_version: i64,
    /// The sending (spoke) hospital.
    pub spoke_id: String,
    /// The spoke's keyed hash of the patient id.
    pub patient_hash: String,
}

/// The case's facts; `None` for an unknown id.
pub async fn case(db: &Db, case_id: &str) -> CoreResult<Option<CaseFacts>> {
    let row = sqlx::query(
        "SELECT spoke_id, patient_hash, age_band, sex, organ, taxonomy, final_code, status, \
         report_version, closed_at FROM cases WHERE id = $1",
    )
    .bind(case_id)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(CaseFacts {
        spoke_id: row.try_get("spoke_id")?,
        patient_hash: row.try_get("patient_hash")?,
        age_band: row.try_get("age_band")?,
        sex: row.try_get("sex")?,
        organ: row.try_get("organ")?,
        taxonomy: row.try_get("taxonomy")?,
        final_code: row.try_get("final_code")?,
        status: row.try_get("status")?,
        report_version: row.try_get("report_version")?,
        closed_at: row.try_get("closed_at")?,
    }))
}

/// The labelled shapes (not text notes) on `slide_id` in `case_id`, oldest first.
pub async fn labelled_regions(
    db: &Db,
    case_id: &str,
    slide_id: &str,
) -> CoreResult<Vec<LabelledRegion>> {
    let rows = sqlx::query(
        "SELECT kind, geometry, label_code FROM annotations WHERE case_id = $1 AND slide_id = $2 \
         AND label_code IS NOT NULL AND kind <> 'text' ORDER BY created_at, id",
    )
    .bind(case_id)
    .bind(slide_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let geometry: String = row.try_get("geometry")?;
            Ok(LabelledRegion {
                label: row.try_get("label_code")?,
                kind: row.try_get("kind")?,
                geometry: serde_json::from_str(&geometry).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

/// Every slide of every signed-out case, in the order the cases closed.
pub async fn signed_out_slides(db: &Db) -> CoreResult<Vec<SignedOutSlide>> {
    let rows = sqlx::query(
        "SELECT c.id AS case_id, c.report_version, c.spoke_id, c.patient_hash, cs.slide_id \
         FROM cases c JOIN case_slides cs ON cs.case_id = c.id \
         WHERE c.status = 'signed_out' ORDER BY c.closed_at, c.id, cs.position",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SignedOutSlide {
                case_id: row.try_get("case_id")?,
                slide_id: row.try_get("slide_id")?,
                report_version: row.try_get("report_version")?,
                spoke_id: row.try_get("spoke_id")?,
                patient_hash: row.try_get("patient_hash")?,
            })
        })
        .collect()
}
