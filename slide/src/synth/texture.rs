//! Procedural H&E-like tissue for synthetic whole-slide images.
//!
//! Every pixel is a pure function of (seed, level-0 coordinates), so tiles agree at their seams
//! whatever their size, order or thread.
//!
//! * Layout is relative to the slide size: a coarse grid holds a tissue-mask value and one score per
//!   class at each node; a pixel interpolates them bilinearly and adds level-0 detail noise for
//!   ragged edges. Grid cells whose corners settle the answer whatever the detail noise are tagged at
//!   construction, so most pixels skip the layout maths and `is_background` is exact and cheap.
//! * Texture is in level-0 pixels (0.5 µm/px): nuclei come from jittered grids and are splatted per
//!   block (with an order-independent `max`), fibres from stretched, warped value noise, fat cells
//!   from a jittered Voronoi diagram. Stains mix in optical density (Beer–Lambert) through a
//!   precomputed colour table.

use serde::{Deserialize, Serialize};

/// A kind of synthetic tissue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TissueClass {
    /// Densely packed cells: dark purple nuclei on pink-purple cytoplasm (tumour-like).
    NucleusDense,
    /// Pink wavy collagen fibres with sparse spindle-shaped nuclei.
    Stroma,
    /// Fat: large empty cells separated by thin pink membranes.
    Adipose,
}

/// How the tissue classes share the tissue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassLayout {
    /// Irregular regions of similar area, like a real section.
    #[default]
    Regions,
    /// Vertical bands of equal width, one per class given, left to right in that order (a
    /// class given twice gets two bands): a layout known in advance, for testing maps such as
    /// heatmaps against it.
    Columns,
}

impl TissueClass {
    /// Every class, in a fixed order.
    pub const ALL: [TissueClass; 3] = [Self::NucleusDense, Self::Stroma, Self::Adipose];

    /// The kebab-case name, the same one serde uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::NucleusDense => "nucleus-dense",
            Self::Stroma => "stroma",
            Self::Adipose => "adipose",
        }
    }

    /// The class called `s` (see [`TissueClass::name`]), if any.
    pub fn parse(s: &str) -> Option<TissueClass> {
        Self::ALL.into_iter().find(|class| class.name() == s)
    }
}

/// Procedural, deterministic tissue: which class covers which level-0 pixel, and its colour.
pub struct TissueField {
    seed: u64,
    width: u64,
    height: u64,
    /// Distinct classes present; a pixel's class id is its index here plus one (0 is glass).
    classes: Vec<TissueClass>,
    layout: Layout,
    fibres: Fibres,
    palette: Palette,
    grain: Grain,
}

impl TissueField {
    /// `width`/`height`: level-0 slide size in pixels; `classes`: the classes present (non-empty; if empty, treat as ALL);
    /// `tissue_fraction`: roughly what fraction of the slide area is tissue (0.0..=1.0, e.g. 0.35; NaN counts as 0).
    pub fn new(
        seed: u64,
        width: u64,
        height: u64,
        classes: &[TissueClass],
        tissue_fraction: f64,
    ) -> Self {
        Self::with_layout(
            seed,
            width,
            height,
            classes,
            tissue_fraction,
            ClassLayout::Regions,
        )
    }

    /// As [`TissueField::new`], with the classes arranged as `layout` says.
    pub fn with_layout(
        seed: u64,
        width: u64,
        height: u64,
        classes: &[TissueClass],
        tissue_fraction: f64,
        layout: ClassLayout,
    ) -> Self {
        let mut distinct: Vec<TissueClass> = Vec::with_capacity(TissueClass::ALL.len());
        for &class in classes {
            if !distinct.contains(&class) {
                distinct.push(class);
            }
        }
        if distinct.is_empty() {
            distinct = TissueClass::ALL.to_vec();
        }
        // Columns: the class (its index in `distinct`) of each band, left to right.
        let bands: Vec<usize> = match layout {
            ClassLayout::Regions => Vec::new(),
            ClassLayout::Columns if classes.is_empty() => (0..distinct.len()).collect(),
            ClassLayout::Columns => classes
                .iter()
                .filter_map(|c| distinct.iter().position(|d| d == c))
                .collect(),
        };
        let fraction = if tissue_fraction.is_nan() {
            0.0
        } else {
            tissue_fraction.clamp(0.0, 1.0)
        };
        Self {
            seed,
            width,
            height,
            layout: Layout::build(seed, width, height, distinct.len(), fraction, &bands),
            classes: distinct,
            fibres: Fibres::new(seed),
            palette: Palette::new(),
            grain: Grain::new(seed as u32 ^ SALT_GRAIN),
        }
    }

    /// Tissue class at a level-0 pixel, None for background glass. This is the ground truth for ML tests.
    pub fn class_at(&self, x: u64, y: u64) -> Option<TissueClass> {
        self.class_of(self.class_id(x, y))
    }

    /// True when the level-0 rectangle certainly holds no tissue (lets the writer skip rendering and reuse one white tile).
    pub fn is_background(&self, x: u64, y: u64, w: u32, h: u32) -> bool {
        if w == 0 || h == 0 || x >= self.width || y >= self.height {
            return true;
        }
        // Only the part inside the slide can hold tissue; cell tags are exact for their pixels.
        let x_last = x.saturating_add(u64::from(w)).min(self.width) - 1;
        let y_last = y.saturating_add(u64::from(h)).min(self.height) - 1;
        let shift = self.layout.shift;
        ((y >> shift)..=(y_last >> shift)).all(|cy| {
            ((x >> shift)..=(x_last >> shift))
                .all(|cx| self.layout.cell(cx as usize, cy as usize) == CELL_BACKGROUND)
        })
    }

