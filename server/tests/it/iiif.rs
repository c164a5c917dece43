//! IIIF Image API 3.0 over clinical slides (`/iiif/3/{slide}/…`), through the running server:
//!
//! - the IIIF community's Image API validator passes every test up to level 2, and the level-3
//!   tests of what the service claims beyond it (mirroring, canonical and profile `Link`
//!   headers), on the validator's own 10×10 grid of colours, written at test time as a tiled
//!   TIFF pyramid and uploaded like any slide. The validator sends no credentials of its own: it
//!   runs unchanged in a Python process whose HTTP opener adds the test user's API token to
//!   every request it makes, redirects included, as a viewer configured with a token does;
//! - `info.json` describes the slide (its absolute id, size, tiles, sizes, limits, features);
//! - a region is the tile API's pixels for the same area: a stored tile byte for byte, a reduced
//!   tile, and a read large enough to be resampled in bands against the Deep Zoom tiles of the
//!   same level stitched together;
//! - whoever the tile API answers, IIIF answers alike (owner and the hub's reader 200, another
//!   hospital and a hub submitter 404, a researcher 403, anonymous 401), viewing is audited once
//!   per hour and refusals every time;
//! - malformed requests are 400 with the JSON error body and a code; CORS allows any origin, but
//!   never with credentials.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::process::Command;

use image::RgbImage;
use pathfed_core::audit::recent;
use reqwest::{StatusCode, header};
use serde_json::Value;

use crate::support::{
    BACKENDS, Backend, TestServer, client, submit_case, synth_slide, tools_python, upload,
};

/// Writes the validator's test image: 100-pixel squares in the colours its checks expect
/// (`colorInfo[x][y]` at column `x`, row `y`), as a tiled, deflated TIFF with 2× reduced
/// levels, which the platform reads as a generic pyramidal slide.
const GRID_SCRIPT: &str = r#"
import sys
import numpy as np
import tifffile
from iiif_validator.validator import ValidationInfo

