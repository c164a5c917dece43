//! Tissue detection on a low-resolution rendering of a slide, and the MPP-aware patch grid
//! laid over it.
//!
//! The mask follows the usual pipeline: render the slide at about [`TissueParams::mask_mpp`]
//! µm/px, threshold each pixel's HSV saturation (Otsu over the slide, never below a floor so
//! blank glass stays blank), a 3×3 median against speckle, then a closing and an opening against
//! holes and dust. Pen ink (saturated green/blue strokes, near-black marker) is found apart from
//! tissue: it must neither count as tissue nor end up in training patches.

use image::RgbImage;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SlideError};
use crate::reader::SlideProperties;
use crate::reader::SlideReader;
use crate::thumbnail::thumbnail;

/// How the mask is made.
// Each field names its schema default: under `#[serde(default)]` utoipa would otherwise generate
// an `unwrap()` per field (the workspace denies those).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TissueParams {
    /// Resolution of the mask in µm per pixel.
    #[schema(default = 8.0)]
    pub mask_mpp: f64,
    /// Saturation (0–1) below which nothing is tissue, whatever Otsu says.
    #[schema(default = 0.05)]
    pub min_saturation: f32,
    /// A fixed saturation threshold instead of Otsu's.
    #[schema(default = json!(null))]
    pub fixed_threshold: Option<f32>,
}

impl Default for TissueParams {
    fn default() -> Self {
        Self {
            mask_mpp: 8.0,
            min_saturation: 0.05,
            fixed_threshold: None,
        }
    }
}

/// Where a slide is assumed to be scanned when it does not say (a 20× scan).
pub const ASSUMED_MPP: f64 = 0.5;
/// The mask is never larger than this per side, however fine `mask_mpp` asks for.
const MAX_MASK_SIDE: u32 = 4096;

/// A low-resolution tissue mask and pen-ink mask, indexed `[row, col]`.
#[derive(Debug, Clone)]
pub struct TissueMask {
    /// True where there is tissue (and no pen).
    pub tissue: Array2<bool>,
    /// True where there is pen ink.
    pub pen: Array2<bool>,
    /// Level-0 pixels per mask pixel, along x and y.
    pub downsample: (f64, f64),
    /// The saturation threshold used.
    pub threshold: f32,
}

impl TissueMask {
    /// Share of the slide covered by tissue.
    pub fn tissue_fraction(&self) -> f64 {
        share(
            self.tissue.iter().filter(|t| **t).count(),
            self.tissue.len(),
        )
    }

    /// Share of the marked area (tissue or ink) that is pen ink.
    pub fn pen_fraction(&self) -> f64 {
        let pen = self.pen.iter().filter(|p| **p).count();
        let tissue = self.tissue.iter().filter(|t| **t).count();
        share(pen, pen + tissue)
    }

