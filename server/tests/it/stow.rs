//! STOW-RS (`POST /dicomweb/studies`) against a running server, with a real DICOMweb client
//! (dicomweb-client's `store_instances`) as the oracle, and the early refusal of a tus upload
//! whose DICOM header names a transfer syntax the reader does not decode:
//!
//! - the project's real Aperio slide, converted to a DICOM series, is pushed and becomes one
//!   slide of format `dicom` in the pusher's hospital, as large as the SVS is by tifffile; the
//!   Store Instances Response lists every instance, the study's Retrieve URL and each instance's;
//!   pushed again with `?case=`, it is the same slide, attached to that draft case;
//! - the same series declared RLE Lossless is refused with 422 naming the syntax once the first
//!   part's header is in (a slow sender is cut off long before its last chunk); a researcher
//!   gets 403; a body over `ingest.max_upload_bytes` gets 413 whether its length is declared or
//!   streamed; none of these leaves a slide, an object or a staging file, and each is audited;
//! - over tus, the RLE instance sent in small chunks is refused at the chunk that completes its
//!   file meta group, naming the syntax, and the upload is gone.

#![allow(clippy::unwrap_used)] // Test code: a failed step should panic with its cause.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::dicom::DicomSeries;
use crate::support::{As, Backend, TestServer, sha256_hex, tools_python};
use crate::tus::{create, head, patch};

/// RLE Lossless, a transfer syntax the DICOM reader does not decode.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// The project's real Aperio slide.
fn real_slide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/fixtures/CMU-1-Small-Region.svs")
}

/// Runs every STOW-RS request of the test in one interpreter and prints what each answered,
/// as JSON: arguments BASE_URL TOKEN RESEARCHER_TOKEN CASE JPEG_DIR RLE_DIR SVS.
const STOW_SCRIPT: &str = r#"
import json, os, sys, time
from io import BytesIO

import pydicom
import requests
import tifffile
from dicomweb_client import DICOMwebClient

base, token, researcher, case, jpeg_dir, rle_dir, svs = sys.argv[1:8]
jpeg = [os.path.join(jpeg_dir, n) for n in sorted(os.listdir(jpeg_dir))]
rle = [os.path.join(rle_dir, n) for n in sorted(os.listdir(rle_dir))]
CONTENT_TYPE = ('multipart/related; type="application/dicom"; '
                'boundary="0f3cf5c0-70e0-41ef-baef-c6f9f65ec3e1"')


def client_for(secret):
    session = requests.Session()
    session.headers['Authorization'] = 'Bearer ' + secret
    seen = []
    session.hooks['response'].append(lambda r, *args, **kwargs: seen.append(r))
    return DICOMwebClient(url=base + '/dicomweb', session=session), session, seen


def answer(response, dataset=None):
    out = {
        'status': response.status_code,
        'content_type': response.headers.get('content-type'),
        'slide_ids': response.headers.get('pathfed-slide-id'),
    }
    try:
        out['body'] = response.json()
    except ValueError:
        out['body'] = response.text
    if dataset is not None:
        out['retrieve_url'] = str(dataset.RetrieveURL) if dataset.get('RetrieveURL') else None
        out['referenced'] = [
            {'class': str(i.ReferencedSOPClassUID), 'instance': str(i.ReferencedSOPInstanceUID),
             'url': str(i.RetrieveURL)}
            for i in dataset.get('ReferencedSOPSequence', [])]
        out['failed'] = [
            {'instance': str(i.ReferencedSOPInstanceUID), 'reason': int(i.FailureReason)}
            for i in dataset.get('FailedSOPSequence', [])]
    return out


def store(secret, files):
    """The client's own store transaction."""
    client, _, seen = client_for(secret)
    try:
        dataset = client.store_instances([pydicom.dcmread(f) for f in files])
    except requests.HTTPError as e:
        return answer(e.response)
    return answer(seen[-1], dataset)


def encoded(files):
    """The instances as the client encodes them (pydicom.dcmwrite), in its multipart form."""
    parts = []
    for f in files:
        with BytesIO() as b:
            pydicom.dcmwrite(b, pydicom.dcmread(f))
            parts.append(b.getvalue())
    return DICOMwebClient._encode_multipart_message(parts, CONTENT_TYPE)


def post(secret, body, params=None):
    _, session, _ = client_for(secret)
    response = session.post(base + '/dicomweb/studies', data=body, params=params,
                            headers={'Content-Type': CONTENT_TYPE})
    return answer(response)


def slowly(body, pause):
    """The body in 64 KiB chunks with a pause before each: counts what was handed over."""
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    sent = {'chunks': 0, 'of': len(chunks)}

    def generate():
        for chunk in chunks:
            time.sleep(pause)
            sent['chunks'] += 1
            yield chunk
    return generate(), sent


