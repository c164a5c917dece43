//! DICOM whole-slide series for the tests, written at test time by the Python tools: a slide
//! (the project's real Aperio slide, or a generated one) converted by wsidicomizer into its
//! instances (levels, label, overview, thumbnail; JPEG baseline frames passed through), with
//! attributes planted by pydicom where a test needs them; the same instances relabelled with
//! another transfer syntax (RLE Lossless, which the reader does not decode); and a zip of them
//! as an export names it, for the tus upload.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::tools_python;

/// Converts SOURCE into a DICOM series in OUT, applies EDITS (JSON; every key optional) and
/// prints `{"uids": [...]}`, every UID of the series' data sets that is not a standard one:
/// `attributes` (keyword → value, on every instance), `specimen` (on the first Specimen
/// Description item of every instance), `private` (a string in a private block of group 0009
/// of every instance), `label_attributes` (on the LABEL instance only), `associated_rgb` (the
/// LABEL and OVERVIEW frames become that solid colour, as JPEG baseline) and `objective_power`
/// (the first optical path's Objective Lens Power).
const CONVERT_SCRIPT: &str = r#"
import json, os, sys
from io import BytesIO

import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from wsidicomizer import WsiDicomizer

source, out, edits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
WsiDicomizer.convert(source, output_path=out, add_missing_levels=True, workers=1)
uids = set()
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name)
    ds = pydicom.dcmread(path)
    kind = ds.ImageType[2]
    for keyword, value in edits.get("attributes", {}).items():
        setattr(ds, keyword, value)
    if edits.get("specimen"):
        if "SpecimenDescriptionSequence" not in ds or not ds.SpecimenDescriptionSequence:
            ds.SpecimenDescriptionSequence = Sequence([Dataset()])
        for keyword, value in edits["specimen"].items():
            setattr(ds.SpecimenDescriptionSequence[0], keyword, value)
    if edits.get("private"):
        block = ds.private_block(0x0009, "PATHFED TEST", create=True)
        block.add_new(0x01, "LO", edits["private"])
    if kind == "LABEL":
        for keyword, value in edits.get("label_attributes", {}).items():
            setattr(ds, keyword, value)
    if edits.get("associated_rgb") and kind in ("LABEL", "OVERVIEW"):
        colour = tuple(edits["associated_rgb"])
        tile = Image.new("RGB", (int(ds.Columns), int(ds.Rows)), colour)
        with BytesIO() as buffer:
            tile.save(buffer, format="JPEG", quality=95)
            frame = buffer.getvalue()
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        ds.PixelData = encapsulate([frame] * frames)
        # PIL writes JFIF (YCbCr), whatever the frames it replaces were.
        ds.PhotometricInterpretation = "YBR_FULL_422"
    if edits.get("objective_power") is not None and "OpticalPathSequence" in ds:
        ds.OpticalPathSequence[0].ObjectiveLensPower = edits["objective_power"]
    ds.save_as(path, enforce_file_format=True)
    for element in ds.iterall():
        if element.VR == "UI" and element.value:
            values = element.value if element.VM > 1 else [element.value]
            uids.update(str(v) for v in values if not str(v).startswith("1.2.840.10008."))
print(json.dumps({"uids": sorted(uids)}))
"#;

/// Writes the instances of SERIES_DIR into OUT_DIR (same names) with the Transfer Syntax UID
/// of their file meta group set to SYNTAX; the data sets are untouched.
const RELABEL_SCRIPT: &str = r#"
import os, sys
import pydicom

series, out, syntax = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
for name in sorted(os.listdir(series)):
    ds = pydicom.dcmread(os.path.join(series, name))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(os.path.join(out, name), enforce_file_format=True)
"#;

/// A DICOM series on disk.
pub struct DicomSeries {
    /// The folder holding the instances (and nothing else).
    pub folder: PathBuf,
    /// The instance files, sorted by name.
    pub instances: Vec<PathBuf>,
    /// Every non-standard UID in the series' data sets (study, series, instances, frame of
    /// reference, …): what must not leak where the series should be anonymous.
    pub uids: Vec<String>,
}

impl DicomSeries {
    /// Converts `source` into a series in the folder `dir`, with `edits` applied (see
    /// `CONVERT_SCRIPT`; `{}` for none). A few seconds: once per test.
    pub fn convert(source: &Path, dir: &Path, edits: &Value) -> Self {
        let out = Command::new(tools_python())
            .arg("-c")
            .arg(CONVERT_SCRIPT)
            .arg(source)
            .arg(dir)
            .arg(edits.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "converting {} to DICOM: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let uids = report["uids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|uid| uid.as_str().unwrap().to_string())
            .collect();
        Self {
            folder: dir.to_path_buf(),
            instances: instances(dir),
            uids,
        }
    }

    /// The same instances in the folder `dir`, their file meta group naming `transfer_syntax`
    /// (a UID) while their data stays as it is.
    pub fn relabelled(&self, dir: &Path, transfer_syntax: &str) -> Self {
        let out = Command::new(tools_python())
            .arg("-c")
            .arg(RELABEL_SCRIPT)
            .arg(&self.folder)
            .arg(dir)
            .arg(transfer_syntax)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "relabelling the series: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            folder: dir.to_path_buf(),
            instances: instances(dir),
            uids: self.uids.clone(),
        }
    }

    /// A zip at `out` of the instances under `folder/`, by their own names, as an export
    /// writes them; returns `out`.
    pub fn zip(&self, out: &Path, folder: &str) -> PathBuf {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for file in &self.instances {
            let name = file.file_name().unwrap().to_string_lossy();
            zip.start_file(format!("{folder}/{name}"), options).unwrap();
            zip.write_all(&std::fs::read(file).unwrap()).unwrap();
        }
        zip.finish().unwrap();
        out.to_path_buf()
    }

    /// The file name of the largest instance: the full-resolution level, which the slide is
    /// opened from (and so the name its file has in the slide cache).
    pub fn main_name(&self) -> String {
        let largest = self
            .instances
            .iter()
            .max_by_key(|f| std::fs::metadata(f).unwrap().len())
            .unwrap();
        largest.file_name().unwrap().to_string_lossy().into_owned()
    }
}

/// `source` converted into the series `dir/name` and zipped as `dir/name.zip` (its instances
/// under `name/`): the series and the zip to upload.
pub fn dicom_zip(source: &Path, dir: &Path, name: &str) -> (DicomSeries, PathBuf) {
    let series = DicomSeries::convert(source, &dir.join(name), &serde_json::json!({}));
    let zip = series.zip(&dir.join(format!("{name}.zip")), name);
    (series, zip)
}

/// The files of a folder, sorted by name (a series has at least five: three levels or more,
/// label, overview, thumbnail).
fn instances(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: {files:?}", dir.display());
    files
}