    /// Shares of tissue and of pen ink within a level-0 rectangle (mask pixels whose centre
    /// lies inside it).
    pub fn fractions_in(&self, x: u64, y: u64, w: u64, h: u64) -> (f64, f64) {
        let (rows, cols) = self.tissue.dim();
        let (dx, dy) = self.downsample;
        let span = |start: u64, len: u64, ds: f64, max: usize| {
            let first = ((start as f64 / ds) - 0.5).ceil().max(0.0) as usize;
            let end = (((start + len) as f64 / ds) - 0.5).ceil().max(0.0) as usize;
            (first.min(max), end.min(max).max(first.min(max)))
        };
        let (c0, c1) = span(x, w, dx, cols);
        let (r0, r1) = span(y, h, dy, rows);
        let (mut tissue, mut pen, mut all) = (0, 0, 0);
        for r in r0..r1 {
            for c in c0..c1 {
                all += 1;
                tissue += usize::from(self.tissue[[r, c]]);
                pen += usize::from(self.pen[[r, c]]);
            }
        }
        (share(tissue, all), share(pen, all))
    }
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Renders the slide at the mask resolution and classifies every pixel.
pub fn detect(slide: &dyn SlideReader, params: &TissueParams) -> Result<TissueMask> {
    if !(params.mask_mpp > 0.0 && params.mask_mpp.is_finite()) {
        return Err(SlideError::OutOfRange(format!(
            "mask resolution {} µm/px",
            params.mask_mpp
        )));
    }
    let properties = slide.properties();
    let (w0, h0) = properties.dimensions();
    let mpp = properties.mpp_x.unwrap_or(ASSUMED_MPP);
    let wanted = (w0.max(h0) as f64 * mpp / params.mask_mpp).ceil() as u32;
    let image = thumbnail(slide, wanted.clamp(1, MAX_MASK_SIDE))?;
    let mut mask = classify(&image, params);
    mask.downsample = (
        w0 as f64 / f64::from(image.width()),
        h0 as f64 / f64::from(image.height()),
    );
    Ok(mask)
}

/// Classifies the pixels of a low-resolution rendering (downsample left at 1).
pub fn classify(image: &RgbImage, params: &TissueParams) -> TissueMask {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut saturation = Array2::<f32>::zeros((h, w));
    let mut pen = Array2::<bool>::from_elem((h, w), false);
    let mut dark = Array2::<bool>::from_elem((h, w), false);
    for (x, y, pixel) in image.enumerate_pixels() {
        let (hue, s, v) = hsv(pixel.0);
        let at = [y as usize, x as usize];
        saturation[at] = s;
        // Green-to-blue ink is a hue H&E never takes; a marker's black is darker than any stain.
        pen[at] = (s > 0.3 && (80.0..=235.0).contains(&hue)) || v < 0.15;
        dark[at] = v < 0.15;
    }
    let threshold = params.fixed_threshold.unwrap_or_else(|| otsu(&saturation));
    let threshold = threshold.max(params.min_saturation);
    let raw = Array2::from_shape_fn((h, w), |at| {
        saturation[at] >= threshold && !pen[at] && !dark[at]
    });
    let tissue = open(&close(&median3(&raw)));
    let pen = median3(&pen);
    let tissue = Array2::from_shape_fn((h, w), |at| tissue[at] && !pen[at]);
    TissueMask {
        tissue,
        pen,
        downsample: (1.0, 1.0),
        threshold,
    }
}

/// Hue in degrees, saturation and value in 0–1.
fn hsv([r, g, b]: [u8; 3]) -> (f32, f32, f32) {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let s = if max > 0.0 { delta / max } else { 0.0 };
    let hue = if delta == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    (hue, s, max / 255.0)
}

/// Otsu's threshold over a 256-bin histogram of values in 0–1.
fn otsu(values: &Array2<f32>) -> f32 {
    let mut histogram = [0u64; 256];
    for v in values {
        histogram[(v.clamp(0.0, 1.0) * 255.0).round() as usize] += 1;
    }
    let total = values.len() as f64;
    let sum_all: f64 = (0..256).map(|i| i as f64 * histogram[i] as f64).sum();
    let (mut weight_low, mut sum_low) = (0.0, 0.0);
    let (mut best, mut best_between) = (0usize, -1.0);
    for (i, count) in histogram.iter().enumerate() {
        weight_low += *count as f64;
        sum_low += i as f64 * *count as f64;
        let weight_high = total - weight_low;
        if weight_low == 0.0 || weight_high == 0.0 {
            continue;
        }
        let mean_low = sum_low / weight_low;
        let mean_high = (sum_all - sum_low) / weight_high;
        let between = weight_low * weight_high * (mean_low - mean_high).powi(2);
        if between > best_between {
            best_between = between;
            best = i;
        }
    }
    // Pixels above bin `best` are the high class.
    (best as f32 + 0.5) / 255.0
}

/// Each pixel becomes the majority of its 3×3 neighbourhood (edges replicated).
fn median3(mask: &Array2<bool>) -> Array2<bool> {
    neighbourhood(mask, |count| count >= 5)
}

fn dilate(mask: &Array2<bool>) -> Array2<bool> {
    neighbourhood(mask, |count| count > 0)
}

fn erode(mask: &Array2<bool>) -> Array2<bool> {
    neighbourhood(mask, |count| count == 9)
}

fn close(mask: &Array2<bool>) -> Array2<bool> {
    erode(&dilate(mask))
}

fn open(mask: &Array2<bool>) -> Array2<bool> {
    dilate(&erode(mask))
}

/// Applies `keep(count of set pixels in the 3×3 neighbourhood)` to every pixel.
fn neighbourhood(mask: &Array2<bool>, keep: impl Fn(usize) -> bool) -> Array2<bool> {
    let (h, w) = mask.dim();
    Array2::from_shape_fn((h, w), |(r, c)| {
        let mut count = 0;
        for dr in [-1isize, 0, 1] {
            for dc in [-1isize, 0, 1] {
                let rr = (r as isize + dr).clamp(0, h as isize - 1) as usize;
                let cc = (c as isize + dc).clamp(0, w as isize - 1) as usize;
                count += usize::from(mask[[rr, cc]]);
            }
        }
        keep(count)
    })
}

/// How the patch grid is laid.
// Each field, as above, names its schema default: under `#[serde(default)]` utoipa would otherwise
// generate an `unwrap()` per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GridParams {
    /// Patch side in output pixels.
    #[schema(default = 256)]
    pub patch_px: u32,
    /// Resolution of the patches in µm per pixel.
    #[schema(default = 0.5)]
    pub patch_mpp: f64,
    /// Share of a patch that must be tissue.
    #[schema(default = 0.5)]
    pub min_tissue: f64,
    /// Share of a patch above which pen ink rejects it.
    #[schema(default = 0.05)]
    pub max_pen: f64,
    /// Relative distance from `patch_mpp` within which a pyramid level's own resolution is
    /// used as it is, without resampling (0.02: a 0.499 µm/px scan gives 0.5 µm/px patches).
    #[schema(default = 0.02)]
    pub mpp_tolerance: f64,
}

