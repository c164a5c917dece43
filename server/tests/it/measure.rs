//! Measurements kept as annotations: the ruler's line and the area tool's polygon, each with the
//! measured value as its note, through the annotation API; lines refused unless they have two
//! different ends inside the slide; lines exported to GeoJSON as LineStrings and imported back.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::geojson_essence;
use crate::support::people::staff;
use crate::support::{Backend, TestServer, client, submit_case, synth_slide};

#[tokio::test(flavor = "multi_thread")]
async fn measurements_are_kept_as_lines_and_polygons() {
    let server = TestServer::start(Backend::Local);
    let people = staff(&server);
    let file = synth_slide(server.dir.path(), "measure.svs", 2400, 1800, 41);
    let (case_id, slide) = submit_case(&server, &people.spoke.token, &file, "MRN-40112");
    let case_path = format!("/api/v1/cases/{case_id}");
    let annotations = format!("{case_path}/slides/{slide}/annotations");
    let geojson = format!("{annotations}.geojson");
    people
        .first
        .ok(Method::POST, &format!("{case_path}/claim"), None)
        .await;

    // The ruler keeps its two ends (level-0 pixels) and the length it showed.
    let line = people
        .first
        .ok(
            Method::POST,
            &annotations,
            Some(
                json!({"kind": "line", "points": [[100.5, 200], [1300.5, 700]], "note": "650 µm"}),
            ),
        )
        .await;
    assert_eq!(line["kind"], "line");
    assert_eq!(line["points"], json!([[100.5, 200.0], [1300.5, 700.0]]));
    assert_eq!(line["note"], "650 µm");
    // The area tool keeps its outline, here with a label.
    let area = people
        .first
        .ok(
            Method::POST,
            &annotations,
            Some(json!({
                "kind": "polygon", "points": [[400, 400], [900, 420], [880, 1000], [420, 950]],
                "label_code": "GAS-G3", "note": "0.123 mm²",
            })),
        )
        .await;
    assert_eq!(area["kind"], "polygon");
    assert_eq!(area["label_code"], "GAS-G3");

    for (points, why) in [
        (json!([[10, 10]]), "two different positions"),
        (
            json!([[10, 10], [20, 20], [30, 30]]),
            "two different positions",
        ),
        (json!([[10, 10], [10, 10]]), "two different positions"),
        (json!([[10, 10], [99999, 10]]), "outside the slide"),
    ] {
        let message = people
            .first
            .refused(
                Method::POST,
                &annotations,
                Some(json!({"kind": "line", "points": points})),
                400,
            )
            .await;
        assert!(message.contains(why), "{points}: {message}");
    }
    let listed = people.first.ok(Method::GET, &annotations, None).await;
    // Both were kept within the same second: the list's order between them is not the point.
    let mut kinds: Vec<&str> = listed["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["line", "polygon"], "{listed}");

    // GeoJSON: the line is a LineString with its note as the name.
    let exported = people.first.ok(Method::GET, &geojson, None).await;
    let features = exported["features"].as_array().unwrap();
    let feature = features
        .iter()
        .find(|f| f["properties"]["pathfed"]["kind"] == "line")
        .unwrap();
    assert_eq!(feature["geometry"]["type"], "LineString");
    assert_eq!(
        feature["geometry"]["coordinates"],
        json!([[100.5, 200.0], [1300.5, 700.0]])
    );
    assert_eq!(feature["properties"]["name"], "650 µm");

    // Remove both, import the export, export again: the same shapes, kinds, labels and notes.
    for a in listed["annotations"].as_array().unwrap() {
        people
            .first
            .ok(
                Method::DELETE,
                &format!("{case_path}/annotations/{}", a["id"].as_str().unwrap()),
                None,
            )
            .await;
    }
    let imported = client()
        .post(format!("{}{geojson}", server.url))
        .bearer_auth(&people.first.token)
        .body(exported.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status(), StatusCode::CREATED);
    let again = people.first.ok(Method::GET, &geojson, None).await;
    assert_eq!(geojson_essence(&exported), geojson_essence(&again));

    // A QuPath line (no pathfed properties) imports as a line; longer paths and multi-lines do
    // not, and a refused import adds nothing.
    let qupath = json!({"type": "Feature", "geometry": {"type": "LineString",
        "coordinates": [[5, 5], [305, 405]]}, "properties": {"objectType": "annotation"}});
    let (status, body) = people
        .first
        .call(Method::POST, &geojson, Some(qupath))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["annotations"][0]["kind"], "line");
    assert_eq!(
        body["annotations"][0]["points"],
        json!([[5.0, 5.0], [305.0, 405.0]])
    );
    let count = || async {
        people.first.ok(Method::GET, &annotations, None).await["annotations"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count().await;
    for (bad, why) in [
        (
            json!({"type": "Feature", "properties": {},
                "geometry": {"type": "LineString", "coordinates": [[1, 1], [2, 2], [3, 3]]}}),
            "two different positions",
        ),
        (
            json!({"type": "Feature", "properties": {},
                "geometry": {"type": "MultiLineString", "coordinates": [[[1, 1], [2, 2]]]}}),
            "not supported",
        ),
    ] {
        let (status, body) = people
            .first
            .call(Method::POST, &geojson, Some(bad.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{bad}: {message}");
    }
    assert_eq!(count().await, before, "a refused import adds nothing");
}
