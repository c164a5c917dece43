//! A DICOM whole-slide image uploaded as a zip of its instances becomes one slide, on both
//! backends:
//!
//! - the project's real Aperio slide, converted at test time to a DICOM series (levels, label,
//!   overview, thumbnail) by wsidicomizer and zipped with its instances named without an
//!   extension, registers as format `dicom` with the SVS's size and MPP, keeps every instance,
//!   serves Deep Zoom tiles, and its thumbnail and label answer as the same slide's SVS does;
//! - the same series rewritten by pydicom to RLE Lossless, a transfer syntax the reader does not
//!   decode, is refused with 422 and a message naming the syntax;
//! - one instance uploaded alone is refused with 422 saying a DICOM slide is a series to zip.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::io::Write;
use std::path::{Path, PathBuf};

use pathfed_ingest::client::{ClientError, Phase, UploadClient};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::dicom::DicomSeries;
use crate::support::{As, BACKENDS, TestServer};

/// RLE Lossless, a transfer syntax the DICOM reader does not decode.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

fn real_slide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/fixtures/CMU-1-Small-Region.svs")
}

/// A zip of `files` under `folder/`, named `instance-N` plus `extension`.
fn zip_instances(out: &Path, folder: &str, files: &[PathBuf], extension: &str) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (index, file) in files.iter().enumerate() {
        zip.start_file(format!("{folder}/instance-{index}{extension}"), options)
            .unwrap();
        zip.write_all(&std::fs::read(file).unwrap()).unwrap();
    }
    zip.finish().unwrap();
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    let image = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).unwrap();
    (image.width(), image.height())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zipped_dicom_series_is_one_slide_and_rle_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let series = DicomSeries::convert(&real_slide(), &dir.path().join("jpeg"), &json!({}));
    let rle = series.relabelled(&dir.path().join("rle"), RLE_LOSSLESS);
    let jpeg_files = series.instances;
    let jpeg_zip = dir.path().join("series.zip");
    // No extension: instances are recognised by content, as scanners name them anyhow.
    zip_instances(&jpeg_zip, "DICOM series", &jpeg_files, "");
    let rle_zip = dir.path().join("rle.zip");
    zip_instances(&rle_zip, "rle", &rle.instances, ".dcm");

    for backend in BACKENDS {
        let server = TestServer::start(backend);
        let token = server.user("Spoke", "spoke", "sam", "submitter");
        let state = dir.path().join(format!("state-{backend:?}.json"));
        let uploader = UploadClient::new(&server.url, &token, &state).unwrap();
        let quiet = |_: Phase, _: u64, _: u64| {};
        let sam = As {
            server: &server,
            token: token.clone(),
        };

        let svs = uploader
            .upload(&real_slide(), &quiet)
            .await
            .unwrap()
            .slide_id;
        let dicom = uploader.upload(&jpeg_zip, &quiet).await.unwrap().slide_id;
        let svs_json = sam
            .ok(Method::GET, &format!("/api/v1/slides/{svs}"), None)
            .await;
        let json = sam
            .ok(Method::GET, &format!("/api/v1/slides/{dicom}"), None)
            .await;
        assert_eq!(json["format"], "dicom", "{backend:?}: {json}");
        assert_eq!(json["width"], svs_json["width"], "{backend:?}: {json}");
        assert_eq!(json["height"], svs_json["height"], "{backend:?}: {json}");
        assert_eq!(json["width"], Value::from(2220), "{backend:?}: {json}");
        assert_eq!(json["height"], Value::from(2967), "{backend:?}: {json}");
        for axis in ["mpp_x", "mpp_y"] {
            let mpp = json[axis].as_f64().unwrap();
            assert!((mpp - 0.499).abs() < 1e-3, "{backend:?} {axis}: {json}");
        }
        assert_eq!(json["has_label"], svs_json["has_label"], "{backend:?}");

        // Every instance is stored with the slide, not only the one it is opened from.
        let keys = server.clinical_objects().await;
        let stored = keys
            .iter()
            .filter(|k| k.contains(&dicom) && k.contains("/original/DICOM_series/instance-"))
            .count();
        assert_eq!(stored, jpeg_files.len(), "{backend:?}: {keys:?}");

        // Deep Zoom: the full-resolution level (2967 px high: level 12) and a reduced one.
        for tile in ["12/0_0.jpeg", "12/8_11.jpeg", "8/0_0.jpeg"] {
            let response =
                server_get(&server, &token, &dicom, &format!("slide_files/{tile}")).await;
            assert_eq!(response.0, 200, "{backend:?} {tile}");
            assert_eq!(
                response.1.as_deref(),
                Some("image/jpeg"),
                "{backend:?} {tile}"
            );
            image::load_from_memory_with_format(&response.2, image::ImageFormat::Jpeg).unwrap();
        }

        // Thumbnail and label as for the SVS: a JPEG, and the same label image size.
        for slide in [&svs, &dicom] {
            let (status, kind, _) = server_get(&server, &token, slide, "thumbnail").await;
            assert_eq!(
                (status, kind.as_deref()),
                (200, Some("image/jpeg")),
                "{backend:?}"
            );
        }
        let (status, kind, svs_label) = server_get(&server, &token, &svs, "label").await;
        assert_eq!(
            (status, kind.as_deref()),
            (200, Some("image/png")),
            "{backend:?}"
        );
        let (status, kind, dicom_label) = server_get(&server, &token, &dicom, "label").await;
        assert_eq!(
            (status, kind.as_deref()),
            (200, Some("image/png")),
            "{backend:?}"
        );
        assert_eq!(png_size(&dicom_label), png_size(&svs_label), "{backend:?}");

        // A transfer syntax the reader does not decode: refused, and named.
        match uploader.upload(&rle_zip, &quiet).await {
            Err(ClientError::Refused {
                status, message, ..
            }) => {
                assert_eq!(status, 422, "{backend:?}: {message}");
                assert!(
                    message.contains("1.2.840.10008.1.2.5") && message.contains("RLE"),
                    "{backend:?}: {message}"
                );
            }
            other => panic!("{backend:?}: expected a refusal, got {other:?}"),
        }

        // One instance alone: refused with the way to upload a DICOM slide.
        let lone = jpeg_files
            .iter()
            .max_by_key(|f| std::fs::metadata(f).unwrap().len())
            .unwrap();
        match uploader.upload(lone, &quiet).await {
            Err(ClientError::Refused {
                status, message, ..
            }) => {
                assert_eq!(status, 422, "{backend:?}: {message}");
                assert!(
                    message.contains("DICOM") && message.contains("zip"),
                    "{backend:?}: {message}"
                );
            }
            other => panic!("{backend:?}: expected a refusal, got {other:?}"),
        }
    }
}

/// GET `/api/v1/slides/{slide}/{rest}`: status, content type and body.
async fn server_get(
    server: &TestServer,
    token: &str,
    slide: &str,
    rest: &str,
) -> (u16, Option<String>, Vec<u8>) {
    let response = crate::support::client()
        .get(format!("{}/api/v1/slides/{slide}/{rest}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, kind, response.bytes().await.unwrap().to_vec())
}
