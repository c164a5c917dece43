//! The HTTP application: composes the service routers, the web UI, health, metrics and the
//! API description, and runs them with graceful shutdown.

mod admin;
mod ai;
mod audit;
mod cors;
mod dicomweb;
mod iiif;
mod metrics;
mod openapi;
mod session;
mod slides;
mod tls;
mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_consult::Consult;
use pathfed_core::Platform;
use pathfed_core::http::{ApiError, ErrorBody};
use pathfed_core::routes::{Routes, get};
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

/// This server's origin for absolute URLs in answers (IIIF `id`s, DICOMweb Retrieve URLs):
/// `notify.base_url` where the operator set it (the address people open, one canonical name
/// however the server is reached), else `https` or `http` (as the request came, through our TLS
/// or a trusted proxy's) and the request's `Host`, or the request line's authority; `None` when
/// neither is a plain host name.
pub(crate) fn public_origin(
    platform: &Platform,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Option<String> {
    let configured = platform
        .config
        .notify
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty());
    if let Some(url) = configured {
        return Some(url.trim_end_matches('/').to_string());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .filter(|host| is_host(host))?;
    let scheme = if pathfed_core::request_context::is_https() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{host}"))
}

/// A host name or address with an optional port, and nothing that could leave the URL.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// Every route of the application, registered through [`Routes`] so that they can be listed
/// (`pathfed routes`); [`app`] serves exactly these. A route's documentation is the
/// `#[utoipa::path]` on its handler and the handler's place in its service's `Api`.
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi_json))
        .merge(session::router())
        .merge(admin::router())
        .merge(audit::router())
        .merge(slides::router())
        .merge(iiif::router())
        .merge(dicomweb::router())
        .merge(ai::router())
        .merge(pathfed_ingest::router())
        .merge(pathfed_consult::router())
        .merge(pathfed_datasets::api::router())
        .merge(pathfed_training::api::router())
        .merge(pathfed_inference::api::router())
        .merge(web::router())
}

/// The platform's own routes' OpenAPI description: health, metrics and the description itself.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(healthz, metrics::render, openapi_json),
    tags((name = "platform", description = "Health, metrics and this description"))
)]
struct PlatformApi;

/// The whole application.
pub fn app(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    let transport = Arc::new(tls::Transport::new(&state.platform.config.tls));
    routes()
        .into_router()
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .layer(axum::middleware::map_response(security_headers))
        // Outermost, so that everything inside sees the client's address and whether it came
        // over HTTPS (`pathfed_core::request_context`).
        .layer(axum::middleware::from_fn_with_state(
            transport,
            tls::context,
        ))
        .with_state(state)
}

/// Gives every error that is not JSON yet the one error shape, keeping its status, headers and
/// text: axum's own refusals (a path, query or JSON body its extractors cannot parse, a method
/// the route does not have) answer in plain text or with no body at all. JSON errors and every
/// success (tiles, pages, reports) pass unchanged.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Refusal texts are a line or two; a longer body is not worth buffering as a message.
    let text = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let body = serde_json::to_vec(&ErrorBody::new(error_code(status), message)).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Whether a response says its body is JSON (`application/json`, `application/geo+json`, …).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json") || m.ends_with("+json"))
}

/// The error code for a status when the refusal came without one.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "client_error",
    }
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    // Clinical answers (case JSON, reports, label images, the session) are kept nowhere: only
    // what says otherwise itself (static files, and tiles where `tiles.browser_cache` allows)
    // may be cached, and then privately.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
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

/// Liveness and database check
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "platform",
    security(()),
    responses(
        (status = 200, description = "healthy: `{\"status\": \"ok\"}`", body = Object),
        (status = 500, description = "the database does not answer", body = ErrorBody),
    )
)]
async fn healthz(State(platform): State<Platform>) -> Result<Response, ApiError> {
    platform.db.ping().await?;
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({"status": "ok"})),
    )
        .into_response())
}

