//! Thumbnails of a requested size, read from the best pyramid level in bounded blocks so that
//! even a single-level gigapixel slide never needs the whole level in memory.

use image::RgbImage;
use rayon::prelude::*;

use crate::error::Result;
use crate::reader::SlideReader;
use crate::resize::{Rect, read_scaled};

/// Source pixels one output block may read, per axis.
const MAX_BLOCK_SOURCE_SIDE: f64 = 4096.0;

/// Renders the whole slide to fit within `max_side × max_side`, keeping its aspect ratio.
pub fn thumbnail(slide: &dyn SlideReader, max_side: u32) -> Result<RgbImage> {
    let properties = slide.properties();
    let (w0, h0) = properties.dimensions();
    let max_side = u64::from(max_side.max(1));
    let scale = (max_side as f64 / w0.max(h0) as f64).min(1.0);
    let out_w = ((w0 as f64 * scale).round() as u32).max(1);
    let out_h = ((h0 as f64 * scale).round() as u32).max(1);
    let downsample = w0 as f64 / f64::from(out_w);
    let level = properties.best_level_for_downsample(downsample);
    let info = &properties.levels[level];
    // Output pixels → level pixels, per axis.
    let fx = info.width as f64 / f64::from(out_w);
    let fy = info.height as f64 / f64::from(out_h);
    let block = ((MAX_BLOCK_SOURCE_SIDE / fx.max(fy)).floor() as u32).clamp(16, 1024);
    let blocks: Vec<(u32, u32)> = (0..out_h.div_ceil(block))
        .flat_map(|by| (0..out_w.div_ceil(block)).map(move |bx| (bx * block, by * block)))
        .collect();
    let rendered = blocks
        .par_iter()
        .map(|&(x, y)| {
            let (w, h) = (block.min(out_w - x), block.min(out_h - y));
            let rect = Rect {
                x0: f64::from(x) * fx,
                y0: f64::from(y) * fy,
                x1: f64::from(x + w) * fx,
                y1: f64::from(y + h) * fy,
            };
            read_scaled(slide, level, rect, w, h).map(|img| (x, y, img))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = RgbImage::new(out_w, out_h);
    for (x, y, img) in rendered {
        image::imageops::replace(&mut out, &img, i64::from(x), i64::from(y));
    }
    Ok(out)
}
