//! Finding the instances of one DICOM whole-slide series and reading what each one is.
//!
//! A slide arrives either as a folder (an unpacked zip, dropped files, a STOW-RS upload): every
//! DICOM file under it, to a small depth, belongs to the slide, and the folder must hold exactly
//! one series with VOLUME images; or as one file, whose siblings in the same folder with the
//! same Series Instance UID complete it (the way OpenSlide opens a DICOM slide). Files are
//! recognised by the "DICM" magic at byte 128, never by name; instances of other SOP classes
//! (a DICOMDIR, annotations, structured reports) are ignored.
//!
//! Each instance is checked when it is read: the transfer syntax (anything this reader cannot
//! decode is refused, named by UID and name), 8-bit three-sample pixels, a photometric
//! interpretation that fits the codec, and the geometry against [`SlideLimits`].

use std::fs::File;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use pathfed_core::SlideLimits;

use super::dataset::{self, DataSet, FramePosition, PixelData};
use super::frames::{self, Codec, FrameRange};
use crate::error::{Result, SlideError};
use crate::j2k::J2kColour;

/// The SOP class of a VL Whole Slide Microscopy Image.
pub const WSI_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
/// How deep below a slide folder instances are looked for (zips often nest a few folders).
const MAX_FOLDER_DEPTH: usize = 4;

/// What an instance holds, from the third value of its Image Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A pyramid level.
    Volume,
    /// The slide label.
    Label,
    /// The overview (macro) image of the whole glass.
    Overview,
    /// A small rendering of the whole slide.
    Thumbnail,
}

impl Kind {
    /// The associated image name, as the TIFF and OpenSlide readers name it.
    pub fn associated_name(self) -> Option<&'static str> {
        match self {
            Kind::Volume => None,
            Kind::Label => Some("label"),
            Kind::Overview => Some("macro"),
            Kind::Thumbnail => Some("thumbnail"),
        }
    }
}

/// How frames map to tiles.
#[derive(Debug, Clone)]
pub enum Layout {
    /// TILED_FULL: frames fill the grid in row-major order.
    Full,
    /// TILED_SPARSE: each frame's position, from the per-frame functional groups.
    Sparse {
        /// One entry per frame.
        positions: Vec<FramePosition>,
        /// Optical path identifiers the positions refer to.
        optical_paths: Vec<String>,
    },
}

/// The transfer syntaxes this reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Syntax {
    JpegBaseline,
    Jpeg2000,
    ExplicitLittle,
}

/// One DICOM file of the slide, its attributes read and checked.
#[derive(Debug)]
pub struct Instance {
    /// The file.
    pub path: PathBuf,
    /// The open file, read by offset.
    pub file: File,
    /// Its length in bytes.
    pub file_len: u64,
    /// The file meta group.
    pub meta: DataSet,
    /// The data set before the pixel data.
    pub data: DataSet,
    /// What the instance holds.
    pub kind: Kind,
    /// Series Instance UID.
    pub series: String,
    /// SOP Instance UID.
    pub sop: String,
    /// The SOP Instance UID of the whole image: the concatenation source's, else its own.
    pub source: String,
    /// Concatenation Frame Offset Number (0 outside concatenations).
    pub frame_offset: u64,
    /// In-concatenation Total Number, where given.
    pub concatenation_total: Option<u64>,
    /// Instance Number, for a stable order.
    pub instance_number: Option<i64>,
    /// Total Pixel Matrix Columns.
    pub width: u64,
    /// Total Pixel Matrix Rows.
    pub height: u64,
    /// Columns of one frame.
    pub tile_w: u32,
    /// Rows of one frame.
    pub tile_h: u32,
    /// Number of Frames.
    pub frames: u64,
    /// How frames decode.
    pub codec: Codec,
    /// How frames map to tiles.
    pub layout: Layout,
    /// Identifier of the first item of the Optical Path Sequence.
    pub optical_path: Option<String>,
    pixel: PixelData,
    /// Every frame's bytes, once [`Instance::locate_frames`] has run.
    pub ranges: Vec<FrameRange>,
}

