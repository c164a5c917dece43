//! Bounded reading of one DICOM Part 10 file's attributes, stopping where the pixel data begins.
//!
//! The dicom-rs token reader decodes every element (VRs, text in the declared character set,
//! numbers); this module drives it token by token so that hostile declared sizes are refused
//! *before* the reader allocates for them: every element and item length is checked against
//! the bytes left in the file and [`SlideLimits::max_tag_bytes`], the header as a whole is
//! capped, and so are nesting depth and element count. The reader counts the bytes it consumes,
//! so when it meets the top-level Pixel Data element the file offset of its value is known
//! exactly and the frames can later be read by offset without ever loading the whole object.
//!
//! The Per-Frame Functional Groups Sequence of a TILED_SPARSE image holds one item per frame;
//! its items are reduced to the frame's position and optical path as they are read, so a slide
//! with a million frames costs a few bytes per frame rather than a tree of elements.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;

use dicom_core::{PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_parser::dataset::{DataSetReader, DataToken};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use pathfed_core::SlideLimits;

use crate::error::{Result, SlideError};

/// Explicit VR Little Endian: the encoding of every file meta group, and of the data set under
/// every transfer syntax this reader accepts.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// Largest file meta group accepted; real ones are a few hundred bytes.
const MAX_META_BYTES: u64 = 1 << 20;
/// Deepest nesting of sequences and items accepted (real WSI headers nest about five deep).
const MAX_DEPTH: usize = 32;
/// Most elements kept from one header, per-frame items excluded (a WSI header has a few hundred).
const MAX_ELEMENTS: usize = 1_000_000;

/// One attribute value: a primitive value with its VR, or a sequence of items.
#[derive(Debug, Clone)]
pub enum Element {
    /// A primitive value and the VR it was encoded with.
    Value(VR, PrimitiveValue),
    /// The items of a sequence.
    Sequence(Vec<DataSet>),
}

/// A data set: the root of a file or one sequence item, keyed by tag in file order.
#[derive(Debug, Clone, Default)]
pub struct DataSet {
    /// The elements by tag.
    pub elements: BTreeMap<Tag, Element>,
}

impl DataSet {
    /// The primitive value of `tag`, if present and not a sequence.
    pub fn value(&self, tag: Tag) -> Option<&PrimitiveValue> {
        match self.elements.get(&tag) {
            Some(Element::Value(_, value)) => Some(value),
            _ => None,
        }
    }

    /// The value of `tag` as one trimmed string; `None` when absent or empty.
    pub fn string(&self, tag: Tag) -> Option<String> {
        let text = self.value(tag)?.to_str().trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// Value `index` of the multi-valued string attribute `tag`.
    pub fn string_at(&self, tag: Tag, index: usize) -> Option<String> {
        let values = self.value(tag)?.to_multi_str();
        let text = values.get(index)?.trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    /// The first value of `tag` as an unsigned integer (US, UL, IS, ...).
    pub fn uint(&self, tag: Tag) -> Option<u64> {
        self.value(tag)?.to_int::<u64>().ok()
    }

    /// The first value of `tag` as a signed integer (SL, SS, IS, ...).
    pub fn int(&self, tag: Tag) -> Option<i64> {
        self.value(tag)?.to_int::<i64>().ok()
    }

    /// Every value of `tag` as floating point numbers (DS, FL, FD, ...).
    pub fn floats(&self, tag: Tag) -> Option<Vec<f64>> {
        self.value(tag)?.to_multi_float64().ok()
    }

    /// Every value of a 64-bit unsigned attribute (OV, UV): the Extended Offset Table.
    pub fn u64s(&self, tag: Tag) -> Option<Vec<u64>> {
        match self.value(tag)? {
            PrimitiveValue::U64(values) => Some(values.to_vec()),
            PrimitiveValue::Empty => Some(Vec::new()),
            // Read without a dictionary VR (UN, OB): eight little-endian bytes per value.
            PrimitiveValue::U8(bytes) if bytes.len().is_multiple_of(8) => Some(
                bytes
                    .chunks_exact(8)
                    .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Item `index` of the sequence `tag`.
    pub fn item(&self, tag: Tag, index: usize) -> Option<&DataSet> {
        match self.elements.get(&tag) {
            Some(Element::Sequence(items)) => items.get(index),
            _ => None,
        }
    }
}

/// Where the pixel data's value starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelData {
    /// Encapsulated (compressed) frames: file offset of the first item, the Basic Offset Table.
    Encapsulated {
        /// Offset of the Basic Offset Table item's header.
        items_start: u64,
    },
    /// Native (uncompressed) frames, back to back.
    Native {
        /// Offset of the first pixel byte.
        offset: u64,
        /// Declared value length in bytes.
        len: u64,
    },
}

/// A frame's place in the total pixel matrix, from its Per-Frame Functional Groups item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePosition {
    /// Column and row position of the frame's top-left pixel, 1-based, if the item has one.
    pub position: Option<(i64, i64)>,
    /// Index into [`Body::optical_paths`], or `None` when the item names no optical path.
    pub optical_path: Option<u32>,
}

/// The file meta group and where the data set begins.
#[derive(Debug)]
pub struct Meta {
    /// The file meta elements (group 0002).
    pub meta: DataSet,
    /// File offset of the first data set element.
    pub dataset_start: u64,
}

impl Meta {
    /// The Transfer Syntax UID.
    pub fn transfer_syntax(&self) -> Option<String> {
        self.meta.string(tags::TRANSFER_SYNTAX_UID)
    }

    /// The Media Storage SOP Class UID.
    pub fn sop_class(&self) -> Option<String> {
        self.meta.string(tags::MEDIA_STORAGE_SOP_CLASS_UID)
    }
}

/// The data set up to the pixel data.
#[derive(Debug)]
pub struct Body {
    /// Every element before the pixel data (per-frame items reduced to [`Body::frames`]).
    pub data: DataSet,
    /// Where the frames are.
    pub pixel: PixelData,
    /// One entry per Per-Frame Functional Groups item, in frame order; `None` without that
    /// sequence.
    pub frames: Option<Vec<FramePosition>>,
    /// Optical path identifiers the per-frame items name, indexed by
    /// [`FramePosition::optical_path`].
    pub optical_paths: Vec<String>,
}

/// True if the first bytes are a DICOM Part 10 preamble and magic.
pub fn is_dicom_magic(head: &[u8]) -> bool {
    head.get(128..132) == Some(b"DICM".as_slice())
}

fn invalid(message: impl Into<String>) -> SlideError {
    SlideError::InvalidDicom(message.into())
}

/// An error and its causes on one line (dicom-rs errors put the detail in their sources).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// Whether an error was caused by the input ending early.
fn ends_early(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        source = cause.source();
    }
    false
}

fn read_at(file: &File, offset: u64, len: usize, path: &Path) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|source| SlideError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(buf)
}

/// Bytes before the file meta group's elements: preamble, magic, the group length element.
pub const META_START: u64 = 144;

/// The length of the file meta group's elements, from the first [`META_START`] bytes.
fn meta_group_len(head: &[u8]) -> Result<u64> {
    if (head.len() as u64) < META_START {
        return Err(SlideError::Truncated(format!(
            "{} bytes hold no DICOM file meta group",
            head.len()
        )));
    }
    if !is_dicom_magic(head) {
        return Err(SlideError::NotASlide(
            "no DICOM magic (\"DICM\" at byte 128)".into(),
        ));
    }
    // The group starts with its own length: (0002,0000) UL, 4 bytes, explicit VR little endian.
    let group = &head[132..144];
    if group[..8] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00] {
        return Err(invalid(
            "the file meta group does not start with its group length (0002,0000)",
        ));
    }
    let group_len = u64::from(u32::from_le_bytes([
        group[8], group[9], group[10], group[11],
    ]));
    if group_len > MAX_META_BYTES {
        return Err(SlideError::LimitExceeded {
            what: "DICOM file meta group size",
            value: group_len,
            limit: MAX_META_BYTES,
        });
    }
    Ok(group_len)
}

/// Parses the file meta group's elements (`bytes`, which follow the group length element).
fn meta_from(bytes: Vec<u8>) -> Result<Meta> {
    let group_len = bytes.len() as u64;
    let bounds = Bounds {
        start: META_START,
        end: META_START + group_len,
        max_value: group_len,
    };
    let parsed = parse(std::io::Cursor::new(bytes), bounds, Mode::Meta)?;
    Ok(Meta {
        meta: parsed.data,
        dataset_start: META_START + group_len,
    })
}

/// Reads the preamble, magic and file meta group of `file` (`file_len` bytes long).
pub fn read_meta(file: &File, file_len: u64, path: &Path) -> Result<Meta> {
    if file_len < META_START {
        return Err(SlideError::Truncated(format!(
            "a DICOM file of {file_len} bytes has no room for its file meta group"
        )));
    }
    let head = read_at(file, 0, META_START as usize, path)?;
    let group_len = meta_group_len(&head)?;
    if META_START + group_len > file_len {
        return Err(SlideError::OffsetPastEnd {
            what: "DICOM file meta group",
            offset: META_START,
            len: group_len,
            file_len,
        });
    }
    meta_from(read_at(file, META_START, group_len as usize, path)?)
}

/// Parses the file meta group from the first bytes of a file; [`SlideError::Truncated`] when
/// `head` ends before the group does.
pub fn meta_of_head(head: &[u8]) -> Result<Meta> {
    let group_len = meta_group_len(head)?;
    let end = META_START + group_len;
    let Some(bytes) = head.get(META_START as usize..end as usize) else {
        return Err(SlideError::Truncated(format!(
            "the DICOM file meta group ends at byte {end}, after the {} bytes given",
            head.len()
        )));
    };
    meta_from(bytes.to_vec())
}

/// Reads the data set of `path` from `dataset_start` up to the top-level Pixel Data element.
pub fn read_body(
    path: &Path,
    dataset_start: u64,
    file_len: u64,
    limits: &SlideLimits,
) -> Result<Body> {
    let io = |source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(dataset_start)).map_err(io)?;
    // The header may not run past the file nor past the configured size of metadata.
    let end = file_len.min(dataset_start.saturating_add(limits.max_tag_bytes));
    let reader = BufReader::new(file).take(end - dataset_start);
    let bounds = Bounds {
        start: dataset_start,
        end,
        max_value: limits.max_tag_bytes,
    };
    let parsed = parse(reader, bounds, Mode::DataSet { limits })?;
    let Some(pixel) = parsed.pixel else {
        if end < file_len {
            return Err(SlideError::LimitExceeded {
                what: "DICOM header size before the pixel data",
                value: file_len - dataset_start,
                limit: limits.max_tag_bytes,
            });
        }
        return Err(SlideError::Truncated(
            "the DICOM data set ends without Pixel Data (7FE0,0010)".into(),
        ));
    };
    Ok(Body {
        data: parsed.data,
        pixel,
        frames: parsed.frames,
        optical_paths: parsed.optical_paths,
    })
}

