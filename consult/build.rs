//! Finds the font the report PDFs embed (IPAexGothic, IPA Font License v1.0) and copies it
//! into the build, so the binary carries it and a report prints the same on every machine.
//!
//! `PATHFED_REPORT_FONT` names another TrueType/OpenType file; by default it is where Debian's
//! `fonts-ipaexfont-gothic` package installs it (`scripts/setup.sh` installs the package).

use std::path::PathBuf;

/// The setting naming another font file.
const FONT_VAR: &str = "PATHFED_REPORT_FONT";
/// Where `fonts-ipaexfont-gothic` puts the font.
const DEBIAN_FONT: &str = "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf";

fn main() {
    println!("cargo::rerun-if-env-changed={FONT_VAR}");
    let font = match std::env::var_os(FONT_VAR) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(DEBIAN_FONT),
    };
    println!("cargo::rerun-if-changed={}", font.display());
    let Some(out_dir) = std::env::var_os("OUT_DIR") else {
        println!("cargo::error=OUT_DIR is not set: build this crate with cargo");
        return;
    };
    let out = PathBuf::from(out_dir).join("report-font.ttf");
    let bytes = match std::fs::read(&font) {
        Ok(bytes) => bytes,
        Err(e) => {
            println!(
                "cargo::error=the report font {} cannot be read ({e}). Run scripts/setup.sh, \
                 which installs fonts-ipaexfont-gothic, or set {FONT_VAR} to a TrueType or \
                 OpenType font with Japanese glyphs.",
                font.display()
            );
            return;
        }
    };
    // TrueType (1.0 or `true`) or OpenType (`OTTO`): a wrong file fails here, not at sign-out.
    let magic = bytes.get(..4);
    if !matches!(magic, Some([0, 1, 0, 0]) | Some(b"true") | Some(b"OTTO")) {
        println!(
            "cargo::error={} is not a TrueType or OpenType font; set {FONT_VAR} to one, or run \
             scripts/setup.sh to install fonts-ipaexfont-gothic.",
            font.display()
        );
        return;
    }
    if let Err(e) = std::fs::write(&out, bytes) {
        println!("cargo::error=cannot write {}: {e}", out.display());
    }
}
