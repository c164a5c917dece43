//! An upload in progress ([`UploadRow`], a row of `uploads`): what the tus server (`tus`) keeps
//! between requests and what registration (`register`) completes, so neither file needs the
//! other for it. Re-exported from `tus`, the public path.

/// An upload in progress.
#[derive(Debug, Clone)]
pub struct UploadRow {
    /// Id (also the staging file's name).
    pub id: String,
    /// Owner's hospital.
    pub hospital_id: String,
    /// Owner.
    pub user_id: String,
    /// Declared total length.
    pub length: u64,
    /// Name as uploaded.
    pub filename: String,
    /// Declared whole-file SHA-256 (hex).
    pub sha256: String,
    /// Unix seconds after which the upload is discarded.
    pub expires_at: i64,
}
