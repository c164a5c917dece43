//! The tus 1.0 resumable-upload protocol (core, creation, checksum with sha256 or sha1, termination,
//! expiration) under `/api/v1/uploads`, so any tus client can upload.
//!
//! State lives in two places that survive a restart: the `uploads` row (who, what, how long,
//! which digest) and the staging file, whose length *is* the upload offset. Uploads belong to
//! the user who created them; anyone else gets 404 as if the upload did not exist.
//!
//! Replicas may share the staging folder: a request that writes to an upload holds a lock on
//! its staging file (`StagedFile`) as well as the in-process gate, so a second request for the
//! same upload, on this replica or another, answers 423 as it always did within one process.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use pathfed_core::Platform;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::db::{new_id, now};
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, head, post};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::names::check_filename;
use crate::register::complete;
pub use crate::upload::UploadRow;
use crate::{Ingest, keyed_lock};

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// Extensions supported.
pub const TUS_EXTENSIONS: &str = "creation,checksum,termination,expiration";
/// Header naming the slide an upload became.
pub const SLIDE_ID_HEADER: &str = "pathfed-slide-id";
/// Status for a chunk whose checksum does not match (tus checksum extension).
pub const CHECKSUM_MISMATCH: u16 = 460;

/// The routes of the upload service.
pub fn router<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Ingest: FromRef<S>,
    Platform: FromRef<S>,
{
    Routes::new()
        .route("/api/v1/uploads", post(create).options(capabilities))
        .route(
            "/api/v1/uploads/{id}",
            head(status)
                .patch(append)
                .delete(terminate)
                .options(upload_capabilities),
        )
        .wrap(|routes| routes.layer(axum::middleware::map_response(tus_headers)))
}

/// The upload routes' OpenAPI description, merged into `/openapi.json` by the server.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(capabilities, create, upload_capabilities, status, append, terminate),
    tags((name = "ingest", description = "Slide upload: the tus 1.0 resumable-upload protocol \
        (core, creation, checksum with sha256, termination, expiration)"))
)]
pub struct Api;