impl Default for GridParams {
    fn default() -> Self {
        Self {
            patch_px: 256,
            patch_mpp: 0.5,
            min_tissue: 0.5,
            max_pen: 0.05,
            mpp_tolerance: 0.02,
        }
    }
}

/// One patch position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GridCell {
    /// Left edge in level-0 pixels.
    pub x: u64,
    /// Top edge in level-0 pixels.
    pub y: u64,
    /// Share of tissue under the patch.
    pub tissue: f32,
    /// Share of pen ink under the patch.
    pub pen: f32,
}

/// The patch grid of a slide.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Grid {
    /// Side of every patch in level-0 pixels (x, y).
    pub footprint: (u64, u64),
    /// The pyramid level patches are read from.
    pub level: usize,
    /// Level-0 pixels per pixel of that level (x, y).
    pub level_downsample: (f64, f64),
    /// Side of a patch in pixels of that level (x, y).
    pub read_size: (f64, f64),
    /// The resolution the patches really have, after rounding the footprint to whole pixels.
    pub actual_mpp: (f64, f64),
    /// Patches on tissue, row by row.
    pub cells: Vec<GridCell>,
    /// Positions with enough tissue but too much pen ink.
    pub rejected_pen: u64,
}

/// Lays a non-overlapping grid of `patch_px` patches at `patch_mpp` over the slide and keeps the
/// positions on tissue. Needs the slide's MPP: a grid at a resolution cannot be laid without it.
pub fn grid(properties: &SlideProperties, mask: &TissueMask, params: &GridParams) -> Result<Grid> {
    let (mpp_x, mpp_y) = properties
        .mpp_x
        .zip(properties.mpp_y)
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .ok_or_else(|| {
            SlideError::OutOfRange(
                "the slide does not record its resolution (MPP); patches at a given µm/px need it"
                    .into(),
            )
        })?;
    if params.patch_px == 0 || !params.patch_mpp.is_finite() || params.patch_mpp <= 0.0 {
        return Err(SlideError::OutOfRange(format!(
            "patch size {} px at {} µm/px",
            params.patch_px, params.patch_mpp
        )));
    }
    if !(0.0..=0.1).contains(&params.mpp_tolerance) {
        return Err(SlideError::OutOfRange(format!(
            "MPP tolerance {} is not in 0–0.1",
            params.mpp_tolerance
        )));
    }
    if let Some(native) = native_level(properties, (mpp_x, mpp_y), params) {
        return Ok(lay(properties, mask, params, native));
    }
    let side = f64::from(params.patch_px) * params.patch_mpp;
    let footprint = (
        (side / mpp_x).round().max(1.0) as u64,
        (side / mpp_y).round().max(1.0) as u64,
    );
    let downsample = footprint.0 as f64 / f64::from(params.patch_px);
    let level = properties.best_level_for_downsample(downsample);
    let level_ds = level_downsample(properties, level);
    Ok(lay(
        properties,
        mask,
        params,
        Layout {
            footprint,
            level,
            level_ds,
            mpp: (mpp_x, mpp_y),
        },
    ))
}

/// Where a grid's patches come from: their level-0 side, the level read and its downsample,
/// and the slide's level-0 resolution.
struct Layout {
    footprint: (u64, u64),
    level: usize,
    level_ds: (f64, f64),
    mpp: (f64, f64),
}

/// Level-0 pixels per pixel of `level`, from the level sizes (which a pyramid rounds).
fn level_downsample(properties: &SlideProperties, level: usize) -> (f64, f64) {
    let (w0, h0) = properties.dimensions();
    (
        w0 as f64 / properties.levels[level].width as f64,
        h0 as f64 / properties.levels[level].height as f64,
    )
}

