//! The slide API: list, metadata, thumbnail, label, Deep Zoom descriptor and tiles, delete.
//!
//! Deny by default: every handler starts from [`visible_slide`], which answers 404 for ids of
//! other hospitals (unless a case consulting the user's hub includes the slide) exactly as for
//! unknown ids, 403 for roles without clinical access, and
//! writes every refusal to the audit log. Tiles are immutable, so they carry strong ETags and
//! long private cache lifetimes, and recently served tiles are kept in memory.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use pathfed_core::Platform;
use pathfed_core::SlideLimits;
use pathfed_core::accounts::{Principal, Role};
use pathfed_core::audit::AuditEvent;
use pathfed_core::cache::CachedSlide;
use pathfed_core::config::{Config, TilesConfig};
use pathfed_core::hospital_settings;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, get};
use pathfed_core::store::{delete_prefix, get_bytes};
use pathfed_ingest::slides::{self, Slide, slide_prefix, thumbnail_key};
use pathfed_slide::SlideReader;
use pathfed_slide::deepzoom::{DeepZoom, DeepZoomOptions};
use serde::Serialize;

use super::AppState;

/// The slide routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/slides", get(list))
        .route("/api/v1/slides/{id}", get(metadata).delete(remove))
        .route("/api/v1/slides/{id}/thumbnail", get(thumbnail))
        .route("/api/v1/slides/{id}/label", get(label))
        .route("/api/v1/slides/{id}/slide.dzi", get(dzi))
        .route("/api/v1/slides/{id}/slide_files/{level}/{tile}", get(tile))
}

/// The slide routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, metadata, remove, thumbnail, label, dzi, tile),
    tags((name = "slides", description = "Clinical slides: metadata, images, Deep Zoom tiles, \
        deletion; the owning hospital's staff, and hub pathologists reading a case with the slide"))
)]
pub struct Api;

/// A slide ready for tiles: its files pinned in the cache, its reader and Deep Zoom view.
pub struct OpenedSlide {
    _files: Arc<CachedSlide>,
    pub(super) reader: Arc<dyn SlideReader>,
    pub(super) deepzoom: DeepZoom,
}

type TileKey = (String, usize, u64, u64);

/// Open slides and recently served tiles.
pub struct SlideService {
    open: Mutex<LruCache<String, Arc<OpenedSlide>>>,
    tiles: Mutex<(LruCache<TileKey, Bytes>, u64)>,
    tile_budget: u64,
    tile_sessions: Mutex<LruCache<(String, String), Instant>>,
    tiles_config: TilesConfig,
    limits: SlideLimits,
}

/// How long a viewing session lasts for the audit log: one `slide.tiles` entry per user,
/// slide and hour rather than one per tile.
const TILE_SESSION: Duration = Duration::from_secs(3600);