    /// Renders the level-0 rectangle into `out` (RGB8, row-major, len == w*h*3).
    ///
    /// A shorter `out` gets only the whole rows that fit.
    pub fn render(&self, x: u64, y: u64, w: u32, h: u32, out: &mut [u8]) {
        let (w, h) = (w as usize, h as usize);
        let stride = w.saturating_mul(3);
        let rows = out.len().checked_div(stride).map_or(0, |fit| h.min(fit));
        // Blocks bound the scratch memory for huge rectangles; they cannot change pixels.
        let mut scratch = Scratch::default();
        for by in (0..rows).step_by(BLOCK) {
            for bx in (0..w).step_by(BLOCK) {
                let block = Block {
                    x: x.saturating_add(bx as u64),
                    y: y.saturating_add(by as u64),
                    w: BLOCK.min(w - bx),
                    h: BLOCK.min(rows - by),
                };
                let offset = by * stride + bx * 3;
                self.render_block(&block, &mut scratch, &mut out[offset..], stride);
            }
        }
    }

    /// Renders one block into `out`, whose rows start `stride` bytes apart.
    fn render_block(&self, block: &Block, scratch: &mut Scratch, out: &mut [u8], stride: usize) {
        let present = self.classify_block(block, &mut scratch.class);
        let has = |class| {
            let id = self
                .classes
                .iter()
                .position(|&c| c == class)
                .map_or(0, |i| i + 1);
            id > 0 && present & (1 << id) != 0
        };
        scratch.ink.clear();
        scratch.ink.resize(block.w * block.h, 0);
        for (index, &class) in self.classes.iter().enumerate() {
            if has(class) {
                self.splat_nuclei(
                    class,
                    index as u8 + 1,
                    block,
                    &scratch.class,
                    &mut scratch.ink,
                );
            }
        }
        let (dense, stroma, fat) = (
            has(TissueClass::NucleusDense),
            has(TissueClass::Stroma),
            has(TissueClass::Adipose),
        );
        if fat {
            scratch.fat.fill(self.seed, block);
        }

        let seed = self.seed as u32;
        let rows = &mut scratch.rows;
        if dense {
            rows.mottle.prepare(MOTTLE_SHIFT, block.x, block.w);
            rows.blotch.prepare(BLOTCH_SHIFT, block.x, block.w);
        }
        if stroma {
            rows.warp.prepare(WARP_SHIFT, block.x, block.w);
        }
        for row in 0..block.h {
            let y = block.y.saturating_add(row as u64);
            // Axis-aligned noise is cached once per row; columns then only interpolate.
            if dense {
                rows.mottle.fill(seed ^ SALT_MOTTLE, y);
                rows.blotch.fill(seed ^ SALT_BLOTCH, y);
            }
            if stroma {
                rows.warp.fill(seed ^ SALT_WARP, y);
            }
            let span = row * block.w..(row + 1) * block.w;
            let (classes, ink) = (&scratch.class[span.clone()], &scratch.ink[span]);
            let line = &mut out[row * stride..row * stride + block.w * 3];
            let mut fat_cursor = scratch.fat.cursor(y);
            let grain = self.grain.row(y);
            // Runs of one class get a loop of their own, free of per-pixel dispatch.
            let mut start = 0;
            while start < block.w {
                let id = classes[start];
                let end = classes[start..]
                    .iter()
                    .position(|&c| c != id)
                    .map_or(block.w, |n| start + n);
                let run = Run {
                    x: block.x,
                    cols: start..end,
                    grain,
                    ink,
                };
                match self.class_of(id) {
                    None => self.glass_run(&run, line),
                    Some(TissueClass::NucleusDense) => self.shade_run(&run, line, |col, _| {
                        dense_stain(rows.mottle.at(col), rows.blotch.at(col))
                    }),
                    Some(TissueClass::Stroma) => self.shade_run(&run, line, |col, x| {
                        self.fibres.stain(x, y, rows.warp.at(col))
                    }),
                    Some(TissueClass::Adipose) => {
                        self.shade_run(&run, line, |col, _| fat_cursor.stain(col))
                    }
                }
                start = end;
            }
        }
    }

    /// Writes glass over a run.
    fn glass_run(&self, run: &Run, line: &mut [u8]) {
        let pixels = line[run.cols.start * 3..run.cols.end * 3].chunks_exact_mut(3);
        for (pixel, col) in pixels.zip(run.cols.clone()) {
            let x = run.x.saturating_add(col as u64);
            pixel.copy_from_slice(&glass(self.grain.at(run.grain, x)));
        }
    }

    /// Shades a run of tissue: `stain(col, x)` gives the stains of a pixel; nuclei and grain are added here.
    fn shade_run(&self, run: &Run, line: &mut [u8], mut stain: impl FnMut(usize, u64) -> Stain) {
        let pixels = line[run.cols.start * 3..run.cols.end * 3].chunks_exact_mut(3);
        for ((pixel, col), &ink) in pixels.zip(run.cols.clone()).zip(&run.ink[run.cols.clone()]) {
            let x = run.x.saturating_add(col as u64);
            let rgb = self
                .palette
                .shade(stain(col, x), ink, self.grain.at(run.grain, x));
            pixel.copy_from_slice(&rgb);
        }
    }

    /// The class of a class id (0, glass, gives None).
    fn class_of(&self, id: u8) -> Option<TissueClass> {
        let index = usize::from(id).checked_sub(1)?;
        self.classes.get(index).copied()
    }

    /// Class id (0 = glass) of one pixel; `class_at` and `render` both go through here.
    fn class_id(&self, x: u64, y: u64) -> u8 {
        if x >= self.width || y >= self.height {
            return 0;
        }
        match self.layout.cell_of(x, y) {
            CELL_MIXED => self.layout.classify_pixel(self.seed, x, y),
            tag => tag,
        }
    }

