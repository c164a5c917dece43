//! The browser UI: our pages and scripts from `web/static`, and the viewer and upload libraries
//! from `web/node_modules` (installed from npm), embedded in release builds.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pathfed_core::http::{ApiError, ErrorBody};
use pathfed_core::routes::{Routes, get};
use rust_embed::Embed;

use super::AppState;

#[derive(Embed)]
#[folder = "../web/"]
#[include = "static/*"]
#[include = "node_modules/openseadragon/build/openseadragon/*"]
#[include = "node_modules/openseadragon/build/openseadragon/images/*"]
#[include = "node_modules/tus-js-client/dist/tus.min.js"]
#[include = "node_modules/hash-wasm/dist/sha256.umd.min.js"]
#[include = "node_modules/hash-wasm/dist/crc32.umd.min.js"]
struct Assets;

/// The web UI's routes.
pub fn router() -> Routes<AppState> {
    Routes::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/upload", get(upload))
        .route("/viewer", get(viewer))
        .route("/cases", get(cases))
        .route("/case", get(case))
        .route("/datasets", get(datasets))
        .route("/opt-out", get(opt_out))
        .route("/training", get(training))
        .route("/models", get(models))
        .route("/model-card", get(model_card))
        .route("/admin", get(admin))
        .route("/security", get(account_security))
        .route("/static/{*path}", get(static_file))
        .route("/vendor/openseadragon/{*path}", get(openseadragon))
        .route("/vendor/tus-js-client/tus.min.js", get(tus_client))
        .route("/vendor/hash-wasm/{file}", get(hash_wasm))
        .route(pathfed_consult::render::REPORT_FONT_PATH, get(report_font))
}

/// The web UI's OpenAPI description: the pages and the files they load.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        index,
        login,
        upload,
        viewer,
        cases,
        case,
        datasets,
        opt_out,
        training,
        models,
        model_card,
        admin,
        account_security,
        static_file,
        openseadragon,
        tus_client,
        hash_wasm,
        report_font,
    ),
    tags((name = "web", description = "The browser UI: HTML pages (they sign in through the \
        session API) and the scripts, styles and images they load"))
)]
pub struct Api;

/// The start page: what the signed-in user can do
#[utoipa::path(
    get,
    path = "/",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn index() -> Response {
    page("index.html").await
}

/// Sign-in page
#[utoipa::path(
    get,
    path = "/login",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn login() -> Response {
    page("login.html").await
}

/// Slide upload page (tus, resumable)
#[utoipa::path(
    get,
    path = "/upload",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn upload() -> Response {
    page("upload.html").await
}

/// Slide viewer (OpenSeadragon), with annotations and the AI panel
#[utoipa::path(
    get,
    path = "/viewer",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn viewer() -> Response {
    page("viewer.html").await
}

/// Case worklist
#[utoipa::path(
    get,
    path = "/cases",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn cases() -> Response {
    page("cases.html").await
}

/// One case: slides, reads, reports
#[utoipa::path(
    get,
    path = "/case",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn case() -> Response {
    page("case.html").await
}

/// The researchers' dataset catalogue
#[utoipa::path(
    get,
    path = "/datasets",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn datasets() -> Response {
    page("datasets.html").await
}

/// Record a patient's research opt-out (submitters, admins)
#[utoipa::path(
    get,
    path = "/opt-out",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn opt_out() -> Response {
    page("opt-out.html").await
}

/// Training runs: start, follow, cancel, resume
#[utoipa::path(
    get,
    path = "/training",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn training() -> Response {
    page("training.html").await
}

/// The model registry: cards, plots, deploy, retire
#[utoipa::path(
    get,
    path = "/models",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn models() -> Response {
    page("models.html").await
}

/// A model card, for anyone who meets the model's output
#[utoipa::path(
    get,
    path = "/model-card",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn model_card() -> Response {
    page("model-card.html").await
}

