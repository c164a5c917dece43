//! The tus upload protocol against a running server, on both backends: chunking, a server
//! killed mid-upload and resumed, offsets, checksums, expiry, and identical parallel uploads.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::time::{Duration, Instant};

use base64::Engine;
use pathfed_ingest::client::UploadClient;

use crate::support::{self, BACKENDS, Backend, TestServer, client, sha256_hex, synth_slide};

pub(crate) const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");

fn b64(data: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub(crate) async fn create(
    server: &TestServer,
    token: &str,
    len: usize,
    name: &str,
    sha: &str,
) -> String {
    let response = client()
        .post(format!("{}/api/v1/uploads", server.url))
        .bearer_auth(token)
        .header(TUS.0, TUS.1)
        .header("Upload-Length", len)
        .header(
            "Upload-Metadata",
            format!("filename {},sha256 {}", b64(name), b64(sha)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    format!("{}{location}", server.url)
}

pub(crate) async fn patch(
    url: &str,
    token: &str,
    offset: usize,
    chunk: &[u8],
    checksum: Option<String>,
) -> reqwest::Response {
    let mut request = client()
        .patch(url)
        .bearer_auth(token)
        .header(TUS.0, TUS.1)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset);
    if let Some(sum) = checksum {
        request = request.header("Upload-Checksum", format!("sha256 {sum}"));
    }
    request.body(chunk.to_vec()).send().await.unwrap()
}

/// A chunk with the `Upload-Checksum` header exactly as given (algorithm and value).
async fn patch_checksum(
    url: &str,
    token: &str,
    offset: usize,
    chunk: &[u8],
    checksum: &str,
) -> reqwest::Response {
    client()
        .patch(url)
        .bearer_auth(token)
        .header(TUS.0, TUS.1)
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", offset)
        .header("Upload-Checksum", checksum)
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap()
}

pub(crate) async fn head(url: &str, token: &str) -> reqwest::Response {
    client()
        .head(url)
        .bearer_auth(token)
        .header(TUS.0, TUS.1)
        .send()
        .await
        .unwrap()
}

pub(crate) fn offset_of(response: &reqwest::Response) -> usize {
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn stored_original(server: &TestServer) -> Vec<u8> {
    let keys = server.clinical_objects().await;
    let key = keys
        .iter()
        .find(|k| k.contains("/original/"))
        .expect("original stored");
    pathfed_core::store::get_bytes(&server.store(), key)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_killed_mid_upload_resumes_from_its_offset() {
    for backend in BACKENDS {
        let mut server = TestServer::start(backend);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let file = synth_slide(server.dir.path(), "resume.svs", 6000, 4000, 3);
        let data = std::fs::read(&file).unwrap();
        let sha = sha256_hex(&data);
        let url = create(&server, &token, data.len(), "resume.svs", &sha).await;

        // Two acknowledged 1 MiB chunks.
        let mib = 1 << 20;
        for i in 0..2 {
            let r = patch(&url, &token, i * mib, &data[i * mib..(i + 1) * mib], None).await;
            assert_eq!(r.status(), 204);
            assert_eq!(offset_of(&r), (i + 1) * mib);
        }
        // A third chunk trickles in and the server dies while receiving it.
        let slow = data[2 * mib..5 * mib].to_vec();
        let stream = futures::stream::iter(
            slow.chunks(64 << 10)
                .map(|c| c.to_vec())
                .collect::<Vec<_>>(),
        )
        .then(|piece| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(piece)
        });
        let request = client()
            .patch(&url)
            .bearer_auth(&token)
            .header(TUS.0, TUS.1)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", 2 * mib)
            .body(reqwest::Body::wrap_stream(stream))
            .send();
        let in_flight = tokio::spawn(request);
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.restart();
        let _ = in_flight.await;

        let r = head(&url, &token).await;
        assert_eq!(r.status(), 200, "{backend:?}: {}", server.log());
        let offset = offset_of(&r);
        assert!(offset >= 2 * mib && offset <= 5 * mib, "offset {offset}");
        // Resume from whatever the server kept, in 1 MiB chunks with checksums.
        let mut at = offset;
        let mut slide_id = None;
        while at < data.len() {
            let end = (at + mib).min(data.len());
            let chunk = &data[at..end];
            let sum = b64(sha2::Digest::finalize(
                <sha2::Sha256 as sha2::Digest>::new_with_prefix(chunk),
            ));
            let r = patch(&url, &token, at, chunk, Some(sum)).await;
            assert_eq!(r.status(), 204, "{backend:?} at {at}: {:?}", r.text().await);
            at = offset_of(&r);
            slide_id = r
                .headers()
                .get("pathfed-slide-id")
                .map(|v| v.to_str().unwrap().to_string());
        }
        assert!(slide_id.is_some(), "last chunk names the slide");
        assert_eq!(
            sha256_hex(&stored_original(&server).await),
            sha,
            "{backend:?}"
        );
        assert!(
            server.staging_files().is_empty(),
            "{:?}",
            server.staging_files()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_offset_conflicts_and_bad_checksum_is_rolled_back() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let url = create(&server, &token, data.len(), "x.svs", &sha256_hex(&data)).await;
        let r = patch(&url, &token, 0, &data[..100_000], None).await;
        assert_eq!(r.status(), 204);

        let r = patch(&url, &token, 50_000, &data[50_000..100_000], None).await;
        assert_eq!(r.status(), 409, "{backend:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "offset_mismatch");

        let wrong = b64([0u8; 32]);
        let r = patch(&url, &token, 100_000, &data[100_000..200_000], Some(wrong)).await;
        assert_eq!(r.status().as_u16(), 460, "{backend:?}");
        assert_eq!(
            offset_of(&head(&url, &token).await),
            100_000,
            "bad chunk discarded"
        );

        let r = patch(
            &url,
            &token,
            100_000,
            &data[100_000..200_000],
            Some("md5 AAAA".into()),
        )
        .await;
        assert_eq!(r.status(), 400);

        // SHA-1, as the common Python client sends it: a wrong one is refused like SHA-256's,
        // a right one accepted; an unknown algorithm is named in the refusal.
        let chunk = &data[100_000..200_000];
        let sha1 = |bytes: &[u8]| {
            use sha1::Digest;
            b64(sha1::Sha1::digest(bytes))
        };
        let r = patch_checksum(
            &url,
            &token,
            100_000,
            chunk,
            &format!("sha1 {}", sha1(b"x")),
        )
        .await;
        assert_eq!(r.status().as_u16(), 460, "{backend:?}");
        assert_eq!(offset_of(&head(&url, &token).await), 100_000);
        let r = patch_checksum(&url, &token, 100_000, chunk, "md5 1B2M2Y8AsgTpgAmY7PhCfg==").await;
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "checksum_algorithm");
        let r = patch_checksum(
            &url,
            &token,
            100_000,
            chunk,
            &format!("sha1 {}", sha1(chunk)),
        )
        .await;
        assert_eq!(r.status(), 204, "{backend:?}: a chunk with the right SHA-1");
        assert_eq!(offset_of(&head(&url, &token).await), 200_000);
        let options = client()
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/uploads", server.url),
            )
            .header(TUS.0, TUS.1)
            .send()
            .await
            .unwrap();
        assert_eq!(
            options.headers()["tus-checksum-algorithm"],
            "sha256,sha1",
            "{backend:?}"
        );
        let r = client()
            .patch(&url)
            .bearer_auth(&token)
            .header(TUS.0, TUS.1)
            .header("Upload-Offset", 100_000)
            .body(vec![1u8; 10])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        let r = client()
            .head(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 412, "missing Tus-Resumable");

        // Termination removes the upload and its bytes.
        let r = client()
            .delete(&url)
            .bearer_auth(&token)
            .header(TUS.0, TUS.1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(head(&url, &token).await.status(), 404);
        assert!(server.staging_files().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_uploads_are_gone() {
    for backend in BACKENDS {
        // An hour, passed by moving the server's clock: no machine is too slow for it.
        let expiry = Duration::from_secs(3600);
        let server = TestServer::start_with(backend, &[("PATHFED_INGEST_UPLOAD_EXPIRY_S", "3600")]);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let data = vec![7u8; 1000];
        let asked = Instant::now();
        let url = create(&server, &token, data.len(), "x.svs", &sha256_hex(&data)).await;
        let first = patch(&url, &token, 0, &data[..10], None).await.status();
        // An upload lives at least its expiry; only a machine too loaded to send the first chunk
        // within it may see the upload gone already.
        if asked.elapsed() < expiry {
            assert_eq!(first, 204, "{backend:?}: the upload expired early");
        } else {
            assert!(first == 204 || first == 410, "{backend:?}: {first}");
        }
        // Expiry is counted in whole seconds: gone at most a second after it.
        server.advance_clock(expiry.as_secs() as i64 + 1);
        let r = patch(&url, &token, 10, &data[10..20], None).await;
        assert_eq!(r.status(), 410, "{backend:?}");
        assert_eq!(head(&url, &token).await.status(), 404);
        assert!(server.staging_files().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_parallel_uploads_make_one_slide() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let file = synth_slide(server.dir.path(), "twin.svs", 4000, 3000, 9);
        let state = |n: &str| server.dir.path().join(format!("{n}.json"));
        let a = UploadClient::new(&server.url, &token, &state("a"))
            .unwrap()
            .with_chunk_bytes(1 << 20);
        let b = UploadClient::new(&server.url, &token, &state("b"))
            .unwrap()
            .with_chunk_bytes(1 << 20);
        let quiet = |_: pathfed_ingest::client::Phase, _: u64, _: u64| {};
        let (ra, rb) = tokio::join!(a.upload(&file, &quiet), b.upload(&file, &quiet));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.slide_id, rb.slide_id, "{backend:?}");
        let list: serde_json::Value = client()
            .get(format!("{}/api/v1/slides", server.url))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["slides"].as_array().unwrap().len(), 1);
        let originals = server
            .clinical_objects()
            .await
            .into_iter()
            .filter(|k| k.contains("/original/"))
            .count();
        assert_eq!(originals, 1, "{backend:?}: one stored original");
        assert!(server.staging_files().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_upload_resumes_after_the_client_is_killed() {
    let server = TestServer::start(Backend::Local);
    let token = server.user("Spoke", "spoke", "sam", "submitter");
    let file = synth_slide(server.dir.path(), "cli.svs", 8000, 6000, 5);
    let state = server.dir.path().join("cli-state.json");
    let run = || {
        std::process::Command::new(support::bin())
            .args([
                "upload",
                file.to_str().unwrap(),
                "--server",
                &server.url,
                "--token",
                &token,
            ])
            .args([
                "--chunk-bytes",
                "16384",
                "--state-file",
                state.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = run();
    // Let it send some chunks, then kill it like a closed laptop.
    let started = std::time::Instant::now();
    while !state.exists() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.kill().unwrap();
    first.wait().unwrap();
    let second = run().wait_with_output().unwrap();
    assert!(second.status.success());
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("resumed at byte"), "{out}");
    let data = std::fs::read(&file).unwrap();
    assert_eq!(
        sha256_hex(&stored_original(&server).await),
        sha256_hex(&data)
    );
}

use futures::StreamExt;
