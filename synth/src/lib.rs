//! Synthetic test slides: Aperio-style SVS and generic pyramidal TIFFs of any size, with
//! procedurally textured tissue of selectable classes, label and macro images, and metadata
//! set to given strings. Tests and benchmarks make their slides here instead of downloading.
//!
//! Level 0 is rendered one row of tiles at a time; each finished band of rows is box-averaged
//! into the band of the next level, so memory stays at a few tile rows per level whatever the
//! slide size.
//!
//! A crate of its own, apart from `pathfed-slide`: readers never need the generator, and the
//! generator writes through the slide crate's public TIFF writer and JPEG helpers, whose
//! errors ([`SlideError`]) it reports.

pub mod label;
pub mod texture;

use std::path::Path;

use image::RgbImage;
use pathfed_slide::jpeg;
use pathfed_slide::tiff::file::tag;
use pathfed_slide::tiff::writer::{Directory, TiffWriter, Value};
use pathfed_slide::{Result, SlideError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use self::texture::{ClassLayout, TissueClass, TissueField};

/// The file layout to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthFormat {
    /// Aperio SVS: levels reduced 4× each, thumbnail, label and macro directories.
    Svs,
    /// A generic tiled pyramid: levels reduced 2× each, resolution tags, no associated images.
    GenericTiff,
}

/// How tiles are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SynthCompression {
    /// JPEG in YCbCr with 4:2:0 subsampling and shared tables.
    Jpeg,
    /// JPEG with untransformed RGB components (Aperio's "JPEG/RGB") and shared tables.
    JpegRgb,
    /// LZW with the horizontal predictor.
    Lzw,
    /// Deflate.
    Deflate,
    /// Uncompressed.
    None,
}

/// Everything that defines a synthetic slide; the same spec always gives the same pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthSpec {
    /// Level-0 width in pixels.
    pub width: u64,
    /// Level-0 height in pixels.
    pub height: u64,
    /// Tile width and height.
    pub tile_size: u32,
    /// File layout.
    pub format: SynthFormat,
    /// Tile compression.
    pub compression: SynthCompression,
    /// JPEG quality (1–100).
    pub jpeg_quality: u8,
    /// Write a BigTIFF (64-bit offsets).
    pub big_tiff: bool,
    /// Micrometres per pixel at level 0.
    pub mpp: f64,
    /// Objective magnification.
    pub objective_power: u32,
    /// Tissue classes present.
    pub classes: Vec<TissueClass>,
    /// How the classes share the tissue.
    #[serde(default)]
    pub layout: ClassLayout,
    /// Rough fraction of the slide covered by tissue.
    pub tissue_fraction: f64,
    /// Seed of the tissue layout and texture.
    pub seed: u64,
    /// Text lines printed on the label (SVS only).
    pub label_lines: Vec<String>,
    /// Barcode on the label (SVS only).
    pub barcode: String,
    /// Extra `key = value` metadata fields (SVS description; generic TIFF: Software/Artist/DateTime/Make/Model by name).
    pub metadata: Vec<(String, String)>,
    /// Text hidden where a careless copy would carry it along: a comment in the JPEG tables,
    /// an EXIF-style segment in the first tile, the descriptions of the label and macro, and a
    /// directory no other directory links to. For de-identification tests.
    #[serde(default)]
    pub hidden_text: Option<String>,
}

impl Default for SynthSpec {
    fn default() -> Self {
        Self {
            width: 4096,
            height: 3072,
            tile_size: 256,
            format: SynthFormat::Svs,
            compression: SynthCompression::JpegRgb,
            jpeg_quality: 80,
            big_tiff: false,
            mpp: 0.499,
            objective_power: 20,
            classes: TissueClass::ALL.to_vec(),
            layout: ClassLayout::Regions,
            tissue_fraction: 0.4,
            seed: 1,
            label_lines: vec!["PATHFED TEST".into(), "S-0001".into()],
            barcode: "S-0001".into(),
            metadata: Vec::new(),
            hidden_text: None,
        }
    }
}

impl SynthSpec {
    /// The tissue this spec paints: which class covers which level-0 pixel (the ground truth
    /// tests compare models' maps with).
    pub fn tissue_field(&self) -> TissueField {
        TissueField::with_layout(
            self.seed,
            self.width,
            self.height,
            &self.classes,
            self.tissue_fraction,
            self.layout,
        )
    }
}

