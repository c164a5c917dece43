//! The OpenSlide backend: every format the TIFF fast path does not read, behind the same trait.
//!
//! OpenSlide parses files in C without pathfed's limits, so untrusted uploads reach it only
//! inside the validation child process (see the ingest crate); the declared dimensions are
//! still checked here before any region is read.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;
use openslide_rs::{Address, OpenSlide, Region, Size};
use pathfed_core::SlideLimits;

use crate::error::{Result, SlideError};
use crate::reader::{AssociatedImage, Bounds, Level, RawTile, SlideProperties, SlideReader};

/// A slide opened through OpenSlide.
pub struct OpenSlideReader {
    slide: OpenSlide,
    properties: SlideProperties,
    limits: SlideLimits,
}

fn os_err(e: impl std::fmt::Display) -> SlideError {
    SlideError::OpenSlide(e.to_string())
}

impl OpenSlideReader {
    /// Opens `path` with OpenSlide and checks its declared geometry against `limits`.
    pub fn open(path: &Path, limits: &SlideLimits) -> Result<Self> {
        if OpenSlide::detect_vendor(path).is_err() {
            return Err(SlideError::NotASlide(
                "OpenSlide does not recognise the file".into(),
            ));
        }
        let slide = OpenSlide::new(path).map_err(os_err)?;
        let mut raw = BTreeMap::new();
        for name in slide.property_names().map_err(os_err)? {
            if let Ok(value) = slide.property_value(&name) {
                raw.insert(name, value);
            }
        }
        let float = |key: &str| raw.get(key).and_then(|v| v.parse::<f64>().ok());
        let mut levels = Vec::new();
        for level in 0..slide.level_count() {
            let size = slide.level_dimensions(level).map_err(os_err)?;
            let (w, h) = (u64::from(size.w), u64::from(size.h));
            for (what, value, limit) in [
                ("image width", w, limits.max_dimension),
                ("image height", h, limits.max_dimension),
                ("image pixel count", w * h, limits.max_pixels),
            ] {
                if value > limit {
                    return Err(SlideError::LimitExceeded { what, value, limit });
                }
            }
            let tile = |axis: &str| {
                float(&format!("openslide.level[{level}].tile-{axis}")).map(|v| v as u32)
            };
            levels.push(Level {
                width: w,
                height: h,
                downsample: slide.level_downsample(level).map_err(os_err)?,
                tile_size: tile("width").zip(tile("height")),
            });
        }
        if levels.is_empty() {
            return Err(SlideError::NotASlide("OpenSlide reports no levels".into()));
        }
        let mut associated_images = Vec::new();
        for name in slide.associated_image_names().map_err(os_err)? {
            let size = slide.associated_image_dimensions(&name).map_err(os_err)?;
            associated_images.push(AssociatedImage {
                name,
                width: u64::from(size.w),
                height: u64::from(size.h),
            });
        }
        let bounds = match (
            float("openslide.bounds-x"),
            float("openslide.bounds-y"),
            float("openslide.bounds-width"),
            float("openslide.bounds-height"),
        ) {
            (Some(x), Some(y), Some(w), Some(h)) => Some(Bounds {
                x: x as u64,
                y: y as u64,
                width: w as u64,
                height: h as u64,
            }),
            _ => None,
        };
        // OpenSlide before 4.0 leaves the MPP of generic TIFFs unset; derive it as 4.0 does.
        let tiff_mpp = |raw: &BTreeMap<String, String>, key: &str| {
            let per_unit: f64 = raw.get(key)?.parse().ok()?;
            let micrometres = match raw.get("tiff.ResolutionUnit")?.as_str() {
                "centimeter" => 10_000.0,
                "inch" => 25_400.0,
                _ => return None,
            };
            (per_unit > 0.0).then(|| micrometres / per_unit)
        };
        let properties = SlideProperties {
            vendor: raw
                .get("openslide.vendor")
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
            backend: "openslide",
            levels,
            mpp_x: float("openslide.mpp-x").or_else(|| tiff_mpp(&raw, "tiff.XResolution")),
            mpp_y: float("openslide.mpp-y").or_else(|| tiff_mpp(&raw, "tiff.YResolution")),
            objective_power: float("openslide.objective-power"),
            bounds,
            associated_images,
            raw,
        };
        Ok(Self {
            slide,
            properties,
            limits: limits.clone(),
        })
    }
}

impl SlideReader for OpenSlideReader {
    fn properties(&self) -> &SlideProperties {
        &self.properties
    }

    fn read_region(&self, level: usize, x: u64, y: u64, w: u32, h: u32) -> Result<RgbImage> {
        let info = self.properties.levels.get(level).ok_or_else(|| {
            SlideError::OutOfRange(format!("level {level} of {}", self.properties.levels.len()))
        })?;
        let pixels = u64::from(w) * u64::from(h);
        if pixels > self.limits.max_region_pixels {
            return Err(SlideError::LimitExceeded {
                what: "region pixel count",
                value: pixels,
                limit: self.limits.max_region_pixels,
            });
        }
        // OpenSlide addresses regions by their level-0 corner.
        let to_level0 = |v: u64| (v as f64 * info.downsample).round();
        let (x0, y0) = (to_level0(x), to_level0(y));
        if x0 > f64::from(u32::MAX) || y0 > f64::from(u32::MAX) {
            return Err(SlideError::OutOfRange(format!("region at ({x}, {y})")));
        }
        let region = Region {
            size: Size { w, h },
            level: level as u32,
            address: Address {
                x: x0 as u32,
                y: y0 as u32,
            },
        };
        self.slide.read_image_rgb(&region).map_err(os_err)
    }

    fn raw_tile(&self, _level: usize, _col: u64, _row: u64) -> Result<Option<RawTile>> {
        Ok(None)
    }

    fn associated_image(&self, name: &str) -> Result<RgbImage> {
        if !self
            .properties
            .associated_images
            .iter()
            .any(|a| a.name == name)
        {
            return Err(SlideError::NoSuchAssociatedImage(name.to_string()));
        }
        self.slide.read_associated_image_rgb(name).map_err(os_err)
    }
}
