//! Where each frame's bytes lie, and reading and decoding one frame by offset.
//!
//! Encapsulated pixel data is a sequence of items: the Basic Offset Table first, then the
//! fragments. A frame's start comes from the Extended Offset Table (7FE0,0001), else the Basic
//! Offset Table, else from walking the item headers (8 bytes each; frame bodies are never read
//! to find them). A frame then runs to the next frame's first item, or for the last one to the
//! sequence delimiter; its bytes are the values of the items in that range, so frames split over
//! several fragments read correctly. The Extended Offset Table's lengths are not needed and not
//! trusted (writers disagree on whether they count the item header). Native pixel data holds the
//! frames back to back.
//!
//! Every range is checked against the file length and the tile-size limit when the slide is
//! opened, so a read never goes past the end or allocates more than one tile's worth.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use pathfed_core::SlideLimits;

use crate::error::{Result, SlideError};
use crate::j2k::J2kColour;

/// The item tag (FFFE,E000) as it appears in little-endian bytes.
const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
/// The sequence delimitation tag (FFFE,E0DD).
const SEQUENCE_END: [u8; 4] = [0xFE, 0xFF, 0xDD, 0xE0];
/// Bytes of an item header: tag and 32-bit length.
const ITEM_HEADER: u64 = 8;

/// The bytes of one frame in the file: raw pixels (native) or its item(s) (encapsulated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRange {
    /// File offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// How a frame's bytes become RGB pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// JPEG baseline; `rgb` when the Photometric Interpretation is RGB (see [`jpeg_stream`]).
    Jpeg {
        /// The DICOM header says the components are R, G, B rather than Y, Cb, Cr.
        rgb: bool,
    },
    /// JPEG 2000, lossless or lossy.
    Jpeg2000(J2kColour),
    /// Uncompressed interleaved 8-bit RGB.
    Native,
}

