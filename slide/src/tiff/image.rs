//! One TIFF image (a pyramid level or an associated image) as a grid of tiles or strips,
//! validated against the limits when it is built, so decoding never meets a surprise size.

use pathfed_core::SlideLimits;

use super::file::{Ifd, TiffFile, tag};
use crate::error::{Result, SlideError};
use crate::j2k::J2kColour;

/// Compression schemes the fast path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// LZW (TIFF variant).
    Lzw,
    /// JPEG ("new-style", compression 7).
    Jpeg,
    /// Deflate / zlib (8 or 32946).
    Deflate,
    /// Raw JPEG 2000 codestreams as Aperio writes them: 33003 holds Y, Cb, Cr components the
    /// reader converts to RGB, 33005 holds RGB.
    Jpeg2000(J2kColour),
    /// Anything else, by number.
    Other(u16),
}

impl Compression {
    fn from_code(code: u64) -> Self {
        match code {
            1 => Self::None,
            5 => Self::Lzw,
            7 => Self::Jpeg,
            8 | 32946 => Self::Deflate,
            33003 => Self::Jpeg2000(J2kColour::YCbCr),
            33005 => Self::Jpeg2000(J2kColour::Rgb),
            other => Self::Other(u16::try_from(other).unwrap_or(u16::MAX)),
        }
    }
}

/// How stored samples map to colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Photometric {
    /// 0: grey, 0 is white.
    MinIsWhite,
    /// 1: grey, 0 is black.
    MinIsBlack,
    /// 2: RGB.
    Rgb,
    /// 6: YCbCr (JPEG only; JPEG 2000 colour follows the compression code, not this tag).
    YCbCr,
}

/// A tiled or stripped image ready for chunk reads.
#[derive(Debug, Clone)]
pub struct TiffImage {
    /// Directory index in the file.
    pub index: usize,
    /// Width in pixels.
    pub width: u64,
    /// Height in pixels.
    pub height: u64,
    /// Whether the chunks are tiles (else strips).
    pub tiled: bool,
    /// Width of one chunk (the image width for strips).
    pub chunk_width: u32,
    /// Height of one chunk (rows per strip for strips).
    pub chunk_height: u32,
    /// Chunks per row.
    pub cols: u64,
    /// Chunk rows.
    pub rows: u64,
    /// Byte offset of every chunk.
    pub offsets: Vec<u64>,
    /// Byte length of every chunk.
    pub byte_counts: Vec<u64>,
    /// Compression scheme.
    pub compression: Compression,
    /// Colour interpretation.
    pub photometric: Photometric,
    /// Samples per pixel (1, 3 or 4).
    pub samples: u16,
    /// TIFF predictor (1 none, 2 horizontal differencing).
    pub predictor: u16,
    /// Shared JPEG tables (an abbreviated stream: SOI, DQT/DHT, EOI).
    pub jpeg_tables: Option<Vec<u8>>,
    /// Chroma subsampling of YCbCr data (TIFF's default is 2×2).
    pub ycbcr_subsampling: (u16, u16),
    /// The ImageDescription tag.
    pub description: Option<String>,
    /// The NewSubfileType tag (1 = reduced resolution, 8 = transparency mask, ...).
    pub subfile_type: u64,
}

fn limit(what: &'static str, value: u64, max: u64) -> Result<()> {
    if value > max {
        return Err(SlideError::LimitExceeded {
            what,
            value,
            limit: max,
        });
    }
    Ok(())
}

fn required(tiff: &TiffFile, ifd: &Ifd, tag: u16, name: &str) -> Result<u64> {
    tiff.uint(ifd, tag)?
        .ok_or_else(|| SlideError::InvalidTiff(format!("directory {} has no {name}", ifd.index)))
}

