//! Deep Zoom tiling: the `.dzi` descriptor and `{level}/{col}_{row}.jpeg` tiles.
//!
//! Deep Zoom level `max` is the full-resolution image and each level below halves it. Where a
//! Deep Zoom level coincides with a stored pyramid level and the tile grids match, the stored
//! JPEG tile is served as it is (pass-through); otherwise the best pyramid level is read,
//! resampled and encoded.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pathfed_core::config::TilesConfig;
use rayon::prelude::*;

use crate::error::{Result, SlideError};
use crate::reader::{SlideProperties, SlideReader};
use crate::resize::{Rect, read_scaled};

/// Tile geometry and encoding of a Deep Zoom pyramid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeepZoomOptions {
    /// Tile width and height in pixels, without overlap.
    pub tile_size: u32,
    /// Pixels shared with each neighbour.
    pub overlap: u32,
    /// JPEG quality of tiles that are re-encoded.
    pub jpeg_quality: u8,
}

impl DeepZoomOptions {
    /// Options for `slide` from the configuration: tile size 0 picks the slide's own square
    /// tile size (so stored tiles pass through), else 254 with the configured overlap.
    pub fn for_slide(properties: &SlideProperties, config: &TilesConfig) -> Self {
        let native = properties.levels.first().and_then(|l| l.tile_size);
        let tile_size = match (config.tile_size, native) {
            (0, Some((w, h))) if w == h && (64..=2048).contains(&w) => w,
            (0, _) => 254,
            (size, _) => size,
        };
        Self {
            tile_size,
            overlap: config.overlap,
            jpeg_quality: config.jpeg_quality,
        }
    }
}

/// One encoded tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tile {
    /// The JPEG bytes.
    pub jpeg: Vec<u8>,
    /// Whether the bytes are a stored tile served without decoding.
    pub passthrough: bool,
}

/// The geometry of a Deep Zoom pyramid over an image of a given size: levels, tile grids and
/// tile rectangles. Anything drawn over a slide (an AI heatmap overlay, say) uses the slide's
/// geometry, so its tiles line up with the slide's at every level.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepZoomGeometry {
    options: DeepZoomOptions,
    /// Dimensions of every Deep Zoom level, smallest (1×1) first.
    dimensions: Vec<(u64, u64)>,
}

impl DeepZoomGeometry {
    /// The pyramid of a `width` × `height` image with `options`' tiles.
    pub fn new(width: u64, height: u64, options: DeepZoomOptions) -> Result<Self> {
        if options.tile_size == 0
            || options.tile_size > 4096
            || options.overlap > options.tile_size / 2
        {
            return Err(SlideError::OutOfRange(format!(
                "Deep Zoom tile size {} with overlap {}",
                options.tile_size, options.overlap
            )));
        }
        let (mut w, mut h) = (width, height);
        let mut dimensions = vec![(w, h)];
        while w > 1 || h > 1 {
            w = w.div_ceil(2);
            h = h.div_ceil(2);
            dimensions.push((w, h));
        }
        dimensions.reverse();
        Ok(Self {
            options,
            dimensions,
        })
    }

    /// The options in use.
    pub fn options(&self) -> DeepZoomOptions {
        self.options
    }

    /// Number of Deep Zoom levels.
    pub fn level_count(&self) -> usize {
        self.dimensions.len()
    }

    /// Pixel dimensions of Deep Zoom `level`.
    pub fn level_dimensions(&self, level: usize) -> Option<(u64, u64)> {
        self.dimensions.get(level).copied()
    }

    /// Full-resolution pixels per pixel of Deep Zoom `level` (a power of two).
    pub fn level_scale(&self, level: usize) -> f64 {
        2f64.powi(self.level_count().saturating_sub(1 + level) as i32)
    }