/// This description
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "platform",
    security(()),
    responses(
        (status = 200, description = "OpenAPI document", body = Object),
        (status = 500, description = "the document could not be written", body = ErrorBody),
    )
)]
async fn openapi_json() -> Response {
    // The document is fixed for the life of the binary: built once, not per request.
    static DOCUMENT: std::sync::OnceLock<Result<String, String>> = std::sync::OnceLock::new();
    let document =
        DOCUMENT.get_or_init(|| openapi::document().to_json().map_err(|e| e.to_string()));
    match document {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.clone(),
        )
            .into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// Opens the platform, starts its worker processes and serves until Ctrl-C or SIGTERM.
pub async fn serve(
    config: pathfed_core::Config,
    launch: crate::workers::supervise::Launch,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let listen = config.listen.clone();
    // Before anything is opened: a certificate or key that cannot be used stops the start here,
    // naming the file, rather than leaving the platform on plain HTTP.
    let tls = tls::server_config(&config.tls).context("loading the TLS certificate and key")?;
    let behind_proxy = !config.tls.proxies().is_empty();
    let platform = Platform::open(config)
        .await
        .context("opening the platform")?;
    let users = pathfed_core::accounts::count_users(&platform.db).await?;
    let state = AppState::new(platform)?;
    if let Err(e) = state.ingest.sweep().await {
        tracing::warn!(error = %e, "initial upload sweep failed");
    }
    state.ingest.spawn_janitor();
    // A signed checkpoint of the audit chain's head now, every `audit.checkpoint_minutes` and
    // at shutdown (`pathfed_core::audit_checkpoint`).
    let audit_platform = state.platform.clone();
    pathfed_core::audit_checkpoint::write_logged(&audit_platform, "startup").await;
    let checkpoints = pathfed_core::audit_checkpoint::spawn_periodic(audit_platform.clone());
    if launch.concurrency > 0 {
        crate::workers::supervise::start(&launch)?;
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Plain HTTP reachable from other machines, with no proxy said to add TLS in front: clinical
    // data and passwords would cross the network in clear. Allowed (a proxy may be set up
    // later), but never silently.
    if tls.is_none() && !behind_proxy && !address.ip().is_loopback() {
        eprintln!(
            "WARNING: serving plain HTTP on {address}, reachable from other machines: patient \
             data and passwords cross the network unencrypted. Set tls.cert_file and \
             tls.key_file (PATHFED_TLS_CERT_FILE, PATHFED_TLS_KEY_FILE) to serve HTTPS, or put \
             an HTTPS reverse proxy in front and name it in tls.trusted_proxies \
             (PATHFED_TLS_TRUSTED_PROXIES), or listen on 127.0.0.1 only."
        );
        tracing::warn!(
            %address,
            "serving plain HTTP on a non-loopback address without TLS and without \
             tls.trusted_proxies: set tls.cert_file and tls.key_file, or tls.trusted_proxies"
        );
    }
    println!("pathfed listening on {scheme}://{address}");
    if users == 0 {
        println!("no users yet: create the platform admin with `pathfed admin init --help`");
    }
    // The client's address feeds the sign-in throttle and the audit log.
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    match tls {
        None => axum::serve(listener, service)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?,
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let stop = handle.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                // As the plain server does: stop accepting, let requests in flight finish.
                stop.graceful_shutdown(None);
            });
            let listener = listener
                .into_std()
                .context("handing the listener to the TLS server")?;
            axum_server::from_tcp_rustls(
                listener,
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .handle(handle)
            .serve(service)
            .await
            .context("serving HTTPS")?;
        }
    }
    if let Some(task) = checkpoints {
        task.abort();
    }
    pathfed_core::audit_checkpoint::write_logged(&audit_platform, "shutdown").await;
    println!("pathfed stopped");
    Ok(())
}

/// Resolves at Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
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
