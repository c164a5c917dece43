//! Model cards for everyone who meets a model's output: pathologists follow the AI panel's
//! link here, researchers see the same card in the registry. The card, its headline metrics,
//! the ROC plot and the concordance with pathologists are aggregate facts about the model, with
//! nothing of any patient or case, so any signed-in user may read them. Slide-level results are
//! clinical data and are served with the slide API (tag `ai`), to the pathologists who
//! diagnose the slide only: never to the referring hospital's staff.

use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::Platform;
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use pathfed_core::routes::{Routes, get};
use pathfed_models::registry;
use serde_json::json;

use crate::concordance::concordance;
use crate::error::InferError;

/// The model-card routes.
pub fn router<S>() -> Routes<S>
where
    S: Clone + Send + Sync + 'static,
    Platform: FromRef<S>,
{
    Routes::new()
        .route("/api/v1/models/{name}/versions/{version}/card", get(card))
        .route(
            "/api/v1/models/{name}/versions/{version}/card/roc.png",
            get(roc),
        )
}

/// The model-card API's OpenAPI description, merged into `/openapi.json` by the server.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(card, roc),
    tags((name = "inference", description = "Model cards for everyone who meets a model's \
        output (slide-level AI results are under the slide API, tag `ai`)"))
)]
pub struct Api;

/// The model card for any signed-in user (pathologists follow the AI panel here): card, headline metrics, concordance with the pathologists' final diagnoses
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/versions/{version}/card",
    tag = "inference",
    params(
        ("name" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    responses(
        (status = 200, description = "`{\"model\", \"card\", \"concordance\"}`", body = Object),
        (status = 400, description = "a bad path parameter", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such model version", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn card(
    State(platform): State<Platform>,
    Authenticated(user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let target = format!("model:{name}@{version}");
    let found = registry::get(&platform, &name, version).await;
    let model = match found {
        Ok(model) => model,
        Err(e) => {
            let _ = platform
                .audit(AuditEvent::by(&user, "model.card", &target, "denied").detail(e.to_string()))
                .await;
            return Err(InferError::from(e).into());
        }
    };
    let card: serde_json::Value = serde_json::from_slice(
        &registry::file(&platform, &name, version, "card.json")
            .await
            .map_err(InferError::from)?,
    )
    .map_err(|e| ApiError::internal(format!("card of {target}: {e}")))?;
    let agreement = concordance(&platform, &name, version).await?;
    let _ = platform
        .audit(AuditEvent::by(&user, "model.card", &target, "ok"))
        .await;
    Ok(axum::Json(json!({
        "model": {
            "name": model.name,
            "version": model.version,
            "status": model.status,
            "architecture": model.architecture,
            "dataset": model.dataset,
            "dataset_version": model.dataset_version,
            "taxonomy": model.taxonomy,
            "organ": model.organ,
            "classes": model.classes,
            "positive": model.positive,
            "summary": model.summary,
            "deployed_for": model.deployed_for,
            "created_at": model.created_at,
        },
        "card": card,
        "concordance": agreement,
    }))
    .into_response())
}

/// The model's ROC plot on its test split
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}/versions/{version}/card/roc.png",
    tag = "inference",
    params(
        ("name" = String, Path, description = "model name"),
        ("version" = i64, Path, description = "model version"),
    ),
    responses(
        (status = 200, description = "PNG", content_type = "image/png"),
        (status = 400, description = "a bad path parameter", body = ErrorBody),
        (status = 401, description = "not signed in", body = ErrorBody),
        (status = 404, description = "no such model version", body = ErrorBody),
        (status = 500, description = "server-side failure (the message names a log entry)", body = ErrorBody),
    )
)]
async fn roc(
    State(platform): State<Platform>,
    Authenticated(_user): Authenticated,
    Path((name, version)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    let png = registry::file(&platform, &name, version, "roc.png")
        .await
        .map_err(InferError::from)?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
        ],
        png,
    )
        .into_response())
}