/// What the generator wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SynthReport {
    /// (width, height) of every pyramid level.
    pub levels: Vec<(u64, u64)>,
    /// Tiles written over all levels.
    pub tiles: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}

/// Near-white glass, used for tiles the texture reports as empty.
const GLASS: [u8; 3] = [245, 244, 246];
/// The largest level at most this big is kept whole to make the thumbnail and macro from.
const KEEP_WHOLE_PIXELS: u64 = 16 << 20;

/// Encodes tiles the same way for the whole file, so the tables can be shared.
struct TileEncoder {
    compression: SynthCompression,
    quality: u8,
}

impl TileEncoder {
    /// Compresses one full tile (or strip) of RGB pixels.
    fn encode(&self, rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
        Ok(match self.compression {
            SynthCompression::Jpeg => jpeg::encode_raw(rgb, w, h, self.quality)?,
            SynthCompression::JpegRgb => jpeg::encode_raw_rgb_components(rgb, w, h, self.quality)?,
            SynthCompression::Lzw => {
                let mut delta = rgb.to_vec();
                apply_horizontal_predictor(&mut delta, w as usize);
                weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
                    .encode(&delta)
                    .map_err(|e| SlideError::Encode(format!("LZW: {e}")))?
            }
            SynthCompression::Deflate => {
                use std::io::Write;
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
                z.write_all(rgb)
                    .and_then(|()| z.finish())
                    .map_err(|e| SlideError::Encode(format!("deflate: {e}")))?
            }
            SynthCompression::None => rgb.to_vec(),
        })
    }

    fn is_jpeg(&self) -> bool {
        matches!(
            self.compression,
            SynthCompression::Jpeg | SynthCompression::JpegRgb
        )
    }

    fn code(&self) -> u16 {
        match self.compression {
            SynthCompression::Jpeg | SynthCompression::JpegRgb => 7,
            SynthCompression::Lzw => 5,
            SynthCompression::Deflate => 8,
            SynthCompression::None => 1,
        }
    }
}

fn apply_horizontal_predictor(rgb: &mut [u8], width: usize) {
    for row in rgb.chunks_exact_mut(width * 3) {
        for i in (3..row.len()).rev() {
            row[i] = row[i].wrapping_sub(row[i - 3]);
        }
    }
}

/// Splits full JPEG streams into shared tables + abbreviated tile streams, as TIFF stores them.
#[derive(Default)]
struct JpegTables {
    tables: Option<Vec<u8>>,
}

impl JpegTables {
    /// Returns the abbreviated stream of `full`, recording the tables the first time. A stream
    /// whose tables differ keeps them inline, which TIFF readers also accept.
    fn abbreviate(&mut self, full: &[u8]) -> Result<Vec<u8>> {
        let (segments, scan) = jpeg::split_header(full).map_err(SlideError::Encode)?;
        let mut tables = vec![0xFF, 0xD8];
        let mut rest = vec![0xFF, 0xD8];
        for s in &segments {
            match s.marker {
                0xDB | 0xC4 => jpeg::push_segment(&mut tables, s.marker, s.payload),
                // JFIF says "YCbCr"; TIFF's Photometric tag says what the samples are.
                0xE0 => {}
                _ => jpeg::push_segment(&mut rest, s.marker, s.payload),
            }
        }
        tables.extend_from_slice(&[0xFF, 0xD9]);
        let shared = self.tables.get_or_insert_with(|| tables.clone());
        if *shared != tables {
            // Keep this stream's own tables inline.
            let mut inline = tables[..tables.len() - 2].to_vec();
            inline.extend_from_slice(&rest[2..]);
            inline.extend_from_slice(scan);
            return Ok(inline);
        }
        rest.extend_from_slice(scan);
        Ok(rest)
    }
}

/// One pyramid level being written: a band of up to one tile row, and its tiles' positions.
struct LevelBand {
    width: u64,
    height: u64,
    band: Vec<u8>,
    band_rows: u32,
    rows_done: u64,
    offsets: Vec<u64>,
    counts: Vec<u64>,
    whole: Option<Vec<u8>>,
}

impl LevelBand {
    fn new(width: u64, height: u64, tile: u32, keep_whole: bool) -> Self {
        Self {
            width,
            height,
            band: Vec::with_capacity(width as usize * tile as usize * 3),
            band_rows: 0,
            rows_done: 0,
            offsets: Vec::new(),
            counts: Vec::new(),
            whole: keep_whole.then(Vec::new),
        }
    }
}

