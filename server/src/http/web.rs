//! The browser UI: our pages and scripts from `web/static`, and the viewer and upload libraries
//! from `web/node_modules` (installed from npm), embedded in release builds.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::Embed;

use super::AppState;

#[derive(Embed)]
#[folder = "../web/"]
#[include = "static/*"]
#[include = "node_modules/openseadragon/build/openseadragon/*"]
#[include = "node_modules/openseadragon/build/openseadragon/images/*"]
#[include = "node_modules/tus-js-client/dist/tus.min.js"]
#[include = "node_modules/hash-wasm/dist/sha256.umd.min.js"]
struct Assets;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| page("index.html")))
        .route("/login", get(|| page("login.html")))
        .route("/upload", get(|| page("upload.html")))
        .route("/viewer", get(|| page("viewer.html")))
        .route("/cases", get(|| page("cases.html")))
        .route("/case", get(|| page("case.html")))
        .route("/datasets", get(|| page("datasets.html")))
        .route("/opt-out", get(|| page("opt-out.html")))
        .route("/training", get(|| page("training.html")))
        .route("/models", get(|| page("models.html")))
        .route("/model-card", get(|| page("model-card.html")))
        .route(
            "/static/{*path}",
            get(|Path(p): Path<String>| asset(format!("static/{p}"))),
        )
        .route(
            "/vendor/openseadragon/{*path}",
            get(|Path(p): Path<String>| {
                asset(format!(
                    "node_modules/openseadragon/build/openseadragon/{p}"
                ))
            }),
        )
        .route(
            "/vendor/tus-js-client/tus.min.js",
            get(|| asset("node_modules/tus-js-client/dist/tus.min.js".into())),
        )
        .route(
            "/vendor/hash-wasm/sha256.umd.min.js",
            get(|| asset("node_modules/hash-wasm/dist/sha256.umd.min.js".into())),
        )
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