impl SlideService {
    /// Empty caches sized from the configuration.
    pub fn new(config: &Config) -> Self {
        let slots = NonZeroUsize::new(config.cache.open_slides).unwrap_or(NonZeroUsize::MIN);
        Self {
            open: Mutex::new(LruCache::new(slots)),
            tiles: Mutex::new((LruCache::unbounded(), 0)),
            tile_budget: config.cache.tile_bytes,
            tile_sessions: Mutex::new(LruCache::new(
                NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN),
            )),
            tiles_config: config.tiles.clone(),
            limits: config.slide.clone(),
        }
    }

    /// Drops every in-memory tile (benchmarks measure cold serving with it).
    pub fn clear_tiles(&self) {
        let mut tiles = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        tiles.0.clear();
        tiles.1 = 0;
    }

    pub(super) async fn opened(
        &self,
        platform: &Platform,
        slide: &Slide,
    ) -> Result<Arc<OpenedSlide>, ApiError> {
        if let Some(hit) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slide.id)
        {
            return Ok(hit.clone());
        }
        let files = platform
            .cache
            .get(&slide.id, &slide.files, &platform.store)
            .await?;
        let path = files.dir.join(&slide.main_file);
        let limits = self.limits.clone();
        let tiles_config = self.tiles_config.clone();
        let (reader, deepzoom) = tokio::task::spawn_blocking(move || {
            let reader: Arc<dyn SlideReader> = Arc::from(pathfed_slide::open(&path, &limits)?);
            let options = DeepZoomOptions::for_slide(reader.properties(), &tiles_config);
            let deepzoom = DeepZoom::new(reader.clone(), options)?;
            Ok::<_, pathfed_slide::SlideError>((reader, deepzoom))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
        let opened = Arc::new(OpenedSlide {
            _files: files,
            reader,
            deepzoom,
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(slide.id.clone(), opened.clone());
        Ok(opened)
    }

    fn forget(&self, slide_id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(slide_id);
    }

    fn cached_tile(&self, key: &TileKey) -> Option<Bytes> {
        self.tiles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(key)
            .cloned()
    }

    fn keep_tile(&self, key: TileKey, bytes: Bytes) {
        let mut guard = self.tiles.lock().unwrap_or_else(|p| p.into_inner());
        let (tiles, total) = &mut *guard;
        *total += bytes.len() as u64;
        if let Some(old) = tiles.put(key, bytes) {
            *total -= old.len() as u64;
        }
        while *total > self.tile_budget {
            match tiles.pop_lru() {
                Some((_, old)) => *total -= old.len() as u64,
                None => break,
            }
        }
    }

    /// True once per user, slide and [`TILE_SESSION`].
    pub(super) fn starts_tile_session(&self, user: &Principal, slide_id: &str) -> bool {
        let mut sessions = self.tile_sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = (user.id.clone(), slide_id.to_string());
        match sessions.get(&key) {
            Some(started) if started.elapsed() < TILE_SESSION => false,
            _ => {
                sessions.put(key, Instant::now());
                true
            }
        }
    }
}

/// What a handler needs to do with a slide.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// View it: the owning hospital, or a hub reading a case that includes it.
    Read,
    /// Its deletion: the owning hospital only.
    Own,
}

/// The slide, if this user may see it; otherwise the refusal, audited.
pub(super) async fn visible_slide(
    platform: &Platform,
    user: &Principal,
    id: &str,
    action: &str,
    need: Need,
) -> Result<Slide, ApiError> {
    let target = format!("slide:{id}");
    if !user.role.sees_clinical_data() {
        let _ = platform
            .audit(AuditEvent::by(user, action, &target, "denied").detail("role"))
            .await;
        return Err(ApiError::forbidden(
            "your role has no access to clinical slides",
        ));
    }
    if let Some(slide) = slides::get_for_hospital(&platform.db, &user.hospital.id, id).await? {
        return Ok(slide);
    }
    if need == Need::Read {
        let window = platform.config.consult.access_after_close_s;
        let granted =
            pathfed_consult::access::slide_readable_through_case(&platform.db, user, id, window)
                .await
                .map_err(ApiError::from)?;
        if granted && let Some(slide) = slides::get(&platform.db, id).await? {
            return Ok(slide);
        }
    }
    let _ = platform
        .audit(AuditEvent::by(user, action, &target, "denied").detail("not visible"))
        .await;
    Err(ApiError::not_found("slide"))
}

/// A slide as the API shows it: its row and where its images are.
#[derive(Serialize, utoipa::ToSchema)]
struct SlideBody {
    #[serde(flatten)]
    slide: Slide,
    /// The thumbnail (JPEG).
    thumbnail_url: String,
    /// The Deep Zoom descriptor.
    dzi_url: String,
    /// The label image (PNG), where the slide has one and the label endpoint would give it
    /// to this user (`has_label` says the same).
    label_url: Option<String>,
    /// Vendor properties under OpenSlide's names; in the answer for one slide only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    properties: Option<serde_json::Value>,
}

/// The slides of the user's hospital.
#[derive(Serialize, utoipa::ToSchema)]
struct SlideList {
    /// Newest first.
    slides: Vec<SlideBody>,
}

/// `label_shown`: whether the slide has a label this user may see ([`label_refusal`]), so
/// that `has_label` and `label_url` say what the label endpoint would answer them.
fn slide_json(slide: &Slide, label_shown: bool) -> SlideBody {
    let base = format!("/api/v1/slides/{}", slide.id);
    let mut slide = slide.clone();
    slide.has_label = label_shown;
    SlideBody {
        thumbnail_url: format!("{base}/thumbnail"),
        dzi_url: format!("{base}/slide.dzi"),
        label_url: label_shown.then(|| format!("{base}/label")),
        properties: None,
        slide,
    }
}

/// Why `user`, who may see `slide`, may not see its label, if so. The label is clinical data
/// of the case: the owning hospital's staff see it, and so do the hub pathologists reading a
/// case that holds the slide (to check the patient's identity) unless the owning hospital
/// turned `share_label_with_hub` off.
async fn label_refusal(
    platform: &Platform,
    user: &Principal,
    slide: &Slide,
) -> Result<Option<&'static str>, ApiError> {
    if slide.hospital_id == user.hospital.id {
        return Ok(None);
    }
    // Anyone else who sees the slide reads it through a case; said again here, so that a wider
    // slide rule never widens who sees labels.
    if user.role != Role::Pathologist {
        return Ok(Some(
            "labels are for the owning hospital and the pathologists reading its case",
        ));
    }
    let sharing = hospital_settings::hub_sharing(&platform.db, &slide.hospital_id).await?;
    Ok((!sharing.label)
        .then_some("the referring hospital does not share slide labels with the hub"))
}

