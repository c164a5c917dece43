//! Nucleus-dense tissue: mottled pink-purple cytoplasm packed with roundish nuclei.

use super::colour::Stain;
use super::noise::{SALT_DENSE, SplitMix, hash3};
use super::nucleus::{Nucleus, jittered};

/// Jittered-grid cell size in level-0 pixels (0.5 µm/px).
pub(super) const DENSE_CELL: u64 = 11;

/// Cytoplasm of densely packed cells: mottled pink-purple, from two noise octaves in [0, 1).
pub(super) fn dense_stain(mottle: f32, blotch: f32) -> Stain {
    let n = 0.6 * mottle + 0.4 * blotch;
    Stain {
        eosin: 0.45 + 0.6 * n,
        hematoxylin: 0.06 + 0.08 * n,
    }
}

/// Roundish nucleus of dense grid cell (cx, cy), if the cell has one.
pub(super) fn dense_nucleus(seed: u64, cx: u64, cy: u64) -> Option<Nucleus> {
    let mut bits = SplitMix(hash3(seed ^ SALT_DENSE, cx, cy));
    if bits.unit() > 0.93 {
        return None;
    }
    let x = jittered(cx, DENSE_CELL, 0.6 * (bits.unit() - 0.5));
    let y = jittered(cy, DENSE_CELL, 0.6 * (bits.unit() - 0.5));
    let major = 3.8 + 2.4 * bits.unit();
    let minor = major * (0.6 + 0.4 * bits.unit());
    let axis = (bits.unit() - 0.5, bits.unit() - 0.5);
    let ink = 0.75 + 0.45 * bits.unit();
    Some(Nucleus::new(x, y, axis, major, minor, ink))
}
