//! IIIF Image API 3.0 for every slide a user may see, so that IIIF viewers (Mirador,
//! OpenSeadragon) and tools open clinical slides without knowing Deep Zoom:
//! `/iiif/3/{slide}` (303 to its `info.json`), `/iiif/3/{slide}/info.json` and
//! `/iiif/3/{slide}/{region}/{size}/{rotation}/{quality}.{format}`.
//!
//! **Compliance level 2**: regions `full`, `square`, `x,y,w,h`, `pct:x,y,w,h`; sizes `max`,
//! `w,`, `,h`, `pct:n`, `w,h`, `!w,h`; rotation by multiples of 90°; qualities `default`,
//! `color`, `gray`; formats `jpg` and `png`. Beyond it (`extraFeatures`, `extraQualities`):
//! `mirroring` (`!n`), `sizeUpscaling` (the `^` forms, up to `maxWidth` × `maxHeight`),
//! `bitonal`, and the canonical and profile `Link` headers. Other angles, qualities and formats
//! are refused with 400, as are a size larger than the region without `^`, a region outside the
//! image and anything that does not parse; every refusal is the JSON error body.
//!
//! **Access and audit are the tile API's**: [`visible_slide`] answers 404 for slides of other
//! hospitals exactly as for unknown ids (unless a case at the user's hub includes the slide), 403
//! for roles without clinical access, and audits each refusal; a user's IIIF viewing of a slide
//! is audited once per hour as `slide.iiif`, as Deep Zoom tiles are as `slide.tiles`.
//!
//! **Pixels**: a request is read from the pyramid level just finer than its scale and resampled
//! as Deep Zoom tiles are (`pathfed_slide::resize`), so a region equals the tile API's pixels
//! for the same area, and a request that is exactly a stored JPEG tile gets the stored bytes.
//! Reads larger than [`BAND_PIXELS`] are resampled in horizontal bands, so memory stays bounded
//! whatever the region; a request needing more than `slide.max_region_pixels` decoded pixels
//! (a large region of a slide without a coarse enough level) is refused, and `info.json` offers
//! only sizes and tile scale factors within that limit.
//!
//! **`id`** in `info.json` is the service's absolute URL: `notify.base_url` where the operator
//! set it (the address people open, one canonical name however the server is reached), else
//! the request's `Host` with `https` when the request came over TLS (ours or a trusted proxy's).
//!
//! **CORS**: every answer carries `Access-Control-Allow-Origin: *` and never
//! `Access-Control-Allow-Credentials`; `OPTIONS` answers preflights and allows the
//! `Authorization` header. A viewer on another origin therefore reads slides with an API token
//! (`Authorization: Bearer`), never with a user's session: the session cookie is
//! SameSite=Strict, and a browser never gives a page an answer to a request that carried
//! cookies when the allowed origin is `*`.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, RgbImage, imageops};
use pathfed_core::Platform;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, get};
use pathfed_slide::resize::{Rect, read_scaled, resample};
use pathfed_slide::{Level, SlideError, SlideProperties, SlideReader};
use serde::Serialize;

use super::AppState;
use super::cors::{allow_any_origin, preflight};
use super::slides::{Need, audit_viewing, etag_matches, private_cache, visible_slide};

/// Where the image services live: `/iiif/3/{slide}` is a slide's base URI.
const PREFIX: &str = "/iiif/3";
/// The JSON-LD context of Image API 3.
const CONTEXT: &str = "http://iiif.io/api/image/3/context.json";
/// The compliance level's profile, as a `Link` header.
const PROFILE_LINK: &str = "<http://iiif.io/api/image/3/level2.json>;rel=\"profile\"";
/// Largest width and height of an answer (`maxWidth`, `maxHeight`): 4096² RGB is 48 MiB.
const MAX_SIDE: u64 = 4096;
/// Source pixels held at once when a large read is resampled (12 MiB of RGB).
const BAND_PIXELS: u64 = 4 << 20;
/// The audit action of IIIF viewing and of its refusals.
const ACTION: &str = "slide.iiif";

/// The IIIF routes: the base URI, the image information and image requests, each with its CORS
/// preflight.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route(
            "/iiif/3/{id}",
            get(base).options(preflight_base).map(allow_any_origin),
        )
        .route(
            "/iiif/3/{id}/info.json",
            get(info).options(preflight_info).map(allow_any_origin),
        )
        .route(
            "/iiif/3/{id}/{region}/{size}/{rotation}/{image}",
            get(image_request)
                .options(preflight_image)
                .map(allow_any_origin),
        )
}

/// The IIIF routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(base, info, image_request, preflight_base, preflight_info, preflight_image),
    tags((name = "iiif", description = "IIIF Image API 3.0 (level 2) over every slide the user \
        may see, with the slide API's access rules; CORS for viewers on other origins, which \
        authenticate with an API token"))
)]
pub struct Api;

/// CORS preflight of the base URI
#[utoipa::path(
    options,
    path = "/iiif/3/{id}",
    tag = "iiif",
    security(()),
    params(("id" = String, Path, description = "slide id")),
    responses((status = 204, description = "GET allowed from any origin with the `Authorization` header"))
)]
async fn preflight_base() -> Response {
    preflight()
}

/// CORS preflight of the image information
#[utoipa::path(
    options,
    path = "/iiif/3/{id}/info.json",
    tag = "iiif",
    security(()),
    params(("id" = String, Path, description = "slide id")),
    responses((status = 204, description = "GET allowed from any origin with the `Authorization` header"))
)]
async fn preflight_info() -> Response {
    preflight()
}

