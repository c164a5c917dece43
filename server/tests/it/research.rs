//! The research tier through the running server, on both backends: signing a case out curates
//! its slide into a research slide with no trace of the canaries planted in the original; an
//! opt-out recorded before sign-out stops curation and one recorded after deletes the research
//! slide, with audit entries; only the patient's hospital may record one. Dataset versions cut
//! patches, split by patient, reuse shards of unchanged parameters, and leave out (and delete
//! the patches of) a patient who opts out while a version is being built.
//!
//! DICOM: one of the canary slides is a DICOM series (converted at test time by wsidicomizer,
//! uploaded as a zip) with an identifying string in every attribute that can hold one (patient,
//! accession, dates, institution, operator, device serial, specimen, a private block, the label's
//! own text and barcode) and a label and overview of a colour no tissue has. After sign-out and
//! curation, no byte of the research tier (every object under `research/`, every
//! `research_slides` row, the dataset API's answers) holds any of them, its UIDs, or the
//! clinical ids, in ASCII of either case or UTF-16; the research TIFF has the pyramid's pages
//! only, none of the label's pixels, and the allow-listed facts (size, MPP, objective power).

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pathfed_core::audit::recent;
use pathfed_core::jobs::kinds::{Curate, ForgetPatient, JobKind as _};
use pathfed_core::store::get_bytes;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::dicom::DicomSeries;
use crate::support::people::{Staff, sign_out_with, staff, tombstone, wait_for};
use crate::support::{self, As, BACKENDS, Reaped, TestServer, bin, submit_case, tools_python};

const CANARY: &str = "CANARY";

