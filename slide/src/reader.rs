//! The `SlideReader` trait every backend implements, and the normalised slide description.

use std::collections::BTreeMap;

use image::RgbImage;
use serde::Serialize;

use crate::error::Result;

/// One pyramid level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Level {
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
    /// Level-0 pixels per pixel of this level (mean of both axes, as OpenSlide reports it).
    pub downsample: f64,
    /// Stored tile size, where the format stores square-gridded tiles.
    pub tile_size: Option<(u32, u32)>,
}

/// The non-empty part of a slide, in level-0 pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Left edge.
    pub x: u64,
    /// Top edge.
    pub y: u64,
    /// Width.
    pub width: u64,
    /// Height.
    pub height: u64,
}

/// Name and size of an associated image (label, macro, thumbnail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssociatedImage {
    /// "label", "macro", "thumbnail", ...
    pub name: String,
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
}

/// What every backend reports about a slide, in one vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlideProperties {
    /// Format / vendor name as OpenSlide spells it ("aperio", "generic-tiff", "hamamatsu", ...).
    pub vendor: String,
    /// Which backend reads it ("tiff" fast path, "dicom" reader or "openslide").
    pub backend: &'static str,
    /// Pyramid levels, largest first.
    pub levels: Vec<Level>,
    /// Micrometres per pixel along x at level 0.
    pub mpp_x: Option<f64>,
    /// Micrometres per pixel along y at level 0.
    pub mpp_y: Option<f64>,
    /// Scanning objective magnification (e.g. 20 or 40).
    pub objective_power: Option<f64>,
    /// The non-empty region, where the format declares one.
    pub bounds: Option<Bounds>,
    /// Label, macro and thumbnail images.
    pub associated_images: Vec<AssociatedImage>,
    /// Every raw vendor property, keyed as OpenSlide names them ("aperio.MPP", "tiff.Software", ...).
    pub raw: BTreeMap<String, String>,
}

impl SlideProperties {
    /// Level-0 width and height.
    pub fn dimensions(&self) -> (u64, u64) {
        self.levels
            .first()
            .map_or((0, 0), |level| (level.width, level.height))
    }

    /// The most reduced level that still has at least the resolution of `downsample`; the 1%
    /// tolerance accepts Aperio-style downsamples such as 4.0002 as 4.
    pub fn best_level_for_downsample(&self, downsample: f64) -> usize {
        self.levels
            .iter()
            .rposition(|l| l.downsample <= downsample * 1.01)
            .unwrap_or(0)
    }
}

/// A stored, already-compressed tile that can be served without decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTile {
    /// A complete, self-contained JPEG stream.
    pub jpeg: Vec<u8>,
    /// Width of the stored tile in pixels.
    pub width: u32,
    /// Height of the stored tile in pixels.
    pub height: u32,
}

/// Read access to one whole-slide image. Implementations are safe to share between threads.
pub trait SlideReader: Send + Sync {
    /// The normalised description of the slide.
    fn properties(&self) -> &SlideProperties;

    /// Reads `w × h` pixels at (`x`, `y`) in the pixel coordinates *of `level`*. Parts outside
    /// the level come back white, as glass does.
    fn read_region(&self, level: usize, x: u64, y: u64, w: u32, h: u32) -> Result<RgbImage>;

    /// The stored JPEG tile at (`col`, `row`) of `level`, if the format stores one there;
    /// `Ok(None)` where tiles are not JPEG or the level is not tiled.
    fn raw_tile(&self, level: usize, col: u64, row: u64) -> Result<Option<RawTile>>;

    /// Decodes the associated image `name` (see [`SlideProperties::associated_images`]).
    fn associated_image(&self, name: &str) -> Result<RgbImage>;
}
