//! Composing a region of a level from its decoded tiles, for the TIFF and DICOM readers alike.
//! A region inside the level whose tiles all exist is written row by row into a fresh buffer;
//! only a region that runs past the level or over a missing tile is painted white first (the
//! common aligned read spends no time on a fill it would overwrite).

use std::sync::Arc;

use image::{Rgb, RgbImage};

use crate::error::{Result, SlideError};

/// Where a level's decoded tiles come from.
pub(crate) trait TileSource {
    /// Level width and height in pixels.
    fn size(&self) -> (u64, u64);
    /// Tile width and height in pixels.
    fn tile_size(&self) -> (u64, u64);
    /// Whether a tile is stored at (`col`, `row`); one that is not reads as white.
    fn has_tile(&self, col: u64, row: u64) -> bool;
    /// The stored tile at (`col`, `row`), decoded: `tile_w × tile_h` RGB, row-major.
    fn tile(&self, col: u64, row: u64) -> Result<Arc<Vec<u8>>>;
}

/// `w × h` pixels of `source` at (`x`, `y`), refusing regions over `max_pixels`.
pub(crate) fn compose(
    source: &impl TileSource,
    x: u64,
    y: u64,
    w: u32,
    h: u32,
    max_pixels: u64,
) -> Result<RgbImage> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(SlideError::LimitExceeded {
            what: "region pixel count",
            value: pixels,
            limit: max_pixels,
        });
    }
    let (width, height) = source.size();
    let white = || RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    if w == 0 || h == 0 || x >= width || y >= height {
        return Ok(white());
    }
    let (tw, th) = source.tile_size();
    let x_end = x.saturating_add(u64::from(w)).min(width);
    let y_end = y.saturating_add(u64::from(h)).min(height);
    let cols = x / tw..=(x_end - 1) / tw;
    let rows = y / th..=(y_end - 1) / th;
    let inside = x_end - x == u64::from(w) && y_end - y == u64::from(h);
    let covered = inside
        && rows
            .clone()
            .all(|row| cols.clone().all(|col| source.has_tile(col, row)));

    if covered {
        let mut out = Vec::with_capacity(pixels as usize * 3);
        for row in rows {
            // One row of tiles at a time: memory stays at one band, whatever the region.
            let band = cols
                .clone()
                .map(|col| whole_tile(source, col, row).map(|t| (col, t)))
                .collect::<Result<Vec<_>>>()?;
            let ty0 = row * th;
            for py in y.max(ty0)..y_end.min(ty0 + th) {
                for (col, tile) in &band {
                    let tx0 = col * tw;
                    let (ix0, ix1) = (x.max(tx0), x_end.min(tx0 + tw));
                    let src = ((py - ty0) * tw + (ix0 - tx0)) as usize * 3;
                    out.extend_from_slice(&tile[src..src + (ix1 - ix0) as usize * 3]);
                }
            }
        }
        let len = out.len();
        return RgbImage::from_raw(w, h, out).ok_or_else(|| {
            SlideError::Truncated(format!("a {w}×{h} region composed to {len} bytes"))
        });
    }

    let mut out = white();
    let stride = w as usize * 3;
    let buffer: &mut [u8] = &mut out;
    for row in rows {
        for col in cols.clone() {
            if !source.has_tile(col, row) {
                continue;
            }
            let tile = whole_tile(source, col, row)?;
            // The part of this tile inside the requested rectangle, in level pixels.
            let (tx0, ty0) = (col * tw, row * th);
            let (ix0, ix1) = (x.max(tx0), x_end.min(tx0 + tw));
            let span = (ix1 - ix0) as usize * 3;
            for py in y.max(ty0)..y_end.min(ty0 + th) {
                let src = ((py - ty0) * tw + (ix0 - tx0)) as usize * 3;
                let dst = (py - y) as usize * stride + (ix0 - x) as usize * 3;
                buffer[dst..dst + span].copy_from_slice(&tile[src..src + span]);
            }
        }
    }
    Ok(out)
}

/// The tile at (`col`, `row`), refused unless it holds the whole tile's pixels.
fn whole_tile(source: &impl TileSource, col: u64, row: u64) -> Result<Arc<Vec<u8>>> {
    let tile = source.tile(col, row)?;
    let (tw, th) = source.tile_size();
    let expected = tw * th * 3;
    if tile.len() as u64 != expected {
        return Err(SlideError::Truncated(format!(
            "tile ({col}, {row}) decoded to {} bytes, not the {expected} of {tw}×{th} RGB",
            tile.len()
        )));
    }
    Ok(tile)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 5 × 3 level of 2 × 2 tiles whose pixel (x, y) is (x, y, 7), with tile (1, 0) missing
    /// when `gap` is set.
    struct Gradient {
        gap: bool,
    }

    impl TileSource for Gradient {
        fn size(&self) -> (u64, u64) {
            (5, 3)
        }
        fn tile_size(&self) -> (u64, u64) {
            (2, 2)
        }
        fn has_tile(&self, col: u64, row: u64) -> bool {
            !(self.gap && (col, row) == (1, 0))
        }
        fn tile(&self, col: u64, row: u64) -> Result<Arc<Vec<u8>>> {
            let mut t = Vec::new();
            for dy in 0..2 {
                for dx in 0..2 {
                    t.extend_from_slice(&[(col * 2 + dx) as u8, (row * 2 + dy) as u8, 7]);
                }
            }
            Ok(Arc::new(t))
        }
    }

    fn expected(x: u64, y: u64, w: u32, h: u32, gap: bool) -> RgbImage {
        RgbImage::from_fn(w, h, |i, j| {
            let (px, py) = (x + u64::from(i), y + u64::from(j));
            let missing = gap && (px / 2, py / 2) == (1, 0);
            if px >= 5 || py >= 3 || missing {
                Rgb([255, 255, 255])
            } else {
                Rgb([px as u8, py as u8, 7])
            }
        })
    }

    #[test]
    fn every_region_reads_the_level_and_white_outside_and_over_missing_tiles() {
        for gap in [false, true] {
            let source = Gradient { gap };
            for (x, y, w, h) in [
                (0, 0, 5, 3),
                (1, 1, 3, 2),
                (2, 0, 2, 2),
                (3, 1, 4, 4),
                (0, 2, 1, 1),
                (6, 0, 2, 2),
                (0, 0, 0, 3),
            ] {
                let got = compose(&source, x, y, w, h, 1_000).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(
                    got,
                    expected(x, y, w, h, gap),
                    "({x}, {y}) {w}×{h}, gap {gap}"
                );
            }
        }
        assert!(matches!(
            compose(&Gradient { gap: false }, 0, 0, 40, 30, 1_000),
            Err(SlideError::LimitExceeded { .. })
        ));
    }
}
