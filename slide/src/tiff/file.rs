//! Low-level TIFF / BigTIFF structure: header, image file directories (IFDs) and tag values,
//! read with positional I/O so one open file serves many threads.
//!
//! Every offset and size is checked against the file length and the configured limits before
//! anything is allocated, because the bytes come from untrusted uploads.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pathfed_core::SlideLimits;

use crate::error::{Result, SlideError};

/// Tag numbers the readers and writer use.
pub mod tag {
    #![allow(missing_docs)]
    pub const NEW_SUBFILE_TYPE: u16 = 254;
    pub const IMAGE_WIDTH: u16 = 256;
    pub const IMAGE_LENGTH: u16 = 257;
    pub const BITS_PER_SAMPLE: u16 = 258;
    pub const COMPRESSION: u16 = 259;
    pub const PHOTOMETRIC: u16 = 262;
    pub const IMAGE_DESCRIPTION: u16 = 270;
    pub const MAKE: u16 = 271;
    pub const MODEL: u16 = 272;
    pub const STRIP_OFFSETS: u16 = 273;
    pub const SAMPLES_PER_PIXEL: u16 = 277;
    pub const ROWS_PER_STRIP: u16 = 278;
    pub const STRIP_BYTE_COUNTS: u16 = 279;
    pub const X_RESOLUTION: u16 = 282;
    pub const Y_RESOLUTION: u16 = 283;
    pub const PLANAR_CONFIGURATION: u16 = 284;
    pub const RESOLUTION_UNIT: u16 = 296;
    pub const SOFTWARE: u16 = 305;
    pub const DATE_TIME: u16 = 306;
    pub const ARTIST: u16 = 315;
    pub const HOST_COMPUTER: u16 = 316;
    pub const PREDICTOR: u16 = 317;
    pub const TILE_WIDTH: u16 = 322;
    pub const TILE_LENGTH: u16 = 323;
    pub const TILE_OFFSETS: u16 = 324;
    pub const TILE_BYTE_COUNTS: u16 = 325;
    pub const EXTRA_SAMPLES: u16 = 338;
    pub const SAMPLE_FORMAT: u16 = 339;
    pub const JPEG_TABLES: u16 = 347;
    pub const YCBCR_SUBSAMPLING: u16 = 530;
    pub const XMP: u16 = 700;
    pub const COPYRIGHT: u16 = 33432;
    pub const NDPI_FORMAT_FLAG: u16 = 65420;
}

/// TIFF field types (TIFF 6.0 + BigTIFF).
mod field_type {
    pub const BYTE: u16 = 1;
    pub const ASCII: u16 = 2;
    pub const SHORT: u16 = 3;
    pub const LONG: u16 = 4;
    pub const RATIONAL: u16 = 5;
    pub const UNDEFINED: u16 = 7;
    pub const LONG8: u16 = 16;
    pub const IFD8: u16 = 18;
    pub const IFD: u16 = 13;
}

/// Size in bytes of one value of a field type, or `None` for types pathfed never needs.
fn type_size(field_type: u16) -> Option<u64> {
    Some(match field_type {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 | 17 | 18 => 8,
        _ => return None,
    })
}

/// One tag of a directory: its type, count and where its value lives.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The field type.
    pub field_type: u16,
    /// Number of values.
    pub count: u64,
    /// Value bytes stored inline in the entry, or `None` when they live at `offset`.
    inline: Option<Vec<u8>>,
    /// Where the value bytes live when they do not fit inline.
    offset: u64,
}

/// One image file directory: its position and its tags.
#[derive(Debug, Clone)]
pub struct Ifd {
    /// Index in the chain, from 0.
    pub index: usize,
    /// Tags present in this directory.
    pub entries: BTreeMap<u16, Entry>,
}

/// An opened TIFF file: byte order, variant and the directory chain.
#[derive(Debug)]
pub struct TiffFile {
    file: File,
    path: PathBuf,
    len: u64,
    little_endian: bool,
    big_tiff: bool,
    ifds: Vec<Ifd>,
    limits: SlideLimits,
}

/// True if the first bytes are a TIFF or BigTIFF header in either byte order.
pub fn is_tiff_magic(head: &[u8]) -> bool {
    matches!(
        head.get(..4),
        Some([b'I', b'I', 42, 0] | [b'M', b'M', 0, 42] | [b'I', b'I', 43, 0] | [b'M', b'M', 0, 43])
    )
}