    /// Columns and rows of tiles at Deep Zoom `level`.
    pub fn level_tiles(&self, level: usize) -> Option<(u64, u64)> {
        let ts = u64::from(self.options.tile_size);
        self.level_dimensions(level)
            .map(|(w, h)| (w.div_ceil(ts), h.div_ceil(ts)))
    }

    /// Total number of tiles in the pyramid.
    pub fn tile_count(&self) -> u64 {
        (0..self.level_count())
            .filter_map(|l| self.level_tiles(l))
            .map(|(c, r)| c * r)
            .sum()
    }

    /// The `.dzi` XML descriptor for tiles in `format` (`jpeg`, `png`).
    pub fn dzi(&self, format: &str) -> String {
        let (w, h) = self.dimensions.last().copied().unwrap_or((0, 0));
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Image xmlns=\"http://schemas.microsoft.com/deepzoom/2008\" Format=\"{format}\" Overlap=\"{}\" TileSize=\"{}\"><Size Width=\"{w}\" Height=\"{h}\"/></Image>\n",
            self.options.overlap, self.options.tile_size
        )
    }

    /// The tile's rectangle `(x0, y0, x1, y1)` in Deep Zoom level pixels, overlap included.
    pub fn tile_rect(&self, level: usize, col: u64, row: u64) -> Result<(u64, u64, u64, u64)> {
        let (cols, rows) = self
            .level_tiles(level)
            .ok_or_else(|| SlideError::OutOfRange(format!("Deep Zoom level {level}")))?;
        if col >= cols || row >= rows {
            return Err(SlideError::OutOfRange(format!(
                "tile ({col}, {row}) at Deep Zoom level {level} ({cols}×{rows} tiles)"
            )));
        }
        let (w, h) = self.dimensions[level];
        let (ts, ov) = (
            u64::from(self.options.tile_size),
            u64::from(self.options.overlap),
        );
        let x0 = (col * ts).saturating_sub(if col > 0 { ov } else { 0 });
        let y0 = (row * ts).saturating_sub(if row > 0 { ov } else { 0 });
        let x1 = ((col + 1) * ts + ov).min(w);
        let y1 = ((row + 1) * ts + ov).min(h);
        Ok((x0, y0, x1, y1))
    }
}

/// A Deep Zoom view of one slide.
pub struct DeepZoom {
    slide: Arc<dyn SlideReader>,
    geometry: DeepZoomGeometry,
}

/// What writing a whole pyramid produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PyramidStats {
    /// Tiles written.
    pub tiles: u64,
    /// Of which passed through without decoding.
    pub passthrough: u64,
    /// Bytes of tile data written.
    pub bytes: u64,
}

impl DeepZoom {
    /// A Deep Zoom view of `slide` with `options`.
    pub fn new(slide: Arc<dyn SlideReader>, options: DeepZoomOptions) -> Result<Self> {
        let (w, h) = slide.properties().dimensions();
        let geometry = DeepZoomGeometry::new(w, h, options)?;
        Ok(Self { slide, geometry })
    }

    /// The pyramid's geometry.
    pub fn geometry(&self) -> &DeepZoomGeometry {
        &self.geometry
    }

    /// The options in use.
    pub fn options(&self) -> DeepZoomOptions {
        self.geometry.options
    }

    /// Number of Deep Zoom levels.
    pub fn level_count(&self) -> usize {
        self.geometry.level_count()
    }

    /// Pixel dimensions of Deep Zoom `level`.
    pub fn level_dimensions(&self, level: usize) -> Option<(u64, u64)> {
        self.geometry.level_dimensions(level)
    }

    /// Columns and rows of tiles at Deep Zoom `level`.
    pub fn level_tiles(&self, level: usize) -> Option<(u64, u64)> {
        self.geometry.level_tiles(level)
    }

    /// Total number of tiles in the pyramid.
    pub fn tile_count(&self) -> u64 {
        self.geometry.tile_count()
    }

    /// The `.dzi` XML descriptor.
    pub fn dzi(&self) -> String {
        self.geometry.dzi("jpeg")
    }

