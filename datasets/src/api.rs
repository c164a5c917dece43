//! The research API: dataset versions and research slides, for researchers only. Nothing here
//! reads or returns a clinical id; every outcome is audited.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use object_store::ObjectStoreExt as _;
use pathfed_core::Platform;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, JsonBody};
use serde::Deserialize;

use crate::Research;
use crate::error::{DatasetError, DatasetResult};
use crate::manifest::{self, VersionParams};
use crate::{catalogue, versions};

/// The research routes.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Research: FromRef<S>,
    Platform: FromRef<S>,
{
    Router::new()
        .route("/api/v1/datasets", get(list).post(create))
        .route("/api/v1/datasets/{name}/versions/{version}", get(show))
        .route(
            "/api/v1/datasets/{name}/versions/{version}/status",
            get(status),
        )
        .route(
            "/api/v1/datasets/{name}/versions/{version}/cancel",
            post(cancel),
        )
        .route(
            "/api/v1/datasets/{name}/versions/{version}/samples",
            get(samples),
        )
        .route("/api/v1/research/patches/{hash}/{slide}/{n}", get(patch))
        .route("/api/v1/datasets/{name}/diff", get(diff))
        .route("/api/v1/research/slides/{id}", get(download))
}

async fn audited<T>(
    research: &Research,
    user: &Principal,
    action: &str,
    target: &str,
    result: DatasetResult<T>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(DatasetError::NotFound(_) | DatasetError::Forbidden(_)) => "denied",
        Err(DatasetError::Invalid(_) | DatasetError::Conflict(_)) => "refused",
        Err(_) => "failed",
    };
    let mut event = AuditEvent::by(user, action, target, outcome);
    if let Err(e) = &result {
        event = event.detail(e.to_string());
    }
    let _ = research.platform.audit(event).await;
    result.map_err(ApiError::from)
}

/// A new version: the dataset's name and what to put in it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateForm {
    name: String,
    params: VersionParams,
}

async fn create(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    JsonBody(form): JsonBody<CreateForm>,
) -> Result<Response, ApiError> {
    let result = versions::create(&research, &user, &form.name, form.params).await;
    let target = format!("dataset:{}", form.name);
    let state = audited(&research, &user, "dataset.create", &target, result).await?;
    // Published at once without extraction; otherwise accepted, and its job publishes it.
    let code = if state.status == "published" {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, axum::Json(state)).into_response())
}

async fn status(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = versions::state(&research, &user, &name, version).await;
    let target = format!("dataset:{name}@{version}");
    let state = audited(&research, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(state).into_response())
}

async fn cancel(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = versions::cancel(&research, &user, &name, version).await;
    let target = format!("dataset:{name}@{version}");
    let state = audited(&research, &user, "dataset.cancel", &target, result).await?;
    Ok(axum::Json(state).into_response())
}

#[derive(Debug, Deserialize)]
struct SamplesQuery {
    #[serde(default = "default_per_label")]
    per_label: usize,
}

fn default_per_label() -> usize {
    6
}

async fn samples(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
    Query(q): Query<SamplesQuery>,
) -> Result<Response, ApiError> {
    let per_label = q.per_label.clamp(1, 24);
    let result = catalogue::samples(&research, &user, &name, version, per_label).await;
    let target = format!("dataset:{name}@{version}");
    let listed = audited(&research, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(listed).into_response())
}

async fn patch(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((hash, slide, n)): Path<(String, String, usize)>,
) -> Result<Response, ApiError> {
    // Not audited one by one: a catalogue page shows dozens; the version view is audited.
    let jpeg = catalogue::patch_jpeg(&research, &user, &hash, &slide, n)
        .await
        .map_err(ApiError::from)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        jpeg,
    )
        .into_response())
}

async fn list(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = versions::list(&research, &user).await;
    let listed = audited(&research, &user, "dataset.list", "datasets", result).await?;
    Ok(axum::Json(listed).into_response())
}

async fn show(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = versions::manifest(&research, &user, &name, version).await;
    let target = format!("dataset:{name}@{version}");
    let manifest = audited(&research, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(manifest).into_response())
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: i64,
    to: i64,
}

async fn diff(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, ApiError> {
    let result = async {
        let old = versions::manifest(&research, &user, &name, q.from).await?;
        let new = versions::manifest(&research, &user, &name, q.to).await?;
        Ok(manifest::diff(&old, &new))
    }
    .await;
    let target = format!("dataset:{name}@{}..{}", q.from, q.to);
    let d = audited(&research, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(d).into_response())
}

async fn download(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = async {
        let key = versions::research_slide_key(&research, &user, &id).await?;
        let object = research
            .platform
            .store
            .get(&object_store::path::Path::from(key.as_str()))
            .await
            .map_err(pathfed_core::CoreError::from)?;
        Ok((object.meta.size, object.into_stream()))
    }
    .await;
    let target = format!("research_slide:{id}");
    let (size, stream) =
        audited(&research, &user, "research_slide.download", &target, result).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/tiff".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.tiff\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
