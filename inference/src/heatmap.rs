//! What a model saw where: the per-patch scores of a slide as a grid of cells ([`ScoreMap`]),
//! drawn as a heatmap PNG and as transparent, colour-mapped Deep Zoom overlay tiles.
//!
//! Overlay tiles take the slide's own [`DeepZoomGeometry`] (levels, tile size, overlap), and
//! every output pixel looks up the cell under its centre in level-0 coordinates, so an overlay
//! tile covers exactly the slide tile of the same address at every level. Cells without a
//! score (glass, ink, too little tissue) stay fully transparent; the viewer sets the opacity.

use std::io::Cursor;

use image::{ImageFormat, Rgba, RgbaImage};
use pathfed_slide::deepzoom::DeepZoomGeometry;
use serde::{Deserialize, Serialize};

use crate::error::{InferError, InferResult};

/// The scores of a slide's patches on its patch grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreMap {
    /// Level-0 width of the slide.
    pub width: u64,
    /// Level-0 height of the slide.
    pub height: u64,
    /// Level-0 size of one cell, a patch's footprint (x, y).
    pub cell: (u64, u64),
    /// Cells across.
    pub cols: u64,
    /// Cells down.
    pub rows: u64,
    /// Scored cells: column, row and score (0–1).
    pub cells: Vec<(u32, u32, f32)>,
}

/// Side of the heatmap PNG's longer edge is at most this (one cell is at least one pixel).
const HEATMAP_SIDE: u64 = 1024;

impl ScoreMap {
    /// Scores row by row, `NaN` where a cell has none.
    pub fn dense(&self) -> Vec<f32> {
        let mut values = vec![f32::NAN; (self.cols * self.rows) as usize];
        for &(col, row, score) in &self.cells {
            let (col, row) = (u64::from(col), u64::from(row));
            if col < self.cols && row < self.rows {
                values[(row * self.cols + col) as usize] = score;
            }
        }
        values
    }

    /// The score of the cell under level-0 point (`x`, `y`), if it has one.
    pub fn score_at(&self, dense: &[f32], x: f64, y: f64) -> Option<f32> {
        if x < 0.0 || y < 0.0 {
            return None;
        }
        let col = (x / self.cell.0 as f64) as u64;
        let row = (y / self.cell.1 as f64) as u64;
        if col >= self.cols || row >= self.rows {
            return None;
        }
        dense
            .get((row * self.cols + col) as usize)
            .copied()
            .filter(|v| !v.is_nan())
    }
}

/// The colour of a score: the Turbo colour map, dark blue (0) through blue, green and yellow
/// to red (1).
pub fn colour(score: f32) -> Rgba<u8> {
    let c = colorous::TURBO.eval_continuous(f64::from(score.clamp(0.0, 1.0)));
    Rgba([c.r, c.g, c.b, 255])
}