async fn tus_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl Ingest {
    pub(crate) fn staged_path(&self, id: &str) -> PathBuf {
        self.inner.staging.join(format!("{id}.part"))
    }

    pub(crate) fn work_dir(&self, id: &str) -> PathBuf {
        self.inner.staging.join(format!("{id}.work"))
    }

    /// Opens an upload's staging file and locks it against every other request, in this
    /// process or in another sharing the staging folder: 404 if the file is gone, 423 if
    /// another request holds it.
    pub(crate) async fn lock_staged(&self, id: &str) -> Result<StagedFile, ApiError> {
        let path = self.staged_path(id);
        tokio::task::spawn_blocking(move || StagedFile::lock(&path))
            .await
            .map_err(ApiError::internal)?
    }

    /// Removes an upload's row and staged bytes.
    pub(crate) async fn discard(&self, id: &str) {
        let _ = tokio::fs::remove_file(self.staged_path(id)).await;
        let _ = tokio::fs::remove_dir_all(self.work_dir(id)).await;
        self.inner
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Err(e) = sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(self.platform().db.pool())
            .await
        {
            tracing::error!(upload = id, error = %e, "cannot delete upload row");
        }
    }

    /// Discards expired uploads and staging files that belong to no upload.
    pub async fn sweep(&self) -> Result<usize, pathfed_core::CoreError> {
        // Whole seconds: an upload lives through its expiry second, so at least the configured
        // expiry and never less.
        let rows = sqlx::query("SELECT id FROM uploads WHERE expires_at < $1")
            .bind(now())
            .fetch_all(self.platform().db.pool())
            .await?;
        let mut removed = 0;
        for row in rows {
            let id: String = row.try_get("id")?;
            self.discard(&id).await;
            removed += 1;
        }
        // The folder is listed before the rows are read, and `create` writes an upload's row
        // before its staging file: a listed file without a row belongs to an upload that ended,
        // never to one that another replica (sharing the folder) is creating right now.
        let expiry_s = self.platform().config.ingest.upload_expiry_s;
        let names: Vec<String> = match std::fs::read_dir(&self.inner.staging) {
            Ok(entries) => entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().to_string())
                .collect(),
            Err(_) => Vec::new(),
        };
        let live: std::collections::HashSet<String> = sqlx::query("SELECT id FROM uploads")
            .fetch_all(self.platform().db.pool())
            .await?
            .iter()
            .filter_map(|row| row.try_get("id").ok())
            .collect();
        // Uploads finished or discarded by another replica leave their hashers here; dropping
        // one by mistake only means hashing the file from disk at the end.
        self.inner
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| live.contains(id));
        for name in names {
            let id = name.split('.').next().unwrap_or_default();
            // Hidden names are not ours (uploads are `{id}.part` and `{id}.work`) but a shared
            // file system's own, such as NFS's `.nfs…` files of removed files still open.
            if id.is_empty() {
                continue;
            }
            let path = self.inner.staging.join(&name);
            let ended = if id.starts_with(crate::stow::WORK_PREFIX) {
                // A STOW-RS request's work folder has no upload row: it goes once it is older
                // than an upload may live (what a crash left behind), never while its request
                // may still run.
                older_than(&path, Duration::from_secs(expiry_s))
            } else {
                !live.contains(id)
            };
            if ended {
                let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Runs [`Ingest::sweep`] every minute for the life of the process.
    pub fn spawn_janitor(&self) {
        let ingest = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match ingest.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "discarded expired uploads"),
                    Err(e) => tracing::warn!(error = %e, "upload sweep failed"),
                }
            }
        });
    }

    async fn load_upload(&self, user: &Principal, id: &str) -> Result<UploadRow, ApiError> {
        let row = sqlx::query(
            "SELECT id, hospital_id, user_id, length, filename, sha256, expires_at FROM uploads \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.platform().db.pool())
        .await
        .map_err(ApiError::internal)?;
        let Some(row) = row else {
            return Err(ApiError::not_found("upload"));
        };
        let upload = UploadRow {
            id: row.try_get("id").map_err(ApiError::internal)?,
            hospital_id: row.try_get("hospital_id").map_err(ApiError::internal)?,
            user_id: row.try_get("user_id").map_err(ApiError::internal)?,
            length: row
                .try_get::<i64, _>("length")
                .map_err(ApiError::internal)? as u64,
            filename: row.try_get("filename").map_err(ApiError::internal)?,
            sha256: row.try_get("sha256").map_err(ApiError::internal)?,
            expires_at: row.try_get("expires_at").map_err(ApiError::internal)?,
        };
        if upload.user_id != user.id {
            let _ = self
                .platform()
                .audit(AuditEvent::by(
                    user,
                    "upload.access",
                    &format!("upload:{id}"),
                    "denied",
                ))
                .await;
            return Err(ApiError::not_found("upload"));
        }
        if upload.expires_at < now() {
            self.discard(id).await;
            return Err(ApiError::new(
                StatusCode::GONE,
                "upload_expired",
                "this upload expired; start it again",
            ));
        }
        Ok(upload)
    }
}

/// Whether the file or folder at `path` was last modified more than `age` ago.
fn older_than(path: &std::path::Path, age: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|elapsed| elapsed > age)
}

fn check_version(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            "send Tus-Resumable: 1.0.0",
        )),
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::bad_request("bad_header", format!("{name} must be a number"))),
    }
}

/// `Upload-Metadata`: comma-separated `key base64(value)` pairs.
fn parse_metadata(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = item.split_once(' ').unwrap_or((item, ""));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| {
                ApiError::bad_request("bad_metadata", format!("Upload-Metadata {key}: not base64"))
            })?;
        let value = String::from_utf8(bytes).map_err(|_| {
            ApiError::bad_request("bad_metadata", format!("Upload-Metadata {key}: not UTF-8"))
        })?;
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn expires_header(at: i64) -> HeaderValue {
    let time = UNIX_EPOCH + Duration::from_secs(at.max(0) as u64);
    HeaderValue::from_str(&httpdate::fmt_http_date(time)).unwrap_or(HeaderValue::from_static(""))
}

/// tus capabilities
#[utoipa::path(
    options,
    path = "/api/v1/uploads",
    tag = "ingest",
    security(()),
    responses(
        (status = 204, description = "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm",
            headers(
                ("Tus-Version" = String, description = "1.0.0"),
                ("Tus-Extension" = String, description = "creation,checksum,termination,expiration"),
                ("Tus-Max-Size" = u64, description = "largest upload accepted, in bytes"),
                ("Tus-Checksum-Algorithm" = String, description = "sha256,sha1"),
            )),
    )
)]
async fn capabilities(State(ingest): State<Ingest>) -> Response {
    let max = ingest.platform().config.ingest.max_upload_bytes;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static("sha256,sha1"),
    );
    headers.insert("tus-max-size", HeaderValue::from(max));
    response
}

