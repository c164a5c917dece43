//! The HTTP application: composes the service routers, the web UI, health, metrics and the
//! API description, and runs them with graceful shutdown.

mod ai;
mod metrics;
mod session;
mod slides;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pathfed_consult::Consult;
use pathfed_core::Platform;
use pathfed_core::http::ApiError;
use pathfed_datasets::Research;
use pathfed_ingest::Ingest;

pub use ai::AiService;
pub use metrics::Metrics;
pub use slides::SlideService;

/// Everything a handler may need; each service extracts its own part.
#[derive(Clone)]
pub struct AppState {
    /// Database, store, audit, cache.
    pub platform: Platform,
    /// Uploads.
    pub ingest: Ingest,
    /// Cases, reads, reports and annotations.
    pub consult: Consult,
    /// The research tier.
    pub research: Research,
    /// Open slides and tiles.
    pub slides: Arc<SlideService>,
    /// AI results' score maps for overlay tiles.
    pub ai: Arc<AiService>,
    /// Prometheus registry.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// The services over an opened platform; uploads are validated by this program
    /// (`pathfed slide validate`) in a child process.
    pub fn new(platform: Platform) -> anyhow::Result<Self> {
        use anyhow::Context;
        let exe = std::env::current_exe().context("locating this program for slide validation")?;
        let ingest = Ingest::new(platform.clone(), &exe).context("preparing the staging folder")?;
        let consult = Consult::new(platform.clone())
            .context("loading diagnosis taxonomies and patient-id keys")?;
        let research =
            Research::new(platform.clone()).context("loading the research pseudonym key")?;
        Ok(Self {
            consult,
            research,
            slides: Arc::new(SlideService::new(&platform.config)),
            ai: Arc::new(AiService::new()),
            metrics: Arc::new(Metrics::new()),
            platform,
            ingest,
        })
    }
}

impl FromRef<AppState> for Platform {
    fn from_ref(state: &AppState) -> Self {
        state.platform.clone()
    }
}

impl FromRef<AppState> for Consult {
    fn from_ref(state: &AppState) -> Self {
        state.consult.clone()
    }
}

impl FromRef<AppState> for Research {
    fn from_ref(state: &AppState) -> Self {
        state.research.clone()
    }
}

impl FromRef<AppState> for Ingest {
    fn from_ref(state: &AppState) -> Self {
        state.ingest.clone()
    }
}

/// The API description served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// The whole application.
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi))
        .merge(session::router())
        .merge(slides::router())
        .merge(ai::router())
        .merge(pathfed_ingest::router())
        .merge(pathfed_consult::router())
        .merge(pathfed_datasets::api::router())
        .merge(pathfed_training::api::router())
        .merge(pathfed_inference::api::router())
        .merge(web::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data: blob:; \
             style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn healthz(State(platform): State<Platform>) -> Result<Response, ApiError> {
    platform.db.ping().await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Opens the platform and serves until Ctrl-C or SIGTERM.
pub async fn serve(config: pathfed_core::Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let listen = config.listen.clone();
    let platform = Platform::open(config)
        .await
        .context("opening the platform")?;
    let users = pathfed_core::accounts::count_users(&platform.db).await?;
    let state = AppState::new(platform)?;
    if let Err(e) = state.ingest.sweep().await {
        tracing::warn!(error = %e, "initial upload sweep failed");
    }
    state.ingest.spawn_janitor();
    let workers = state.platform.config.research.serve_workers;
    if workers > 0 {
        for pool in crate::workers::pools(&state.research, &[], workers)? {
            tracing::info!(kinds = ?pool.kinds(), workers, "in-process workers started");
            tokio::spawn(pool.run());
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    println!("pathfed listening on http://{address}");
    if users == 0 {
        println!("no users yet: create the first admin with `pathfed admin init --help`");
    }
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    println!("pathfed stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