    /// The stored pyramid level that exactly matches Deep Zoom `level`'s grid, if any.
    fn passthrough_level(&self, level: usize) -> Option<usize> {
        if self.geometry.options.overlap != 0 {
            return None;
        }
        let ts = self.geometry.options.tile_size;
        let dims = self.geometry.level_dimensions(level)?;
        self.slide
            .properties()
            .levels
            .iter()
            .position(|l| (l.width, l.height) == dims && l.tile_size == Some((ts, ts)))
    }

    /// Renders tile (`col`, `row`) of Deep Zoom `level`.
    pub fn tile(&self, level: usize, col: u64, row: u64) -> Result<Tile> {
        let (x0, y0, x1, y1) = self.geometry.tile_rect(level, col, row)?;
        let ts = u64::from(self.geometry.options.tile_size);
        if let Some(stored) = self.passthrough_level(level)
            && x1 - x0 == ts
            && y1 - y0 == ts
            && let Some(raw) = self.slide.raw_tile(stored, col, row)?
            && u64::from(raw.width) == ts
            && u64::from(raw.height) == ts
        {
            return Ok(Tile {
                jpeg: raw.jpeg,
                passthrough: true,
            });
        }
        let properties = self.slide.properties();
        let (w0, h0) = properties.dimensions();
        let scale = self.geometry.level_scale(level);
        let source = properties.best_level_for_downsample(scale);
        let info = &properties.levels[source];
        let (sx, sy) = (
            w0 as f64 / info.width as f64,
            h0 as f64 / info.height as f64,
        );
        let rect = Rect {
            x0: x0 as f64 * scale / sx,
            y0: y0 as f64 * scale / sy,
            x1: (x1 as f64 * scale).min(w0 as f64) / sx,
            y1: (y1 as f64 * scale).min(h0 as f64) / sy,
        };
        let image = read_scaled(
            self.slide.as_ref(),
            source,
            rect,
            (x1 - x0) as u32,
            (y1 - y0) as u32,
        )?;
        Ok(Tile {
            jpeg: crate::jpeg::encode_rgb(&image, self.geometry.options.jpeg_quality)?,
            passthrough: false,
        })
    }

    /// Writes `{name}.dzi` and every tile under `{name}_files/` in `dir`, in parallel;
    /// `progress` is called with (tiles done, total) as tiles complete.
    pub fn write_pyramid(
        &self,
        dir: &Path,
        name: &str,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<PyramidStats> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SlideError::Write { path, source }
        };
        let files = dir.join(format!("{name}_files"));
        let total = self.tile_count();
        let done = AtomicU64::new(0);
        let passthrough = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        for level in 0..self.level_count() {
            let level_dir = files.join(level.to_string());
            std::fs::create_dir_all(&level_dir).map_err(write_err(&level_dir))?;
            let (cols, rows) = self.level_tiles(level).unwrap_or((0, 0));
            (0..rows * cols).into_par_iter().try_for_each(|i| {
                let (col, row) = (i % cols, i / cols);
                let tile = self.tile(level, col, row)?;
                let path = level_dir.join(format!("{col}_{row}.jpeg"));
                std::fs::write(&path, &tile.jpeg).map_err(write_err(&path))?;
                if tile.passthrough {
                    passthrough.fetch_add(1, Ordering::Relaxed);
                }
                bytes.fetch_add(tile.jpeg.len() as u64, Ordering::Relaxed);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                Ok::<_, SlideError>(())
            })?;
        }
        // The descriptor goes last: its presence means the pyramid is complete.
        let dzi = dir.join(format!("{name}.dzi"));
        std::fs::write(&dzi, self.dzi()).map_err(write_err(&dzi))?;
        Ok(PyramidStats {
            tiles: done.into_inner(),
            passthrough: passthrough.into_inner(),
            bytes: bytes.into_inner(),
        })
    }
}
