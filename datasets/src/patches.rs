//! Patch extraction: tissue mask → MPP-aware grid → patch shard, with per-slide QC.
//!
//! A shard is two objects, `research/patches/{params_hash}/{research slide id}.bin` (the patches'
//! JPEG streams back to back) and `.json` (its [`ShardIndex`]: where each patch lies on the
//! slide, its label, its byte range, its QC figures). `params_hash` covers every parameter and
//! the format version, so a changed parameter never reuses old patches.
//!
//! Where a patch is exactly a stored JPEG tile of the read level (the usual case of 256 px at a
//! slide's native 0.5 µm/px), its bytes are taken as stored: no re-encoding loss and no encoder
//! time. Everything else is read, resampled and encoded at [`ExtractParams::jpeg_quality`].

use std::io::Write;

use pathfed_slide::SlideReader;
use pathfed_slide::jpeg;
use pathfed_slide::resize::{Rect, read_scaled};
use pathfed_slide::tissue::{self, Grid, GridCell, GridParams, TissueParams};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::curate::Region;
use crate::error::{DatasetError, DatasetResult};

/// Version of the shard layout; part of every parameter hash.
pub const SHARD_FORMAT: u32 = 1;
/// Patches decoded and encoded together; bounds memory whatever the slide's size.
const CHUNK: usize = 128;

/// Every parameter of an extraction; fields left out of JSON take their defaults.
// Each field names its schema default: under `#[serde(default)]` utoipa would otherwise generate
// an `unwrap()` per field (the workspace denies those).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractParams {
    /// How tissue is found.
    #[schema(default = TissueParams::default)]
    pub tissue: TissueParams,
    /// Patch size, resolution and the tissue/pen thresholds.
    #[schema(default = GridParams::default)]
    pub grid: GridParams,
    /// JPEG quality of patches that are re-encoded.
    #[schema(default = 90)]
    pub jpeg_quality: u8,
    /// Variance of the Laplacian (grey levels²) below which a patch counts as blurred.
    #[schema(default = 50.0)]
    pub blur_threshold: f64,
    /// Label patches inside an annotated region with the region's label.
    #[schema(default = true)]
    pub region_labels: bool,
}

impl Default for ExtractParams {
    fn default() -> Self {
        Self {
            tissue: TissueParams::default(),
            grid: GridParams::default(),
            jpeg_quality: 90,
            blur_threshold: 50.0,
            region_labels: true,
        }
    }
}

impl ExtractParams {
    /// Refuses values no extraction can use.
    pub fn check(&self) -> DatasetResult<()> {
        let g = &self.grid;
        let bad = |what: String| Err(DatasetError::Invalid(what));
        if !(32..=2048).contains(&g.patch_px) {
            return bad(format!("patch size {} px: 32–2048", g.patch_px));
        }
        if !(g.patch_mpp >= 0.05 && g.patch_mpp <= 64.0) {
            return bad(format!("patch resolution {} µm/px: 0.05–64", g.patch_mpp));
        }
        if !(0.0..=1.0).contains(&g.min_tissue) || !(0.0..=1.0).contains(&g.max_pen) {
            return bad("tissue and pen shares are between 0 and 1".into());
        }
        if !(0.0..=0.1).contains(&g.mpp_tolerance) {
            return bad(format!(
                "MPP tolerance {}: 0–0.1 (0.02 reads a 0.499 µm/px scan as 0.5)",
                g.mpp_tolerance
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad(format!("JPEG quality {}: 1–100", self.jpeg_quality));
        }
        if !(self.tissue.mask_mpp >= 1.0 && self.tissue.mask_mpp <= 128.0) {
            return bad(format!(
                "mask resolution {} µm/px: 1–128",
                self.tissue.mask_mpp
            ));
        }
        if !(self.blur_threshold >= 0.0 && self.blur_threshold.is_finite()) {
            return bad(format!("blur threshold {}", self.blur_threshold));
        }
        Ok(())
    }

    /// A hash of every parameter and the shard format: the shards' folder.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_vec(&json!({ "format": SHARD_FORMAT, "params": self }))
            .unwrap_or_default();
        hex::encode(&Sha256::digest(&canonical)[..8])
    }
}

/// The object keys of a slide's shard: (index, patches).
pub fn shard_keys(params_hash: &str, research_slide: &str) -> (String, String) {
    let base = format!("research/patches/{params_hash}/{research_slide}");
    (format!("{base}.json"), format!("{base}.bin"))
}

/// One patch in a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchEntry {
    /// Left edge in level-0 pixels of the research slide.
    pub x: u64,
    /// Top edge in level-0 pixels.
    pub y: u64,
    /// Taxonomy code: the region's where the patch centre lies in a labelled region, else the slide's.
    pub label: String,
    /// Byte offset of the JPEG stream in the `.bin` object.
    pub offset: u64,
    /// Length of the JPEG stream.
    pub length: u64,
    /// Share of tissue under the patch.
    pub tissue: f32,
    /// Share of pen ink under the patch.
    pub pen: f32,
    /// Variance of the Laplacian of the patch's grey levels.
    pub sharpness: f32,
    /// Sharpness below the threshold.
    pub blurred: bool,
}

