//! Prometheus metrics at `/metrics`: requests by route and status, latency, tiles by source.
//! Readable by the platform admin only (an API token as `Authorization: Bearer`, which
//! Prometheus sends with `authorization: { credentials_file: … }`, or a session): request
//! counts by route describe the platform's clinical activity.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pathfed_core::audit::AuditEvent;
use pathfed_core::http::{ApiError, Authenticated, ErrorBody};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TileLabels {
    source: &'static str,
}

/// The registry and the metrics in it.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    tiles: Family<TileLabels, Counter>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pathfed");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let tiles = Family::<TileLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            latency.clone(),
        );
        registry.register(
            "tiles",
            "Deep Zoom tiles served, by source (memory cache, stored JPEG passed through, rendered)",
            tiles.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tiles,
        }
    }

    /// Counts a tile served from `source`.
    pub fn tile(&self, source: &'static str) {
        self.tiles.get_or_create(&TileLabels { source }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware recording every request.
pub async fn track(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Prometheus metrics (text exposition; the platform admin only)
///
/// Requests by route and status, latency by route, tiles by source. Scrape with the platform
/// admin's API token as a bearer token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "platform",
    responses(
        (status = 200, description = "metrics", content_type = "application/openmetrics-text"),
        (status = 401, description = "not signed in, or the token is invalid or revoked", body = ErrorBody),
        (status = 403, description = "metrics are for the platform admin", body = ErrorBody),
        (status = 500, description = "the metrics could not be encoded", body = ErrorBody),
    )
)]
pub async fn render(State(state): State<AppState>, Authenticated(user): Authenticated) -> Response {
    if !user.role.is_platform_admin() {
        // Refusals are audited; scrapes are not, or every 15 s would add a row.
        let event = AuditEvent::by(&user, "metrics.read", "metrics", "denied").detail("role");
        let _ = state.platform.audit(event).await;
        return ApiError::forbidden("metrics are for the platform admin").into_response();
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry) {
        return ApiError::internal(e).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