/// Slides of the user's hospital, newest first
#[utoipa::path(
    get,
    path = "/api/v1/slides",
    tag = "slides",
    responses(
        (status = 200, description = "slides", body = SlideList),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    if !user.role.sees_clinical_data() {
        let _ = platform
            .audit(AuditEvent::by(&user, "slide.list", "slides", "denied").detail("role"))
            .await;
        return Err(ApiError::forbidden(
            "your role has no access to clinical slides",
        ));
    }
    let all = slides::list_for_hospital(&platform.db, &user.hospital.id).await?;
    // The hospital's own slides: their labels are its own.
    let slides = all.iter().map(|s| slide_json(s, s.has_label)).collect();
    Ok(axum::Json(SlideList { slides }).into_response())
}

/// Slide metadata and properties
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}",
    tag = "slides",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 200, description = "slide", body = SlideBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn metadata(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let slide = visible_slide(&platform, &user, &id, "slide.view", Need::Read).await?;
    let _ = platform
        .audit(AuditEvent::by(
            &user,
            "slide.view",
            &format!("slide:{id}"),
            "ok",
        ))
        .await;
    let label_shown = slide.has_label && label_refusal(&platform, &user, &slide).await?.is_none();
    let mut body = slide_json(&slide, label_shown);
    body.properties = Some(serde_json::from_str(&slide.properties).unwrap_or_default());
    Ok(axum::Json(body).into_response())
}

