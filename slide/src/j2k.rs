//! JPEG 2000 codestreams to RGB pixels, in pure Rust (the `hayro-jpeg2000` decoder).
//!
//! One entry point, [`decode_rgb`], serves every container that stores raw JPEG 2000
//! codestreams: Aperio SVS tiles (TIFF compressions 33003 and 33005) and DICOM JPEG 2000 frames.
//! It returns exactly `width × height` interleaved RGB8 pixels, or a typed error.
//!
//! Before the decoder sees a byte, the codestream's SIZ header is checked against what the
//! container declared and against [`SlideLimits`]: three 8-bit unsigned components, the
//! expected size, a bounded number of codestream tiles, the end-of-codestream marker (a
//! truncated tile is refused, not shown half-decoded). Allocation is then bounded by the
//! declared tile size. The decoder is memory-safe, and a panic inside it on hostile data is
//! caught and reported as an error.
//!
//! Colour: the decoder applies the codestream's own multi-component transform (RCT or ICT)
//! when the codestream signals one. Whether the components it hands back are RGB or YCbCr is
//! the container's word, given as [`J2kColour`]; YCbCr is converted with OpenSlide's integer
//! tables. The decoder carried in `vendor/` follows OpenJPEG's floating-point arithmetic for the
//! irreversible 9/7 wavelet, so lossy samples round as OpenSlide's do and the pixels are equal.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::LazyLock;

use hayro_jpeg2000::{DecodeSettings, DecoderContext, Image};
use pathfed_core::SlideLimits;

use crate::error::{Result, SlideError};

/// Most tiles one codestream may split its image into. Aperio and DICOM encoders write one
/// tile per stored tile or frame; the bound keeps a hostile header (1 × 1 px tiles) from making
/// the decoder keep millions of tile records.
const MAX_CODESTREAM_TILES: u64 = 4096;

/// What the three components of a decoded codestream hold.
///
/// This is about the *application's* colour conversion, not the codestream's own transform.
/// A codestream may carry a multi-component transform (MCT: the reversible RCT or the
/// irreversible ICT); the decoder always undoes it, so such a codestream decodes to RGB. DICOM's
/// YBR_RCT and YBR_ICT photometric interpretations describe exactly that case and are [`Rgb`].
/// Aperio's compression 33003 is the other case: the encoder converted RGB to YCbCr itself and
/// coded the components without an MCT (with Cb and Cr usually subsampled 2:1 horizontally), so
/// the components come out of the decoder as Y, Cb, Cr and the reader converts them: [`YCbCr`].
///
/// [`Rgb`]: J2kColour::Rgb
/// [`YCbCr`]: J2kColour::YCbCr
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum J2kColour {
    /// The decoded components are R, G, B (Aperio 33005; DICOM RGB, YBR_RCT and YBR_ICT).
    Rgb,
    /// The decoded components are full-range Y, Cb, Cr that the caller's format says to convert
    /// to RGB after decoding (Aperio 33003), as OpenSlide does.
    YCbCr,
}

/// Decodes one raw JPEG 2000 codestream (no JP2 box) of `width × height` pixels to interleaved
/// RGB8, refusing anything else with a typed error.
///
/// Errors: [`SlideError::LimitExceeded`] for a size or byte count over `limits` or too many
/// codestream tiles; [`SlideError::Unsupported`] for component layouts pathfed does not read
/// (not three components, not 8-bit unsigned samples, a subsampled first component);
/// [`SlideError::Jpeg2000`] for a codestream that is malformed, truncated, of another size
/// than declared, or that the decoder rejects.
pub fn decode_rgb(
    codestream: &[u8],
    width: u32,
    height: u32,
    colour: J2kColour,
    limits: &SlideLimits,
) -> Result<Vec<u8>> {
    for (what, value) in [
        ("JPEG 2000 image width", width),
        ("JPEG 2000 image height", height),
    ] {
        if value > limits.max_tile_dimension {
            return Err(SlideError::LimitExceeded {
                what,
                value: u64::from(value),
                limit: u64::from(limits.max_tile_dimension),
            });
        }
    }
    if codestream.len() as u64 > limits.max_tile_bytes {
        return Err(SlideError::LimitExceeded {
            what: "JPEG 2000 codestream size in bytes",
            value: codestream.len() as u64,
            limit: limits.max_tile_bytes,
        });
    }
    if width == 0 || height == 0 {
        return Err(invalid(format!("an empty {width}×{height} image")));
    }
    let siz = Siz::parse(codestream)?;
    siz.check(width, height)?;
    // DICOM pads fragments to an even length; the codestream itself ends at EOC.
    let end = codestream
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    let codestream = &codestream[..end];
    if !codestream.ends_with(&[0xFF, 0xD9]) {
        return Err(invalid(
            "the codestream is truncated: it does not end with the end-of-codestream marker".into(),
        ));
    }
    let wrapped = wrap_in_jp2(codestream)?;
    catch_unwind(AssertUnwindSafe(|| {
        decode_wrapped(&wrapped, width, height, colour)
    }))
    .unwrap_or_else(|_| Err(invalid("the decoder failed on malformed data".into())))
}

