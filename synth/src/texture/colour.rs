//! Colour: stain amounts to RGB by Beer–Lambert through a precomputed table, bare glass, and
//! the per-pixel grain every pixel gets.

use super::noise::{fast_min, lattice_hash};

/// Ink buffer units per unit of hematoxylin.
pub(super) const INK_SCALE: f32 = 180.0;
/// Stain table resolution: steps per unit of stain, and levels of each stain.
const STAIN_STEPS: f32 = 64.0;
const EOSIN_LEVELS: usize = 160;
const HEMATOXYLIN_LEVELS: usize = 128;
/// Optical densities (log10 attenuation, R G B) of one unit of each stain, and of bare glass.
const HEMATOXYLIN_OD: [f64; 3] = [0.56, 0.80, 0.33];
const EOSIN_OD: [f64; 3] = [0.054, 0.23, 0.139];
const GLASS_OD: [f64; 3] = [0.017, 0.021, 0.015];

/// Stain amounts of a pixel, before nuclei.
#[derive(Clone, Copy)]
pub(super) struct Stain {
    pub(super) eosin: f32,
    pub(super) hematoxylin: f32,
}

/// Bare glass: near white with a little grain, as real scans.
pub(super) fn glass(speck: Speck) -> [u8; 3] {
    let base = [245, 244, 246];
    std::array::from_fn(|c| (base[c] + i32::from(speck.rgb[c] >> 1)) as u8)
}

/// Per-pixel randomness: colour offsets (shared luminance plus a little chroma) and chromatin.
#[derive(Clone, Copy, Default)]
pub(super) struct Speck {
    /// -7..=7 per channel.
    rgb: [i8; 3],
    /// Scales nuclear stain from 0.75 (0) to 1.25 (255).
    chromatin: u8,
}

/// Per-pixel randomness. Each row reads a randomly shifted window of one random sequence: a load
/// per pixel instead of a hash, with no visible pattern.
pub(super) struct Grain {
    seed: u32,
    specks: Box<[Speck; GRAIN_LEN]>,
}

/// Length of the `Grain` sequence, a power of two so that wrapping is a mask.
const GRAIN_LEN: usize = 4096;

impl Grain {
    pub(super) fn new(seed: u32) -> Self {
        let mut specks = Box::new([Speck::default(); GRAIN_LEN]);
        for (i, speck) in specks.iter_mut().enumerate() {
            let bits = lattice_hash(seed, i as u32, u32::MAX);
            let lum = ((bits & 0xff) as i32 - 128) >> 5; // -4..=3
            *speck = Speck {
                rgb: std::array::from_fn(|c| (lum + ((bits >> (8 + 4 * c)) & 7) as i32 - 3) as i8),
                chromatin: (bits >> 24) as u8,
            };
        }
        Self { seed, specks }
    }

    /// The window offset of row `y`.
    pub(super) fn row(&self, y: u64) -> usize {
        lattice_hash(self.seed, y as u32, (y >> 32) as u32) as usize
    }

    /// The speck of pixel `x` in the row with offset `row`.
    pub(super) fn at(&self, row: usize, x: u64) -> Speck {
        self.specks[row.wrapping_add(x as usize) & (GRAIN_LEN - 1)]
    }
}

/// RGB of every quantised (hematoxylin, eosin) pair over glass, by Beer–Lambert.
pub(super) struct Palette {
    rgb: Vec<[u8; 3]>,
}

impl Palette {
    pub(super) fn new() -> Self {
        let rgb = (0..HEMATOXYLIN_LEVELS * EOSIN_LEVELS)
            .map(|i| {
                let hematoxylin = (i / EOSIN_LEVELS) as f64 / f64::from(STAIN_STEPS);
                let eosin = (i % EOSIN_LEVELS) as f64 / f64::from(STAIN_STEPS);
                std::array::from_fn(|c| {
                    let od = GLASS_OD[c] + eosin * EOSIN_OD[c] + hematoxylin * HEMATOXYLIN_OD[c];
                    // The margin lets grain offsets of up to ±7 skip clamping.
                    (255.0 * 10f64.powf(-od)).round().clamp(8.0, 247.0) as u8
                })
            })
            .collect();
        Self { rgb }
    }

    /// Colour of `stain` plus nuclear `ink`, with per-pixel grain from `speck`.
    pub(super) fn shade(&self, stain: Stain, ink: u8, speck: Speck) -> [u8; 3] {
        let ink = f32::from(ink) * (1.0 / INK_SCALE);
        // Chromatin is granular: modulate nuclear stain per pixel.
        let chromatin = 0.75 + f32::from(speck.chromatin) * (0.5 / 255.0);
        let hematoxylin = stain.hematoxylin + ink * chromatin;
        let eosin = stain.eosin * (1.0 - 0.5 * fast_min(ink, 1.0));
        let level = |amount: f32, levels: usize| {
            ((amount * STAIN_STEPS) as i32).clamp(0, levels as i32 - 1) as usize
        };
        let index =
            level(hematoxylin, HEMATOXYLIN_LEVELS) * EOSIN_LEVELS + level(eosin, EOSIN_LEVELS);
        let base = self.rgb.get(index).copied().unwrap_or([128; 3]);
        std::array::from_fn(|c| (i32::from(base[c]) + i32::from(speck.rgb[c])) as u8)
    }
}