/// CORS preflight of image requests
#[utoipa::path(
    options,
    path = "/iiif/3/{id}/{region}/{size}/{rotation}/{image}",
    tag = "iiif",
    security(()),
    params(
        ("id" = String, Path, description = "slide id"),
        ("region" = String, Path, description = "region"),
        ("size" = String, Path, description = "size"),
        ("rotation" = String, Path, description = "rotation"),
        ("image" = String, Path, description = "`{quality}.{format}`"),
    ),
    responses((status = 204, description = "GET allowed from any origin with the `Authorization` header"))
)]
async fn preflight_image() -> Response {
    preflight()
}

/// The base URI of a slide's image service: redirects to its image information
#[utoipa::path(
    get,
    path = "/iiif/3/{id}",
    tag = "iiif",
    security(()),
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 303, description = "see `{id}/info.json` (which checks access)",
            headers(("Location" = String, description = "the image information's absolute URL"))),
        (status = 400, description = "`iiif_bad_host`: the request's Host cannot make a URL", body = ErrorBody),
    )
)]
async fn base(
    State(platform): State<Platform>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    // Says nothing about the slide (any id redirects), so it needs no sign-in; the target does.
    let location = format!("{}/info.json", service_url(&platform, &headers, &uri, &id)?);
    let location = HeaderValue::from_str(&location).map_err(ApiError::internal)?;
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response())
}

/// A slide's image information (`info.json`, IIIF Image API 3.0, level 2)
#[utoipa::path(
    get,
    path = "/iiif/3/{id}/info.json",
    tag = "iiif",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 200, description = "`application/ld+json` with the Image API 3 profile \
            (`application/json` when the client accepts only that)", body = ImageInfo,
            content_type = "application/ld+json",
            headers(("Link" = String, description = "the level 2 profile, `rel=\"profile\"`"),
                ("Access-Control-Allow-Origin" = String, description = "`*`"))),
        (status = 400, description = "`iiif_bad_host`: the request's Host cannot make a URL", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn info(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = visible_slide(platform, &user, &id, ACTION, Need::Read).await?;
    let id = service_url(platform, &headers, &uri, &slide.id)?;
    let opened = state.slides.opened(platform, &slide).await?;
    audit_viewing(&state, &user, &slide.id, "iiif", ACTION).await;
    let body = describe(
        opened.reader.properties(),
        id,
        platform.config.slide.max_region_pixels,
    );
    let json = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, info_content_type(&headers)),
            (
                header::CACHE_CONTROL,
                private_cache(platform.config.tiles.browser_cache, "private, max-age=3600"),
            ),
            (header::LINK, HeaderValue::from_static(PROFILE_LINK)),
        ],
        json,
    )
        .into_response())
}