/// A generated SVS with canaries in its description fields, label, barcode, JPEG segments and
/// an orphan directory.
fn canary_slide(dir: &Path, name: &str, seed: u32) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new(bin())
        .args([
            "slide", "synth", "--width", "2400", "--height", "1800", "--seed",
        ])
        .arg(seed.to_string())
        .args([
            "--meta",
            "Filename=CANARY-FILENAME-01",
            "--meta",
            "User=CANARY-USER-02",
        ])
        .args([
            "--meta",
            "Date=CANARY-DATE-03",
            "--label-line",
            "CANARY-LABEL-04",
        ])
        .args([
            "--barcode",
            "CANARY-BARCODE-05",
            "--hidden-text",
            "CANARY-HIDDEN-06",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(contains(&std::fs::read(&out).unwrap(), CANARY));
    out
}

fn contains(bytes: &[u8], needle: &str) -> bool {
    bytes
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Where a DICOM canary is planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    /// An attribute of every instance.
    Every,
    /// An attribute of the first Specimen Description item of every instance.
    Specimen,
    /// The string of a private block (group 0009) in every instance.
    Private,
    /// An attribute of the LABEL instance only.
    Label,
}

/// The DICOM canary slide's identifying attributes: (where, keyword, value), every value unique.
/// Dates must be dates (their VR says so), so they are distinctive dates instead.
const DICOM_CANARIES: [(In, &str, &str); 21] = [
    (In::Every, "PatientName", "DCMCANARY-01"),
    (In::Every, "PatientID", "DCMCANARY-02"),
    (In::Every, "AccessionNumber", "DCMCANARY-03"),
    (In::Every, "InstitutionName", "DCMCANARY-04"),
    (In::Every, "InstitutionAddress", "DCMCANARY-05"),
    (In::Every, "OperatorsName", "DCMCANARY-06"),
    (In::Every, "ReferringPhysicianName", "DCMCANARY-07"),
    (In::Every, "DeviceSerialNumber", "DCMCANARY-08"),
    (In::Every, "StudyID", "DCMCANARY-09"),
    (In::Every, "ContainerIdentifier", "DCMCANARY-10"),
    (In::Every, "StudyDescription", "DCMCANARY-11"),
    (In::Every, "SeriesDescription", "DCMCANARY-12"),
    (In::Every, "StudyDate", "19020304"),
    (In::Every, "SeriesDate", "19030405"),
    (In::Every, "ContentDate", "19040506"),
    (In::Every, "AcquisitionDateTime", "19050607080910"),
    (In::Every, "PatientBirthDate", "19060708"),
    (In::Specimen, "SpecimenIdentifier", "DCMCANARY-13"),
    (In::Specimen, "SpecimenShortDescription", "DCMCANARY-14"),
    (In::Private, "a private block", "DCMCANARY-15"),
    (In::Label, "LabelText", "DCMCANARY-16"),
];
/// The label's barcode, on the LABEL instance only.
const DICOM_BARCODE: &str = "DCMCANARY-17";
/// The folder the instances are zipped in, as an export names it.
const DICOM_FOLDER: &str = "DCMCANARY-18 export";
/// The name of the uploaded zip.
const DICOM_ZIP: &str = "DCMCANARY-19.zip";
/// The label's and the overview's one colour: pure green, which no stained tissue has.
const CANARY_GREEN: [u8; 3] = [0, 255, 0];

/// The DICOM canary slide: the series and the zip uploaded.
struct DicomCanary {
    series: DicomSeries,
    zip: PathBuf,
}

/// A generated slide converted to a DICOM series with every canary of [`DICOM_CANARIES`] (and
/// the barcode) planted, solid green label and overview, and an objective power of 20 (an
/// allow-listed fact), zipped in a folder and under a name that are canaries too. Checks that
/// every canary is in the files uploaded, so the test of the research tier can fail.
fn dicom_canary_slide(dir: &Path) -> DicomCanary {
    let source = support::synth_slide(dir, "dicom-canary.svs", 1536, 1024, 23);
    let of = |place: In| -> serde_json::Map<String, Value> {
        DICOM_CANARIES
            .iter()
            .filter(|(p, _, _)| *p == place)
            .map(|(_, keyword, value)| ((*keyword).to_string(), json!(value)))
            .collect()
    };
    let mut label = of(In::Label);
    label.insert("BarcodeValue".into(), json!(DICOM_BARCODE));
    let private = DICOM_CANARIES
        .iter()
        .find(|(p, _, _)| *p == In::Private)
        .map(|(_, _, value)| *value)
        .unwrap();
    let edits = json!({
        "attributes": of(In::Every),
        "specimen": of(In::Specimen),
        "private": private,
        "label_attributes": label,
        "associated_rgb": CANARY_GREEN,
        "objective_power": 20,
    });
    let series = DicomSeries::convert(&source, &dir.join("dicom-canary"), &edits);
    let files: Vec<Vec<u8>> = series
        .instances
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    let planted =
        DICOM_CANARIES
            .iter()
            .copied()
            .chain([(In::Label, "BarcodeValue", DICOM_BARCODE)]);
    for (place, keyword, value) in planted {
        let found = files.iter().filter(|f| contains(f, value)).count();
        let want = if place == In::Label {
            found >= 1
        } else {
            found == files.len()
        };
        assert!(
            want,
            "{keyword} = {value} is in {found} of {} instances",
            files.len()
        );
    }
    let zip = series.zip(&dir.join(DICOM_ZIP), DICOM_FOLDER);
    DicomCanary { series, zip }
}

/// What must not reach the research tier from the DICOM canary slide, as (what, text): every
/// planted value (dates also as ISO and TIFF write them), the zip's and its folder's names and
/// every UID of the series.
fn dicom_needles(canary: &DicomCanary) -> Vec<(String, String)> {
    let mut needles = Vec::new();
    for (_, keyword, value) in DICOM_CANARIES {
        needles.push((keyword.to_string(), value.to_string()));
        if value.bytes().all(|b| b.is_ascii_digit()) {
            let (y, m, d) = (&value[..4], &value[4..6], &value[6..8]);
            needles.push((format!("{keyword} as ISO"), format!("{y}-{m}-{d}")));
            needles.push((format!("{keyword} as TIFF"), format!("{y}:{m}:{d}")));
        }
    }
    needles.push(("BarcodeValue".into(), DICOM_BARCODE.into()));
    let stem = DICOM_ZIP.trim_end_matches(".zip");
    needles.push(("the zip's name".into(), stem.into()));
    let folder = DICOM_FOLDER.split(' ').next().unwrap();
    needles.push(("the export folder's name".into(), folder.into()));
    needles.extend(
        canary
            .series
            .uids
            .iter()
            .map(|uid| (format!("UID {uid}"), uid.clone())),
    );
    needles
}

/// The needles (what, text) found in `bytes`: as ASCII in either case, or as UTF-16 in either
/// byte order, as a copy through another encoder (EXIF, XMP, a database) would write them.
fn leaked<'a>(bytes: &[u8], needles: &'a [(String, String)]) -> Vec<&'a str> {
    let haystack = bytes.to_ascii_lowercase();
    needles
        .iter()
        .filter(|(_, text)| {
            let text = text.to_ascii_lowercase();
            let utf16 = |big_endian: bool| -> Vec<u8> {
                text.encode_utf16()
                    .flat_map(|unit| {
                        if big_endian {
                            unit.to_be_bytes()
                        } else {
                            unit.to_le_bytes()
                        }
                    })
                    .collect()
            };
            [text.as_bytes().to_vec(), utf16(false), utf16(true)]
                .iter()
                .any(|form| {
                    haystack
                        .windows(form.len())
                        .any(|w| w[0] == form[0] && w == form.as_slice())
                })
        })
        .map(|(what, _)| what.as_str())
        .collect()
}

/// Counts, with tifffile and PIL, the canary-green pixels (green above 200, red and blue under
/// 80) of every page of each image file: `[{"pages": [{"width", "height", "green",
/// "description"}]}]`, one entry per file (a `.png` is one page).
const CENSUS_SCRIPT: &str = r#"
import json, sys
import numpy as np
import tifffile
from PIL import Image

