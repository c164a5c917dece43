//! A streaming TIFF / BigTIFF writer: chunk data is appended as it is produced, directories are
//! written at the end, and the file appears under its final name only once complete.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, SlideError};

/// A tag value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SHORT values.
    Short(Vec<u16>),
    /// LONG values.
    Long(Vec<u32>),
    /// LONG8 values (BigTIFF only).
    Long8(Vec<u64>),
    /// A NUL-terminated ASCII string.
    Ascii(String),
    /// Opaque bytes (JPEGTables).
    Undefined(Vec<u8>),
    /// RATIONAL values as (numerator, denominator).
    Rational(Vec<(u32, u32)>),
}

impl Value {
    fn type_and_bytes(&self) -> (u16, u64, Vec<u8>) {
        match self {
            Value::Short(v) => (
                3,
                v.len() as u64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Value::Long(v) => (
                4,
                v.len() as u64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Value::Long8(v) => (
                16,
                v.len() as u64,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Value::Ascii(s) => {
                let mut b = s.as_bytes().to_vec();
                b.push(0);
                (2, b.len() as u64, b)
            }
            Value::Undefined(b) => (7, b.len() as u64, b.clone()),
            Value::Rational(v) => (
                5,
                v.len() as u64,
                v.iter()
                    .flat_map(|(n, d)| [n.to_le_bytes(), d.to_le_bytes()])
                    .flatten()
                    .collect(),
            ),
        }
    }
}

/// The tags of one image directory.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    entries: Vec<(u16, Value)>,
}

impl Directory {
    /// Sets `tag` to `value`, replacing an earlier value.
    pub fn set(&mut self, tag: u16, value: Value) -> &mut Self {
        self.entries.retain(|(t, _)| *t != tag);
        self.entries.push((tag, value));
        self
    }
}

/// Writes a little-endian TIFF (or BigTIFF) file.
pub struct TiffWriter {
    out: BufWriter<File>,
    partial: PathBuf,
    path: PathBuf,
    position: u64,
    big_tiff: bool,
    finished: bool,
}

impl TiffWriter {
    /// Starts writing `path` (through a temporary file beside it).
    pub fn create(path: &Path, big_tiff: bool) -> Result<Self> {
        let name = path
            .file_name()
            .map_or_else(|| "slide".into(), |n| n.to_string_lossy().into_owned());
        let partial = path.with_file_name(format!(".{name}.partial"));
        let file = File::create(&partial).map_err(|source| SlideError::Write {
            path: partial.clone(),
            source,
        })?;
        let mut writer = Self {
            out: BufWriter::with_capacity(1 << 20, file),
            partial,
            path: path.to_path_buf(),
            position: 0,
            big_tiff,
            finished: false,
        };
        // The header's first-directory offset is patched in `finish`.
        let header: &[u8] = if big_tiff {
            &[b'I', b'I', 43, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        } else {
            &[b'I', b'I', 42, 0, 0, 0, 0, 0]
        };
        writer.write(header)?;
        Ok(writer)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|source| SlideError::Write {
                path: self.partial.clone(),
                source,
            })?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    fn align(&mut self) -> Result<()> {
        if self.position % 2 == 1 {
            self.write(&[0])?;
        }
        Ok(())
    }

    /// Appends one tile or strip and returns its (offset, length).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(u64, u64)> {
        self.align()?;
        let offset = self.position;
        if !self.big_tiff && offset + bytes.len() as u64 > u64::from(u32::MAX) {
            return Err(SlideError::Encode("over 4 GiB: write a BigTIFF".into()));
        }
        self.write(bytes)?;
        Ok((offset, bytes.len() as u64))
    }

    /// Offsets or byte counts as the widest type the variant allows.
    pub fn offsets_value(&self, values: &[u64]) -> Value {
        if self.big_tiff {
            Value::Long8(values.to_vec())
        } else {
            Value::Long(values.iter().map(|&v| v as u32).collect())
        }
    }

    /// Appends a directory that no other directory links to. Real files carry such orphans
    /// (left by editors and scanners); the test generator writes them to prove nothing
    /// unreferenced survives de-identification. Returns its offset.
    pub fn append_unlinked_directory(&mut self, dir: &Directory) -> Result<u64> {
        self.align()?;
        let offset = self.position;
        let (table, extra) = self.encode_directory(dir, false)?;
        self.write(&table)?;
        self.write(&extra)?;
        Ok(offset)
    }

    /// Serialises `dir` for the current position: the entry table (ending in the offset of
    /// the directory that follows it, if `linked`) and the out-of-line values after it.
    fn encode_directory(&self, dir: &Directory, linked: bool) -> Result<(Vec<u8>, Vec<u8>)> {
        let (count_size, entry_size, word) = if self.big_tiff {
            (8u64, 20u64, 8u64)
        } else {
            (2, 12, 4)
        };
        let mut entries: Vec<&(u16, Value)> = dir.entries.iter().collect();
        entries.sort_by_key(|(tag, _)| *tag);
        let table_len = count_size + entries.len() as u64 * entry_size + word;
        let mut extra_at = self.position + table_len;
        let mut table = Vec::with_capacity(table_len as usize);
        let mut extra = Vec::new();
        if self.big_tiff {
            table.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        } else {
            table.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        }
        for (tag, value) in entries {
            let (field_type, count, mut bytes) = value.type_and_bytes();
            table.extend_from_slice(&tag.to_le_bytes());
            table.extend_from_slice(&field_type.to_le_bytes());
            if self.big_tiff {
                table.extend_from_slice(&count.to_le_bytes());
            } else {
                table.extend_from_slice(&(count as u32).to_le_bytes());
            }
            if bytes.len() as u64 <= word {
                bytes.resize(word as usize, 0);
                table.extend_from_slice(&bytes);
            } else {
                if self.big_tiff {
                    table.extend_from_slice(&extra_at.to_le_bytes());
                } else {
                    table.extend_from_slice(&(extra_at as u32).to_le_bytes());
                }
                if bytes.len() % 2 == 1 {
                    bytes.push(0);
                }
                extra_at += bytes.len() as u64;
                extra.extend_from_slice(&bytes);
            }
        }
        let next = if linked { extra_at } else { 0 };
        if self.big_tiff {
            table.extend_from_slice(&next.to_le_bytes());
        } else {
            if next > u64::from(u32::MAX) {
                return Err(SlideError::Encode("over 4 GiB: write a BigTIFF".into()));
            }
            table.extend_from_slice(&(next as u32).to_le_bytes());
        }
        Ok((table, extra))
    }

    /// Writes the directories in order, links them, and moves the file into place.
    pub fn finish(mut self, directories: &[Directory]) -> Result<()> {
        self.align()?;
        let first = self.position;
        for (i, dir) in directories.iter().enumerate() {
            let last = i + 1 == directories.len();
            let (table, extra) = self.encode_directory(dir, !last)?;
            self.write(&table)?;
            self.write(&extra)?;
        }
        let io = |source| SlideError::Write {
            path: self.partial.clone(),
            source,
        };
        self.out.flush().map_err(io)?;
        let file = self.out.get_mut();
        if self.big_tiff {
            file.seek(SeekFrom::Start(8)).map_err(io)?;
            file.write_all(&first.to_le_bytes()).map_err(io)?;
        } else {
            file.seek(SeekFrom::Start(4)).map_err(io)?;
            file.write_all(&(first as u32).to_le_bytes()).map_err(io)?;
        }
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.partial, &self.path).map_err(|source| SlideError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for TiffWriter {
    fn drop(&mut self) {
        // An unfinished file is useless and must not be mistaken for a slide.
        if !self.finished {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
