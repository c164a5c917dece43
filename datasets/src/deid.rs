//! De-identification: re-writes a slide as a fresh canonical pyramidal BigTIFF that holds
//! pixels and an allow-list of facts (dimensions, tile geometry, MPP, objective power, scanner
//! vendor) and nothing else.
//!
//! Nothing is copied by exclusion: the writer builds every directory from scratch, so label,
//! macro and thumbnail images, vendor descriptions, dates, names, barcodes, orphan directories
//! and unreferenced bytes cannot follow. Pyramid tiles are copied byte for byte where the source
//! is a TIFF the fast path reads (JPEG tiles lose only their comment and APPn segments, which
//! carry no pixels); other formats are decoded through their reader and re-encoded as JPEG.

use std::path::Path;

use pathfed_slide::tiff::file::tag;
use pathfed_slide::tiff::image::{Compression, Photometric, TiffImage};
use pathfed_slide::tiff::writer::{Directory, TiffWriter, Value};
use pathfed_slide::tiff::{DEFAULT_TILE_CACHE_BYTES, TiffSlide};
use pathfed_slide::{Detected, SlideError, SlideLimits, SlideReader, jpeg};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DatasetError, DatasetResult};

/// How re-encoded slides are written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeidOptions {
    /// Tile side of re-encoded levels, in pixels.
    pub tile_size: u32,
    /// JPEG quality of re-encoded tiles (1–100).
    pub jpeg_quality: u8,
}

impl Default for DeidOptions {
    fn default() -> Self {
        Self {
            tile_size: 256,
            jpeg_quality: 90,
        }
    }
}

/// How the pixels reached the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PixelPath {
    /// Stored tiles copied byte for byte (minus JPEG metadata segments).
    Lossless,
    /// Decoded and re-encoded as JPEG.
    ReEncoded,
}

/// The facts a research slide keeps: the allow-list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeptFacts {
    /// Scanner vendor, in OpenSlide's vocabulary.
    pub vendor: String,
    /// (width, height) of every level, largest first.
    pub levels: Vec<(u64, u64)>,
    /// Tile width and height of every level.
    pub tile_sizes: Vec<(u32, u32)>,
    /// Micrometres per pixel at level 0 (x, y).
    pub mpp: Option<(f64, f64)>,
    /// Scanning objective magnification.
    pub objective_power: Option<f64>,
}

/// What de-identification wrote and what it left behind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeidReport {
    /// How the pixels were carried over.
    pub pixel_path: PixelPath,
    /// What the output keeps.
    pub kept: KeptFacts,
    /// One line per thing removed, for the operator.
    pub removed: Vec<String>,
    /// Tiles written.
    pub tiles: u64,
    /// Size of the output in bytes.
    pub output_bytes: u64,
}

/// De-identifies the slide at `source` into `out`. The output appears only once complete.
pub fn deidentify_file(
    source: &Path,
    out: &Path,
    limits: &SlideLimits,
    options: &DeidOptions,
) -> DatasetResult<DeidReport> {
    match pathfed_slide::detect(source, limits)? {
        Detected::FastPath(_) => {
            let slide = TiffSlide::open(source, limits, DEFAULT_TILE_CACHE_BYTES)?;
            if lossless_copy_possible(&slide) {
                copy_tiff(&slide, out)
            } else {
                reencode(&slide, out, options)
            }
        }
        // DICOM frames are always re-encoded: the research tier holds canonical TIFFs only.
        Detected::OpenSlide(_) | Detected::Dicom => {
            let reader = pathfed_slide::open(source, limits)?;
            reencode(reader.as_ref(), out, options)
        }
    }
}

/// Every level is 8-bit grey or RGB in a compression any TIFF reader knows.
fn lossless_copy_possible(slide: &TiffSlide) -> bool {
    slide.pyramid().iter().all(|image| {
        image.tiled
            && matches!(image.samples, 1 | 3)
            && matches!(
                image.compression,
                Compression::Jpeg | Compression::Lzw | Compression::Deflate | Compression::None
            )
    })
}

