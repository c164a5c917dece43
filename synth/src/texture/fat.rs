//! Adipose tissue: large empty cells of a jittered Voronoi diagram, pink membranes on their
//! walls, and flattened nuclei between neighbouring cells.

use super::Block;
use super::colour::Stain;
use super::noise::{SALT_FAT, SALT_FAT_NUCLEUS, SplitMix, fast_min, hash3};
use super::nucleus::{Nucleus, jittered};

/// Jittered-grid cell size in level-0 pixels (0.5 µm/px).
pub(super) const FAT_CELL: u64 = 56;

/// Jittered seed point of fat cell (cx, cy), in level-0 pixels.
fn fat_point(seed: u64, cx: u64, cy: u64) -> (f64, f64) {
    let mut bits = SplitMix(hash3(seed ^ SALT_FAT, cx, cy));
    let x = jittered(cx, FAT_CELL, 0.7 * (bits.unit() - 0.5));
    (x, jittered(cy, FAT_CELL, 0.7 * (bits.unit() - 0.5)))
}

/// Flattened nucleus on the wall between fat cell (cx, cy) and a neighbour, if any.
pub(super) fn fat_nucleus(seed: u64, cx: u64, cy: u64) -> Option<Nucleus> {
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
pub(super) struct FatCells {
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
    pub(super) fn fill(&mut self, seed: u64, block: &Block) {
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
    pub(super) fn cursor(&self, y: u64) -> FatCursor<'_> {
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
pub(super) struct FatCursor<'a> {
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
    pub(super) fn stain(&mut self, col: usize) -> Stain {
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