results = {}
with tifffile.TiffFile(svs) as tiff:
    page = tiff.pages[0]
    results['svs'] = [page.imagewidth, page.imagelength]
results['instances'] = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                              for f in jpeg)
results['rle_client'] = store(token, rle)
generator, sent = slowly(encoded(rle), 0.02)
try:
    results['rle_slow'] = post(token, generator)
except requests.ConnectionError as e:
    results['rle_slow'] = {'status': None, 'body': str(e)}
results['rle_slow']['sent'] = sent
results['denied'] = store(researcher, jpeg)
results['jpeg'] = store(token, jpeg)
results['case'] = post(token, encoded(jpeg), params={'case': case})
too_large = encoded(jpeg + [max(jpeg, key=os.path.getsize)])
results['too_large_declared'] = post(token, too_large)
generator, sent = slowly(too_large, 0)
results['too_large_streamed'] = post(token, generator)
print(json.dumps(results))
"#;

/// tus chunk size for the early-refusal check: the RLE instance's file meta group (about 350
/// bytes) spans the first two chunks.
const CHUNK: usize = 256;

/// The Study Instance UID the DICOMweb routes give a slide: `2.25.` and its UUID as a number.
fn study_uid(slide: &str) -> String {
    let number = u128::from_str_radix(&slide.replace('-', ""), 16).unwrap();
    format!("2.25.{number}")
}

