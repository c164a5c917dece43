//! Layout: where the tissue is (a few elliptical fragments with noisy outlines) and which class
//! covers it (irregular, area-balanced regions or vertical bands), on a coarse node grid whose
//! cells are tagged when their corners settle the answer.

use super::TissueClass;
use super::noise::{
    SALT_BLOBS, SALT_EDGE, SALT_EDGE_FINE, SALT_REGION_EDGE, SALT_REGIONS, SplitMix, fbm,
    value_noise,
};

/// Cell tag: every pixel of the cell is glass.
pub(super) const CELL_BACKGROUND: u8 = 0;
/// Cell tag: pixels need the per-pixel test.
pub(super) const CELL_MIXED: u8 = u8::MAX;
/// Upper bound on layout cells along the long side of the slide.
const MAX_CELLS: u64 = 512;

/// Coarse node grid of mask values and class scores, with per-cell tags.
pub(super) struct Layout {
    /// Cells are `1 << shift` level-0 pixels square, so a pixel's cell is a shift away.
    pub(super) shift: u32,
    nodes_x: usize,
    nodes_y: usize,
    /// Number of classes (scores per node).
    classes: usize,
    /// Tissue where the interpolated mask plus detail exceeds `threshold`.
    mask: Vec<f32>,
    threshold: f32,
    /// Class scores, `classes` per node; the highest interpolated score plus detail wins.
    scores: Vec<f32>,
    /// Per cell: `CELL_BACKGROUND`, a class id, or `CELL_MIXED`.
    cells: Vec<u8>,
    /// Amplitudes of the level-0 detail noise added to the mask and to each score.
    mask_detail: f32,
    class_detail: f32,
}

impl Layout {
    /// Builds the layout for a slide with `classes` distinct classes covering about `fraction` of it.
    /// With `bands` (the class of each vertical band, left to right) classes are laid out in
    /// columns; without, in irregular regions.
    pub(super) fn build(
        seed: u64,
        width: u64,
        height: u64,
        classes: usize,
        fraction: f64,
        bands: &[usize],
    ) -> Self {
        let long = width.max(height).max(1);
        let mut shift = 0;
        while long >> shift > MAX_CELLS {
            shift += 1;
        }
        let nodes_x = (width.saturating_sub(1) >> shift) as usize + 2;
        let nodes_y = (height.saturating_sub(1) >> shift) as usize + 2;
        // Layout coordinates: pixels divided by the long side, so shapes scale with the slide.
        let scale = (1u64 << shift) as f64 / long as f64;
        let extent = (width as f64 / long as f64, height as f64 / long as f64);
        let node_position = |i: usize| ((i % nodes_x) as f64 * scale, (i / nodes_x) as f64 * scale);
        let count = nodes_x * nodes_y;

        let blobs = Blobs::new(seed, extent, fraction);
        let mask: Vec<f32> = (0..count)
            .map(|i| {
                let (x, y) = node_position(i);
                blobs.value(x, y) as f32
            })
            .collect();
        let threshold = quantile_threshold(&mask, fraction);

        let tissue: Vec<usize> = (0..count).filter(|&i| mask[i] > threshold).collect();
        let sample: Vec<(f64, f64)> = sparse(&tissue, 4096).map(node_position).collect();
        let regions = Regions::new(seed, classes, &sample, extent, fraction);
        // Columns: a class scores minus its distance from the nearest of its bands.
        let band = extent.0 / bands.len().max(1) as f64;
        let score = |c: usize, x: f64, y: f64| {
            if bands.is_empty() {
                return regions.score(c, x, y);
            }
            -bands
                .iter()
                .enumerate()
                .filter(|(_, class)| **class == c)
                .map(|(b, _)| {
                    let (low, high) = (b as f64 * band, (b + 1) as f64 * band);
                    (low - x).max(x - high).max(0.0)
                })
                .fold(f64::INFINITY, f64::min)
        };
        let scores: Vec<f32> = (0..count)
            .flat_map(|i| {
                let (x, y) = node_position(i);
                (0..classes).map(move |c| (x, y, c))
            })
            .map(|(x, y, c)| score(c, x, y) as f32)
            .collect();

        let long = long as f32;
        let mut layout = Self {
            shift,
            nodes_x,
            nodes_y,
            classes,
            mask,
            threshold,
            scores,
            cells: Vec::new(),
            // Edges wander tens of pixels at level 0, whatever the slide size.
            mask_detail: (240.0 / long).min(0.06),
            class_detail: (100.0 / long).min(0.05),
        };
        layout.cells = layout.tag_cells();
        layout
    }

