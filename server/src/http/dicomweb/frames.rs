//! Frames: how a pyramid level is cut into DICOM frames, what each frame's bytes are, and the
//! multipart body that carries them.
//!
//! **Grid**: a level's frames are its stored tiles where the format stores a tile grid (between
//! 16 and 4096 pixels a side), else tiles of level 0's stored size, else 256 × 256; frames run
//! row by row from the top left (`TILED_FULL`), and those at the right and bottom edges are whole
//! frames whose pixels beyond the level are white.
//!
//! **Bytes**: a stored JPEG tile of exactly the frame's size, in the instance's colour model, is
//! the frame as it is, byte for byte: no decoding, no re-encoding. Any other frame (formats that
//! store no JPEG, or a tile that differs) is read as pixels and encoded as JPEG baseline in the
//! instance's colour model. The colour model is the one the level's first stored tile is decoded
//! in (libjpeg's rules: a JFIF marker means YCbCr, an Adobe marker with transform 0 RGB, and so
//! on), so the metadata's Photometric Interpretation says what every frame is: `RGB` for Aperio's
//! RGB tiles, `YBR_FULL_422` for subsampled YCbCr, `YBR_FULL` for YCbCr without subsampling,
//! which is also what the image crate's JPEG encoder writes (JFIF, 4:4:4) for slides whose
//! tiles are not JPEG.

use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use pathfed_core::http::ApiError;
use pathfed_slide::{SlideError, SlideProperties, SlideReader, jpeg};

/// Most frames one request may ask for.
pub(super) const MAX_FRAMES: usize = 500;
/// Smallest and largest stored tile side used as the frame size.
const FRAME_SIDES: std::ops::RangeInclusive<u32> = 16..=4096;
/// The frame side where neither the level nor level 0 stores tiles.
const DEFAULT_FRAME: u32 = 256;

/// How one pyramid level is cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tiling {
    /// The pyramid level (0 is full resolution).
    pub(super) level: usize,
    /// The level's width in pixels (Total Pixel Matrix Columns).
    pub(super) width: u64,
    /// The level's height in pixels (Total Pixel Matrix Rows).
    pub(super) height: u64,
    /// Frame width (Columns).
    pub(super) frame_width: u32,
    /// Frame height (Rows).
    pub(super) frame_height: u32,
    /// Frames across.
    pub(super) columns: u64,
    /// Frames down.
    pub(super) rows: u64,
    /// Whether the frames are the level's stored tiles, so that they may be passed through.
    pub(super) stored: bool,
}

impl Tiling {
    /// The frames of `level`, or `None` where the slide has no such (non-empty) level.
    pub(super) fn of(properties: &SlideProperties, level: usize) -> Option<Self> {
        let info = properties.levels.get(level)?;
        if info.width == 0 || info.height == 0 {
            return None;
        }
        let usable = |(w, h): &(u32, u32)| FRAME_SIDES.contains(w) && FRAME_SIDES.contains(h);
        let own = info.tile_size.filter(usable);
        // Levels without a grid of their own take level 0's, so that every instance has the
        // same frame size (wsidicom, for one, drops levels whose frames differ from level 0's).
        let (frame_width, frame_height) = own
            .or_else(|| {
                properties
                    .levels
                    .first()
                    .and_then(|l| l.tile_size)
                    .filter(usable)
            })
            .unwrap_or((DEFAULT_FRAME, DEFAULT_FRAME));
        Some(Self {
            level,
            width: info.width,
            height: info.height,
            frame_width,
            frame_height,
            columns: info.width.div_ceil(u64::from(frame_width)),
            rows: info.height.div_ceil(u64::from(frame_height)),
            stored: own.is_some(),
        })
    }

    /// Number of Frames.
    pub(super) fn count(&self) -> u64 {
        self.columns.saturating_mul(self.rows)
    }

    /// Pixels of one frame.
    pub(super) fn frame_pixels(&self) -> u64 {
        u64::from(self.frame_width) * u64::from(self.frame_height)
    }

