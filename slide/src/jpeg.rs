//! JPEG byte-stream helpers: completing TIFF's abbreviated tile streams, decoding and encoding.
//!
//! TIFF stores JPEG tiles as abbreviated streams whose tables live once in the JPEGTables tag.
//! Splicing the tables back in gives a stand-alone JPEG that a browser can show as it is, which
//! is what lets Deep Zoom serve stored tiles without decoding them.

use image::RgbImage;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::error::{Result, SlideError};

const SOI: [u8; 2] = [0xFF, 0xD8];
const EOI: [u8; 2] = [0xFF, 0xD9];

/// An APP14 "Adobe" segment with transform 0: tells every decoder the three components are
/// RGB, not YCbCr. Aperio writes RGB JPEG tiles whose component ids say nothing either way.
const ADOBE_RGB: [u8; 16] = [
    0xFF, 0xEE, 0x00, 0x0E, b'A', b'd', b'o', b'b', b'e', 0x00, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// Builds a stand-alone JPEG from a TIFF tile and the shared tables, marking RGB streams as such.
pub fn complete_stream(tables: Option<&[u8]>, tile: &[u8], rgb: bool) -> Result<Vec<u8>> {
    let body = tile
        .strip_prefix(&SOI)
        .ok_or_else(|| SlideError::InvalidTiff("JPEG tile does not start with SOI".into()))?;
    let tables = match tables {
        Some(t) => t
            .strip_prefix(&SOI)
            .map(|t| t.strip_suffix(&EOI).unwrap_or(t))
            .ok_or_else(|| SlideError::InvalidTiff("JPEGTables does not start with SOI".into()))?,
        None => &[],
    };
    let mut out = Vec::with_capacity(2 + ADOBE_RGB.len() + tables.len() + body.len());
    out.extend_from_slice(&SOI);
    if rgb {
        out.extend_from_slice(&ADOBE_RGB);
    }
    out.extend_from_slice(tables);
    out.extend_from_slice(body);
    Ok(out)
}

/// Decodes a complete JPEG stream to RGB, refusing images larger than `max_side` on either axis.
pub fn decode_rgb(data: &[u8], max_side: u32) -> Result<(u32, u32, Vec<u8>), String> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(max_side as usize)
        .set_max_height(max_side as usize);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    let pixels = decoder.decode().map_err(|e| e.to_string())?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| "JPEG without dimensions".to_string())?;
    if pixels.len() != w * h * 3 {
        return Err(format!("decoded {} bytes for {w}×{h} RGB", pixels.len()));
    }
    Ok((w as u32, h as u32, pixels))
}

/// Encodes an RGB image as a baseline YCbCr JPEG (4:2:0) at `quality` (1–100).
pub fn encode_rgb(image: &RgbImage, quality: u8) -> Result<Vec<u8>> {
    encode_raw(image.as_raw(), image.width(), image.height(), quality)
}

/// Encodes raw RGB bytes (`width × height × 3`) as a baseline YCbCr JPEG at `quality`.
pub fn encode_raw(rgb: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>> {
    let (w, h) = dims16(width, height)?;
    let mut out = Vec::with_capacity(rgb.len() / 8);
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SlideError::Encode(e.to_string()))?;
    Ok(out)
}

/// Encodes raw RGB bytes without colour conversion or chroma subsampling, the way Aperio
/// writes "JPEG/RGB" tiles; the result needs [`ADOBE_RGB`] (or TIFF's Photometric=RGB) to be
/// read back correctly.
pub fn encode_raw_rgb_components(
    rgb: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> Result<Vec<u8>> {
    let (w, h) = dims16(width, height)?;
    let mut out = Vec::with_capacity(rgb.len() / 6);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_1_1);
    // Declaring the input as YCbCr makes the encoder store the samples untransformed.
    encoder
        .encode(rgb, w, h, jpeg_encoder::ColorType::Ycbcr)
        .map_err(|e| SlideError::Encode(e.to_string()))?;
    Ok(out)
}

