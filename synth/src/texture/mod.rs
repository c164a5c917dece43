//! Procedural H&E-like tissue for synthetic whole-slide images: the public types (classes,
//! layouts, the tissue field) and the block renderer that puts the parts together.
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
//!
//! The parts, a file each: `layout` (where the tissue is and which class covers it), `dense`,
//! `stroma` and `fat` (each class's stain and nuclei), `nucleus` (nuclei and the jittered
//! grid that places them), `colour` (stains to RGB, glass and grain) and `noise` (hashing,
//! salts and noise primitives).

mod colour;
mod dense;
mod fat;
mod layout;
mod noise;
mod nucleus;
mod stroma;

use serde::{Deserialize, Serialize};

use self::colour::{Grain, Palette, Stain, glass};
use self::dense::{DENSE_CELL, dense_nucleus, dense_stain};
use self::fat::{FAT_CELL, FatCells, fat_nucleus};
use self::layout::{CELL_BACKGROUND, CELL_MIXED, Layout};
use self::noise::{NoiseRow, SALT_BLOTCH, SALT_GRAIN, SALT_MOTTLE, SALT_WARP};
use self::stroma::{Fibres, STROMA_CELL};

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

/// Edge of the square blocks `render` works in.
const BLOCK: usize = 128;
/// Lattice spacings (log2 of level-0 pixels) of the axis-aligned noises.
const MOTTLE_SHIFT: u32 = 3;
const BLOTCH_SHIFT: u32 = 6;
const WARP_SHIFT: u32 = 8;

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

#[cfg(test)]
mod tests {
    use super::noise::{SplitMix, value_noise};
    use super::nucleus::pixel_span;
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