    /// Fills the class map of a block; returns a bit set of the class ids present.
    fn classify_block(&self, block: &Block, map: &mut Vec<u8>) -> u32 {
        map.clear();
        map.resize(block.w * block.h, 0);
        let shift = self.layout.shift;
        let mut present = 0u32;
        for (row, line) in map.chunks_exact_mut(block.w).enumerate() {
            let y = block.y.saturating_add(row as u64);
            let mut col = 0;
            while col < block.w {
                let x = block.x.saturating_add(col as u64);
                if x >= self.width || y >= self.height {
                    present |= 1; // the rest of the row stays glass
                    break;
                }
                // A run stays in one layout cell, so tagged cells need no per-pixel work.
                let cell_end = ((x >> shift) + 1)
                    .saturating_mul(1 << shift)
                    .min(self.width);
                let run = (cell_end - x).min((block.w - col) as u64) as usize;
                let slots = &mut line[col..col + run];
                match self.layout.cell_of(x, y) {
                    CELL_MIXED => {
                        for (k, slot) in slots.iter_mut().enumerate() {
                            *slot = self.layout.classify_pixel(self.seed, x + k as u64, y);
                            present |= 1 << *slot;
                        }
                    }
                    tag => {
                        slots.fill(tag);
                        present |= 1 << tag;
                    }
                }
                col += run;
            }
        }
        present
    }