/// An item header read from the file: its tag bytes, value length and the first value bytes.
struct ItemHeader {
    tag: [u8; 4],
    len: u64,
    peek: Vec<u8>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> SlideError + '_ {
    move |source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads `len` bytes at `offset` after checking they lie inside the file.
pub fn read_at(
    file: &File,
    path: &Path,
    file_len: u64,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>> {
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(SlideError::OffsetPastEnd {
            what,
            offset,
            len,
            file_len,
        });
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(io_error(path))?;
    Ok(buf)
}

/// Reads the item header at `at` and up to four bytes of its value (to spot a codestream start).
fn item_header(file: &File, path: &Path, file_len: u64, at: u64) -> Result<ItemHeader> {
    let available = file_len.saturating_sub(at).min(ITEM_HEADER + 4);
    if available < ITEM_HEADER {
        return Err(SlideError::Truncated(format!(
            "the DICOM pixel data ends at byte {file_len} without its sequence delimiter"
        )));
    }
    let bytes = read_at(file, path, file_len, at, available, "DICOM pixel data item")?;
    let tag = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let len = u64::from(u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
    Ok(ItemHeader {
        tag,
        len,
        peek: bytes[ITEM_HEADER as usize..].to_vec(),
    })
}

/// Checks the frame sizes against the tile-size limit.
fn check_sizes(ranges: &[FrameRange], image: usize, limits: &SlideLimits) -> Result<()> {
    for (index, range) in ranges.iter().enumerate() {
        if range.len <= ITEM_HEADER {
            return Err(SlideError::ZeroLengthTile { image, index });
        }
        let payload = range.len - ITEM_HEADER;
        if payload > limits.max_tile_bytes {
            return Err(SlideError::LimitExceeded {
                what: "tile size in bytes",
                value: payload,
                limit: limits.max_tile_bytes,
            });
        }
    }
    Ok(())
}

/// What one encapsulated image needs to find its frames.
pub struct Encapsulated<'a> {
    /// The open file.
    pub file: &'a File,
    /// Its path, for I/O errors.
    pub path: &'a Path,
    /// Its length.
    pub file_len: u64,
    /// Offset of the Basic Offset Table item.
    pub items_start: u64,
    /// Number of Frames.
    pub frames: u64,
    /// The Extended Offset Table, when the file has one.
    pub extended: Option<Vec<u64>>,
    /// The bytes every frame's codestream starts with (SOI for JPEG, SOC for JPEG 2000).
    pub marker: &'a [u8],
    /// This image's index among the slide's instances, for error messages.
    pub image: usize,
}

/// A pixel-data fragment: its value's file offset and its first bytes.
type Fragment = (u64, Vec<u8>);

impl Encapsulated<'_> {
    /// The byte range of every frame, in frame order.
    pub fn locate(&self, limits: &SlideLimits) -> Result<Vec<FrameRange>> {
        let table = item_header(self.file, self.path, self.file_len, self.items_start)?;
        if table.tag != ITEM {
            return Err(SlideError::InvalidDicom(format!(
                "encapsulated pixel data at byte {} does not start with an item",
                self.items_start
            )));
        }
        if !table.len.is_multiple_of(4) {
            return Err(SlideError::InvalidDicom(format!(
                "a Basic Offset Table of {} bytes (not a multiple of 4)",
                table.len
            )));
        }
        let first = self.items_start + ITEM_HEADER + table.len;
        let offsets: Option<Vec<u64>> = match &self.extended {
            Some(extended) if !extended.is_empty() => Some(extended.clone()),
            _ if table.len > 0 => {
                if table.len / 4 != self.frames {
                    return Err(SlideError::InvalidDicom(format!(
                        "the Basic Offset Table lists {} frames, Number of Frames says {}",
                        table.len / 4,
                        self.frames
                    )));
                }
                let bytes = read_at(
                    self.file,
                    self.path,
                    self.file_len,
                    self.items_start + ITEM_HEADER,
                    table.len,
                    "DICOM Basic Offset Table",
                )?;
                Some(
                    bytes
                        .chunks_exact(4)
                        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                        .collect(),
                )
            }
            _ => None,
        };
        let ranges = match offsets {
            Some(offsets) => self.table_ranges(first, &offsets, limits)?,
            None => self.by_walking(first, limits)?,
        };
        check_sizes(&ranges, self.image, limits)?;
        Ok(ranges)
    }

    /// Frame ranges from a table of offsets relative to the first fragment.
    fn table_ranges(
        &self,
        first: u64,
        offsets: &[u64],
        limits: &SlideLimits,
    ) -> Result<Vec<FrameRange>> {
        if offsets.len() as u64 != self.frames {
            return Err(SlideError::InvalidDicom(format!(
                "the offset table lists {} frames, Number of Frames says {}",
                offsets.len(),
                self.frames
            )));
        }
        let mut starts = Vec::with_capacity(offsets.len());
        for &offset in offsets {
            let start = first
                .checked_add(offset)
                .filter(|&start| start < self.file_len)
                .ok_or(SlideError::OffsetPastEnd {
                    what: "DICOM frame",
                    offset: first.saturating_add(offset),
                    len: ITEM_HEADER,
                    file_len: self.file_len,
                })?;
            if starts.last().is_some_and(|&previous| start <= previous) {
                return Err(SlideError::InvalidDicom(format!(
                    "the offset table is not increasing at frame {}",
                    starts.len()
                )));
            }
            starts.push(start);
        }
        let Some(&last) = starts.last() else {
            return Ok(Vec::new());
        };
        // The last frame runs to the sequence delimiter: walk its items (usually one).
        let (fragments, end) = self.walk(last, limits)?;
        if fragments.is_empty() {
            return Err(SlideError::InvalidDicom(
                "the offset table points at the end of the pixel data".into(),
            ));
        }
        let mut ranges: Vec<FrameRange> = starts
            .windows(2)
            .map(|pair| FrameRange {
                offset: pair[0],
                len: pair[1] - pair[0],
            })
            .collect();
        ranges.push(FrameRange {
            offset: last,
            len: end - last,
        });
        Ok(ranges)
    }

    /// Walks the fragment items from `from` to the sequence delimiter (or the file's end):
    /// each fragment's offset and first bytes, and where the fragments end.
    fn walk(&self, from: u64, limits: &SlideLimits) -> Result<(Vec<Fragment>, u64)> {
        let mut fragments = Vec::new();
        let mut at = from;
        while at < self.file_len {
            let header = item_header(self.file, self.path, self.file_len, at)?;
            if header.tag == SEQUENCE_END {
                break;
            }
            if header.tag != ITEM {
                return Err(SlideError::InvalidDicom(format!(
                    "expected a pixel data item at byte {at}"
                )));
            }
            let end = at + ITEM_HEADER + header.len;
            if end > self.file_len {
                return Err(SlideError::OffsetPastEnd {
                    what: "DICOM pixel data fragment",
                    offset: at + ITEM_HEADER,
                    len: header.len,
                    file_len: self.file_len,
                });
            }
            if fragments.len() as u64 >= limits.max_tiles {
                return Err(SlideError::LimitExceeded {
                    what: "DICOM pixel data fragment count",
                    value: fragments.len() as u64 + 1,
                    limit: limits.max_tiles,
                });
            }
            fragments.push((at, header.peek));
            at = end;
        }
        Ok((fragments, at))
    }

    /// Frame ranges without an offset table: one fragment per frame, all fragments in one frame,
    /// or frames starting at the fragments that begin with the codestream marker.
    fn by_walking(&self, first: u64, limits: &SlideLimits) -> Result<Vec<FrameRange>> {
        let (fragments, end) = self.walk(first, limits)?;
        let starts: Vec<u64> = if fragments.len() as u64 == self.frames {
            fragments.iter().map(|(at, _)| *at).collect()
        } else if self.frames == 1 && !fragments.is_empty() {
            vec![fragments[0].0]
        } else {
            let starts: Vec<u64> = fragments
                .iter()
                .filter(|(_, peek)| peek.starts_with(self.marker))
                .map(|(at, _)| *at)
                .collect();
            if starts.len() as u64 != self.frames
                || starts.first() != fragments.first().map(|f| &f.0)
            {
                return Err(SlideError::InvalidDicom(format!(
                    "{} pixel data fragments cannot be split into {} frames without an offset \
                     table",
                    fragments.len(),
                    self.frames
                )));
            }
            starts
        };
        let mut ranges = Vec::with_capacity(starts.len());
        for (i, &start) in starts.iter().enumerate() {
            let stop = starts.get(i + 1).copied().unwrap_or(end);
            ranges.push(FrameRange {
                offset: start,
                len: stop - start,
            });
        }
        Ok(ranges)
    }
}

/// Frame ranges of native pixel data: `frames` frames of `frame_bytes` each from `offset`.
pub fn locate_native(
    offset: u64,
    declared: u64,
    frames: u64,
    frame_bytes: u64,
    file_len: u64,
    limits: &SlideLimits,
) -> Result<Vec<FrameRange>> {
    if frame_bytes > limits.max_tile_bytes {
        return Err(SlideError::LimitExceeded {
            what: "tile size in bytes",
            value: frame_bytes,
            limit: limits.max_tile_bytes,
        });
    }
    let needed = frames.checked_mul(frame_bytes).ok_or_else(|| {
        SlideError::InvalidDicom(format!("{frames} frames of {frame_bytes} bytes"))
    })?;
    if needed > declared {
        return Err(SlideError::InvalidDicom(format!(
            "the pixel data holds {declared} bytes, {frames} frames need {needed}"
        )));
    }
    if offset.checked_add(needed).is_none_or(|end| end > file_len) {
        return Err(SlideError::OffsetPastEnd {
            what: "DICOM native pixel data",
            offset,
            len: needed,
            file_len,
        });
    }
    Ok((0..frames)
        .map(|i| FrameRange {
            offset: offset + i * frame_bytes,
            len: frame_bytes,
        })
        .collect())
}

/// The codestream of an encapsulated frame: the values of the items in `bytes`, joined.
pub fn join_fragments(mut bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let mut pieces = Vec::new();
    let mut at = 0usize;
    while at + ITEM_HEADER as usize <= bytes.len() {
        let tag = &bytes[at..at + 4];
        if tag == SEQUENCE_END {
            break;
        }
        if tag != ITEM {
            return Err(format!("no item header at byte {at} of the frame"));
        }
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let start = at + ITEM_HEADER as usize;
        let end = start
            .checked_add(len as usize)
            .filter(|&end| end <= bytes.len())
            .ok_or_else(|| format!("an item of {len} bytes runs past the frame"))?;
        pieces.push((start, end));
        at = end;
    }
    match pieces.as_slice() {
        [] => Err("a frame without data".into()),
        [(start, end)] => {
            bytes.truncate(*end);
            bytes.drain(..*start);
            Ok(bytes)
        }
        many => Ok(many
            .iter()
            .flat_map(|&(start, end)| bytes[start..end].iter().copied())
            .collect()),
    }
}

/// A complete JPEG stream for a frame. A stream that says nothing of its colour space (no JFIF
/// or Adobe marker) gets an Adobe marker saying "untransformed RGB" when the DICOM Photometric
/// Interpretation is RGB; a stream that does say is left alone, because its own word is what
/// every decoder, browsers included, follows (writers label YCbCr JFIF frames "RGB" too).
pub fn jpeg_stream(data: Vec<u8>, rgb: bool) -> std::result::Result<Vec<u8>, String> {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err("a JPEG frame that does not start with SOI".into());
    }
    if rgb && !declares_colour_space(&data) {
        crate::jpeg::complete_stream(None, &data, true).map_err(|e| e.to_string())
    } else {
        Ok(data)
    }
}