/// The administration console: hospitals, users, API tokens, failed jobs and the audit log
#[utoipa::path(
    get,
    path = "/admin",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn admin() -> Response {
    page("admin.html").await
}

/// Account security: set up or turn off the second factor, change the password
#[utoipa::path(
    get,
    path = "/security",
    tag = "web",
    security(()),
    responses((status = 200, description = "HTML page", content_type = "text/html")),
)]
async fn account_security() -> Response {
    page("security.html").await
}

/// A file of the UI (scripts, styles, images) from `web/static`
#[utoipa::path(
    get,
    path = "/static/{path}",
    tag = "web",
    security(()),
    params(("path" = String, Path, description = "file path under `web/static` (may hold `/`)")),
    responses(
        (status = 200, description = "the file, with its MIME type", content_type = "*/*"),
        (status = 404, description = "no such file", body = ErrorBody),
    ),
)]
async fn static_file(Path(path): Path<String>) -> Response {
    asset(format!("static/{path}")).await
}

/// OpenSeadragon, the viewer library, and its button images
#[utoipa::path(
    get,
    path = "/vendor/openseadragon/{path}",
    tag = "web",
    security(()),
    params(("path" = String, Path, description = "file path in OpenSeadragon's build (may hold `/`)")),
    responses(
        (status = 200, description = "the file, with its MIME type", content_type = "*/*"),
        (status = 404, description = "no such file, or the npm libraries were not installed", body = ErrorBody),
    ),
)]
async fn openseadragon(Path(path): Path<String>) -> Response {
    asset(format!(
        "node_modules/openseadragon/build/openseadragon/{path}"
    ))
    .await
}

/// The tus upload client library
#[utoipa::path(
    get,
    path = "/vendor/tus-js-client/tus.min.js",
    tag = "web",
    security(()),
    responses(
        (status = 200, description = "JavaScript", content_type = "text/javascript"),
        (status = 404, description = "the npm libraries were not installed", body = ErrorBody),
    ),
)]
async fn tus_client() -> Response {
    asset("node_modules/tus-js-client/dist/tus.min.js".into()).await
}

/// The report font (IPAexGothic, IPA Font License), which the HTML report prints with
#[utoipa::path(
    get,
    path = "/fonts/report.ttf",
    tag = "web",
    security(()),
    responses((status = 200, description = "TrueType font", content_type = "font/ttf")),
)]
async fn report_font() -> Response {
    let mut response = pathfed_consult::render::report_font().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("font/ttf"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    // Fonts are fetched with CORS; the sign-out preview's sandboxed frame has no origin.
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The hash library (WebAssembly) the upload page uses: SHA-256 of every upload, CRC-32 of the
/// DICOM instances it zips
#[utoipa::path(
    get,
    path = "/vendor/hash-wasm/{file}",
    tag = "web",
    security(()),
    params(("file" = String, Path, description = "`sha256.umd.min.js` or `crc32.umd.min.js`")),
    responses(
        (status = 200, description = "JavaScript", content_type = "text/javascript"),
        (status = 404, description = "another file, or the npm libraries were not installed", body = ErrorBody),
    ),
)]
async fn hash_wasm(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "sha256.umd.min.js" | "crc32.umd.min.js" => {
            asset(format!("node_modules/hash-wasm/dist/{file}")).await
        }
        _ => ApiError::not_found("file").into_response(),
    }
}

async fn page(name: &'static str) -> Response {
    asset(format!("static/{name}")).await
}

async fn asset(path: String) -> Response {
    match Assets::get(&path) {
        Some(file) => {
            let mime = file.metadata.mimetype();
            // Our own files change with each release; vendor files are versioned by npm.
            let cache = if path.starts_with("static/") {
                "no-cache"
            } else {
                "public, max-age=86400"
            };
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_str(mime)
                            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
                    ),
                    (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None if path.starts_with("node_modules/") => (
            StatusCode::NOT_FOUND,
            "web library missing: run `make run` (or `npm ci` in web/) and rebuild",
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