/// The image size a codestream's header declares (width, height), without decoding it.
pub fn codestream_size(codestream: &[u8]) -> Result<(u32, u32)> {
    let siz = Siz::parse(codestream)?;
    let (grid_w, grid_h) = siz.grid;
    let (x0, y0) = siz.image_offset;
    if x0 >= grid_w || y0 >= grid_h {
        return Err(invalid(format!(
            "the image starts at ({x0}, {y0}), outside its {grid_w}×{grid_h} grid"
        )));
    }
    Ok((grid_w - x0, grid_h - y0))
}

fn invalid(message: String) -> SlideError {
    SlideError::Jpeg2000(message)
}

/// The parts of a codestream's SIZ marker segment (ISO/IEC 15444-1, A.5.1) checked before
/// decoding.
#[derive(Debug)]
struct Siz {
    /// Xsiz, Ysiz: the reference grid's size.
    grid: (u32, u32),
    /// XOsiz, YOsiz: where the image starts on the grid.
    image_offset: (u32, u32),
    /// XTsiz, YTsiz: the codestream's own tile size.
    tile: (u32, u32),
    /// XTOsiz, YTOsiz: where the tile grid starts.
    tile_offset: (u32, u32),
    /// Ssiz, XRsiz, YRsiz of each component.
    components: Vec<(u8, u8, u8)>,
}

impl Siz {
    /// Reads the SIZ segment, which must follow the start-of-codestream marker directly.
    fn parse(codestream: &[u8]) -> Result<Self> {
        if !codestream.starts_with(&[0xFF, 0x4F, 0xFF, 0x51]) {
            return Err(invalid(
                "not a JPEG 2000 codestream (it does not start with the SOC and SIZ markers)"
                    .into(),
            ));
        }
        let short = || invalid("the codestream ends inside its SIZ header".into());
        let u32_at = |at: usize| {
            codestream
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(short)
        };
        let count = codestream
            .get(40..42)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(short)?;
        if count != 3 {
            return Err(SlideError::Unsupported(format!(
                "JPEG 2000 with {count} components (only 3-component colour is read)"
            )));
        }
        let components = codestream
            .get(42..42 + 9)
            .ok_or_else(short)?
            .chunks_exact(3)
            .map(|c| (c[0], c[1], c[2]))
            .collect();
        Ok(Self {
            grid: (u32_at(8)?, u32_at(12)?),
            image_offset: (u32_at(16)?, u32_at(20)?),
            tile: (u32_at(24)?, u32_at(28)?),
            tile_offset: (u32_at(32)?, u32_at(36)?),
            components,
        })
    }