/// tus capabilities
#[utoipa::path(
    options,
    path = "/api/v1/uploads/{id}",
    tag = "ingest",
    security(()),
    params(("id" = String, Path, description = "upload id")),
    responses((status = 204, description = "capabilities")),
)]
async fn upload_capabilities(state: State<Ingest>) -> Response {
    capabilities(state).await
}

/// tus creation: Upload-Length and Upload-Metadata (filename, sha256)
///
/// Needs `Tus-Resumable: 1.0.0`. Upload-Metadata carries `filename` and `sha256` (the whole
/// file's SHA-256 as hex), each base64-encoded as tus prescribes.
#[utoipa::path(
    post,
    path = "/api/v1/uploads",
    tag = "ingest",
    responses(
        (status = 201, description = "Location of the upload",
            headers(
                ("Location" = String, description = "the upload's URL"),
                ("Upload-Offset" = u64, description = "0"),
                ("Upload-Expires" = String, description = "when the upload is discarded if unfinished"),
            )),
        (status = 400, description = "missing or bad Upload-Length or Upload-Metadata", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the role cannot upload slides", body = ErrorBody),
        (status = 412, description = "Tus-Resumable is not 1.0.0", body = ErrorBody),
        (status = 413, description = "larger than the configured limit (`upload_too_large`), or more than the hospital's upload quota has left (`quota_exceeded`)", body = ErrorBody),
        (status = 500, description = "server-side failure", body = ErrorBody),
    )
)]
async fn create(
    State(ingest): State<Ingest>,
    Authenticated(user): Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    if !crate::can_upload(user.role) {
        let _ = ingest
            .platform()
            .audit(AuditEvent::by(&user, "upload.create", "uploads", "denied"))
            .await;
        return Err(ApiError::forbidden("your role cannot upload slides"));
    }
    let config = &ingest.platform().config.ingest;
    let length = header_u64(&headers, "upload-length")?.ok_or_else(|| {
        ApiError::bad_request(
            "length_required",
            "send Upload-Length (deferred length is not supported)",
        )
    })?;
    if length > config.max_upload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload_too_large",
            format!(
                "the file has {length} bytes; the limit is {} bytes",
                config.max_upload_bytes
            ),
        ));
    }
    if length == 0 {
        return Err(ApiError::bad_request("empty_upload", "the file is empty"));
    }
    // Before any byte is sent: the client learns now, not after hours of uploading.
    if let Err(e) =
        pathfed_core::quota::check(&ingest.platform().db, &user.hospital.id, length).await
    {
        if matches!(e, pathfed_core::CoreError::QuotaExceeded { .. }) {
            let _ = ingest
                .platform()
                .audit(
                    AuditEvent::by(&user, "upload.create", "uploads", "refused")
                        .detail(e.to_string()),
                )
                .await;
        }
        return Err(e.into());
    }
    let raw = headers
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let metadata = parse_metadata(raw)?;
    let get = |key: &str| {
        metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let filename = get("filename")
        .ok_or_else(|| ApiError::bad_request("bad_metadata", "Upload-Metadata needs filename"))?;
    check_filename(&filename)?;
    let sha256 = get("sha256")
        .map(|s| s.to_ascii_lowercase())
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_metadata",
                "Upload-Metadata needs sha256: the whole file's SHA-256 as 64 hex digits",
            )
        })?;
    let id = new_id().replace('-', "");
    let expires_at = now() + config.upload_expiry_s as i64;
    // The row first, then the file: a sweep on any replica removes only staging files it listed
    // before reading the rows, so it never takes the file of an upload being created.
    sqlx::query(
        "INSERT INTO uploads (id, hospital_id, user_id, length, filename, sha256, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&user.hospital.id)
    .bind(&user.id)
    .bind(length as i64)
    .bind(&filename)
    .bind(&sha256)
    .bind(now())
    .bind(expires_at)
    .execute(ingest.platform().db.pool())
    .await
    .map_err(ApiError::internal)?;
    let staged = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(ingest.staged_path(&id))
        .await;
    if let Err(e) = staged {
        ingest.discard(&id).await;
        return Err(ApiError::internal(e));
    }
    tracing::info!(upload = %id, user = %user.username, length, "upload created");
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/v1/uploads/{id}")).map_err(ApiError::internal)?,
    );
    h.insert("upload-expires", expires_header(expires_at));
    h.insert("upload-offset", HeaderValue::from(0u64));
    Ok(response)
}

