//! Stroma: pink collagen fibres (stretched value noise bent by a low-frequency warp) with sparse
//! spindle-shaped nuclei aligned with them.

use super::WARP_SHIFT;
use super::colour::Stain;
use super::noise::{
    FIXED, NoiseTable, SALT_FIBRE, SALT_FIBRE_ANGLE, SALT_STROMA, SALT_WARP, SplitMix, hash3,
    mix64, unit64, value_noise,
};
use super::nucleus::{Nucleus, jittered};

/// Jittered-grid cell size in level-0 pixels (0.5 µm/px).
pub(super) const STROMA_CELL: u64 = 36;
/// Fibre-bending displacement across the fibres, in pixels.
const WARP_AMPLITUDE: f32 = 140.0;

/// Stroma fibres: a slide-wide direction, bent by low-frequency warp across it.
///
/// Per-pixel coordinates are fixed point (`FIXED` fraction bits): integer maths is exact, so a
/// pixel's value cannot depend on the tile, and it avoids float-to-int conversions.
pub(super) struct Fibres {
    cos: f64,
    sin: f64,
    cos_fixed: i64,
    sin_fixed: i64,
    noise: NoiseTable,
}

impl Fibres {
    pub(super) fn new(seed: u64) -> Self {
        let angle = unit64(mix64(seed ^ SALT_FIBRE_ANGLE)) * std::f64::consts::PI;
        let (sin, cos) = angle.sin_cos();
        let one = f64::from(1u32 << FIXED);
        Self {
            cos,
            sin,
            cos_fixed: (cos * one).round() as i64,
            sin_fixed: (sin * one).round() as i64,
            noise: NoiseTable::new(seed as u32 ^ SALT_FIBRE),
        }
    }

    /// Collagen: eosin along wavy fibres, pale gaps between them. `warp` is the warp noise at (x, y).
    pub(super) fn stain(&self, x: u64, y: u64, warp: f32) -> Stain {
        let (x, y) = (x as i64, y as i64);
        let bend = (warp * (WARP_AMPLITUDE * (1u32 << FIXED) as f32)) as i64;
        let along = x
            .wrapping_mul(self.cos_fixed)
            .wrapping_add(y.wrapping_mul(self.sin_fixed));
        let across = y
            .wrapping_mul(self.cos_fixed)
            .wrapping_sub(x.wrapping_mul(self.sin_fixed))
            .wrapping_add(bend);
        // Streaks 64 px long and 4 px apart, plus finer ones 128 by 2 px from elsewhere in the table.
        let coarse = self.noise.sample(along >> 6, across >> 2);
        let fine = self.noise.sample(
            (along >> 7).wrapping_add(101 << FIXED),
            (across >> 1).wrapping_add(57 << FIXED),
        );
        let fibre = 0.6 * coarse + 0.4 * fine;
        // The warp value doubles as a slow variation of collagen density.
        Stain {
            eosin: (0.15 + 1.9 * fibre * fibre) * (0.8 + 0.4 * warp),
            hematoxylin: 0.03,
        }
    }

    /// Spindle-shaped fibroblast nucleus of stroma cell (cx, cy), aligned with the local fibres.
    pub(super) fn nucleus(&self, seed: u64, cx: u64, cy: u64) -> Option<Nucleus> {
        let mut bits = SplitMix(hash3(seed ^ SALT_STROMA, cx, cy));
        if bits.unit() > 0.4 {
            return None;
        }
        let x = jittered(cx, STROMA_CELL, 0.6 * (bits.unit() - 0.5));
        let y = jittered(cy, STROMA_CELL, 0.6 * (bits.unit() - 0.5));
        // Fibres run along level lines of `across`: the nucleus axis is perpendicular to its gradient.
        let across = |x: f64, y: f64| {
            let scale = 1.0 / f64::from(1u32 << WARP_SHIFT);
            let warp = value_noise(seed as u32 ^ SALT_WARP, x * scale, y * scale);
            y * self.cos - x * self.sin + f64::from(warp * WARP_AMPLITUDE)
        };
        let gx = across(x + 1.0, y) - across(x - 1.0, y);
        let gy = across(x, y + 1.0) - across(x, y - 1.0);
        let major = 7.0 + 4.0 * bits.unit();
        let minor = 1.7 + 0.8 * bits.unit();
        let ink = 0.8 + 0.25 * bits.unit();
        Some(Nucleus::new(x, y, (-gy, gx), major, minor, ink))
    }
}