/// A level whose own resolution lies within the tolerance of the target, with a whole-number
/// downsample (so patch corners fall on its pixels): its patches are its pixels, read as they
/// are stored, where a grid at exactly `patch_mpp` would resample every one of them (257 → 256
/// px for a 0.499 µm/px scan). A pyramid that rounded a level's size (32,914 px over 8,229)
/// still counts as whole: the rounding is less than one of that level's pixels.
fn native_level(
    properties: &SlideProperties,
    (mpp_x, mpp_y): (f64, f64),
    params: &GridParams,
) -> Option<Layout> {
    let near = |mpp: f64| (mpp / params.patch_mpp - 1.0).abs() <= params.mpp_tolerance;
    let (w0, h0) = properties.dimensions();
    (0..properties.levels.len()).find_map(|level| {
        let (ds_x, ds_y) = level_downsample(properties, level);
        let k = ds_x.round().max(1.0);
        let info = &properties.levels[level];
        let rounds_to = |full: u64, size: u64| (full as f64 - size as f64 * k).abs() < k;
        let whole = ds_y.round() == k && rounds_to(w0, info.width) && rounds_to(h0, info.height);
        (whole && near(mpp_x * k) && near(mpp_y * k)).then(|| Layout {
            footprint: (
                u64::from(params.patch_px) * k as u64,
                u64::from(params.patch_px) * k as u64,
            ),
            level,
            level_ds: (k, k),
            mpp: (mpp_x, mpp_y),
        })
    })
}