/// Writes the slide through any reader, decoding and re-encoding every tile as JPEG.
pub fn reencode(
    reader: &dyn SlideReader,
    out: &Path,
    options: &DeidOptions,
) -> DatasetResult<DeidReport> {
    if !(16..=4096).contains(&options.tile_size) || !options.tile_size.is_multiple_of(16) {
        return Err(DatasetError::Invalid(format!(
            "tile size {} (a multiple of 16 from 16 to 4096)",
            options.tile_size
        )));
    }
    let properties = reader.properties();
    let tile = options.tile_size;
    let mut writer = TiffWriter::create(out, true)?;
    let mut directories = Vec::new();
    let mut tiles = 0;
    for (index, level) in properties.levels.iter().enumerate() {
        let cols = level.width.div_ceil(u64::from(tile));
        let rows = level.height.div_ceil(u64::from(tile));
        let (mut offsets, mut counts) = (Vec::new(), Vec::new());
        for row in 0..rows {
            // One row of tiles at a time, encoded in parallel: memory stays one row deep.
            let encoded: Vec<Vec<u8>> = (0..cols)
                .into_par_iter()
                .map(|col| {
                    let x = col * u64::from(tile);
                    let y = row * u64::from(tile);
                    let pixels = reader.read_region(index, x, y, tile, tile)?;
                    let stream = jpeg::encode_rgb(&pixels, options.jpeg_quality)?;
                    jpeg::strip_metadata(&stream)
                        .map(|(clean, _)| clean)
                        .map_err(SlideError::Encode)
                })
                .collect::<Result<_, SlideError>>()?;
            for bytes in encoded {
                let (offset, len) = writer.append(&bytes)?;
                offsets.push(offset);
                counts.push(len);
            }
        }
        tiles += offsets.len() as u64;
        let mut dir = level_directory(index, level.width, level.height, (tile, tile));
        dir.set(tag::BITS_PER_SAMPLE, Value::Short(vec![8, 8, 8]))
            .set(tag::COMPRESSION, Value::Short(vec![7]))
            .set(tag::PHOTOMETRIC, Value::Short(vec![6]))
            .set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![3]))
            .set(tag::YCBCR_SUBSAMPLING, Value::Short(vec![2, 2]))
            .set(tag::TILE_OFFSETS, writer.offsets_value(&offsets))
            .set(tag::TILE_BYTE_COUNTS, writer.offsets_value(&counts));
        directories.push(dir);
    }
    let kept = kept_facts(reader, vec![(tile, tile); properties.levels.len()]);
    finish(writer, directories, &kept, out)?;
    Ok(DeidReport {
        pixel_path: PixelPath::ReEncoded,
        removed: removed_items(reader, None),
        kept,
        tiles,
        output_bytes: file_len(out)?,
    })
}

/// Writes the slide's stored tiles into a fresh file, byte for byte apart from JPEG metadata.
fn copy_tiff(slide: &TiffSlide, out: &Path) -> DatasetResult<DeidReport> {
    let mut writer = TiffWriter::create(out, true)?;
    let mut directories = Vec::new();
    let (mut tiles, mut stripped) = (0u64, 0usize);
    for (index, image) in slide.pyramid().iter().enumerate() {
        let is_jpeg = image.compression == Compression::Jpeg;
        let (mut offsets, mut counts) = (Vec::new(), Vec::new());
        for chunk in 0..image.offsets.len() {
            let stored = slide.stored_chunk(index, chunk)?;
            let bytes = if is_jpeg {
                let (clean, removed) = jpeg::strip_metadata(&stored).map_err(|why| {
                    SlideError::InvalidTiff(format!("tile {chunk} of level {index}: {why}"))
                })?;
                stripped += removed;
                clean
            } else {
                stored
            };
            let (offset, len) = writer.append(&bytes)?;
            offsets.push(offset);
            counts.push(len);
        }
        tiles += offsets.len() as u64;
        let mut dir = level_directory(
            index,
            image.width,
            image.height,
            (image.chunk_width, image.chunk_height),
        );
        set_sample_layout(&mut dir, image, &mut stripped)?;
        dir.set(tag::TILE_OFFSETS, writer.offsets_value(&offsets))
            .set(tag::TILE_BYTE_COUNTS, writer.offsets_value(&counts));
        directories.push(dir);
    }
    let tile_sizes = slide
        .pyramid()
        .iter()
        .map(|image| (image.chunk_width, image.chunk_height))
        .collect();
    let kept = kept_facts(slide, tile_sizes);
    finish(writer, directories, &kept, out)?;
    Ok(DeidReport {
        pixel_path: PixelPath::Lossless,
        removed: removed_items(slide, Some(stripped)),
        kept,
        tiles,
        output_bytes: file_len(out)?,
    })
}

/// Compression, colour and table tags of a copied level, rebuilt from their parsed meaning.
fn set_sample_layout(
    dir: &mut Directory,
    image: &TiffImage,
    stripped: &mut usize,
) -> DatasetResult<()> {
    let compression: u16 = match image.compression {
        Compression::None => 1,
        Compression::Lzw => 5,
        Compression::Jpeg => 7,
        Compression::Deflate => 8,
        other => {
            return Err(DatasetError::Invalid(format!(
                "cannot copy {other:?} tiles losslessly"
            )));
        }
    };
    let photometric: u16 = match image.photometric {
        Photometric::MinIsWhite => 0,
        Photometric::MinIsBlack => 1,
        Photometric::Rgb => 2,
        Photometric::YCbCr => 6,
    };
    dir.set(
        tag::BITS_PER_SAMPLE,
        Value::Short(vec![8; usize::from(image.samples)]),
    )
    .set(tag::COMPRESSION, Value::Short(vec![compression]))
    .set(tag::PHOTOMETRIC, Value::Short(vec![photometric]))
    .set(tag::SAMPLES_PER_PIXEL, Value::Short(vec![image.samples]));
    if image.photometric == Photometric::YCbCr {
        let (h, v) = image.ycbcr_subsampling;
        dir.set(tag::YCBCR_SUBSAMPLING, Value::Short(vec![h, v]));
    }
    if image.predictor != 1 {
        dir.set(tag::PREDICTOR, Value::Short(vec![image.predictor]));
    }
    if let Some(tables) = &image.jpeg_tables {
        let (clean, removed) = jpeg::strip_metadata(tables)
            .map_err(|why| SlideError::InvalidTiff(format!("JPEGTables: {why}")))?;
        *stripped += removed;
        dir.set(tag::JPEG_TABLES, Value::Undefined(clean));
    }
    Ok(())
}

