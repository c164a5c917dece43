//! The research API: dataset versions and research slides, for researchers only. Nothing here
//! reads or returns a clinical id; every outcome is audited.

use axum::body::Body;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use object_store::ObjectStoreExt as _;
use pathfed_core::Platform;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, JsonBody, audited};
use pathfed_core::routes::{Routes, get, post};
use serde::Deserialize;

use crate::Research;
use crate::catalogue::Sample;
use crate::error::DatasetError;
use crate::manifest::{self, Diff, VersionParams};
use crate::versions::{VersionState, VersionSummary};
use crate::{catalogue, versions};

/// The research routes.
pub fn router<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Research: FromRef<S>,
    Platform: FromRef<S>,
{
    Routes::new()
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

/// The research API's OpenAPI description, merged into `/openapi.json` by the server.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, show, status, cancel, samples, patch, diff, download),
    tags((name = "datasets", description = "The research tier: dataset versions, their \
        samples and patches, and de-identified research slides; researchers (and admins) only"))
)]
pub struct Api;

/// A new version: the dataset's name and what to put in it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateForm {
    /// The dataset; its next version number is taken.
    name: String,
    /// What to put in the version.
    params: VersionParams,
}

/// Start the next version of a dataset (researchers): published at once without extraction (201), else accepted (202) and published by its extract job
#[utoipa::path(
    post,
    path = "/api/v1/datasets",
    tag = "datasets",
    request_body = CreateForm,
    responses(
        (status = 201, description = "the version's state, published", body = VersionState),
        (status = 202, description = "the version's state: building, with its job id", body = VersionState),
        (status = 400, description = "a bad parameter or a refused value; code `min_cell_size_below_floor` when min_cell_size is below the platform's minimum cell size (the setting research.min_cell_size, which only the platform's operator sets, in its configuration file or environment)", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 409, description = "conflicts with the version's state", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn create(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    JsonBody(form): JsonBody<CreateForm>,
) -> Result<Response, ApiError> {
    let result = versions::create(&research, &user, &form.name, form.params).await;
    let target = format!("dataset:{}", form.name);
    let state = audited(&research.platform, &user, "dataset.create", &target, result).await?;
    // Published at once without extraction; otherwise accepted, and its job publishes it.
    let code = if state.status == "published" {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, axum::Json(state)).into_response())
}

/// Where a version stands: building (with its job's progress and note), published or failed (with why)
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}/versions/{version}/status",
    tag = "datasets",
    params(
        ("name" = String, Path, description = "dataset name"),
        ("version" = i64, Path, description = "version number"),
    ),
    responses(
        (status = 200, description = "state", body = VersionState),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such dataset version or slide", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn status(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = versions::state(&research, &user, &name, version).await;
    let target = format!("dataset:{name}@{version}");
    let state = audited(&research.platform, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(state).into_response())
}

/// Stop a building version's extraction; the version ends failed
#[utoipa::path(
    post,
    path = "/api/v1/datasets/{name}/versions/{version}/cancel",
    tag = "datasets",
    params(
        ("name" = String, Path, description = "dataset name"),
        ("version" = i64, Path, description = "version number"),
    ),
    responses(
        (status = 200, description = "state", body = VersionState),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such dataset version or slide", body = ErrorBody),
        (status = 409, description = "conflicts with the version's state", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn cancel(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = versions::cancel(&research, &user, &name, version).await;
    let target = format!("dataset:{name}@{version}");
    let state = audited(&research.platform, &user, "dataset.cancel", &target, result).await?;
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

/// Sample patches per label of an extracted version, with their URLs
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}/versions/{version}/samples",
    tag = "datasets",
    params(
        ("name" = String, Path, description = "dataset name"),
        ("version" = i64, Path, description = "version number"),
        ("per_label" = Option<usize>, Query, description = "patches per label (default 6; clamped to 1–24)"),
    ),
    responses(
        (status = 200, description = "samples", body = Vec<Sample>),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such dataset version or slide", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn samples(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
    Query(q): Query<SamplesQuery>,
) -> Result<Response, ApiError> {
    let per_label = q.per_label.clamp(1, 24);
    let result = catalogue::samples(&research, &user, &name, version, per_label).await;
    let target = format!("dataset:{name}@{version}");
    let listed = audited(&research.platform, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(listed).into_response())
}

/// One patch (JPEG) of a live research slide's shard (researchers)
#[utoipa::path(
    get,
    path = "/api/v1/research/patches/{hash}/{slide}/{n}",
    tag = "datasets",
    params(
        ("hash" = String, Path, description = "extraction parameters hash"),
        ("slide" = String, Path, description = "research slide id"),
        ("n" = usize, Path, description = "position in the shard"),
    ),
    responses(
        (status = 200, description = "image/jpeg", content_type = "image/jpeg"),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such patch, or its slide was removed", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn patch(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((hash, slide, n)): Path<(String, String, usize)>,
) -> Result<Response, ApiError> {
    // Each patch is a view of a research slide, audited like any other; the browser keeps a
    // patch for a day (immutable), so a catalogue page records its patches once.
    let result = catalogue::patch_jpeg(&research, &user, &hash, &slide, n).await;
    let target = format!("research_slide:{slide}");
    let jpeg = audited(&research.platform, &user, "research.patch", &target, result).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        jpeg,
    )
        .into_response())
}