/// An image: a region of the slide at a size, rotation, quality and format
#[utoipa::path(
    get,
    path = "/iiif/3/{id}/{region}/{size}/{rotation}/{image}",
    tag = "iiif",
    params(
        ("id" = String, Path, description = "slide id"),
        ("region" = String, Path, description = "`full`, `square`, `x,y,w,h` or `pct:x,y,w,h` \
            (level-0 pixels or percent of the slide)"),
        ("size" = String, Path, description = "`max`, `w,`, `,h`, `pct:n`, `w,h` or `!w,h`, each \
            with a leading `^` to allow upscaling (up to `maxWidth` × `maxHeight`)"),
        ("rotation" = String, Path, description = "`0`, `90`, `180` or `270`, after `!` to mirror first"),
        ("image" = String, Path, description = "`{quality}.{format}`: quality `default`, \
            `color`, `gray` or `bitonal`; format `jpg` or `png`"),
    ),
    responses(
        (status = 200, description = "`image/jpeg` (`.jpg`) or `image/png` (`.png`)",
            content_type = "image/jpeg",
            headers(("ETag" = String, description = "strong; send it back in If-None-Match"),
                ("Link" = String, description = "the canonical URI (`rel=\"canonical\"`) and the \
                    level 2 profile (`rel=\"profile\"`)"),
                ("Access-Control-Allow-Origin" = String, description = "`*`"))),
        (status = 304, description = "not modified"),
        (status = 400, description = "a parameter the server does not take: \
            `iiif_bad_region` (unparsable, empty, or outside the slide), `iiif_bad_size`, \
            `iiif_upscaling` (larger than the region without `^`), `iiif_too_large` (over \
            `maxWidth`/`maxHeight`, or more of the slide to decode than `slide.max_region_pixels`), \
            `iiif_bad_rotation` (only multiples of 90), `iiif_bad_quality`, `iiif_bad_format`, \
            `iiif_bad_host`", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides", body = ErrorBody),
        (status = 404, description = "no such slide (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn image_request(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, region, size, rotation, file)): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    // Syntax first: a request that cannot be an image is 400 whoever asks and whatever the id.
    let request = ImageRequest::parse(&region, &size, &rotation, &file)?;
    let platform = &state.platform;
    let slide = visible_slide(platform, &user, &id, ACTION, Need::Read).await?;
    let service = service_url(platform, &headers, &uri, &slide.id)?;
    let opened = state.slides.opened(platform, &slide).await?;
    let budget = platform.config.slide.max_region_pixels;
    let (plan, canonical) = {
        let properties = opened.reader.properties();
        let (width, height) = properties.dimensions();
        let area = request.region.resolve(width, height)?;
        let (out_w, out_h) = request.size.resolve(area)?;
        let mut plan = plan_read(properties, area, out_w, out_h, budget)?;
        if request.is_plain_jpeg() {
            plan.stored = stored_tile(properties, area, out_w, out_h);
        }
        let canonical = request.canonical(area, (width, height), (out_w, out_h));
        (plan, canonical)
    };
    audit_viewing(&state, &user, &slide.id, "iiif", ACTION).await;
    let jpeg_quality = platform.config.tiles.jpeg_quality;
    let digest = slide.sha256.get(..16).unwrap_or(slide.sha256.as_str());
    // The canonical request holds commas, which separate the tags of `If-None-Match`: the tag
    // carries a hash of it instead.
    let request_digest = {
        use sha2::Digest as _;
        hex::encode(&sha2::Sha256::digest(canonical.as_bytes())[..8])
    };
    let etag = format!("\"{digest}-{jpeg_quality}-{request_digest}\"");
    let link = format!("<{service}/{canonical}>;rel=\"canonical\", {PROFILE_LINK}");
    let answer_headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(request.format.content_type()),
        ),
        (
            header::CACHE_CONTROL,
            private_cache(
                platform.config.tiles.browser_cache,
                "private, max-age=31536000, immutable",
            ),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        ),
        (
            header::LINK,
            HeaderValue::from_str(&link).map_err(ApiError::internal)?,
        ),
    ];
    if etag_matches(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, answer_headers).into_response());
    }
    let band = BAND_PIXELS.min(budget);
    let bytes = tokio::task::spawn_blocking(move || {
        render(opened.reader.as_ref(), &plan, &request, jpeg_quality, band)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok((answer_headers, bytes).into_response())
}

/// `application/ld+json` with the Image API profile unless the client asks for plain JSON only,
/// as the specification's content negotiation says.
fn info_content_type(headers: &HeaderMap) -> HeaderValue {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("application/json") && !accept.contains("application/ld+json") {
        HeaderValue::from_static("application/json")
    } else {
        HeaderValue::from_static(
            "application/ld+json;profile=\"http://iiif.io/api/image/3/context.json\"",
        )
    }
}

/// The absolute URL of a slide's image service: `notify.base_url` when set, else the scheme
/// and `Host` the request came with.
fn service_url(
    platform: &Platform,
    headers: &HeaderMap,
    uri: &Uri,
    slide_id: &str,
) -> Result<String, ApiError> {
    let origin = super::public_origin(platform, headers, uri).ok_or_else(|| {
        ApiError::bad_request(
            "iiif_bad_host",
            "the request has no usable Host header, so the image service's URL cannot be given",
        )
    })?;
    Ok(format!("{origin}{PREFIX}/{}", encode_segment(slide_id)))
}

/// Percent-encodes everything but unreserved characters (slide ids are UUIDs, so in practice
/// nothing changes).
fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The image information document, keys in the order the specification shows them.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct ImageInfo {
    /// `http://iiif.io/api/image/3/context.json`.
    #[serde(rename = "@context")]
    context: String,
    /// The image service's absolute URL.
    id: String,
    /// `ImageService3`.
    #[serde(rename = "type")]
    kind: String,
    /// `http://iiif.io/api/image`.
    protocol: String,
    /// `level2`.
    profile: String,
    /// Level-0 width in pixels.
    width: u64,
    /// Level-0 height in pixels.
    height: u64,
    /// Widest answer.
    max_width: u64,
    /// Tallest answer.
    max_height: u64,
    /// Sizes of the whole slide to ask for as `full/{width},{height}`, smallest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sizes: Vec<SizeInfo>,
    /// Tile size and the scale factors at which tiles can be asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tiles: Vec<TileInfo>,
    /// `jpg`.
    preferred_formats: Vec<String>,
    /// `color`, `gray`, `bitonal`.
    extra_qualities: Vec<String>,
    /// Features beyond level 2.
    extra_features: Vec<String>,
}

/// One offered size of the whole slide.
#[derive(Serialize, utoipa::ToSchema)]
struct SizeInfo {
    /// Width in pixels.
    width: u64,
    /// Height in pixels.
    height: u64,
}

/// Tiles of one size.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TileInfo {
    /// Tile width in pixels.
    width: u64,
    /// Tile height in pixels.
    height: u64,
    /// Level-0 pixels per tile pixel, powers of two.
    scale_factors: Vec<u64>,
}

/// The square tile size offered: the slide's own (so whole stored tiles are passed through)
/// where it is a sensible one, else 512.
fn tile_size(properties: &SlideProperties) -> u64 {
    match properties.levels.first().and_then(|l| l.tile_size) {
        Some((w, h)) if w == h && (128..=1024).contains(&w) => u64::from(w),
        _ => 512,
    }
}

