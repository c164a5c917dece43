//! The API description is the API. `/openapi.json` describes every route the application
//! registers (as `pathfed routes` lists them) and nothing else; every described operation is
//! answered by a route, not by the `no such endpoint` fallback or a 405; and every error seen
//! on the way, axum's own refusals of a bad path parameter, query string or JSON body included,
//! is JSON `{"error": {"code", "message"}}`.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use reqwest::{Method, StatusCode, header};
use serde_json::Value;

use crate::support::{Backend, TestServer, bin, client};

/// The methods an OpenAPI path item can hold that axum routes (TRACE and CONNECT are not used).
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// axum's catch-all `{*rest}` is `{rest}` in OpenAPI; everything else is written alike.
fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

/// The routes the binary registers, as (lower-case method, OpenAPI path).
fn registered() -> BTreeSet<(String, String)> {
    let out = Command::new(bin()).arg("routes").output().unwrap();
    assert!(
        out.status.success(),
        "pathfed routes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: BTreeSet<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (method, path) = line.split_once(' ').unwrap();
            (method.to_lowercase(), openapi_path(path))
        })
        .collect();
    assert!(listed.len() > 50, "too few routes listed: {listed:?}");
    listed
}

/// A URL path for a route path: every `{param}` (or `{*param}`) becomes `1`, which every
/// parameter type parses, so the request reaches the handler.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        out.push('1');
        rest = &rest[start + rest[start..].find('}').unwrap() + 1..];
    }
    out.push_str(rest);
    out
}

/// One answer the test saw.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The answer of the `not_found` fallback: no route has this path.
    fn is_fallback(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
            && self.json()["error"]["message"] == "no such endpoint"
    }
}

