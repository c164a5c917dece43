//! The pure-Rust TIFF fast path: Aperio SVS (JPEG, JPEG 2000, LZW or raw tiles) and generic
//! tiled pyramidal TIFF (classic or BigTIFF).
//!
//! Tiles are located from the directory's offset arrays and decoded directly; decoded tiles are
//! kept in a small LRU so neighbouring reads (Deep Zoom, region reads across borders) decode
//! each stored tile once.

pub mod aperio;
mod codec;
pub mod file;
pub mod image;
pub mod writer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ::image::RgbImage;
use pathfed_core::SlideLimits;

use self::file::{TiffFile, tag};
use self::image::{Compression, Photometric, TiffImage};
use crate::compose::{self, TileSource};
use crate::error::{Result, SlideError};
use crate::reader::{AssociatedImage, Level, RawTile, SlideProperties, SlideReader};
use crate::tile_cache::TileCache;

/// Default capacity of the decoded-tile cache of one open slide.
pub const DEFAULT_TILE_CACHE_BYTES: usize = 64 << 20;

/// What a TIFF-structured file is, judged from its directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TiffKind {
    /// Aperio SVS with JPEG / JPEG 2000 / LZW / raw tiles: the fast path.
    Aperio,
    /// A generic tiled TIFF pyramid: the fast path.
    Generic,
    /// A TIFF-based vendor format OpenSlide reads (vendor name as OpenSlide spells it).
    OpenSlideOnly(String),
}

/// Classifies an opened TIFF by its first directory's tags, the way OpenSlide's vendor
/// detection does, so each file reaches the backend that understands its layout.
pub fn classify(tiff: &TiffFile) -> Result<TiffKind> {
    let first = &tiff.ifds()[0];
    let description = tiff
        .ascii(first, tag::IMAGE_DESCRIPTION)?
        .unwrap_or_default();
    let software = tiff.ascii(first, tag::SOFTWARE)?.unwrap_or_default();
    let other = |vendor: &str| Ok(TiffKind::OpenSlideOnly(vendor.to_string()));
    if first.entries.contains_key(&tag::NDPI_FORMAT_FLAG) {
        return other("hamamatsu");
    }
    if description.starts_with("Aperio") {
        return Ok(TiffKind::Aperio);
    }
    if description.contains("DPUfsImport") {
        return other("philips");
    }
    if description.starts_with("<?xml") && description.contains("leica-microsystems.com/scn") {
        return other("leica");
    }
    if software.starts_with("MedScan") {
        return other("trestle");
    }
    if let Some(xmp) = tiff.bytes(first, tag::XMP)?
        && String::from_utf8_lossy(&xmp).contains("iScan")
    {
        return other("ventana");
    }
    if !first.entries.contains_key(&tag::TILE_WIDTH) {
        return Err(SlideError::NotASlide(
            "a TIFF whose first image is not tiled (an ordinary picture, not a slide)".into(),
        ));
    }
    Ok(TiffKind::Generic)
}

/// An Aperio or generic TIFF slide read by the fast path.
pub struct TiffSlide {
    tiff: TiffFile,
    levels: Vec<TiffImage>,
    associated: Vec<(String, TiffImage)>,
    properties: SlideProperties,
    /// Decoded chunks by (directory, chunk index).
    cache: TileCache,
}

impl TiffSlide {
    /// Opens `path` with the given decoded-tile cache size.
    pub fn open(path: &Path, limits: &SlideLimits, cache_bytes: usize) -> Result<Self> {
        let tiff = TiffFile::open(path, limits)?;
        let kind = classify(&tiff)?;
        Self::from_file(tiff, &kind, cache_bytes)
    }

