//! DICOMweb over clinical slides (`/dicomweb/…`), through the running server, checked with the
//! tools DICOM sites use: `dicomweb-client` searches (QIDO-RS) and retrieves metadata and frames
//! (WADO-RS), and `wsidicom` opens each slide through its DICOMweb source and reads regions, in
//! one Python process that authenticates with the owner's API token.
//!
//! - The project's real Aperio slide (one level, 240-pixel JPEG tiles stored as RGB), a
//!   generated two-level SVS, and a generated LZW-compressed pyramidal TIFF (no JPEG to pass
//!   through) are each one study with one series and an instance per level, with the sizes,
//!   frame grids, resolution and colour model of the slide (RGB for the stored RGB tiles,
//!   YBR_FULL for the frames the server encodes); patient identity is empty and the uploaded
//!   file's name appears nowhere.
//! - A frame of the Aperio slide is its stored tile, byte for byte: what `raw_tile` gives, whose
//!   scan (SOS onwards) is the SVS file's own bytes as tifffile reads them.
//! - What wsidicom reads through DICOMweb is our own region at level 0 and at a reduced level
//!   (across the ragged bottom edge): for stored tiles within what two JPEG decoders differ by
//!   (measured: mean 0.003, max 1; allowed: mean 0.05, max 2), for encoded frames within
//!   what JPEG at the tiles' quality (80) loses on this texture (about 3 on average; at most 5
//!   allowed, where a frame misplaced by even one pixel differs by more than 6); the levels and
//!   the resolution it reports are the slide's.
//! - Whoever may not see a slide does not find it: another hospital's user gets an empty search
//!   and 404; refusals (frame 0, a frame beyond the instance, an unknown instance or series, a
//!   type the server cannot give) are 4xx with the JSON error body and CORS; access is audited
//!   as `slide.dicomweb` once per hour.

use std::path::Path;
use std::process::Command;

use image::RgbImage;
use pathfed_core::audit::recent;
use pathfed_slide::SlideReader;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, client, synth_slide, tools_python, upload};

/// Searches, retrieves and reads through DICOMweb as a DICOMweb client would; writes what it
/// saw to `OUT/result.json` and the regions wsidicom read to PNG files beside it.
const SCRIPT: &str = r#"
import json, os, sys
import requests
import tifffile
from dicomweb_client import DICOMwebClient
from wsidicom import WsiDicom, WsiDicomWebClient

base, token, out, plan = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
session = requests.Session()
session.headers["Authorization"] = "Bearer " + token
client = DICOMwebClient(base + "/dicomweb", session=session)
JPEG = ("image/jpeg", "1.2.840.10008.1.2.4.50")

def uid(dataset, tag):
    return dataset[tag]["Value"][0]

result = {"studies": [uid(s, "0020000D") for s in client.search_for_studies()]}
for name, study in plan["studies"].items():
    series = client.search_for_series(study)
    series_uid = uid(series[0], "0020000E")
    instances = sorted(
        client.search_for_instances(study, series_uid), key=lambda i: uid(i, "00200013")
    )
    metadata = [
        client.retrieve_instance_metadata(study, series_uid, uid(i, "00080018"))
        for i in instances
    ]
    slide = WsiDicom.open_web(WsiDicomWebClient(client), study, series_uid)
    levels = [[l.size.width, l.size.height, l.mpp.width, l.mpp.height, l.level] for l in slide.levels]
    regions = []
    for index, (level, x, y, w, h) in enumerate(plan["regions"][name]):
        path = os.path.join(out, f"{name}-{index}.png")
        slide.read_region((x, y), level, (w, h)).convert("RGB").save(path)
        regions.append(path)
    slide.close()
    result[name] = {
        "series": series, "instances": instances, "metadata": metadata,
        "levels": levels, "regions": regions,
    }

