//! The research tier's anonymity guarantees through the running server, on both backends:
//! re-keyed exports share no identifier, pseudonym, hash or time with one another or with the
//! research tier; small cells are counted in patients and decided over the whole tier, so
//! versions of different selections and minimum cell sizes, joined, hold no combination shared
//! by fewer patients than the platform's minimum, which a version may raise but never lower;
//! and a withdrawn slide leaves no cached copy on the node, nothing but its id in the versions
//! that named it, and no half-written export.

#![allow(clippy::unwrap_used)] // Test helpers: a failed step should panic with its cause.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use pathfed_core::jobs::kinds::{Curate, Extract, ForgetPatient, JobKind as _};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::support::people::{Staff, sign_out_with, staff, tombstone, wait_for};
use crate::support::{self, BACKENDS, Reaped, TestServer, submit_case};

/// The platform's minimum cell size setting.
const FLOOR_VAR: &str = "PATHFED_RESEARCH_MIN_CELL_SIZE";

/// `pathfed dataset ARGS` as the holder of `token`.
fn dataset(server: &TestServer, token: &str, args: &[&str]) -> Output {
    let mut all = vec!["dataset"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", server.url.as_str(), "--token", token]);
    server.cli(&all)
}

/// As [`dataset`], and it must succeed; returns its stdout.
fn dataset_ok(server: &TestServer, token: &str, args: &[&str]) -> String {
    let out = dataset(server, token, args);
    assert!(
        out.status.success(),
        "pathfed dataset {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Live research slides: id → (research patient, label).
async fn live(db: &pathfed_core::Db) -> BTreeMap<String, (String, String)> {
    sqlx::query(
        "SELECT id, research_patient, label_code FROM research_slides WHERE deleted_at IS NULL",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("id"),
            (r.get("research_patient"), r.get("label_code")),
        )
    })
    .collect()
}

/// Waits until `n` research slides are live; returns them.
async fn wait_live(db: &pathfed_core::Db, n: usize) -> BTreeMap<String, (String, String)> {
    wait_for("the research slides", Duration::from_secs(240), || {
        let db = db.clone();
        async move {
            let slides = live(&db).await;
            (slides.len() == n).then_some(slides)
        }
    })
    .await
}

/// Submits a generated slide as a case of `patient` of the given age band, sex and organ from
/// the spoke, and signs it out with `code` (`support::submit_case` is this with 60-69, male,
/// stomach).
async fn signed_out(
    server: &TestServer,
    people: &Staff<'_>,
    patient: &str,
    (age_band, sex, organ): (&str, &str, &str),
    code: &str,
    seed: u32,
) {
    let file = support::synth_slide(server.dir.path(), &format!("j{seed}.svs"), 2400, 1800, seed);
    let state = server.dir.path().join(format!("upload-{seed}.json"));
    let out = server.cli_ok(&[
        "case",
        "create",
        "--server",
        &server.url,
        "--token",
        &people.spoke.token,
        "--patient-id",
        patient,
        "--age-band",
        age_band,
        "--sex",
        sex,
        "--organ",
        organ,
        "--specimen",
        "endoscopic biopsy",
        "--question",
        "Dysplasia or carcinoma?",
        "--upload",
        file.to_str().unwrap(),
        "--submit",
        "--state-file",
        state.to_str().unwrap(),
    ]);
    let case = out.lines().last().unwrap().trim().to_string();
    let slide = out
        .lines()
        .find_map(|l| l.split("\tslide ").nth(1))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    sign_out_with(&people.first, &people.second, &case, &slide, code).await;
}

/// A researcher's view of version `name@version`.
async fn version(people: &Staff<'_>, name: &str, version: i64) -> Value {
    people
        .researcher
        .ok(
            Method::GET,
            &format!("/api/v1/datasets/{name}/versions/{version}"),
            None,
        )
        .await
}

/// The live entries of a manifest.
fn entries(manifest: &Value) -> Vec<&Value> {
    manifest["content"]["slides"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["withdrawn"] != true)
        .collect()
}

/// An entry's published quasi-identifiers: age band, sex, hospital, year.
fn quasi(entry: &Value) -> [String; 4] {
    ["age_band", "sex", "hospital", "year"].map(|f| entry["quasi"][f].as_str().unwrap().to_string())
}

/// Each patient's published values in `manifest`; all of a patient's slides must agree.
fn values_by_patient(manifest: &Value) -> BTreeMap<String, [String; 4]> {
    let mut values = BTreeMap::new();
    for e in entries(manifest) {
        let patient = e["patient"].as_str().unwrap().to_string();
        let mine = quasi(e);
        if let Some(previous) = values.insert(patient.clone(), mine.clone()) {
            assert_eq!(
                previous, mine,
                "{patient}'s slides publish different values"
            );
        }
    }
    values
}

// ---------------------------------------------------------------------------------------
// Re-keyed exports

/// Maximal runs of at least 16 hex digits with a letter among them, as every research id,
/// pseudonym, object hash and content hash has (a decimal number never does).
fn hex_runs(text: &str, out: &mut BTreeSet<String>) {
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() >= 16 && run.chars().any(|c| c.is_ascii_alphabetic()) {
            out.insert(run.to_ascii_lowercase());
        }
        run.clear();
    }
}

