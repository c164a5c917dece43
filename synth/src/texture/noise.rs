//! Hashing and noise: the salts that keep every random stream apart, integer hashes, value
//! noise (per pixel, cached along block rows, or looked up in a periodic table), fractal sums
//! and a small deterministic generator.

// One salt per random stream, so that no two streams repeat one another.
pub(super) const SALT_FIBRE_ANGLE: u64 = 0x6A09_E667_F3BC_C908;
pub(super) const SALT_BLOBS: u64 = 0xBB67_AE85_84CA_A73B;
pub(super) const SALT_REGIONS: u64 = 0x3C6E_F372_FE94_F82B;
pub(super) const SALT_DENSE: u64 = 0xA54F_F53A_5F1D_36F1;
pub(super) const SALT_STROMA: u64 = 0x510E_527F_ADE6_82D1;
pub(super) const SALT_FAT: u64 = 0x9B05_688C_2B3E_6C1F;
pub(super) const SALT_FAT_NUCLEUS: u64 = 0x1F83_D9AB_FB41_BD6B;
pub(super) const SALT_GRAIN: u32 = 0x5BE0_CD19;
pub(super) const SALT_MOTTLE: u32 = 0x428A_2F98;
pub(super) const SALT_BLOTCH: u32 = 0xAB1C_5ED5;
pub(super) const SALT_FIBRE: u32 = 0x7137_4491;
pub(super) const SALT_WARP: u32 = 0xE9B5_DBA5;
pub(super) const SALT_EDGE: u32 = 0x3956_C25B;
pub(super) const SALT_EDGE_FINE: u32 = 0x59F1_11F1;
pub(super) const SALT_REGION_EDGE: u32 = 0x923F_82A4;

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a seed and two integers.
pub(super) fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    mix64(seed ^ mix64(a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b))
}