# Frames of the Aperio slide's full-resolution instance: one, then two at once.
study = plan["studies"]["real"]
series_uid = uid(result["real"]["series"][0], "0020000E")
instance = uid(result["real"]["instances"][0], "00080018")
frame = plan["frame"]
one = client.retrieve_instance_frames(study, series_uid, instance, [frame], media_types=(JPEG,))
two = client.retrieve_instance_frames(study, series_uid, instance, [1, frame], media_types=(JPEG,))
with open(os.path.join(out, "frame.jpg"), "wb") as f:
    f.write(one[0])
# The same tile as the SVS stores it (TIFF tiles run row by row too): its scan must end the
# frame, untouched.
with tifffile.TiffFile(plan["svs"]) as tif:
    page = tif.pages[0]
    tif.filehandle.seek(page.dataoffsets[frame - 1])
    stored = tif.filehandle.read(page.databytecounts[frame - 1])
scan = stored[stored.index(b"\xff\xda"):]
result["frames"] = {
    "one": len(one), "two": len(two), "second_of_two_is_the_one": two[1] == one[0],
    "stored_scan_ends_the_frame": one[0].endswith(scan), "scan_bytes": len(scan),
}
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(result, f)
"#;

/// The Study Instance UID the server gives a slide: `2.25.` and its UUID as a decimal number.
fn study_of(slide: &str) -> String {
    format!(
        "2.25.{}",
        u128::from_str_radix(&slide.replace('-', ""), 16).unwrap()
    )
}

/// GET `path` with `token` and extra headers.
async fn get(
    server: &TestServer,
    token: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = client()
        .get(format!("{}{path}", server.url))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Fails unless the answer is `status` with the JSON error body (code `code`) and CORS.
async fn assert_refused(response: reqwest::Response, status: StatusCode, code: &str, what: &str) {
    assert_eq!(response.status(), status, "{what}");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "*",
        "{what}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// The first value of a DICOM JSON attribute.
fn value<'a>(dataset: &'a Value, tag: &str) -> &'a Value {
    &dataset[tag]["Value"][0]
}

/// Mean and largest absolute difference per channel of two images of the same size.
fn differences(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions(), "images differ in size");
    let (mut sum, mut max) = (0u64, 0u8);
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        sum += u64::from(d);
        max = max.max(d);
    }
    (sum as f64 / a.as_raw().len() as f64, max)
}