    /// Column and row of frame `frame` (1-based, row by row); `None` outside the instance.
    pub(super) fn position(&self, frame: u64) -> Option<(u64, u64)> {
        if frame == 0 || frame > self.count() {
            return None;
        }
        let index = frame - 1;
        Some((index % self.columns, index / self.columns))
    }
}

/// The colour model of an instance's frames, as its Photometric Interpretation names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Colour {
    /// Components stored as red, green and blue (Aperio's "JPEG/RGB" tiles).
    Rgb,
    /// YCbCr, chroma at full resolution.
    YbrFull,
    /// YCbCr, chroma subsampled (4:2:2 or 4:2:0).
    YbrFull422,
}

impl Colour {
    /// Photometric Interpretation (0028,0004).
    pub(super) fn photometric_interpretation(self) -> &'static str {
        match self {
            Self::Rgb => "RGB",
            Self::YbrFull => "YBR_FULL",
            Self::YbrFull422 => "YBR_FULL_422",
        }
    }
}

/// The colour model a decoder reads `stream` in, for a three-component, 8-bit baseline JPEG
/// (the only kind JPEG baseline's transfer syntax holds); `None` for anything else, which is
/// never passed through.
pub(super) fn colour_of(stream: &[u8]) -> Option<Colour> {
    let (segments, _scan) = jpeg::split_header(stream).ok()?;
    let mut jfif = false;
    let mut adobe_transform = None;
    let mut frame = None;
    for segment in &segments {
        match segment.marker {
            0xE0 if segment.payload.starts_with(b"JFIF\0") => jfif = true,
            0xEE if segment.payload.len() >= 12 && segment.payload.starts_with(b"Adobe") => {
                adobe_transform = segment.payload.get(11).copied();
            }
            0xC0 => frame = Some(segment.payload),
            // Other start-of-frame markers: extended, progressive, lossless or arithmetic
            // coding, which baseline decoders need not read.
            0xC1..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
            _ => {}
        }
    }
    // Precision, height, width, then three components of (id, sampling, table).
    let frame = frame?;
    if frame.len() < 15 || frame[0] != 8 || frame[5] != 3 {
        return None;
    }
    let ids = [frame[6], frame[9], frame[12]];
    let sampling = [frame[7], frame[10], frame[13]];
    // libjpeg's rules, which DICOM viewers' decoders follow.
    let rgb = if jfif {
        false
    } else if let Some(transform) = adobe_transform {
        transform == 0
    } else {
        ids == *b"RGB"
    };
    match (rgb, sampling) {
        (true, [0x11, 0x11, 0x11]) => Some(Colour::Rgb),
        (false, [0x11, 0x11, 0x11]) => Some(Colour::YbrFull),
        (false, [0x21 | 0x22, 0x11, 0x11]) => Some(Colour::YbrFull422),
        _ => None,
    }
}

/// The colour model of `tiling`'s instance: its first stored tile's, else YCbCr as the JPEG
/// encoder writes it.
pub(super) fn instance_colour(reader: &dyn SlideReader, tiling: &Tiling) -> Colour {
    if tiling.stored
        && let Ok(Some(tile)) = reader.raw_tile(tiling.level, 0, 0)
        && (tile.width, tile.height) == (tiling.frame_width, tiling.frame_height)
        && let Some(colour) = colour_of(&tile.jpeg)
    {
        return colour;
    }
    Colour::YbrFull
}

/// The JPEG bytes of frame `frame` (1-based): the stored tile where it is the frame in the
/// instance's colour model, else the frame's pixels encoded at `quality`.
pub(super) fn read_frame(
    reader: &dyn SlideReader,
    tiling: &Tiling,
    colour: Colour,
    frame: u64,
    quality: u8,
) -> pathfed_slide::Result<Vec<u8>> {
    let (column, row) = position(tiling, frame)?;
    if tiling.stored
        && let Some(tile) = reader.raw_tile(tiling.level, column, row)?
        && (tile.width, tile.height) == (tiling.frame_width, tiling.frame_height)
        && colour_of(&tile.jpeg) == Some(colour)
    {
        return Ok(tile.jpeg);
    }
    encode(colour, &frame_pixels(reader, tiling, frame)?, quality)
}