    /// Tags each cell whose four corners settle its pixels' class despite the detail noise.
    fn tag_cells(&self) -> Vec<u8> {
        const EPS: f32 = 1e-4;
        let (cells_x, cells_y) = (self.nodes_x - 1, self.nodes_y - 1);
        let mut tags = Vec::with_capacity(cells_x * cells_y);
        for cy in 0..cells_y {
            for cx in 0..cells_x {
                let corners = [
                    cy * self.nodes_x + cx,
                    cy * self.nodes_x + cx + 1,
                    (cy + 1) * self.nodes_x + cx,
                    (cy + 1) * self.nodes_x + cx + 1,
                ];
                let (low, high) = corners
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &n| {
                        (lo.min(self.mask[n]), hi.max(self.mask[n]))
                    });
                // Bilinear interpolation is a convex combination of the corners: bounds carry over.
                let tag = if high + self.mask_detail < self.threshold - EPS {
                    CELL_BACKGROUND
                } else if low - self.mask_detail > self.threshold + EPS {
                    self.certain_class(&corners, 2.0 * self.class_detail + EPS)
                } else {
                    CELL_MIXED
                };
                tags.push(tag);
            }
        }
        tags
    }

    /// The class id winning by more than `margin` at every corner, or `CELL_MIXED`.
    fn certain_class(&self, corners: &[usize; 4], margin: f32) -> u8 {
        (0..self.classes)
            .find(|&a| {
                (0..self.classes).filter(|&b| b != a).all(|b| {
                    corners.iter().all(|&n| {
                        let s = &self.scores[n * self.classes..(n + 1) * self.classes];
                        s[a] - s[b] > margin
                    })
                })
            })
            .map_or(CELL_MIXED, |a| a as u8 + 1)
    }

    /// The tag of cell (cx, cy); cells outside the grid are glass.
    pub(super) fn cell(&self, cx: usize, cy: usize) -> u8 {
        let columns = self.nodes_x - 1;
        if cx >= columns {
            return CELL_BACKGROUND;
        }
        self.cells
            .get(cy * columns + cx)
            .copied()
            .unwrap_or(CELL_BACKGROUND)
    }

    /// The cell tag of an in-slide pixel.
    pub(super) fn cell_of(&self, x: u64, y: u64) -> u8 {
        self.cell((x >> self.shift) as usize, (y >> self.shift) as usize)
    }

    /// Full per-pixel test for pixels of mixed cells.
    pub(super) fn classify_pixel(&self, seed: u64, x: u64, y: u64) -> u8 {
        let size = (1u64 << self.shift) as f32;
        let (cx, cy) = ((x >> self.shift) as usize, (y >> self.shift) as usize);
        let fx = (x - ((cx as u64) << self.shift)) as f32 / size;
        let fy = (y - ((cy as u64) << self.shift)) as f32 / size;
        let n00 = cy * self.nodes_x + cx;
        let corners = [n00, n00 + 1, n00 + self.nodes_x, n00 + self.nodes_x + 1];
        let weights = [
            (1.0 - fx) * (1.0 - fy),
            fx * (1.0 - fy),
            (1.0 - fx) * fy,
            fx * fy,
        ];
        let interpolate = |values: &[f32], stride: usize, offset: usize| -> f32 {
            corners
                .iter()
                .zip(weights)
                .map(|(&n, w)| values[n * stride + offset] * w)
                .sum()
        };

        // Detail noise is bounded by its amplitude, so it is only evaluated where it could matter.
        let seed = seed as u32;
        let (xf, yf) = (x as f64, y as f64);
        let mut mask = interpolate(&self.mask, 1, 0);
        if (mask - self.threshold).abs() <= self.mask_detail {
            let ragged = 0.67 * value_noise(seed ^ SALT_EDGE, xf / 90.0, yf / 90.0)
                + 0.33 * value_noise(seed ^ SALT_EDGE_FINE, xf / 25.0, yf / 25.0);
            mask += self.mask_detail * (2.0 * ragged - 1.0);
        }
        if mask <= self.threshold {
            return 0;
        }
        let mut scores = [0.0f32; TissueClass::ALL.len()];
        for (c, score) in scores.iter_mut().enumerate().take(self.classes) {
            *score = interpolate(&self.scores, self.classes, c);
        }
        let scores = &mut scores[..self.classes];
        let (best, lead) = leader(scores);
        if lead > 2.0 * self.class_detail {
            return best as u8 + 1;
        }
        for (c, score) in scores.iter_mut().enumerate() {
            let wobble = value_noise(seed ^ SALT_REGION_EDGE ^ c as u32, xf / 120.0, yf / 120.0);
            *score += self.class_detail * (2.0 * wobble - 1.0);
        }
        leader(scores).0 as u8 + 1
    }
}