async fn staged_len(ingest: &Ingest, id: &str) -> Result<u64, ApiError> {
    match tokio::fs::metadata(ingest.staged_path(id)).await {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found("upload")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// tus offset of an upload
#[utoipa::path(
    head,
    path = "/api/v1/uploads/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "upload id")),
    responses(
        (status = 200, description = "Upload-Offset, Upload-Length, Upload-Expires",
            headers(
                ("Upload-Offset" = u64, description = "bytes received so far"),
                ("Upload-Length" = u64, description = "the declared length"),
                ("Upload-Expires" = String, description = "when the upload is discarded if unfinished"),
            )),
        (status = 401, description = "not signed in (no body: HEAD)"),
        (status = 404, description = "unknown, or another user's (no body: HEAD)"),
        (status = 410, description = "expired (no body: HEAD)"),
        (status = 412, description = "Tus-Resumable is not 1.0.0 (no body: HEAD)"),
    )
)]
async fn status(
    State(ingest): State<Ingest>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let upload = ingest.load_upload(&user, &id).await?;
    let offset = staged_len(&ingest, &id).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(offset));
    h.insert("upload-length", HeaderValue::from(upload.length));
    h.insert("upload-expires", expires_header(upload.expires_at));
    Ok(response)
}

/// tus termination
#[utoipa::path(
    delete,
    path = "/api/v1/uploads/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "upload id")),
    responses(
        (status = 204, description = "discarded"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "unknown, or another user's", body = ErrorBody),
        (status = 410, description = "expired", body = ErrorBody),
        (status = 412, description = "Tus-Resumable is not 1.0.0", body = ErrorBody),
        (status = 423, description = "another request is writing to this upload", body = ErrorBody),
    )
)]
async fn terminate(
    State(ingest): State<Ingest>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    ingest.load_upload(&user, &id).await?;
    let gate = keyed_lock(&ingest.inner.upload_locks, &id);
    let _busy = gate.try_lock().map_err(|_| busy())?;
    // Not while another replica writes to it; an upload without a staging file (its creation
    // failed half-way) is still discarded.
    let _staged = match ingest.lock_staged(&id).await {
        Ok(staged) => Some(staged),
        Err(e) if e.status == StatusCode::NOT_FOUND => None,
        Err(e) => return Err(e),
    };
    ingest.discard(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::LOCKED,
        "upload_busy",
        "another request is writing to this upload",
    )
}

/// A chunk's `Upload-Checksum`: the algorithm and the digest it names.
struct ChunkChecksum {
    algorithm: ChecksumAlgorithm,
    expected: Vec<u8>,
}

/// The tus checksum algorithms taken: sha256, and sha1, which the common Python client sends.
#[derive(Clone, Copy)]
enum ChecksumAlgorithm {
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA-1",
            Self::Sha256 => "SHA-256",
        }
    }

    fn hasher(self) -> ChunkHasher {
        match self {
            Self::Sha1 => ChunkHasher::Sha1(sha1::Sha1::new()),
            Self::Sha256 => ChunkHasher::Sha256(Sha256::new()),
        }
    }
}

/// Hashes one chunk as its `Upload-Checksum` asks.
enum ChunkHasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl ChunkHasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
        }
    }

    fn matches(self, expected: &[u8]) -> bool {
        match self {
            Self::Sha1(h) => h.finalize().as_slice() == expected,
            Self::Sha256(h) => h.finalize().as_slice() == expected,
        }
    }
}