/// The grid of `layout` over the slide, keeping the cells on tissue without too much ink.
fn lay(
    properties: &SlideProperties,
    mask: &TissueMask,
    params: &GridParams,
    Layout {
        footprint,
        level,
        level_ds,
        mpp: (mpp_x, mpp_y),
    }: Layout,
) -> Grid {
    let (w0, h0) = properties.dimensions();
    let mut cells = Vec::new();
    let mut rejected_pen = 0;
    for row in 0..h0 / footprint.1 {
        for col in 0..w0 / footprint.0 {
            let (x, y) = (col * footprint.0, row * footprint.1);
            let (tissue, pen) = mask.fractions_in(x, y, footprint.0, footprint.1);
            if tissue < params.min_tissue {
                continue;
            }
            if pen > params.max_pen {
                rejected_pen += 1;
                continue;
            }
            cells.push(GridCell {
                x,
                y,
                tissue: tissue as f32,
                pen: pen as f32,
            });
        }
    }
    Grid {
        footprint,
        level,
        level_downsample: level_ds,
        read_size: (
            footprint.0 as f64 / level_ds.0,
            footprint.1 as f64 / level_ds.1,
        ),
        actual_mpp: (
            footprint.0 as f64 * mpp_x / f64::from(params.patch_px),
            footprint.1 as f64 * mpp_y / f64::from(params.patch_px),
        ),
        cells,
        rejected_pen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Glass with a pink disc of "tissue" and a blue pen stroke across its right side.
    fn painted() -> RgbImage {
        RgbImage::from_fn(100, 80, |x, y| {
            let (dx, dy) = (x as i32 - 40, y as i32 - 40);
            if (70..74).contains(&x) && (10..70).contains(&y) {
                Rgb([40, 70, 200])
            } else if dx * dx + dy * dy < 25 * 25 {
                Rgb([200, 120 + (x % 7) as u8, 170])
            } else {
                Rgb([244, 243, 246])
            }
        })
    }

    #[test]
    fn tissue_is_the_stained_disc_and_pen_is_not_tissue() {
        let mask = classify(&painted(), &TissueParams::default());
        assert!(mask.tissue[[40, 40]]);
        assert!(!mask.tissue[[5, 5]], "glass");
        assert!(mask.pen[[40, 71]] && !mask.tissue[[40, 71]], "blue ink");
        let disc = std::f64::consts::PI * 25.0 * 25.0 / (100.0 * 80.0);
        assert!((mask.tissue_fraction() - disc).abs() < 0.02);
        assert!(mask.pen_fraction() > 0.05 && mask.pen_fraction() < 0.2);
    }

    #[test]
    fn blank_glass_has_no_tissue_even_though_otsu_always_splits() {
        let glass = RgbImage::from_fn(64, 64, |x, y| Rgb([244, 243 + ((x + y) % 3) as u8, 246]));
        let mask = classify(&glass, &TissueParams::default());
        assert_eq!(mask.tissue_fraction(), 0.0);
    }

    #[test]
    fn median_and_morphology_drop_specks_and_fill_pinholes() {
        let image = RgbImage::from_fn(40, 40, |x, y| {
            let inside = (10..30).contains(&x) && (10..30).contains(&y);
            match (inside, (x, y)) {
                (true, (20, 20)) => Rgb([244, 243, 246]),
                (false, (3, 3)) => Rgb([200, 100, 170]),
                (true, _) => Rgb([200, 100, 170]),
                (false, _) => Rgb([244, 243, 246]),
            }
        });
        let mask = classify(&image, &TissueParams::default());
        assert!(mask.tissue[[20, 20]], "pinhole filled");
        assert!(!mask.tissue[[3, 3]], "speck dropped");
    }

    #[test]
    fn grid_is_laid_at_the_requested_resolution_and_only_on_tissue() {
        let mut mask = classify(&painted(), &TissueParams::default());
        // Mask pixels of 16 level-0 pixels; a slide of 1600×1280 at 0.25 µm/px.
        mask.downsample = (16.0, 16.0);
        let properties = SlideProperties {
            vendor: "generic-tiff".into(),
            backend: "tiff",
            levels: vec![
                crate::reader::Level {
                    width: 1600,
                    height: 1280,
                    downsample: 1.0,
                    tile_size: Some((256, 256)),
                },
                crate::reader::Level {
                    width: 800,
                    height: 640,
                    downsample: 2.0,
                    tile_size: Some((256, 256)),
                },
            ],
            mpp_x: Some(0.25),
            mpp_y: Some(0.25),
            objective_power: Some(40.0),
            bounds: None,
            associated_images: vec![],
            raw: Default::default(),
        };
        let params = GridParams {
            patch_px: 64,
            patch_mpp: 0.5,
            ..GridParams::default()
        };
        let grid = grid(&properties, &mask, &params).expect("grid");
        assert_eq!(grid.footprint, (128, 128));
        assert_eq!(grid.level, 1);
        assert_eq!(grid.read_size, (64.0, 64.0));
        assert_eq!(grid.actual_mpp, (0.5, 0.5));
        assert!(!grid.cells.is_empty());
        for cell in &grid.cells {
            assert!(cell.tissue >= 0.5);
            let (cx, cy) = ((cell.x + 64) / 16, (cell.y + 64) / 16);
            let (dx, dy) = (cx as i64 - 40, cy as i64 - 40);
            assert!(
                dx * dx + dy * dy < 30 * 30,
                "patch at {cell:?} is off the disc"
            );
        }
        let no_mpp = SlideProperties {
            mpp_x: None,
            ..properties.clone()
        };
        assert!(super::grid(&no_mpp, &mask, &params).is_err());

        // A scan at 0.499 µm/px is within 2% of 0.5 at level 0's own pixels: the patches are
        // its pixels, read without resampling. At 0.48 it is not, and the grid resamples.
        let at = |mpp: f64| SlideProperties {
            mpp_x: Some(mpp),
            mpp_y: Some(mpp),
            ..properties.clone()
        };
        let wide = GridParams {
            patch_px: 256,
            ..params.clone()
        };
        let native = super::grid(&at(0.499), &mask, &wide).expect("grid");
        assert_eq!((native.level, native.footprint), (0, (256, 256)));
        assert_eq!(native.read_size, (256.0, 256.0));
        assert_eq!(native.actual_mpp, (0.499, 0.499));
        let resampled = super::grid(&at(0.48), &mask, &wide).expect("grid");
        assert_eq!(resampled.footprint, (267, 267));
        let exact = GridParams {
            mpp_tolerance: 0.0,
            ..wide
        };
        assert_eq!(
            super::grid(&at(0.499), &mask, &exact)
                .expect("grid")
                .footprint,
            (257, 257)
        );
        // Level 1 (downsample 2) of a 0.2505 µm/px scan is 0.501 µm/px: read there, as stored.
        let level1 = super::grid(&at(0.2505), &mask, &params).expect("grid");
        assert_eq!((level1.level, level1.footprint), (1, (128, 128)));
        assert_eq!(level1.read_size, (64.0, 64.0));
        // A pyramid that rounds up (1601 px over 801 at level 1) is still read there, as stored.
        let mut rounded = at(0.2505);
        rounded.levels[0].width = 1601;
        rounded.levels[1].width = 801;
        let level1 = super::grid(&rounded, &mask, &params).expect("grid");
        assert_eq!((level1.level, level1.level_downsample), (1, (2.0, 2.0)));
        assert_eq!(level1.read_size, (64.0, 64.0));
        let too_loose = GridParams {
            mpp_tolerance: 0.5,
            ..params
        };
        assert!(super::grid(&at(0.499), &mask, &too_loose).is_err());
    }
}