fn dims16(width: u32, height: u32) -> Result<(u16, u16)> {
    match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(SlideError::Encode(format!(
            "JPEG cannot hold {width}×{height} pixels"
        ))),
    }
}

/// A JPEG marker segment: marker byte and payload (without the length field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The marker's second byte (0xDB for DQT, 0xC4 for DHT, ...).
    pub marker: u8,
    /// The segment's payload after the length field.
    pub payload: &'a [u8],
}

/// Splits a JPEG stream into the segments before its first scan and the scan itself
/// (SOS segment onwards, EOI included).
pub fn split_header(data: &[u8]) -> Result<(Vec<Segment<'_>>, &[u8]), String> {
    let mut at = 2;
    if !data.starts_with(&SOI) {
        return Err("no SOI".into());
    }
    let mut segments = Vec::new();
    loop {
        let (Some(&0xFF), Some(&marker)) = (data.get(at), data.get(at + 1)) else {
            return Err(format!("no marker at byte {at}"));
        };
        if marker == 0xDA {
            return Ok((segments, &data[at..]));
        }
        let len = data
            .get(at + 2..at + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .filter(|&len| len >= 2)
            .ok_or_else(|| format!("bad segment length at byte {at}"))?;
        let payload = data
            .get(at + 4..at + 2 + len)
            .ok_or_else(|| format!("segment at byte {at} runs past the end"))?;
        segments.push(Segment { marker, payload });
        at += 2 + len;
    }
}

/// The width and height a JPEG stream's frame header (SOFn) declares, or `None` without one.
pub fn frame_size(data: &[u8]) -> Option<(u32, u32)> {
    let (segments, _) = split_header(data).ok()?;
    segments
        .iter()
        // SOF0–SOF15, except DHT (C4), JPG (C8) and DAC (CC), which share the range.
        .find(|s| matches!(s.marker, 0xC0..=0xCF) && !matches!(s.marker, 0xC4 | 0xC8 | 0xCC))
        .and_then(|s| s.payload.get(1..5))
        .map(|b| {
            let height = u16::from_be_bytes([b[0], b[1]]);
            let width = u16::from_be_bytes([b[2], b[3]]);
            (u32::from(width), u32::from(height))
        })
}

/// Writes one marker segment.
pub fn push_segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Rewrites a JPEG stream (complete, abbreviated tile or tables-only) keeping only the segments
/// a decoder needs: quantisation and Huffman tables, frame and scan headers, restart interval,
/// arithmetic-coding conditioning, an Adobe colour-transform marker, and the entropy-coded data.
/// Comments, every other APPn segment (JFIF, EXIF, XMP, ICC, vendor data) and anything after EOI
/// are dropped, so nothing but pixels survives a copy. Returns the stream and the bytes removed.
pub fn strip_metadata(data: &[u8]) -> std::result::Result<(Vec<u8>, usize), String> {
    if !data.starts_with(&SOI) {
        return Err("no SOI".into());
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&SOI);
    let mut at = 2;
    loop {
        // Fill bytes (0xFF runs) may precede a marker.
        while data.get(at) == Some(&0xFF) && data.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (data.get(at), data.get(at + 1)) else {
            return Err(format!("no marker at byte {at}"));
        };
        if marker == 0xD9 {
            out.extend_from_slice(&EOI);
            let removed = data.len().saturating_sub(out.len());
            return Ok((out, removed));
        }
        let len = data
            .get(at + 2..at + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .filter(|&len| len >= 2)
            .ok_or_else(|| format!("bad segment length at byte {at}"))?;
        let segment = data
            .get(at..at + 2 + len)
            .ok_or_else(|| format!("segment at byte {at} runs past the end"))?;
        let payload = &segment[4..];
        let keep = match marker {
            0xDB | 0xC4 | 0xDD | 0xCC | 0xDA => true,
            0xC0..=0xCF => true,
            // Adobe's colour-transform flag is 12 bytes of fixed meaning; keep only that form.
            0xEE => payload.len() == 12 && payload.starts_with(b"Adobe"),
            _ => false,
        };
        if keep {
            out.extend_from_slice(segment);
        }
        at += 2 + len;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00
            // nor a restart marker.
            let start = at;
            while at + 1 < data.len() {
                if data[at] == 0xFF
                    && data[at + 1] != 0x00
                    && !(0xD0..=0xD7).contains(&data[at + 1])
                {
                    break;
                }
                at += 1;
            }
            if at + 1 >= data.len() {
                return Err("scan data runs past the end (no EOI)".into());
            }
            out.extend_from_slice(&data[start..at]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| [(i % w * 255 / w) as u8, (i / w * 255 / h) as u8, 128])
            .collect()
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        let sum: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum();
        sum / a.len() as f64
    }

    #[test]
    fn encode_then_decode_round_trips_closely() {
        let rgb = gradient(64, 48);
        let jpeg = encode_raw(&rgb, 64, 48, 95).unwrap();
        let (w, h, back) = decode_rgb(&jpeg, 1024).unwrap();
        assert_eq!((w, h), (64, 48));
        let mad = mean_abs_diff(&rgb, &back);
        assert!(mad < 2.0, "mean abs diff {mad}");
    }

    #[test]
    fn rgb_component_streams_need_the_adobe_marker() {
        let rgb = gradient(32, 32);
        let jpeg = encode_raw_rgb_components(&rgb, 32, 32, 95).unwrap();
        let (segments, scan) = split_header(&jpeg).unwrap();
        // Re-assemble without JFIF, with the Adobe marker, as a TIFF reader would.
        let mut tile = SOI.to_vec();
        for s in segments.iter().filter(|s| s.marker != 0xE0) {
            push_segment(&mut tile, s.marker, s.payload);
        }
        tile.extend_from_slice(scan);
        let fixed = complete_stream(None, &tile, true).unwrap();
        let (_, _, back) = decode_rgb(&fixed, 1024).unwrap();
        let mad = mean_abs_diff(&rgb, &back);
        assert!(mad < 2.0, "mean abs diff {mad}");
    }

    #[test]
    fn frame_size_is_read_from_the_frame_header() {
        let jpeg = encode_raw(&gradient(64, 48), 64, 48, 80).unwrap();
        assert_eq!(frame_size(&jpeg), Some((64, 48)));
        // Tables only: no frame header.
        assert_eq!(frame_size(b"\xFF\xD8\xFF\xDA\x00\x02"), None);
        assert_eq!(frame_size(b"garbage"), None);
    }

    #[test]
    fn decoding_refuses_oversized_and_garbage_streams() {
        let jpeg = encode_raw(&gradient(64, 48), 64, 48, 80).unwrap();
        assert!(decode_rgb(&jpeg, 32).is_err());
        assert!(decode_rgb(b"\xFF\xD8garbage", 1024).is_err());
        assert!(complete_stream(None, b"nope", false).is_err());
    }

    #[test]
    fn stripping_metadata_keeps_pixels_and_drops_comments() {
        let rgb = gradient(64, 48);
        let jpeg = encode_raw(&rgb, 64, 48, 90).unwrap();
        let (segments, scan) = split_header(&jpeg).unwrap();
        let mut tagged = SOI.to_vec();
        push_segment(&mut tagged, 0xFE, b"CANARY-COMMENT");
        push_segment(&mut tagged, 0xE1, b"Exif\0\0CANARY-EXIF");
        for s in &segments {
            push_segment(&mut tagged, s.marker, s.payload);
        }
        tagged.extend_from_slice(scan);
        tagged.extend_from_slice(b"CANARY-TRAILER");
        let (clean, removed) = strip_metadata(&tagged).unwrap();
        assert!(removed > 40, "removed {removed}");
        let text = String::from_utf8_lossy(&clean);
        assert!(!text.contains("CANARY"));
        assert!(!text.contains("JFIF"));
        let (_, _, a) = decode_rgb(&jpeg, 1024).unwrap();
        let (_, _, b) = decode_rgb(&clean, 1024).unwrap();
        assert_eq!(a, b, "pixels unchanged");
        assert!(strip_metadata(b"\xFF\xD8\xFF\xDA\x00\x02abc").is_err());
    }
}