struct Pyramid<'a> {
    levels: Vec<LevelBand>,
    factor: usize,
    tile: u32,
    encoder: TileEncoder,
    tables: JpegTables,
    writer: &'a mut TiffWriter,
    hidden_text: Option<&'a str>,
}

impl Pyramid<'_> {
    /// Appends full-width `rows` to `level`, flushing each completed band.
    fn push_rows(&mut self, level: usize, rows: &[u8]) -> Result<()> {
        let row_bytes = self.levels[level].width as usize * 3;
        for row in rows.chunks_exact(row_bytes) {
            let band = &mut self.levels[level];
            band.band.extend_from_slice(row);
            band.band_rows += 1;
            band.rows_done += 1;
            if band.band_rows == self.tile || band.rows_done == band.height {
                self.flush(level)?;
            }
        }
        Ok(())
    }

    /// Writes the band of `level` as one row of tiles, then reduces it into the next level.
    fn flush(&mut self, level: usize) -> Result<()> {
        let band = std::mem::take(&mut self.levels[level].band);
        let width = self.levels[level].width as usize;
        let rows = self.levels[level].band_rows as usize;
        let tile = self.tile as usize;
        let encoded: Vec<Vec<u8>> = (0..width.div_ceil(tile))
            .into_par_iter()
            .map(|col| {
                // TIFF tiles are always whole; the part past the image edge is white.
                let mut pixels = vec![255u8; tile * tile * 3];
                let x0 = col * tile;
                let span = (width - x0).min(tile) * 3;
                for r in 0..rows {
                    let src = (r * width + x0) * 3;
                    pixels[r * tile * 3..][..span].copy_from_slice(&band[src..src + span]);
                }
                self.encoder.encode(&pixels, self.tile, self.tile)
            })
            .collect::<Result<_>>()?;
        for bytes in encoded {
            let mut stored = if self.encoder.is_jpeg() {
                self.tables.abbreviate(&bytes)?
            } else {
                bytes
            };
            if let (true, 0, true, Some(text)) = (
                self.encoder.is_jpeg(),
                level,
                self.levels[0].offsets.is_empty(),
                self.hidden_text,
            ) {
                // An EXIF-style segment in the very first tile, right after SOI.
                let mut segment = Vec::new();
                jpeg::push_segment(&mut segment, 0xE1, format!("Exif\0\0{text}").as_bytes());
                stored.splice(2..2, segment);
            }
            let (offset, len) = self.writer.append(&stored)?;
            self.levels[level].offsets.push(offset);
            self.levels[level].counts.push(len);
        }
        if let Some(whole) = &mut self.levels[level].whole {
            whole.extend_from_slice(&band);
        }
        let reduced =
            (level + 1 < self.levels.len()).then(|| reduce(&band, width, rows, self.factor));
        let state = &mut self.levels[level];
        state.band = band;
        state.band.clear();
        state.band_rows = 0;
        match reduced {
            Some(rows) => self.push_rows(level + 1, &rows),
            None => Ok(()),
        }
    }
}

/// Box-averages `rows` rows of `width` RGB pixels by `factor` in both directions.
fn reduce(band: &[u8], width: usize, rows: usize, factor: usize) -> Vec<u8> {
    if factor == 0 || width == 0 || rows == 0 {
        return Vec::new();
    }
    let out_w = width.div_ceil(factor);
    let out_h = rows.div_ceil(factor);
    let mut out = vec![0u8; out_w * out_h * 3];
    for oy in 0..out_h {
        let y_end = ((oy + 1) * factor).min(rows);
        for ox in 0..out_w {
            let x_end = ((ox + 1) * factor).min(width);
            let mut sum = [0u32; 3];
            let mut n = 0u32;
            for y in oy * factor..y_end {
                let row = &band[(y * width + ox * factor) * 3..(y * width + x_end) * 3];
                for p in row.chunks_exact(3) {
                    sum[0] += u32::from(p[0]);
                    sum[1] += u32::from(p[1]);
                    sum[2] += u32::from(p[2]);
                    n += 1;
                }
            }
            let o = (oy * out_w + ox) * 3;
            for c in 0..3 {
                out[o + c] = ((sum[c] + n / 2) / n) as u8;
            }
        }
    }
    out
}

/// Pixel sizes of every level: reduced by `factor` until the next would be smaller than `min_side`.
fn level_dimensions(width: u64, height: u64, factor: u64, min_side: u64) -> Vec<(u64, u64)> {
    let mut levels = vec![(width, height)];
    let (mut w, mut h) = (width, height);
    while w.max(h) / factor >= min_side {
        w = w.div_ceil(factor);
        h = h.div_ceil(factor);
        levels.push((w, h));
    }
    levels
}