/// The DICOM files a slide path points at, and the file a single-file open started from.
pub struct Candidates {
    /// Every DICOM file found, sorted by path.
    pub files: Vec<PathBuf>,
    /// The file given, when the slide was opened from one file rather than a folder.
    pub start: Option<PathBuf>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SlideError + '_ {
    move |source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` is a file with the DICOM magic at byte 128.
pub fn is_dicom_file(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 132];
    let mut file = File::open(path).map_err(io(path))?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]).map_err(io(path))? {
            0 => return Ok(false),
            n => filled += n,
        }
    }
    Ok(dataset::is_dicom_magic(&head))
}

/// The DICOM files of the slide at `path`: a folder (searched a few levels deep) or one file
/// and its siblings.
pub fn candidates(path: &Path, limits: &SlideLimits) -> Result<Candidates> {
    let metadata = std::fs::metadata(path).map_err(io(path))?;
    let (root, depth, start) = if metadata.is_dir() {
        (path.to_path_buf(), MAX_FOLDER_DEPTH, None)
    } else {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Spelled as the folder listing spells its entries, so the file is recognised there.
        let start = match path.file_name() {
            Some(name) => parent.join(name),
            None => path.to_path_buf(),
        };
        (parent.to_path_buf(), 0, Some(start))
    };
    let mut files = Vec::new();
    // Listing is bounded too: a folder of a million stray files is refused, not walked.
    let mut visited = 0u64;
    let max_visited = (limits.max_ifds as u64).saturating_mul(16).max(4096);
    let mut folders = vec![(root, 0usize)];
    while let Some((folder, level)) = folders.pop() {
        let entries = std::fs::read_dir(&folder).map_err(io(&folder))?;
        for entry in entries {
            let entry = entry.map_err(io(&folder))?;
            visited += 1;
            if visited > max_visited {
                return Err(SlideError::LimitExceeded {
                    what: "files in a DICOM slide folder",
                    value: visited,
                    limit: max_visited,
                });
            }
            // Links are not followed: an upload cannot point the reader elsewhere.
            let kind = entry.file_type().map_err(io(&entry.path()))?;
            let entry_path = entry.path();
            if kind.is_dir() && level < depth {
                folders.push((entry_path, level + 1));
            } else if kind.is_file() && is_dicom_file(&entry_path)? {
                files.push(entry_path);
                if files.len() > limits.max_ifds {
                    return Err(SlideError::LimitExceeded {
                        what: "DICOM instance count",
                        value: files.len() as u64,
                        limit: limits.max_ifds as u64,
                    });
                }
            }
        }
    }
    files.sort();
    if let Some(start) = &start
        && !files.contains(start)
    {
        // The file itself may have been named through a link or a relative path.
        files.push(start.clone());
    }
    Ok(Candidates { files, start })
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Refuses a transfer syntax this reader does not decode, naming it; `file` names the file.
pub fn check_syntax(uid: &str, file: &str) -> Result<()> {
    syntax(uid, file).map(|_| ())
}

fn syntax(uid: &str, file: &str) -> Result<Syntax> {
    Ok(match uid {
        "1.2.840.10008.1.2.4.50" => Syntax::JpegBaseline,
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => Syntax::Jpeg2000,
        dataset::EXPLICIT_VR_LITTLE_ENDIAN => Syntax::ExplicitLittle,
        other => {
            let name = TransferSyntaxRegistry
                .get(other)
                .map_or("an unknown transfer syntax", |ts| ts.name());
            return Err(SlideError::Unsupported(format!(
                "DICOM transfer syntax {other} ({name}) in {file}; pathfed reads JPEG baseline \
                 (1.2.840.10008.1.2.4.50), JPEG 2000 (1.2.840.10008.1.2.4.90 and .91) and \
                 explicit VR little endian uncompressed (1.2.840.10008.1.2.1)"
            )));
        }
    })
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

/// Requires an integer attribute to have one value, when present (or always, if `required`).
fn expect(
    data: &DataSet,
    tag: dicom_core::Tag,
    name: &str,
    want: u64,
    required: bool,
    file: &str,
) -> Result<()> {
    match data.uint(tag) {
        Some(value) if value == want => Ok(()),
        None if !required => Ok(()),
        Some(value) => Err(SlideError::Unsupported(format!(
            "{name} {value} in {file} (only {want} is read)"
        ))),
        None => Err(SlideError::InvalidDicom(format!("{file} has no {name}"))),
    }
}

/// The Series Instance UID of a DICOM file whatever its transfer syntax, where its data set can
/// be read at all; used to tell whether a file that failed to open belongs to the slide.
pub fn series_of(path: &Path, limits: &SlideLimits) -> Option<String> {
    let file = File::open(path).ok()?;
    let file_len = file.metadata().ok()?.len();
    let meta = dataset::read_meta(&file, file_len, path).ok()?;
    let body = dataset::read_body(path, meta.dataset_start, file_len, limits).ok()?;
    body.data.string(tags::SERIES_INSTANCE_UID)
}

impl Instance {
    /// Reads the instance at `path`: `Ok(None)` for DICOM files that are not whole-slide
    /// images (another SOP class, or an image type that is not a level or associated image).
    pub fn open(path: &Path, limits: &SlideLimits) -> Result<Option<Self>> {
        let file = File::open(path).map_err(io(path))?;
        let file_len = file.metadata().map_err(io(path))?.len();
        let meta = dataset::read_meta(&file, file_len, path)?;
        let name = file_name(path);
        if meta.sop_class().as_deref() != Some(WSI_SOP_CLASS) {
            return Ok(None);
        }
        let uid = meta.transfer_syntax().ok_or_else(|| {
            SlideError::InvalidDicom(format!("{name} has no Transfer Syntax UID"))
        })?;
        let syntax = syntax(&uid, &name)?;
        let body = dataset::read_body(path, meta.dataset_start, file_len, limits)?;
        let data = body.data;

        let kind = match data.string_at(tags::IMAGE_TYPE, 2).as_deref() {
            Some("VOLUME") => Kind::Volume,
            Some("LABEL") => Kind::Label,
            Some("OVERVIEW") => Kind::Overview,
            Some("THUMBNAIL") => Kind::Thumbnail,
            _ => return Ok(None),
        };
        let series = data.string(tags::SERIES_INSTANCE_UID).ok_or_else(|| {
            SlideError::InvalidDicom(format!("{name} has no Series Instance UID"))
        })?;
        let sop = data
            .string(tags::SOP_INSTANCE_UID)
            .ok_or_else(|| SlideError::InvalidDicom(format!("{name} has no SOP Instance UID")))?;
        let source = data
            .string(tags::SOP_INSTANCE_UID_OF_CONCATENATION_SOURCE)
            .unwrap_or_else(|| sop.clone());

        // Brightfield RGB, 8 bits, interleaved: what every decoder here produces.
        expect(
            &data,
            tags::SAMPLES_PER_PIXEL,
            "Samples per Pixel",
            3,
            true,
            &name,
        )?;
        expect(
            &data,
            tags::BITS_ALLOCATED,
            "Bits Allocated",
            8,
            true,
            &name,
        )?;
        expect(&data, tags::BITS_STORED, "Bits Stored", 8, false, &name)?;
        expect(
            &data,
            tags::PIXEL_REPRESENTATION,
            "Pixel Representation",
            0,
            false,
            &name,
        )?;
        expect(
            &data,
            tags::PLANAR_CONFIGURATION,
            "Planar Configuration",
            0,
            false,
            &name,
        )?;
        let photometric = data
            .string(tags::PHOTOMETRIC_INTERPRETATION)
            .unwrap_or_default();
        let codec = match (syntax, photometric.as_str()) {
            (Syntax::JpegBaseline, "RGB") => Codec::Jpeg { rgb: true },
            (Syntax::JpegBaseline, "YBR_FULL_422" | "YBR_FULL") => Codec::Jpeg { rgb: false },
            (Syntax::Jpeg2000, "RGB") => Codec::Jpeg2000(J2kColour::Rgb),
            // The codestream's own component transform (ICT or RCT) turns these back into RGB.
            (Syntax::Jpeg2000, "YBR_ICT" | "YBR_RCT") => Codec::Jpeg2000(J2kColour::Rgb),
            (Syntax::Jpeg2000, "YBR_FULL") => Codec::Jpeg2000(J2kColour::YCbCr),
            (Syntax::ExplicitLittle, "RGB") => Codec::Native,
            (_, other) => {
                return Err(SlideError::Unsupported(format!(
                    "photometric interpretation {other:?} with transfer syntax {uid} in {name}"
                )));
            }
        };
        let encapsulated = matches!(body.pixel, PixelData::Encapsulated { .. });
        if encapsulated == (syntax == Syntax::ExplicitLittle) {
            return Err(SlideError::InvalidDicom(format!(
                "{name}: the pixel data encoding does not match transfer syntax {uid}"
            )));
        }

        let tile_w = data.uint(tags::COLUMNS).unwrap_or(0);
        let tile_h = data.uint(tags::ROWS).unwrap_or(0);
        if tile_w == 0 || tile_h == 0 {
            return Err(SlideError::InvalidDicom(format!(
                "{name} has frames of {tile_w}×{tile_h} pixels"
            )));
        }
        limit("tile width", tile_w, u64::from(limits.max_tile_dimension))?;
        limit("tile height", tile_h, u64::from(limits.max_tile_dimension))?;
        // Associated images of older writers give only the frame size.
        let width = data
            .uint(tags::TOTAL_PIXEL_MATRIX_COLUMNS)
            .unwrap_or(tile_w);
        let height = data.uint(tags::TOTAL_PIXEL_MATRIX_ROWS).unwrap_or(tile_h);
        if width == 0 || height == 0 {
            return Err(SlideError::InvalidDicom(format!(
                "{name} is {width}×{height} pixels"
            )));
        }
        limit("image width", width, limits.max_dimension)?;
        limit("image height", height, limits.max_dimension)?;
        limit(
            "image pixel count",
            width.saturating_mul(height),
            limits.max_pixels,
        )?;
        limit(
            "tile count",
            width
                .div_ceil(tile_w)
                .saturating_mul(height.div_ceil(tile_h)),
            limits.max_tiles,
        )?;
        let frames = data.uint(tags::NUMBER_OF_FRAMES).unwrap_or(1);
        if frames == 0 {
            return Err(SlideError::InvalidDicom(format!("{name} has no frames")));
        }
        limit(
            "DICOM frame count",
            frames,
            limits.max_tiles.min(u64::from(u32::MAX) - 1),
        )?;

        let layout = match (
            data.string(tags::DIMENSION_ORGANIZATION_TYPE).as_deref(),
            body.frames,
        ) {
            (Some("TILED_FULL"), _) => Layout::Full,
            (_, Some(positions)) => {
                if positions.len() as u64 != frames {
                    return Err(SlideError::InvalidDicom(format!(
                        "{name} has {} per-frame functional group items for {frames} frames",
                        positions.len()
                    )));
                }
                Layout::Sparse {
                    positions,
                    optical_paths: body.optical_paths,
                }
            }
            // One frame covering the whole matrix needs no positions.
            (_, None) if frames == 1 && width <= tile_w && height <= tile_h => Layout::Full,
            (organization, None) => {
                return Err(SlideError::InvalidDicom(format!(
                    "{name}: dimension organization {} without per-frame positions",
                    organization.unwrap_or("(none)")
                )));
            }
        };

        Ok(Some(Self {
            path: path.to_path_buf(),
            file,
            file_len,
            kind,
            series,
            sop,
            source,
            frame_offset: data
                .uint(tags::CONCATENATION_FRAME_OFFSET_NUMBER)
                .unwrap_or(0),
            concatenation_total: data.uint(tags::IN_CONCATENATION_TOTAL_NUMBER),
            instance_number: data.int(tags::INSTANCE_NUMBER),
            width,
            height,
            tile_w: tile_w as u32,
            tile_h: tile_h as u32,
            frames,
            codec,
            layout,
            optical_path: data
                .item(tags::OPTICAL_PATH_SEQUENCE, 0)
                .and_then(|path| path.string(tags::OPTICAL_PATH_IDENTIFIER)),
            pixel: body.pixel,
            ranges: Vec::new(),
            meta: meta.meta,
            data,
        }))
    }

    /// A short name for messages: the file name.
    pub fn name(&self) -> String {
        file_name(&self.path)
    }

    /// Finds every frame's bytes (reading only item headers), checked against the file.
    pub fn locate_frames(&mut self, image: usize, limits: &SlideLimits) -> Result<()> {
        self.ranges = match self.pixel {
            PixelData::Native { offset, len } => frames::locate_native(
                offset,
                len,
                self.frames,
                u64::from(self.tile_w) * u64::from(self.tile_h) * 3,
                self.file_len,
                limits,
            )?,
            PixelData::Encapsulated { items_start } => {
                let marker: &[u8] = match self.codec {
                    Codec::Jpeg2000(_) => &[0xFF, 0x4F],
                    _ => &[0xFF, 0xD8],
                };
                let extended = match self.data.elements.get(&tags::EXTENDED_OFFSET_TABLE) {
                    None => None,
                    Some(_) => {
                        Some(self.data.u64s(tags::EXTENDED_OFFSET_TABLE).ok_or_else(|| {
                            SlideError::InvalidDicom(format!(
                                "{}: an Extended Offset Table that is not 64-bit offsets",
                                self.name()
                            ))
                        })?)
                    }
                };
                frames::Encapsulated {
                    file: &self.file,
                    path: &self.path,
                    file_len: self.file_len,
                    items_start,
                    frames: self.frames,
                    extended,
                    marker,
                    image,
                }
                .locate(limits)?
            }
        };
        Ok(())
    }
}