colours = np.array(ValidationInfo().colorInfo, dtype=np.uint8)
level = np.repeat(np.repeat(colours.transpose(1, 0, 2), 100, axis=0), 100, axis=1)
levels = [level]
while max(level.shape[:2]) > 256:
    h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
    level = level[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    levels.append(level)
with tifffile.TiffWriter(sys.argv[1]) as tif:
    for level in levels:
        tif.write(level, tile=(256, 256), compression="zlib", photometric="rgb")
"#;

/// Runs the validator's command line unchanged, with the API token (`IIIF_TOKEN`) added to
/// every request by an opener installed for the whole process (the validator's tests call
/// `urlopen` themselves).
const VALIDATE_SCRIPT: &str = r#"
import os, runpy, sys, urllib.request

class Bearer(urllib.request.BaseHandler):
    def http_request(self, request):
        request.add_header("Authorization", "Bearer " + os.environ["IIIF_TOKEN"])
        return request
    https_request = http_request

urllib.request.install_opener(urllib.request.build_opener(Bearer))
script = os.path.join(os.path.dirname(sys.executable), "iiif-validate.py")
sys.argv = [script] + sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"#;

/// GET `path` with `token` (none: anonymous) and extra headers.
async fn get(
    server: &TestServer,
    token: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client().get(format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// The body of a 200 answer.
async fn bytes(server: &TestServer, token: &str, path: &str) -> Vec<u8> {
    let response = get(server, Some(token), path, &[]).await;
    let status = response.status();
    let body = response.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// The decoded image of a 200 answer.
async fn picture(server: &TestServer, token: &str, path: &str) -> RgbImage {
    image::load_from_memory(&bytes(server, token, path).await)
        .unwrap()
        .to_rgb8()
}

/// Mean absolute difference per channel of two images of the same size.
fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "images differ in size");
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

/// An attribute's value in the Deep Zoom descriptor.
fn dzi_attribute(dzi: &str, name: &str) -> u64 {
    let start = dzi.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    dzi[start..start + dzi[start..].find('"').unwrap()]
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_iiif_validator_passes_at_level_2() {
    let server = TestServer::start(Backend::Local);
    let token = server.user("Spoke V", "spoke", "iiif_owner", "submitter");
    let grid = server.dir.path().join("validator-grid.tif");
    let written = Command::new(tools_python())
        .arg("-c")
        .arg(GRID_SCRIPT)
        .arg(&grid)
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "writing the validator's grid: {}",
        String::from_utf8_lossy(&written.stderr)
    );
    let slide = upload(&server, &token, &grid).await;
    let host = server.url.strip_prefix("http://").unwrap();
    let level_3_claimed = [
        "rot_mirror",
        "rot_mirror_180",
        "linkheader_canonical",
        "linkheader_profile",
    ];
    let runs: [(Vec<&str>, usize); 2] = [
        (vec!["--level", "2"], 33),
        (
            level_3_claimed
                .iter()
                .flat_map(|t| ["--test", *t])
                .collect(),
            level_3_claimed.len(),
        ),
    ];
    for (selection, at_least) in runs {
        let out = Command::new(tools_python())
            .arg("-c")
            .arg(VALIDATE_SCRIPT)
            .args(["--server", host, "--prefix", "iiif/3", "--version", "3.0"])
            .args(["--identifier", slide.as_str()])
            .args(&selection)
            .env("IIIF_TOKEN", &token)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "the validator failed {selection:?}:\n{log}\nserver log:\n{}",
            server.log()
        );
        let passed = log.lines().filter(|l| l.ends_with(" PASS")).count();
        assert!(
            passed >= at_least && log.contains(&format!("Done ({passed} tests, 0 failures)")),
            "{selection:?}: {passed} passed:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn iiif_regions_are_the_tile_apis_pixels_and_the_service_describes_itself() {
    let server = TestServer::start(Backend::Local);
    let token = server.user("Spoke P", "spoke", "iiif_pixels", "submitter");
    let file = synth_slide(server.dir.path(), "iiif.svs", 2400, 1800, 21);
    let slide = upload(&server, &token, &file).await;
    let tiles = format!("/api/v1/slides/{slide}");
    let iiif = format!("/iiif/3/{slide}");

    // The image information: the service's absolute URL, the slide's size, tiles on its own
    // grid at every power-of-two scale down to one tile, whole-slide sizes, the limits.
    let response = get(&server, Some(&token), &format!("{iiif}/info.json"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/ld+json")
            && content_type.contains("http://iiif.io/api/image/3/context.json"),
        "{content_type}"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        response
            .headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let link = response.headers()[header::LINK].to_str().unwrap();
    assert!(
        link.contains("level2.json") && link.contains("rel=\"profile\""),
        "{link}"
    );
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["@context"], "http://iiif.io/api/image/3/context.json");
    assert_eq!(info["id"], format!("{}{iiif}", server.url));
    assert_eq!(info["type"], "ImageService3");
    assert_eq!(info["protocol"], "http://iiif.io/api/image");
    assert_eq!(info["profile"], "level2");
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(2400), Some(1800))
    );
    assert_eq!(info["maxWidth"], 4096);
    assert_eq!(info["tiles"][0]["width"], 256);
    assert_eq!(
        info["tiles"][0]["scaleFactors"],
        serde_json::json!([1, 2, 4, 8, 16])
    );
    let sizes = info["sizes"].as_array().unwrap();
    assert_eq!(
        sizes.last().unwrap(),
        &serde_json::json!({"width": 2400, "height": 1800})
    );
    assert!(sizes.len() >= 5, "{sizes:?}");
    for feature in ["mirroring", "sizeUpscaling", "canonicalLinkHeader"] {
        assert!(
            info["extraFeatures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == feature),
            "{feature}: {info}"
        );
    }
    let plain = get(
        &server,
        Some(&token),
        &format!("{iiif}/info.json"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(plain.headers()[header::CONTENT_TYPE], "application/json");
    // Every offered size is answered at that size.
    let smallest = &sizes[0];
    let (w, h) = (
        smallest["width"].as_u64().unwrap(),
        smallest["height"].as_u64().unwrap(),
    );
    let thumb = picture(
        &server,
        &token,
        &format!("{iiif}/full/{w},{h}/0/default.jpg"),
    )
    .await;
    assert_eq!(thumb.dimensions(), (w as u32, h as u32));

    // The base URI redirects to the image information.
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{iiif}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        redirect.headers()[header::LOCATION],
        format!("{}{iiif}/info.json", server.url).as_str()
    );

    // The tile API's grid, from its descriptor.
    let dzi =
        String::from_utf8(bytes(&server, &token, &format!("{tiles}/slide.dzi")).await).unwrap();
    let size = dzi_attribute(&dzi, "TileSize");
    assert_eq!((size, dzi_attribute(&dzi, "Overlap")), (256, 0), "{dzi}");
    let top: u32 = (1..64u32)
        .find(|&l| 2400u64.div_ceil(1u64 << l) == 1)
        .unwrap();

    // A stored tile, full resolution: the same bytes (both pass the stored JPEG through).
    let stored = bytes(
        &server,
        &token,
        &format!("{tiles}/slide_files/{top}/1_1.jpeg"),
    )
    .await;
    let region = bytes(
        &server,
        &token,
        &format!("{iiif}/256,256,256,256/max/0/default.jpg"),
    )
    .await;
    assert!(stored == region, "the stored tile was not passed through");

    // A tile of the level at half resolution, rendered by each API from the same level.
    let reduced = picture(
        &server,
        &token,
        &format!("{tiles}/slide_files/{}/1_1.jpeg", top - 1),
    )
    .await;
    let region = picture(
        &server,
        &token,
        &format!("{iiif}/512,512,512,512/256,256/0/default.jpg"),
    )
    .await;
    let diff = mean_abs_diff(&reduced, &region);
    assert!(diff < 1.0, "reduced tile differs by {diff}");

    // The whole slide at half size decodes more of the slide than one band holds, so it is
    // resampled in bands: it is still the Deep Zoom level (whose tiles each read apart)...
    let whole = picture(
        &server,
        &token,
        &format!("{iiif}/full/1200,900/0/default.jpg"),
    )
    .await;
    let mut stitched = RgbImage::new(1200, 900);
    for row in 0..900u32.div_ceil(256) {
        for col in 0..1200u32.div_ceil(256) {
            let tile = picture(
                &server,
                &token,
                &format!("{tiles}/slide_files/{}/{col}_{row}.jpeg", top - 1),
            )
            .await;
            image::imageops::replace(
                &mut stitched,
                &tile,
                i64::from(col * 256),
                i64::from(row * 256),
            );
        }
    }
    let diff = mean_abs_diff(&whole, &stitched);
    assert!(
        diff < 1.5,
        "the banded read differs from the Deep Zoom level by {diff}"
    );
    // ...and, losslessly, its bottom rows (across the seam between its bands) are the pixels
    // of the same rows read in one piece. The piece's own top rows lack the rows above it that
    // the filter reaches, so they are left out.
    let banded = picture(
        &server,
        &token,
        &format!("{iiif}/full/1200,900/0/default.png"),
    )
    .await;
    let piece = picture(
        &server,
        &token,
        &format!("{iiif}/0,1500,2400,300/1200,150/0/default.png"),
    )
    .await;
    let banded = image::imageops::crop_imm(&banded, 0, 752, 1200, 148).to_image();
    let piece = image::imageops::crop_imm(&piece, 0, 2, 1200, 148).to_image();
    let worst = banded
        .as_raw()
        .iter()
        .zip(piece.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "the bands do not join: a pixel differs by {worst}"
    );

    // Rotation, mirroring, quality and format.
    let turned = image::load_from_memory(
        &bytes(&server, &token, &format!("{iiif}/full/300,/90/gray.png")).await,
    )
    .unwrap();
    assert_eq!((turned.width(), turned.height()), (225, 300));
    assert_eq!(turned.color(), image::ColorType::L8);
    let plain = picture(&server, &token, &format!("{iiif}/full/300,/0/default.png")).await;
    let mirrored = picture(&server, &token, &format!("{iiif}/full/300,/!0/default.png")).await;
    assert_eq!(mirrored, image::imageops::flip_horizontal(&plain));
    let up = picture(
        &server,
        &token,
        &format!("{iiif}/0,0,100,100/^200,/0/default.jpg"),
    )
    .await;
    assert_eq!(up.dimensions(), (200, 200));

    // An unchanged image is not sent again.
    let path = format!("{iiif}/full/300,/0/default.jpg");
    let first = get(&server, Some(&token), &path, &[]).await;
    let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
    let link = first.headers()[header::LINK].to_str().unwrap().to_string();
    assert!(
        link.contains(&format!(
            "<{}{iiif}/full/300,225/0/default.jpg>;rel=\"canonical\"",
            server.url
        )),
        "{link}"
    );
    let again = get(
        &server,
        Some(&token),
        &path,
        &[("if-none-match", etag.as_str())],
    )
    .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // What cannot be answered is 400 with a code saying why, in the JSON error body.
    for (request, code) in [
        ("0,0,0,10/max/0/default.jpg", "iiif_bad_region"),
        ("3000,0,10,10/max/0/default.jpg", "iiif_bad_region"),
        ("somewhere/max/0/default.jpg", "iiif_bad_region"),
        ("full/full/0/default.jpg", "iiif_bad_size"),
        ("full/0,/0/default.jpg", "iiif_bad_size"),
        ("full/3000,/0/default.jpg", "iiif_upscaling"),
        ("full/pct:150/0/default.jpg", "iiif_upscaling"),
        ("full/^5000,/0/default.jpg", "iiif_too_large"),
        ("full/max/45/default.jpg", "iiif_bad_rotation"),
        ("full/max/-90/default.jpg", "iiif_bad_rotation"),
        ("full/max/0/sepia.jpg", "iiif_bad_quality"),
        ("full/max/0/default.gif", "iiif_bad_format"),
        ("full/max/0/default", "iiif_bad_format"),
    ] {
        let response = get(&server, Some(&token), &format!("{iiif}/{request}"), &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{request}");
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            "*",
            "{request}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{request}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    // A viewer on another origin may ask with an API token; never with cookies.
    let preflight = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{iiif}/info.json", server.url),
        )
        .header("origin", "https://viewer.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    let allowed = preflight.headers();
    assert_eq!(allowed["access-control-allow-origin"], "*");
    assert!(
        allowed["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("authorization")
    );
    assert!(allowed.get("access-control-allow-credentials").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn iiif_answers_whom_the_tile_api_answers_and_audits_it() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let owner = server.user("Spoke I", "spoke", "iiif_spoke", "submitter");
        let reader = server.user("Hub I", "hub", "iiif_reader", "pathologist");
        let hub_submitter = server.user("Hub I", "hub", "iiif_hub_sub", "submitter");
        let outsider = server.user("Spoke J", "spoke", "iiif_outsider", "submitter");
        let researcher = server.user("Spoke I", "spoke", "iiif_researcher", "researcher");
        server.cli_ok(&["admin", "hospital", "default-hub", "Spoke I", "Hub I"]);
        let file = synth_slide(server.dir.path(), "access.svs", 1200, 900, 22);
        let (_case, slide) = submit_case(&server, &owner, &file, "P-IIIF-1");

        let users: [(&str, Option<&str>, StatusCode); 6] = [
            ("the owner", Some(&owner), StatusCode::OK),
            ("the hub's reader", Some(&reader), StatusCode::OK),
            (
                "a hub submitter",
                Some(&hub_submitter),
                StatusCode::NOT_FOUND,
            ),
            ("another hospital", Some(&outsider), StatusCode::NOT_FOUND),
            ("a researcher", Some(&researcher), StatusCode::FORBIDDEN),
            ("anonymous", None, StatusCode::UNAUTHORIZED),
        ];
        for (who, token, want) in users {
            let dzi = get(
                &server,
                token,
                &format!("/api/v1/slides/{slide}/slide.dzi"),
                &[],
            )
            .await;
            assert_eq!(dzi.status(), want, "{who}: the tile API");
            for path in [
                format!("/iiif/3/{slide}/info.json"),
                format!("/iiif/3/{slide}/full/256,/0/default.jpg"),
            ] {
                let response = get(&server, token, &path, &[]).await;
                assert_eq!(response.status(), want, "{who}: {path}");
                // Refusals are readable across origins too, and in the one error shape.
                assert_eq!(response.headers()["access-control-allow-origin"], "*");
                if want != StatusCode::OK {
                    let body: Value = response.json().await.unwrap();
                    assert!(body["error"]["code"].is_string(), "{who}: {path}: {body}");
                }
            }
        }
        // An unknown id is answered as another hospital's is.
        let unknown = get(
            &server,
            Some(&owner),
            "/iiif/3/no-such-slide/info.json",
            &[],
        )
        .await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        // More viewing within the hour adds no row.
        for _ in 0..3 {
            bytes(
                &server,
                &owner,
                &format!("/iiif/3/{slide}/0,0,256,256/max/0/default.jpg"),
            )
            .await;
        }

        let rows = recent(&server.db().await, 10_000).await.unwrap();
        let count = |actor: &str, outcome: &str| {
            rows.iter()
                .filter(|r| {
                    r.event.action == "slide.iiif"
                        && r.event.actor == actor
                        && r.event.outcome == outcome
                        && r.event.target == format!("slide:{slide}")
                })
                .count()
        };
        assert_eq!(
            count("iiif_spoke", "ok"),
            1,
            "{backend:?}: one viewing row per hour"
        );
        assert_eq!(count("iiif_reader", "ok"), 1, "{backend:?}");
        for refused in ["iiif_hub_sub", "iiif_outsider", "iiif_researcher"] {
            // Both endpoints, each refusal recorded.
            assert_eq!(count(refused, "denied"), 2, "{backend:?}: {refused}");
        }
        assert_eq!(count("iiif_outsider", "ok"), 0);
    }
}