def green(pixels):
    pixels = pixels.astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(((g > 200) & (r < 80) & (b < 80)).sum())

report = []
for path in sys.argv[1:]:
    if path.endswith(".png"):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        pages = [{"width": pixels.shape[1], "height": pixels.shape[0], "green": green(pixels),
                  "description": ""}]
    else:
        with tifffile.TiffFile(path) as tiff:
            pages = [{"width": page.imagewidth, "height": page.imagelength,
                      "green": green(page.asarray()), "description": page.description}
                     for page in tiff.pages]
    report.append({"pages": pages})
print(json.dumps(report))
"#;

fn colour_census(files: &[&Path]) -> Value {
    let out = Command::new(tools_python())
        .arg("-c")
        .arg(CENSUS_SCRIPT)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (width, height) of every level `slide info --json` reports for `path`.
fn level_sizes(info: &Value) -> Vec<(u64, u64)> {
    info["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["width"].as_u64().unwrap(), l["height"].as_u64().unwrap()))
        .collect()
}

/// Once the DICOM canary slide (`slide`, of `case`, patient MRN-1003) is the only live research
/// slide: its clinical label is the canary green (so the pixel check can fail); a dataset
/// version is cut, so a manifest and the dataset API join the research tier; then nothing of the
/// tier holds a canary, UID or clinical id, and the research TIFF is the pyramid with the
/// allow-listed facts and nothing of the label or overview.
async fn dicom_canaries_stay_out(
    server: &TestServer,
    spoke: &As<'_>,
    researcher: &As<'_>,
    canary: &DicomCanary,
    (case, slide): (&str, &str),
) {
    let backend = server.backend;
    let db = server.db().await;
    let store = server.store();

    // The clinical tier holds the series as uploaded, label included.
    let shown = spoke
        .ok(Method::GET, &format!("/api/v1/slides/{slide}"), None)
        .await;
    assert_eq!(shown["format"], "dicom", "{backend:?}: {shown}");
    assert_eq!(shown["has_label"], true, "{backend:?}: {shown}");
    let (status, label) = spoke.raw(&format!("/api/v1/slides/{slide}/label")).await;
    assert_eq!(status.as_u16(), 200, "{backend:?}");
    let label_png = server.dir.path().join("dicom-label.png");
    std::fs::write(&label_png, &label).unwrap();

    // The research slide and a dataset version of it.
    let row = sqlx::query(
        "SELECT object_key, width, height, vendor, pixel_path FROM research_slides \
         WHERE deleted_at IS NULL",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        (row.get::<i64, _>("width"), row.get::<i64, _>("height")),
        (1536, 1024),
        "{backend:?}"
    );
    assert_eq!(row.get::<String, _>("vendor"), "dicom", "{backend:?}");
    assert_eq!(
        row.get::<String, _>("pixel_path"),
        "re-encoded",
        "{backend:?}"
    );
    let out = server.cli_ok(&[
        "dataset",
        "create",
        "dicom-privacy",
        "--server",
        &server.url,
        "--token",
        &researcher.token,
        "--labels",
        "gastric-group",
        "--min-cell-size",
        "1",
        "--no-patches",
    ]);
    assert!(out.contains("dicom-privacy@1"), "{backend:?}: {out}");

    // Every byte of the research tier: objects, rows, and the dataset API's answers.
    let mut tier: Vec<(String, Vec<u8>)> = Vec::new();
    let keys = pathfed_core::store::list_keys(&store, "research/")
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.starts_with("research/slides/"))
            && keys.iter().any(|k| k.starts_with("research/datasets/")),
        "{backend:?}: {keys:?}"
    );
    for key in keys {
        let bytes = get_bytes(&store, &key).await.unwrap();
        tier.push((key, bytes));
    }
    for each in sqlx::query("SELECT * FROM research_slides")
        .fetch_all(db.pool())
        .await
        .unwrap()
    {
        // Every text column; numbers cannot hold a name.
        let text: Vec<String> = (0..each.len())
            .filter_map(|i| each.try_get::<Option<String>, _>(i).ok().flatten())
            .collect();
        tier.push((
            format!("research_slides row {}", each.get::<String, _>("id")),
            text.join("\n").into_bytes(),
        ));
    }
    for path in [
        "/api/v1/datasets",
        "/api/v1/datasets/dicom-privacy/versions/1",
    ] {
        let answer = researcher.ok(Method::GET, path, None).await;
        tier.push((path.to_string(), answer.to_string().into_bytes()));
    }
    let mut needles = dicom_needles(canary);
    needles.extend([
        ("the clinical slide id".to_string(), slide.to_string()),
        ("the case id".to_string(), case.to_string()),
        ("a patient id".to_string(), "MRN-100".to_string()),
        ("any canary".to_string(), CANARY.to_string()),
    ]);
    for (what, bytes) in &tier {
        let found = leaked(bytes, &needles);
        assert!(
            found.is_empty(),
            "{backend:?}: {found:?} reached the research tier in {what}"
        );
    }

    // The research TIFF: the source's pyramid page for page, none of the label's or overview's
    // pixels, and the allow-listed facts (MPP, objective power, vendor) in its own tags.
    let key: String = row.get("object_key");
    let research_tiff = server.dir.path().join("dicom-research.tiff");
    std::fs::write(&research_tiff, get_bytes(&store, &key).await.unwrap()).unwrap();
    let census = colour_census(&[&label_png, &research_tiff]);
    let label_page = &census[0]["pages"][0];
    let label_pixels =
        label_page["width"].as_u64().unwrap() * label_page["height"].as_u64().unwrap();
    assert!(
        label_page["green"].as_u64().unwrap() * 10 >= label_pixels * 9,
        "{backend:?}: the clinical label is not the canary green: {label_page}"
    );
    let source: Value = serde_json::from_str(&server.cli_ok(&[
        "slide",
        "info",
        "--json",
        canary.series.folder.to_str().unwrap(),
    ]))
    .unwrap();
    let pages = census[1]["pages"].as_array().unwrap();
    let page_sizes: Vec<(u64, u64)> = pages
        .iter()
        .map(|p| (p["width"].as_u64().unwrap(), p["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        page_sizes,
        level_sizes(&source),
        "{backend:?}: a research TIFF page that is no pyramid level"
    );
    assert!(
        pages.iter().all(|p| p["green"] == 0),
        "{backend:?}: label or overview pixels in the research TIFF: {pages:?}"
    );
    assert_eq!(
        pages[0]["description"],
        "pathfed research slide|vendor=dicom|objective-power=20|mpp-x=0.499|mpp-y=0.499",
        "{backend:?}"
    );
    let info: Value = serde_json::from_str(&server.cli_ok(&[
        "slide",
        "info",
        "--json",
        research_tiff.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["associated_images"], json!([]), "{backend:?}: {info}");
    assert_eq!(level_sizes(&info), level_sizes(&source), "{backend:?}");
    assert!(
        (info["mpp_x"].as_f64().unwrap() - 0.499).abs() < 1e-3,
        "{backend:?}: {info}"
    );
}

/// First read, concordant blind double-check, sign-out with GAS-G3.
async fn sign_out(first: &As<'_>, second: &As<'_>, case: &str, slide: &str) {
    sign_out_with(first, second, case, slide, "GAS-G3").await;
}

/// Submits a generated slide for `patient` from the spoke and signs the case out with GAS-G3;
/// returns (case, slide).
async fn signed_out_case(
    server: &TestServer,
    staff: &Staff<'_>,
    name: &str,
    patient: &str,
    seed: u32,
) -> (String, String) {
    let file = support::synth_slide(server.dir.path(), name, 2400, 1800, seed);
    let (case, slide) = submit_case(server, &staff.spoke.token, &file, patient);
    sign_out(&staff.first, &staff.second, &case, &slide).await;
    (case, slide)
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_out_curates_without_canaries_and_opt_outs_remove_research_data() {
    let fixtures = tempfile::tempdir().unwrap();
    let dicom = dicom_canary_slide(fixtures.path());
    for backend in BACKENDS {
        // Small cells: the DICOM check cuts a dataset version of one slide.
        let server = TestServer::start_with(backend, &[SMALL_CELLS]);
        let Staff {
            spoke,
            first,
            second,
            researcher,
        } = staff(&server);
        let db = server.db().await;
        let store = server.store();

        // Sign-out → a curated research slide, free of every canary.
        let file = canary_slide(server.dir.path(), "canary.svs", 21);
        let (case, slide) = submit_case(&server, &spoke.token, &file, "MRN-1001");
        sign_out(&first, &second, &case, &slide).await;
        let research = wait_for("the research slide", Duration::from_secs(90), || {
            let db = db.clone();
            async move {
                sqlx::query(
                    "SELECT id, object_key, label_code, sha256, width, height FROM research_slides",
                )
                .fetch_optional(db.pool())
                .await
                .unwrap()
            }
        })
        .await;
        let id: String = research.get("id");
        let key: String = research.get("object_key");
        assert!(
            id.starts_with("rs-") && !id.contains(&slide),
            "{backend:?}: pseudonym {id}"
        );
        assert_eq!(research.get::<String, _>("label_code"), "GAS-G3");
        assert_eq!(
            (
                research.get::<i64, _>("width"),
                research.get::<i64, _>("height")
            ),
            (2400, 1800)
        );
        let bytes = get_bytes(&store, &key).await.unwrap();
        assert!(
            !contains(&bytes, CANARY),
            "{backend:?}: a canary reached the research tier"
        );
        assert!(
            !contains(&bytes, &slide) && !contains(&bytes, &case) && !contains(&bytes, "MRN-1001")
        );
        assert_eq!(
            support::sha256_hex(&bytes),
            research.get::<String, _>("sha256")
        );
        let local = server.dir.path().join("research.tiff");
        std::fs::write(&local, &bytes).unwrap();
        let info: Value = serde_json::from_str(&server.cli_ok(&[
            "slide",
            "info",
            "--json",
            local.to_str().unwrap(),
        ]))
        .unwrap();
        assert_eq!(info["associated_images"], json!([]), "{info}");
        assert!(
            (info["mpp_x"].as_f64().unwrap() - 0.499).abs() < 1e-3,
            "{info}"
        );

        // Only the patient's hospital records an opt-out.
        let body = json!({ "patient_id": "MRN-1001" });
        researcher
            .refused(Method::POST, "/api/v1/opt-outs", Some(body.clone()), 403)
            .await;
        first
            .refused(Method::POST, "/api/v1/opt-outs", Some(body.clone()), 403)
            .await;
        spoke
            .refused(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": " " })),
                400,
            )
            .await;

        // Opt-out after curation: the research slide goes, a tombstone and audit entry stay.
        let (status, recorded) = spoke
            .call(Method::POST, "/api/v1/opt-outs", Some(body.clone()))
            .await;
        assert_eq!(status.as_u16(), 201, "{recorded}");
        let (status, _) = spoke
            .call(Method::POST, "/api/v1/opt-outs", Some(body))
            .await;
        assert_eq!(status.as_u16(), 200, "recording twice is harmless");
        assert_eq!(tombstone(&db, &id).await, "opt-out");
        assert!(
            get_bytes(&store, &key).await.is_err(),
            "{backend:?}: the research object is gone"
        );
        let audit = recent(&db, 500).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "patient.opt_out" && e.event.outcome == "ok")
        );
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "research_slide.delete"
                    && e.event.target == format!("research_slide:{id}"))
        );
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "patient.opt_out" && e.event.outcome == "denied")
        );

        // Opt-out before sign-out: nothing is curated for that patient.
        spoke
            .ok(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "MRN-1002" })),
            )
            .await;
        let file = canary_slide(server.dir.path(), "second.svs", 22);
        let (case2, slide2) = submit_case(&server, &spoke.token, &file, "MRN-1002");
        sign_out(&first, &second, &case2, &slide2).await;
        // A third patient's case, signed out after, proves the worker is running meanwhile. Its
        // slide is the DICOM canary series, uploaded as a zip.
        let (case3, slide3) = submit_case(&server, &spoke.token, &dicom.zip, "MRN-1003");
        sign_out(&first, &second, &case3, &slide3).await;
        wait_for(
            "the third patient's research slide",
            Duration::from_secs(90),
            || {
                let db = db.clone();
                async move {
                    let n: i64 = sqlx::query(
                        "SELECT COUNT(*) AS n FROM research_slides WHERE deleted_at IS NULL",
                    )
                    .fetch_one(db.pool())
                    .await
                    .unwrap()
                    .get("n");
                    (n == 1).then_some(())
                }
            },
        )
        .await;
        let curate_jobs: Vec<String> = sqlx::query("SELECT payload FROM jobs WHERE kind = $1")
            .bind(Curate::NAME)
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("payload"))
            .collect();
        assert!(
            curate_jobs.iter().all(|p| !p.contains(&slide2)),
            "{backend:?}: opted-out slide enqueued"
        );
        assert_eq!(curate_jobs.len(), 2);

        // Nothing of the DICOM series but the allow-listed facts is in the research tier.
        dicom_canaries_stay_out(&server, &spoke, &researcher, &dicom, (&case3, &slide3)).await;
    }
}

