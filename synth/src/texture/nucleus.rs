//! Nuclei: elliptical nuclei splatted onto a block's ink buffer, and the jittered grid (on 1/64
//! px) that places nuclei and fat cells.

use super::Block;
use super::colour::INK_SCALE;

/// An elliptical nucleus as a quadratic form: q(dx, dy) < 1 inside.
pub(super) struct Nucleus {
    x: f64,
    y: f64,
    /// q = a dx² + b dx dy + c dy².
    a: f32,
    b: f32,
    c: f32,
    /// Half-height of the bounding box.
    extent_y: f32,
    /// Roughly pixels per unit of (1 - q) near the edge, for a one-pixel soft edge.
    softness: f32,
    ink: f32,
}

impl Nucleus {
    /// A nucleus centred at (x, y) with major `axis` (any length) and semi-axes `major` >= `minor`.
    pub(super) fn new(x: f64, y: f64, axis: (f64, f64), major: f64, minor: f64, ink: f64) -> Self {
        let length = (axis.0 * axis.0 + axis.1 * axis.1).sqrt();
        let (ux, uy) = if length > 1e-9 {
            (axis.0 / length, axis.1 / length)
        } else {
            (1.0, 0.0)
        };
        let (ia, ib) = (1.0 / (major * major), 1.0 / (minor * minor));
        Self {
            x,
            y,
            a: (ux * ux * ia + uy * uy * ib) as f32,
            b: (2.0 * ux * uy * (ia - ib)) as f32,
            c: (uy * uy * ia + ux * ux * ib) as f32,
            extent_y: (major * major * uy * uy + minor * minor * ux * ux).sqrt() as f32,
            softness: 0.6 * minor as f32,
            ink: ink as f32,
        }
    }

    /// Raises `ink` to this nucleus's darkness on the block pixels of class `id` it covers.
    /// `max` makes the result independent of splat order.
    pub(super) fn splat(&self, id: u8, block: &Block, map: &[u8], ink: &mut [u8]) {
        // Block-relative centre: exact in f32, as centres lie on a 1/64 px grid (see `jittered`).
        let cx = (self.x - block.x as f64) as f32;
        let cy = (self.y - block.y as f64) as f32;
        // Spans are widened by a pixel so rounding cannot drop a covered pixel; extra pixels get q >= 1.
        let Some(rows) = pixel_span(cy - self.extent_y - 1.0, cy + self.extent_y + 1.0, block.h)
        else {
            return;
        };
        for row in rows {
            let dy = row as f32 + 0.5 - cy;
            // Solve q(dx) = 1 for this row: a dx² + (b dy) dx + (c dy² - 1) = 0.
            let (p, r) = (self.b * dy, self.c * dy * dy - 1.0);
            let discriminant = p * p - 4.0 * self.a * r;
            if discriminant < 0.0 {
                continue;
            }
            let root = discriminant.sqrt();
            let (lo, hi) = ((-p - root) / (2.0 * self.a), (-p + root) / (2.0 * self.a));
            let Some(cols) = pixel_span(cx + lo - 1.0, cx + hi + 1.0, block.w) else {
                continue;
            };
            let start = row * block.w;
            for col in cols {
                let i = start + col;
                if map[i] != id {
                    continue;
                }
                let dx = col as f32 + 0.5 - cx;
                let q = self.a * dx * dx + self.b * dx * dy + self.c * dy * dy;
                let alpha = ((1.0 - q) * self.softness).clamp(0.0, 1.0);
                // The rim is a little darker than the centre, as the nuclear membrane.
                let value = (self.ink * (0.8 + 0.3 * q) * alpha * INK_SCALE).min(255.0) as u8;
                ink[i] = ink[i].max(value);
            }
        }
    }
}

/// Indices of the pixels (of `len`) whose centres lie in [lo, hi], or None if there are none.
pub(super) fn pixel_span(lo: f32, hi: f32, len: usize) -> Option<std::ops::Range<usize>> {
    // Pixel k's centre is k + 0.5; casts truncate, which is floor for the non-negative values here.
    let first = (lo - 0.5).max(0.0);
    let first = first as usize + usize::from((first as usize as f32) < first);
    let end = if hi < 0.5 {
        0
    } else {
        ((hi - 0.5) as usize + 1).min(len)
    };
    (first < end).then_some(first..end)
}

/// The centre of grid cell `index` (cells `cell` pixels wide) moved by `jitter` cells, rounded to
/// 1/64 px. On that grid, block-relative f32 coordinates near the block are exact, so pixel values
/// cannot depend on which block computes them.
pub(super) fn jittered(index: u64, cell: u64, jitter: f64) -> f64 {
    let position = (index as f64 + 0.5 + jitter) * cell as f64;
    (position * 64.0).round() / 64.0
}
