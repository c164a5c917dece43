//! The training API, for researchers and the platform admin: start, follow, cancel and resume
//! runs; read the model registry (cards, metrics, plots, weights). Deploying and retiring
//! models is the platform admin's alone: researchers train and register, the platform admin
//! decides what reaches the clinic. Every call is audited.

use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::Platform;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody, JsonBody, Outcome, audited};
use pathfed_core::routes::{Routes, get, post};
use pathfed_datasets::Research;
use pathfed_datasets::versions::require_researcher;
use pathfed_models::registry::{self, Deployment, ModelRecord};
use serde::{Deserialize, Serialize};

use crate::embeddings::{self, EmbedRequest, EmbedState};
use crate::error::{TrainError, TrainResult};
use crate::runs::{self, RunState, TrainRequest};

/// The training and registry routes.
pub fn router<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Research: FromRef<S>,
    Platform: FromRef<S>,
{
    Routes::new()
        .route("/api/v1/training/runs", get(list_runs).post(start))
        .route("/api/v1/training/runs/{id}", get(show_run))
        .route("/api/v1/training/runs/{id}/cancel", post(cancel))
        .route("/api/v1/training/runs/{id}/resume", post(resume))
        .route("/api/v1/models", get(list_models))
        .route("/api/v1/models/{name}/versions/{version}", get(show_model))
        .route(
            "/api/v1/models/{name}/versions/{version}/files/{file}",
            get(model_file),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/deploy",
            post(deploy),
        )
        .route(
            "/api/v1/models/{name}/versions/{version}/retire",
            post(retire),
        )
        .route("/api/v1/deployments", get(deployments))
        .route("/api/v1/encoders", get(list_encoders))
        .route("/api/v1/embeddings", post(start_embedding))
        .route("/api/v1/embeddings/{job}", get(show_embedding))
        .route("/api/v1/embeddings/{job}/cancel", post(cancel_embedding))
}

/// The training API's OpenAPI description, merged into `/openapi.json` by the server.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        start,
        list_runs,
        show_run,
        cancel,
        resume,
        list_models,
        show_model,
        model_file,
        deploy,
        retire,
        deployments,
        list_encoders,
        start_embedding,
        show_embedding,
        cancel_embedding,
    ),
    tags((name = "training", description = "Training runs, the model registry and \
        deployments; researchers and the platform admin only, deploying and retiring the \
        platform admin alone"))
)]
pub struct Api;

/// Training and the registry: researchers and the platform admin (the research tier's rule).
fn researcher(user: &Principal) -> TrainResult<()> {
    require_researcher(user).map_err(TrainError::from)
}

/// Deploying and retiring decide what reaches the clinic, platform-wide: the platform admin's
/// call, not the researcher's who trained the model, nor any one hospital's admin.
fn platform_admin(user: &Principal) -> TrainResult<()> {
    if user.role.is_platform_admin() {
        Ok(())
    } else {
        Err(TrainError::Forbidden(
            "deploying and retiring models is for the platform admin".into(),
        ))
    }
}

/// Check a training request against its dataset version and queue it (body: dataset NAME@N, model, epochs, batch, lr, seed, seeds, input_px, patience, aggregation mean|top-k:K|attention, threshold, positive, device flex|cuda|wgpu, augment, name)
#[utoipa::path(
    post,
    path = "/api/v1/training/runs",
    tag = "training",
    request_body = TrainRequest,
    responses(
        (status = 202, description = "the queued run", body = RunState),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such dataset version", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn start(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    JsonBody(request): JsonBody<TrainRequest>,
) -> Result<Response, ApiError> {
    let target = format!("dataset:{}", request.dataset);
    let result = runs::start(&research, &user, request).await;
    let run = audited(&research.platform, &user, "training.start", &target, result).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(run)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    50
}

