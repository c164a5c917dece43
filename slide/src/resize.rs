//! Reading a fractional rectangle of a level and resampling it to a target size, shared by
//! Deep Zoom and thumbnails.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::error::{Result, SlideError};
use crate::reader::SlideReader;

/// A rectangle in a level's pixel coordinates; fractional because pyramid levels and output
/// grids rarely line up exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left edge.
    pub x0: f64,
    /// Top edge.
    pub y0: f64,
    /// Right edge (exclusive).
    pub x1: f64,
    /// Bottom edge (exclusive).
    pub y1: f64,
}

/// Reads `rect` of `level` and resamples it to `out_w × out_h` (antialiased when shrinking).
pub fn read_scaled(
    slide: &dyn SlideReader,
    level: usize,
    rect: Rect,
    out_w: u32,
    out_h: u32,
) -> Result<RgbImage> {
    let info = slide
        .properties()
        .levels
        .get(level)
        .ok_or_else(|| SlideError::OutOfRange(format!("level {level}")))?;
    let x1 = rect.x1.min(info.width as f64);
    let y1 = rect.y1.min(info.height as f64);
    let (ix0, iy0) = (rect.x0.floor().max(0.0), rect.y0.floor().max(0.0));
    let (ix1, iy1) = (x1.ceil(), y1.ceil());
    if ix1 <= ix0 || iy1 <= iy0 || out_w == 0 || out_h == 0 {
        return Ok(RgbImage::from_pixel(
            out_w,
            out_h,
            image::Rgb([255, 255, 255]),
        ));
    }
    let (rw, rh) = ((ix1 - ix0) as u32, (iy1 - iy0) as u32);
    let source = slide.read_region(level, ix0 as u64, iy0 as u64, rw, rh)?;
    let (cw, ch) = (x1 - rect.x0, y1 - rect.y0);
    let exact =
        rect.x0 == ix0 && rect.y0 == iy0 && cw == f64::from(out_w) && ch == f64::from(out_h);
    if exact {
        return Ok(image::imageops::crop_imm(&source, 0, 0, out_w, out_h).to_image());
    }
    resample(
        &source,
        (rect.x0 - ix0, rect.y0 - iy0, cw, ch),
        out_w,
        out_h,
    )
}

/// Resamples the (fractional) crop `(left, top, width, height)` of `source` to `out_w × out_h`.
pub fn resample(
    source: &RgbImage,
    crop: (f64, f64, f64, f64),
    out_w: u32,
    out_h: u32,
) -> Result<RgbImage> {
    let err = |e: &dyn std::fmt::Display| SlideError::Encode(format!("resize: {e}"));
    let src = ImageRef::new(
        source.width(),
        source.height(),
        source.as_raw(),
        PixelType::U8x3,
    )
    .map_err(|e| err(&e))?;
    let mut dst = Image::new(out_w, out_h, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(crop.0, crop.1, crop.2, crop.3);
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| err(&e))?;
    RgbImage::from_raw(out_w, out_h, dst.into_vec())
        .ok_or_else(|| SlideError::Encode("resize produced a short buffer".into()))
}