impl TiffFile {
    /// Opens `path` and reads its whole directory chain, within `limits`.
    pub fn open(path: &Path, limits: &SlideLimits) -> Result<Self> {
        let io = |source| SlideError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut tiff = Self {
            file,
            path: path.to_path_buf(),
            len,
            little_endian: true,
            big_tiff: false,
            ifds: Vec::new(),
            limits: limits.clone(),
        };
        let head = tiff.read_exact_at(0, 16.min(len), "TIFF header")?;
        if !is_tiff_magic(&head) {
            return Err(SlideError::NotASlide("no TIFF header".into()));
        }
        tiff.little_endian = head[0] == b'I';
        tiff.big_tiff = tiff.u16_at(&head, 2) == 43;
        let first_ifd = if tiff.big_tiff {
            if head.len() < 16 {
                return Err(SlideError::Truncated("BigTIFF header".into()));
            }
            if tiff.u16_at(&head, 4) != 8 {
                return Err(SlideError::InvalidTiff(
                    "BigTIFF offset size is not 8".into(),
                ));
            }
            tiff.u64_at(&head, 8)
        } else {
            if head.len() < 8 {
                return Err(SlideError::Truncated("TIFF header".into()));
            }
            u64::from(tiff.u32_at(&head, 4))
        };
        tiff.read_chain(first_ifd)?;
        Ok(tiff)
    }

    /// The directories in file order.
    pub fn ifds(&self) -> &[Ifd] {
        &self.ifds
    }

    /// Whether the file is a BigTIFF.
    pub fn is_big_tiff(&self) -> bool {
        self.big_tiff
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never true for an opened TIFF).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The limits the file is read under.
    pub fn limits(&self) -> &SlideLimits {
        &self.limits
    }

    fn read_chain(&mut self, first: u64) -> Result<()> {
        let mut seen = HashSet::new();
        let mut next = first;
        while next != 0 {
            if !seen.insert(next) {
                return Err(SlideError::IfdLoop(next));
            }
            if self.ifds.len() >= self.limits.max_ifds {
                return Err(SlideError::LimitExceeded {
                    what: "number of TIFF directories",
                    value: self.ifds.len() as u64 + 1,
                    limit: self.limits.max_ifds as u64,
                });
            }
            let (ifd, following) = self.read_ifd(next, self.ifds.len())?;
            self.ifds.push(ifd);
            next = following;
        }
        if self.ifds.is_empty() {
            return Err(SlideError::InvalidTiff("no image directory".into()));
        }
        Ok(())
    }

    fn read_ifd(&self, offset: u64, index: usize) -> Result<(Ifd, u64)> {
        let (count_size, entry_size, value_size) = if self.big_tiff {
            (8, 20, 8)
        } else {
            (2, 12, 4)
        };
        let head = self.read_exact_at(offset, count_size, "TIFF directory")?;
        let count = if self.big_tiff {
            self.u64_at(&head, 0)
        } else {
            u64::from(self.u16_at(&head, 0))
        };
        if count > self.limits.max_ifd_entries {
            return Err(SlideError::LimitExceeded {
                what: "entries in a TIFF directory",
                value: count,
                limit: self.limits.max_ifd_entries,
            });
        }
        let body_len = count * entry_size + value_size;
        let body = self.read_exact_at(offset + count_size, body_len, "TIFF directory")?;
        let mut entries = BTreeMap::new();
        for i in 0..count as usize {
            let e = &body[i * entry_size as usize..][..entry_size as usize];
            let tag = self.u16_at(e, 0);
            let field_type = self.u16_at(e, 2);
            let (count, value) = if self.big_tiff {
                (self.u64_at(e, 4), &e[12..20])
            } else {
                (u64::from(self.u32_at(e, 4)), &e[8..12])
            };
            // Unknown field types are skipped, as TIFF readers must.
            let Some(size) = type_size(field_type) else {
                continue;
            };
            let total = count.checked_mul(size).ok_or_else(|| {
                SlideError::InvalidTiff(format!("tag {tag} count {count} overflows"))
            })?;
            let entry = if total <= value_size {
                Entry {
                    field_type,
                    count,
                    inline: Some(value[..total as usize].to_vec()),
                    offset: 0,
                }
            } else {
                let offset = if self.big_tiff {
                    self.u64_at(value, 0)
                } else {
                    u64::from(self.u32_at(value, 0))
                };
                Entry {
                    field_type,
                    count,
                    inline: None,
                    offset,
                }
            };
            entries.insert(tag, entry);
        }
        let tail = &body[(count * entry_size) as usize..];
        let next = if self.big_tiff {
            self.u64_at(tail, 0)
        } else {
            u64::from(self.u32_at(tail, 0))
        };
        Ok((Ifd { index, entries }, next))
    }

