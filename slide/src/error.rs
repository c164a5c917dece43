//! Typed errors of slide access. Every malformed or hostile input maps to one of these.

use std::path::PathBuf;

/// Everything that can go wrong opening, reading or writing a slide.
#[derive(Debug, thiserror::Error)]
pub enum SlideError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a slide format pathfed knows.
    #[error("not a slide: {0}")]
    NotASlide(String),
    /// The file ends before a structure it declares.
    #[error("truncated file: {0}")]
    Truncated(String),
    /// A declared size is beyond the configured limits.
    #[error("{what} is {value}, over the limit of {limit}")]
    LimitExceeded {
        /// What was measured.
        what: &'static str,
        /// The declared value.
        value: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The chain of TIFF directories points back to one already read.
    #[error("TIFF directory loop: directory at offset {0} is referenced twice")]
    IfdLoop(u64),
    /// A structure points past the end of the file.
    #[error(
        "{what} at offset {offset} (+{len} bytes) lies past the end of the file ({file_len} bytes)"
    )]
    OffsetPastEnd {
        /// What was pointed to.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// How long it claims to be.
        len: u64,
        /// The file's length.
        file_len: u64,
    },
    /// A tile or strip has no bytes.
    #[error("image {image} tile/strip {index} has zero length")]
    ZeroLengthTile {
        /// The TIFF directory index.
        image: usize,
        /// The tile or strip index.
        index: usize,
    },
    /// The file uses a feature pathfed does not read.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The TIFF structure is inconsistent.
    #[error("invalid TIFF: {0}")]
    InvalidTiff(String),
    /// The DICOM structure is inconsistent.
    #[error("invalid DICOM: {0}")]
    InvalidDicom(String),
    /// A tile's compressed data could not be decoded.
    #[error("cannot decode image {image} tile/strip {index}: {message}")]
    Decode {
        /// The TIFF directory index.
        image: usize,
        /// The tile or strip index.
        index: usize,
        /// The decoder's message.
        message: String,
    },
    /// A JPEG 2000 codestream is malformed, truncated or not what its container declares.
    #[error("cannot decode JPEG 2000: {0}")]
    Jpeg2000(String),
    /// A level, tile or region outside the slide was requested.
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The slide has no associated image of that name.
    #[error("no associated image named {0:?}")]
    NoSuchAssociatedImage(String),
    /// The format needs the OpenSlide backend, which this build does not include.
    #[error("{0} slides need the OpenSlide backend, which this build was compiled without")]
    NeedsOpenSlide(String),
    /// OpenSlide reported an error.
    #[error("OpenSlide: {0}")]
    OpenSlide(String),
    /// Encoding an output image failed.
    #[error("cannot encode image: {0}")]
    Encode(String),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = SlideError> = std::result::Result<T, E>;
