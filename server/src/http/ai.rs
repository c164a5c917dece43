//! AI support on a slide: the results of deployed models (scores, heatmap, overlay tiles for
//! the viewer) and runs on demand.
//!
//! Results are clinical-tier data, and they belong to the pathologists who diagnose the slide.
//! Every handler starts from [`ai_slide`]: the slide's own access check ([`visible_slide`]:
//! researchers 403, other hospitals 404), then consultation's rule
//! (`pathfed_consult::ai::refusal`: the hub pathologists reading a case with the slide, or a
//! hub's own pathologists on a slide in no case), so the referring spoke's staff, submitters
//! and admins get 403 `ai_for_diagnosing_pathologists` on every endpoint, jobs and runs
//! included. A hub may also hide results from a pathologist until that pathologist has entered
//! a read. Views, requests and refusals are audited; overlay tiles once per user and hour.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lru::LruCache;
use pathfed_core::Platform;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, JsonBody};
use pathfed_core::jobs::{Job, Jobs};
use pathfed_core::routes::{Routes, get, post};
use pathfed_inference::heatmap::{ScoreMap, overlay_tile};
use pathfed_inference::job::{self as infer_job, InferPayload};
use pathfed_inference::results::{self, NOTICE};
use pathfed_ingest::slides::Slide;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::slides::{Need, etag_matches, tile_address, visible_slide};

/// The slide AI routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/api/v1/slides/{id}/ai", get(overview).post(request))
        .route("/api/v1/slides/{id}/ai/jobs/{job}/cancel", post(cancel))
        .route("/api/v1/slides/{id}/ai/{model}/{version}", get(full_result))
        .route(
            "/api/v1/slides/{id}/ai/{model}/{version}/heatmap.png",
            get(heatmap),
        )
        .route(
            "/api/v1/slides/{id}/ai/{model}/{version}/overlay.dzi",
            get(overlay_dzi),
        )
        .route(
            "/api/v1/slides/{id}/ai/{model}/{version}/overlay_files/{level}/{tile}",
            get(overlay),
        )
}

/// The slide AI routes' OpenAPI description.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(overview, request, cancel, full_result, heatmap, overlay_dzi, overlay),
    tags((name = "ai", description = "AI support on a slide: results of deployed models, \
        heatmaps and overlay tiles, runs on demand; under the slide's own access rules"))
)]
pub struct Api;

/// A result's score map with its dense form, for tile lookups.
type Map = Arc<(ScoreMap, Vec<f32>)>;

/// Score maps of recently viewed results, keyed by the result's SHA-256 (a rerun has a new
/// one).
pub struct AiService {
    maps: Mutex<LruCache<String, Map>>,
}

impl AiService {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            maps: Mutex::new(LruCache::new(
                NonZeroUsize::new(32).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }
}

impl Default for AiService {
    fn default() -> Self {
        Self::new()
    }
}

fn target(id: &str) -> String {
    format!("slide:{id}")
}

/// The stable code of the refusal for users AI support is not for.
const NOT_FOR_USER: &str = "ai_for_diagnosing_pathologists";

/// The slide, if `user` may see it and AI support on it is for them; otherwise the refusal,
/// audited (403 `ai_for_diagnosing_pathologists` for those who see the slide but not its AI).
async fn ai_slide(
    platform: &Platform,
    user: &Principal,
    id: &str,
    action: &str,
) -> Result<Slide, ApiError> {
    let slide = visible_slide(platform, user, id, action, Need::Read).await?;
    let refused = pathfed_consult::ai::refusal(&platform.db, user, id, &slide.hospital_id)
        .await
        .map_err(ApiError::from)?;
    if let Some(reason) = refused {
        let _ = platform
            .audit(AuditEvent::by(user, action, &target(id), "denied").detail(reason.clone()))
            .await;
        return Err(ApiError::new(StatusCode::FORBIDDEN, NOT_FOR_USER, reason));
    }
    Ok(slide)
}

/// The slide with the AI gate applied: [`ai_slide`], then the hub's "after your own read"
/// rule, which refuses with 403 `ai_hidden_until_read`.
async fn gated_slide(
    platform: &Platform,
    user: &Principal,
    id: &str,
    action: &str,
) -> Result<Slide, ApiError> {
    let slide = ai_slide(platform, user, id, action).await?;
    if let Some(reason) = hidden_reason(platform, user, id).await? {
        let _ = platform
            .audit(AuditEvent::by(user, action, &target(id), "denied").detail(reason.clone()))
            .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ai_hidden_until_read",
            reason,
        ));
    }
    Ok(slide)
}