/// Delete a slide and its stored objects
#[utoipa::path(
    delete,
    path = "/api/v1/slides/{id}",
    tag = "slides",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "only submitters and admins of the owning hospital delete slides", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the slide belongs to a submitted case", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = visible_slide(platform, &user, &id, "slide.delete", Need::Own).await?;
    if !matches!(
        user.role,
        Role::Submitter | Role::Admin | Role::PlatformAdmin
    ) {
        let _ = platform
            .audit(
                AuditEvent::by(&user, "slide.delete", &format!("slide:{id}"), "denied")
                    .detail("role"),
            )
            .await;
        return Err(ApiError::forbidden(
            "only submitters and admins can delete slides",
        ));
    }
    let in_use = pathfed_consult::access::slide_in_submitted_case(&platform.db, &id)
        .await
        .map_err(ApiError::from)?;
    if in_use {
        let _ = platform
            .audit(
                AuditEvent::by(&user, "slide.delete", &format!("slide:{id}"), "refused")
                    .detail("part of a submitted case"),
            )
            .await;
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "slide_in_case",
            "this slide belongs to a submitted case; it is kept with the case's record",
        ));
    }
    pathfed_consult::access::forget_slide(&platform.db, &id)
        .await
        .map_err(ApiError::from)?;
    // Row first: once it is gone nobody can reach the objects, even if deleting them fails.
    slides::delete(&platform.db, &user.hospital.id, &id).await?;
    state.slides.forget(&id);
    if let Err(e) = pathfed_inference::job::forget_slide(platform, &id).await {
        tracing::error!(slide = %id, error = %e, "slide deleted but its AI runs or results remain");
    }
    platform.cache.remove(&id);
    if let Err(e) = delete_prefix(&platform.store, &slide_prefix(&slide.hospital_id, &id)).await {
        tracing::error!(slide = %id, error = %e, "slide row deleted but its objects remain");
    }
    let _ = platform
        .audit(
            AuditEvent::by(&user, "slide.delete", &format!("slide:{id}"), "ok")
                .detail(slide.filename.clone()),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Records a user's viewing of a slide through `service` (`iiif`, `dicomweb`) as `action`, once
/// per user, slide and hour as tile viewing is, each service apart from Deep Zoom's, so the log
/// tells which way the slide was seen.
pub(super) async fn audit_viewing(
    state: &AppState,
    user: &Principal,
    slide_id: &str,
    service: &str,
    action: &str,
) {
    if state
        .slides
        .starts_tile_session(user, &format!("{service}:{slide_id}"))
    {
        let _ = state
            .platform
            .audit(AuditEvent::by(
                user,
                action,
                &format!("slide:{slide_id}"),
                "ok",
            ))
            .await;
    }
}

/// How long the browser may keep a tile-like answer privately, or `no-store` where the
/// operator turned `tiles.browser_cache` off.
pub(super) fn private_cache(browser_cache: bool, value: &'static str) -> HeaderValue {
    HeaderValue::from_static(if browser_cache { value } else { "no-store" })
}

fn image_response(content_type: &'static str, bytes: Vec<u8>, cache: HeaderValue) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response()
}

/// Thumbnail (JPEG)
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/thumbnail",
    tag = "slides",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 200, description = "image/jpeg", content_type = "image/jpeg"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn thumbnail(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let slide = visible_slide(&platform, &user, &id, "slide.thumbnail", Need::Read).await?;
    let bytes = get_bytes(
        &platform.store,
        &thumbnail_key(&slide.hospital_id, &slide.id),
    )
    .await?;
    // A thumbnail shows the slide: a view like any other (refusals are audited above). The
    // browser keeps it for an hour where `tiles.browser_cache` allows, which bounds the rows.
    let _ = platform
        .audit(AuditEvent::by(
            &user,
            "slide.thumbnail",
            &format!("slide:{id}"),
            "ok",
        ))
        .await;
    let cache = private_cache(platform.config.tiles.browser_cache, "private, max-age=3600");
    Ok(image_response("image/jpeg", bytes, cache))
}

/// Label image (PNG): the owning hospital, and the hub pathologists reading a case with the slide unless the owner keeps labels to itself
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/label",
    tag = "slides",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 200, description = "image/png", content_type = "image/png"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, or the owning hospital does not share its labels with the hub (`label_not_shared`)", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn label(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = visible_slide(platform, &user, &id, "slide.label", Need::Read).await?;
    if let Some(reason) = label_refusal(platform, &user, &slide).await? {
        let _ = platform
            .audit(
                AuditEvent::by(&user, "slide.label", &format!("slide:{id}"), "denied")
                    .detail(reason),
            )
            .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "label_not_shared",
            reason,
        ));
    }
    if !slide.has_label {
        return Err(ApiError::not_found("label image"));
    }
    let opened = state.slides.opened(platform, &slide).await?;
    let png = tokio::task::spawn_blocking(move || {
        let image = opened
            .reader
            .associated_image("label")
            .map_err(ApiError::internal)?;
        let mut out = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut out, image::ImageFormat::Png)
            .map_err(ApiError::internal)?;
        Ok::<_, ApiError>(out.into_inner())
    })
    .await
    .map_err(ApiError::internal)??;
    let _ = platform
        .audit(AuditEvent::by(
            &user,
            "slide.label",
            &format!("slide:{id}"),
            "ok",
        ))
        .await;
    // The label may carry the patient's name and id: never kept.
    Ok(image_response(
        "image/png",
        png,
        HeaderValue::from_static("no-store"),
    ))
}

