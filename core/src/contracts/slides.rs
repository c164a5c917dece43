//! Reads of the `slides` table, which ingest owns and writes (`pathfed_ingest::slides`
//! re-exports these). Consultation, the research tier, inference and the slide API read
//! slides through here.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::cache::SlideFile;
use crate::db::Db;
use crate::error::{CoreError, CoreResult};

/// A registered slide.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Slide {
    /// Id.
    pub id: String,
    /// Owning (submitting) hospital.
    pub hospital_id: String,
    /// Uploader's user name.
    pub uploaded_by: String,
    /// File name as uploaded (display only, never a path).
    pub filename: String,
    /// SHA-256 of the uploaded bytes.
    pub sha256: String,
    /// Bytes stored: the uploaded file, or the unpacked files of a zip upload.
    pub size_bytes: i64,
    /// The file the reader opens, relative to the slide's folder.
    #[serde(skip)]
    pub main_file: String,
    /// The slide's stored files.
    #[serde(skip)]
    pub files: Vec<SlideFile>,
    /// Format as detected (e.g. `aperio`, `generic-tiff`).
    pub format: String,
    /// Scanner vendor as reported.
    pub vendor: String,
    /// Level-0 width.
    pub width: i64,
    /// Level-0 height.
    pub height: i64,
    /// Pyramid levels.
    pub levels: i64,
    /// Micrometres per pixel, x.
    pub mpp_x: Option<f64>,
    /// Micrometres per pixel, y.
    pub mpp_y: Option<f64>,
    /// Scanner objective.
    pub objective_power: Option<f64>,
    /// Whether a label image exists.
    pub has_label: bool,
    /// Vendor properties (JSON object).
    #[serde(skip)]
    pub properties: String,
    /// Registration time.
    pub created_at: i64,
}

/// What a reader needs to materialise a slide: its stored files and the one it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlideFiles {
    /// The slide's stored files.
    pub files: Vec<SlideFile>,
    /// The file the reader opens, relative to the slide's folder.
    pub main_file: String,
}

// The uploader's name comes by a join, in the one query: `users` is core's too, and slide
// reads sit on the tile path.
const SELECT: &str = "SELECT s.id, s.hospital_id, u.username AS uploaded_by, s.filename, \
    s.sha256, s.size_bytes, s.main_file, s.files, s.format, s.vendor, s.width, s.height, \
    s.levels, s.mpp_x, s.mpp_y, s.objective_power, s.has_label, s.properties, s.created_at \
    FROM slides s JOIN users u ON u.id = s.uploaded_by";

fn parse_files(files: &str) -> CoreResult<Vec<SlideFile>> {
    serde_json::from_str(files).map_err(|e| CoreError::Invalid(format!("stored file list: {e}")))
}

fn from_row(row: &AnyRow) -> CoreResult<Slide> {
    let files: String = row.try_get("files")?;
    Ok(Slide {
        id: row.try_get("id")?,
        hospital_id: row.try_get("hospital_id")?,
        uploaded_by: row.try_get("uploaded_by")?,
        filename: row.try_get("filename")?,
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get("size_bytes")?,
        main_file: row.try_get("main_file")?,
        files: parse_files(&files)?,
        format: row.try_get("format")?,
        vendor: row.try_get("vendor")?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        levels: row.try_get("levels")?,
        mpp_x: row.try_get("mpp_x")?,
        mpp_y: row.try_get("mpp_y")?,
        objective_power: row.try_get("objective_power")?,
        has_label: row.try_get::<i64, _>("has_label")? != 0,
        properties: row.try_get("properties")?,
        created_at: row.try_get("created_at")?,
    })
}

/// A hospital's slides, newest first.
pub async fn list_for_hospital(db: &Db, hospital_id: &str) -> CoreResult<Vec<Slide>> {
    let sql = format!("{SELECT} WHERE s.hospital_id = $1 ORDER BY s.created_at DESC, s.id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hospital_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

/// The slide if it belongs to `hospital_id`; `None` for unknown ids and other hospitals alike.
pub async fn get_for_hospital(db: &Db, hospital_id: &str, id: &str) -> CoreResult<Option<Slide>> {
    let sql = format!("{SELECT} WHERE s.id = $1 AND s.hospital_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(hospital_id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The slide with this id, whoever owns it (callers decide access, e.g. through a case).
pub async fn get(db: &Db, id: &str) -> CoreResult<Option<Slide>> {
    let sql = format!("{SELECT} WHERE s.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The hospital's slide with these bytes, if already registered.
pub async fn find_by_digest(db: &Db, hospital_id: &str, sha256: &str) -> CoreResult<Option<Slide>> {
    let sql = format!("{SELECT} WHERE s.hospital_id = $1 AND s.sha256 = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hospital_id)
        .bind(sha256)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The stored files of a slide, whoever owns it (curation and inference materialise it
/// through the cache); `None` for an unknown id.
pub async fn files(db: &Db, id: &str) -> CoreResult<Option<SlideFiles>> {
    let row = sqlx::query("SELECT files, main_file FROM slides WHERE id = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(SlideFiles {
        files: parse_files(&row.try_get::<String, _>("files")?)?,
        main_file: row.try_get("main_file")?,
    }))
}

/// Whether the slide exists, read on `conn` so it can share the caller's transaction (a
/// result is listed only for a slide that still exists when it commits).
pub async fn exists_in(conn: &mut AnyConnection, id: &str) -> CoreResult<bool> {
    Ok(sqlx::query("SELECT 1 AS one FROM slides WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

/// Whether `hospital_id` owns the slide.
pub async fn belongs_to(db: &Db, hospital_id: &str, id: &str) -> CoreResult<bool> {
    Ok(
        sqlx::query("SELECT 1 AS one FROM slides WHERE id = $1 AND hospital_id = $2")
            .bind(id)
            .bind(hospital_id)
            .fetch_optional(db.pool())
            .await?
            .is_some(),
    )
}

/// Number of slide rows in total (tests and metrics).
pub async fn count(db: &Db) -> CoreResult<i64> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM slides")
        .fetch_one(db.pool())
        .await?
        .try_get("n")?)
}