async fn hidden_reason(
    platform: &Platform,
    user: &Principal,
    id: &str,
) -> Result<Option<String>, ApiError> {
    pathfed_consult::ai::hidden_until_read(&platform.db, user, id)
        .await
        .map_err(ApiError::from)
}

/// The model deployed for the slide: the one deployed for the organ and taxonomy of the
/// latest case holding it that has one. Consultation knows the cases and the registry the
/// deployments; neither links the other, so they meet here.
async fn deployed_for_slide(
    platform: &Platform,
    slide_id: &str,
) -> Result<Option<(String, i64)>, ApiError> {
    let contexts = pathfed_consult::ai::slide_contexts(&platform.db, slide_id)
        .await
        .map_err(ApiError::from)?;
    for context in contexts {
        let deployed =
            pathfed_models::registry::deployed_for(platform, &context.organ, &context.taxonomy)
                .await?;
        if deployed.is_some() {
            return Ok(deployed);
        }
    }
    Ok(None)
}

fn job_json(job: &Job) -> Value {
    // Never the job's result: it carries the score, which the gate may be hiding.
    json!({
        "id": job.id,
        "status": job.status.as_str(),
        "model": job.payload["model"],
        "version": job.payload["version"],
        "progress": job.progress,
        "progress_note": job.progress_note,
        "error": job.last_error,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    })
}

