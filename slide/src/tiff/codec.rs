//! Decoding one tile or strip to RGB: JPEG (with shared tables), JPEG 2000 (Aperio's raw
//! codestreams, through [`crate::j2k`]), LZW, deflate or raw samples, with the TIFF horizontal
//! predictor. Output sizes are fixed before decoding so a corrupt stream can never make a
//! buffer grow.

use std::io::Read;

use pathfed_core::SlideLimits;

use super::image::{Compression, Photometric, TiffImage};
use crate::error::{Result, SlideError};
use crate::{j2k, jpeg};

/// Decodes chunk `index` (given its compressed `data`) to RGB, `chunk_width × chunk_height`,
/// within `limits`.
pub fn decode_chunk(
    image: &TiffImage,
    index: usize,
    data: &[u8],
    limits: &SlideLimits,
) -> Result<Vec<u8>> {
    let fail = |message: String| SlideError::Decode {
        image: image.index,
        index,
        message,
    };
    let (cw, ch) = (image.chunk_width as usize, image.chunk_height as usize);
    match image.compression {
        Compression::Jpeg => {
            let stream = jpeg::complete_stream(
                image.jpeg_tables.as_deref(),
                data,
                image.photometric == Photometric::Rgb,
            )?;
            let max_side = image.chunk_width.max(image.chunk_height);
            let (w, h, pixels) = jpeg::decode_rgb(&stream, max_side).map_err(fail)?;
            let (w, h) = (w as usize, h as usize);
            if w == cw && h == ch {
                return Ok(pixels);
            }
            // Strips at the bottom edge may be shorter than RowsPerStrip.
            if w != cw || h > ch {
                return Err(fail(format!("JPEG is {w}×{h}, expected {cw}×{ch}")));
            }
            let mut out = vec![255u8; cw * ch * 3];
            out[..pixels.len()].copy_from_slice(&pixels);
            Ok(out)
        }
        Compression::None | Compression::Lzw | Compression::Deflate => {
            if image.photometric == Photometric::YCbCr {
                return Err(SlideError::Unsupported(
                    "YCbCr samples outside JPEG compression".into(),
                ));
            }
            let samples = usize::from(image.samples);
            let expected = cw * ch * samples;
            let mut raw = match image.compression {
                Compression::None => {
                    data.get(..expected).map(<[u8]>::to_vec).unwrap_or_else(|| {
                        // Short last strips are legal; pad them.
                        let mut v = data.to_vec();
                        v.resize(expected, 0);
                        v
                    })
                }
                Compression::Lzw => inflate_lzw(data, expected).map_err(fail)?,
                _ => inflate_zlib(data, expected).map_err(fail)?,
            };
            match image.predictor {
                1 => {}
                2 => undo_horizontal_predictor(&mut raw, cw, samples),
                other => return Err(SlideError::Unsupported(format!("TIFF predictor {other}"))),
            }
            Ok(to_rgb(raw, samples, image.photometric))
        }
        Compression::Jpeg2000(colour) => {
            // A codestream holds exactly its chunk: whole tiles (as OpenSlide requires), or a
            // strip cropped to the image at the bottom edge.
            let rows = if image.tiled {
                image.chunk_height
            } else {
                image.chunk_extent(0, index as u64).1
            };
            let pixels = j2k::decode_rgb(data, image.chunk_width, rows, colour, limits).map_err(
                |e| match e {
                    SlideError::Jpeg2000(message) => fail(format!("JPEG 2000: {message}")),
                    other => other,
                },
            )?;
            if rows == image.chunk_height {
                return Ok(pixels);
            }
            let mut out = vec![255u8; cw * ch * 3];
            out[..pixels.len()].copy_from_slice(&pixels);
            Ok(out)
        }
        Compression::Other(code) => {
            Err(SlideError::Unsupported(format!("TIFF compression {code}")))
        }
    }
}

/// TIFF LZW into a buffer of exactly `expected` bytes (short streams are zero-padded).
fn inflate_lzw(data: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; expected];
    let mut decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let (mut read, mut written) = (0, 0);
    while written < expected && read < data.len() {
        let result = decoder.decode_bytes(&data[read..], &mut out[written..]);
        read += result.consumed_in;
        written += result.consumed_out;
        match result.status {
            Ok(weezl::LzwStatus::Ok) if result.consumed_in == 0 && result.consumed_out == 0 => {
                break;
            }
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::Done | weezl::LzwStatus::NoProgress) => break,
            Err(e) => return Err(format!("LZW: {e}")),
        }
    }
    Ok(out)
}

/// zlib/deflate into a buffer of exactly `expected` bytes (short streams are zero-padded).
fn inflate_zlib(data: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(expected);
    flate2::read::ZlibDecoder::new(data)
        .take(expected as u64)
        .read_to_end(&mut out)
        .map_err(|e| format!("deflate: {e}"))?;
    out.resize(expected, 0);
    Ok(out)
}

fn undo_horizontal_predictor(raw: &mut [u8], width: usize, samples: usize) {
    for row in raw.chunks_exact_mut(width * samples) {
        for i in samples..row.len() {
            row[i] = row[i].wrapping_add(row[i - samples]);
        }
    }
}

fn to_rgb(raw: Vec<u8>, samples: usize, photometric: Photometric) -> Vec<u8> {
    match (samples, photometric) {
        (3, _) => raw,
        (4, _) => raw
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        (_, Photometric::MinIsWhite) => raw.iter().flat_map(|&g| [255 - g; 3]).collect(),
        _ => raw.iter().flat_map(|&g| [g; 3]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_restores_differences() {
        let mut row = vec![10, 20, 30, 1, 1, 1, 2, 2, 2];
        undo_horizontal_predictor(&mut row, 3, 3);
        assert_eq!(row, vec![10, 20, 30, 11, 21, 31, 13, 23, 33]);
    }

    #[test]
    fn lzw_and_zlib_never_exceed_the_expected_size() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let lzw = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(&data)
            .unwrap();
        assert_eq!(inflate_lzw(&lzw, data.len()).unwrap(), data);
        assert_eq!(inflate_lzw(&lzw, 100).unwrap(), data[..100]);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &data).unwrap();
        let z = z.finish().unwrap();
        assert_eq!(inflate_zlib(&z, 50).unwrap(), data[..50]);
        assert!(inflate_zlib(b"not zlib at all", 50).is_err());
    }
}
