//! Whole-slide image access for pathfed.
//!
//! [`open`] looks at a file's bytes (never its name) and returns a [`SlideReader`]: the
//! pure-Rust TIFF fast path for Aperio SVS (JPEG 2000 tiles too, through [`j2k`]) and generic
//! tiled TIFF, pathfed's own DICOM whole-slide reader ([`dicom`]; [`open`] also takes the folder
//! holding a DICOM series), or OpenSlide for every other format. Every reader checks
//! [`SlideLimits`] before decoding and reports typed [`SlideError`]s. On top of the readers sit
//! Deep Zoom tiling ([`deepzoom`]) and thumbnails ([`thumbnail`]). Synthetic test slides are the
//! `pathfed-synth` crate, which writes through [`tiff::writer`] and [`jpeg`].

mod compose;
pub mod deepzoom;
pub mod dicom;
pub mod error;
pub mod j2k;
pub mod jpeg;
#[cfg(feature = "openslide")]
pub mod openslide;
pub mod reader;
pub mod resize;
pub mod thumbnail;
pub mod tiff;
mod tile_cache;
pub mod tissue;

use std::io::Read;
use std::path::Path;

pub use pathfed_core::SlideLimits;

pub use crate::error::{Result, SlideError};
pub use crate::reader::{AssociatedImage, Bounds, Level, RawTile, SlideProperties, SlideReader};

/// Which backend a file goes to, decided from its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// Aperio SVS or generic tiled TIFF, read by the fast path.
    FastPath(tiff::TiffKind),
    /// Read through OpenSlide; the vendor as far as the bytes tell.
    OpenSlide(String),
    /// A DICOM whole-slide image, read by [`dicom`]: a folder holding the series' instances,
    /// or one instance (whose siblings in its folder complete the series).
    Dicom,
}

/// Decides how to read `path` from its content.
pub fn detect(path: &Path, limits: &SlideLimits) -> Result<Detected> {
    Ok(match sniff(path, limits)? {
        Sniffed::Tiff(_, kind) => Detected::FastPath(kind),
        Sniffed::OpenSlide(vendor) => Detected::OpenSlide(vendor),
        Sniffed::Dicom => Detected::Dicom,
    })
}

/// What the first bytes say, keeping a parsed TIFF so it is not parsed twice.
enum Sniffed {
    Tiff(Box<tiff::file::TiffFile>, tiff::TiffKind),
    OpenSlide(String),
    Dicom,
}

fn sniff(path: &Path, limits: &SlideLimits) -> Result<Sniffed> {
    // A folder is a DICOM series (an unpacked upload): no other format is one.
    if path.is_dir() {
        return if dicom::is_dicom(path, limits)? {
            Ok(Sniffed::Dicom)
        } else {
            Err(SlideError::NotASlide("a folder without DICOM files".into()))
        };
    }
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|source| SlideError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let head = &head[..n];
    if n == 0 {
        return Err(SlideError::NotASlide("empty file".into()));
    }
    // Checked before TIFF: a dual-personality DICOM-TIFF file is read as the DICOM it also is.
    if dicom::is_dicom_magic(head) {
        return Ok(Sniffed::Dicom);
    }
    if tiff::file::is_tiff_magic(head) {
        let file = tiff::file::TiffFile::open(path, limits)?;
        return Ok(match tiff::classify(&file)? {
            tiff::TiffKind::OpenSlideOnly(vendor) => Sniffed::OpenSlide(vendor),
            kind => Sniffed::Tiff(Box::new(file), kind),
        });
    }
    // Other formats OpenSlide reads start with a JPEG (MIRAX, VMU index images), an INI header
    // (Hamamatsu VMS) or an SQLite header (Sakura). Nothing else is handed to a C library.
    let vendor = if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "jpeg-based"
    } else if head.starts_with(b"[Virtual Microscope Specimen]") {
        "hamamatsu"
    } else if head.starts_with(b"SQLite format 3\0") {
        "sakura"
    } else {
        return Err(SlideError::NotASlide(format!(
            "unrecognised content (starts with {})",
            describe_bytes(head)
        )));
    };
    Ok(Sniffed::OpenSlide(vendor.to_string()))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A short printable rendering of a file's first bytes, for error messages.
fn describe_bytes(head: &[u8]) -> String {
    let shown: String = head
        .iter()
        .take(8)
        .map(|&b| {
            if b.is_ascii_graphic() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    format!("\"{shown}\"")
}

/// Opens a slide with the default decoded-tile cache.
pub fn open(path: &Path, limits: &SlideLimits) -> Result<Box<dyn SlideReader>> {
    match sniff(path, limits)? {
        Sniffed::Tiff(file, kind) => Ok(Box::new(tiff::TiffSlide::from_file(
            *file,
            &kind,
            tiff::DEFAULT_TILE_CACHE_BYTES,
        )?)),
        Sniffed::OpenSlide(vendor) => open_with_openslide(path, limits, &vendor),
        Sniffed::Dicom => Ok(Box::new(dicom::DicomSlide::open(
            path,
            limits,
            tiff::DEFAULT_TILE_CACHE_BYTES,
        )?)),
    }
}

#[cfg(feature = "openslide")]
fn open_with_openslide(
    path: &Path,
    limits: &SlideLimits,
    _vendor: &str,
) -> Result<Box<dyn SlideReader>> {
    Ok(Box::new(openslide::OpenSlideReader::open(path, limits)?))
}

#[cfg(not(feature = "openslide"))]
fn open_with_openslide(
    _path: &Path,
    _limits: &SlideLimits,
    vendor: &str,
) -> Result<Box<dyn SlideReader>> {
    Err(SlideError::NeedsOpenSlide(vendor.to_string()))
}
