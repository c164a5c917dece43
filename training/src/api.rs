//! The training API, for researchers: start, follow, cancel and resume runs; read the model
//! registry (cards, metrics, plots, weights); deploy and retire models. Every call is audited.

use axum::Router;
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pathfed_core::Platform;
use pathfed_core::accounts::Principal;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, JsonBody};
use pathfed_datasets::Research;
use pathfed_datasets::versions::require_researcher;
use serde::Deserialize;

use crate::error::{TrainError, TrainResult};
use crate::registry;
use crate::runs::{self, TrainRequest};

/// The training and registry routes.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Research: FromRef<S>,
    Platform: FromRef<S>,
{
    Router::new()
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
}

async fn audited<T>(
    research: &Research,
    user: &Principal,
    action: &str,
    target: &str,
    result: TrainResult<T>,
) -> Result<T, ApiError> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(TrainError::NotFound(_) | TrainError::Forbidden(_)) => "denied",
        Err(TrainError::Invalid(_) | TrainError::Conflict(_) | TrainError::Device { .. }) => {
            "refused"
        }
        Err(TrainError::Dataset(pathfed_datasets::DatasetError::Forbidden(_))) => "denied",
        Err(_) => "failed",
    };
    let mut event = AuditEvent::by(user, action, target, outcome);
    if let Err(e) = &result {
        event = event.detail(e.to_string());
    }
    let _ = research.platform.audit(event).await;
    result.map_err(ApiError::from)
}

fn researcher(user: &Principal) -> TrainResult<()> {
    require_researcher(user).map_err(TrainError::from)
}

async fn start(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    JsonBody(request): JsonBody<TrainRequest>,
) -> Result<Response, ApiError> {
    let target = format!("dataset:{}", request.dataset);
    let result = runs::start(&research, &user, request).await;
    let run = audited(&research, &user, "training.start", &target, result).await?;
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

async fn list_runs(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let result = runs::list(&research, &user, q.limit).await;
    let list = audited(&research, &user, "training.list", "training", result).await?;
    Ok(axum::Json(list).into_response())
}

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
            let run = audited(&research, &user, "training.view", &target, Err(e)).await?;
            Ok(axum::Json::<runs::RunState>(run).into_response())
        }
    }
}

async fn cancel(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = runs::cancel(&research, &user, &id).await;
    let target = format!("training-run:{id}");
    let run = audited(&research, &user, "training.cancel", &target, result).await?;
    Ok(axum::Json(run).into_response())
}

async fn resume(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let result = runs::resume(&research, &user, &id).await;
    let target = format!("training-run:{id}");
    let run = audited(&research, &user, "training.resume", &target, result).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(run)).into_response())
}

async fn list_models(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::list(&research.platform).await,
        Err(e) => Err(e),
    };
    let list = audited(&research, &user, "model.list", "models", result).await?;
    Ok(axum::Json(list).into_response())
}

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
        Ok(serde_json::json!({
            "model": record,
            "card": parse(&card),
            "metrics": parse(&metrics),
        }))
    }
    .await;
    let target = format!("model:{name}@{version}");
    let body = audited(&research, &user, "model.view", &target, result).await?;
    Ok(axum::Json(body).into_response())
}

async fn model_file(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version, file)): Path<(String, i64, String)>,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::file(&research.platform, &name, version, &file).await,
        Err(e) => Err(e),
    };
    let target = format!("model:{name}@{version}/{file}");
    let bytes = audited(&research, &user, "model.file", &target, result).await?;
    let content_type = match file.rsplit('.').next() {
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployForm {
    #[serde(default)]
    organ: Option<String>,
}

async fn deploy(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
    JsonBody(form): JsonBody<DeployForm>,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => {
            registry::deploy(
                &research.platform,
                &user,
                &name,
                version,
                form.organ.as_deref(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let target = format!("model:{name}@{version}");
    let deployment = audited(&research, &user, "model.deploy", &target, result).await?;
    Ok(axum::Json(deployment).into_response())
}

async fn retire(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::retire(&research.platform, &name, version).await,
        Err(e) => Err(e),
    };
    let target = format!("model:{name}@{version}");
    let removed = audited(&research, &user, "model.retire", &target, result).await?;
    Ok(axum::Json(
        serde_json::json!({ "retired": format!("{name}@{version}"), "undeployed": removed }),
    )
    .into_response())
}

async fn deployments(
    State(research): State<Research>,
    Authenticated(user): Authenticated,
) -> Result<Response, ApiError> {
    let result = match researcher(&user) {
        Ok(()) => registry::deployments(&research.platform).await,
        Err(e) => Err(e),
    };
    let list = audited(&research, &user, "model.deployments", "deployments", result).await?;
    Ok(axum::Json(list).into_response())
}