fn check_spec(spec: &SynthSpec) -> Result<()> {
    let bad = |m: String| Err(SlideError::OutOfRange(m));
    if spec.width == 0 || spec.height == 0 || spec.width > 1_000_000 || spec.height > 1_000_000 {
        return bad(format!("slide size {}×{}", spec.width, spec.height));
    }
    if spec.tile_size < 16 || spec.tile_size > 4096 || !spec.tile_size.is_multiple_of(16) {
        return bad(format!(
            "tile size {} (a multiple of 16 from 16 to 4096)",
            spec.tile_size
        ));
    }
    if !(spec.mpp > 0.0 && spec.mpp.is_finite()) {
        return bad(format!("MPP {}", spec.mpp));
    }
    if !(0.0..=1.0).contains(&spec.tissue_fraction) {
        return bad(format!("tissue fraction {}", spec.tissue_fraction));
    }
    Ok(())
}

/// Writes the slide `spec` describes to `path` (atomically); `progress` gets (level-0 tiles
/// done, total).
pub fn generate(
    spec: &SynthSpec,
    path: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<SynthReport> {
    check_spec(spec)?;
    let svs = spec.format == SynthFormat::Svs;
    let factor: u64 = if svs { 4 } else { 2 };
    let min_side = if svs { 512 } else { u64::from(spec.tile_size) };
    let dims = level_dimensions(spec.width, spec.height, factor, min_side);
    let field = spec.tissue_field();
    // Reduced levels end below 2048 px a side, so one always qualifies.
    let overview_level = dims.iter().position(|&(w, h)| w * h <= KEEP_WHOLE_PIXELS);
    let mut writer = TiffWriter::create(path, spec.big_tiff)?;
    let tile = spec.tile_size;
    let mut pyramid = Pyramid {
        levels: dims
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| LevelBand::new(w, h, tile, Some(i) == overview_level))
            .collect(),
        factor: factor as usize,
        tile,
        encoder: TileEncoder {
            compression: spec.compression,
            quality: spec.jpeg_quality,
        },
        tables: JpegTables::default(),
        writer: &mut writer,
        hidden_text: spec.hidden_text.as_deref(),
    };

    // Level 0, one row of tiles at a time.
    let (w, h) = (spec.width, spec.height);
    let (cols, rows) = (w.div_ceil(u64::from(tile)), h.div_ceil(u64::from(tile)));
    for row in 0..rows {
        let y = row * u64::from(tile);
        let band_h = (h - y).min(u64::from(tile)) as u32;
        let tiles: Vec<Vec<u8>> = (0..cols)
            .into_par_iter()
            .map(|col| {
                let x = col * u64::from(tile);
                let tile_w = (w - x).min(u64::from(tile)) as u32;
                let mut pixels = vec![0u8; tile_w as usize * band_h as usize * 3];
                if field.is_background(x, y, tile_w, band_h) {
                    pixels
                        .chunks_exact_mut(3)
                        .for_each(|p| p.copy_from_slice(&GLASS));
                } else {
                    field.render(x, y, tile_w, band_h, &mut pixels);
                }
                pixels
            })
            .collect();
        let mut band = Vec::with_capacity(w as usize * band_h as usize * 3);
        for r in 0..band_h as usize {
            for (col, pixels) in tiles.iter().enumerate() {
                let tile_w = (w - col as u64 * u64::from(tile)).min(u64::from(tile)) as usize;
                band.extend_from_slice(&pixels[r * tile_w * 3..(r + 1) * tile_w * 3]);
            }
        }
        pyramid.push_rows(0, &band)?;
        progress((row + 1) * cols, rows * cols);
    }

    let mut tables = pyramid.tables.tables.take();
    if let (Some(t), Some(text)) = (tables.as_mut(), spec.hidden_text.as_deref()) {
        let mut comment = Vec::new();
        jpeg::push_segment(&mut comment, 0xFE, text.as_bytes());
        t.splice(2..2, comment);
    }
    let hidden = |description: &str| match spec.hidden_text.as_deref() {
        Some(text) => format!("{description} {text}"),
        None => description.to_string(),
    };
    let mut levels = std::mem::take(&mut pyramid.levels);
    let encoder = pyramid.encoder;
    let overview = overview_level
        .and_then(|i| {
            let level = &mut levels[i];
            RgbImage::from_raw(level.width as u32, level.height as u32, level.whole.take()?)
        })
        .ok_or_else(|| SlideError::Encode("no level small enough for an overview".into()))?;

    let describe = |extra: &str| -> String {
        let mut d = format!(
            "Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}){extra} {} Q={}|AppMag = {}|MPP = {:.4}",
            compression_label(spec.compression),
            spec.jpeg_quality,
            spec.objective_power,
            spec.mpp
        );
        for (k, v) in &spec.metadata {
            d.push_str(&format!("|{k} = {v}"));
        }
        d
    };
    let mut directories = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let mut dir = image_directory(&encoder, level.width, level.height, tables.as_deref());
        dir.set(tag::TILE_WIDTH, Value::Long(vec![tile]))
            .set(tag::TILE_LENGTH, Value::Long(vec![tile]))
            .set(tag::TILE_OFFSETS, writer.offsets_value(&level.offsets))
            .set(tag::TILE_BYTE_COUNTS, writer.offsets_value(&level.counts));
        if svs {
            let extra = if i == 0 {
                String::new()
            } else {
                format!(" -> {}x{}", level.width, level.height)
            };
            dir.set(tag::IMAGE_DESCRIPTION, Value::Ascii(describe(&extra)));
        } else {
            if i > 0 {
                dir.set(tag::NEW_SUBFILE_TYPE, Value::Long(vec![1]));
            }
            set_generic_metadata(&mut dir, spec);
        }
        directories.push(dir);
    }

    if svs {
        // Aperio order: level 0, thumbnail, reduced levels, label, macro.
        let (tw, th) = fit(overview.width(), overview.height(), 768);
        let thumb =
            image::imageops::resize(&overview, tw, th, image::imageops::FilterType::Triangle);
        let mut tables_for_strips = JpegTables {
            tables: tables.clone(),
        };
        let mut thumb_dir = write_strips(&mut writer, &encoder, &mut tables_for_strips, &thumb)?;
        thumb_dir.set(
            tag::IMAGE_DESCRIPTION,
            Value::Ascii(format!(
                "Aperio Image Library v12.0.15\r\n{w}x{h} -> {tw}x{th} - |AppMag = {}|MPP = {:.4}",
                spec.objective_power, spec.mpp
            )),
        );
        directories.insert(1, thumb_dir);

        let lines: Vec<&str> = spec.label_lines.iter().map(String::as_str).collect();
        let label = label::render_label(400, 400, &lines, &spec.barcode);
        let lzw = TileEncoder {
            compression: SynthCompression::Lzw,
            quality: spec.jpeg_quality,
        };
        let mut label_dir = write_strips(&mut writer, &lzw, &mut JpegTables::default(), &label)?;
        label_dir
            .set(tag::NEW_SUBFILE_TYPE, Value::Long(vec![1]))
            .set(
                tag::IMAGE_DESCRIPTION,
                Value::Ascii(hidden("Aperio Image Library v12.0.15\nlabel 400x400")),
            );
        directories.push(label_dir);

        let macro_image = label::render_macro(1280, 431, &lines, &spec.barcode, &overview);
        let ycc = TileEncoder {
            compression: SynthCompression::Jpeg,
            quality: 85,
        };
        let mut macro_dir =
            write_strips(&mut writer, &ycc, &mut JpegTables::default(), &macro_image)?;
        macro_dir
            .set(tag::NEW_SUBFILE_TYPE, Value::Long(vec![9]))
            .set(
                tag::IMAGE_DESCRIPTION,
                Value::Ascii(hidden("Aperio Image Library v12.0.15\nmacro 1280x431")),
            );
        directories.push(macro_dir);
    }
    if let Some(text) = spec.hidden_text.as_deref() {
        let mut orphan = Directory::default();
        orphan
            .set(tag::IMAGE_WIDTH, Value::Long(vec![1]))
            .set(tag::IMAGE_LENGTH, Value::Long(vec![1]))
            .set(
                tag::IMAGE_DESCRIPTION,
                Value::Ascii(format!("orphan {text}")),
            )
            .set(tag::SOFTWARE, Value::Ascii(text.to_string()));
        writer.append_unlinked_directory(&orphan)?;
    }
    let tiles = levels.iter().map(|l| l.offsets.len() as u64).sum();
    writer.finish(&directories)?;
    let bytes = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| SlideError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(SynthReport {
        levels: dims,
        tiles,
        bytes,
    })
}