/// The image information of a slide: only sizes and tile scale factors that can be answered
/// within `budget` decoded pixels are offered.
fn describe(properties: &SlideProperties, id: String, budget: u64) -> ImageInfo {
    let (width, height) = properties.dimensions();
    let tile = tile_size(properties);
    let mut scale_factors = Vec::new();
    let mut sizes = Vec::new();
    if width > 0 && height > 0 {
        let mut scale = 1u64;
        loop {
            // The top-left tile at this scale: every interior tile reads as much.
            let area = Area {
                x: 0,
                y: 0,
                w: width.min(tile * scale),
                h: height.min(tile * scale),
            };
            if fits(properties, area, scale, budget) {
                scale_factors.push(scale);
            }
            let whole = width.div_ceil(scale) <= tile && height.div_ceil(scale) <= tile;
            if whole || scale >= 1 << 30 {
                break;
            }
            scale *= 2;
        }
        let full = Area {
            x: 0,
            y: 0,
            w: width,
            h: height,
        };
        let mut scale = 1u64;
        loop {
            let (w, h) = (width.div_ceil(scale), height.div_ceil(scale));
            if w <= MAX_SIDE && h <= MAX_SIDE && fits(properties, full, scale, budget) {
                sizes.push(SizeInfo {
                    width: w,
                    height: h,
                });
            }
            if w.max(h) <= 64 || scale >= 1 << 30 {
                break;
            }
            scale *= 2;
        }
        sizes.reverse();
    }
    ImageInfo {
        context: CONTEXT.to_string(),
        id,
        kind: "ImageService3".to_string(),
        protocol: "http://iiif.io/api/image".to_string(),
        profile: "level2".to_string(),
        width,
        height,
        max_width: MAX_SIDE,
        max_height: MAX_SIDE,
        sizes,
        tiles: if scale_factors.is_empty() {
            Vec::new()
        } else {
            vec![TileInfo {
                width: tile,
                height: tile,
                scale_factors,
            }]
        },
        preferred_formats: strings(&["jpg"]),
        extra_qualities: strings(&["color", "gray", "bitonal"]),
        extra_features: strings(&[
            "mirroring",
            "sizeUpscaling",
            "canonicalLinkHeader",
            "profileLinkHeader",
        ]),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Whether `area` reduced `scale` times can be answered within `budget`.
fn fits(properties: &SlideProperties, area: Area, scale: u64, budget: u64) -> bool {
    let out = |side: u64| u32::try_from(side.div_ceil(scale).max(1)).unwrap_or(u32::MAX);
    plan_read(properties, area, out(area.w), out(area.h), budget).is_ok()
}

/// A rectangle of the slide in level-0 pixels, inside the slide and not empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x: u64,
    y: u64,
    w: u64,
    h: u64,
}

/// How an answer is read: which level, which rectangle of it, at which size, and the stored
/// tile that is the whole answer, if one is.
struct Plan {
    level: usize,
    rect: Rect,
    width: u32,
    height: u32,
    stored: Option<(usize, u64, u64)>,
}

/// Plans reading `area` at `width` × `height` from the level just finer than the scale (as
/// Deep Zoom tiles are read), refusing what would decode more than `budget` pixels.
fn plan_read(
    properties: &SlideProperties,
    area: Area,
    width: u32,
    height: u32,
    budget: u64,
) -> Result<Plan, ApiError> {
    if area.w == 0 || area.h == 0 || width == 0 || height == 0 {
        return Err(ApiError::bad_request(
            "iiif_bad_size",
            "the image would be empty",
        ));
    }
    // The finer of the two axes' scales, so that a distorting `w,h` never reads too coarse.
    let downsample = (area.w as f64 / f64::from(width)).min(area.h as f64 / f64::from(height));
    let level = properties.best_level_for_downsample(downsample);
    let (Some(info), (w0, h0)) = (properties.levels.get(level), properties.dimensions()) else {
        return Err(ApiError::not_found("pyramid level"));
    };
    let (sx, sy) = (
        w0 as f64 / info.width.max(1) as f64,
        h0 as f64 / info.height.max(1) as f64,
    );
    let rect = Rect {
        x0: area.x as f64 / sx,
        y0: area.y as f64 / sy,
        x1: (area.x + area.w) as f64 / sx,
        y1: (area.y + area.h) as f64 / sy,
    };
    let decoded = source_pixels(&rect, info);
    if decoded > budget {
        return Err(ApiError::bad_request(
            "iiif_too_large",
            format!(
                "this region at this size needs {decoded} pixels of the slide decoded, over the \
                 server's limit of {budget} (slide.max_region_pixels): ask for a smaller region, \
                 or a smaller size where the slide has coarser levels"
            ),
        ));
    }
    Ok(Plan {
        level,
        rect,
        width,
        height,
        stored: None,
    })
}

/// Pixels of `level` that reading `rect` decodes.
fn source_pixels(rect: &Rect, level: &Level) -> u64 {
    let x1 = rect.x1.min(level.width as f64).ceil();
    let y1 = rect.y1.min(level.height as f64).ceil();
    let w = (x1 - rect.x0.floor().max(0.0)).max(0.0);
    let h = (y1 - rect.y0.floor().max(0.0)).max(0.0);
    (w * h) as u64
}

/// The stored tile `(level, col, row)` that is exactly `area` at `width` × `height`: a whole
/// tile (not a padded edge one) of a level reduced an integer number of times.
fn stored_tile(
    properties: &SlideProperties,
    area: Area,
    width: u32,
    height: u32,
) -> Option<(usize, u64, u64)> {
    let (w0, h0) = properties.dimensions();
    properties
        .levels
        .iter()
        .enumerate()
        .find_map(|(index, level)| {
            let (tw, th) = level.tile_size?;
            if (tw, th) != (width, height) {
                return None;
            }
            let (tw, th) = (u64::from(tw), u64::from(th));
            let scale = area.w / tw;
            if scale == 0 || area.w != tw * scale || area.h != th * scale {
                return None;
            }
            // Scanners round a reduced level's size either way.
            let reduced =
                |full: u64, side: u64| side == full / scale || side == full.div_ceil(scale);
            if !reduced(w0, level.width) || !reduced(h0, level.height) {
                return None;
            }
            if !area.x.is_multiple_of(tw * scale) || !area.y.is_multiple_of(th * scale) {
                return None;
            }
            let (col, row) = (area.x / (tw * scale), area.y / (th * scale));
            let whole = (col + 1) * tw <= level.width && (row + 1) * th <= level.height;
            whole.then_some((index, col, row))
        })
}

/// Renders a planned image: read, resample, mirror and rotate, convert, encode.
fn render(
    reader: &dyn SlideReader,
    plan: &Plan,
    request: &ImageRequest,
    jpeg_quality: u8,
    band: u64,
) -> Result<Vec<u8>, ApiError> {
    if let Some((level, col, row)) = plan.stored
        && let Some(tile) = reader.raw_tile(level, col, row).map_err(slide_error)?
        && (tile.width, tile.height) == (plan.width, plan.height)
    {
        return Ok(tile.jpeg);
    }
    let pixels = read_resampled(reader, plan.level, plan.rect, plan.width, plan.height, band)
        .map_err(slide_error)?;
    let turned = request.rotation.apply(pixels);
    encode(turned, request.quality, request.format, jpeg_quality)
}

fn slide_error(e: SlideError) -> ApiError {
    match e {
        limit @ SlideError::LimitExceeded { .. } => ApiError::bad_request(
            "iiif_too_large",
            format!("the request is over the server's limits: {limit}"),
        ),
        other => ApiError::internal(other),
    }
}

/// Reads `rect` of `level` resampled to `width` × `height`, as [`read_scaled`] does (and with
/// its result), holding at most about `band` source pixels at once: a larger read is done in
/// horizontal bands, each with enough rows above and below for the filter, so the bands join
/// without seams.
fn read_resampled(
    reader: &dyn SlideReader,
    level: usize,
    rect: Rect,
    width: u32,
    height: u32,
    band: u64,
) -> pathfed_slide::Result<RgbImage> {
    let Some(info) = reader.properties().levels.get(level) else {
        return Err(SlideError::OutOfRange(format!("level {level}")));
    };
    let x1 = rect.x1.min(info.width as f64);
    let y1 = rect.y1.min(info.height as f64);
    let (ix0, iy0) = (rect.x0.floor().max(0.0), rect.y0.floor().max(0.0));
    let (ix1, iy1) = (x1.ceil(), y1.ceil());
    let columns = ix1 - ix0;
    if width == 0
        || height == 0
        || columns <= 0.0
        || iy1 <= iy0
        || columns * (iy1 - iy0) <= band as f64
    {
        return read_scaled(reader, level, rect, width, height);
    }
    // Source rows per output row, and the rows the bilinear filter reaches beyond a band.
    let step = (y1 - rect.y0) / f64::from(height);
    let margin = (step.max(1.0) * 2.0).ceil() + 2.0;
    let rows_held = (band as f64 / columns).floor();
    let per_band = ((rows_held - 2.0 * margin) / step).floor().max(1.0) as u32;
    let mut out = RgbImage::new(width, height);
    let mut first = 0u32;
    while first < height {
        let last = first.saturating_add(per_band).min(height);
        let top = rect.y0 + f64::from(first) * step;
        let bottom = if last == height {
            y1
        } else {
            (rect.y0 + f64::from(last) * step).min(y1)
        };
        let read_top = (top - margin).floor().max(iy0);
        let read_bottom = (bottom + margin).ceil().min(iy1);
        let source = reader.read_region(
            level,
            ix0 as u64,
            read_top as u64,
            columns as u32,
            (read_bottom - read_top) as u32,
        )?;
        let part = resample(
            &source,
            (rect.x0 - ix0, top - read_top, x1 - rect.x0, bottom - top),
            width,
            last - first,
        )?;
        imageops::replace(&mut out, &part, 0, i64::from(first));
        first = last;
    }
    Ok(out)
}

/// Encodes in the requested quality and format.
fn encode(
    image: RgbImage,
    quality: Quality,
    format: Format,
    jpeg_quality: u8,
) -> Result<Vec<u8>, ApiError> {
    let failed =
        |e: &dyn std::fmt::Display| ApiError::internal(format!("encoding an IIIF image: {e}"));
    match quality {
        Quality::Default | Quality::Color => match format {
            Format::Jpg => {
                pathfed_slide::jpeg::encode_rgb(&image, jpeg_quality).map_err(|e| failed(&e))
            }
            Format::Png => png(
                image.as_raw(),
                image.width(),
                image.height(),
                ExtendedColorType::Rgb8,
            ),
        },
        Quality::Gray | Quality::Bitonal => {
            let mut gray = imageops::grayscale(&image);
            if quality == Quality::Bitonal {
                for pixel in gray.pixels_mut() {
                    pixel.0[0] = if pixel.0[0] >= 128 { 255 } else { 0 };
                }
            }
            match format {
                Format::Jpg => {
                    let mut out = Vec::new();
                    JpegEncoder::new_with_quality(&mut out, jpeg_quality)
                        .encode_image(&gray)
                        .map_err(|e| failed(&e))?;
                    Ok(out)
                }
                Format::Png => png(
                    gray.as_raw(),
                    gray.width(),
                    gray.height(),
                    ExtendedColorType::L8,
                ),
            }
        }
    }
}

fn png(raw: &[u8], width: u32, height: u32, color: ExtendedColorType) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    // Fast compression: an answer is made for one request, and PNG's best saves little on
    // tissue.
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(raw, width, height, color)
        .map_err(|e| ApiError::internal(format!("encoding an IIIF image: {e}")))?;
    Ok(out)
}

