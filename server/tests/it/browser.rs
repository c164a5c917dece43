//! The web UI in a real browser (Debian's Chromium driven by playwright-core), one test per
//! script so that they run beside each other and beside the other tests:
//!
//! - `web/tests/browser.mjs`, in Japanese: sign in, upload a generated slide through the page,
//!   view it (tiles load, the canvas shows tissue), the consultation from the notifications bell
//!   to the sign-out preview and the spoke's report, research, opt-out, training and AI support;
//!   every page must speak Japanese.
//! - `web/tests/browser-admin.mjs`, in Japanese: the platform admin sets up a second factor and
//!   opens the administration console: adds a pathologist and disables them, revokes their API
//!   token, finds the creation in the audit log (by user, action and dates, and in the CSV) and
//!   runs the tamper check.
//! - `web/tests/browser-en.mjs`, in English: a new case from the form, an upload into it, the
//!   case page and the viewer; the ruler's lengths at a known pixel size (also rotated); the
//!   language switch and its choice kept on the server; a DICOM series (the project's real
//!   slide, converted here by wsidicomizer) chosen as its instance files becomes one upload and
//!   one `dicom` slide, the same instances labelled RLE Lossless are refused by name before any
//!   upload, OpenSeadragon draws the DICOM slide from its IIIF Image API 3 `info.json`, and
//!   dicom-microscopy-viewer (Slim's viewer, from npm) draws it from DICOMweb. The instance
//!   files reach the script as environment variables (paths joined like `PATH`).
//!
//! The scripts keep screenshots in `target/test-artifacts/` (the English ones prefixed `en-`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::dicom::DicomSeries;

/// RLE Lossless, a transfer syntax the DICOM reader does not decode.
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// Runs one browser script with the test build's `pathfed` and the inputs `env`; fails with its
/// output unless it says it passed.
fn run_script(name: &str, env: &[(&str, OsString)]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("web/tests").join(name);
    assert!(
        root.join("web/node_modules/playwright-core").exists(),
        "web/node_modules is missing: run scripts/setup.sh (make test does)"
    );
    let output = Command::new("node")
        .arg(&script)
        .current_dir(&root)
        .env("PATHFED_BIN", env!("CARGO_BIN_EXE_pathfed"))
        .env("PATHFED_ARTIFACTS", root.join("target/test-artifacts"))
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .output()
        .expect("node is needed for the browser tests: run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test {name} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser test passed"), "{stdout}");
}

#[test]
fn consultation_research_and_ai_in_japanese_in_the_browser() {
    run_script("browser.mjs", &[]);
}

#[test]
fn english_pages_language_switch_and_ruler_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let real_slide = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../slide/tests/fixtures/CMU-1-Small-Region.svs");
    let series = DicomSeries::convert(&real_slide, &dir.path().join("series"), &json!({}));
    let rle = series.relabelled(&dir.path().join("rle"), RLE_LOSSLESS);
    let paths = |files: &[PathBuf]| std::env::join_paths(files).unwrap();
    run_script(
        "browser-en.mjs",
        &[
            ("PATHFED_DICOM_SERIES", paths(&series.instances)),
            ("PATHFED_DICOM_RLE_SERIES", paths(&rle.instances)),
        ],
    );
}

#[test]
fn administration_console_in_japanese_in_the_browser() {
    run_script("browser-admin.mjs", &[]);
}
