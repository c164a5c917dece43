//! The `pathfed slide` commands, run as a user runs them.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn pathfed(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pathfed"))
        .args(args)
        .current_dir(dir)
        .env_remove("PATHFED_CONFIG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn real_slide() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../slide/tests/fixtures/CMU-1-Small-Region.svs")
}

#[test]
fn info_on_the_real_slide_shows_size_mpp_label_and_macro() {
    let dir = tempfile::tempdir().unwrap();
    let slide = real_slide();
    let out = pathfed(&["slide", "info", slide.to_str().unwrap()], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("2220 × 2967"), "{text}");
    assert!(text.contains("x 0.499 µm/px"), "{text}");
    assert!(text.contains("label: 387 × 463"), "{text}");
    assert!(text.contains("macro: 1280 × 431"), "{text}");
    assert!(text.contains("aperio.AppMag = 20"), "{text}");

    let out = pathfed(
        &["slide", "info", "--json", slide.to_str().unwrap()],
        dir.path(),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["levels"][0]["width"], 2220);
    assert_eq!(json["mpp_x"], 0.499);
}

#[test]
fn bad_files_fail_with_a_message_and_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fake.svs"), b"<html>hello</html>").unwrap();
    let out = pathfed(&["slide", "info", "fake.svs"], dir.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a slide"), "{}", stderr(&out));
    let out = pathfed(&["slide", "info", "missing.svs"], dir.path());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.svs"), "{}", stderr(&out));
    let out = pathfed(
        &[
            "slide",
            "thumbnail",
            real_slide().to_str().unwrap(),
            "--out",
            "t.gif",
        ],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(".png, .jpg or .jpeg"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn synth_then_tiles_and_thumbnail() {
    let dir = tempfile::tempdir().unwrap();
    let out = pathfed(
        &[
            "slide",
            "synth",
            "--out",
            "s.svs",
            "--width",
            "1600",
            "--height",
            "1200",
            "--meta",
            "Filename=case 7",
            "--classes",
            "stroma",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = pathfed(&["slide", "tiles", "s.svs", "--out", "dz"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("passed through"), "{}", stdout(&out));
    let dzi = std::fs::read_to_string(dir.path().join("dz/s.dzi")).unwrap();
    assert!(dzi.contains("Width=\"1600\" Height=\"1200\""), "{dzi}");
    assert!(dir.path().join("dz/s_files/11/6_4.jpeg").exists());
    assert!(dir.path().join("dz/s_files/0/0_0.jpeg").exists());
    let out = pathfed(
        &[
            "slide",
            "thumbnail",
            "s.svs",
            "--size",
            "300",
            "--out",
            "t.png",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let thumb = image::open(dir.path().join("t.png")).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (300, 225));
    let out = pathfed(
        &["slide", "synth", "--out", "x.svs", "--classes", "bone"],
        dir.path(),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown tissue class"),
        "{}",
        stderr(&out)
    );
}