/// The pixels of frame `frame` (1-based), white beyond the level's edges.
pub(super) fn frame_pixels(
    reader: &dyn SlideReader,
    tiling: &Tiling,
    frame: u64,
) -> pathfed_slide::Result<RgbImage> {
    let (column, row) = position(tiling, frame)?;
    reader.read_region(
        tiling.level,
        column * u64::from(tiling.frame_width),
        row * u64::from(tiling.frame_height),
        tiling.frame_width,
        tiling.frame_height,
    )
}

fn position(tiling: &Tiling, frame: u64) -> pathfed_slide::Result<(u64, u64)> {
    tiling.position(frame).ok_or_else(|| {
        SlideError::OutOfRange(format!(
            "frame {frame} of an instance of {} frames",
            tiling.count()
        ))
    })
}

/// Encodes pixels as a baseline JPEG in `colour`'s model.
fn encode(colour: Colour, image: &RgbImage, quality: u8) -> pathfed_slide::Result<Vec<u8>> {
    let quality = quality.clamp(1, 100);
    match colour {
        Colour::Rgb => {
            let plain = jpeg::encode_raw_rgb_components(
                image.as_raw(),
                image.width(),
                image.height(),
                quality,
            )?;
            // Marked RGB with Adobe's marker; the encoder's JFIF marker, which libjpeg would
            // read as YCbCr whatever else the stream says, is dropped.
            let marked = jpeg::complete_stream(None, &plain, true)?;
            jpeg::strip_metadata(&marked)
                .map(|(clean, _)| clean)
                .map_err(SlideError::Encode)
        }
        // Only frames of a subsampled level that are not its stored tiles come here; the
        // encoder subsamples below quality 90, and decoders read the sampling from the stream.
        Colour::YbrFull422 => jpeg::encode_rgb(image, quality),
        Colour::YbrFull => {
            let mut out = Vec::new();
            JpegEncoder::new_with_quality(&mut out, quality)
                .encode_image(image)
                .map_err(|e| SlideError::Encode(e.to_string()))?;
            Ok(out)
        }
    }
}