/// Sends one request; `body` is (content type, bytes).
async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> Seen {
    let mut request = client().request(method.clone(), format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some((content_type, bytes)) = body {
        request = request
            .header(header::CONTENT_TYPE, content_type)
            .body(bytes.to_vec());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = response.bytes().await.unwrap().to_vec();
    Seen {
        method,
        path: path.to_string(),
        status,
        content_type,
        body,
    }
}

/// Fails unless an error answer is the JSON error shape (HEAD answers carry no body).
fn assert_json_error(seen: &Seen) {
    if !(seen.status.is_client_error() || seen.status.is_server_error())
        || seen.method == Method::HEAD
    {
        return;
    }
    assert!(
        seen.content_type.starts_with("application/json"),
        "{} {} answered {} as {:?}: {}",
        seen.method,
        seen.path,
        seen.status,
        seen.content_type,
        String::from_utf8_lossy(&seen.body)
    );
    let value = seen.json();
    for field in ["code", "message"] {
        assert!(
            value["error"][field]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{} {} answered {} without error.{field}: {value}",
            seen.method,
            seen.path,
            seen.status
        );
    }
}

/// (method, path) of every operation the document describes.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((method.to_string(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_describes_every_route_and_every_error_is_json() {
    let server = TestServer::start(Backend::Local);
    let admin = server.user("Hub OA", "hub", "oa_admin", "admin");
    let researcher = server.user("Hub OA", "hub", "oa_researcher", "researcher");
    let mut seen = Vec::new();

    // The document itself: generated, OpenAPI 3.1, with its info block and both ways in.
    let answer = call(&server, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert_eq!(doc["info"]["title"], "pathfed API");
    assert!(!doc["info"]["version"].as_str().unwrap().is_empty());
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["token"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["session"]["in"], "cookie", "{schemes}");
    assert_eq!(schemes["session"]["name"], "pathfed_session", "{schemes}");
    let error_schema = &doc["components"]["schemas"]["ErrorBody"];
    assert!(error_schema.is_object(), "no ErrorBody schema");

    // (a) What the application registers is what the document describes, both ways.
    let routes = registered();
    let operations = described(&doc);
    let undocumented: Vec<_> = routes.difference(&operations).collect();
    assert!(
        undocumented.is_empty(),
        "routes without #[utoipa::path], or missing from their service's Api: {undocumented:?}"
    );
    let unrouted: Vec<_> = operations.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "described but not registered: {unrouted:?}"
    );

    // Operation ids are unique, every operation has a summary and a tag, and every error
    // answer described names the one error schema.
    let mut ids = BTreeSet::new();
    for (method, path) in &operations {
        let operation = &doc["paths"][path][method];
        let id = operation["operationId"].as_str().unwrap_or_default();
        assert!(ids.insert(id.to_string()), "operationId {id:?} twice");
        assert!(
            operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{method} {path} has no summary"
        );
        assert!(
            operation["tags"][0].is_string(),
            "{method} {path} has no tag"
        );
        for (status, response) in operation["responses"].as_object().unwrap() {
            let code: u16 = status.parse().unwrap();
            if code < 400 || method == "head" {
                continue;
            }
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                schema, "#/components/schemas/ErrorBody",
                "{method} {path} {status}: {response}"
            );
        }
    }

    // Probing each registered path with every method, unauthenticated: a method that is not
    // refused with 405 must be registered (a GET route also answers HEAD), so nothing slipped
    // in around the listed registration. Without a token nothing changes state.
    let paths: BTreeSet<&String> = routes.iter().map(|(_, path)| path).collect();
    for path in paths {
        let url = concrete(path);
        for method in METHODS {
            let answer = call(
                &server,
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                &url,
                None,
                None,
            )
            .await;
            assert!(
                !answer.is_fallback(),
                "{method} {url}: the fallback answered"
            );
            let implied = method == "head" && routes.contains(&("get".to_string(), path.clone()));
            if answer.status == StatusCode::METHOD_NOT_ALLOWED {
                assert!(
                    !routes.contains(&(method.to_string(), path.clone())),
                    "{method} {path} is registered but answered 405"
                );
                assert!(
                    answer.content_type.starts_with("application/json"),
                    "405 is not JSON"
                );
            } else {
                assert!(
                    implied || routes.contains(&(method.to_string(), path.clone())),
                    "{method} {path} answers {} but is not registered, so not documented",
                    answer.status
                );
            }
            seen.push(answer);
        }
    }

    // (b) Every described operation exists: with an admin's token (a researcher's under the
    // research tier's paths) it is answered by its route. No request carries a body, so none
    // changes anything: ids are `1`, which names nothing.
    for (method, path) in &operations {
        let token = if path.starts_with("/api/v1/datasets")
            || path.starts_with("/api/v1/research")
            || path.starts_with("/api/v1/training")
        {
            &researcher
        } else {
            &admin
        };
        let url = concrete(path);
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let answer = call(&server, method.clone(), &url, Some(token.as_str()), None).await;
        assert!(!answer.is_fallback(), "{method} {url}: no route answered");
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {url}: described but refused with 405"
        );
        seen.push(answer);
    }

    // (c) axum's own refusals answer in the error shape too, with their status kept:
    // (method, path, body with its content type, status, code).
    type Refusal<'a> = (
        Method,
        &'a str,
        Option<(&'a str, &'a [u8])>,
        StatusCode,
        &'a str,
    );
    let refusals: [Refusal; 8] = [
        // A path parameter that does not parse (`version` is an integer).
        (
            Method::GET,
            "/api/v1/datasets/x/versions/not-a-number",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/slides/x/slide_files/not-a-level/0_0.jpeg",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A query string that does not parse.
        (
            Method::GET,
            "/api/v1/datasets/x/diff?from=one&to=two",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/api/v1/training/runs?limit=many",
            None,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A JSON body that is not JSON.
        (
            Method::POST,
            "/api/v1/cases",
            Some(("application/json", b"{\"patient_id\": ".as_slice())),
            StatusCode::BAD_REQUEST,
            "bad_body",
        ),
        (
            Method::POST,
            "/api/v1/session",
            Some(("application/json", b"{not json".as_slice())),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A method the route does not have, and a path no route has.
        (
            Method::PUT,
            "/healthz",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/api/v1/no-such-thing",
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in refusals {
        let token = if path.starts_with("/api/v1/datasets") || path.starts_with("/api/v1/training")
        {
            &researcher
        } else {
            &admin
        };
        let answer = call(&server, method.clone(), path, Some(token.as_str()), body).await;
        assert_eq!(
            answer.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["error"]["code"], code, "{method} {path}");
        seen.push(answer);
    }

    // Every error seen in this test, whoever answered it, is JSON with a code and a message.
    let mut statuses = BTreeMap::<u16, usize>::new();
    for answer in &seen {
        assert_json_error(answer);
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
    }
    for status in [400, 401, 404, 405] {
        assert!(
            statuses.contains_key(&status),
            "no {status} seen, so the check proved little: {statuses:?}"
        );
    }
}