/// Training runs, newest first, with progress and per-epoch metrics
#[utoipa::path(
    get,
    path = "/api/v1/training/runs",
    tag = "training",
    params(
        ("limit" = Option<i64>, Query, description = "at most this many (default 50)"),
    ),
    responses(
        (status = 200, description = "runs", body = Vec<RunState>),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_runs(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let result = runs::list(&research, &user, q.limit).await;
    let list = audited(
        &research.platform,
        &user,
        "training.list",
        "training",
        result,
    )
    .await?;
    Ok(axum::Json(list).into_response())
}

/// A run: status, progress, note, per-epoch history, registered model
#[utoipa::path(
    get,
    path = "/api/v1/training/runs/{id}",
    tag = "training",
    params(("id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "run", body = RunState),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn show_run(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = runs::state(&research, &user, &id).await;
    // Followed by polling: only refusals are audited, not every poll.
    match result {
        Ok(run) => Ok(axum::Json(run).into_response()),
        Err(e) => {
            let target = format!("training-run:{id}");
            let run = audited(&research.platform, &user, "training.view", &target, Err(e)).await?;
            Ok(axum::Json::<runs::RunState>(run).into_response())
        }
    }
}

/// Stop a queued or running run; its checkpoints are kept for resume
#[utoipa::path(
    post,
    path = "/api/v1/training/runs/{id}/cancel",
    tag = "training",
    params(("id" = String, Path, description = "run id")),
    responses(
        (status = 200, description = "run", body = RunState),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 409, description = "conflicts with the run's or model's state", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn cancel(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = runs::cancel(&research, &user, &id).await;
    let target = format!("training-run:{id}");
    let run = audited(
        &research.platform,
        &user,
        "training.cancel",
        &target,
        result,
    )
    .await?;
    Ok(axum::Json(run).into_response())
}

/// Queue a cancelled or failed run again from its last checkpoint
#[utoipa::path(
    post,
    path = "/api/v1/training/runs/{id}/resume",
    tag = "training",
    params(("id" = String, Path, description = "run id")),
    responses(
        (status = 202, description = "run", body = RunState),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 409, description = "conflicts with the run's or model's state", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn resume(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = runs::resume(&research, &user, &id).await;
    let target = format!("training-run:{id}");
    let run = audited(
        &research.platform,
        &user,
        "training.resume",
        &target,
        result,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(run)).into_response())
}

/// Registered and retired model versions with headline metrics and deployments
#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "training",
    responses(
        (status = 200, description = "models", body = Vec<ModelRecord>),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_models(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::list(&research.platform)
            .await
            .map_err(TrainError::from),
        Err(e) => Err(e),
    };
    let list = audited(&research.platform, &user, "model.list", "models", result).await?;
    Ok(axum::Json(list).into_response())
}

/// A model version: registry entry, model card and metrics
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/versions/{version}",
    tag = "training",
    params(
        ("name" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    responses(
        (status = 200, description = "model, card and metrics: `{\"model\": ModelRecord, \"card\": {...}, \"metrics\": {...}}`", body = Object),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn show_model(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = async {
        researcher(&user)?;
        let record = registry::get(&research.platform, &name, version).await?;
        let card = registry::file(&research.platform, &name, version, "card.json").await?;
        let metrics = registry::file(&research.platform, &name, version, "metrics.json").await?;
        let parse =
            |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap_or_default();
        Ok::<_, TrainError>(serde_json::json!({
            "model": record,
            "card": parse(&card),
            "metrics": parse(&metrics),
        }))
    }
    .await;
    let target = format!("model:{name}@{version}");
    let body = audited(&research.platform, &user, "model.view", &target, result).await?;
    Ok(axum::Json(body).into_response())
}

/// A file of a model version: model.bpk, aggregator.bpk, config.json, card.json, metrics.json, roc.png, loss.png
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/versions/{version}/files/{file}",
    tag = "training",
    params(
        ("name" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
        ("file" = String, Path, description = "file name"),
    ),
    responses(
        (status = 200, description = "the file", content(("image/png"), ("application/json"), ("application/octet-stream"))),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn model_file(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version, file)): Path<(String, i64, String)>,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::file(&research.platform, &name, version, &file)
            .await
            .map_err(TrainError::from),
        Err(e) => Err(e),
    };
    let target = format!("model:{name}@{version}/{file}");
    let bytes = audited(&research.platform, &user, "model.file", &target, result).await?;
    let content_type = match file.rsplit('.').next() {
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// Where to deploy a model version, and why when its metrics do not speak for it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeployForm {
    /// The organ whose slides it serves (default: the dataset's organ).
    #[serde(default)]
    organ: Option<String>,
    /// Why deploy it: required (409 `deploy_needs_reason` without it) when the test balanced
    /// accuracy is at chance, its interval reaches chance, or it was never measured; kept on
    /// the deployment and in the audit log.
    #[serde(default)]
    reason: Option<String>,
}

/// Use this version for an organ's slides in its taxonomy (platform admin; body: organ, default the dataset's organ, and reason, required for a model not shown to beat chance)
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/versions/{version}/deploy",
    tag = "training",
    params(
        ("name" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    request_body = DeployForm,
    responses(
        (status = 200, description = "the deployment", body = Deployment),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "deploying is for the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 409, description = "conflicts with the model's state, or `deploy_needs_reason`: its test balanced accuracy does not show it beats chance (the message gives it, its interval and chance) and no reason was given", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn deploy(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
    JsonBody(form): JsonBody<DeployForm>,
) -> Result<Response, ApiError> {
    let platform = &research.platform;
    let result = async {
        platform_admin(&user)?;
        let reason = form
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let model = registry::get(platform, &name, version).await?;
        let doubt = registry::chance_level(&model);
        // A retired version is refused by the registry for what it is, not for its metrics.
        if let (Some(doubt), None, "registered") = (&doubt, reason, model.status.as_str()) {
            return Err(TrainError::NeedsReason(doubt.to_string()));
        }
        let deployment = registry::deploy(
            platform,
            &user,
            &name,
            version,
            form.organ.as_deref(),
            reason,
        )
        .await?;
        Ok::<_, TrainError>((deployment, doubt))
    }
    .await;
    let target = format!("model:{name}@{version}");
    let deployment = match result {
        // The reason is part of what was done, so it goes in the row's detail (`audited` keeps
        // a detail for failures only), with the figures it answers.
        Ok((deployment, doubt)) if deployment.reason.is_some() => {
            let reason = deployment.reason.as_deref().unwrap_or_default();
            let detail = match doubt {
                Some(doubt) => format!("reason: {reason} [{}]", doubt.figures()),
                None => format!("reason: {reason}"),
            };
            let event = AuditEvent::by(&user, "model.deploy", &target, Outcome::Ok.as_str());
            // A failed append is logged by the platform; the answer stands.
            let _ = platform.audit(event.detail(detail)).await;
            deployment
        }
        other => {
            audited(
                platform,
                &user,
                "model.deploy",
                &target,
                other.map(|(d, _)| d),
            )
            .await?
        }
    };
    Ok(axum::Json(deployment).into_response())
}

/// Retire a version (platform admin): undeployed everywhere, kept for the record, never deployed again
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/versions/{version}/retire",
    tag = "training",
    params(
        ("name" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    responses(
        (status = 200, description = "what was undeployed", body = Retired),
        (status = 400, description = "a bad parameter or a refused request", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "retiring is for the platform admin", body = ErrorBody),
        (status = 404, description = "no such run, model version or file", body = ErrorBody),
        (status = 409, description = "conflicts with the run's or model's state", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn retire(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = match platform_admin(&user) {
        Ok(()) => registry::retire(&research.platform, &name, version)
            .await
            .map_err(TrainError::from),
        Err(e) => Err(e),
    };
    let target = format!("model:{name}@{version}");
    let removed = audited(&research.platform, &user, "model.retire", &target, result).await?;
    Ok(axum::Json(Retired {
        retired: format!("{name}@{version}"),
        undeployed: removed,
    })
    .into_response())
}

/// What retiring a version did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Retired {
    /// The version, `NAME@VERSION`.
    retired: String,
    /// The deployments it was taken out of.
    undeployed: Vec<Deployment>,
}

/// The model deployed per organ and taxonomy
#[utoipa::path(
    get,
    path = "/api/v1/deployments",
    tag = "training",
    responses(
        (status = 200, description = "deployments", body = Vec<Deployment>),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn deployments(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::deployments(&research.platform)
            .await
            .map_err(TrainError::from),
        Err(e) => Err(e),
    };
    let list = audited(
        &research.platform,
        &user,
        "model.deployments",
        "deployments",
        result,
    )
    .await?;
    Ok(axum::Json(list).into_response())
}

/// Encoders a researcher can choose: the presets and the ViTs described in the pretrained
/// folder, each with whether its weights are installed
#[utoipa::path(
    get,
    path = "/api/v1/encoders",
    tag = "training",
    responses(
        (status = 200, description = "encoders", body = Vec<pathfed_models::vit::EncoderEntry>),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn list_encoders(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = embeddings::encoders(&research, &user);
    let list = audited(
        &research.platform,
        &user,
        "encoder.list",
        "encoders",
        result,
    )
    .await?;
    Ok(axum::Json(list).into_response())
}

/// Embed a dataset version's patches with an encoder into the embedding store (body: dataset
/// NAME@N, encoder, device flex|cuda|wgpu); slides already embedded with the same weights,
/// preprocessing and patches are reused. A request for work still running returns that job
#[utoipa::path(
    post,
    path = "/api/v1/embeddings",
    tag = "training",
    request_body = EmbedRequest,
    responses(
        (status = 202, description = "the queued or running extraction", body = EmbedState),
        (status = 400, description = "a bad parameter, an unknown encoder or missing weights", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such dataset version", body = ErrorBody),
        (status = 415, description = "the body is not JSON", body = ErrorBody),
        (status = 422, description = "the JSON does not match the schema", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn start_embedding(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    JsonBody(request): JsonBody<EmbedRequest>,
) -> Result<Response, ApiError> {
    let target = format!("dataset:{}", request.dataset);
    let result = embeddings::start(&research, &user, request).await;
    let state = audited(
        &research.platform,
        &user,
        "embedding.start",
        &target,
        result,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(state)).into_response())
}

/// An extraction: status, progress, and once done how many slides were embedded and reused
#[utoipa::path(
    get,
    path = "/api/v1/embeddings/{job}",
    tag = "training",
    params(("job" = String, Path, description = "the extraction's job id")),
    responses(
        (status = 200, description = "extraction", body = EmbedState),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such extraction", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn show_embedding(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    // Followed by polling: only refusals are audited, not every poll.
    match embeddings::state(&research, &user, &job).await {
        Ok(state) => Ok(axum::Json(state).into_response()),
        Err(e) => {
            let target = format!("embedding-job:{job}");
            let state: EmbedState =
                audited(&research.platform, &user, "embedding.view", &target, Err(e)).await?;
            Ok(axum::Json(state).into_response())
        }
    }
}

/// Stop an extraction; the slides embedded so far are kept and reused by the next request
#[utoipa::path(
    post,
    path = "/api/v1/embeddings/{job}/cancel",
    tag = "training",
    params(("job" = String, Path, description = "the extraction's job id")),
    responses(
        (status = 200, description = "extraction", body = EmbedState),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 403, description = "training and the registry are for researchers and the platform admin", body = ErrorBody),
        (status = 404, description = "no such extraction", body = ErrorBody),
        (status = 409, description = "the extraction has ended", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn cancel_embedding(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(job): Path<String>,
) -> Result<Response, ApiError> {
    let result = embeddings::cancel(&research, &user, &job).await;
    let target = format!("embedding-job:{job}");
    let state = audited(
        &research.platform,
        &user,
        "embedding.cancel",
        &target,
        result,
    )
    .await?;
    Ok(axum::Json(state).into_response())
}