/// A multipart/related body (RFC 2387) of `parts`, each with the Content-Type `part_type`,
/// and its boundary: a delimiter that no part contains.
pub(super) fn multipart(parts: &[Vec<u8>], part_type: &str) -> (String, Vec<u8>) {
    // The same frames give the same body (and so the same bytes behind one ETag).
    let seed = parts
        .iter()
        .flat_map(|p| p.len().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let boundary = choose_boundary(parts, seed);
    let total: usize = parts.iter().map(Vec::len).sum();
    let mut body =
        Vec::with_capacity(total + (parts.len() + 1) * (boundary.len() + part_type.len() + 24));
    for part in parts {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: ");
        body.extend_from_slice(part_type.as_bytes());
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(part);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    (boundary, body)
}

/// The first boundary from `seed` on whose delimiter (`--` and the boundary) is in no part.
/// Each part holds at most as many delimiters as it has bytes, so the search ends.
fn choose_boundary(parts: &[Vec<u8>], mut seed: u64) -> String {
    loop {
        let boundary = format!("pathfed-dicomweb-{seed:016x}");
        let delimiter = format!("--{boundary}");
        let delimiter = delimiter.as_bytes();
        let clash = parts.iter().any(|part| {
            part.windows(delimiter.len())
                .any(|window| window == delimiter)
        });
        if !clash {
            return boundary;
        }
        seed = seed.wrapping_add(1);
    }
}

fn bad_frames(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("dicomweb_bad_frames", message)
}

/// A frame list (`1,5,9`): 1-based numbers, at most [`MAX_FRAMES`] of them.
pub(super) fn parse_frame_list(text: &str) -> Result<Vec<u64>, ApiError> {
    let mut frames = Vec::new();
    for item in text.split(',') {
        if frames.len() == MAX_FRAMES {
            return Err(bad_frames(format!(
                "at most {MAX_FRAMES} frames may be asked for at once"
            )));
        }
        frames.push(parse_frame(item)?);
    }
    Ok(frames)
}

/// One frame number: digits, 1 or more.
pub(super) fn parse_frame(text: &str) -> Result<u64, ApiError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_frames(format!(
            "{text:?} is not a frame number (frames are numbered from 1, in a comma-separated list)"
        )));
    }
    match text.parse::<u64>() {
        Ok(0) => Err(bad_frames("frame numbers start at 1; there is no frame 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(bad_frames(format!("{text:?} is not a frame number"))),
    }
}

#[cfg(test)]
mod tests {
    use pathfed_slide::{Level, SlideProperties};

    use super::*;

    /// A level as (width, height, stored tile size).
    type LevelSpec = (u64, u64, Option<(u32, u32)>);

    fn properties(levels: &[LevelSpec]) -> SlideProperties {
        SlideProperties {
            vendor: "test".into(),
            backend: "tiff",
            levels: levels
                .iter()
                .map(|&(width, height, tile_size)| Level {
                    width,
                    height,
                    downsample: 1.0,
                    tile_size,
                })
                .collect(),
            mpp_x: None,
            mpp_y: None,
            objective_power: None,
            bounds: None,
            associated_images: Vec::new(),
            raw: Default::default(),
        }
    }

    /// Splits a body the way dicomweb-client does: at CRLF and the delimiter, each part's
    /// content after its blank line.
    fn parts_of(body: &[u8], boundary: &str) -> Vec<Vec<u8>> {
        let delimiter = format!("\r\n--{boundary}");
        let delimiter = delimiter.as_bytes();
        let mut parts = Vec::new();
        let mut rest = body;
        while let Some(at) = rest.windows(delimiter.len()).position(|w| w == delimiter) {
            let part = &rest[..at];
            let start = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            parts.push(part[start..].to_vec());
            rest = &rest[at + delimiter.len()..];
        }
        assert_eq!(rest, b"--\r\n", "the body ends with the close delimiter");
        parts
    }

    #[test]
    fn multipart_bodies_carry_each_part_untouched() {
        let parts = vec![
            b"\xff\xd8first\r\n\r\nframe\xff\xd9".to_vec(),
            Vec::new(),
            b"--not-a-boundary\r\n".to_vec(),
        ];
        let (boundary, body) = multipart(&parts, "image/jpeg");
        assert!(
            body.starts_with(
                format!("--{boundary}\r\nContent-Type: image/jpeg\r\n\r\n").as_bytes()
            )
        );
        assert_eq!(parts_of(&body, &boundary), parts);
        // The same parts, the same body.
        assert_eq!(multipart(&parts, "image/jpeg").1, body);
    }

    #[test]
    fn a_boundary_found_in_a_part_is_not_used() {
        let seed = 7;
        let first = choose_boundary(&[], seed);
        let parts = vec![format!("xx--{first}yy").into_bytes()];
        let chosen = choose_boundary(&parts, seed);
        assert_ne!(chosen, first);
        let (boundary, body) = multipart(&parts, "image/jpeg");
        assert!(
            !parts[0]
                .windows(boundary.len())
                .any(|w| w == boundary.as_bytes())
        );
        assert_eq!(parts_of(&body, &boundary), parts);
    }

    #[test]
    fn frame_lists_are_one_based_and_bounded() {
        assert_eq!(parse_frame_list("1").ok(), Some(vec![1]));
        assert_eq!(parse_frame_list("3,1,3").ok(), Some(vec![3, 1, 3]));
        let most = vec!["1"; MAX_FRAMES].join(",");
        assert_eq!(
            parse_frame_list(&most).map(|f| f.len()).ok(),
            Some(MAX_FRAMES)
        );
        for bad in [
            "",
            "0",
            "1,0",
            "-1",
            "+1",
            "1.5",
            "a",
            "1,,2",
            "1,",
            "99999999999999999",
        ] {
            let error = parse_frame_list(bad).expect_err(bad);
            assert_eq!(error.code, "dicomweb_bad_frames", "{bad}");
        }
        let too_many = vec!["1"; MAX_FRAMES + 1].join(",");
        assert!(parse_frame_list(&too_many).is_err());
    }

    #[test]
    fn levels_are_cut_row_by_row_on_their_stored_grid() {
        let slide = properties(&[
            (2220, 2967, Some((240, 240))),
            (555, 741, Some((240, 240))),
            (138, 185, None),
        ]);
        let full = Tiling::of(&slide, 0).unwrap();
        assert_eq!((full.columns, full.rows, full.count()), (10, 13, 130));
        assert!(full.stored);
        assert_eq!(full.position(1), Some((0, 0)));
        assert_eq!(full.position(12), Some((1, 1)));
        assert_eq!(full.position(130), Some((9, 12)));
        assert_eq!(full.position(0), None);
        assert_eq!(full.position(131), None);
        // A level without tiles of its own takes level 0's frame size, and is not passed through.
        let small = Tiling::of(&slide, 2).unwrap();
        assert_eq!((small.frame_width, small.frame_height), (240, 240));
        assert_eq!((small.columns, small.rows), (1, 1));
        assert!(!small.stored);
        assert_eq!(Tiling::of(&slide, 3), None);
        let untiled = properties(&[(1000, 600, None), (10, 10, Some((8, 8)))]);
        let level = Tiling::of(&untiled, 0).unwrap();
        assert_eq!((level.frame_width, level.columns, level.rows), (256, 4, 3));
        // Tiles too small to be frames are not used as frames.
        let tiny = Tiling::of(&untiled, 1).unwrap();
        assert_eq!((tiny.frame_width, tiny.stored), (256, false));
    }

    #[test]
    fn encoded_frames_are_in_the_colour_model_they_are_labelled_with() {
        let image = RgbImage::from_fn(48, 32, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
        });
        for colour in [Colour::Rgb, Colour::YbrFull] {
            let stream = encode(colour, &image, 95).unwrap();
            assert_eq!(colour_of(&stream), Some(colour), "{colour:?}");
            let (w, h, decoded) = jpeg::decode_rgb(&stream, 1024).unwrap();
            assert_eq!((w, h), (48, 32));
            let diff: f64 = decoded
                .iter()
                .zip(image.as_raw())
                .map(|(a, b)| f64::from(a.abs_diff(*b)))
                .sum::<f64>()
                / decoded.len() as f64;
            assert!(diff < 3.0, "{colour:?} decodes {diff} away from its pixels");
        }
        // The platform's tile encoder subsamples at ordinary qualities.
        let subsampled = encode(Colour::YbrFull422, &image, 80).unwrap();
        assert_eq!(colour_of(&subsampled), Some(Colour::YbrFull422));
        // RGB components under both a JFIF and an Adobe marker read as YCbCr (JFIF wins, as
        // in libjpeg), so they are not passed through as RGB; with the Adobe marker alone, as
        // the reader completes Aperio's tiles, they are RGB.
        let plain = jpeg::encode_raw_rgb_components(image.as_raw(), 48, 32, 90).unwrap();
        let both = jpeg::complete_stream(None, &plain, true).unwrap();
        assert_eq!(colour_of(&both), Some(Colour::YbrFull));
        let (aperio, _) = jpeg::strip_metadata(&both).unwrap();
        assert_eq!(colour_of(&aperio), Some(Colour::Rgb));
        assert_eq!(colour_of(b"not a jpeg"), None);
    }
}