/// A parsed image request.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ImageRequest {
    region: Region,
    size: Size,
    rotation: Rotation,
    quality: Quality,
    format: Format,
}

impl ImageRequest {
    /// Parses the four path segments after the identifier.
    fn parse(region: &str, size: &str, rotation: &str, file: &str) -> Result<Self, ApiError> {
        let (quality, format) = file.rsplit_once('.').ok_or_else(|| {
            ApiError::bad_request(
                "iiif_bad_format",
                format!("{file:?} is not {{quality}}.{{format}}"),
            )
        })?;
        Ok(Self {
            region: Region::parse(region)?,
            size: Size::parse(size)?,
            rotation: Rotation::parse(rotation)?,
            quality: Quality::parse(quality)?,
            format: Format::parse(format)?,
        })
    }

    /// Whether the answer is the region's pixels as JPEG, untouched: a stored tile may be it.
    fn is_plain_jpeg(&self) -> bool {
        matches!(self.quality, Quality::Default | Quality::Color)
            && self.format == Format::Jpg
            && self.rotation == Rotation::default()
    }

    /// The canonical form of this request (after the identifier), as the specification
    /// defines it.
    fn canonical(&self, area: Area, (width, height): (u64, u64), (w, h): (u32, u32)) -> String {
        let region = if area
            == (Area {
                x: 0,
                y: 0,
                w: width,
                h: height,
            }) {
            "full".to_string()
        } else {
            format!("{},{},{},{}", area.x, area.y, area.w, area.h)
        };
        let (w, h) = (u64::from(w), u64::from(h));
        let size = if (w, h) == fit(area, false) {
            "max".to_string()
        } else if self.size.kind == SizeKind::Max {
            "^max".to_string()
        } else if w > area.w || h > area.h {
            format!("^{w},{h}")
        } else {
            format!("{w},{h}")
        };
        format!(
            "{region}/{size}/{}{}/{}.{}",
            if self.rotation.mirror { "!" } else { "" },
            u32::from(self.rotation.quarter_turns) * 90,
            self.quality.name(),
            self.format.extension()
        )
    }
}