fn compression_label(c: SynthCompression) -> &'static str {
    match c {
        SynthCompression::Jpeg => "JPEG/YCC",
        SynthCompression::JpegRgb => "JPEG/RGB",
        SynthCompression::Lzw => "LZW",
        SynthCompression::Deflate => "Deflate",
        SynthCompression::None => "Raw",
    }
}

/// Largest size within `max × max` with the aspect ratio of `w × h`.
fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    let scale = (f64::from(max) / f64::from(w.max(h))).min(1.0);
    (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    )
}

/// Tags shared by every image directory the generator writes.
fn image_directory(
    encoder: &TileEncoder,
    width: u64,
    height: u64,
    tables: Option<&[u8]>,
) -> Directory {
    let mut dir = Directory::default();
    let photometric = if encoder.compression == SynthCompression::Jpeg {
        6
    } else {
        2
    };
    dir.set(tag::NEW_SUBFILE_TYPE, Value::Long(vec![0]))
        .set(tag::IMAGE_WIDTH, Value::Long(vec![width as u32]))
        .set(tag::IMAGE_LENGTH, Value::Long(vec![height as u32]))
        .set(tag::BITS_PER_SAMPLE, Value::Short(vec![8, 8, 8]))
        .set(tag::COMPRESSION, Value::Short(vec![encoder.code()]))
        .set(tag::PHOTOMETRIC, Value::Short(vec![photometric]))
        .set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![3]))
        .set(tag::PLANAR_CONFIGURATION, Value::Short(vec![1]));
    if encoder.compression == SynthCompression::Jpeg {
        dir.set(tag::YCBCR_SUBSAMPLING, Value::Short(vec![2, 2]));
    }
    if encoder.compression == SynthCompression::Lzw {
        dir.set(tag::PREDICTOR, Value::Short(vec![2]));
    }
    if let (true, Some(t)) = (encoder.is_jpeg(), tables) {
        dir.set(tag::JPEG_TABLES, Value::Undefined(t.to_vec()));
    }
    dir
}