/// The identifiers in every string and key of `value`.
fn identifiers(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => hex_runs(s, out),
        Value::Array(items) => items.iter().for_each(|v| identifiers(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                hex_runs(k, out);
                identifiers(v, out);
            }
        }
        _ => {}
    }
}

/// An export as a reader sees it: its manifest, and its manifest's text with its file names.
fn read_export(dir: &Path) -> (Value, String, Vec<String>) {
    let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.join("slides"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let manifest = serde_json::from_str(&text).unwrap();
    let all = format!("{text}\n{}", files.join("\n")).to_ascii_lowercase();
    (manifest, all, files)
}

#[tokio::test(flavor = "multi_thread")]
async fn rekeyed_exports_share_no_identifier_with_each_other_or_the_research_tier() {
    for backend in BACKENDS {
        let server = TestServer::start_with(backend, &[(FLOOR_VAR, "1")]);
        let people = staff(&server);
        let db = server.db().await;
        for (i, code) in ["GAS-G1", "GAS-G3"].iter().enumerate() {
            let file = support::synth_slide(
                server.dir.path(),
                &format!("k{i}.svs"),
                2400,
                1800,
                70 + i as u32,
            );
            let (case, slide) = submit_case(&server, &people.spoke.token, &file, &format!("K-{i}"));
            sign_out_with(&people.first, &people.second, &case, &slide, code).await;
        }
        wait_live(&db, 2).await;
        let token = people.researcher.token.clone();
        dataset_ok(
            &server,
            &token,
            &["create", "linkable", "--labels", "gastric-group"],
        );
        let published = version(&people, "linkable", 1).await;
        assert!(
            published["content"]["extraction"]["params_hash"].is_string(),
            "{published}"
        );

        // Everything in the research tier that names a slide, patient, hospital, object or
        // moment: the rows, the stored objects' keys, the version as researchers read it.
        let mut research = BTreeSet::new();
        let mut times = BTreeSet::new();
        for row in sqlx::query(
            "SELECT id, research_patient, research_hospital, sha256, object_key, curated_at \
             FROM research_slides",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
        {
            for column in [
                "id",
                "research_patient",
                "research_hospital",
                "sha256",
                "object_key",
            ] {
                hex_runs(&row.get::<String, _>(column), &mut research);
            }
            times.insert(row.get::<i64, _>("curated_at").to_string());
        }
        for row in
            sqlx::query("SELECT content_hash, created_at, published_at FROM dataset_versions")
                .fetch_all(db.pool())
                .await
                .unwrap()
        {
            hex_runs(&row.get::<String, _>("content_hash"), &mut research);
            times.insert(row.get::<i64, _>("created_at").to_string());
            times.insert(row.get::<i64, _>("published_at").to_string());
        }
        for key in pathfed_core::store::list_keys(&server.store(), "research/")
            .await
            .unwrap()
        {
            hex_runs(&key, &mut research);
        }
        identifiers(&published, &mut research);
        times.insert(published["created_at"].as_i64().unwrap().to_string());
        assert!(research.len() >= 8, "{research:?}");

        // Two re-keyed exports of the same version.
        let out = server.dir.path().join("exports");
        let mut exports = Vec::new();
        for name in ["a", "b"] {
            let dir = out.join(name);
            dataset_ok(
                &server,
                &token,
                &[
                    "export",
                    "linkable@1",
                    "--out",
                    dir.to_str().unwrap(),
                    "--rekey",
                ],
            );
            exports.push(read_export(&dir));
        }
        for (name, (manifest, text, files)) in ["a", "b"].iter().zip(&exports) {
            for id in &research {
                assert!(
                    !text.contains(id.as_str()),
                    "{backend:?}: export {name} holds the research tier's {id}"
                );
            }
            for time in &times {
                assert!(
                    !text.contains(time.as_str()),
                    "{backend:?}: export {name} holds the time {time}"
                );
            }
            assert!(manifest.get("created_at").is_none(), "{manifest}");
            let extraction = &manifest["content"]["extraction"];
            assert!(
                extraction.get("params_hash").is_none() && extraction.get("shards").is_none(),
                "{extraction}"
            );
            // Renamed consistently: entries, files and extraction QC name the same new ids.
            let ids: BTreeSet<String> = entries(manifest)
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
            let named: BTreeSet<String> = files
                .iter()
                .map(|f| f.trim_end_matches(".tiff").to_string())
                .collect();
            assert_eq!(ids.len(), 2, "{manifest}");
            assert_eq!(ids, named, "{backend:?}: {files:?}");
            let qc: BTreeSet<String> = extraction["slides"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            assert_eq!(ids, qc, "{extraction}");
            for e in entries(manifest) {
                assert!(e.get("sha256").is_none(), "{e}");
                assert_eq!(
                    e["object_key"],
                    format!("slides/{}.tiff", e["id"].as_str().unwrap())
                );
            }
            let patients: BTreeSet<&str> = entries(manifest)
                .iter()
                .map(|e| e["patient"].as_str().unwrap())
                .collect();
            assert_eq!(patients.len(), 2);
        }
        // And not with each other.
        let (a, b) = (&exports[0], &exports[1]);
        let mut ids_a = BTreeSet::new();
        identifiers(&a.0, &mut ids_a);
        for file in &a.2 {
            hex_runs(file, &mut ids_a);
        }
        assert!(ids_a.len() >= 6, "{ids_a:?}");
        for id in &ids_a {
            assert!(
                !b.1.contains(id.as_str()),
                "{backend:?}: both exports hold {id}"
            );
        }
        assert_ne!(a.0["content_hash"], b.0["content_hash"]);
    }
}

// ---------------------------------------------------------------------------------------
// The floor, and versions joined

#[tokio::test(flavor = "multi_thread")]
async fn a_minimum_cell_size_below_the_platform_s_is_refused() {
    for backend in BACKENDS {
        // The platform's default minimum, 5.
        let server = TestServer::start(backend);
        let people = staff(&server);
        let body = |k: u64| {
            json!({
                "name": "small",
                "params": { "labels": "gastric-group", "min_cell_size": k, "extraction": null },
            })
        };
        for k in [1, 4] {
            let (status, answer) = people
                .researcher
                .call(Method::POST, "/api/v1/datasets", Some(body(k)))
                .await;
            assert_eq!(status.as_u16(), 400, "{backend:?}: {answer}");
            assert_eq!(
                answer["error"]["code"], "min_cell_size_below_floor",
                "{answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.contains("minimum cell size of 5")
                    && message.contains("research.min_cell_size"),
                "{message}"
            );
        }
        let refused = dataset(
            &server,
            &people.researcher.token,
            &[
                "create",
                "small",
                "--labels",
                "gastric-group",
                "--min-cell-size",
                "1",
                "--no-patches",
            ],
        );
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("minimum cell size of 5"), "{stderr}");
        // The minimum and more are not refused for their size (nothing matches yet here).
        for k in [5, 6] {
            let (status, answer) = people
                .researcher
                .call(Method::POST, "/api/v1/datasets", Some(body(k)))
                .await;
            assert_eq!(status.as_u16(), 400, "{answer}");
            assert_eq!(answer["error"]["code"], "invalid", "{answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("no research slides match"),
                "{answer}"
            );
        }
        let db = server.db().await;
        let numbered: i64 = sqlx::query("SELECT COUNT(*) AS n FROM dataset_versions")
            .fetch_one(db.pool())
            .await
            .unwrap()
            .get("n");
        assert_eq!(numbered, 0, "{backend:?}: a refused version was numbered");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn joined_versions_hold_no_combination_below_the_floor() {
    const MAN: (&str, &str, &str) = ("60-69", "male", "stomach");
    for backend in BACKENDS {
        let server = TestServer::start_with(backend, &[(FLOOR_VAR, "2")]);
        let people = staff(&server);
        let db = server.db().await;
        // J-A has a stomach slide in a group of two and a colon slide whose values nobody
        // else has; J-C and J-D are alone with theirs; J-X's two slides are one patient alone
        // with a diagnosis, which counted in slides would pass a minimum of 2.
        let cases: [(&str, (&str, &str, &str), &str); 8] = [
            ("J-A", MAN, "GAS-G1"),
            ("J-A", ("60-69", "male", "colon"), "GEN-B"),
            ("J-B", MAN, "GAS-G1"),
            ("J-C", ("70-79", "female", "stomach"), "GAS-G1"),
            ("J-D", ("50-59", "female", "stomach"), "GAS-G1"),
            ("J-E", ("30-39", "female", "colon"), "GEN-B"),
            ("J-X", MAN, "GAS-G5"),
            ("J-X", MAN, "GAS-G5"),
        ];
        for (i, (patient, fields, code)) in cases.iter().enumerate() {
            signed_out(&server, &people, patient, *fields, code, 80 + i as u32).await;
        }
        let slides = wait_live(&db, cases.len()).await;
        let token = people.researcher.token.clone();

        // Below the platform's minimum: refused, with the minimum named.
        let refused = dataset(
            &server,
            &token,
            &[
                "create",
                "gastric",
                "--labels",
                "gastric-group",
                "--min-cell-size",
                "1",
                "--no-patches",
            ],
        );
        assert!(!refused.status.success(), "{backend:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("minimum cell size of 2"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );

        // Four versions: the floor over two taxonomies and an organ filter, and a larger k.
        let make = |args: &[&str]| {
            let mut all = vec!["create", "--no-patches"];
            all.extend_from_slice(args);
            dataset_ok(&server, &token, &all)
        };
        make(&["gastric", "--labels", "gastric-group"]);
        make(&["colon", "--labels", "general"]);
        make(&[
            "gastric",
            "--labels",
            "gastric-group",
            "--min-cell-size",
            "3",
        ]);
        make(&[
            "gastric",
            "--labels",
            "gastric-group",
            "--filter",
            "organ=stomach",
        ]);
        let gastric = version(&people, "gastric", 1).await;
        let colon = version(&people, "colon", 1).await;
        let wider = version(&people, "gastric", 2).await;
        let stomach = version(&people, "gastric", 3).await;

        let cells = |v: &Value| v["content"]["small_cells"].clone();
        assert_eq!(cells(&gastric)["min_cell_size"], 2, "{}", cells(&gastric));
        assert!(cells(&gastric)["smallest_published"].as_u64().unwrap() >= 2);
        assert!(
            cells(&gastric)["suppressed"].as_u64().unwrap() >= 2,
            "{backend:?}: J-X's slides: {}",
            cells(&gastric)
        );
        assert_eq!(cells(&wider)["min_cell_size"], 3, "{}", cells(&wider));
        assert!(cells(&wider)["smallest_published"].as_u64().unwrap() >= 3);
        let x_patient = &slides
            .values()
            .find(|(_, label)| label == "GAS-G5")
            .unwrap()
            .0;
        for v in [&gastric, &wider, &stomach] {
            assert!(
                entries(v)
                    .iter()
                    .all(|e| e["patient"] != x_patient.as_str()),
                "{backend:?}: one patient's two slides published as a group of two"
            );
        }

        // Joined by research ids, every combination is shared by at least 2 patients, with
        // the label and without.
        let all = [&gastric, &colon, &wider, &stomach];
        let mut with_label: BTreeMap<(String, [String; 4]), BTreeSet<String>> = BTreeMap::new();
        let mut without: BTreeMap<[String; 4], BTreeSet<String>> = BTreeMap::new();
        for v in all {
            for e in entries(v) {
                let patient = e["patient"].as_str().unwrap().to_string();
                let label = e["label"].as_str().unwrap().to_string();
                with_label
                    .entry((label, quasi(e)))
                    .or_default()
                    .insert(patient.clone());
                without.entry(quasi(e)).or_default().insert(patient);
            }
        }
        assert!(!with_label.is_empty());
        for (combination, patients) in &with_label {
            assert!(
                patients.len() >= 2,
                "{backend:?}: {combination:?} is shared by {patients:?} only"
            );
        }
        for (combination, patients) in &without {
            assert!(
                patients.len() >= 2,
                "{backend:?}: {combination:?} is shared by {patients:?} only"
            );
        }

        // A patient publishes the same values in every version at the minimum, whatever it
        // selects; a larger minimum only coarsens them.
        let mut at_floor: BTreeMap<String, [String; 4]> = BTreeMap::new();
        for v in [&gastric, &colon, &stomach] {
            for (patient, values) in values_by_patient(v) {
                if let Some(seen) = at_floor.insert(patient.clone(), values.clone()) {
                    assert_eq!(
                        seen, values,
                        "{backend:?}: {patient} differs between versions"
                    );
                }
            }
        }
        let a_patient = entries(&colon)
            .iter()
            .map(|e| e["patient"].as_str().unwrap().to_string())
            .find(|p| values_by_patient(&gastric).contains_key(p));
        assert!(a_patient.is_some(), "J-A is in both taxonomies' versions");
        for (patient, values) in values_by_patient(&wider) {
            let floor = &at_floor[&patient];
            for (coarse, fine) in values.iter().zip(floor) {
                assert!(
                    coarse == fine || coarse == "any",
                    "{patient}: {values:?} vs {floor:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Withdrawal

/// Copies of research slide `id` in the node's slide cache, in any process's folder.
fn cached(server: &TestServer, id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(server.dir.path().join("data/cache"))
        .map(|listing| {
            listing
                .flatten()
                .map(|e| e.path().join(id))
                .filter(|copy| copy.exists())
                .collect()
        })
        .unwrap_or_default()
}

/// Names in `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawn_slide_leaves_no_copy_no_attributes_and_no_partial_export() {
    for backend in BACKENDS {
        // Workers of their own: one curates and extracts (and so caches research slides), the
        // other runs the forget job, as two processes of one node.
        let server = TestServer::start_with(
            backend,
            &[("PATHFED_RESEARCH_SERVE_WORKERS", "0"), (FLOOR_VAR, "1")],
        );
        let people = staff(&server);
        let db = server.db().await;
        let spawn = |kinds: String| {
            Reaped(
                server
                    .command(&["worker", "--kinds", &kinds])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        };
        let extractor = spawn(format!("{},{}", Curate::NAME, Extract::NAME));
        let forgetter = spawn(ForgetPatient::NAME.to_string());

        for (i, (patient, code)) in [("W-1", "GAS-G3"), ("K-1", "GAS-G1")].iter().enumerate() {
            let file = support::synth_slide(
                server.dir.path(),
                &format!("w{i}.svs"),
                2400,
                1800,
                90 + i as u32,
            );
            let (case, slide) = submit_case(&server, &people.spoke.token, &file, patient);
            sign_out_with(&people.first, &people.second, &case, &slide, code).await;
        }
        let slides = wait_live(&db, 2).await;
        let by_label = |code: &str| {
            slides
                .iter()
                .find(|(_, (_, label))| label == code)
                .map(|(id, (patient, _))| (id.clone(), patient.clone()))
                .unwrap()
        };
        let (gone, gone_patient) = by_label("GAS-G3");
        let (kept, _) = by_label("GAS-G1");
        let token = people.researcher.token.clone();
        dataset_ok(
            &server,
            &token,
            &["create", "gone", "--labels", "gastric-group"],
        );
        assert!(
            !cached(&server, &gone).is_empty(),
            "{backend:?}: the extraction cached the research slide"
        );

        // W-1 opts out; the forget job runs in the other worker.
        people
            .spoke
            .ok(
                Method::POST,
                "/api/v1/opt-outs",
                Some(json!({ "patient_id": "W-1" })),
            )
            .await;
        tombstone(&db, &gone).await;
        assert_eq!(
            cached(&server, &gone),
            Vec::<PathBuf>::new(),
            "{backend:?}: a cached copy outlived the opt-out"
        );
        assert!(
            !cached(&server, &kept).is_empty(),
            "other slides stay cached"
        );

        // The version that named it keeps its id and the fact, nothing else: not its label, its
        // patient or its quasi-identifiers, not even in the totals.
        let v1 = version(&people, "gone", 1).await;
        let withdrawn: Vec<&Value> = v1["content"]["slides"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["id"] == gone.as_str())
            .collect();
        assert_eq!(
            withdrawn,
            [&json!({ "id": gone, "withdrawn": true })],
            "{backend:?}"
        );
        let text = v1.to_string();
        assert!(
            !text.contains("GAS-G3") && !text.contains(gone_patient.as_str()),
            "{backend:?}: {text}"
        );
        assert!(v1["content"]["extraction"]["slides"].get(&gone).is_none());
        assert_eq!(entries(&v1).len(), 1);
        // Nor does the stored object (what a backup of the object store holds): the withdrawal
        // rewrote it to the id alone.
        let store = server.store();
        let stored = wait_for(
            "the manifest to be scrubbed",
            Duration::from_secs(30),
            || {
                let (store, gone) = (store.clone(), gone.clone());
                async move {
                    let bytes = pathfed_core::store::get_bytes(
                        &store,
                        "research/datasets/gone/1/manifest.json",
                    )
                    .await
                    .unwrap();
                    let stored: Value = serde_json::from_slice(&bytes).unwrap();
                    let scrubbed = stored["withdrawn"]
                        .as_array()
                        .is_some_and(|w| w.contains(&json!(gone)));
                    scrubbed.then_some(stored)
                }
            },
        )
        .await;
        let text = stored.to_string();
        assert_eq!(
            text.matches(gone.as_str()).count(),
            1,
            "{backend:?}: {text}"
        );
        assert!(
            !text.contains("GAS-G3") && !text.contains(gone_patient.as_str()),
            "{backend:?}: {text}"
        );

        // Exported: the rest, with a notice, and nothing of the withdrawn slide.
        let exports = server.dir.path().join("exports");
        let out = exports.join("all");
        let said = dataset_ok(
            &server,
            &token,
            &["export", "gone@1", "--out", out.to_str().unwrap()],
        );
        assert!(said.contains("1 withdrawn slide(s) left out"), "{said}");
        assert_eq!(
            names(&out.join("slides")),
            BTreeSet::from([format!("{kept}.tiff")])
        );
        let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
        assert!(!manifest.contains(&gone), "{manifest}");
        let manifest: Value = serde_json::from_str(&manifest).unwrap();
        assert_eq!(manifest["export"]["withdrawn_left_out"], 1, "{manifest}");
        assert_eq!(names(&exports), BTreeSet::from(["all".to_string()]));

        // A failure part-way leaves nothing: neither the folder nor a partial one beside it.
        pathfed_core::store::delete_prefix(&server.store(), "research/slides/")
            .await
            .unwrap();
        let broken = exports.join("broken");
        let failed = dataset(
            &server,
            &token,
            &["export", "gone@1", "--out", broken.to_str().unwrap()],
        );
        assert!(!failed.status.success(), "{backend:?}");
        assert_eq!(
            names(&exports),
            BTreeSet::from(["all".to_string()]),
            "{backend:?}: a failed export left something"
        );
        drop((extractor, forgetter));
    }
}