fn png(image: &RgbaImage) -> InferResult<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .map_err(|e| InferError::Invalid(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

/// The whole map as a PNG: each cell a square of pixels (the longer side up to about
/// 1024 px), transparent where there is no score.
pub fn heatmap_png(map: &ScoreMap) -> InferResult<Vec<u8>> {
    let scale = (HEATMAP_SIDE / map.cols.max(map.rows).max(1)).max(1);
    let (w, h) = ((map.cols * scale) as u32, (map.rows * scale) as u32);
    let dense = map.dense();
    let image = RgbaImage::from_fn(w.max(1), h.max(1), |x, y| {
        let index = (u64::from(y) / scale) * map.cols + u64::from(x) / scale;
        match dense.get(index as usize) {
            Some(v) if !v.is_nan() => colour(*v),
            _ => Rgba([0, 0, 0, 0]),
        }
    });
    png(&image)
}

/// The overlay tile at (`level`, `col`, `row`) of the slide's Deep Zoom `geometry`, as a PNG
/// of exactly that tile's size. `dense` is [`ScoreMap::dense`] of `map`.
pub fn overlay_tile(
    map: &ScoreMap,
    dense: &[f32],
    geometry: &DeepZoomGeometry,
    level: usize,
    col: u64,
    row: u64,
) -> InferResult<Vec<u8>> {
    let (x0, y0, x1, y1) = geometry.tile_rect(level, col, row)?;
    let scale = geometry.level_scale(level);
    let (w, h) = ((x1 - x0) as u32, (y1 - y0) as u32);
    let image = RgbaImage::from_fn(w, h, |i, j| {
        let x = (x0 as f64 + f64::from(i) + 0.5) * scale;
        let y = (y0 as f64 + f64::from(j) + 0.5) * scale;
        map.score_at(dense, x, y).map_or(Rgba([0, 0, 0, 0]), colour)
    });
    png(&image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pathfed_slide::deepzoom::DeepZoomOptions;

    /// A 1000 × 600 slide with 100 px cells; one scored cell at column 3, row 2.
    fn one_cell() -> ScoreMap {
        ScoreMap {
            width: 1000,
            height: 600,
            cell: (100, 100),
            cols: 10,
            rows: 6,
            cells: vec![(3, 2, 0.9)],
        }
    }

    fn decode(bytes: &[u8]) -> RgbaImage {
        image::load_from_memory_with_format(bytes, ImageFormat::Png)
            .map(|i| i.to_rgba8())
            .unwrap_or_default()
    }

    #[test]
    fn overlay_tiles_have_the_slide_tiles_size_and_colour_only_the_scored_cell() {
        let map = one_cell();
        let dense = map.dense();
        let options = DeepZoomOptions {
            tile_size: 128,
            overlap: 1,
            jpeg_quality: 80,
        };
        let geometry = DeepZoomGeometry::new(1000, 600, options).unwrap_or_else(|e| panic!("{e}"));
        for level in 0..geometry.level_count() {
            let (cols, rows) = geometry.level_tiles(level).unwrap_or((0, 0));
            let scale = geometry.level_scale(level);
            for row in 0..rows {
                for col in 0..cols {
                    let (x0, y0, x1, y1) = geometry.tile_rect(level, col, row).unwrap_or_default();
                    let tile = decode(
                        &overlay_tile(&map, &dense, &geometry, level, col, row).unwrap_or_default(),
                    );
                    assert_eq!(
                        tile.dimensions(),
                        ((x1 - x0) as u32, (y1 - y0) as u32),
                        "level {level} tile ({col}, {row})"
                    );
                    for (i, j, px) in tile.enumerate_pixels() {
                        let x = (x0 as f64 + f64::from(i) + 0.5) * scale;
                        let y = (y0 as f64 + f64::from(j) + 0.5) * scale;
                        let inside = (300.0..400.0).contains(&x) && (200.0..300.0).contains(&y);
                        assert_eq!(px[3] == 255, inside, "level {level} at ({x}, {y})");
                    }
                }
            }
        }
        // At full resolution the cell is exactly 100 × 100 pixels, wherever the tiles cut it.
        let top = geometry.level_count() - 1;
        let (cols, rows) = geometry.level_tiles(top).unwrap_or((0, 0));
        let mut coloured = 0;
        for row in 0..rows {
            for col in 0..cols {
                let (x0, y0, ..) = geometry.tile_rect(top, col, row).unwrap_or_default();
                let tile = decode(
                    &overlay_tile(&map, &dense, &geometry, top, col, row).unwrap_or_default(),
                );
                // Overlap pixels are counted once, by the tile that owns them.
                coloured += tile
                    .enumerate_pixels()
                    .filter(|(i, j, p)| {
                        let (x, y) = (x0 + u64::from(*i), y0 + u64::from(*j));
                        p[3] == 255 && x / 128 == col && y / 128 == row
                    })
                    .count();
            }
        }
        assert_eq!(coloured, 100 * 100);
        assert_eq!(colour(0.9), tile_colour(&map, &dense, &geometry));
    }

    fn tile_colour(map: &ScoreMap, dense: &[f32], geometry: &DeepZoomGeometry) -> Rgba<u8> {
        let top = geometry.level_count() - 1;
        let tile = decode(&overlay_tile(map, dense, geometry, top, 2, 1).unwrap_or_default());
        // Level-0 pixel (350, 250) is (350 - 256 + 1, 250 - 128 + 1) in tile (2, 1).
        *tile.get_pixel(95, 123)
    }

    #[test]
    fn heatmap_has_one_square_per_cell() {
        let map = one_cell();
        let image = decode(&heatmap_png(&map).unwrap_or_default());
        assert_eq!(image.dimensions(), (1020, 612));
        assert_eq!(image.get_pixel(3 * 102 + 50, 2 * 102 + 50), &colour(0.9));
        assert_eq!(image.get_pixel(50, 50)[3], 0);
        let (low, high) = (colour(0.15), colour(0.9));
        assert!(low[2] > 2 * low[0], "low scores are blue: {low:?}");
        assert!(high[0] > 2 * high[2], "high scores are red: {high:?}");
    }
}