/// Writes `image` as 16-row strips and returns its directory (without a description).
fn write_strips(
    writer: &mut TiffWriter,
    encoder: &TileEncoder,
    tables: &mut JpegTables,
    image: &RgbImage,
) -> Result<Directory> {
    const ROWS: u32 = 16;
    let (w, h) = image.dimensions();
    let (mut offsets, mut counts) = (Vec::new(), Vec::new());
    for y in (0..h).step_by(ROWS as usize) {
        let rows = ROWS.min(h - y);
        let start = (y * w * 3) as usize;
        let pixels = &image.as_raw()[start..start + (rows * w * 3) as usize];
        let bytes = encoder.encode(pixels, w, rows)?;
        let stored = if encoder.is_jpeg() {
            tables.abbreviate(&bytes)?
        } else {
            bytes
        };
        let (offset, len) = writer.append(&stored)?;
        offsets.push(offset);
        counts.push(len);
    }
    let mut dir = image_directory(
        encoder,
        u64::from(w),
        u64::from(h),
        tables.tables.as_deref(),
    );
    dir.set(tag::ROWS_PER_STRIP, Value::Long(vec![ROWS]))
        .set(tag::STRIP_OFFSETS, writer.offsets_value(&offsets))
        .set(tag::STRIP_BYTE_COUNTS, writer.offsets_value(&counts));
    Ok(dir)
}

/// Resolution (pixels per centimetre) and the given metadata fields of a generic TIFF.
fn set_generic_metadata(dir: &mut Directory, spec: &SynthSpec) {
    let per_cm = (10_000.0 / spec.mpp * 1000.0).round() as u32;
    dir.set(tag::X_RESOLUTION, Value::Rational(vec![(per_cm, 1000)]))
        .set(tag::Y_RESOLUTION, Value::Rational(vec![(per_cm, 1000)]))
        .set(tag::RESOLUTION_UNIT, Value::Short(vec![3]))
        .set(tag::SOFTWARE, Value::Ascii("pathfed synth".into()));
    for (key, value) in &spec.metadata {
        let tag = match key.as_str() {
            "Software" => tag::SOFTWARE,
            "Artist" => tag::ARTIST,
            "DateTime" => tag::DATE_TIME,
            "Make" => tag::MAKE,
            "Model" => tag::MODEL,
            "ImageDescription" => tag::IMAGE_DESCRIPTION,
            _ => continue,
        };
        dir.set(tag, Value::Ascii(value.clone()));
    }
}
