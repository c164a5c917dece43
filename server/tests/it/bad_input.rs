//! Bad uploads through the API, on both backends: each gets a clear 4xx with a JSON error, and
//! afterwards there is no slide row, no stored object and no staging file.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use pathfed_ingest::client::{ClientError, Phase, UploadClient};

use crate::support::{BACKENDS, TestServer, client, sha256_hex, synth_slide};

fn real_slide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/fixtures/CMU-1-Small-Region.svs")
}

fn zip_with(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, data) in entries {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
}

/// Files that must be refused, with the error code each must get.
fn corpus(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut files = Vec::new();
    let mut add = |name: &str, data: Vec<u8>, code: &'static str| {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        files.push((path, code));
    };
    add(
        "page.svs",
        b"<!DOCTYPE html><html><body>not a slide</body></html>".to_vec(),
        "not_a_slide",
    );
    add(
        "noise.svs",
        (0..50_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        "not_a_slide",
    );
    let real = std::fs::read(real_slide()).unwrap();
    add(
        "truncated.svs",
        real[..real.len() / 2].to_vec(),
        "invalid_slide",
    );
    // A TIFF header promising an IFD past the end of the file.
    add(
        "lying.tif",
        b"II*\x00\xff\xff\xff\x7f".to_vec(),
        "invalid_slide",
    );
    let inner = dir.join("inner-zip");
    std::fs::create_dir_all(&inner).unwrap();
    let traversal = dir.join("traversal.zip");
    zip_with(&traversal, &[("../../evil.svs", real.clone())]);
    files.push((traversal, "invalid_zip"));
    // Absolute paths, Unix and Windows, are refused like `../`.
    let absolute = dir.join("absolute.zip");
    zip_with(&absolute, &[("/tmp/evil.svs", real.clone())]);
    files.push((absolute, "invalid_zip"));
    let drive = dir.join("drive.zip");
    zip_with(&drive, &[("C:\\evil.svs", real.clone())]);
    files.push((drive, "invalid_zip"));
    let bomb = dir.join("bomb.zip");
    zip_with(&bomb, &[("slide.svs", vec![0u8; 300 << 20])]);
    files.push((bomb, "invalid_zip"));
    let empty_zip = dir.join("notes.zip");
    zip_with(&empty_zip, &[("readme.txt", b"no slide here".to_vec())]);
    files.push((empty_zip, "not_a_slide"));
    files
}

async fn assert_nothing_left(server: &TestServer, context: &str) {
    let db = server.db().await;
    assert_eq!(
        pathfed_ingest::slides::count(&db).await.unwrap(),
        0,
        "{context}: slide row left"
    );
    assert!(
        server.clinical_objects().await.is_empty(),
        "{context}: object left"
    );
    assert!(
        server.staging_files().is_empty(),
        "{context}: staging left {:?}",
        server.staging_files()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_refused_and_leave_nothing() {
    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let state = server.dir.path().join("state.json");
        let uploader = UploadClient::new(&server.url, &token, &state).unwrap();
        let quiet = |_: Phase, _: u64, _: u64| {};
        for (file, code) in corpus(server.dir.path()) {
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            match uploader.upload(&file, &quiet).await {
                Err(ClientError::Refused {
                    status,
                    code: got,
                    message,
                }) => {
                    assert!((400..500).contains(&status), "{backend:?} {name}: {status}");
                    assert_eq!(got, code, "{backend:?} {name}: {message}");
                    assert!(!message.is_empty());
                }
                other => panic!("{backend:?} {name}: expected a refusal, got {other:?}"),
            }
            assert_nothing_left(&server, &format!("{backend:?} {name}")).await;
        }
        // The server survived all of it and still takes a good slide.
        let good = synth_slide(server.dir.path(), "good.svs", 3000, 2000, 1);
        uploader.upload(&good, &quiet).await.unwrap();
        // A zip holding a slide is unpacked and registered like the slide itself.
        let zipped = server.dir.path().join("case.zip");
        let other = synth_slide(server.dir.path(), "other.svs", 3000, 2000, 2);
        zip_with(
            &zipped,
            &[("case 7/other.svs", std::fs::read(&other).unwrap())],
        );
        let slide = uploader.upload(&zipped, &quiet).await.unwrap();
        let keys = server.clinical_objects().await;
        assert!(
            keys.iter()
                .any(|k| k.contains(&slide.slide_id) && k.ends_with("original/case_7/other.svs")),
            "{backend:?}: {keys:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_digest_traversal_name_and_oversize_are_refused() {
    for backend in BACKENDS {
        let server =
            TestServer::start_with(backend, &[("PATHFED_INGEST_MAX_UPLOAD_BYTES", "20000000")]);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let slide = std::fs::read(real_slide()).unwrap();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let create = |len: usize, name: &str, sha: &str| {
            client()
                .post(format!("{}/api/v1/uploads", server.url))
                .bearer_auth(&token)
                .header("Tus-Resumable", "1.0.0")
                .header("Upload-Length", len)
                .header(
                    "Upload-Metadata",
                    format!("filename {},sha256 {}", b64(name), b64(sha)),
                )
                .send()
        };
        let error_code = |body: serde_json::Value| {
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };

        let r = create(slide.len(), "../../etc/cron.d/x.svs", &sha256_hex(&slide))
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{backend:?}");
        assert_eq!(error_code(r.json().await.unwrap()), "invalid_filename");

        let r = create(30_000_000, "big.svs", &sha256_hex(b"x"))
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{backend:?}");
        assert_eq!(error_code(r.json().await.unwrap()), "upload_too_large");

        // Announce another file's digest, send the real bytes.
        let r = create(slide.len(), "cmu.svs", &sha256_hex(b"other"))
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let url = format!(
            "{}{}",
            server.url,
            r.headers()["location"].to_str().unwrap()
        );
        let r = client()
            .patch(&url)
            .bearer_auth(&token)
            .header("Tus-Resumable", "1.0.0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Offset", 0)
            .body(slide.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{backend:?}");
        assert_eq!(error_code(r.json().await.unwrap()), "digest_mismatch");
        assert_nothing_left(&server, &format!("{backend:?} digest")).await;
    }
}