/// Index of the largest of `values` (the first of equals) and its lead over the runner-up
/// (infinite when alone).
fn leader(values: &[f32]) -> (usize, f32) {
    let best = (0..values.len()).fold(0, |b, i| if values[i] > values[b] { i } else { b });
    let lead = (0..values.len())
        .filter(|&i| i != best)
        .map(|i| values[best] - values[i])
        .fold(f32::INFINITY, f32::min);
    (best, lead)
}

/// The mask level above which about `fraction` of the nodes lie.
fn quantile_threshold(mask: &[f32], fraction: f64) -> f32 {
    if fraction <= 0.0 {
        return f32::INFINITY;
    }
    if fraction >= 1.0 {
        return f32::NEG_INFINITY;
    }
    let mut sorted = mask.to_vec();
    sorted.sort_by(f32::total_cmp);
    let index = ((1.0 - fraction) * sorted.len() as f64) as usize;
    sorted
        .get(index.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// At most about `limit` evenly spaced items of `items`.
fn sparse(items: &[usize], limit: usize) -> impl Iterator<Item = usize> + '_ {
    let step = items.len().div_ceil(limit).max(1);
    items.iter().step_by(step).copied()
}

/// A few elliptical tissue fragments with noisy outlines, in layout coordinates.
struct Blobs {
    seed: u32,
    ellipses: Vec<Ellipse>,
    extent: (f64, f64),
    /// Outline noise frequency, tied to the blob size.
    frequency: f64,
}

/// One fragment: centre, mean radius, unit axis, and inverse semi-axes.
struct Ellipse {
    x: f64,
    y: f64,
    radius: f64,
    axis: (f64, f64),
    inv_a: f64,
    inv_b: f64,
}

impl Blobs {
    /// Two to four fragments whose areas add up to about `fraction` of the slide, spread apart.
    fn new(seed: u64, extent: (f64, f64), fraction: f64) -> Self {
        let mut rng = SplitMix(seed ^ SALT_BLOBS);
        let count = 2 + (rng.next() % 3) as usize;
        let mean_area = (fraction.max(0.05) * extent.0 * extent.1 / count as f64).max(1e-9);
        let mean_radius = (mean_area / std::f64::consts::PI).sqrt();
        let mut ellipses: Vec<Ellipse> = Vec::with_capacity(count);
        for _ in 0..count {
            let radius = mean_radius * rng.range(0.75, 1.25);
            let elongation = rng.range(1.0, 1.8);
            let angle = rng.range(0.0, std::f64::consts::PI);
            // Best of several candidate centres: the one leaving the widest gap to earlier fragments.
            let mut best = (f64::NEG_INFINITY, 0.0, 0.0);
            for _ in 0..16 {
                let x = extent.0 * rng.range(0.2, 0.8);
                let y = extent.1 * rng.range(0.2, 0.8);
                let gap = ellipses
                    .iter()
                    .map(|e| (x - e.x).hypot(y - e.y) - e.radius - radius)
                    .fold(f64::INFINITY, f64::min);
                if gap > best.0 {
                    best = (gap, x, y);
                }
            }
            ellipses.push(Ellipse {
                x: best.1,
                y: best.2,
                radius,
                axis: (angle.cos(), angle.sin()),
                inv_a: 1.0 / (radius * elongation.sqrt()),
                inv_b: elongation.sqrt() / radius,
            });
        }
        Self {
            seed: rng.next() as u32,
            ellipses,
            extent,
            frequency: 1.5 / mean_radius,
        }
    }

    /// Mask value: cone-shaped fragments plus outline noise, pushed down near the slide edges.
    fn value(&self, x: f64, y: f64) -> f64 {
        let cones = self.ellipses.iter().fold(f64::NEG_INFINITY, |best, e| {
            let (dx, dy) = (x - e.x, y - e.y);
            let u = (dx * e.axis.0 + dy * e.axis.1) * e.inv_a;
            let v = (dy * e.axis.0 - dx * e.axis.1) * e.inv_b;
            best.max(1.0 - u.hypot(v))
        });
        let noise = fbm(self.seed, x * self.frequency, y * self.frequency, 4);
        let edge = x.min(self.extent.0 - x).min(y).min(self.extent.1 - y);
        let margin = 0.08 * self.extent.0.min(self.extent.1);
        let border = if edge < margin {
            1.5 * ((margin - edge) / margin).powi(2)
        } else {
            0.0
        };
        cones + 0.7 * (f64::from(noise) - 0.5) - border
    }
}

/// Class regions: each class owns a few seed points; the nearest seed wins, with a noisy,
/// area-balanced boundary.
struct Regions {
    seed: u32,
    classes: usize,
    /// Seed points and their class.
    points: Vec<(f64, f64, usize)>,
    /// Per-class offsets that balance the areas.
    bias: Vec<f64>,
    /// Typical distance between seeds, the scale of boundary noise.
    spacing: f64,
}

impl Regions {
    /// Places `2 * classes` well-spread seeds on the `tissue` sample and balances class areas on it.
    fn new(
        seed: u64,
        classes: usize,
        tissue: &[(f64, f64)],
        extent: (f64, f64),
        fraction: f64,
    ) -> Self {
        let mut rng = SplitMix(seed ^ SALT_REGIONS);
        let wanted = 2 * classes;
        let mut order: Vec<usize> = (0..classes).collect();
        for i in (1..classes).rev() {
            order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        // Farthest-point sampling spreads the seeds; round-robin classes give each several regions.
        let mut points = Vec::with_capacity(wanted);
        let mut nearest = vec![f64::INFINITY; tissue.len()];
        for k in 0..wanted {
            let (x, y) =
                if tissue.is_empty() {
                    (rng.range(0.0, extent.0), rng.range(0.0, extent.1))
                } else if k == 0 {
                    tissue[(rng.next() % tissue.len() as u64) as usize]
                } else {
                    let far = (0..tissue.len()).fold(0, |best, i| {
                        if nearest[i] > nearest[best] { i } else { best }
                    });
                    tissue[far]
                };
            for (d, &(tx, ty)) in nearest.iter_mut().zip(tissue) {
                *d = d.min((tx - x).hypot(ty - y));
            }
            points.push((x, y, order[k % classes]));
        }
        let area = (fraction.max(0.01) * extent.0 * extent.1).max(1e-9);
        let mut regions = Self {
            seed: rng.next() as u32,
            classes,
            points,
            bias: vec![0.0; classes],
            spacing: (area / wanted as f64).sqrt(),
        };
        regions.balance(tissue);
        regions
    }

    /// Nudges the per-class biases until each class wins about the same share of `tissue`.
    fn balance(&mut self, tissue: &[(f64, f64)]) {
        if tissue.is_empty() || self.classes < 2 {
            return;
        }
        let unbiased: Vec<f64> = tissue
            .iter()
            .flat_map(|&(x, y)| (0..self.classes).map(move |c| (c, x, y)))
            .map(|(c, x, y)| self.score(c, x, y))
            .collect();
        let target = 1.0 / self.classes as f64;
        for _ in 0..60 {
            let mut counts = vec![0usize; self.classes];
            for scores in unbiased.chunks_exact(self.classes) {
                let winner = (0..self.classes)
                    .max_by(|&a, &b| {
                        (scores[a] + self.bias[a]).total_cmp(&(scores[b] + self.bias[b]))
                    })
                    .unwrap_or(0);
                counts[winner] += 1;
            }
            for (bias, count) in self.bias.iter_mut().zip(counts) {
                *bias += 0.4 * self.spacing * (target - count as f64 / tissue.len() as f64);
            }
        }
    }

    /// Score of class `c`: minus the distance to its nearest seed, plus noise and bias.
    fn score(&self, c: usize, x: f64, y: f64) -> f64 {
        let distance = self
            .points
            .iter()
            .filter(|p| p.2 == c)
            .map(|p| (p.0 - x).hypot(p.1 - y))
            .fold(f64::INFINITY, f64::min);
        let frequency = 1.5 / self.spacing;
        let noise = fbm(self.seed ^ c as u32, x * frequency, y * frequency, 3);
        -distance.min(1e3) + 0.7 * self.spacing * (f64::from(noise) - 0.5) + self.bias[c]
    }
}