/// A refusal's status, code and message, from one of the script's answers.
fn refusal(answer: &Value) -> (u64, &str, &str) {
    (
        answer["status"].as_u64().unwrap_or_default(),
        answer["body"]["error"]["code"].as_str().unwrap_or_default(),
        answer["body"]["error"]["message"]
            .as_str()
            .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn stow_rs_makes_one_slide_per_series_and_refuses_unreadable_dicom_early() {
    let dir = tempfile::tempdir().unwrap();
    let series = DicomSeries::convert(&real_slide(), &dir.path().join("jpeg"), &json!({}));
    let rle_series = series.relabelled(&dir.path().join("rle"), RLE_LOSSLESS);
    let series_bytes: u64 = series
        .instances
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // Room for the series and its multipart framing, not for one more instance.
    let max = (series_bytes + (256 << 10)).to_string();
    let server = TestServer::start_with(
        Backend::Local,
        &[("PATHFED_INGEST_MAX_UPLOAD_BYTES", max.as_str())],
    );
    let token = server.user("Spoke", "spoke", "sam", "submitter");
    let researcher = server.user("Spoke", "spoke", "rita", "researcher");
    let sam = As {
        server: &server,
        token: token.clone(),
    };

    // tus: the smallest RLE instance in small chunks, refused at the chunk that completes its
    // file meta group (preamble, magic, group length, then that many bytes).
    let rle = rle_series
        .instances
        .iter()
        .min_by_key(|f| std::fs::metadata(f).unwrap().len())
        .unwrap();
    let data = std::fs::read(rle).unwrap();
    let meta_end = 144 + u32::from_le_bytes(data[140..144].try_into().unwrap()) as usize;
    let url = create(
        &server,
        &token,
        data.len(),
        "instance.dcm",
        &sha256_hex(&data),
    )
    .await;
    let mut refused = None;
    for (index, chunk) in data.chunks(CHUNK).enumerate() {
        let response = patch(&url, &token, index * CHUNK, chunk, None).await;
        if response.status() != 204 {
            let status = response.status().as_u16();
            refused = Some((index, status, response.json::<Value>().await.unwrap()));
            break;
        }
    }
    let (index, status, body) = refused.expect("the RLE instance was taken whole");
    assert_eq!(
        index,
        (meta_end - 1) / CHUNK,
        "refused at the wrong chunk: {body}"
    );
    assert!((index + 1) * CHUNK < data.len(), "refused only at the end");
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["error"]["code"], "unsupported_transfer_syntax",
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1.2.840.10008.1.2.5") && message.contains("RLE Lossless"),
        "{message}"
    );
    assert_eq!(
        head(&url, &token).await.status(),
        404,
        "the upload is still there"
    );
    assert!(
        server.staging_files().is_empty(),
        "{:?}",
        server.staging_files()
    );

    let draft = sam
        .ok(
            Method::POST,
            "/api/v1/cases",
            Some(json!({
                "patient_id": "STOW-1", "age_band": "60-69", "sex": "male", "organ": "stomach",
                "specimen": "gastric biopsy", "clinical_question": "Dysplasia?",
            })),
        )
        .await;
    let case = draft["id"].as_str().unwrap().to_string();

    let out = Command::new(tools_python())
        .arg("-c")
        .arg(STOW_SCRIPT)
        .args([&server.url, &token, &researcher, &case])
        .arg(&series.folder)
        .arg(&rle_series.folder)
        .arg(real_slide())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();

    // RLE Lossless, by the client and by a slow sender: refused by name, early.
    for step in ["rle_client", "rle_slow"] {
        let (status, code, message) = refusal(&results[step]);
        assert_eq!(
            (status, code),
            (422, "unsupported_transfer_syntax"),
            "{step}: {}",
            results[step]
        );
        assert!(
            message.contains("1.2.840.10008.1.2.5") && message.contains("RLE Lossless"),
            "{step}: {message}"
        );
    }
    let sent = &results["rle_slow"]["sent"];
    assert!(
        sent["chunks"].as_u64().unwrap() * 2 <= sent["of"].as_u64().unwrap(),
        "the refusal came only after most of the body: {sent}"
    );

    // A role that cannot upload.
    let (status, code, _) = refusal(&results["denied"]);
    assert_eq!((status, code), (403, "forbidden"), "{}", results["denied"]);

    // The JPEG series: one slide of the hospital, as large as the SVS, every instance listed.
    let stored = &results["jpeg"];
    assert_eq!(stored["status"], 200, "{stored}");
    assert_eq!(stored["content_type"], "application/dicom+json", "{stored}");
    let slide = stored["slide_ids"].as_str().unwrap().to_string();
    assert!(!slide.contains(','), "{stored}");
    let mut referenced: Vec<&str> = stored["referenced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["instance"].as_str().unwrap())
        .collect();
    referenced.sort_unstable();
    let expected: Vec<&str> = results["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|uid| uid.as_str().unwrap())
        .collect();
    assert_eq!(referenced, expected, "{stored}");
    assert_eq!(stored["failed"], json!([]), "{stored}");
    let study = format!("/dicomweb/studies/{}", study_uid(&slide));
    let retrieve = stored["retrieve_url"].as_str().unwrap();
    assert!(
        retrieve.starts_with("http://") && retrieve.ends_with(&study),
        "{retrieve}"
    );
    // Instances are retrieved through the slide's own DICOM view: its one series.
    let series_url = format!("{study}/series/{}.1", study_uid(&slide));
    for item in stored["referenced"].as_array().unwrap() {
        let url = item["url"].as_str().unwrap();
        assert!(url.ends_with(&series_url), "{url}");
    }
    let shown = sam
        .ok(Method::GET, &format!("/api/v1/slides/{slide}"), None)
        .await;
    assert_eq!(shown["format"], "dicom", "{shown}");
    assert_eq!(
        json!([shown["width"], shown["height"]]),
        results["svs"],
        "{shown}"
    );

    // Pushed again naming a draft case: the same slide, now in the case.
    let again = &results["case"];
    assert_eq!(again["status"], 200, "{again}");
    assert_eq!(again["slide_ids"], Value::from(slide.clone()), "{again}");
    let case_json = sam
        .ok(Method::GET, &format!("/api/v1/cases/{case}"), None)
        .await;
    let in_case: Vec<&str> = case_json["slides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(in_case, vec![slide.as_str()], "{case_json}");

    // Over the size limit, declared or streamed.
    for step in ["too_large_declared", "too_large_streamed"] {
        let (status, code, _) = refusal(&results[step]);
        assert_eq!(
            (status, code),
            (413, "upload_too_large"),
            "{step}: {}",
            results[step]
        );
    }

    // Nothing but the one slide stayed: its instances and thumbnail, no staging file.
    let listed = sam.ok(Method::GET, "/api/v1/slides", None).await;
    assert_eq!(listed["slides"].as_array().unwrap().len(), 1, "{listed}");
    let objects = server.clinical_objects().await;
    let originals = objects
        .iter()
        .filter(|k| k.contains(&slide) && k.contains("/original/"))
        .count();
    assert_eq!(originals, series.instances.len(), "{objects:?}");
    assert!(objects.iter().all(|k| k.contains(&slide)), "{objects:?}");
    assert!(
        server.staging_files().is_empty(),
        "{:?}",
        server.staging_files()
    );

    // The refusals are in the audit log, with their reasons.
    let db = server.db().await;
    let rows = sqlx::query("SELECT outcome, detail FROM audit_log WHERE action = 'slide.stow'")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let audited: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.get("outcome"), r.get("detail")))
        .collect();
    assert!(
        audited
            .iter()
            .any(|(outcome, detail)| outcome == "refused" && detail.contains("RLE Lossless")),
        "{audited:?}"
    );
    assert!(
        audited.iter().any(|(outcome, _)| outcome == "denied"),
        "{audited:?}"
    );
}
