//! The API description served at `/openapi.json`, generated from the handlers.
//!
//! Every handler carries `#[utoipa::path(…)]` (method, path, parameters, body, answers) and each
//! service lists its handlers in an `Api` (`#[derive(utoipa::OpenApi)]`, next to its router);
//! [`document`] merges those and adds the info block and the security schemes. Nothing here is
//! kept by hand, so the description follows the code; the OpenAPI test
//! (`server/tests/it/openapi.rs`) checks it against the routes the application registers
//! (`pathfed routes`).

use pathfed_core::http::SESSION_COOKIE;
use utoipa::OpenApi;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Components, Info};

/// What the document says about the API as a whole.
const DESCRIPTION: &str = "Telepathology consultation platform. Authenticate with a session \
     cookie (browsers; unsafe methods need X-CSRF-Token) or an API token (Authorization: \
     Bearer). Errors are {\"error\": {\"code\", \"message\"}} (schema ErrorBody), whatever \
     answers them: a handler, the authentication, or axum's refusal of a path, query or body \
     it cannot parse.";

/// The whole description: every service's operations and schemas, the info block, and the
/// two ways to authenticate (`token`, `session`), required unless an operation says otherwise.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = super::PlatformApi::openapi();
    for part in [
        super::session::Api::openapi(),
        super::admin::Api::openapi(),
        super::audit::Api::openapi(),
        super::slides::Api::openapi(),
        super::iiif::Api::openapi(),
        super::dicomweb::Api::openapi(),
        super::dicomweb::stow::Api::openapi(),
        super::ai::Api::openapi(),
        pathfed_ingest::tus::Api::openapi(),
        pathfed_consult::api::Api::openapi(),
        pathfed_datasets::api::Api::openapi(),
        pathfed_training::api::Api::openapi(),
        pathfed_inference::api::Api::openapi(),
        super::web::Api::openapi(),
    ] {
        doc.merge(part);
    }
    let mut info = Info::new("pathfed API", env!("CARGO_PKG_VERSION"));
    info.description = Some(DESCRIPTION.to_string());
    doc.info = info;
    let components = doc.components.get_or_insert_with(Components::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
    );
    doc.security = Some(vec![
        SecurityRequirement::new("token", Vec::<String>::new()),
        SecurityRequirement::new("session", Vec::<String>::new()),
    ]);
    qualify_operation_ids(&mut doc);
    doc
}

/// Prefixes each operation id (the handler's name) with its tag: handlers of different services
/// share names (`list`, `cancel`), and OpenAPI wants operation ids unique.
fn qualify_operation_ids(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            let tag = operation.tags.as_ref().and_then(|tags| tags.first());
            if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
                *id = format!("{tag}.{id}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::document;

    /// `{*rest}` (axum's catch-all) is `{rest}` in OpenAPI; every other path is written alike.
    fn openapi_path(axum_path: &str) -> String {
        axum_path.replace("{*", "{")
    }

    /// The fast half of the integration test: every registered route is described and every
    /// description names a registered route, without starting a server.
    #[test]
    fn every_route_is_described_and_nothing_else() {
        let routed: BTreeSet<(String, String)> = super::super::routes()
            .listed()
            .iter()
            .map(|(method, path)| (method.as_str().to_lowercase(), openapi_path(path)))
            .collect();
        let doc = serde_json::to_value(document()).expect("the document serialises");
        let mut described = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths").iter() {
            for method in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                if item.get(method).is_some() {
                    described.insert((method.to_string(), path.clone()));
                }
            }
        }
        let undocumented: Vec<_> = routed.difference(&described).collect();
        let unrouted: Vec<_> = described.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routes without #[utoipa::path] (or missing from their crate's Api): {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "described but not routed: {unrouted:?}"
        );
    }
}
