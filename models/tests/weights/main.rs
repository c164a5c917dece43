//! Weight import, checked against numpy: the ResNet patch classifier under torchvision's names
//! and the ViT encoders under timm's. One test binary for both, so the crate links once.

mod resnet;
mod vit;

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The Python that writes the reference files: `PATHFED_PYTHON`, else the repository's
/// `.tools/venv` (which `scripts/setup.sh` creates with numpy and safetensors).
fn python() -> PathBuf {
    match std::env::var_os("PATHFED_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python"),
    }
}

/// A directory holding what `tests/python/SCRIPT` writes into it.
pub fn fixtures(script: &str) -> TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let py = python();
    let out = Command::new(&py)
        .arg(&path)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run scripts/setup.sh to create it, or point PATHFED_PYTHON \
                 at a Python with numpy and safetensors",
                py.display()
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The scripts exit with 3 when an import fails; this must fail the test, not skip it.
    if out.status.code() == Some(3) {
        panic!(
            "{} lacks a package ({}): run scripts/setup.sh",
            py.display(),
            stderr.trim()
        );
    }
    assert!(out.status.success(), "{script} failed: {stderr}");
    dir
}