/// Object keys under `research/patches/`.
async fn patch_keys(server: &TestServer) -> Vec<String> {
    pathfed_core::store::list_keys(&server.store(), "research/patches/")
        .await
        .unwrap()
}

/// The research slides of live rows, by curation order.
async fn live_research_slides(db: &pathfed_core::Db) -> Vec<String> {
    sqlx::query("SELECT id FROM research_slides WHERE deleted_at IS NULL ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("id"))
        .collect()
}

/// The platform's minimum cell size of the tests that build versions of a few patients: a
/// version may not ask for less than the platform's (`anonymity.rs` tests the floor itself).
const SMALL_CELLS: (&str, &str) = ("PATHFED_RESEARCH_MIN_CELL_SIZE", "1");

#[tokio::test(flavor = "multi_thread")]
async fn dataset_versions_cut_patches_split_by_patient_and_honour_opt_outs() {
    for backend in BACKENDS {
        let server = TestServer::start_with(backend, &[SMALL_CELLS]);
        let Staff {
            spoke,
            first,
            second,
            researcher,
        } = staff(&server);
        let db = server.db().await;

        // Four patients, two diagnoses.
        for (i, code) in ["GAS-G1", "GAS-G3", "GAS-G1", "GAS-G3"].iter().enumerate() {
            let file = support::synth_slide(
                server.dir.path(),
                &format!("p{i}.svs"),
                2400,
                1800,
                30 + i as u32,
            );
            let (case, slide) = submit_case(&server, &spoke.token, &file, &format!("P-{i}"));
            sign_out_with(&first, &second, &case, &slide, code).await;
        }
        wait_for("four research slides", Duration::from_secs(120), || {
            let db = db.clone();
            async move { (live_research_slides(&db).await.len() == 4).then_some(()) }
        })
        .await;

        // A version with patches, built by its extract job while the CLI follows it.
        let create = |extra: &[&str]| {
            let mut args = vec![
                "dataset",
                "create",
                "stomach",
                "--server",
                &server.url,
                "--token",
                &researcher.token,
                "--labels",
                "gastric-group",
                "--filter",
                "organ=stomach",
                "--min-cell-size",
                "1",
            ];
            args.extend_from_slice(extra);
            server.cli_ok(&args)
        };
        let out = create(&[]);
        assert!(
            out.contains("stomach@1") && out.contains("patches:"),
            "{out}"
        );
        let v1 = researcher
            .ok(Method::GET, "/api/v1/datasets/stomach/versions/1", None)
            .await;
        let content = &v1["content"];
        let extraction = &content["extraction"];
        assert!(
            extraction["patches"].as_u64().unwrap() >= 20,
            "{extraction}"
        );
        let qc = extraction["slides"].as_object().unwrap();
        assert_eq!(qc.len(), 4, "{backend:?}: every slide extracted");
        for (id, slide) in qc {
            let q = &slide["qc"];
            let tissue = q["tissue_fraction"].as_f64().unwrap();
            assert!(tissue > 0.1 && tissue < 0.9, "{id}: {q}");
            assert!(q["patches"].as_u64().unwrap() > 0, "{id}: {q}");
            assert_eq!(q["pen_fraction"].as_f64(), Some(0.0), "{id}: {q}");
            assert!(q["blur_fraction"].as_f64().unwrap() < 0.2, "{id}: {q}");
            assert!((slide["mpp"][0].as_f64().unwrap() - 0.5).abs() < 0.01);
        }
        // Patient-level splits: no patient in two splits.
        let mut split_of = std::collections::HashMap::new();
        for entry in content["slides"].as_array().unwrap() {
            let patient = entry["patient"].as_str().unwrap().to_string();
            let split = entry["split"].as_str().unwrap().to_string();
            assert_eq!(
                split_of.entry(patient).or_insert_with(|| split.clone()),
                &split
            );
        }
        let labels: std::collections::BTreeSet<String> = extraction["patch_counts"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|l| l.as_object().unwrap().keys().cloned().collect::<Vec<_>>())
            .collect();
        assert_eq!(labels.into_iter().collect::<Vec<_>>(), ["GAS-G1", "GAS-G3"]);

        // The catalogue's sample patches are real 256 px JPEGs, for researchers only.
        let samples = researcher
            .ok(
                Method::GET,
                "/api/v1/datasets/stomach/versions/1/samples",
                None,
            )
            .await;
        let samples = samples.as_array().unwrap();
        assert!(samples.len() >= 4, "{samples:?}");
        let url = samples[0]["url"].as_str().unwrap();
        let (status, jpeg) = researcher.raw(url).await;
        assert_eq!(status.as_u16(), 200);
        let patch = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((patch.width(), patch.height()), (256, 256));
        // Each patch is a view of a research slide: the log names who saw which slide.
        let viewed = url.split('/').nth_back(1).unwrap();
        assert!(
            recent(&db, 200).await.unwrap().iter().any(|e| {
                e.event.action == "research.patch"
                    && e.event.actor == "res_h"
                    && e.event.outcome == "ok"
                    && e.event.target == format!("research_slide:{viewed}")
            }),
            "{backend:?}: the researcher's patch view is not in the audit log"
        );
        for outsider in [&spoke, &first] {
            let (status, _) = outsider.raw(url).await;
            assert_eq!(
                status.as_u16(),
                403,
                "{backend:?}: patch to a non-researcher"
            );
            outsider
                .refused(
                    Method::GET,
                    "/api/v1/datasets/stomach/versions/1/samples",
                    None,
                    403,
                )
                .await;
        }
        let (status, _) = researcher
            .raw(&format!("{}/99999", url.rsplit_once('/').unwrap().0))
            .await;
        assert_eq!(status.as_u16(), 404);

        // The same parameters again: the same content, and not one new shard.
        let shards = patch_keys(&server).await;
        assert_eq!(shards.len(), 8, "{shards:?}");
        create(&[]);
        let v2 = researcher
            .ok(Method::GET, "/api/v1/datasets/stomach/versions/2", None)
            .await;
        assert_eq!(v2["content_hash"], v1["content_hash"]);
        assert_eq!(patch_keys(&server).await, shards);

        // A changed parameter never reuses patches.
        create(&["--patch-size", "128"]);
        let v3 = researcher
            .ok(Method::GET, "/api/v1/datasets/stomach/versions/3", None)
            .await;
        let (h1, h3) = (
            v1["content"]["extraction"]["params_hash"].as_str().unwrap(),
            v3["content"]["extraction"]["params_hash"].as_str().unwrap(),
        );
        assert_ne!(h1, h3);
        assert_eq!(patch_keys(&server).await.len(), 16);

        // Bad parameters are refused before anything is numbered.
        let refused = server.cli(&[
            "dataset",
            "create",
            "stomach",
            "--server",
            &server.url,
            "--token",
            &researcher.token,
            "--labels",
            "gastric-group",
            "--patch-size",
            "8",
        ]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("patch size"));

        // P-0 opts out while version 4 is being built: it holds none of their slides and no
        // patch of theirs is left under any parameters.
        let before = live_research_slides(&db).await;
        let out = create(&["--no-wait", "--patch-mpp", "1.0"]);
        assert!(out.contains("stomach@4 accepted"), "{out}");
        spoke
            .ok(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "P-0" })),
            )
            .await;
        let state = wait_for("version 4", Duration::from_secs(120), || async {
            let state = researcher
                .ok(
                    Method::GET,
                    "/api/v1/datasets/stomach/versions/4/status",
                    None,
                )
                .await;
            (state["status"] != "building").then_some(state)
        })
        .await;
        assert_eq!(state["status"], "published", "{state}");
        let gone = wait_for("P-0's tombstone", Duration::from_secs(60), || {
            let db = db.clone();
            let before = before.clone();
            async move {
                let live = live_research_slides(&db).await;
                (live.len() == 3).then(|| before.into_iter().find(|id| !live.contains(id)).unwrap())
            }
        })
        .await;
        let v4 = researcher
            .ok(Method::GET, "/api/v1/datasets/stomach/versions/4", None)
            .await;
        assert!(
            !v4.to_string().contains(&gone),
            "{backend:?}: the opted-out patient's slide is in the next version"
        );
        assert_eq!(v4["content"]["slides"].as_array().unwrap().len(), 3);
        // The forget job may finish a moment after the version: wait for it, then look.
        wait_for("P-0's patches to go", Duration::from_secs(60), || {
            let gone = gone.clone();
            let server = &server;
            async move {
                let keys = patch_keys(server).await;
                keys.iter().all(|k| !k.contains(&gone)).then_some(())
            }
        })
        .await;
        let audit = recent(&db, 1000).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "research_slide.delete"
                    && e.event.target == format!("research_slide:{gone}"))
        );
        assert!(
            audit
                .iter()
                .any(|e| e.event.action == "dataset.create" && e.event.outcome == "ok")
        );
    }
}

