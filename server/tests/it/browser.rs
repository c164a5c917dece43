//! The web UI in a real browser (Debian's Chromium driven by playwright-core): sign in, upload a
//! generated slide through the page, open the viewer, check tiles loaded and the canvas shows
//! tissue. The script keeps a screenshot in `target/test-artifacts/`.

use std::path::Path;
use std::process::Command;

#[test]
fn sign_in_upload_and_view_in_the_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("web/tests/browser.mjs");
    assert!(
        root.join("web/node_modules/playwright-core").exists(),
        "web/node_modules is missing: run scripts/setup.sh (make test does)"
    );
    let output = Command::new("node")
        .arg(&script)
        .current_dir(&root)
        .env("PATHFED_BIN", env!("CARGO_BIN_EXE_pathfed"))
        .env("PATHFED_ARTIFACTS", root.join("target/test-artifacts"))
        .output()
        .expect("node is needed for the browser test: run scripts/setup.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser test passed"), "{stdout}");
}