/// `region`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Region {
    Full,
    Square,
    Pixels(u64, u64, u64, u64),
    Percent(f64, f64, f64, f64),
}

fn bad_region(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("iiif_bad_region", message)
}

impl Region {
    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "full" => return Ok(Self::Full),
            "square" => return Ok(Self::Square),
            _ => {}
        }
        let syntax = || {
            bad_region(format!(
                "region {text:?} is not full, square, x,y,w,h or pct:x,y,w,h"
            ))
        };
        if let Some(percent) = text.strip_prefix("pct:") {
            let [x, y, w, h] = four(percent, parse_decimal).ok_or_else(syntax)?;
            if w <= 0.0 || h <= 0.0 {
                return Err(bad_region(
                    "a region's width and height must be more than 0",
                ));
            }
            return Ok(Self::Percent(x, y, w, h));
        }
        let [x, y, w, h] = four(text, parse_integer).ok_or_else(syntax)?;
        if w == 0 || h == 0 {
            return Err(bad_region(
                "a region's width and height must be more than 0",
            ));
        }
        Ok(Self::Pixels(x, y, w, h))
    }

    /// The region in level-0 pixels of a `width` × `height` slide, cut at its edges.
    fn resolve(self, width: u64, height: u64) -> Result<Area, ApiError> {
        let (x0, y0, x1, y1) = match self {
            Self::Full => (0, 0, width, height),
            Self::Square => {
                let side = width.min(height);
                let (x, y) = ((width - side) / 2, (height - side) / 2);
                (x, y, x + side, y + side)
            }
            Self::Pixels(x, y, w, h) => (x, y, x.saturating_add(w), y.saturating_add(h)),
            Self::Percent(x, y, w, h) => {
                // Float-to-integer casts saturate, so absurd percentages stay harmless.
                let at = |pct: f64, side: u64| (pct / 100.0 * side as f64).round() as u64;
                (
                    at(x, width),
                    at(y, height),
                    at(x + w, width),
                    at(y + h, height),
                )
            }
        };
        let (x1, y1) = (x1.min(width), y1.min(height));
        if x0 >= x1 || y0 >= y1 {
            return Err(bad_region(format!(
                "the region lies outside the {width}×{height} slide or is empty"
            )));
        }
        Ok(Area {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        })
    }
}

/// `size`: its form, and whether `^` allows upscaling.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Size {
    upscale: bool,
    kind: SizeKind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SizeKind {
    Max,
    Width(u64),
    Height(u64),
    Percent(f64),
    Exact(u64, u64),
    Confined(u64, u64),
}

fn bad_size(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("iiif_bad_size", message)
}