/// Whether a JPEG stream carries a JFIF (YCbCr) or Adobe (transform flag) marker before its scan.
fn declares_colour_space(data: &[u8]) -> bool {
    crate::jpeg::split_header(data).is_ok_and(|(segments, _)| {
        segments.iter().any(|s| {
            (s.marker == 0xE0 && s.payload.starts_with(b"JFIF\0"))
                || (s.marker == 0xEE && s.payload.starts_with(b"Adobe"))
        })
    })
}

/// Decodes one frame's codestream (or raw pixels) to `tile_w × tile_h` RGB; `fail` turns a
/// decoder's message into the caller's error.
pub fn decode(
    codec: Codec,
    data: Vec<u8>,
    tile_w: u32,
    tile_h: u32,
    limits: &SlideLimits,
    fail: impl Fn(String) -> SlideError,
) -> Result<Vec<u8>> {
    let (tw, th) = (tile_w as usize, tile_h as usize);
    let expected = tw * th * 3;
    match codec {
        Codec::Native => {
            if data.len() < expected {
                return Err(fail(format!(
                    "{} bytes for a {tw}×{th} RGB frame",
                    data.len()
                )));
            }
            let mut data = data;
            data.truncate(expected);
            Ok(data)
        }
        Codec::Jpeg { rgb } => {
            let stream = jpeg_stream(data, rgb).map_err(&fail)?;
            let (w, h, pixels) =
                crate::jpeg::decode_rgb(&stream, tile_w.max(tile_h)).map_err(&fail)?;
            let (w, h) = (w as usize, h as usize);
            if (w, h) == (tw, th) {
                return Ok(pixels);
            }
            if w > tw || h > th {
                return Err(fail(format!(
                    "JPEG is {w}×{h}, the frame size is {tw}×{th}"
                )));
            }
            // A frame stored smaller than the tile: the rest is glass.
            let mut out = vec![255u8; expected];
            for row in 0..h {
                out[row * tw * 3..row * tw * 3 + w * 3]
                    .copy_from_slice(&pixels[row * w * 3..(row + 1) * w * 3]);
            }
            Ok(out)
        }
        Codec::Jpeg2000(colour) => {
            // Some writers crop the frames at the right and bottom edges of the matrix to the
            // pixels that exist there, though DICOM declares every frame full size: such a
            // frame is decoded at its own size and the rest of the tile left white.
            let (w, h) = crate::j2k::codestream_size(&data)?;
            if (w, h) == (tile_w, tile_h) || w > tile_w || h > tile_h {
                return crate::j2k::decode_rgb(&data, tile_w, tile_h, colour, limits);
            }
            let part = crate::j2k::decode_rgb(&data, w, h, colour, limits)?;
            let mut out = vec![255u8; tile_w as usize * tile_h as usize * 3];
            let (w, tile_w) = (w as usize, tile_w as usize);
            for (row, line) in part.chunks_exact(w * 3).enumerate() {
                let start = row * tile_w * 3;
                out[start..start + w * 3].copy_from_slice(line);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(value: &[u8]) -> Vec<u8> {
        let mut out = ITEM.to_vec();
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn fragments_are_joined_and_delimiters_end_a_frame() {
        assert_eq!(join_fragments(item(b"abcd")).unwrap(), b"abcd");
        let mut two = item(b"ab");
        two.extend(item(b"cdef"));
        two.extend_from_slice(&SEQUENCE_END);
        two.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(join_fragments(two).unwrap(), b"abcdef");
        let mut short = item(b"abcd");
        short.truncate(10);
        assert!(join_fragments(short).is_err());
        assert!(join_fragments(b"not an item at all".to_vec()).is_err());
        assert!(join_fragments(Vec::new()).is_err());
    }

    #[test]
    fn native_frames_must_fit_the_value_and_the_file() {
        let limits = SlideLimits::default();
        let ranges = locate_native(100, 48, 2, 24, 1000, &limits).unwrap();
        assert_eq!(
            ranges[1],
            FrameRange {
                offset: 124,
                len: 24
            }
        );
        assert!(matches!(
            locate_native(100, 24, 2, 24, 1000, &limits),
            Err(SlideError::InvalidDicom(_))
        ));
        assert!(matches!(
            locate_native(990, 48, 2, 24, 1000, &limits),
            Err(SlideError::OffsetPastEnd { .. })
        ));
        assert!(matches!(
            locate_native(0, u64::MAX, u64::MAX, 24, 1000, &limits),
            Err(SlideError::InvalidDicom(_))
        ));
    }
}