    /// Reads the slide of an already parsed and classified TIFF.
    pub fn from_file(tiff: TiffFile, kind: &TiffKind, cache_bytes: usize) -> Result<Self> {
        let vendor = match kind {
            TiffKind::Aperio => "aperio",
            TiffKind::Generic => "generic-tiff",
            TiffKind::OpenSlideOnly(vendor) => {
                return Err(SlideError::NeedsOpenSlide(vendor.clone()));
            }
        };
        let mut levels = Vec::new();
        let mut associated = Vec::new();
        for ifd in tiff.ifds() {
            let tiled = ifd.entries.contains_key(&tag::TILE_WIDTH);
            if vendor == "aperio" {
                let image = TiffImage::from_ifd(&tiff, ifd)?;
                if tiled {
                    levels.push(image);
                } else if ifd.index == 1 {
                    associated.push(("thumbnail".to_string(), image));
                } else if let Some(name) = image
                    .description
                    .as_deref()
                    .and_then(aperio::associated_name)
                {
                    associated.push((name.to_string(), image));
                }
            } else if tiled {
                // Generic TIFF: every tiled directory is a level; strips are ignored, as OpenSlide does.
                levels.push(TiffImage::from_ifd(&tiff, ifd)?);
            }
        }
        if vendor == "generic-tiff" {
            levels.sort_by_key(|image| std::cmp::Reverse(image.width));
        }
        if levels.is_empty() {
            return Err(SlideError::NotASlide("no tiled pyramid level".into()));
        }
        let properties = describe(&tiff, vendor, &levels, &associated)?;
        Ok(Self {
            tiff,
            levels,
            associated,
            properties,
            cache: TileCache::new(cache_bytes),
        })
    }

    /// The stored pyramid levels, largest first, as [`SlideReader::properties`] lists them.
    pub fn pyramid(&self) -> &[TiffImage] {
        &self.levels
    }

    /// The stored bytes of chunk `index` of `level`, exactly as the file holds them (for
    /// lossless copies; JPEG chunks are abbreviated streams needing the level's tables).
    pub fn stored_chunk(&self, level: usize, index: usize) -> Result<Vec<u8>> {
        let image = self.level(level)?;
        if index >= image.offsets.len() {
            return Err(SlideError::OutOfRange(format!(
                "chunk {index} of a level with {}",
                image.offsets.len()
            )));
        }
        self.read_chunk_bytes(image, index)
    }

    fn level(&self, level: usize) -> Result<&TiffImage> {
        self.levels.get(level).ok_or_else(|| {
            SlideError::OutOfRange(format!(
                "level {level} of a slide with {} levels",
                self.levels.len()
            ))
        })
    }

    fn read_chunk_bytes(&self, image: &TiffImage, index: usize) -> Result<Vec<u8>> {
        self.tiff.read_exact_at(
            image.offsets[index],
            image.byte_counts[index],
            "tile/strip data",
        )
    }

    /// The decoded chunk `index` of `image`, from the cache when possible.
    fn decoded_chunk(&self, image: &TiffImage, index: usize) -> Result<Arc<Vec<u8>>> {
        self.cache.get_or_decode((image.index, index), || {
            let data = self.read_chunk_bytes(image, index)?;
            codec::decode_chunk(image, index, &data, self.tiff.limits())
        })
    }

    /// Composes `w × h` pixels of `image` at (`x`, `y`), decoding the chunks it overlaps.
    fn compose(
        &self,
        image: &TiffImage,
        x: u64,
        y: u64,
        w: u32,
        h: u32,
        cached: bool,
    ) -> Result<RgbImage> {
        let chunks = Chunks {
            slide: self,
            image,
            cached,
        };
        compose::compose(&chunks, x, y, w, h, self.tiff.limits().max_region_pixels)
    }
}

/// One image's chunks as tiles to compose, decoded through the slide's cache or not.
struct Chunks<'a> {
    slide: &'a TiffSlide,
    image: &'a TiffImage,
    cached: bool,
}

impl TileSource for Chunks<'_> {
    fn size(&self) -> (u64, u64) {
        (self.image.width, self.image.height)
    }

    fn tile_size(&self) -> (u64, u64) {
        (
            u64::from(self.image.chunk_width),
            u64::from(self.image.chunk_height),
        )
    }

    fn has_tile(&self, _col: u64, _row: u64) -> bool {
        // Every chunk of a TIFF image is stored; an empty one is an error, not glass.
        true
    }

    fn tile(&self, col: u64, row: u64) -> Result<Arc<Vec<u8>>> {
        let index = (row * self.image.cols + col) as usize;
        if self.cached {
            return self.slide.decoded_chunk(self.image, index);
        }
        let data = self.slide.read_chunk_bytes(self.image, index)?;
        Ok(Arc::new(codec::decode_chunk(
            self.image,
            index,
            &data,
            self.slide.tiff.limits(),
        )?))
    }
}