impl TiffImage {
    /// Builds and validates the image of directory `ifd`: geometry, sample layout and every
    /// chunk's position, before any pixel is decoded.
    pub fn from_ifd(tiff: &TiffFile, ifd: &Ifd) -> Result<Self> {
        let limits: &SlideLimits = tiff.limits();
        let width = required(tiff, ifd, tag::IMAGE_WIDTH, "ImageWidth")?;
        let height = required(tiff, ifd, tag::IMAGE_LENGTH, "ImageLength")?;
        if width == 0 || height == 0 {
            return Err(SlideError::InvalidTiff(format!(
                "directory {} is {width}×{height} pixels",
                ifd.index
            )));
        }
        limit("image width", width, limits.max_dimension)?;
        limit("image height", height, limits.max_dimension)?;
        limit("image pixel count", width * height, limits.max_pixels)?;

        let samples = tiff.uint(ifd, tag::SAMPLES_PER_PIXEL)?.unwrap_or(1);
        if !matches!(samples, 1 | 3 | 4) {
            return Err(SlideError::Unsupported(format!(
                "{samples} samples per pixel in directory {}",
                ifd.index
            )));
        }
        let samples = samples as u16;
        if let Some(bits) = tiff.uints(ifd, tag::BITS_PER_SAMPLE)?
            && bits.iter().any(|&b| b != 8)
        {
            return Err(SlideError::Unsupported(format!(
                "{bits:?} bits per sample in directory {} (only 8 is read)",
                ifd.index
            )));
        }
        if tiff.uint(ifd, tag::PLANAR_CONFIGURATION)?.unwrap_or(1) != 1 {
            return Err(SlideError::Unsupported(format!(
                "separate colour planes in directory {}",
                ifd.index
            )));
        }
        if tiff.uint(ifd, tag::SAMPLE_FORMAT)?.unwrap_or(1) != 1 {
            return Err(SlideError::Unsupported(format!(
                "non-integer samples in directory {}",
                ifd.index
            )));
        }
        let compression = Compression::from_code(tiff.uint(ifd, tag::COMPRESSION)?.unwrap_or(1));
        let photometric = match tiff.uint(ifd, tag::PHOTOMETRIC)? {
            Some(0) => Photometric::MinIsWhite,
            Some(1) => Photometric::MinIsBlack,
            Some(2) => Photometric::Rgb,
            Some(6) => Photometric::YCbCr,
            None if samples == 1 => Photometric::MinIsBlack,
            None => Photometric::Rgb,
            Some(other) => {
                return Err(SlideError::Unsupported(format!(
                    "photometric interpretation {other} in directory {}",
                    ifd.index
                )));
            }
        };
        let predictor = tiff.uint(ifd, tag::PREDICTOR)?.unwrap_or(1) as u16;

        let tiled = ifd.entries.contains_key(&tag::TILE_WIDTH);
        let (chunk_width, chunk_height, offsets_tag, counts_tag) = if tiled {
            let tw = required(tiff, ifd, tag::TILE_WIDTH, "TileWidth")?;
            let th = required(tiff, ifd, tag::TILE_LENGTH, "TileLength")?;
            (tw, th, tag::TILE_OFFSETS, tag::TILE_BYTE_COUNTS)
        } else {
            let rows = tiff
                .uint(ifd, tag::ROWS_PER_STRIP)?
                .unwrap_or(height)
                .min(height);
            (width, rows, tag::STRIP_OFFSETS, tag::STRIP_BYTE_COUNTS)
        };
        if chunk_width == 0 || chunk_height == 0 {
            return Err(SlideError::InvalidTiff(format!(
                "directory {} has empty tiles or strips",
                ifd.index
            )));
        }
        limit(
            "tile width",
            chunk_width,
            u64::from(limits.max_tile_dimension),
        )?;
        limit(
            "tile height",
            chunk_height,
            u64::from(limits.max_tile_dimension),
        )?;
        let cols = width.div_ceil(chunk_width);
        let rows = height.div_ceil(chunk_height);
        limit("tile count", cols * rows, limits.max_tiles)?;

        let offsets = tiff.uints(ifd, offsets_tag)?.ok_or_else(|| {
            SlideError::InvalidTiff(format!("directory {} has no tile/strip offsets", ifd.index))
        })?;
        let byte_counts = tiff.uints(ifd, counts_tag)?.ok_or_else(|| {
            SlideError::InvalidTiff(format!(
                "directory {} has no tile/strip byte counts",
                ifd.index
            ))
        })?;
        let expected = (cols * rows) as usize;
        if offsets.len() != expected || byte_counts.len() != expected {
            return Err(SlideError::InvalidTiff(format!(
                "directory {} declares {expected} tiles/strips but lists {} offsets and {} byte counts",
                ifd.index,
                offsets.len(),
                byte_counts.len()
            )));
        }
        for (i, (&offset, &count)) in offsets.iter().zip(&byte_counts).enumerate() {
            if count == 0 {
                return Err(SlideError::ZeroLengthTile {
                    image: ifd.index,
                    index: i,
                });
            }
            limit("tile size in bytes", count, limits.max_tile_bytes)?;
            if offset.checked_add(count).is_none_or(|end| end > tiff.len()) {
                return Err(SlideError::OffsetPastEnd {
                    what: "tile/strip data",
                    offset,
                    len: count,
                    file_len: tiff.len(),
                });
            }
        }
        let jpeg_tables = match compression {
            Compression::Jpeg => tiff.bytes(ifd, tag::JPEG_TABLES)?,
            _ => None,
        };
        let ycbcr_subsampling = match tiff.uints(ifd, tag::YCBCR_SUBSAMPLING)?.as_deref() {
            Some(&[h, v]) if matches!(h, 1 | 2 | 4) && matches!(v, 1 | 2 | 4) => {
                (h as u16, v as u16)
            }
            Some(other) => {
                return Err(SlideError::InvalidTiff(format!(
                    "directory {} has YCbCrSubsampling {other:?}",
                    ifd.index
                )));
            }
            None => (2, 2),
        };
        Ok(Self {
            index: ifd.index,
            width,
            height,
            tiled,
            chunk_width: chunk_width as u32,
            chunk_height: chunk_height as u32,
            cols,
            rows,
            offsets,
            byte_counts,
            compression,
            photometric,
            samples,
            predictor,
            jpeg_tables,
            ycbcr_subsampling,
            description: tiff.ascii(ifd, tag::IMAGE_DESCRIPTION)?,
            subfile_type: tiff.uint(ifd, tag::NEW_SUBFILE_TYPE)?.unwrap_or(0),
        })
    }

    /// Pixel size of chunk (`col`, `row`) inside the image (edge chunks are cropped).
    pub fn chunk_extent(&self, col: u64, row: u64) -> (u32, u32) {
        let w = (self.width - col * u64::from(self.chunk_width)).min(u64::from(self.chunk_width));
        let h =
            (self.height - row * u64::from(self.chunk_height)).min(u64::from(self.chunk_height));
        (w as u32, h as u32)
    }
}