/// The byte range a parse may cover and the largest single value it may read.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// File offset of the first byte handed to the reader.
    start: u64,
    /// File offset the reader must not pass.
    end: u64,
    /// Largest element or item value.
    max_value: u64,
}

#[derive(Clone, Copy)]
enum Mode<'a> {
    /// The file meta group: read to its end.
    Meta,
    /// The data set: stop at the top-level pixel data, reduce per-frame items.
    DataSet { limits: &'a SlideLimits },
}

struct Parsed {
    data: DataSet,
    pixel: Option<PixelData>,
    frames: Option<Vec<FramePosition>>,
    optical_paths: Vec<String>,
}

/// Counts the bytes the token reader consumes; the reader reads exactly what it decodes, so
/// the count is its position.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// What is open while tokens arrive.
enum Open {
    /// A data set (the root or a sequence item) being filled.
    Set(DataSet),
    /// A sequence collecting its items; `per_frame` for the Per-Frame Functional Groups.
    Sequence {
        tag: Tag,
        items: Vec<DataSet>,
        per_frame: bool,
    },
    /// Encapsulated pixel data nested in an item (an icon image): skipped.
    Pixels,
    /// One fragment item of nested encapsulated pixel data.
    Fragment,
}

fn parse<R: Read + 'static>(source: R, bounds: Bounds, mode: Mode<'_>) -> Result<Parsed> {
    let count = Rc::new(Cell::new(0u64));
    let counted = Counted {
        inner: source,
        count: Rc::clone(&count),
    };
    let registry = TransferSyntaxRegistry;
    let ts = registry
        .get(EXPLICIT_VR_LITTLE_ENDIAN)
        .ok_or_else(|| invalid("the explicit VR little endian decoder is not registered"))?;
    let mut reader = DataSetReader::new_with_ts(counted, ts)
        .map_err(|e| invalid(format!("cannot start the DICOM reader: {}", chain(&e))))?;

    let here = || bounds.start + count.get();
    let check_len = |len: u64, at: u64, what: &'static str| -> Result<()> {
        if len > bounds.max_value {
            return Err(SlideError::LimitExceeded {
                what,
                value: len,
                limit: bounds.max_value,
            });
        }
        if at.saturating_add(len) > bounds.end {
            return Err(SlideError::OffsetPastEnd {
                what,
                offset: at,
                len,
                file_len: bounds.end,
            });
        }
        Ok(())
    };

    let mut stack = vec![Open::Set(DataSet::default())];
    let mut pending: Option<(Tag, VR)> = None;
    let mut frames: Option<Vec<FramePosition>> = None;
    let mut optical_paths: Vec<String> = Vec::new();
    let mut elements = 0usize;
    let max_frames = match mode {
        Mode::DataSet { limits } => limits.max_tiles,
        Mode::Meta => 0,
    };
    let top_level = |stack: &[Open]| stack.len() == 1 && matches!(mode, Mode::DataSet { .. });

    loop {
        let at = here();
        let token = match reader.next() {
            None => break,
            Some(Ok(token)) => token,
            Some(Err(e)) => {
                let message = format!("at byte {at}: {}", chain(&e));
                return Err(if ends_early(&e) {
                    SlideError::Truncated(format!("DICOM data set {message}"))
                } else {
                    invalid(message)
                });
            }
        };
        let at = here();
        match token {
            DataToken::ElementHeader(header) => {
                let len = u64::from(header.len.get().unwrap_or(0));
                if header.tag == tags::PIXEL_DATA && top_level(stack.as_slice()) {
                    // Native pixel data is not metadata: its extent is checked against the file
                    // when the frames are located.
                    return finish(
                        stack,
                        Some(PixelData::Native { offset: at, len }),
                        frames,
                        optical_paths,
                    );
                }
                check_len(len, at, "DICOM element value")?;
                pending = Some((header.tag, header.vr));
            }
            DataToken::PrimitiveValue(value) => {
                let Some((tag, vr)) = pending.take() else {
                    return Err(invalid(format!("a value without an element at byte {at}")));
                };
                let Some(Open::Set(set)) = stack.last_mut() else {
                    return Err(invalid(format!("an element outside any item at byte {at}")));
                };
                set.elements.insert(tag, Element::Value(vr, value));
                elements += 1;
            }
            DataToken::SequenceStart { tag, len } => {
                if let Some(len) = len.get() {
                    check_len(u64::from(len), at, "DICOM sequence")?;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(SlideError::LimitExceeded {
                        what: "DICOM sequence nesting depth",
                        value: stack.len() as u64 + 1,
                        limit: MAX_DEPTH as u64,
                    });
                }
                let per_frame = tag == tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE
                    && top_level(stack.as_slice());
                if per_frame {
                    frames = Some(Vec::new());
                }
                stack.push(Open::Sequence {
                    tag,
                    items: Vec::new(),
                    per_frame,
                });
            }
            DataToken::ItemStart { len } => {
                if let Some(len) = len.get() {
                    check_len(u64::from(len), at, "DICOM item")?;
                }
                match stack.last() {
                    Some(Open::Sequence { .. }) => stack.push(Open::Set(DataSet::default())),
                    Some(Open::Pixels) => stack.push(Open::Fragment),
                    _ => return Err(invalid(format!("an item outside a sequence at byte {at}"))),
                }
            }
            DataToken::ItemEnd => match stack.pop() {
                Some(Open::Set(item)) => match stack.last_mut() {
                    Some(Open::Sequence {
                        per_frame: true, ..
                    }) => {
                        let list = frames.get_or_insert_with(Vec::new);
                        if list.len() as u64 >= max_frames {
                            return Err(SlideError::LimitExceeded {
                                what: "DICOM per-frame functional group items",
                                value: list.len() as u64 + 1,
                                limit: max_frames,
                            });
                        }
                        list.push(frame_position(&item, &mut optical_paths)?);
                        // The item itself is dropped: only what is kept counts.
                        elements = elements.saturating_sub(deep_count(&item));
                    }
                    Some(Open::Sequence { items, .. }) => items.push(item),
                    _ => {
                        return Err(invalid(format!(
                            "an item ends outside a sequence at byte {at}"
                        )));
                    }
                },
                Some(Open::Fragment) => {}
                _ => return Err(invalid(format!("an item end without an item at byte {at}"))),
            },
            DataToken::SequenceEnd => match stack.pop() {
                Some(Open::Sequence { tag, items, .. }) => {
                    let Some(Open::Set(set)) = stack.last_mut() else {
                        return Err(invalid(format!("a sequence outside any item at byte {at}")));
                    };
                    set.elements.insert(tag, Element::Sequence(items));
                    elements += 1;
                }
                Some(Open::Pixels) => {}
                _ => {
                    return Err(invalid(format!(
                        "a sequence end without a sequence at byte {at}"
                    )));
                }
            },
            DataToken::PixelSequenceStart => {
                if top_level(stack.as_slice()) {
                    return finish(
                        stack,
                        Some(PixelData::Encapsulated { items_start: at }),
                        frames,
                        optical_paths,
                    );
                }
                stack.push(Open::Pixels);
            }
            DataToken::OffsetTable(_) | DataToken::ItemValue(_) => {
                if !matches!(stack.last(), Some(Open::Fragment)) {
                    return Err(invalid(format!(
                        "a pixel fragment outside pixel data at byte {at}"
                    )));
                }
            }
        }
        if elements > MAX_ELEMENTS {
            return Err(SlideError::LimitExceeded {
                what: "DICOM element count",
                value: elements as u64,
                limit: MAX_ELEMENTS as u64,
            });
        }
    }
    if stack.len() != 1 {
        return Err(SlideError::Truncated(format!(
            "the DICOM data set ends inside a sequence (byte {})",
            here()
        )));
    }
    finish(stack, None, frames, optical_paths)
}