/// Builds the normalised description from the directories' tags.
fn describe(
    tiff: &TiffFile,
    vendor: &str,
    levels: &[TiffImage],
    associated: &[(String, TiffImage)],
) -> Result<SlideProperties> {
    let first = &tiff.ifds()[0];
    let mut raw = BTreeMap::new();
    for (tag, name) in [
        (tag::IMAGE_DESCRIPTION, "ImageDescription"),
        (tag::MAKE, "Make"),
        (tag::MODEL, "Model"),
        (tag::SOFTWARE, "Software"),
        (tag::DATE_TIME, "DateTime"),
        (tag::ARTIST, "Artist"),
        (tag::HOST_COMPUTER, "HostComputer"),
        (tag::COPYRIGHT, "Copyright"),
    ] {
        if let Some(value) = tiff.ascii(first, tag)? {
            raw.insert(format!("tiff.{name}"), value);
        }
    }
    let x_res = tiff.rational(first, tag::X_RESOLUTION)?;
    let y_res = tiff.rational(first, tag::Y_RESOLUTION)?;
    let unit = tiff.uint(first, tag::RESOLUTION_UNIT)?.unwrap_or(2);
    if let Some(x) = x_res {
        raw.insert("tiff.XResolution".into(), x.to_string());
    }
    if let Some(y) = y_res {
        raw.insert("tiff.YResolution".into(), y.to_string());
    }
    let unit_name = match unit {
        1 => "none",
        3 => "centimeter",
        _ => "inch",
    };
    raw.insert("tiff.ResolutionUnit".into(), unit_name.into());

    let (mpp_x, mpp_y, objective_power) = if vendor == "aperio" {
        raw.extend(aperio::parse_description(
            raw.get("tiff.ImageDescription").map_or("", String::as_str),
        ));
        let mpp = raw
            .get("aperio.MPP")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| *v > 0.0);
        let objective = raw.get("aperio.AppMag").and_then(|v| v.parse::<f64>().ok());
        (mpp, mpp, objective)
    } else {
        // Resolution tags in pixels per centimetre, as OpenSlide 4 reads them; per-inch values
        // are usually a picture editor's 72 dpi default, not a microscope's scale.
        let per_unit = (unit == 3).then_some(10_000.0);
        let mpp = |res: Option<f64>| {
            per_unit
                .zip(res)
                .map(|(u, r)| u / r)
                .filter(|v| v.is_finite() && *v > 0.0)
        };
        (mpp(x_res), mpp(y_res), None)
    };

    let (w0, h0) = (levels[0].width as f64, levels[0].height as f64);
    let levels = levels
        .iter()
        .map(|image| Level {
            width: image.width,
            height: image.height,
            downsample: (w0 / image.width as f64 + h0 / image.height as f64) / 2.0,
            tile_size: image
                .tiled
                .then_some((image.chunk_width, image.chunk_height)),
        })
        .collect();
    Ok(SlideProperties {
        vendor: vendor.to_string(),
        backend: "tiff",
        levels,
        mpp_x,
        mpp_y,
        objective_power,
        bounds: None,
        associated_images: associated
            .iter()
            .map(|(name, image)| AssociatedImage {
                name: name.clone(),
                width: image.width,
                height: image.height,
            })
            .collect(),
        raw,
    })
}

impl SlideReader for TiffSlide {
    fn properties(&self) -> &SlideProperties {
        &self.properties
    }

    fn read_region(&self, level: usize, x: u64, y: u64, w: u32, h: u32) -> Result<RgbImage> {
        let image = self.level(level)?;
        self.compose(image, x, y, w, h, true)
    }

    fn raw_tile(&self, level: usize, col: u64, row: u64) -> Result<Option<RawTile>> {
        let image = self.level(level)?;
        if !image.tiled || image.compression != Compression::Jpeg {
            return Ok(None);
        }
        if col >= image.cols || row >= image.rows {
            return Err(SlideError::OutOfRange(format!(
                "tile ({col}, {row}) of a {}×{} grid",
                image.cols, image.rows
            )));
        }
        let data = self.read_chunk_bytes(image, (row * image.cols + col) as usize)?;
        let jpeg = crate::jpeg::complete_stream(
            image.jpeg_tables.as_deref(),
            &data,
            image.photometric == Photometric::Rgb,
        )?;
        Ok(Some(RawTile {
            jpeg,
            width: image.chunk_width,
            height: image.chunk_height,
        }))
    }

    fn associated_image(&self, name: &str) -> Result<RgbImage> {
        let (_, image) = self
            .associated
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| SlideError::NoSuchAssociatedImage(name.to_string()))?;
        let (w, h) = (u32::try_from(image.width), u32::try_from(image.height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(SlideError::LimitExceeded {
                what: "associated image width",
                value: image.width,
                limit: u64::from(u32::MAX),
            });
        };
        self.compose(image, 0, 0, w, h, false)
    }
}