/// Deep Zoom descriptor
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/slide.dzi",
    tag = "slides",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 200, description = "application/xml", content_type = "application/xml"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn dzi(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let slide = visible_slide(&state.platform, &user, &id, "slide.tiles", Need::Read).await?;
    let opened = state.slides.opened(&state.platform, &slide).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            ),
            (
                header::CACHE_CONTROL,
                private_cache(
                    state.platform.config.tiles.browser_cache,
                    "private, max-age=3600",
                ),
            ),
        ],
        opened.deepzoom.dzi(),
    )
        .into_response())
}

/// Column and row of a Deep Zoom tile file name, `{col}_{row}{extension}`.
pub(super) fn tile_address(name: &str, extension: &str) -> Result<(u64, u64), ApiError> {
    name.strip_suffix(extension)
        .and_then(|s| s.split_once('_'))
        .and_then(|(c, r)| Some((c.parse::<u64>().ok()?, r.parse::<u64>().ok()?)))
        .ok_or_else(|| ApiError::not_found("tile"))
}

/// Whether the client's `If-None-Match` names `etag`.
pub(super) fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
}

/// Deep Zoom tile (JPEG), strong ETag, immutable
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/slide_files/{level}/{tile}",
    tag = "slides",
    params(
        ("id" = String, Path, description = "slide id"),
        ("level" = usize, Path, description = "Deep Zoom level"),
        ("tile" = String, Path, description = "{col}_{row}.jpeg"),
    ),
    responses(
        (status = 200, description = "image/jpeg", content_type = "image/jpeg",
            headers(("ETag" = String, description = "strong; send it back in If-None-Match"))),
        (status = 304, description = "not modified"),
        (status = 400, description = "a bad path parameter", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such slide or tile", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn tile(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, level, name)): Path<(String, usize, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = visible_slide(platform, &user, &id, "slide.tiles", Need::Read).await?;
    let (col, row) = tile_address(&name, ".jpeg")?;
    if state.slides.starts_tile_session(&user, &id) {
        let _ = platform
            .audit(AuditEvent::by(
                &user,
                "slide.tiles",
                &format!("slide:{id}"),
                "ok",
            ))
            .await;
    }
    let tiles = &state.slides.tiles_config;
    let etag = format!(
        "\"{}-{}-{}-{}-{level}-{col}-{row}\"",
        &slide.sha256[..16],
        tiles.tile_size,
        tiles.overlap,
        tiles.jpeg_quality
    );
    let tile_headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
        (
            header::CACHE_CONTROL,
            private_cache(
                state.platform.config.tiles.browser_cache,
                "private, max-age=31536000, immutable",
            ),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        ),
    ];
    if etag_matches(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, tile_headers).into_response());
    }
    let key = (id.clone(), level, col, row);
    if let Some(bytes) = state.slides.cached_tile(&key) {
        state.metrics.tile("memory");
        return Ok((tile_headers, bytes).into_response());
    }
    let opened = state.slides.opened(platform, &slide).await?;
    let rendered = tokio::task::spawn_blocking(move || opened.deepzoom.tile(level, col, row))
        .await
        .map_err(ApiError::internal)?;
    let tile = match rendered {
        Ok(tile) => tile,
        Err(pathfed_slide::SlideError::OutOfRange(_)) => return Err(ApiError::not_found("tile")),
        Err(e) => return Err(ApiError::internal(e)),
    };
    state.metrics.tile(if tile.passthrough {
        "stored"
    } else {
        "rendered"
    });
    let bytes = Bytes::from(tile.jpeg);
    state.slides.keep_tile(key, bytes.clone());
    Ok((tile_headers, bytes).into_response())
}