/// The status and result of the curate job of `slide`, once one exists.
async fn curate_job(db: &pathfed_core::Db, slide: &str) -> Option<(String, Option<String>)> {
    sqlx::query("SELECT status, result FROM jobs WHERE kind = $1 AND payload LIKE $2")
        .bind(Curate::NAME)
        .bind(format!("%{slide}%"))
        .fetch_optional(db.pool())
        .await
        .unwrap()
        .map(|r| (r.get("status"), r.get("result")))
}

#[tokio::test(flavor = "multi_thread")]
async fn opt_out_while_curation_runs_leaves_nothing_behind() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    for backend in BACKENDS {
        // No in-process workers: a separate worker runs curation so the test can freeze it
        // mid-job (SIGSTOP) while the patient opts out.
        let server = TestServer::start_with(
            backend,
            &[("PATHFED_RESEARCH_SERVE_WORKERS", "0"), SMALL_CELLS],
        );
        let people = staff(&server);
        let db = server.db().await;

        let (_, slide) = signed_out_case(&server, &people, "during.svs", "D-1", 41).await;
        assert_eq!(
            curate_job(&db, &slide).await.unwrap().0,
            "queued",
            "{backend:?}: nothing runs curation yet"
        );

        let worker = Reaped(
            server
                .command(&[
                    "worker",
                    "--kinds",
                    &format!("{},{}", Curate::NAME, ForgetPatient::NAME),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = Pid::from_raw(worker.0.id() as i32);
        // Freeze it once its work folder exists: past the first opt-out check, de-identifying.
        let data = server.dir.path().join("data");
        let start = Instant::now();
        while !std::fs::read_dir(&data).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("curate-")
        }) {
            assert!(start.elapsed() < Duration::from_secs(60), "never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        kill(pid, Signal::SIGSTOP).unwrap();
        let frozen = curate_job(&db, &slide).await.unwrap().0;
        let (status, _) = people
            .spoke
            .call(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "D-1" })),
            )
            .await;
        assert_eq!(status.as_u16(), 201);
        assert_eq!(
            frozen, "running",
            "{backend:?}: the opt-out must land while the curate job runs"
        );
        kill(pid, Signal::SIGCONT).unwrap();

        let result = wait_for("the curate job", Duration::from_secs(90), || {
            let (db, slide) = (db.clone(), slide.clone());
            async move {
                curate_job(&db, &slide)
                    .await
                    .filter(|(status, _)| status == "succeeded")
                    .and_then(|(_, result)| result)
            }
        })
        .await;
        let result: Value = serde_json::from_str(&result).unwrap();
        eprintln!("{backend:?}: the curate job that ran during the opt-out: {result}");
        // Either interleaving is fine, but both must leave nothing: the job saw the opt-out
        // before publishing, or it published first and the forget job removed the slide.
        if let Some(id) = result["research_slide"].as_str() {
            assert_eq!(tombstone(&db, id).await, "opt-out");
            assert!(
                recent(&db, 500)
                    .await
                    .unwrap()
                    .iter()
                    .any(|e| e.event.action == "research_slide.delete"
                        && e.event.target == format!("research_slide:{id}"))
            );
        } else {
            assert_eq!(
                result["skipped"], "the patient opted out during curation",
                "{backend:?}: {result}"
            );
        }
        assert!(live_research_slides(&db).await.is_empty());
        let objects = pathfed_core::store::list_keys(&server.store(), "research/")
            .await
            .unwrap();
        assert!(
            objects.is_empty(),
            "{backend:?}: left in the research tier: {objects:?}"
        );
        assert!(
            recent(&db, 500)
                .await
                .unwrap()
                .iter()
                .any(|e| e.event.action == "patient.opt_out" && e.event.outcome == "ok")
        );

        // Another patient curated by the same worker afterwards; the next version holds only
        // that slide.
        signed_out_case(&server, &people, "after.svs", "D-2", 42).await;
        let kept = wait_for("D-2's research slide", Duration::from_secs(90), || {
            let db = db.clone();
            async move { live_research_slides(&db).await.pop() }
        })
        .await;
        let out = server.cli_ok(&[
            "dataset",
            "create",
            "during",
            "--server",
            &server.url,
            "--token",
            &people.researcher.token,
            "--labels",
            "gastric-group",
            "--min-cell-size",
            "1",
            "--no-patches",
        ]);
        assert!(out.contains("during@1"), "{out}");
        let version = people
            .researcher
            .ok(Method::GET, "/api/v1/datasets/during/versions/1", None)
            .await;
        let slides: Vec<&str> = version["content"]["slides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap())
            .collect();
        assert_eq!(slides, [kept.as_str()], "{backend:?}");
        drop(worker);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_recurates_under_new_pseudonyms_and_retires_the_old() {
    for backend in BACKENDS {
        let mut server = TestServer::start(backend);
        let people = staff(&server);
        let db = server.db().await;
        signed_out_case(&server, &people, "rotate.svs", "R-1", 51).await;
        let old = wait_for("the research slide", Duration::from_secs(90), || {
            let db = db.clone();
            async move { live_research_slides(&db).await.pop() }
        })
        .await;
        let out = server.cli_ok(&["admin", "recurate"]);
        assert!(out.contains("1 curated, 0 queued now"), "{out}");

        // Rotation: stop, move the key aside, start with a new one, re-curate.
        server.kill();
        let key = server.dir.path().join("data/keys/research-id.key");
        std::fs::rename(&key, key.with_extension("key.old")).unwrap();
        server.restart();
        let out = server.cli_ok(&["admin", "recurate"]);
        assert!(
            out.contains("0 curated, 1 queued now"),
            "{backend:?}: {out}"
        );
        let out = server.cli_ok(&["admin", "recurate"]);
        assert!(
            out.contains(", 0 queued now"),
            "{backend:?}: a second run queues nothing more: {out}"
        );
        let live = wait_for("the re-curated slide", Duration::from_secs(90), || {
            let db = db.clone();
            async move {
                let live = live_research_slides(&db).await;
                (live.len() == 2).then_some(live)
            }
        })
        .await;
        let new = live.into_iter().find(|id| *id != old).unwrap();

        let out = server.cli_ok(&["admin", "recurate", "--retire-stale"]);
        assert!(out.contains("retired 1 "), "{backend:?}: {out}");
        assert_eq!(live_research_slides(&db).await, std::slice::from_ref(&new));
        assert_eq!(tombstone(&db, &old).await, "retired");
        let objects = pathfed_core::store::list_keys(&server.store(), "research/slides/")
            .await
            .unwrap();
        assert_eq!(
            objects,
            [format!("research/slides/{new}.tiff")],
            "{backend:?}"
        );
        assert!(recent(&db, 500).await.unwrap().iter().any(|e| {
            e.event.action == "research_slide.delete"
                && e.event.target == format!("research_slide:{old}")
        }));
    }
}
