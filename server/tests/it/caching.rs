//! What a browser or proxy may keep: clinical answers (case JSON, the session, reports, label
//! images) are `no-store`; tiles, Deep Zoom descriptors and thumbnails only the browser's
//! private cache, and nothing at all where the operator turns `tiles.browser_cache` off.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use crate::support::{Backend, TestServer, client, submit_case, synth_slide};

/// The `Cache-Control` of a GET as `token`, with its status.
async fn cache_control(server: &TestServer, token: &str, path: &str) -> (u16, String) {
    let response = client()
        .get(format!("{}{path}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let value = response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, value)
}

#[tokio::test(flavor = "multi_thread")]
async fn clinical_answers_are_never_stored_and_tiles_only_privately() {
    for browser_cache in ["true", "false"] {
        let server = TestServer::start_with(
            Backend::Local,
            &[("PATHFED_TILES_BROWSER_CACHE", browser_cache)],
        );
        let token = server.user("Spoke K", "spoke", "cache_user", "submitter");
        server.user("Hub K", "hub", "cache_reader", "pathologist");
        server.cli_ok(&["admin", "hospital", "default-hub", "Spoke K", "Hub K"]);
        let file = synth_slide(server.dir.path(), "cache.svs", 2400, 1800, 5);
        let (case, slide) = submit_case(&server, &token, &file, "P-CACHE-1");
        for path in [
            format!("/api/v1/cases/{case}"),
            "/api/v1/cases".to_string(),
            "/api/v1/session".to_string(),
            format!("/api/v1/slides/{slide}"),
            format!("/api/v1/slides/{slide}/label"),
        ] {
            let (status, cache) = cache_control(&server, &token, &path).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(
                cache, "no-store",
                "{path} with browser_cache={browser_cache}"
            );
        }
        // An error is no more cacheable than an answer.
        let (status, cache) = cache_control(&server, &token, "/api/v1/cases/nope").await;
        assert_eq!((status, cache.as_str()), (404, "no-store"));
        for path in [
            format!("/api/v1/slides/{slide}/slide.dzi"),
            format!("/api/v1/slides/{slide}/slide_files/8/0_0.jpeg"),
            format!("/api/v1/slides/{slide}/thumbnail"),
        ] {
            let (status, cache) = cache_control(&server, &token, &path).await;
            assert_eq!(status, 200, "{path}");
            if browser_cache == "true" {
                assert!(cache.starts_with("private, max-age="), "{path}: {cache}");
            } else {
                assert_eq!(cache, "no-store", "{path}");
            }
        }
    }
}