    /// Reads exactly `len` bytes at `offset`, refusing anything past the end of the file.
    pub fn read_exact_at(&self, offset: u64, len: u64, what: &'static str) -> Result<Vec<u8>> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len);
        if end.is_none() {
            return Err(SlideError::OffsetPastEnd {
                what,
                offset,
                len,
                file_len: self.len,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|source| SlideError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }

    fn entry_bytes(&self, entry: &Entry) -> Result<Vec<u8>> {
        if let Some(bytes) = &entry.inline {
            return Ok(bytes.clone());
        }
        let size = type_size(entry.field_type).unwrap_or(1);
        let len = entry.count.saturating_mul(size);
        if len > self.limits.max_tag_bytes {
            return Err(SlideError::LimitExceeded {
                what: "size of a TIFF tag value",
                value: len,
                limit: self.limits.max_tag_bytes,
            });
        }
        self.read_exact_at(entry.offset, len, "TIFF tag value")
    }

    /// The unsigned integer values of `tag` (BYTE, SHORT, LONG, LONG8, IFD types), if present.
    pub fn uints(&self, ifd: &Ifd, tag: u16) -> Result<Option<Vec<u64>>> {
        let Some(entry) = ifd.entries.get(&tag) else {
            return Ok(None);
        };
        let bytes = self.entry_bytes(entry)?;
        let values = match entry.field_type {
            field_type::BYTE | field_type::UNDEFINED => {
                bytes.iter().map(|&b| u64::from(b)).collect()
            }
            field_type::SHORT => bytes
                .chunks_exact(2)
                .map(|c| u64::from(self.u16_at(c, 0)))
                .collect(),
            field_type::LONG | field_type::IFD => bytes
                .chunks_exact(4)
                .map(|c| u64::from(self.u32_at(c, 0)))
                .collect(),
            field_type::LONG8 | field_type::IFD8 => {
                bytes.chunks_exact(8).map(|c| self.u64_at(c, 0)).collect()
            }
            other => {
                return Err(SlideError::InvalidTiff(format!(
                    "tag {tag} has type {other}, expected an integer"
                )));
            }
        };
        Ok(Some(values))
    }

    /// The first integer value of `tag`, if present.
    pub fn uint(&self, ifd: &Ifd, tag: u16) -> Result<Option<u64>> {
        Ok(self.uints(ifd, tag)?.and_then(|v| v.first().copied()))
    }

    /// The ASCII value of `tag` with trailing NULs removed, if present (invalid UTF-8 is replaced).
    pub fn ascii(&self, ifd: &Ifd, tag: u16) -> Result<Option<String>> {
        let Some(entry) = ifd.entries.get(&tag) else {
            return Ok(None);
        };
        if entry.field_type != field_type::ASCII && entry.field_type != field_type::BYTE {
            return Ok(None);
        }
        let bytes = self.entry_bytes(entry)?;
        let text = String::from_utf8_lossy(&bytes);
        Ok(Some(text.trim_end_matches('\0').to_string()))
    }

    /// The raw bytes of `tag` (e.g. JPEGTables), if present.
    pub fn bytes(&self, ifd: &Ifd, tag: u16) -> Result<Option<Vec<u8>>> {
        ifd.entries
            .get(&tag)
            .map(|entry| self.entry_bytes(entry))
            .transpose()
    }

    /// The first RATIONAL value of `tag` as a float, if present and non-degenerate.
    pub fn rational(&self, ifd: &Ifd, tag: u16) -> Result<Option<f64>> {
        let Some(entry) = ifd.entries.get(&tag) else {
            return Ok(None);
        };
        if entry.field_type != field_type::RATIONAL {
            return Ok(None);
        }
        let bytes = self.entry_bytes(entry)?;
        if bytes.len() < 8 {
            return Ok(None);
        }
        let (num, den) = (self.u32_at(&bytes, 0), self.u32_at(&bytes, 4));
        Ok((den != 0).then(|| f64::from(num) / f64::from(den)))
    }

    fn u16_at(&self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.little_endian {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&b[at..at + 4]);
        if self.little_endian {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        }
    }

    fn u64_at(&self, b: &[u8], at: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        if self.little_endian {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        }
    }
}