#[tokio::test(flavor = "multi_thread")]
async fn dicomweb_clients_read_slides_as_whole_slide_images() {
    let server = TestServer::start(Backend::Local);
    let owner = server.user("Spoke DW", "spoke", "dw_owner", "submitter");
    let outsider = server.user("Spoke DX", "spoke", "dw_outsider", "submitter");
    let svs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../slide/tests/fixtures/CMU-1-Small-Region.svs")
        .canonicalize()
        .unwrap();
    let real = upload(&server, &owner, &svs).await;
    let generated = synth_slide(server.dir.path(), "dicomweb.svs", 2048, 1536, 41);
    let synth = upload(&server, &owner, &generated).await;
    let lossless = server.dir.path().join("dicomweb-lzw.tif");
    server.cli_ok(&[
        "slide",
        "synth",
        "--out",
        lossless.to_str().unwrap(),
        "--width",
        "768",
        "--height",
        "512",
        "--format",
        "generic-tiff",
        "--compression",
        "lzw",
        "--seed",
        "43",
    ]);
    let lzw = upload(&server, &owner, &lossless).await;
    let (real_study, synth_study, lzw_study) = (study_of(&real), study_of(&synth), study_of(&lzw));
    let limits = pathfed_core::SlideLimits::default();
    let real_reader = pathfed_slide::open(&svs, &limits).unwrap();
    let synth_reader = pathfed_slide::open(&generated, &limits).unwrap();
    let lzw_reader = pathfed_slide::open(&lossless, &limits).unwrap();
    let real_props = real_reader.properties();
    let synth_props = synth_reader.properties();
    let lzw_props = lzw_reader.properties();
    assert_eq!(
        lzw_props
            .levels
            .iter()
            .map(|l| (l.width, l.height))
            .collect::<Vec<_>>(),
        [(768, 512), (384, 256)]
    );
    assert_eq!(real_props.levels.len(), 1);
    assert_eq!(
        synth_props
            .levels
            .iter()
            .map(|l| (l.width, l.height))
            .collect::<Vec<_>>(),
        [(2048, 1536), (512, 384)]
    );

    // One Python process: dicomweb-client's searches and retrievals, wsidicom's reads.
    // Regions are (wsidicom's level, x, y, w, h) with our level alongside; wsidicom numbers a
    // level by its scale (2 is 4× reduced). The reduced one reaches the level's right and
    // bottom edges, whose bottom frames extend past the level.
    let frame = 12u64; // column 1, row 1 of the 10-frame-wide grid
    let regions = [
        ("real", 0usize, 0usize, 500u64, 700u64, 300u32, 200u32),
        ("synth", 0, 0, 300, 200, 400, 300),
        ("synth", 2, 1, 250, 150, 262, 234),
        ("lzw", 0, 0, 200, 100, 400, 300),
    ];
    let plan_regions = |name: &str| -> Vec<Value> {
        regions
            .iter()
            .filter(|r| r.0 == name)
            .map(|&(_, theirs, _, x, y, w, h)| json!([theirs, x, y, w, h]))
            .collect()
    };
    let plan = json!({
        "studies": {"real": real_study, "synth": synth_study, "lzw": lzw_study},
        "regions": {
            "real": plan_regions("real"),
            "synth": plan_regions("synth"),
            "lzw": plan_regions("lzw"),
        },
        "frame": frame,
        "svs": svs,
    });
    let out = server.dir.path().join("dicomweb-out");
    std::fs::create_dir_all(&out).unwrap();
    let run = Command::new(tools_python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(&server.url)
        .arg(&owner)
        .arg(&out)
        .arg(plan.to_string())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "the DICOMweb clients failed:\n{}{}\nserver log:\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
        server.log()
    );
    let result: Value =
        serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();

    // QIDO: the owner finds both studies, each with one series and an instance per level.
    let mut studies: Vec<&str> = result["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    studies.sort_unstable();
    let mut expected = vec![
        real_study.as_str(),
        synth_study.as_str(),
        lzw_study.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(studies, expected);
    // (name, slide, study, its properties, the colour model of its frames)
    let slides = [
        ("real", &real, &real_study, real_props, "RGB"),
        ("synth", &synth, &synth_study, synth_props, "RGB"),
        ("lzw", &lzw, &lzw_study, lzw_props, "YBR_FULL"),
    ];
    for (name, slide_id, study, props, photometric) in slides {
        let seen = &result[name];
        let series = seen["series"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{name}");
        assert_eq!(value(&series[0], "0020000E"), &json!(format!("{study}.1")));
        assert_eq!(value(&series[0], "00080060"), "SM");
        let instances = seen["instances"].as_array().unwrap();
        assert_eq!(instances.len(), props.levels.len(), "{name}: one per level");
        for (level, (found, info)) in instances.iter().zip(&props.levels).enumerate() {
            let what = format!("{name} level {level}");
            assert_eq!(
                value(found, "00080018"),
                &json!(format!("{study}.1.{}", level + 1)),
                "{what}"
            );
            assert_eq!(
                value(found, "00080016"),
                "1.2.840.10008.5.1.4.1.1.77.1.6",
                "{what}"
            );
            assert_eq!(value(found, "00083002"), "1.2.840.10008.1.2.4.50", "{what}");
            let (tile_w, tile_h) = info.tile_size.unwrap();
            assert_eq!(value(found, "00280011"), &json!(tile_w), "{what}");
            assert_eq!(value(found, "00280010"), &json!(tile_h), "{what}");
            assert_eq!(
                value(found, "00280008"),
                &json!(
                    info.width.div_ceil(u64::from(tile_w))
                        * info.height.div_ceil(u64::from(tile_h))
                ),
                "{what}"
            );
            assert_eq!(value(found, "00480006"), &json!(info.width), "{what}");
            assert_eq!(value(found, "00480007"), &json!(info.height), "{what}");
        }

        // WADO metadata: a whole-slide image of the level, its spacing the slide's resolution
        // scaled by the level's size, no patient identity, nothing from the file's name.
        let (mpp_x, mpp_y) = (props.mpp_x.unwrap(), props.mpp_y.unwrap());
        for (level, metadata) in seen["metadata"].as_array().unwrap().iter().enumerate() {
            let what = format!("{name} level {level} metadata");
            let info = &props.levels[level];
            assert_eq!(value(metadata, "00209311"), "TILED_FULL", "{what}");
            assert_eq!(
                metadata["00080008"]["Value"],
                if level == 0 {
                    json!(["ORIGINAL", "PRIMARY", "VOLUME", "NONE"])
                } else {
                    json!(["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"])
                },
                "{what}"
            );
            // The generator and Aperio both store RGB components (Adobe marker, no JFIF);
            // frames encoded by the server are YCbCr without subsampling.
            assert_eq!(value(metadata, "00280004"), photometric, "{what}");
            let spacing =
                metadata["52009229"]["Value"][0]["00289110"]["Value"][0]["00280030"]["Value"]
                    .as_array()
                    .unwrap();
            let row = mpp_y * props.levels[0].height as f64 / info.height as f64 / 1000.0;
            let column = mpp_x * props.levels[0].width as f64 / info.width as f64 / 1000.0;
            assert!(
                (spacing[0].as_f64().unwrap() - row).abs() < 1e-9
                    && (spacing[1].as_f64().unwrap() - column).abs() < 1e-9,
                "{what}: pixel spacing {spacing:?}, expected [{row}, {column}]"
            );
            for identity in ["00100010", "00100020", "00100030", "00100040", "00080050"] {
                assert!(metadata[identity].is_object(), "{what}: {identity} absent");
                assert!(
                    metadata[identity].get("Value").is_none(),
                    "{what}: {identity} is not empty: {}",
                    metadata[identity]
                );
            }
            assert_eq!(value(metadata, "00400512"), &json!(slide_id), "{what}");
            let text = metadata.to_string();
            assert!(
                !text.contains("CMU") && !text.contains("dicomweb"),
                "{what}: the file name leaks: {text}"
            );
        }

        // wsidicom sees the slide's levels and resolution.
        let levels = seen["levels"].as_array().unwrap();
        assert_eq!(
            levels.len(),
            props.levels.len(),
            "{name}: wsidicom's levels"
        );
        for (theirs, ours) in levels.iter().zip(&props.levels) {
            assert_eq!(
                (theirs[0].as_u64(), theirs[1].as_u64()),
                (Some(ours.width), Some(ours.height)),
                "{name}"
            );
        }
        assert!(
            (levels[0][2].as_f64().unwrap() - mpp_x).abs() < 1e-6
                && (levels[0][3].as_f64().unwrap() - mpp_y).abs() < 1e-6,
            "{name}: wsidicom's resolution {:?}, ours ({mpp_x}, {mpp_y})",
            levels[0]
        );
    }
    let synth_levels: Vec<u64> = result["synth"]["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l[4].as_u64().unwrap())
        .collect();
    assert_eq!(
        synth_levels,
        [0, 2],
        "a 4× reduced level is wsidicom's level 2"
    );

    // Regions read through DICOMweb are our own. Stored tiles: wsidicom decodes with
    // libjpeg-turbo, and our decoder follows its arithmetic, so pixels are equal. Encoded frames
    // (the LZW slide): JPEG at quality 80 loses detail, on average a few levels, which comes
    // nowhere near a misplaced or miscoloured tile (tens of levels on average).
    let mut index = std::collections::BTreeMap::<&str, usize>::new();
    for &(name, _, ours_level, x, y, w, h) in &regions {
        let n = index.entry(name).or_default();
        let path = result[name]["regions"][*n].as_str().unwrap().to_string();
        *n += 1;
        let theirs = image::open(&path).unwrap().to_rgb8();
        let (reader, mean_limit, max_limit): (&dyn SlideReader, f64, u8) = match name {
            "real" => (&*real_reader, 0.0, 0),
            "synth" => (&*synth_reader, 0.0, 0),
            _ => (&*lzw_reader, 5.0, 64),
        };
        let ours = reader.read_region(ours_level, x, y, w, h).unwrap();
        let (mean, max) = differences(&ours, &theirs);
        eprintln!(
            "{name} level {ours_level} region ({x},{y},{w},{h}): wsidicom differs by mean {mean:.3}, max {max}"
        );
        assert!(
            mean <= mean_limit && max <= max_limit,
            "{name} level {ours_level} region ({x},{y},{w},{h}): mean {mean:.3}, max {max}"
        );
    }

    // Frames: the stored tile, untouched; several at once are the same bytes.
    let frames = &result["frames"];
    assert_eq!(
        (frames["one"].as_u64(), frames["two"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(frames["second_of_two_is_the_one"], true);
    assert_eq!(
        frames["stored_scan_ends_the_frame"], true,
        "the SVS's scan data is not in the frame: {frames}"
    );
    let served = std::fs::read(out.join("frame.jpg")).unwrap();
    let stored = real_reader
        .raw_tile(0, (frame - 1) % 10, (frame - 1) / 10)
        .unwrap()
        .unwrap();
    assert!(
        served == stored.jpeg,
        "frame {frame} is not the stored tile ({} bytes served, {} stored)",
        served.len(),
        stored.jpeg.len()
    );

    // Another hospital's user finds nothing and is refused the study, as for the tile API.
    let dw = "/dicomweb";
    for path in [
        format!("{dw}/studies"),
        format!("{dw}/studies?StudyInstanceUID={real_study}"),
        format!("{dw}/series"),
    ] {
        let response = get(&server, &outsider, &path, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/dicom+json"
        );
        let found: Value = response.json().await.unwrap();
        assert_eq!(found, json!([]), "outsider: {path}");
    }
    let series = format!("{dw}/studies/{real_study}/series/{real_study}.1");
    let instance = format!("{series}/instances/{real_study}.1.1");
    for path in [
        format!("{dw}/studies/{real_study}/series"),
        format!("{instance}/metadata"),
        format!("{instance}/frames/1"),
    ] {
        let response = get(&server, &outsider, &path, &[]).await;
        assert_refused(
            response,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("outsider: {path}"),
        )
        .await;
    }

    // Refusals: 4xx, the JSON error body, CORS.
    /// (path, extra headers, expected status, expected error code).
    type Refusal<'a> = (String, &'a [(&'a str, &'a str)], StatusCode, &'a str);
    let refusals: [Refusal; 8] = [
        (
            format!("{instance}/frames/0"),
            &[],
            StatusCode::BAD_REQUEST,
            "dicomweb_bad_frames",
        ),
        (
            format!("{instance}/frames/1,x"),
            &[],
            StatusCode::BAD_REQUEST,
            "dicomweb_bad_frames",
        ),
        (
            format!("{instance}/frames/131"),
            &[],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("{instance}/frames/1"),
            &[(
                "accept",
                "multipart/related; type=\"application/octet-stream\"",
            )],
            StatusCode::NOT_ACCEPTABLE,
            "dicomweb_not_acceptable",
        ),
        (
            format!("{instance}/metadata"),
            &[("accept", "application/dicom+xml")],
            StatusCode::NOT_ACCEPTABLE,
            "dicomweb_not_acceptable",
        ),
        (
            format!("{series}/instances/{real_study}.1.2/metadata"),
            &[],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("{dw}/studies/{real_study}/series/{real_study}.2/instances"),
            &[],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            format!("{dw}/studies/1.2.3/metadata"),
            &[],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (path, headers, status, code) in refusals {
        let response = get(&server, &owner, &path, headers).await;
        assert_refused(response, status, code, &path).await;
    }

    // A search says what it ignored; answers that do not change are not sent again.
    let response = get(
        &server,
        &owner,
        &format!("{dw}/studies?PatientName=DOE"),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let warning = response.headers()[header::WARNING]
        .to_str()
        .unwrap()
        .to_string();
    assert!(warning.contains("PatientName"), "{warning}");
    let found: Value = response.json().await.unwrap();
    assert_eq!(found.as_array().map(Vec::len), Some(3));
    for path in [
        format!("{instance}/metadata"),
        format!("{instance}/frames/{frame}"),
    ] {
        let first = get(&server, &owner, &path, &[]).await;
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get(&server, &owner, &path, &[("if-none-match", etag.as_str())]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
    }

    // dicom-microscopy-viewer (Slim's viewer) asks for frames as octet-stream "as stored": the
    // same stored tile, labelled with its transfer syntax, under its own ETag.
    let as_stored = "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*";
    let path = format!("{instance}/frames/{frame}");
    let response = get(&server, &owner, &path, &[("accept", as_stored)]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("multipart/related; type=\"application/octet-stream\""),
        "{content_type}"
    );
    assert_eq!(response.headers()[header::VARY], "Accept");
    let octet_etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.bytes().await.unwrap();
    let part_header =
        b"Content-Type: application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50";
    assert!(body.windows(part_header.len()).any(|w| w == part_header));
    assert!(
        body.windows(stored.jpeg.len()).any(|w| w == stored.jpeg),
        "the octet-stream part is not the stored tile"
    );
    let jpeg = get(&server, &owner, &path, &[]).await;
    assert_ne!(jpeg.headers()[header::ETAG].to_str().unwrap(), octet_etag);

    // Rendered: a whole reduced level as PNG is exactly our pixels; a frame as JPEG by default.
    let synth_instance =
        format!("{dw}/studies/{synth_study}/series/{synth_study}.1/instances/{synth_study}.1.2");
    let response = get(
        &server,
        &owner,
        &format!("{synth_instance}/rendered"),
        &[("accept", "image/png")],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/png");
    let rendered = image::load_from_memory(&response.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert!(
        rendered == synth_reader.read_region(1, 0, 0, 512, 384).unwrap(),
        "the rendered level is not the level's pixels"
    );
    let response = get(
        &server,
        &owner,
        &format!("{instance}/frames/{frame}/rendered"),
        &[],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/jpeg");
    let tile = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((tile.width(), tile.height()), (240, 240));

    // Audit: each slide's DICOMweb access once within the hour, the outsider's refusals each.
    let rows = recent(&server.db().await, 10_000).await.unwrap();
    let count = |actor: &str, slide: &str, outcome: &str| {
        rows.iter()
            .filter(|r| {
                r.event.action == "slide.dicomweb"
                    && r.event.actor == actor
                    && r.event.outcome == outcome
                    && r.event.target == format!("slide:{slide}")
            })
            .count()
    };
    assert_eq!(count("dw_owner", &real, "ok"), 1, "one access row per hour");
    assert_eq!(count("dw_owner", &synth, "ok"), 1);
    assert_eq!(count("dw_owner", &lzw, "ok"), 1);
    assert_eq!(count("dw_outsider", &real, "ok"), 0);
    assert!(
        count("dw_outsider", &real, "denied") >= 4,
        "every refusal of the outsider is audited"
    );
}