    /// Checks the header against the size the container declared and what pathfed reads.
    fn check(&self, width: u32, height: u32) -> Result<()> {
        for (index, &(ssiz, dx, dy)) in self.components.iter().enumerate() {
            let bits = (ssiz & 0x7F) + 1;
            let signed = ssiz & 0x80 != 0;
            if bits != 8 || signed {
                return Err(SlideError::Unsupported(format!(
                    "JPEG 2000 component {index} holds {bits}-bit {} samples (only 8-bit \
                     unsigned samples are read)",
                    if signed { "signed" } else { "unsigned" }
                )));
            }
            if dx == 0 || dy == 0 {
                return Err(invalid(format!(
                    "component {index} declares a zero subsampling factor"
                )));
            }
            if index == 0 && (dx, dy) != (1, 1) {
                return Err(SlideError::Unsupported(format!(
                    "JPEG 2000 whose first component is subsampled {dx}×{dy}"
                )));
            }
        }
        let (grid_w, grid_h) = self.grid;
        let (x0, y0) = self.image_offset;
        if x0 >= grid_w || y0 >= grid_h {
            return Err(invalid(format!(
                "the image starts at ({x0}, {y0}), outside its {grid_w}×{grid_h} grid"
            )));
        }
        let (w, h) = (grid_w - x0, grid_h - y0);
        if (w, h) != (width, height) {
            return Err(invalid(format!(
                "the codestream is {w}×{h} pixels where its container declares {width}×{height}"
            )));
        }
        let (tile_w, tile_h) = self.tile;
        let (tx0, ty0) = self.tile_offset;
        if tile_w == 0 || tile_h == 0 || tx0 > x0 || ty0 > y0 {
            return Err(invalid(format!(
                "an invalid tile grid ({tile_w}×{tile_h} tiles from ({tx0}, {ty0}))"
            )));
        }
        let tiles =
            u64::from((grid_w - tx0).div_ceil(tile_w)) * u64::from((grid_h - ty0).div_ceil(tile_h));
        if tiles > MAX_CODESTREAM_TILES {
            return Err(SlideError::LimitExceeded {
                what: "tiles in one JPEG 2000 codestream",
                value: tiles,
                limit: MAX_CODESTREAM_TILES,
            });
        }
        Ok(())
    }
}