/// `Upload-Checksum: sha256 <base64>` or `sha1 <base64>`.
fn parse_checksum(headers: &HeaderMap) -> Result<Option<ChunkChecksum>, ApiError> {
    let Some(raw) = headers.get("upload-checksum").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let (name, value) = raw.trim().split_once(' ').unwrap_or((raw, ""));
    let Some(algorithm) = ChecksumAlgorithm::parse(name) else {
        return Err(ApiError::bad_request(
            "checksum_algorithm",
            format!("checksum algorithm {name:?} is not supported; use sha256 or sha1"),
        ));
    };
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .filter(|d| d.len() == algorithm.digest_len())
        .map(|expected| {
            Some(ChunkChecksum {
                algorithm,
                expected,
            })
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_checksum",
                format!("Upload-Checksum value is not a base64 {}", algorithm.name()),
            )
        })
}

/// tus chunk at Upload-Offset (optional Upload-Checksum: sha256 or sha1); the last chunk registers the slide and answers Pathfed-Slide-Id
///
/// The body is `application/offset+octet-stream`. A chunk whose checksum fails (460) or that
/// overruns the declared length is discarded whole. While the first 64 KiB arrive, a DICOM
/// file whose transfer syntax the reader does not decode is refused at once (422), its upload
/// discarded. The last chunk runs registration (digest,
/// unzip, validation, storage): a refused file (4xx) is discarded, a server-side failure (5xx)
/// keeps the bytes so the client can repeat the last request.
#[utoipa::path(
    patch,
    path = "/api/v1/uploads/{id}",
    tag = "ingest",
    params(("id" = String, Path, description = "upload id")),
    request_body(content_type = "application/offset+octet-stream",
        description = "the bytes from Upload-Offset on"),
    responses(
        (status = 204, description = "accepted; Upload-Offset",
            headers(
                ("Upload-Offset" = u64, description = "bytes received so far"),
                ("Pathfed-Slide-Id" = String, description = "the registered slide, after the last chunk"),
            )),
        (status = 400, description = "missing or bad Upload-Offset or Upload-Checksum", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "unknown, or another user's", body = ErrorBody),
        (status = 409, description = "Upload-Offset is not the server's offset", body = ErrorBody),
        (status = 410, description = "expired", body = ErrorBody),
        (status = 412, description = "Tus-Resumable is not 1.0.0", body = ErrorBody),
        (status = 413, description = "more bytes than declared (`past_length`), or the finished upload no longer fits the hospital's upload quota (`quota_exceeded`; the upload is discarded)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/offset+octet-stream", body = ErrorBody),
        (status = 422, description = "the finished file is not a valid slide (or zip of one); or, as soon as its first bytes arrive, a DICOM file whose transfer syntax the reader does not decode (`unsupported_transfer_syntax`, the message names it) or whose file meta group cannot be read (`invalid_dicom`): the upload is discarded", body = ErrorBody),
        (status = 423, description = "another request is writing to this upload", body = ErrorBody),
        (status = 460, description = "the chunk's Upload-Checksum does not match", body = ErrorBody),
        (status = 500, description = "server-side failure; the bytes are kept", body = ErrorBody),
    )
)]
async fn append(
    State(ingest): State<Ingest>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_version(&headers)?;
    let upload = ingest.load_upload(&user, &id).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/offset+octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "send Content-Type: application/offset+octet-stream",
        ));
    }
    let offset = header_u64(&headers, "upload-offset")?
        .ok_or_else(|| ApiError::bad_request("offset_required", "send Upload-Offset"))?;
    let checksum = parse_checksum(&headers)?;
    let gate = keyed_lock(&ingest.inner.upload_locks, &id);
    let _busy = gate.try_lock().map_err(|_| busy())?;
    // Held until the answer, registration included, so no replica sharing the staging folder
    // appends to, truncates or registers this upload meanwhile.
    let staged = ingest.lock_staged(&id).await?;
    // Read under the lock: another replica may have appended since this one last wrote.
    let current = staged.len().await?;
    if offset != current {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            format!("Upload-Offset is {offset} but the server has {current} bytes"),
        ));
    }
    let new_offset = write_chunk(&ingest, &upload, &staged, current, checksum, body).await?;
    // While the first bytes arrive: a DICOM file the reader cannot decode (its transfer syntax
    // is in the file meta group) is refused now, not after the rest of it has come.
    // A failure on our side to read the head is logged (`ApiError::internal`) and not the
    // client's: the chunk stands, and completion judges the whole file anyway.
    if current < HEAD_LEN
        && let Err(error) = judge_staged(&ingest, &upload, new_offset).await
        && error.status.is_client_error()
    {
        let _ = ingest
            .platform()
            .audit(
                AuditEvent::by(&user, "slide.upload", &format!("upload:{id}"), "refused")
                    .detail(format!("{}: {}", upload.filename, error.message)),
            )
            .await;
        ingest.discard(&id).await;
        return Err(error);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if new_offset == upload.length {
        let digest = {
            let mut digests = ingest
                .inner
                .digests
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match digests.remove(&id) {
                Some((hashed, hasher)) if hashed == upload.length => {
                    Some(hex::encode(hasher.finalize()))
                }
                _ => None,
            }
        };
        match complete(&ingest, &upload, &user, digest).await {
            Ok(slide) => {
                ingest.discard(&id).await;
                response.headers_mut().insert(
                    SLIDE_ID_HEADER,
                    HeaderValue::from_str(&slide.id).map_err(ApiError::internal)?,
                );
            }
            Err(error) => {
                let _ = ingest
                    .platform()
                    .audit(
                        AuditEvent::by(&user, "slide.upload", &format!("upload:{id}"), "failed")
                            .detail(format!("{}: {}", upload.filename, error.message)),
                    )
                    .await;
                // A refused file is gone for good; a server-side failure keeps the bytes so
                // the client can repeat the final request.
                if error.status.is_client_error() {
                    ingest.discard(&id).await;
                }
                return Err(error);
            }
        }
    }
    response
        .headers_mut()
        .insert("upload-offset", HeaderValue::from(new_offset));
    Ok(response)
}

