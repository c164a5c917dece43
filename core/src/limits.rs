//! Limits applied to untrusted slide files before anything is decoded.
//!
//! A slide arrives from another hospital and is parsed by a server that other users share, so a
//! malformed or hostile file must fail fast with a typed error instead of exhausting memory.

use serde::{Deserialize, Serialize};

/// Bounds on what a slide file may declare; checked before any pixel is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlideLimits {
    /// Largest width or height of any image in the file, in pixels.
    pub max_dimension: u64,
    /// Largest pixel count (width × height) of any image in the file.
    pub max_pixels: u64,
    /// Largest number of tiles or strips in one image.
    pub max_tiles: u64,
    /// Largest compressed size of one tile or strip, in bytes.
    pub max_tile_bytes: u64,
    /// Largest width or height of one tile or strip, in pixels.
    pub max_tile_dimension: u32,
    /// Largest number of image directories (IFDs) in a TIFF file.
    pub max_ifds: usize,
    /// Largest number of entries in one image directory.
    pub max_ifd_entries: u64,
    /// Largest size of one tag's value, in bytes (descriptions, offset arrays, tables).
    pub max_tag_bytes: u64,
    /// Largest region one `read_region` call may decode, in pixels.
    pub max_region_pixels: u64,
}

impl Default for SlideLimits {
    fn default() -> Self {
        // Generous for real scanners (the largest slides are about 200k × 100k px at 40×).
        Self {
            max_dimension: 500_000,
            max_pixels: 100_000_000_000,
            max_tiles: 20_000_000,
            max_tile_bytes: 32 << 20,
            max_tile_dimension: 8192,
            max_ifds: 1024,
            max_ifd_entries: 4096,
            max_tag_bytes: 256 << 20,
            max_region_pixels: 256 << 20,
        }
    }
}