/// The geometry tags every output level has.
fn level_directory(index: usize, width: u64, height: u64, tile: (u32, u32)) -> Directory {
    let mut dir = Directory::default();
    dir.set(
        tag::NEW_SUBFILE_TYPE,
        Value::Long(vec![u32::from(index > 0)]),
    )
    // Slide limits keep sides far below 2^32, so LONG is exact.
    .set(tag::IMAGE_WIDTH, Value::Long(vec![width as u32]))
    .set(tag::IMAGE_LENGTH, Value::Long(vec![height as u32]))
    .set(tag::PLANAR_CONFIGURATION, Value::Short(vec![1]))
    .set(tag::TILE_WIDTH, Value::Long(vec![tile.0]))
    .set(tag::TILE_LENGTH, Value::Long(vec![tile.1]));
    dir
}

fn kept_facts(reader: &dyn SlideReader, tile_sizes: Vec<(u32, u32)>) -> KeptFacts {
    let p = reader.properties();
    KeptFacts {
        vendor: canonical_vendor(&p.vendor),
        levels: p.levels.iter().map(|l| (l.width, l.height)).collect(),
        tile_sizes,
        mpp: p.mpp_x.zip(p.mpp_y),
        objective_power: p.objective_power.filter(|v| v.is_finite() && *v > 0.0),
    }
}

/// The vendor as a short token of our own vocabulary, never a free-text field.
fn canonical_vendor(vendor: &str) -> String {
    let token: String = vendor
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    if token.is_empty() {
        "unknown".into()
    } else {
        token
    }
}

/// Puts the allow-listed facts on level 0 and writes the file.
fn finish(
    writer: TiffWriter,
    mut directories: Vec<Directory>,
    kept: &KeptFacts,
    out: &Path,
) -> DatasetResult<()> {
    let Some(base) = directories.first_mut() else {
        return Err(DatasetError::Invalid(
            "the slide has no pyramid level".into(),
        ));
    };
    if let Some((x, y)) = kept.mpp {
        // Pixels per centimetre, as rationals with three decimals.
        let per_cm = |mpp: f64| ((10_000.0 / mpp * 1000.0).round() as u32, 1000u32);
        base.set(tag::X_RESOLUTION, Value::Rational(vec![per_cm(x)]))
            .set(tag::Y_RESOLUTION, Value::Rational(vec![per_cm(y)]))
            .set(tag::RESOLUTION_UNIT, Value::Short(vec![3]));
    }
    let mut description = format!("pathfed research slide|vendor={}", kept.vendor);
    if let Some(power) = kept.objective_power {
        description.push_str(&format!("|objective-power={power}"));
    }
    if let Some((x, y)) = kept.mpp {
        description.push_str(&format!("|mpp-x={x}|mpp-y={y}"));
    }
    base.set(tag::IMAGE_DESCRIPTION, Value::Ascii(description));
    writer.finish(&directories)?;
    tracing::debug!(out = %out.display(), "research slide written");
    Ok(())
}

/// Lists, for the operator, what the source had that the output does not.
fn removed_items(reader: &dyn SlideReader, jpeg_bytes: Option<usize>) -> Vec<String> {
    let p = reader.properties();
    let mut removed: Vec<String> = p
        .associated_images
        .iter()
        .map(|a| format!("associated image \"{}\" ({}×{})", a.name, a.width, a.height))
        .collect();
    for (key, value) in &p.raw {
        // These are parsed into the kept facts and written afresh from the numbers.
        let restated = matches!(
            key.as_str(),
            "aperio.MPP"
                | "aperio.AppMag"
                | "tiff.XResolution"
                | "tiff.YResolution"
                | "tiff.ResolutionUnit"
        );
        let note = if restated {
            "; its value is kept as a parsed number"
        } else {
            ""
        };
        removed.push(format!("metadata {key} ({} bytes{note})", value.len()));
    }
    if let Some(bytes) = jpeg_bytes.filter(|&b| b > 0) {
        removed.push(format!(
            "{bytes} bytes of JPEG comments, APPn segments and trailers"
        ));
    }
    removed.push("every directory and byte not part of a pyramid tile".into());
    removed
}

fn file_len(path: &Path) -> DatasetResult<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| DatasetError::io(format!("reading {}", path.display()), e))
}
