//! CORS for the image services that viewers on other origins read (IIIF, DICOMweb): any origin,
//! never with credentials, so such a viewer authenticates with an API token
//! (`Authorization: Bearer`) and a user's SameSite=Strict session cookie is never used across
//! origins (a browser does not expose a credentialed answer under `*`).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::AppState;

/// Adds the CORS headers to every answer of a route, errors included, so that a viewer on
/// another origin can read what went wrong too.
pub(super) fn allow_any_origin(methods: MethodRouter<AppState>) -> MethodRouter<AppState> {
    methods.layer(axum::middleware::map_response(cors_headers))
}

async fn cors_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    // IIIF's canonical and profile `Link`s, DICOMweb's search `Warning`s, and both's ETags.
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Link, ETag, Warning"),
    );
    response
}

/// A CORS preflight's answer: GET from anywhere, with an API token and a cache validator.
pub(super) fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Accept, If-None-Match"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            ),
        ],
    )
        .into_response()
}