fn finish(
    mut stack: Vec<Open>,
    pixel: Option<PixelData>,
    frames: Option<Vec<FramePosition>>,
    optical_paths: Vec<String>,
) -> Result<Parsed> {
    stack.truncate(1);
    let Some(Open::Set(data)) = stack.pop() else {
        return Err(invalid("the DICOM data set has no root"));
    };
    Ok(Parsed {
        data,
        pixel,
        frames,
        optical_paths,
    })
}

/// Elements in `set`, counting those inside its sequences.
fn deep_count(set: &DataSet) -> usize {
    set.elements
        .values()
        .map(|element| match element {
            Element::Value(..) => 1,
            Element::Sequence(items) => 1 + items.iter().map(deep_count).sum::<usize>(),
        })
        .sum()
}

/// Most distinct optical paths the per-frame items may name (real slides have one to a dozen).
const MAX_OPTICAL_PATHS: usize = 256;

/// Reduces one Per-Frame Functional Groups item to the frame's position and optical path.
fn frame_position(item: &DataSet, optical_paths: &mut Vec<String>) -> Result<FramePosition> {
    let position = item
        .item(tags::PLANE_POSITION_SLIDE_SEQUENCE, 0)
        .and_then(|plane| {
            Some((
                plane.int(tags::COLUMN_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX)?,
                plane.int(tags::ROW_POSITION_IN_TOTAL_IMAGE_PIXEL_MATRIX)?,
            ))
        });
    let optical_path = match item
        .item(tags::OPTICAL_PATH_IDENTIFICATION_SEQUENCE, 0)
        .and_then(|path| path.string(tags::OPTICAL_PATH_IDENTIFIER))
    {
        None => None,
        Some(id) => match optical_paths.iter().position(|known| *known == id) {
            Some(index) => Some(index as u32),
            None if optical_paths.len() >= MAX_OPTICAL_PATHS => {
                return Err(SlideError::LimitExceeded {
                    what: "DICOM optical path count",
                    value: optical_paths.len() as u64 + 1,
                    limit: MAX_OPTICAL_PATHS as u64,
                });
            }
            None => {
                optical_paths.push(id);
                Some((optical_paths.len() - 1) as u32)
            }
        },
    };
    Ok(FramePosition {
        position,
        optical_path,
    })
}