/// How much of an upload's beginning is judged as it arrives ([`judge_staged`]).
const HEAD_LEN: u64 = crate::stow::HEAD_BYTES as u64;

/// Judges the first bytes of a staged upload that is `staged_len` bytes long so far: refused
/// (422, see `stow::judge_head`) when they are a DICOM file meta group naming a transfer syntax
/// the reader does not decode, or one that cannot be read; accepted when the file is not DICOM,
/// is readable, or its meta group has not all arrived yet. A readable lone instance is refused
/// at completion, which says to zip the series.
async fn judge_staged(
    ingest: &Ingest,
    upload: &UploadRow,
    staged_len: u64,
) -> Result<(), ApiError> {
    let path = ingest.staged_path(&upload.id);
    let limit = staged_len.min(HEAD_LEN);
    let head = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut head = Vec::new();
        std::fs::File::open(&path)?
            .take(limit)
            .read_to_end(&mut head)?;
        Ok(head)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if !pathfed_slide::dicom::is_dicom_magic(&head) {
        return Ok(());
    }
    crate::stow::judge_head(&head, staged_len == upload.length, &upload.filename)?;
    Ok(())
}

/// Appends the request body at `current`; returns the new offset. A chunk whose checksum fails,
/// or that overruns the declared length, is rolled back entirely.
///
/// The bytes go to disk on a writer thread while this task hashes them, so writing and hashing
/// overlap instead of adding up.
async fn write_chunk(
    ingest: &Ingest,
    upload: &UploadRow,
    staged: &StagedFile,
    current: u64,
    checksum: Option<ChunkChecksum>,
    body: Body,
) -> Result<u64, ApiError> {
    let (frames, writer) = StagingWriter::start(staged.handle()?);
    let mut whole = {
        let mut digests = ingest
            .inner
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match digests.remove(&upload.id) {
            // Only if this process hashed every byte staged so far: when another replica
            // appended meanwhile, `current` (read under the lock) is past what was hashed here.
            Some((hashed, hasher)) if hashed == current => Some(hasher),
            // First chunk, the server restarted, or another replica took the earlier chunks:
            // start afresh only from byte 0, else hash the file from disk at the end.
            _ if current == 0 => Some(Sha256::new()),
            _ => None,
        }
    };
    let mut chunk_hash = checksum.as_ref().map(|c| c.algorithm.hasher());
    let remaining = upload.length - current;
    let mut written: u64 = 0;
    let mut stream = body.into_data_stream();
    let mut failure: Option<ApiError> = None;
    let mut interrupted = false;
    while let Some(frame) = stream.next().await {
        let data = match frame {
            Ok(data) => data,
            Err(e) => {
                tracing::info!(upload = %upload.id, error = %e, "upload request interrupted");
                interrupted = true;
                break;
            }
        };
        if written + data.len() as u64 > remaining {
            failure = Some(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "past_length",
                format!(
                    "the upload was declared as {} bytes; more arrived",
                    upload.length
                ),
            ));
            break;
        }
        written += data.len() as u64;
        if frames.send(data.clone()).await.is_err() {
            // The writer stopped on an error; joining it below reports which.
            break;
        }
        if let Some(h) = whole.as_mut() {
            h.update(&data);
        }
        if let Some(h) = chunk_hash.as_mut() {
            h.update(&data);
        }
    }
    drop(frames);
    if let Err(e) = writer.finish().await
        && failure.is_none()
    {
        failure = Some(ApiError::internal(e));
    }
    if failure.is_none()
        && let (Some(checksum), Some(h)) = (&checksum, chunk_hash)
        && (interrupted || !h.matches(&checksum.expected))
    {
        failure = Some(ApiError::new(
            StatusCode::from_u16(CHECKSUM_MISMATCH).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum_mismatch",
            format!(
                "the chunk's {} does not match Upload-Checksum; send it again",
                checksum.algorithm.name()
            ),
        ));
    }
    if let Some(error) = failure {
        staged.truncate(current).await?;
        return Err(error);
    }
    let new_offset = current + written;
    if let Some(hasher) = whole {
        ingest
            .inner
            .digests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(upload.id.clone(), (new_offset, hasher));
    }
    Ok(new_offset)
}