/// Maps a hash to [0, 1).
pub(super) fn unit64(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Maps the high 24 bits of `h` to [0, 1).
fn unit32(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Hash of a 2-D lattice point (lowbias32 finaliser): cheap, and random enough for texture.
#[inline]
pub(super) fn lattice_hash(seed: u32, x: u32, y: u32) -> u32 {
    let mut h = seed ^ x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7FEB_352D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^ (h >> 16)
}

/// Smooth value noise in [0, 1) with unit lattice spacing, for non-negative `x`, `y`.
#[inline]
pub(super) fn value_noise(seed: u32, x: f64, y: f64) -> f32 {
    // Truncation is floor for non-negative values (and saturates, never panics, otherwise).
    let (ix, iy) = (x as u32, y as u32);
    let sx = smoothstep((x - f64::from(ix)) as f32);
    let sy = smoothstep((y - f64::from(iy)) as f32);
    let corner =
        |dx: u32, dy: u32| unit32(lattice_hash(seed, ix.wrapping_add(dx), iy.wrapping_add(dy)));
    // Vertical first, the same order as `NoiseRow`, so both give identical values.
    let left = corner(0, 0) + sy * (corner(0, 1) - corner(0, 0));
    let right = corner(1, 0) + sy * (corner(1, 1) - corner(1, 0));
    left + sx * (right - left)
}

/// Minimum as a single instruction (`f32::min` adds NaN handling we do not need).
#[inline]
pub(super) fn fast_min(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// Cubic ease curve: value noise interpolated with it has no creases at lattice lines.
#[inline]
fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Fractal sum of `octaves` value noises, normalised to [0, 1).
pub(super) fn fbm(seed: u32, x: f64, y: f64, octaves: u32) -> f32 {
    let (mut sum, mut total, mut amplitude, mut frequency) = (0.0, 0.0, 1.0, 1.0);
    for octave in 0..octaves {
        sum += amplitude * value_noise(seed.wrapping_add(octave), x * frequency, y * frequency);
        total += amplitude;
        amplitude *= 0.5;
        frequency *= 2.0;
    }
    sum / total
}

/// A small deterministic generator (SplitMix64), for per-field and per-cell random choices.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    pub(super) fn unit(&mut self) -> f64 {
        unit64(self.next())
    }

    pub(super) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// Fraction bits of fixed-point fibre coordinates.
pub(super) const FIXED: u32 = 16;

/// Axis-aligned value noise with lattice spacing `1 << shift` pixels, evaluated along block rows:
/// lattice values are interpolated vertically once per row, so a pixel only interpolates
/// horizontally. `at` equals `value_noise(seed, x / 2^shift, y / 2^shift)` exactly.
#[derive(Default)]
pub(super) struct NoiseRow {
    shift: u32,
    /// Lattice column of the block's first pixel.
    first: u64,
    /// Per block column: lattice column offset and horizontal weight.
    columns: Vec<(usize, f32)>,
    /// Vertically interpolated lattice values of the current row.
    values: Vec<f32>,
}

impl NoiseRow {
    /// Sets up the columns `x..x + w` of a block.
    pub(super) fn prepare(&mut self, shift: u32, x: u64, w: usize) {
        let mask = (1u64 << shift) - 1;
        let scale = 1.0 / (1u64 << shift) as f32;
        self.shift = shift;
        self.first = x >> shift;
        self.columns.clear();
        self.columns.extend((0..w as u64).map(|col| {
            let x = x.saturating_add(col);
            (
                ((x >> shift) - self.first) as usize,
                smoothstep((x & mask) as f32 * scale),
            )
        }));
    }

    /// Caches row `y` of the noise for the prepared columns.
    pub(super) fn fill(&mut self, seed: u32, y: u64) {
        let iy = (y >> self.shift) as u32;
        let sy = smoothstep((y & ((1u64 << self.shift) - 1)) as f32 / (1u64 << self.shift) as f32);
        let count = self.columns.last().map_or(0, |&(k, _)| k + 2);
        self.values.clear();
        self.values.extend((0..count as u32).map(|k| {
            let ix = (self.first as u32).wrapping_add(k);
            let top = unit32(lattice_hash(seed, ix, iy));
            let bottom = unit32(lattice_hash(seed, ix, iy.wrapping_add(1)));
            top + sy * (bottom - top)
        }));
    }

    /// Noise at block column `col` of the cached row.
    pub(super) fn at(&self, col: usize) -> f32 {
        let (k, sx) = self.columns.get(col).copied().unwrap_or((0, 0.0));
        match self.values.get(k..k + 2) {
            Some(&[left, right]) => left + sx * (right - left),
            _ => 0.5,
        }
    }
}

/// A periodic tile of random lattice values: value noise by lookup instead of hashing, for the
/// rotated fibre noise that cannot be cached per row. The period (256 lattice units, over a
/// thousand pixels) hides under the warp; bytes keep the table in the fastest cache.
pub(super) struct NoiseTable {
    values: Box<[u8; NOISE_TABLE_SIZE * NOISE_TABLE_SIZE]>,
}

/// Edge of `NoiseTable`, a power of two so that wrapping is a mask.
const NOISE_TABLE_SIZE: usize = 256;

impl NoiseTable {
    pub(super) fn new(seed: u32) -> Self {
        let mut values = Box::new([0u8; NOISE_TABLE_SIZE * NOISE_TABLE_SIZE]);
        for (i, value) in values.iter_mut().enumerate() {
            let (x, y) = (i % NOISE_TABLE_SIZE, i / NOISE_TABLE_SIZE);
            *value = (lattice_hash(seed, x as u32, y as u32) >> 24) as u8;
        }
        Self { values }
    }

    /// Smooth noise in [0, 1] at fixed-point lattice coordinates (`FIXED` fraction bits).
    #[inline]
    pub(super) fn sample(&self, x: i64, y: i64) -> f32 {
        let mask = NOISE_TABLE_SIZE - 1;
        // Arithmetic shifts floor, and masking wraps negative cells into the table.
        let (ix, iy) = ((x >> FIXED) as usize, (y >> FIXED) as usize);
        let fraction =
            |t: i64| smoothstep((t & ((1 << FIXED) - 1)) as f32 * (1.0 / (1u32 << FIXED) as f32));
        let (sx, sy) = (fraction(x), fraction(y));
        let (x0, x1) = (ix & mask, ix.wrapping_add(1) & mask);
        let (row0, row1) = (
            (iy & mask) * NOISE_TABLE_SIZE,
            (iy.wrapping_add(1) & mask) * NOISE_TABLE_SIZE,
        );
        let value = |i: usize| f32::from(self.values[i]);
        let top = value(row0 + x0) + sx * (value(row0 + x1) - value(row0 + x0));
        let bottom = value(row1 + x0) + sx * (value(row1 + x1) - value(row1 + x0));
        (top + sy * (bottom - top)) * (1.0 / 255.0)
    }
}