/// Published dataset versions (researchers)
#[utoipa::path(
    get,
    path = "/api/v1/datasets",
    tag = "datasets",
    responses(
        (status = 200, description = "versions", body = Vec<VersionSummary>),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = versions::list(&research, &user).await;
    let listed = audited(
        &research.platform,
        &user,
        "dataset.list",
        "datasets",
        result,
    )
    .await?;
    Ok(axum::Json(listed).into_response())
}

/// A version's manifest
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}/versions/{version}",
    tag = "datasets",
    params(
        ("name" = String, Path, description = "dataset name"),
        ("version" = i64, Path, description = "version number"),
    ),
    responses(
        (status = 200, description = "manifest: dataset, version, created_at, content_hash (of the version as published) and content (params, curation, extraction, slides, counts, small_cells, opted_out_excluded); a slide withdrawn since publication (its patient opted out, or it was retired) is only {\"id\", \"withdrawn\": true}", body = Object),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such dataset version or slide", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn show(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = versions::read(&research, &user, &name, version)
        .await
        .map(|current| current.presented());
    let target = format!("dataset:{name}@{version}");
    let manifest = audited(&research.platform, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(manifest).into_response())
}

#[derive(Debug, Deserialize)]
struct DiffQuery {
    from: i64,
    to: i64,
}

/// Slides added, removed, relabelled or moved between two versions
#[utoipa::path(
    get,
    path = "/api/v1/datasets/{name}/diff",
    tag = "datasets",
    params(
        ("name" = String, Path, description = "dataset name"),
        ("from" = i64, Query, description = "older version"),
        ("to" = i64, Query, description = "newer version"),
    ),
    responses(
        (status = 200, description = "diff", body = Diff),
        (status = 400, description = "a bad parameter or a refused value", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such dataset version or slide", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn diff(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> Result<Response, ApiError> {
    let result = async {
        let old = versions::read(&research, &user, &name, q.from).await?;
        let new = versions::read(&research, &user, &name, q.to).await?;
        let mut d = manifest::diff(&old.manifest, &new.manifest);
        // Withdrawn since: gone from the older version as from the tier, shown by id alone.
        d.removed.extend(old.withdrawn);
        d.removed.sort();
        d.removed.dedup();
        Ok::<_, DatasetError>(d)
    }
    .await;
    let target = format!("dataset:{name}@{}..{}", q.from, q.to);
    let d = audited(&research.platform, &user, "dataset.view", &target, result).await?;
    Ok(axum::Json(d).into_response())
}

/// Download a de-identified research slide (pyramidal BigTIFF)
#[utoipa::path(
    get,
    path = "/api/v1/research/slides/{id}",
    tag = "datasets",
    params(("id" = String, Path, description = "research slide id")),
    responses(
        (status = 200, description = "image/tiff", content_type = "image/tiff"),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "the research tier is for researchers (and admins)", body = ErrorBody),
        (status = 404, description = "no such dataset version or slide", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
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
        Ok::<_, DatasetError>((object.meta.size, object.into_stream()))
    }
    .await;
    let target = format!("research_slide:{id}");
    let (size, stream) = audited(
        &research.platform,
        &user,
        "research_slide.download",
        &target,
        result,
    )
    .await?;
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
