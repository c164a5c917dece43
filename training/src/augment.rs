//! Training-time augmentation of RGB patches: flips and 90° rotations (tissue has no up), and
//! stain variation: brightness/contrast/saturation jitter and HED jitter (colour deconvolution
//! into haematoxylin, eosin and DAB optical densities, each scaled and shifted, then back).
//! Every draw comes from the caller's RNG, so a seeded run sees the same augmentations.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How strongly to augment; `none()` turns everything off (evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Random horizontal/vertical flips and 90° rotations.
    pub geometric: bool,
    /// Largest relative change of brightness, contrast and saturation (0.1 = ±10 %).
    pub colour: f32,
    /// Largest scale change (±) and shift (±, in optical density) per HED channel.
    pub hed: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            geometric: true,
            colour: 0.1,
            hed: 0.03,
        }
    }
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Self {
            geometric: false,
            colour: 0.0,
            hed: 0.0,
        }
    }

    /// Augments a `side`×`side` interleaved RGB image with values in 0–1, in place.
    pub fn apply(&self, rgb: &mut Vec<f32>, side: usize, rng: &mut impl Rng) {
        if self.geometric {
            let turns = rng.random_range(0..4u8);
            let flip = rng.random_bool(0.5);
            if turns != 0 || flip {
                *rgb = rotate_flip(rgb, side, turns, flip);
            }
        }
        if self.hed > 0.0 {
            let mut jitter = [(1.0f32, 0.0f32); 3];
            for j in &mut jitter {
                *j = (
                    1.0 + rng.random_range(-self.hed..=self.hed),
                    rng.random_range(-self.hed..=self.hed),
                );
            }
            hed_jitter(rgb, jitter);
        }
        if self.colour > 0.0 {
            let c = self.colour;
            let (brightness, contrast, saturation) = (
                1.0 + rng.random_range(-c..=c),
                1.0 + rng.random_range(-c..=c),
                1.0 + rng.random_range(-c..=c),
            );
            colour_jitter(rgb, brightness, contrast, saturation);
        }
    }
}

/// Rotates by `turns` × 90° clockwise, then mirrors left–right if `flip`.
pub fn rotate_flip(rgb: &[f32], side: usize, turns: u8, flip: bool) -> Vec<f32> {
    let mut out = vec![0.0; rgb.len()];
    for y in 0..side {
        for x in 0..side {
            let (mut sx, mut sy) = (x, y);
            if flip {
                sx = side - 1 - sx;
            }
            // Output (x, y) of a clockwise turn comes from input (y, side-1-x).
            for _ in 0..turns % 4 {
                (sx, sy) = (sy, side - 1 - sx);
            }
            let (d, s) = ((y * side + x) * 3, (sy * side + sx) * 3);
            out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    out
}

/// Brightness (scale), contrast (around the image mean) and saturation (around grey).
fn colour_jitter(rgb: &mut [f32], brightness: f32, contrast: f32, saturation: f32) {
    let mean = rgb.iter().sum::<f32>() / rgb.len().max(1) as f32;
    for px in rgb.chunks_exact_mut(3) {
        let grey = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
        for v in px.iter_mut() {
            let s = grey + (*v - grey) * saturation;
            let c = mean + (s - mean) * contrast;
            *v = (c * brightness).clamp(0.0, 1.0);
        }
    }
}

/// Ruifrok & Johnston's stain vectors (rows: haematoxylin, eosin, DAB) in optical density.
const RGB_FROM_HED: [[f32; 3]; 3] = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]];

fn invert(m: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    [
        [
            c(1, 1, 2, 2) / det,
            -c(0, 1, 2, 2) / det,
            c(0, 1, 1, 2) / det,
        ],
        [
            -c(1, 0, 2, 2) / det,
            c(0, 0, 2, 2) / det,
            -c(0, 0, 1, 2) / det,
        ],
        [
            c(1, 0, 2, 1) / det,
            -c(0, 0, 2, 1) / det,
            c(0, 0, 1, 1) / det,
        ],
    ]
}

/// Scales and shifts each stain's optical density: `jitter[k] = (scale, shift)`.
pub fn hed_jitter(rgb: &mut [f32], jitter: [(f32, f32); 3]) {
    let to_hed = invert(RGB_FROM_HED);
    const FLOOR: f32 = 1e-6;
    for px in rgb.chunks_exact_mut(3) {
        let od = [0, 1, 2].map(|c| -(px[c].max(FLOOR)).ln());
        let mut hed = [0.0f32; 3];
        for (k, h) in hed.iter_mut().enumerate() {
            *h = (0..3).map(|c| od[c] * to_hed[c][k]).sum::<f32>();
            *h = *h * jitter[k].0 + jitter[k].1;
        }
        for (c, v) in px.iter_mut().enumerate() {
            let od: f32 = (0..3).map(|k| hed[k] * RGB_FROM_HED[k][c]).sum();
            *v = (-od).exp().clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    /// A 3×3 image whose pixel (x, y) holds (x, y, 0) scaled.
    fn coords() -> Vec<f32> {
        (0..3)
            .flat_map(|y| (0..3).flat_map(move |x| [x as f32 / 10.0, y as f32 / 10.0, 0.0]))
            .collect()
    }

    fn at(rgb: &[f32], x: usize, y: usize) -> (f32, f32) {
        let i = (y * 3 + x) * 3;
        (rgb[i], rgb[i + 1])
    }

    #[test]
    fn quarter_turn_moves_the_top_left_corner_to_the_top_right() {
        let out = rotate_flip(&coords(), 3, 1, false);
        assert_eq!(at(&out, 2, 0), (0.0, 0.0));
        assert_eq!(
            at(&out, 0, 0),
            (0.0, 0.2),
            "bottom-left comes to the top-left"
        );
        let four = (0..4).fold(coords(), |img, _| rotate_flip(&img, 3, 1, false));
        assert_eq!(four, coords());
        let mirrored = rotate_flip(&coords(), 3, 0, true);
        assert_eq!(at(&mirrored, 0, 1), (0.2, 0.1));
    }

    #[test]
    fn hed_identity_keeps_colours_and_jitter_changes_them_boundedly() {
        let pink: Vec<f32> = [0.85f32, 0.45, 0.65].repeat(4);
        let mut same = pink.clone();
        hed_jitter(&mut same, [(1.0, 0.0); 3]);
        for (a, b) in same.iter().zip(&pink) {
            assert!((a - b).abs() < 1e-4, "{same:?}");
        }
        let mut more_h = pink.clone();
        hed_jitter(&mut more_h, [(1.3, 0.05), (1.0, 0.0), (1.0, 0.0)]);
        assert!(
            more_h[0] < pink[0],
            "more haematoxylin darkens red: {more_h:?}"
        );
    }

    #[test]
    fn seeded_augmentation_is_reproducible_and_stays_in_range() {
        let img: Vec<f32> = (0..16 * 16 * 3).map(|i| (i % 97) as f32 / 97.0).collect();
        let run = |seed| {
            let mut rgb = img.clone();
            Augment::default().apply(&mut rgb, 16, &mut StdRng::seed_from_u64(seed));
            rgb
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
        assert!(run(5).iter().all(|v| (0.0..=1.0).contains(v)));
        let mut untouched = img.clone();
        Augment::none().apply(&mut untouched, 16, &mut StdRng::seed_from_u64(1));
        assert_eq!(untouched, img);
    }
}