impl Size {
    fn parse(text: &str) -> Result<Self, ApiError> {
        let syntax = || {
            bad_size(format!(
                "size {text:?} is not max, w,, ,h, pct:n, w,h or !w,h (each optionally after ^)"
            ))
        };
        let (upscale, rest) = match text.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let kind = if rest == "max" {
            SizeKind::Max
        } else if let Some(percent) = rest.strip_prefix("pct:") {
            let n = parse_decimal(percent).ok_or_else(syntax)?;
            if n <= 0.0 {
                return Err(bad_size("a percentage size must be more than 0"));
            }
            SizeKind::Percent(n)
        } else {
            let (confined, rest) = match rest.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, rest),
            };
            let (w, h) = rest.split_once(',').ok_or_else(syntax)?;
            let number = |s: &str| parse_integer(s).ok_or_else(syntax);
            match (w.is_empty(), h.is_empty(), confined) {
                (false, true, false) => SizeKind::Width(number(w)?),
                (true, false, false) => SizeKind::Height(number(h)?),
                (false, false, false) => SizeKind::Exact(number(w)?, number(h)?),
                (false, false, true) => SizeKind::Confined(number(w)?, number(h)?),
                _ => return Err(syntax()),
            }
        };
        if matches!(kind, SizeKind::Width(0) | SizeKind::Height(0))
            || matches!(kind, SizeKind::Exact(w, h) | SizeKind::Confined(w, h) if w == 0 || h == 0)
        {
            return Err(bad_size("a size must be at least 1 pixel"));
        }
        Ok(Self { upscale, kind })
    }

    /// The answer's width and height for `area`, within the server's limits.
    fn resolve(self, area: Area) -> Result<(u32, u32), ApiError> {
        let (rw, rh) = (area.w as f64, area.h as f64);
        let scaled = |side: f64, factor: f64| ((side * factor).round() as u64).max(1);
        let (w, h) = match self.kind {
            SizeKind::Max => fit(area, self.upscale),
            SizeKind::Width(w) => (w, scaled(rh, w as f64 / rw)),
            SizeKind::Height(h) => (scaled(rw, h as f64 / rh), h),
            SizeKind::Percent(n) => {
                let at = |side: f64| (side * n / 100.0).round() as u64;
                (at(rw), at(rh))
            }
            SizeKind::Exact(w, h) => (w, h),
            SizeKind::Confined(w, h) => {
                if w as f64 / rw <= h as f64 / rh {
                    (w, scaled(rh, w as f64 / rw).min(h))
                } else {
                    (scaled(rw, h as f64 / rh).min(w), h)
                }
            }
        };
        if w == 0 || h == 0 {
            return Err(bad_size("the image would be smaller than 1 pixel"));
        }
        if !self.upscale && (w > area.w || h > area.h) {
            return Err(ApiError::bad_request(
                "iiif_upscaling",
                format!(
                    "{w}×{h} is larger than the {}×{} region: prefix the size with ^ to allow \
                     upscaling",
                    area.w, area.h
                ),
            ));
        }
        if w > MAX_SIDE || h > MAX_SIDE {
            return Err(ApiError::bad_request(
                "iiif_too_large",
                format!(
                    "{w}×{h} is over the largest answer, {MAX_SIDE}×{MAX_SIDE} (maxWidth, maxHeight)"
                ),
            ));
        }
        // Both at most MAX_SIDE.
        Ok((w as u32, h as u32))
    }
}

/// The largest size of `area` within `maxWidth` × `maxHeight`, keeping its aspect ratio; never
/// larger than the area itself unless `upscale`.
fn fit(area: Area, upscale: bool) -> (u64, u64) {
    let (rw, rh) = (area.w as f64, area.h as f64);
    // The limits are square, so the longer side meets them first; it gets the limit exactly
    // rather than a product that rounding could leave a pixel short.
    let factor = MAX_SIDE as f64 / rw.max(rh);
    if factor >= 1.0 && !upscale {
        return (area.w, area.h);
    }
    let other = |side: f64| ((side * factor).round() as u64).clamp(1, MAX_SIDE);
    if area.w >= area.h {
        (MAX_SIDE, other(rh))
    } else {
        (other(rw), MAX_SIDE)
    }
}

/// `rotation`: mirrored first or not, then turned clockwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rotation {
    mirror: bool,
    quarter_turns: u8,
}

impl Rotation {
    fn parse(text: &str) -> Result<Self, ApiError> {
        let (mirror, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let degrees = parse_decimal(rest)
            .filter(|d| (0.0..=360.0).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "iiif_bad_rotation",
                    format!("rotation {text:?} is not a number of degrees from 0 to 360, optionally after !"),
                )
            })?;
        if degrees % 90.0 != 0.0 {
            return Err(ApiError::bad_request(
                "iiif_bad_rotation",
                format!("only rotations by multiples of 90 degrees are supported, not {degrees}"),
            ));
        }
        Ok(Self {
            mirror,
            // 0 to 4 quarter turns; 360 is 0.
            quarter_turns: ((degrees / 90.0) as u8) % 4,
        })
    }

    fn apply(self, image: RgbImage) -> RgbImage {
        let image = if self.mirror {
            imageops::flip_horizontal(&image)
        } else {
            image
        };
        match self.quarter_turns {
            1 => imageops::rotate90(&image),
            2 => imageops::rotate180(&image),
            3 => imageops::rotate270(&image),
            _ => image,
        }
    }
}

/// `quality`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quality {
    Default,
    Color,
    Gray,
    Bitonal,
}