/// Quality figures of one slide's extraction, as the manifest reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlideQc {
    /// Share of the slide covered by tissue.
    pub tissue_fraction: f64,
    /// Share of the marked area that is pen ink.
    pub pen_fraction: f64,
    /// Patches written.
    pub patches: u64,
    /// Share of the patches that are blurred.
    pub blur_fraction: f64,
    /// Positions on tissue left out for pen ink.
    pub rejected_pen: u64,
    /// Patches labelled from a region rather than the slide.
    pub region_labelled: u64,
    /// Patches whose stored tile was taken as is.
    pub copied_tiles: u64,
}

/// The index of a slide's shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    /// [`SHARD_FORMAT`].
    pub format: u32,
    /// [`ExtractParams::hash`].
    pub params_hash: String,
    /// The research slide.
    pub research_slide: String,
    /// Patch side in pixels.
    pub patch_px: u32,
    /// The resolution patches really have (µm/px, x and y).
    pub mpp: (f64, f64),
    /// Patch side in level-0 pixels (x, y).
    pub footprint: (u64, u64),
    /// Quality figures.
    pub qc: SlideQc,
    /// The patches, row by row.
    pub patches: Vec<PatchEntry>,
}

impl ShardIndex {
    /// The JPEG stream of `entry` within the `.bin` bytes.
    pub fn patch<'a>(&self, bin: &'a [u8], entry: &PatchEntry) -> DatasetResult<&'a [u8]> {
        let start = usize::try_from(entry.offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(entry.length).unwrap_or(usize::MAX));
        bin.get(start..end).ok_or_else(|| {
            DatasetError::Invalid(format!(
                "shard of {}: patch at {}..{} lies past its {} bytes",
                self.research_slide,
                start,
                end,
                bin.len()
            ))
        })
    }

    /// The slide's QC with the extraction's key facts, for the manifest.
    pub fn manifest_entry(&self) -> Value {
        json!({ "patches": self.qc.patches, "qc": self.qc, "mpp": self.mpp })
    }
}

/// What one slide is labelled with.
pub struct SlideLabels<'a> {
    /// The slide-level label.
    pub slide: &'a str,
    /// Labelled regions in level-0 pixels.
    pub regions: &'a [Region],
}