/// An upload's staging file, open for appending and locked until dropped.
///
/// The lock is `File::try_lock` (`flock`, which NFS clients carry to the server as a
/// whole-file lock), so it binds every process sharing the staging folder; it goes with the
/// process, so a replica that dies mid-request leaves the upload free for the others.
pub(crate) struct StagedFile {
    file: std::fs::File,
}

impl StagedFile {
    /// Opens and locks `path` (blocking).
    fn lock(path: &std::path::Path) -> Result<Self, ApiError> {
        let file = match std::fs::OpenOptions::new().append(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ApiError::not_found("upload"));
            }
            Err(e) => return Err(ApiError::internal(e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(busy()),
            // A file system without locks still serves one server, which the in-process gate
            // already serialises; only replicas sharing it would be unguarded.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "no file locks in the staging folder: do not share it between replicas"
                );
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(ApiError::internal(e)),
        }
        // The request that held the lock may have finished the upload and removed the file
        // after this one opened it: a lock on a removed file guards nothing.
        let held = file.metadata().map_err(ApiError::internal)?;
        match std::fs::metadata(path) {
            Ok(named) if same_file(&named, &held) => Ok(Self { file }),
            Ok(_) => Err(ApiError::not_found("upload")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ApiError::not_found("upload"))
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// Bytes staged: the upload's offset.
    async fn len(&self) -> Result<u64, ApiError> {
        let file = self.handle()?;
        tokio::task::spawn_blocking(move || file.metadata().map(|meta| meta.len()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Another handle on the same open file, and so under the same lock (which lasts until
    /// every handle is closed).
    fn handle(&self) -> Result<std::fs::File, ApiError> {
        self.file.try_clone().map_err(ApiError::internal)
    }

    /// Cuts the file back to `len` bytes, durably.
    async fn truncate(&self, len: u64) -> Result<(), ApiError> {
        let file = self.handle()?;
        tokio::task::spawn_blocking(move || {
            file.set_len(len)?;
            file.sync_data()
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Request-body frames queued for the writer thread; enough to ride out a slow disk moment.
const QUEUED_FRAMES: usize = 256;

/// A thread appending one chunk's frames to the staging file, then syncing it.
struct StagingWriter {
    thread: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl StagingWriter {
    fn start(file: std::fs::File) -> (tokio::sync::mpsc::Sender<bytes::Bytes>, Self) {
        let (frames, mut queue) = tokio::sync::mpsc::channel::<bytes::Bytes>(QUEUED_FRAMES);
        let thread = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut out = &file;
            while let Some(frame) = queue.blocking_recv() {
                out.write_all(&frame)?;
            }
            // Acknowledged bytes must survive a crash: the offset we answer is a promise.
            file.sync_data()
        });
        (frames, Self { thread })
    }

    /// Waits until every queued frame is written and synced.
    async fn finish(self) -> std::io::Result<()> {
        self.thread.await.map_err(std::io::Error::other)?
    }
}