/// AI support on the slide: results of deployed models (empty and hidden=true while the hub hides them until the user's own read), the model deployed for its case, and its infer jobs
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/ai",
    tag = "ai",
    params(("id" = String, Path, description = "slide id")),
    responses(
        (status = 200, description = "{slide_id, hidden, hidden_reason, notice, deployed, results[], jobs[]}", body = Object),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, or AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn overview(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    ai_slide(platform, &user, &id, "ai.view").await?;
    let hidden = hidden_reason(platform, &user, &id).await?;
    let jobs = infer_job::jobs_for_slide(&Jobs::new(platform.db.clone()), &id).await?;
    let deployed = deployed_for_slide(platform, &id).await?;
    let results = if hidden.is_some() {
        Vec::new()
    } else {
        results::summaries(platform, &id).await?
    };
    let base = format!("/api/v1/slides/{id}/ai");
    let results: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            let at = format!("{base}/{}/{}", r.model, r.version);
            v["result_url"] = at.clone().into();
            v["heatmap_url"] = format!("{at}/heatmap.png").into();
            // The run's time in the query: a rerun gets new tile addresses in the viewer's cache.
            v["overlay_url"] = format!("{at}/overlay.dzi?run={}", r.created_at).into();
            v["card_url"] = format!("/model-card?model={}@{}", r.model, r.version).into();
            v
        })
        .collect();
    if hidden.is_none() && !results.is_empty() {
        let _ = platform
            .audit(AuditEvent::by(&user, "ai.view", &target(&id), "ok"))
            .await;
    }
    Ok(axum::Json(json!({
        "slide_id": id,
        "hidden": hidden.is_some(),
        "hidden_reason": hidden,
        // The one reason there is, as a code the page words in the reader's language.
        "hidden_code": hidden.as_ref().map(|_| "until_own_read"),
        "notice": NOTICE,
        "deployed": deployed.map(|(model, version)| json!({"model": model, "version": version})),
        "results": results,
        "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// Which model to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// `name@version`; the model deployed for the slide's case when absent.
    #[serde(default)]
    model: Option<String>,
}

/// Run a model on the slide (body: model NAME@VERSION, default the model deployed for the slide's case)
#[utoipa::path(
    post,
    path = "/api/v1/slides/{id}/ai",
    tag = "ai",
    params(("id" = String, Path, description = "slide id")),
    request_body = RunRequest,
    responses(
        (status = 202, description = "the queued job", body = Object),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, or AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 409, description = "the model is retired", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn request(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
    JsonBody(asked): JsonBody<RunRequest>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = ai_slide(platform, &user, &id, "ai.request").await?;
    let (who, what) = (&user, target(&id));
    let refuse = |status: StatusCode, code: &'static str, message: String| {
        let what = what.clone();
        async move {
            let _ = platform
                .audit(AuditEvent::by(who, "ai.request", &what, "refused").detail(message.clone()))
                .await;
            Err::<Response, _>(ApiError::new(status, code, message))
        }
    };
    let (model, version) = match &asked.model {
        Some(reference) => match pathfed_models::registry::parse_reference(reference) {
            Ok(parsed) => parsed,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, "invalid", e.to_string()).await,
        },
        None => match deployed_for_slide(platform, &slide.id).await? {
            Some(deployed) => deployed,
            None => {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "no_model",
                    "no model is deployed for this slide's case (its organ and taxonomy); name one with \"model\": \"NAME@VERSION\"".into(),
                )
                .await;
            }
        },
    };
    match pathfed_models::registry::get(platform, &model, version).await {
        Ok(record) if record.status == "registered" => {}
        Ok(record) => {
            return refuse(
                StatusCode::CONFLICT,
                "model_retired",
                format!("model {model}@{version} is {}", record.status),
            )
            .await;
        }
        Err(pathfed_models::ModelError::NotFound(what)) => {
            return refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{what} not found"),
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    let payload = InferPayload {
        slide_id: slide.id.clone(),
        model: model.clone(),
        version,
    };
    let job = infer_job::request(&Jobs::new(platform.db.clone()), &payload, &user.id).await?;
    let _ = platform
        .audit(
            AuditEvent::by(&user, "ai.request", &target(&id), "ok")
                .detail(format!("{model}@{version} job {}", job.id)),
        )
        .await;
    Ok((StatusCode::ACCEPTED, axum::Json(job_json(&job))).into_response())
}

/// Cancel an infer job of the slide (a queued job at once, a running one at its next step)
#[utoipa::path(
    post,
    path = "/api/v1/slides/{id}/ai/jobs/{job}/cancel",
    tag = "ai",
    params(
        ("id" = String, Path, description = "slide id"),
        ("job" = String, Path, description = "infer job id"),
    ),
    responses(
        (status = 200, description = "the job", body = Object),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, or AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, job_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    ai_slide(platform, &user, &id, "ai.cancel").await?;
    let jobs = Jobs::new(platform.db.clone());
    let owned = infer_job::jobs_for_slide(&jobs, &id)
        .await?
        .into_iter()
        .any(|j| j.id == job_id);
    if !owned {
        return Err(ApiError::not_found("AI job"));
    }
    let job = jobs.cancel(&job_id).await?;
    let _ = platform
        .audit(
            AuditEvent::by(&user, "ai.cancel", &target(&id), "ok").detail(format!("job {job_id}")),
        )
        .await;
    Ok(axum::Json(job_json(&job)).into_response())
}

/// A result in full: scores per class, the call, per-patch score map, top regions, the decision-support notice
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/ai/{model}/{version}",
    tag = "ai",
    params(
        ("id" = String, Path, description = "slide id"),
        ("model" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    responses(
        (status = 200, description = "result.json", body = Object),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it), or the hub hides AI results until the user's own read (`ai_hidden_until_read`)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn full_result(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, model, version)): Path<(String, String, i64)>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    gated_slide(platform, &user, &id, "ai.view").await?;
    let result = results::load(platform, &id, &model, version).await?;
    let _ = platform
        .audit(
            AuditEvent::by(&user, "ai.view", &target(&id), "ok")
                .detail(format!("{model}@{version}")),
        )
        .await;
    Ok(axum::Json(result).into_response())
}

/// The heatmap (one square per patch, transparent off tissue)
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/ai/{model}/{version}/heatmap.png",
    tag = "ai",
    params(
        ("id" = String, Path, description = "slide id"),
        ("model" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    responses(
        (status = 200, description = "PNG", content_type = "image/png"),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it), or the hub hides AI results until the user's own read (`ai_hidden_until_read`)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn heatmap(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, model, version)): Path<(String, String, i64)>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    gated_slide(platform, &user, &id, "ai.heatmap").await?;
    let png = results::heatmap(platform, &id, &model, version).await?;
    let _ = platform
        .audit(
            AuditEvent::by(&user, "ai.heatmap", &target(&id), "ok")
                .detail(format!("{model}@{version}")),
        )
        .await;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        png,
    )
        .into_response())
}

/// Deep Zoom descriptor of the heatmap overlay: the slide's own geometry, PNG tiles
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/ai/{model}/{version}/overlay.dzi",
    tag = "ai",
    params(
        ("id" = String, Path, description = "slide id"),
        ("model" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
        ("run" = Option<i64>, Query, description = "ignored: the result's time, which the overview adds so that a rerun gets new tile addresses"),
    ),
    responses(
        (status = 200, description = "DZI XML", content_type = "application/xml"),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it), or the hub hides AI results until the user's own read (`ai_hidden_until_read`)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn overlay_dzi(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, model, version)): Path<(String, String, i64)>,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = gated_slide(platform, &user, &id, "ai.overlay").await?;
    results::listed_sha256(platform, &id, &model, version).await?;
    let opened = state.slides.opened(platform, &slide).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        opened.deepzoom.geometry().dzi("png"),
    )
        .into_response())
}

/// An overlay tile ({col}_{row}.png), aligned with the slide tile of the same address; ETag, revalidated
#[utoipa::path(
    get,
    path = "/api/v1/slides/{id}/ai/{model}/{version}/overlay_files/{level}/{tile}",
    tag = "ai",
    params(
        ("id" = String, Path, description = "slide id"),
        ("model" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
        ("level" = usize, Path, description = "Deep Zoom level"),
        ("tile" = String, Path, description = "{col}_{row}.png"),
    ),
    responses(
        (status = 200, description = "PNG (transparent off tissue)", content_type = "image/png",
            headers(("ETag" = String, description = "changes when the model is rerun"))),
        (status = 304, description = "not modified"),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the user's role has no access to clinical slides, AI support on the slide is not for the user (`ai_for_diagnosing_pathologists`: only the pathologists who diagnose it), or the hub hides AI results until the user's own read (`ai_hidden_until_read`)", body = ErrorBody),
        (status = 404, description = "no such slide, result or job (or not visible to the user)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn overlay(
    State(state): State<AppState>,
    Authenticated(user): Authenticated,
    Path((id, model, version, level, name)): Path<(String, String, i64, usize, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let platform = &state.platform;
    let slide = ai_slide(platform, &user, &id, "ai.overlay").await?;
    // Not audited per tile: the hidden panel asks for none, so this is a stray request.
    if let Some(reason) = hidden_reason(platform, &user, &id).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ai_hidden_until_read",
            reason,
        ));
    }
    let (col, row) = tile_address(&name, ".png")?;
    let sha = results::listed_sha256(platform, &id, &model, version).await?;
    let etag = format!("\"{}-{level}-{col}-{row}\"", &sha[..16.min(sha.len())]);
    let tile_headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
        // A rerun replaces the result under the same address: revalidate with the ETag.
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-cache"),
        ),
        (
            header::ETAG,
            HeaderValue::from_str(&etag).map_err(ApiError::internal)?,
        ),
    ];
    if etag_matches(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, tile_headers).into_response());
    }
    if state.slides.starts_tile_session(&user, &format!("ai:{id}")) {
        let _ = platform
            .audit(
                AuditEvent::by(&user, "ai.overlay", &target(&id), "ok")
                    .detail(format!("{model}@{version}")),
            )
            .await;
    }
    let cached = state
        .ai
        .maps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&sha)
        .cloned();
    let map = match cached {
        Some(map) => map,
        None => {
            let result = results::load(platform, &id, &model, version).await?;
            let dense = result.map.dense();
            let map = Arc::new((result.map, dense));
            state
                .ai
                .maps
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(sha.clone(), map.clone());
            map
        }
    };
    let opened = state.slides.opened(platform, &slide).await?;
    let rendered = tokio::task::spawn_blocking(move || {
        overlay_tile(&map.0, &map.1, opened.deepzoom.geometry(), level, col, row)
    })
    .await
    .map_err(ApiError::internal)?;
    let png = match rendered {
        Ok(png) => png,
        Err(pathfed_inference::InferError::Slide(pathfed_slide::SlideError::OutOfRange(_))) => {
            return Err(ApiError::not_found("tile"));
        }
        Err(e) => return Err(e.into()),
    };
    Ok((tile_headers, Bytes::from(png)).into_response())
}
