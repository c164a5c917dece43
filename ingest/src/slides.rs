//! Slide rows: what ingest registers and the slide API reads. Every lookup is scoped to a
//! hospital, so a query can never return another hospital's slide.

use pathfed_core::Db;
use pathfed_core::cache::SlideFile;
use pathfed_core::error::{CoreError, CoreResult};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

/// A registered slide.
#[derive(Debug, Clone, Serialize)]
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
    /// Bytes uploaded.
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

const COLUMNS: &str = "s.id, s.hospital_id, u.username AS uploaded_by, s.filename, s.sha256, \
    s.size_bytes, s.main_file, s.files, s.format, s.vendor, s.width, s.height, s.levels, \
    s.mpp_x, s.mpp_y, s.objective_power, s.has_label, s.properties, s.created_at \
    FROM slides s JOIN users u ON u.id = s.uploaded_by";

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
        files: serde_json::from_str(&files)
            .map_err(|e| CoreError::Invalid(format!("stored file list: {e}")))?,
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

/// The object-key folder of a slide.
pub fn slide_prefix(hospital_id: &str, slide_id: &str) -> String {
    format!("clinical/{hospital_id}/{slide_id}")
}

/// Key of a slide's thumbnail.
pub fn thumbnail_key(hospital_id: &str, slide_id: &str) -> String {
    format!("{}/thumbnail.jpg", slide_prefix(hospital_id, slide_id))
}

/// A hospital's slides, newest first.
pub async fn list_for_hospital(db: &Db, hospital_id: &str) -> CoreResult<Vec<Slide>> {
    let sql = format!("SELECT {COLUMNS} WHERE s.hospital_id = $1 ORDER BY s.created_at DESC, s.id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hospital_id)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(from_row).collect()
}

/// The slide if it belongs to `hospital_id`; `None` for unknown ids and other hospitals alike.
pub async fn get_for_hospital(db: &Db, hospital_id: &str, id: &str) -> CoreResult<Option<Slide>> {
    let sql = format!("SELECT {COLUMNS} WHERE s.id = $1 AND s.hospital_id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(hospital_id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The slide with this id, whoever owns it (callers decide access, e.g. through a case).
pub async fn get_any(db: &Db, id: &str) -> CoreResult<Option<Slide>> {
    let sql = format!("SELECT {COLUMNS} WHERE s.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The hospital's slide with these bytes, if already registered.
pub async fn find_by_digest(db: &Db, hospital_id: &str, sha256: &str) -> CoreResult<Option<Slide>> {
    let sql = format!("SELECT {COLUMNS} WHERE s.hospital_id = $1 AND s.sha256 = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hospital_id)
        .bind(sha256)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Inserts a slide row (`uploaded_by` is the uploader's user id here).
pub async fn insert(db: &Db, slide: &Slide, uploader_id: &str) -> CoreResult<()> {
    let files = serde_json::to_string(&slide.files)
        .map_err(|e| CoreError::Invalid(format!("file list: {e}")))?;
    sqlx::query(
        "INSERT INTO slides (id, hospital_id, uploaded_by, filename, sha256, size_bytes, \
         main_file, files, format, vendor, width, height, levels, mpp_x, mpp_y, \
         objective_power, has_label, properties, created_at) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
    )
    .bind(&slide.id)
    .bind(&slide.hospital_id)
    .bind(uploader_id)
    .bind(&slide.filename)
    .bind(&slide.sha256)
    .bind(slide.size_bytes)
    .bind(&slide.main_file)
    .bind(files)
    .bind(&slide.format)
    .bind(&slide.vendor)
    .bind(slide.width)
    .bind(slide.height)
    .bind(slide.levels)
    .bind(slide.mpp_x)
    .bind(slide.mpp_y)
    .bind(slide.objective_power)
    .bind(i64::from(slide.has_label))
    .bind(&slide.properties)
    .bind(slide.created_at)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Deletes a slide row of a hospital; false when there was none.
pub async fn delete(db: &Db, hospital_id: &str, id: &str) -> CoreResult<bool> {
    let done = sqlx::query("DELETE FROM slides WHERE id = $1 AND hospital_id = $2")
        .bind(id)
        .bind(hospital_id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Number of slide rows in total (tests and metrics).
pub async fn count(db: &Db) -> CoreResult<i64> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM slides")
        .fetch_one(db.pool())
        .await?
        .try_get("n")?)
}