/// Extracts the patches of one slide into `bin`, returning the shard's index. `progress` gets
/// (done, total) after each chunk and stops the work by returning false.
pub fn extract_slide(
    reader: &dyn SlideReader,
    research_slide: &str,
    labels: &SlideLabels<'_>,
    params: &ExtractParams,
    bin: &mut dyn Write,
    progress: &(dyn Fn(usize, usize) -> bool + Sync),
) -> DatasetResult<ShardIndex> {
    params.check()?;
    let mask = tissue::detect(reader, &params.tissue)?;
    let grid = tissue::grid(reader.properties(), &mask, &params.grid)?;
    let regions: Vec<(&str, Vec<[f64; 2]>)> = if params.region_labels {
        labels
            .regions
            .iter()
            .filter(|r| matches!(r.kind.as_str(), "polygon" | "rectangle"))
            .filter_map(|r| {
                let ring: Vec<[f64; 2]> = serde_json::from_value(r.geometry.clone()).ok()?;
                (ring.len() >= 3).then_some((r.label.as_str(), ring))
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut index = ShardIndex {
        format: SHARD_FORMAT,
        params_hash: params.hash(),
        research_slide: research_slide.to_string(),
        patch_px: params.grid.patch_px,
        mpp: grid.actual_mpp,
        footprint: grid.footprint,
        qc: SlideQc {
            tissue_fraction: mask.tissue_fraction(),
            pen_fraction: mask.pen_fraction(),
            patches: 0,
            blur_fraction: 0.0,
            rejected_pen: grid.rejected_pen,
            region_labelled: 0,
            copied_tiles: 0,
        },
        patches: Vec::with_capacity(grid.cells.len()),
    };
    let total = grid.cells.len();
    let mut offset = 0u64;
    let mut blurred = 0u64;
    for (done, chunk) in grid.cells.chunks(CHUNK).enumerate() {
        let read: Vec<ReadPatch> = chunk
            .par_iter()
            .map(|cell| read_patch(reader, &grid, cell, params))
            .collect::<DatasetResult<_>>()?;
        for (cell, patch) in chunk.iter().zip(read) {
            bin.write_all(&patch.jpeg)
                .map_err(|e| DatasetError::io("writing patches", e))?;
            let centre = (
                cell.x as f64 + grid.footprint.0 as f64 / 2.0,
                cell.y as f64 + grid.footprint.1 as f64 / 2.0,
            );
            let region = regions
                .iter()
                .find(|(_, ring)| contains(ring, centre))
                .map(|(label, _)| *label);
            index.qc.region_labelled += u64::from(region.is_some());
            index.qc.copied_tiles += u64::from(patch.copied);
            let is_blurred = patch.sharpness < params.blur_threshold;
            blurred += u64::from(is_blurred);
            index.patches.push(PatchEntry {
                x: cell.x,
                y: cell.y,
                label: region.unwrap_or(labels.slide).to_string(),
                offset,
                length: patch.jpeg.len() as u64,
                tissue: cell.tissue,
                pen: cell.pen,
                sharpness: patch.sharpness as f32,
                blurred: is_blurred,
            });
            offset += patch.jpeg.len() as u64;
        }
        if !progress(((done + 1) * CHUNK).min(total), total) {
            return Err(DatasetError::Conflict("extraction cancelled".into()));
        }
    }
    index.qc.patches = index.patches.len() as u64;
    index.qc.blur_fraction = if total == 0 {
        0.0
    } else {
        blurred as f64 / total as f64
    };
    Ok(index)
}

struct ReadPatch {
    jpeg: Vec<u8>,
    sharpness: f64,
    copied: bool,
}

fn read_patch(
    reader: &dyn SlideReader,
    grid: &Grid,
    cell: &GridCell,
    params: &ExtractParams,
) -> DatasetResult<ReadPatch> {
    let side = params.grid.patch_px;
    let level = &reader.properties().levels[grid.level];
    let level_ds = grid.level_downsample;
    let (lx, ly) = (cell.x as f64 / level_ds.0, cell.y as f64 / level_ds.1);
    let exact = grid.read_size == (f64::from(side), f64::from(side));
    if exact
        && level.tile_size == Some((side, side))
        && lx.fract() == 0.0
        && ly.fract() == 0.0
        && let Some(tile) = reader.raw_tile(
            grid.level,
            lx as u64 / u64::from(side),
            ly as u64 / u64::from(side),
        )?
        && (tile.width, tile.height) == (side, side)
    {
        let (jpeg, _) = jpeg::strip_metadata(&tile.jpeg).map_err(DatasetError::Invalid)?;
        let (w, h, rgb) = jpeg::decode_rgb(&jpeg, side).map_err(DatasetError::Invalid)?;
        return Ok(ReadPatch {
            sharpness: laplacian_variance(&rgb, w as usize, h as usize),
            jpeg,
            copied: true,
        });
    }
    let rect = Rect {
        x0: lx,
        y0: ly,
        x1: lx + grid.read_size.0,
        y1: ly + grid.read_size.1,
    };
    let image = read_scaled(reader, grid.level, rect, side, side)?;
    Ok(ReadPatch {
        sharpness: laplacian_variance(image.as_raw(), side as usize, side as usize),
        jpeg: jpeg::encode_rgb(&image, params.jpeg_quality)?,
        copied: false,
    })
}

/// Variance of the 4-neighbour Laplacian of the grey levels: low on out-of-focus patches.
pub fn laplacian_variance(rgb: &[u8], width: usize, height: usize) -> f64 {
    if width < 3 || height < 3 || rgb.len() < width * height * 3 {
        return 0.0;
    }
    let grey: Vec<f32> = rgb
        .chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let (mut sum, mut sum_sq, mut n) = (0f64, 0f64, 0f64);
    for y in 1..height - 1 {
        for x in 1..width - 1 {
            let at = y * width + x;
            let l =
                grey[at - 1] + grey[at + 1] + grey[at - width] + grey[at + width] - 4.0 * grey[at];
            sum += f64::from(l);
            sum_sq += f64::from(l) * f64::from(l);
            n += 1.0;
        }
    }
    let mean = sum / n;
    sum_sq / n - mean * mean
}

/// Even–odd test of a point against a closed ring (the closing vertex implied).
fn contains(ring: &[[f64; 2]], (x, y): (f64, f64)) -> bool {
    let mut inside = false;
    let mut j = ring.len() - 1;
    for i in 0..ring.len() {
        let ([xi, yi], [xj, yj]) = (ring[i], ring[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_changes_the_hash() {
        let base = ExtractParams::default();
        let changes: [fn(&mut ExtractParams); 12] = [
            |p| p.grid.patch_px = 224,
            |p| p.grid.mpp_tolerance = 0.0,
            |p| p.grid.patch_mpp = 1.0,
            |p| p.grid.min_tissue = 0.4,
            |p| p.grid.max_pen = 0.2,
            |p| p.tissue.mask_mpp = 16.0,
            |p| p.tissue.min_saturation = 0.08,
            |p| p.tissue.fixed_threshold = Some(0.1),
            |p| p.jpeg_quality = 80,
            |p| p.blur_threshold = 10.0,
            |p| p.region_labels = false,
            |_| {},
        ];
        let variants: Vec<ExtractParams> = changes
            .iter()
            .map(|change| {
                let mut p = base.clone();
                change(&mut p);
                p
            })
            .collect();
        let hashes: std::collections::BTreeSet<String> =
            variants.iter().map(ExtractParams::hash).collect();
        assert_eq!(hashes.len(), variants.len());
        assert_eq!(base.hash(), ExtractParams::default().hash(), "stable");
    }

    #[test]
    fn blur_lowers_the_laplacian_variance() {
        let sharp: Vec<u8> = (0..64 * 64)
            .flat_map(|i| {
                let v = if (i % 64 / 4 + i / 64 / 4) % 2 == 0 {
                    60
                } else {
                    200
                };
                [v, v, v]
            })
            .collect();
        let image = image::RgbImage::from_raw(64, 64, sharp.clone()).expect("image");
        let blurred = image::imageops::blur(&image, 3.0);
        let s = laplacian_variance(&sharp, 64, 64);
        let b = laplacian_variance(blurred.as_raw(), 64, 64);
        assert!(s > 1000.0 && b < 50.0, "sharp {s}, blurred {b}");
    }

    #[test]
    fn points_in_a_concave_ring() {
        let ring = [
            [0.0, 0.0],
            [10.0, 0.0],
            [10.0, 10.0],
            [5.0, 5.0],
            [0.0, 10.0],
        ];
        assert!(contains(&ring, (2.0, 2.0)));
        assert!(!contains(&ring, (5.0, 8.0)), "in the notch");
        assert!(!contains(&ring, (11.0, 1.0)));
    }
}