/// Puts the codestream in a minimal JP2 file (signature, file type, a header box whose colour
/// box says sRGB, the codestream box).
///
/// Why: the decoder guesses the colour space of a bare codestream, and takes three components
/// whose last two are subsampled (Aperio's 4:2:2 YCbCr) for sYCC, converting them with its own
/// floating-point formula. Declared sRGB, the components come back exactly as decoded (after
/// the codestream's own MCT, if any), so [`J2kColour`] alone decides the conversion, and
/// YCbCr goes through OpenSlide's integer tables.
fn wrap_in_jp2(codestream: &[u8]) -> Result<Vec<u8>> {
    let box_len = codestream
        .len()
        .checked_add(8)
        .and_then(|len| u32::try_from(len).ok())
        .ok_or_else(|| invalid("a codestream over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(codestream.len() + 64);
    // Signature box.
    out.extend_from_slice(&12u32.to_be_bytes());
    out.extend_from_slice(b"jP  \x0D\x0A\x87\x0A");
    // File type box: brand "jp2 ", minor version 0, compatible with "jp2 ".
    out.extend_from_slice(&20u32.to_be_bytes());
    out.extend_from_slice(b"ftypjp2 \0\0\0\0jp2 ");
    // Header box holding one colour specification box: method 1 (enumerated), sRGB (16).
    out.extend_from_slice(&23u32.to_be_bytes());
    out.extend_from_slice(b"jp2h");
    out.extend_from_slice(&15u32.to_be_bytes());
    out.extend_from_slice(b"colr\x01\x00\x00");
    out.extend_from_slice(&16u32.to_be_bytes());
    // Contiguous codestream box.
    out.extend_from_slice(&box_len.to_be_bytes());
    out.extend_from_slice(b"jp2c");
    out.extend_from_slice(codestream);
    Ok(out)
}

/// Runs the decoder on the wrapped codestream and converts its three planes to RGB8.
fn decode_wrapped(jp2: &[u8], width: u32, height: u32, colour: J2kColour) -> Result<Vec<u8>> {
    let settings = DecodeSettings {
        resolve_palette_indices: false,
        strict: false,
        ..DecodeSettings::default()
    };
    let rejected = |e: hayro_jpeg2000::DecodeError| {
        invalid(format!("the decoder rejects the codestream: {e}"))
    };
    let image = Image::new(jp2, &settings).map_err(rejected)?;
    let mut context = DecoderContext::default();
    let decoded = image.decode(&mut context).map_err(rejected)?;
    let pixels = width as usize * height as usize;
    let [c0, c1, c2] = decoded.components() else {
        return Err(invalid(format!(
            "the decoder returned {} components, not 3",
            decoded.components().len()
        )));
    };
    let (p0, p1, p2) = (c0.samples(), c1.samples(), c2.samples());
    if [p0.len(), p1.len(), p2.len()] != [pixels; 3] {
        return Err(invalid(format!(
            "the decoder returned planes of {}, {} and {} samples for a {width}×{height} image",
            p0.len(),
            p1.len(),
            p2.len()
        )));
    }
    let mut out = vec![0u8; pixels * 3];
    let samples = out.chunks_exact_mut(3).zip(p0.iter().zip(p1).zip(p2));
    match colour {
        J2kColour::Rgb => {
            for (pixel, ((&r, &g), &b)) in samples {
                pixel.copy_from_slice(&[to_u8(r), to_u8(g), to_u8(b)]);
            }
        }
        J2kColour::YCbCr => {
            let t: &YccTables = &YCC;
            for (pixel, ((&y, &cb), &cr)) in samples {
                let (y, cb, cr) = (
                    i32::from(to_u8(y)),
                    usize::from(to_u8(cb)),
                    usize::from(to_u8(cr)),
                );
                pixel.copy_from_slice(&[
                    clamp_u8(y + t.r_cr[cr]),
                    clamp_u8(y + ((t.g_cb[cb] + t.g_cr[cr]) >> 16)),
                    clamp_u8(y + t.b_cb[cb]),
                ]);
            }
        }
    }
    Ok(out)
}

/// A decoded sample as an 8-bit value, clamped to the component's range. The decoder already
/// rounds half to even before its level shift, as OpenJPEG's `lrintf` does; rounding again here
/// keeps a fractional sample from being truncated should that ever change.
fn to_u8(sample: f32) -> u8 {
    sample.round_ties_even().clamp(0.0, 255.0) as u8
}

fn clamp_u8(value: i32) -> u8 {
    value.clamp(0, 255) as u8
}

/// OpenSlide's YCbCr → RGB tables (full-range BT.601, as JPEG): chroma contributions rounded
/// to integers, green's two terms in 16.16 fixed point with the rounding half folded into the
/// Cb term. Reproducing them exactly is what keeps 33003 pixels equal to OpenSlide's.
struct YccTables {
    r_cr: [i32; 256],
    g_cb: [i32; 256],
    g_cr: [i32; 256],
    b_cb: [i32; 256],
}

static YCC: LazyLock<YccTables> = LazyLock::new(|| {
    let table =
        |f: fn(f64) -> f64| -> [i32; 256] { std::array::from_fn(|i| f(i as f64 - 128.0) as i32) };
    YccTables {
        r_cr: table(|c| (1.402 * c).round()),
        g_cb: table(|c| (65536.0 * (0.5 - 0.34414 * c)).round()),
        g_cr: table(|c| (65536.0 * (-0.71414 * c)).round()),
        b_cb: table(|c| (1.772 * c).round()),
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    /// SOC and a SIZ segment for a `w × h` image of 8-bit components with the given
    /// subsampling, one codestream tile, followed by `tail`.
    fn header(w: u32, h: u32, components: &[(u8, u8, u8)], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0xFF, 0x4F, 0xFF, 0x51];
        b.extend_from_slice(&(38 + 3 * components.len() as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        for v in [w, h, 0, 0, w, h, 0, 0] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend_from_slice(&(components.len() as u16).to_be_bytes());
        for &(s, dx, dy) in components {
            b.extend_from_slice(&[s, dx, dy]);
        }
        b.extend_from_slice(tail);
        b
    }

    const RGB8: [(u8, u8, u8); 3] = [(7, 1, 1), (7, 1, 1), (7, 1, 1)];

    fn decode(bytes: &[u8], w: u32, h: u32) -> SlideError {
        decode_rgb(bytes, w, h, J2kColour::Rgb, &SlideLimits::default()).unwrap_err()
    }

    #[test]
    fn refuses_what_is_not_a_codestream() {
        let e = decode(b"\xFF\xD8\xFF\xE0 a JPEG, not JPEG 2000", 16, 16);
        assert!(
            matches!(&e, SlideError::Jpeg2000(m) if m.contains("SOC")),
            "{e}"
        );
        let e = decode(&header(16, 16, &RGB8, &[])[..30], 16, 16);
        assert!(
            matches!(&e, SlideError::Jpeg2000(m) if m.contains("SIZ")),
            "{e}"
        );
    }

    #[test]
    fn refuses_other_component_layouts_before_decoding() {
        let grey = header(16, 16, &[(7, 1, 1)], &[0xFF, 0xD9]);
        assert!(
            matches!(decode(&grey, 16, 16), SlideError::Unsupported(m) if m.contains("1 components"))
        );
        let deep = header(16, 16, &[(15, 1, 1), (15, 1, 1), (15, 1, 1)], &[0xFF, 0xD9]);
        assert!(
            matches!(decode(&deep, 16, 16), SlideError::Unsupported(m) if m.contains("16-bit"))
        );
        let signed = header(16, 16, &[(0x87, 1, 1), (7, 1, 1), (7, 1, 1)], &[0xFF, 0xD9]);
        assert!(
            matches!(decode(&signed, 16, 16), SlideError::Unsupported(m) if m.contains("signed"))
        );
        let luma_halved = header(16, 16, &[(7, 2, 1), (7, 2, 1), (7, 2, 1)], &[0xFF, 0xD9]);
        assert!(matches!(
            decode(&luma_halved, 16, 16),
            SlideError::Unsupported(_)
        ));
    }

    #[test]
    fn refuses_sizes_other_than_declared_and_over_the_limits() {
        // A header claiming 60,000 × 60,000 pixels inside a 240 × 240 tile: refused from the
        // header, before the decoder could allocate for it.
        let huge = header(60_000, 60_000, &RGB8, &[0xFF, 0xD9]);
        let e = decode(&huge, 240, 240);
        assert!(
            matches!(&e, SlideError::Jpeg2000(m) if m.contains("60000×60000") && m.contains("240×240")),
            "{e}"
        );
        let limits = SlideLimits {
            max_tile_dimension: 128,
            ..SlideLimits::default()
        };
        let fits = header(240, 240, &RGB8, &[0xFF, 0xD9]);
        let e = decode_rgb(&fits, 240, 240, J2kColour::Rgb, &limits).unwrap_err();
        assert!(matches!(
            e,
            SlideError::LimitExceeded {
                value: 240,
                limit: 128,
                ..
            }
        ));
        let limits = SlideLimits {
            max_tile_bytes: 10,
            ..SlideLimits::default()
        };
        let e = decode_rgb(&fits, 240, 240, J2kColour::Rgb, &limits).unwrap_err();
        assert!(matches!(e, SlideError::LimitExceeded { limit: 10, .. }));
    }

    #[test]
    fn refuses_a_grid_of_tiny_codestream_tiles() {
        let mut tiny_tiles = header(240, 240, &RGB8, &[0xFF, 0xD9]);
        // XTsiz = YTsiz = 1: 57,600 tiles.
        tiny_tiles[24..28].copy_from_slice(&1u32.to_be_bytes());
        tiny_tiles[28..32].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            decode(&tiny_tiles, 240, 240),
            SlideError::LimitExceeded { value: 57_600, .. }
        ));
    }

    #[test]
    fn refuses_a_codestream_without_its_end_marker() {
        let cut = header(16, 16, &RGB8, &[0xFF, 0x52, 0x00]);
        let e = decode(&cut, 16, 16);
        assert!(
            matches!(&e, SlideError::Jpeg2000(m) if m.contains("truncated")),
            "{e}"
        );
        // Even-length padding after the end marker (as DICOM adds) is not truncation: this one
        // gets as far as the decoder, which finds no coding style.
        let padded = header(16, 16, &RGB8, &[0xFF, 0xD9, 0x00]);
        let e = decode(&padded, 16, 16);
        assert!(
            matches!(&e, SlideError::Jpeg2000(m) if !m.contains("truncated")),
            "{e}"
        );
    }

    #[test]
    fn ycbcr_tables_are_openslides() {
        let t: &YccTables = &YCC;
        // Values of OpenSlide's generated tables at both ends and the neutral middle.
        assert_eq!((t.r_cr[0], t.r_cr[128], t.r_cr[255]), (-179, 0, 178));
        assert_eq!((t.b_cb[0], t.b_cb[128], t.b_cb[255]), (-227, 0, 225));
        assert_eq!(
            (t.g_cb[0], t.g_cb[128], t.g_cb[255]),
            (2_919_624, 32_768, -2_831_534)
        );
        assert_eq!(
            (t.g_cr[0], t.g_cr[128], t.g_cr[255]),
            (5_990_641, 0, -5_943_839)
        );
        // Neutral chroma leaves grey grey.
        assert_eq!((t.g_cb[128] + t.g_cr[128]) >> 16, 0);
    }

    #[test]
    fn samples_round_like_openjpeg() {
        assert_eq!(to_u8(2.5), 2);
        assert_eq!(to_u8(3.5), 4);
        assert_eq!(to_u8(-7.0), 0);
        assert_eq!(to_u8(300.2), 255);
        assert_eq!(to_u8(f32::NAN), 0);
    }
}
