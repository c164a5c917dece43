//! Zip uploads (multi-file formats such as MRXS and VMS, and DICOM series: one file per
//! instance), unpacked with limits: entry count, total size, per-entry compression ratio, and no
//! entry may leave the target folder.

use std::io::{Read, Write};
use std::path::{Component, Path};

use pathfed_core::config::IngestConfig;
use pathfed_core::http::ApiError;

use crate::names::sanitise;

/// True when the file starts like a zip archive.
pub fn is_zip(path: &Path) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path)?;
    let n = file.read(&mut magic)?;
    Ok(n == 4 && magic == *b"PK\x03\x04")
}

fn refuse(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_zip", message)
}

/// Unpacks `zip` into `dest`; returns the relative (sanitised) paths of the files written.
pub fn unpack(zip: &Path, dest: &Path, limits: &IngestConfig) -> Result<Vec<String>, ApiError> {
    let file = std::fs::File::open(zip).map_err(ApiError::internal)?;
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| refuse(format!("not a readable zip: {e}")))?;
    if archive.len() as u64 > limits.zip_max_entries {
        return Err(refuse(format!(
            "the zip holds {} entries; at most {} are accepted",
            archive.len(),
            limits.zip_max_entries
        )));
    }
    let mut written = Vec::new();
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| refuse(format!("entry {index}: {e}")))?;
        let raw_name = entry
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| format!("#{index}"));
        // An absolute name is refused outright: `enclosed_name` would quietly make it relative.
        if is_absolute(&raw_name) {
            return Err(refuse(format!("entry {raw_name:?} has an absolute path")));
        }
        let Some(relative) = entry.enclosed_name() else {
            return Err(refuse(format!(
                "entry {raw_name:?} points outside the archive"
            )));
        };
        if entry.is_symlink() {
            return Err(refuse(format!("entry {raw_name:?} is a symbolic link")));
        }
        if entry.is_dir() {
            continue;
        }
        let declared = entry.size();
        let packed = entry.compressed_size().max(1);
        if declared / packed > limits.zip_max_ratio {
            return Err(refuse(format!(
                "entry {raw_name:?} expands {}× (more than {}×): refused as a zip bomb",
                declared / packed,
                limits.zip_max_ratio
            )));
        }
        total = total.saturating_add(declared);
        if total > limits.zip_max_unpacked_bytes {
            return Err(refuse(format!(
                "the zip unpacks to more than {} bytes",
                limits.zip_max_unpacked_bytes
            )));
        }
        let safe = safe_relative(&relative)
            .ok_or_else(|| refuse(format!("entry {raw_name:?} has an unusable name")))?;
        let target = dest.join(&safe);
        if target.exists() {
            return Err(refuse(format!("two entries unpack to {safe:?}")));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(ApiError::internal)?;
        }
        let mut out = std::fs::File::create(&target).map_err(ApiError::internal)?;
        // The declared size may lie: never write more than it said.
        let copied = copy_limited(&mut entry, &mut out, declared)
            .map_err(|e| refuse(format!("entry {raw_name:?}: {e}")))?;
        if copied != declared {
            return Err(refuse(format!(
                "entry {raw_name:?} is larger or smaller than its header says"
            )));
        }
        written.push(safe);
    }
    Ok(written)
}

fn copy_limited(from: &mut impl Read, to: &mut impl Write, limit: u64) -> std::io::Result<u64> {
    let copied = std::io::copy(&mut from.take(limit), to)?;
    let mut probe = [0u8; 1];
    if from.read(&mut probe)? > 0 {
        return Ok(copied + 1);
    }
    Ok(copied)
}

/// Every component sanitised; `None` if nothing usable is left.
fn safe_relative(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(sanitise(&part.to_string_lossy())),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The file a reader should open among unpacked files: the slide's index file for multi-file
/// formats, else the single slide file.
pub fn main_file(files: &[String]) -> Option<String> {
    const INDEX: &[&str] = &["mrxs", "vms", "vmu"];
    const SINGLE: &[&str] = &["svs", "tif", "tiff", "ndpi", "scn", "bif", "svslide"];
    let ext = |f: &String| {
        Path::new(f)
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
    };
    let by = |set: &[&str]| {
        files
            .iter()
            .find(|f| set.contains(&ext(f).as_str()))
            .cloned()
    };
    by(INDEX).or_else(|| by(SINGLE))
}

/// The file to open a DICOM series from, among unpacked files that have no slide file by name:
/// the largest file with the DICOM magic (instances may be called anything, `.dcm` or nothing).
/// The largest is the full-resolution level of any real series; the reader completes the slide
/// from its siblings of the same Series Instance UID, so every DICOM file stays with it.
pub fn dicom_main_file(dir: &Path, files: &[String]) -> std::io::Result<Option<String>> {
    let mut best: Option<(u64, &String)> = None;
    for relative in files {
        let path = dir.join(relative);
        if !has_dicom_magic(&path)? {
            continue;
        }
        let size = std::fs::metadata(&path)?.len();
        // Ties go to the first name in order, so the choice does not depend on the zip's order.
        let better = match best {
            None => true,
            Some((best_size, best_name)) => {
                size > best_size || (size == best_size && relative < best_name)
            }
        };
        if better {
            best = Some((size, relative));
        }
    }
    Ok(best.map(|(_, name)| name.clone()))
}

/// True when the file starts like a DICOM Part 10 file (preamble and `DICM` at byte 128).
pub fn has_dicom_magic(path: &Path) -> std::io::Result<bool> {
    let mut head = [0u8; 132];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(pathfed_slide::dicom::is_dicom_magic(&head))
}

/// `/x`, `\x`, `C:\x`, `C:/x` or `C:x`: a name that means a place outside the archive on some
/// system.
fn is_absolute(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.starts_with('/')
        || name.starts_with('\\')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

#[cfg(test)]
mod absolute_tests {
    use super::is_absolute;

    #[test]
    fn absolute_names_on_any_system_are_recognised() {
        for name in [
            "/etc/x.svs",
            "\\server\\x.svs",
            "C:\\x.svs",
            "c:/x.svs",
            "D:x.svs",
        ] {
            assert!(is_absolute(name), "{name}");
        }
        for name in ["case 7/x.svs", "x.svs", "notes/C:x.svs", "..x.svs"] {
            assert!(!is_absolute(name), "{name}");
        }
    }
}