impl Quality {
    fn parse(text: &str) -> Result<Self, ApiError> {
        Ok(match text {
            "default" => Self::Default,
            "color" => Self::Color,
            "gray" => Self::Gray,
            "bitonal" => Self::Bitonal,
            _ => {
                return Err(ApiError::bad_request(
                    "iiif_bad_quality",
                    format!("quality {text:?} is not default, color, gray or bitonal"),
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Color => "color",
            Self::Gray => "gray",
            Self::Bitonal => "bitonal",
        }
    }
}

/// `format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpg,
    Png,
}

impl Format {
    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "jpg" => Ok(Self::Jpg),
            "png" => Ok(Self::Png),
            _ => Err(ApiError::bad_request(
                "iiif_bad_format",
                format!("format {text:?} is not jpg or png"),
            )),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Jpg => "jpg",
            Self::Png => "png",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Jpg => "image/jpeg",
            Self::Png => "image/png",
        }
    }
}

/// Four comma-separated values.
fn four<T: Copy>(text: &str, parse: fn(&str) -> Option<T>) -> Option<[T; 4]> {
    let mut parts = text.split(',');
    let values = [
        parse(parts.next()?)?,
        parse(parts.next()?)?,
        parse(parts.next()?)?,
        parse(parts.next()?)?,
    ];
    parts.next().is_none().then_some(values)
}

/// A non-negative integer: digits only, as the specification writes pixel values.
fn parse_integer(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 15 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A non-negative decimal: digits and at most one point, as the specification writes
/// percentages and angles (no sign, no exponent).
fn parse_decimal(text: &str) -> Option<f64> {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let points = text.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || points > 1 || digits + points != text.len() || text.len() > 24 {
        return None;
    }
    text.parse().ok().filter(|v: &f64| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(x: u64, y: u64, w: u64, h: u64) -> Area {
        Area { x, y, w, h }
    }

    #[test]
    fn regions_resolve_and_cut_at_the_edges() {
        let resolve = |text: &str| Region::parse(text).and_then(|r| r.resolve(1000, 600));
        assert_eq!(resolve("full").ok(), Some(area(0, 0, 1000, 600)));
        assert_eq!(resolve("square").ok(), Some(area(200, 0, 600, 600)));
        assert_eq!(
            resolve("900,500,200,200").ok(),
            Some(area(900, 500, 100, 100))
        );
        assert_eq!(
            resolve("pct:10,50,20,50").ok(),
            Some(area(100, 300, 200, 300))
        );
        for bad in [
            "0,0,0,10",
            "1000,0,10,10",
            "pct:0,0,0,5",
            "1,2,3",
            "-1,0,5,5",
            "a,b,c,d",
            "pct:1e2,0,1,1",
            "Full",
        ] {
            let error = resolve(bad).expect_err(bad);
            assert_eq!(
                (error.status, error.code),
                (StatusCode::BAD_REQUEST, "iiif_bad_region"),
                "{bad}"
            );
        }
    }

    #[test]
    fn sizes_keep_the_aspect_and_refuse_upscaling_without_a_caret() {
        let region = area(0, 0, 1000, 500);
        let resolve = |text: &str| Size::parse(text).and_then(|s| s.resolve(region));
        assert_eq!(resolve("max").ok(), Some((1000, 500)));
        assert_eq!(resolve("500,").ok(), Some((500, 250)));
        assert_eq!(resolve(",100").ok(), Some((200, 100)));
        assert_eq!(resolve("pct:50").ok(), Some((500, 250)));
        assert_eq!(resolve("300,300").ok(), Some((300, 300)));
        assert_eq!(resolve("!300,300").ok(), Some((300, 150)));
        assert_eq!(resolve("^2000,").ok(), Some((2000, 1000)));
        assert_eq!(resolve("^max").ok(), Some((4096, 2048)));
        for (bad, code) in [
            ("2000,", "iiif_upscaling"),
            ("pct:200", "iiif_upscaling"),
            ("!2000,3000", "iiif_upscaling"),
            ("^5000,", "iiif_too_large"),
            ("full", "iiif_bad_size"),
            ("0,", "iiif_bad_size"),
            ("!5,", "iiif_bad_size"),
            ("pct:-5", "iiif_bad_size"),
        ] {
            let error = resolve(bad).expect_err(bad);
            assert_eq!(error.code, code, "{bad}");
        }
        // A region larger than the limits is answered at the limits by `max`.
        let big = area(0, 0, 100_000, 50_000);
        assert_eq!(
            Size::parse("max").and_then(|s| s.resolve(big)).ok(),
            Some((4096, 2048))
        );
    }

    #[test]
    fn rotations_by_quarter_turns_mirror_first() {
        let image = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8, 0, 0]));
        let turned = Rotation::parse("90").map(|r| r.apply(image.clone())).ok();
        assert_eq!(
            turned.map(|t| (t.dimensions(), t.get_pixel(0, 1).0[0])),
            Some(((1, 2), 1))
        );
        let mirrored = Rotation::parse("!0").map(|r| r.apply(image.clone())).ok();
        assert_eq!(mirrored.map(|m| m.get_pixel(0, 0).0[0]), Some(1));
        assert_eq!(Rotation::parse("360").ok(), Some(Rotation::default()));
        for bad in ["45", "-90", "361", "+90", "9e1", ""] {
            assert_eq!(
                Rotation::parse(bad).map_err(|e| e.code).err(),
                Some("iiif_bad_rotation"),
                "{bad}"
            );
        }
    }

    #[test]
    fn canonical_forms_follow_the_specification() {
        let request = |r: &str, s: &str, t: &str, f: &str| ImageRequest::parse(r, s, t, f).ok();
        let canonical = |req: ImageRequest| {
            let a = req.region.resolve(1000, 600).ok()?;
            let out = req.size.resolve(a).ok()?;
            Some(req.canonical(a, (1000, 600), out))
        };
        assert_eq!(
            request("full", "max", "0", "default.jpg")
                .and_then(canonical)
                .as_deref(),
            Some("full/max/0/default.jpg")
        );
        assert_eq!(
            request("pct:0,0,50,50", "250,", "!180", "gray.png")
                .and_then(canonical)
                .as_deref(),
            Some("0,0,500,300/250,150/!180/gray.png")
        );
        assert!(request("full", "max", "0", "default").is_none());
        assert!(request("full", "max", "0", "sepia.jpg").is_none());
        assert!(request("full", "max", "0", "default.gif").is_none());
    }
}
