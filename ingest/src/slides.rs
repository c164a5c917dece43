//! Slide rows: what ingest registers and deletes. Ingest owns the `slides` table; its reads
//! live in `pathfed_core::contracts::slides` (so crates that must not link ingest read slides
//! too) and are re-exported here. Every lookup by a user is scoped to a hospital, so a query
//! can never return another hospital's slide.

use pathfed_core::Db;
use pathfed_core::error::{CoreError, CoreResult};

pub use pathfed_core::contracts::slides::{
    Slide, count, find_by_digest, get, get_for_hospital, list_for_hospital,
};

/// The object-key folder of a slide.
pub fn slide_prefix(hospital_id: &str, slide_id: &str) -> String {
    format!("clinical/{hospital_id}/{slide_id}")
}

/// Key of a slide's thumbnail.
pub fn thumbnail_key(hospital_id: &str, slide_id: &str) -> String {
    format!("{}/thumbnail.jpg", slide_prefix(hospital_id, slide_id))
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