    /// Splats every nucleus of `class` that can touch the block, onto pixels of that class.
    fn splat_nuclei(&self, class: TissueClass, id: u8, block: &Block, map: &[u8], ink: &mut [u8]) {
        let (cell, reach) = match class {
            TissueClass::NucleusDense => (DENSE_CELL, DENSE_CELL),
            TissueClass::Stroma => (STROMA_CELL, STROMA_CELL),
            // Fat nuclei sit between two neighbouring cell points, so reach one extra cell.
            TissueClass::Adipose => (FAT_CELL, 2 * FAT_CELL),
        };
        let x_end = block.x.saturating_add(block.w as u64);
        let y_end = block.y.saturating_add(block.h as u64);
        for cy in block.y.saturating_sub(reach) / cell..=y_end.saturating_add(reach) / cell {
            for cx in block.x.saturating_sub(reach) / cell..=x_end.saturating_add(reach) / cell {
                let nucleus = match class {
                    TissueClass::NucleusDense => dense_nucleus(self.seed, cx, cy),
                    TissueClass::Stroma => self.fibres.nucleus(self.seed, cx, cy),
                    TissueClass::Adipose => fat_nucleus(self.seed, cx, cy),
                };
                if let Some(nucleus) = nucleus {
                    nucleus.splat(id, block, map, ink);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Layout: where the tissue is and which class covers it.

/// Cell tag: every pixel of the cell is glass.
const CELL_BACKGROUND: u8 = 0;
/// Cell tag: pixels need the per-pixel test.
const CELL_MIXED: u8 = u8::MAX;
/// Upper bound on layout cells along the long side of the slide.
const MAX_CELLS: u64 = 512;

/// Coarse node grid of mask values and class scores, with per-cell tags.
struct Layout {
    /// Cells are `1 << shift` level-0 pixels square, so a pixel's cell is a shift away.
    shift: u32,
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
    fn build(
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
    fn cell(&self, cx: usize, cy: usize) -> u8 {
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
    fn cell_of(&self, x: u64, y: u64) -> u8 {
        self.cell((x >> self.shift) as usize, (y >> self.shift) as usize)
    }

    /// Full per-pixel test for pixels of mixed cells.
    fn classify_pixel(&self, seed: u64, x: u64, y: u64) -> u8 {
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

// ---------------------------------------------------------------------------------------------
// Texture.

/// Edge of the square blocks `render` works in.
const BLOCK: usize = 128;
/// Jittered-grid cell sizes in level-0 pixels (0.5 µm/px).
const DENSE_CELL: u64 = 11;
const STROMA_CELL: u64 = 36;
const FAT_CELL: u64 = 56;
/// Ink buffer units per unit of hematoxylin.
const INK_SCALE: f32 = 180.0;
/// Lattice spacings (log2 of level-0 pixels) of the axis-aligned noises.
const MOTTLE_SHIFT: u32 = 3;
const BLOTCH_SHIFT: u32 = 6;
const WARP_SHIFT: u32 = 8;
/// Fibre-bending displacement across the fibres, in pixels.
const WARP_AMPLITUDE: f32 = 140.0;
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
struct Stain {
    eosin: f32,
    hematoxylin: f32,
}

/// A rectangle of level-0 pixels rendered together.
struct Block {
    x: u64,
    y: u64,
    w: usize,
    h: usize,
}

/// Columns of one block row that share a class.
struct Run<'a> {
    /// Level-0 x of block column 0.
    x: u64,
    cols: std::ops::Range<usize>,
    /// The row's `Grain` offset.
    grain: usize,
    /// Nuclear ink of the whole block row.
    ink: &'a [u8],
}

/// Buffers reused across the blocks of one `render` call.
#[derive(Default)]
struct Scratch {
    /// Class id per block pixel.
    class: Vec<u8>,
    /// Nuclear hematoxylin per block pixel, in `INK_SCALE` units.
    ink: Vec<u8>,
    rows: NoiseRows,
    fat: FatCells,
}

/// Per-row noise caches for the current block row.
#[derive(Default)]
struct NoiseRows {
    mottle: NoiseRow,
    blotch: NoiseRow,
    warp: NoiseRow,
}

/// Bare glass: near white with a little grain, as real scans.
fn glass(speck: Speck) -> [u8; 3] {
    let base = [245, 244, 246];
    std::array::from_fn(|c| (base[c] + i32::from(speck.rgb[c] >> 1)) as u8)
}

/// Per-pixel randomness: colour offsets (shared luminance plus a little chroma) and chromatin.
#[derive(Clone, Copy, Default)]
struct Speck {
    /// -7..=7 per channel.
    rgb: [i8; 3],
    /// Scales nuclear stain from 0.75 (0) to 1.25 (255).
    chromatin: u8,
}

/// Per-pixel randomness. Each row reads a randomly shifted window of one random sequence: a load
/// per pixel instead of a hash, with no visible pattern.
struct Grain {
    seed: u32,
    specks: Box<[Speck; GRAIN_LEN]>,
}

/// Length of the `Grain` sequence, a power of two so that wrapping is a mask.
const GRAIN_LEN: usize = 4096;

impl Grain {
    fn new(seed: u32) -> Self {
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
    fn row(&self, y: u64) -> usize {
        lattice_hash(self.seed, y as u32, (y >> 32) as u32) as usize
    }

    /// The speck of pixel `x` in the row with offset `row`.
    fn at(&self, row: usize, x: u64) -> Speck {
        self.specks[row.wrapping_add(x as usize) & (GRAIN_LEN - 1)]
    }
}

/// RGB of every quantised (hematoxylin, eosin) pair over glass, by Beer–Lambert.
struct Palette {
    rgb: Vec<[u8; 3]>,
}

impl Palette {
    fn new() -> Self {
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
    fn shade(&self, stain: Stain, ink: u8, speck: Speck) -> [u8; 3] {
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

/// Cytoplasm of densely packed cells: mottled pink-purple, from two noise octaves in [0, 1).
fn dense_stain(mottle: f32, blotch: f32) -> Stain {
    let n = 0.6 * mottle + 0.4 * blotch;
    Stain {
        eosin: 0.45 + 0.6 * n,
        hematoxylin: 0.06 + 0.08 * n,
    }
}

/// Roundish nucleus of dense grid cell (cx, cy), if the cell has one.
fn dense_nucleus(seed: u64, cx: u64, cy: u64) -> Option<Nucleus> {
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

/// Stroma fibres: a slide-wide direction, bent by low-frequency warp across it.
///
/// Per-pixel coordinates are fixed point (`FIXED` fraction bits): integer maths is exact, so a
/// pixel's value cannot depend on the tile, and it avoids float-to-int conversions.
struct Fibres {
    cos: f64,
    sin: f64,
    cos_fixed: i64,
    sin_fixed: i64,
    noise: NoiseTable,
}

/// Fraction bits of fixed-point fibre coordinates.
const FIXED: u32 = 16;

impl Fibres {
    fn new(seed: u64) -> Self {
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
    fn stain(&self, x: u64, y: u64, warp: f32) -> Stain {
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
    fn nucleus(&self, seed: u64, cx: u64, cy: u64) -> Option<Nucleus> {
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

/// An elliptical nucleus as a quadratic form: q(dx, dy) < 1 inside.
struct Nucleus {
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
    fn new(x: f64, y: f64, axis: (f64, f64), major: f64, minor: f64, ink: f64) -> Self {
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
    fn splat(&self, id: u8, block: &Block, map: &[u8], ink: &mut [u8]) {
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
fn pixel_span(lo: f32, hi: f32, len: usize) -> Option<std::ops::Range<usize>> {
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

/// Jittered seed point of fat cell (cx, cy), in level-0 pixels.
fn fat_point(seed: u64, cx: u64, cy: u64) -> (f64, f64) {
    let mut bits = SplitMix(hash3(seed ^ SALT_FAT, cx, cy));
    let x = jittered(cx, FAT_CELL, 0.7 * (bits.unit() - 0.5));
    (x, jittered(cy, FAT_CELL, 0.7 * (bits.unit() - 0.5)))
}

/// The centre of grid cell `index` (cells `cell` pixels wide) moved by `jitter` cells, rounded to
/// 1/64 px. On that grid, block-relative f32 coordinates near the block are exact, so pixel values
/// cannot depend on which block computes them.
fn jittered(index: u64, cell: u64, jitter: f64) -> f64 {
    let position = (index as f64 + 0.5 + jitter) * cell as f64;
    (position * 64.0).round() / 64.0
}

/// Flattened nucleus on the wall between fat cell (cx, cy) and a neighbour, if any.
fn fat_nucleus(seed: u64, cx: u64, cy: u64) -> Option<Nucleus> {
    let mut bits = SplitMix(hash3(seed ^ SALT_FAT_NUCLEUS, cx, cy));
    if bits.unit() > 0.12 {
        return None;
    }
    let (ax, ay) = fat_point(seed, cx, cy);
    let (bx, by) = if bits.unit() < 0.5 {
        fat_point(seed, cx + 1, cy)
    } else {
        fat_point(seed, cx, cy + 1)
    };
    // The midpoint of two neighbouring points lies on their shared wall, which runs across a - b.
    let major = 6.0 + 3.0 * bits.unit();
    let minor = 1.5 + 0.7 * bits.unit();
    let ink = 0.75 + 0.25 * bits.unit();
    Some(Nucleus::new(
        (ax + bx) / 2.0,
        (ay + by) / 2.0,
        (ay - by, bx - ax),
        major,
        minor,
        ink,
    ))
}

/// Fat-cell seed points around one block, so each pixel checks its 3x3 cells without hashing.
#[derive(Default)]
struct FatCells {
    /// Block origin; points are stored relative to it (exact in f32, see `jittered`).
    x: u64,
    y: u64,
    /// Cell index of the first cached column and row.
    cell_x: u64,
    cell_y: u64,
    columns: usize,
    points: Vec<(f32, f32)>,
    /// Cached cell column of each block column, avoiding a division per pixel.
    column_cell: Vec<usize>,
}

impl FatCells {
    /// Caches the points of every cell within one cell of the block.
    fn fill(&mut self, seed: u64, block: &Block) {
        self.x = block.x;
        self.y = block.y;
        self.cell_x = (block.x / FAT_CELL).saturating_sub(1);
        self.cell_y = (block.y / FAT_CELL).saturating_sub(1);
        let last_x = block.x.saturating_add(block.w as u64) / FAT_CELL + 1;
        let last_y = block.y.saturating_add(block.h as u64) / FAT_CELL + 1;
        self.columns = (last_x - self.cell_x + 1) as usize;
        self.points.clear();
        for cy in self.cell_y..=last_y {
            for cx in self.cell_x..=last_x {
                let (px, py) = fat_point(seed, cx, cy);
                self.points
                    .push(((px - block.x as f64) as f32, (py - block.y as f64) as f32));
            }
        }
        self.column_cell.clear();
        self.column_cell.extend(
            (0..block.w)
                .map(|col| (block.x.saturating_add(col as u64) / FAT_CELL - self.cell_x) as usize),
        );
    }

    /// A cursor over the block row at level-0 `y` (meaningful once `fill` has run for the block).
    fn cursor(&self, y: u64) -> FatCursor<'_> {
        FatCursor {
            cells: self,
            y: y.saturating_sub(self.y) as f32 + 0.5,
            row: (y / FAT_CELL).saturating_sub(self.cell_y) as usize,
            column: usize::MAX,
            candidates: [(0.0, 0.0); 9],
        }
    }
}

/// Walks a block row of fat cells; the 3x3 candidate points are reloaded when the cell column changes.
struct FatCursor<'a> {
    cells: &'a FatCells,
    /// Block-relative y of the row's pixel centres.
    y: f32,
    /// Cached cell row and current cell column.
    row: usize,
    column: usize,
    /// Candidate points as (x, squared vertical distance to the row).
    candidates: [(f32, f32); 9],
}

impl FatCursor<'_> {
    /// Fat stain at block column `col`: pink on the walls between the cells, empty inside.
    fn stain(&mut self, col: usize) -> Stain {
        let column = self.cells.column_cell.get(col).copied().unwrap_or(1);
        if column != self.column {
            self.load(column);
        }
        let x = col as f32 + 0.5;
        let d: [f32; 9] = std::array::from_fn(|k| {
            let (cx, dy2) = self.candidates[k];
            (cx - x) * (cx - x) + dy2
        });
        // The two smallest distances by a shallow tree of (smallest, second) merges, not a serial scan.
        let pair = |a: f32, b: f32| if a < b { (a, b) } else { (b, a) };
        let merge = |(m1, s1): (f32, f32), (m2, s2): (f32, f32)| {
            let (low, high) = pair(m1, m2);
            (low, fast_min(high, fast_min(s1, s2)))
        };
        let quad = |k: usize| merge(pair(d[k], d[k + 1]), pair(d[k + 2], d[k + 3]));
        let (d1, d2) = merge(merge(quad(0), quad(4)), (d[8], f32::INFINITY));
        // Half the difference of the two nearest distances: zero on a wall, growing off it
        // (a little slower near corners, which thickens the junctions as in real fat).
        let wall = 0.5 * (d2.sqrt() - d1.sqrt());
        let membrane = (1.6 - wall).clamp(0.0, 1.0);
        Stain {
            eosin: 0.01 + 1.3 * membrane,
            hematoxylin: 0.01 + 0.08 * membrane,
        }
    }

    /// Loads the points of the 3x3 cells around cell column `column` of this row.
    fn load(&mut self, column: usize) {
        self.column = column;
        let cells = self.cells;
        for (r, chunk) in
            (self.row.saturating_sub(1)..=self.row + 1).zip(self.candidates.chunks_exact_mut(3))
        {
            let start = r * cells.columns + column.saturating_sub(1);
            let points = cells.points.get(start..start + 3).unwrap_or(&[]);
            for (slot, &(px, py)) in chunk.iter_mut().zip(points) {
                *slot = (px, (py - self.y) * (py - self.y));
            }
        }
    }
}

/// Axis-aligned value noise with lattice spacing `1 << shift` pixels, evaluated along block rows:
/// lattice values are interpolated vertically once per row, so a pixel only interpolates
/// horizontally. `at` equals `value_noise(seed, x / 2^shift, y / 2^shift)` exactly.
#[derive(Default)]
struct NoiseRow {
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
    fn prepare(&mut self, shift: u32, x: u64, w: usize) {
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
    fn fill(&mut self, seed: u32, y: u64) {
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
    fn at(&self, col: usize) -> f32 {
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
struct NoiseTable {
    values: Box<[u8; NOISE_TABLE_SIZE * NOISE_TABLE_SIZE]>,
}

/// Edge of `NoiseTable`, a power of two so that wrapping is a mask.
const NOISE_TABLE_SIZE: usize = 256;

impl NoiseTable {
    fn new(seed: u32) -> Self {
        let mut values = Box::new([0u8; NOISE_TABLE_SIZE * NOISE_TABLE_SIZE]);
        for (i, value) in values.iter_mut().enumerate() {
            let (x, y) = (i % NOISE_TABLE_SIZE, i / NOISE_TABLE_SIZE);
            *value = (lattice_hash(seed, x as u32, y as u32) >> 24) as u8;
        }
        Self { values }
    }

    /// Smooth noise in [0, 1] at fixed-point lattice coordinates (`FIXED` fraction bits).
    #[inline]
    fn sample(&self, x: i64, y: i64) -> f32 {
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

// ---------------------------------------------------------------------------------------------
// Hashing and noise.

const SALT_FIBRE_ANGLE: u64 = 0x6A09_E667_F3BC_C908;
const SALT_BLOBS: u64 = 0xBB67_AE85_84CA_A73B;
const SALT_REGIONS: u64 = 0x3C6E_F372_FE94_F82B;
const SALT_DENSE: u64 = 0xA54F_F53A_5F1D_36F1;
const SALT_STROMA: u64 = 0x510E_527F_ADE6_82D1;
const SALT_FAT: u64 = 0x9B05_688C_2B3E_6C1F;
const SALT_FAT_NUCLEUS: u64 = 0x1F83_D9AB_FB41_BD6B;
const SALT_GRAIN: u32 = 0x5BE0_CD19;
const SALT_MOTTLE: u32 = 0x428A_2F98;
const SALT_BLOTCH: u32 = 0xAB1C_5ED5;
const SALT_FIBRE: u32 = 0x7137_4491;
const SALT_WARP: u32 = 0xE9B5_DBA5;
const SALT_EDGE: u32 = 0x3956_C25B;
const SALT_EDGE_FINE: u32 = 0x59F1_11F1;
const SALT_REGION_EDGE: u32 = 0x923F_82A4;

/// SplitMix64 finaliser: a cheap, well-mixed 64-bit hash.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a seed and two integers.
fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    mix64(seed ^ mix64(a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b))
}

/// Maps a hash to [0, 1).
fn unit64(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Maps the high 24 bits of `h` to [0, 1).
fn unit32(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Hash of a 2-D lattice point (lowbias32 finaliser): cheap, and random enough for texture.
#[inline]
fn lattice_hash(seed: u32, x: u32, y: u32) -> u32 {
    let mut h = seed ^ x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7FEB_352D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^ (h >> 16)
}

/// Smooth value noise in [0, 1) with unit lattice spacing, for non-negative `x`, `y`.
#[inline]
fn value_noise(seed: u32, x: f64, y: f64) -> f32 {
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
fn fast_min(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// Cubic ease curve: value noise interpolated with it has no creases at lattice lines.
#[inline]
fn smoothstep(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}

/// Fractal sum of `octaves` value noises, normalised to [0, 1).
fn fbm(seed: u32, x: f64, y: f64, octaves: u32) -> f32 {
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
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    fn unit(&mut self) -> f64 {
        unit64(self.next())
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[TissueClass] = &TissueClass::ALL;

    fn render(field: &TissueField, x: u64, y: u64, w: u32, h: u32) -> Vec<u8> {
        let mut out = vec![0; w as usize * h as usize * 3];
        field.render(x, y, w, h, &mut out);
        out
    }

    /// Share of each class (and of glass, last) on an even grid of about `n` x `n` samples.
    fn coverage(field: &TissueField, width: u64, height: u64, n: u64) -> [f64; 4] {
        let mut counts = [0usize; 4];
        for j in 0..n {
            for i in 0..n {
                let (x, y) = (
                    i * width / n + width / (2 * n),
                    j * height / n + height / (2 * n),
                );
                let slot = match field.class_at(x, y) {
                    Some(class) => TissueClass::ALL
                        .iter()
                        .position(|&c| c == class)
                        .unwrap_or(3),
                    None => 3,
                };
                counts[slot] += 1;
            }
        }
        counts.map(|c| c as f64 / (n * n) as f64)
    }

    /// A pixel where the class to the right differs from this one, scanning a few rows.
    fn find_boundary(
        field: &TissueField,
        width: u64,
        height: u64,
        wanted: impl Fn(Option<TissueClass>, Option<TissueClass>) -> bool,
    ) -> Option<(u64, u64)> {
        (1..8).map(|k| k * height / 8).find_map(|y| {
            (0..width - 1)
                .find(|&x| wanted(field.class_at(x, y), field.class_at(x + 1, y)))
                .map(|x| (x, y))
        })
    }

    #[test]
    fn columns_put_each_class_in_its_own_band() {
        let (w, h) = (6000, 2000);
        let classes = [
            TissueClass::Stroma,
            TissueClass::NucleusDense,
            TissueClass::NucleusDense,
        ];
        let field = TissueField::with_layout(3, w, h, &classes, 0.6, ClassLayout::Columns);
        let mut seen = [0usize; 2];
        for j in 0..40 {
            for i in 0..120 {
                let (x, y) = (i * w / 120 + 25, j * h / 40 + 25);
                let Some(class) = field.class_at(x, y) else {
                    continue;
                };
                // Away from the first boundary (where it may wander) the band decides; the two
                // dense bands are one region.
                if x < w / 3 - 200 {
                    assert_eq!(class, TissueClass::Stroma, "at ({x}, {y})");
                    seen[0] += 1;
                } else if x > w / 3 + 200 {
                    assert_eq!(class, TissueClass::NucleusDense, "at ({x}, {y})");
                    seen[1] += 1;
                }
            }
        }
        assert!(
            seen[0] > 200 && seen[1] > 2 * seen[0] - 200,
            "tissue in every band: {seen:?}"
        );
    }

    /// (mean luminance, share of dark pixels, share of near-white pixels, mean red minus green).
    fn statistics(rgb: &[u8]) -> (f64, f64, f64, f64) {
        let n = (rgb.len() / 3) as f64;
        let (mut lum, mut dark, mut white, mut red) = (0.0, 0.0, 0.0, 0.0);
        for p in rgb.chunks_exact(3) {
            let (r, g, b) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
            let l = 0.299 * r + 0.587 * g + 0.114 * b;
            lum += l;
            dark += f64::from(u8::from(l < 110.0));
            white += f64::from(u8::from(l > 215.0));
            red += r - g;
        }
        (lum / n, dark / n, white / n, red / n)
    }

    #[test]
    fn names_round_trip() {
        for class in TissueClass::ALL {
            assert_eq!(TissueClass::parse(class.name()), Some(class));
        }
        assert_eq!(TissueClass::parse("Stroma"), None);
        assert_eq!(TissueClass::NucleusDense.name(), "nucleus-dense");
    }

    #[test]
    fn field_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TissueField>();
    }

    #[test]
    fn rendering_is_deterministic() {
        let (w, h) = (4000, 3000);
        let a = TissueField::new(5, w, h, ALL, 0.5);
        let b = TissueField::new(5, w, h, ALL, 0.5);
        let (x, y) =
            find_boundary(&a, w, h, |l, r| l.is_none() && r.is_some()).expect("tissue edge");
        let first = render(&a, x - 100, y - 100, 200, 200);
        assert_eq!(first, render(&a, x - 100, y - 100, 200, 200));
        assert_eq!(first, render(&b, x - 100, y - 100, 200, 200));
        assert_ne!(
            first,
            render(
                &TissueField::new(6, w, h, ALL, 0.5),
                x - 100,
                y - 100,
                200,
                200
            )
        );
    }

    /// Checks that sub-rectangles (and threads rendering other tiles) reproduce `big`, rendered at (x0, y0).
    fn check_sub_rectangles(field: &TissueField, x0: u64, y0: u64, big_w: u32, big_h: u32) {
        let big = render(field, x0, y0, big_w, big_h);
        let pixel = |x: u64, y: u64| {
            let i = ((y - y0) * u64::from(big_w) + (x - x0)) as usize * 3;
            &big[i..i + 3]
        };
        let mut rng = SplitMix(x0 ^ y0);
        let fixed = [
            (0, 0, 1, 1),
            (7, 3, 17, 33),
            (120, 100, 130, 5),
            (1, 129, 299, 150),
            (big_w - 1, big_h - 1, 1, 1),
        ];
        let random = (0..12).map(|_| {
            let (dx, dy) = (
                (rng.next() % u64::from(big_w)) as u32,
                (rng.next() % u64::from(big_h)) as u32,
            );
            let w = 1 + (rng.next() % u64::from(big_w - dx)) as u32;
            (dx, dy, w, 1 + (rng.next() % u64::from(big_h - dy)) as u32)
        });
        for (dx, dy, sw, sh) in fixed.into_iter().chain(random) {
            let (x, y) = (x0 + u64::from(dx), y0 + u64::from(dy));
            let small = render(field, x, y, sw, sh);
            for (k, p) in (0u64..).zip(small.chunks_exact(3)) {
                let (px, py) = (x + k % u64::from(sw), y + k / u64::from(sw));
                assert_eq!(
                    p,
                    pixel(px, py),
                    "pixel ({px}, {py}) of {sw}x{sh} at ({x}, {y})"
                );
            }
        }
        // Threads rendering quarter tiles agree too.
        let (tw, th) = (big_w / 2, big_h / 2);
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                scope.spawn(move || {
                    let (x, y) = (x0 + u64::from(t % 2 * tw), y0 + u64::from(t / 2 * th));
                    let tile = render(field, x, y, tw, th);
                    for (k, p) in (0u64..).zip(tile.chunks_exact(3)) {
                        assert_eq!(p, pixel(x + k % u64::from(tw), y + k / u64::from(tw)));
                    }
                });
            }
        });
    }

    #[test]
    fn sub_rectangles_equal_the_same_pixels_of_larger_renders() {
        let (w, h) = (3000, 2000);
        let mut checked = 0;
        for seed in [11, 12] {
            let field = TissueField::new(seed, w, h, ALL, 0.6);
            // Around class boundaries and a tissue edge, so every kind of pixel and edge appears.
            let pairs = [
                (Some(TissueClass::NucleusDense), Some(TissueClass::Stroma)),
                (Some(TissueClass::Stroma), Some(TissueClass::Adipose)),
                (Some(TissueClass::Adipose), Some(TissueClass::NucleusDense)),
                (None, Some(TissueClass::Adipose)),
            ];
            for (a, b) in pairs {
                let found =
                    find_boundary(&field, w, h, |l, r| (l, r) == (a, b) || (l, r) == (b, a));
                if let Some((x, y)) = found {
                    let (x0, y0) = (
                        x.saturating_sub(150).min(w - 300),
                        y.saturating_sub(140).min(h - 280),
                    );
                    check_sub_rectangles(&field, x0, y0, 300, 280);
                    checked += 1;
                }
            }
        }
        assert!(checked >= 6, "only {checked} boundaries found");
    }

    #[test]
    fn render_agrees_with_class_at() {
        let field = TissueField::new(3, 1000, 800, ALL, 0.5);
        let tile = render(&field, 0, 0, 1000, 800);
        for (k, p) in tile.chunks_exact(3).enumerate().step_by(7) {
            let (x, y) = (k as u64 % 1000, k as u64 / 1000);
            let glass_like = p.iter().all(|&v| v >= 238) && p[0].abs_diff(p[1]) < 8;
            if field.class_at(x, y).is_none() {
                assert!(glass_like, "({x}, {y}) {p:?}");
            }
        }
    }

    #[test]
    fn every_requested_class_covers_a_substantial_area() {
        for (seed, w, h) in [
            (1, 512, 512),
            (2, 40_000, 30_000),
            (3, 200_000, 100_000),
            (4, 3000, 9000),
            (5, 20_000, 15_000),
        ] {
            let field = TissueField::new(seed, w, h, ALL, 0.35);
            let shares = coverage(&field, w, h, 200);
            let tissue = 1.0 - shares[3];
            assert!(
                (0.25..0.45).contains(&tissue),
                "seed {seed}: tissue {tissue}"
            );
            for share in &shares[..3] {
                assert!(*share > 0.05, "seed {seed}: {shares:?}");
            }
        }
        let pair = [TissueClass::Stroma, TissueClass::Adipose];
        let field = TissueField::new(8, 30_000, 20_000, &pair, 0.4);
        let shares = coverage(&field, 30_000, 20_000, 200);
        assert!(
            shares[0] == 0.0 && shares[1] > 0.1 && shares[2] > 0.1,
            "{shares:?}"
        );
    }

    #[test]
    fn single_class_field_has_only_that_class() {
        for class in TissueClass::ALL {
            let field = TissueField::new(9, 10_000, 8000, &[class, class], 0.35);
            let shares = coverage(&field, 10_000, 8000, 150);
            for (other, share) in TissueClass::ALL.iter().zip(&shares) {
                assert_eq!(*share > 0.0, *other == class, "{class:?}: {shares:?}");
            }
        }
    }

    #[test]
    fn tissue_fraction_extremes_and_empty_classes() {
        let none = TissueField::new(1, 5000, 4000, ALL, 0.0);
        assert_eq!(coverage(&none, 5000, 4000, 50)[3], 1.0);
        assert!(none.is_background(0, 0, 5000, 4000));
        let nan = TissueField::new(1, 5000, 4000, ALL, f64::NAN);
        assert_eq!(coverage(&nan, 5000, 4000, 50)[3], 1.0);
        let full = TissueField::new(1, 5000, 4000, ALL, 1.0);
        assert_eq!(coverage(&full, 5000, 4000, 50)[3], 0.0);
        let empty = TissueField::new(1, 5000, 4000, &[], 2.0);
        let shares = coverage(&empty, 5000, 4000, 100);
        assert!(
            shares[..3].iter().all(|&s| s > 0.05) && shares[3] == 0.0,
            "{shares:?}"
        );
    }

    #[test]
    fn is_background_never_hides_tissue() {
        let (w, h) = (20_000u64, 15_000u64);
        let field = TissueField::new(21, w, h, ALL, 0.35);
        let mut skipped = 0;
        for ty in (0..h).step_by(256) {
            for tx in (0..w).step_by(256) {
                if !field.is_background(tx, ty, 256, 256) {
                    continue;
                }
                skipped += 1;
                for y in (ty..(ty + 256).min(h)).step_by(5).chain([ty + 255]) {
                    for x in (tx..(tx + 256).min(w)).step_by(5).chain([tx + 255]) {
                        assert_eq!(
                            field.class_at(x, y),
                            None,
                            "({x}, {y}) in tile ({tx}, {ty})"
                        );
                    }
                }
            }
        }
        // Most glass tiles are recognised (the slide is about 65% glass).
        let tiles = w.div_ceil(256) * h.div_ceil(256);
        assert!(skipped as f64 > 0.4 * tiles as f64, "{skipped} of {tiles}");

        // Exhaustively on a small slide, for odd rectangles.
        let small = TissueField::new(22, 600, 400, ALL, 0.35);
        for (x, y, rw, rh) in [
            (0, 0, 7, 300),
            (0, 0, 40, 40),
            (560, 360, 100, 100),
            (13, 200, 587, 1),
            (0, 390, 600, 10),
        ] {
            if small.is_background(x, y, rw, rh) {
                for yy in y..(y + u64::from(rh)).min(400) {
                    for xx in x..(x + u64::from(rw)).min(600) {
                        assert_eq!(small.class_at(xx, yy), None);
                    }
                }
            }
        }
        assert!(!small.is_background(0, 0, 600, 400));
        assert!(small.is_background(600, 0, 10, 10));
        assert!(small.is_background(5, 5, 0, 10));
    }

    #[test]
    fn classes_differ_in_simple_statistics() {
        let stats: Vec<(f64, f64, f64, f64)> = TissueClass::ALL
            .iter()
            .map(|&class| {
                let field = TissueField::new(31, 20_000, 20_000, &[class], 1.0);
                let mut all = Vec::new();
                for k in 0..4 {
                    all.extend(render(&field, 3000 + k * 2777, 5000 + k * 1999, 256, 256));
                }
                statistics(&all)
            })
            .collect();
        let (dense, stroma, fat) = (stats[0], stats[1], stats[2]);
        // Nuclei make dense tissue darkest; fat is mostly empty; stroma is pink in between.
        assert!(
            dense.0 + 25.0 < stroma.0 && stroma.0 + 25.0 < fat.0,
            "{stats:?}"
        );
        assert!(dense.1 > 0.2 && stroma.1 < 0.1 && fat.1 < 0.05, "{stats:?}");
        assert!(fat.2 > 0.6 && stroma.2 < 0.2 && dense.2 < 0.05, "{stats:?}");
        assert!(stroma.3 > 40.0, "stroma should be pink: {stats:?}");
    }

    #[test]
    fn background_is_near_white_with_grain() {
        let field = TissueField::new(4, 10_000, 10_000, ALL, 0.35);
        assert!(field.is_background(0, 0, 256, 256));
        let glass = render(&field, 0, 0, 256, 256);
        let near_white = |p: &[u8]| {
            (240..=250).contains(&p[0])
                && (240..=248).contains(&p[1])
                && (240..=250).contains(&p[2])
        };
        assert!(glass.chunks_exact(3).all(near_white));
        let distinct: std::collections::HashSet<&[u8]> = glass.chunks_exact(3).collect();
        assert!(distinct.len() > 10, "glass should not be flat");
        // Beyond the slide is glass too.
        let outside = render(&field, 10_000, 9_990, 64, 64);
        assert!(outside.chunks_exact(3).all(near_white));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let field = TissueField::new(0, 1000, 800, ALL, 0.5);
        field.render(0, 0, 0, 10, &mut []);
        field.render(0, 0, 10, 0, &mut []);
        // A short buffer gets the whole rows that fit.
        let mut short = vec![0; 10 * 3 * 2 + 5];
        field.render(0, 0, 10, 10, &mut short);
        assert!(short[..60].iter().all(|&v| v > 200) && short[60..].iter().all(|&v| v == 0));
        let mut out = vec![0; 4 * 4 * 3];
        field.render(u64::MAX - 2, u64::MAX - 2, 4, 4, &mut out);
        assert!(out.iter().all(|&v| v > 200));
        assert!(field.is_background(u64::MAX, u64::MAX, u32::MAX, u32::MAX));
        assert!(!field.is_background(0, 0, u32::MAX, u32::MAX));
        for (w, h) in [(0, 0), (1, 1), (0, 100), (3, 100_000)] {
            let tiny = TissueField::new(1, w, h, &[TissueClass::Adipose], 0.5);
            tiny.render(0, 0, 4, 4, &mut out);
            let _ = tiny.class_at(0, 0);
            let _ = tiny.is_background(0, 0, 4, 4);
        }
    }

    #[test]
    fn noise_row_matches_value_noise() {
        let mut row = NoiseRow::default();
        for (shift, x0) in [(3, 0u64), (6, 1000), (8, 123_457)] {
            row.prepare(shift, x0, 100);
            for y in [0u64, 5, 999, 70_001] {
                row.fill(77, y);
                let scale = 1.0 / f64::from(1u32 << shift);
                for col in 0..100 {
                    let expected =
                        value_noise(77, (x0 + col as u64) as f64 * scale, y as f64 * scale);
                    assert_eq!(row.at(col), expected);
                }
            }
        }
    }

    #[test]
    fn pixel_span_picks_pixel_centres() {
        assert_eq!(pixel_span(0.4, 2.6, 10), Some(0..3));
        assert_eq!(pixel_span(0.6, 2.4, 10), Some(1..2));
        assert_eq!(pixel_span(-5.0, 0.5, 10), Some(0..1));
        assert_eq!(pixel_span(-5.0, 0.4, 10), None);
        assert_eq!(pixel_span(9.4, 20.0, 10), Some(9..10));
        assert_eq!(pixel_span(9.6, 20.0, 10), None);
    }
}
