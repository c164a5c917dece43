//! DICOM VL Whole Slide Microscopy Image: a reader of our own, with the TIFF fast path's limits.
//!
//! A DICOM slide is a series of instances (files): one per pyramid level, or several where a
//! level is split into a concatenation, plus LABEL, OVERVIEW and THUMBNAIL images. [`DicomSlide`]
//! opens a folder holding the series (how uploads arrive: an unpacked zip, dropped files, a
//! STOW-RS push) or one file of it, whose siblings with the same Series Instance UID complete
//! the slide (the `series` module has the rules).
//!
//! - Attributes are decoded by dicom-rs, driven token by token (`dataset`) so declared sizes
//!   are checked before anything is allocated; reading stops where the pixel data begins.
//! - Frames are found from the Extended or Basic Offset Table or by walking item headers
//!   (`frames`), then read by offset one at a time: the object is never loaded whole.
//! - Levels are the VOLUME instances, one per distinct Total Pixel Matrix size, largest first.
//!   TILED_FULL frames fill the tile grid in row-major order; TILED_SPARSE frames are placed by
//!   their Plane Position (Slide), and tiles no frame covers are white, as glass is. Where a
//!   level has several optical paths or focal planes, the first is read.
//! - Transfer syntaxes: JPEG baseline, JPEG 2000 (lossless and lossy), explicit VR little endian
//!   uncompressed. Anything else is refused with its UID and name. JPEG frames are also served
//!   as [`RawTile`]s, their entropy-coded data untouched (an Adobe marker is added where only
//!   the DICOM header says the components are RGB), so Deep Zoom passes them through without
//!   re-encoding.
//! - Properties are named as OpenSlide names them: vendor `dicom`, every standard attribute of
//!   the base level as `dicom.<Keyword>` (sequences as `dicom.<Sequence>[i].<Keyword>`, multiple
//!   values as `[j]`; private and binary attributes are left out), MPP from the Pixel Spacing of
//!   the Shared Functional Groups (millimetres, converted to micrometres) and the objective power
//!   from the first optical path.

mod dataset;
mod frames;
mod series;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use dicom_core::VR;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use image::RgbImage;
use pathfed_core::SlideLimits;

use self::dataset::{DataSet, Element};
use self::frames::Codec;
use self::series::{Instance, Kind, Layout};
use crate::compose::{self, TileSource};
use crate::error::{Result, SlideError};
use crate::reader::{AssociatedImage, Level, RawTile, SlideProperties, SlideReader};
use crate::tile_cache::TileCache;

pub use self::dataset::is_dicom_magic;

/// Marks a tile of a sparse level that no frame covers.
const MISSING: u32 = u32::MAX;
/// Most raw properties taken from the base level's attributes.
const MAX_PROPERTIES: usize = 10_000;

/// One instance's share of an image: frames `first .. first + count` of the whole image.
#[derive(Debug, Clone, Copy)]
struct Part {
    instance: usize,
    first: u64,
    count: u64,
}

/// Which frame holds each tile.
#[derive(Debug)]
enum TileMap {
    /// Row-major: tile `row * cols + col` is frame of the same number.
    Full,
    /// One entry per tile: the frame's number, or [`MISSING`].
    Sparse(Vec<u32>),
}

/// A level or an associated image: a grid of frames from one or more instances.
#[derive(Debug)]
struct Image {
    width: u64,
    height: u64,
    tile_w: u32,
    tile_h: u32,
    cols: u64,
    rows: u64,
    codec: Codec,
    parts: Vec<Part>,
    map: TileMap,
}

impl Image {
    /// The instance and its frame number holding tile (`col`, `row`); `None` for a missing tile.
    fn frame_at(&self, col: u64, row: u64) -> Option<(usize, usize)> {
        let global = match &self.map {
            TileMap::Full => row * self.cols + col,
            TileMap::Sparse(table) => match *table.get((row * self.cols + col) as usize)? {
                MISSING => return None,
                frame => u64::from(frame),
            },
        };
        let index = self.parts.partition_point(|part| part.first <= global);
        let part = self.parts.get(index.checked_sub(1)?)?;
        if global < part.first + part.count {
            Some((part.instance, (global - part.first) as usize))
        } else {
            None
        }
    }
}

/// A DICOM whole-slide image read by pathfed's own reader.
pub struct DicomSlide {
    instances: Vec<Instance>,
    levels: Vec<Image>,
    associated: Vec<(String, Image)>,
    properties: SlideProperties,
    limits: SlideLimits,
    /// Decoded frames by (instance, frame).
    cache: TileCache,
}

/// What the first bytes of an arriving file say about it as part of a DICOM slide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    /// A whole-slide image instance in a transfer syntax this reader decodes.
    Readable,
    /// A DICOM file of another kind (a DICOMDIR, a report): ignored in a slide folder.
    NotWholeSlide,
}

/// Judges an upload from its first bytes (preamble and file meta group: a few hundred bytes), so
/// a transfer syntax this reader refuses is reported before the rest of the file arrives.
///
/// Errors: [`SlideError::NotASlide`] without the DICOM magic; [`SlideError::Truncated`] when
/// `head` ends inside the file meta group (more bytes are needed); [`SlideError::Unsupported`]
/// naming the transfer syntax (UID and name) of a whole-slide instance this reader cannot decode.
pub fn check_head(head: &[u8]) -> Result<HeadVerdict> {
    let meta = dataset::meta_of_head(head)?;
    if meta.sop_class().as_deref() != Some(series::WSI_SOP_CLASS) {
        return Ok(HeadVerdict::NotWholeSlide);
    }
    let uid = meta
        .transfer_syntax()
        .ok_or_else(|| SlideError::InvalidDicom("no Transfer Syntax UID".into()))?;
    series::check_syntax(&uid, "the file")?;
    Ok(HeadVerdict::Readable)
}

/// The SOP Class and SOP Instance UIDs of a DICOM file, from its file meta group: what a store
/// transaction (STOW-RS) reports for each instance it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SopIds {
    /// SOP Class UID (Media Storage SOP Class UID, 0002,0002).
    pub class: String,
    /// SOP Instance UID (Media Storage SOP Instance UID, 0002,0003).
    pub instance: String,
}

/// Reads [`SopIds`] from a file's first bytes, as [`check_head`] reads them (same errors), and
/// [`SlideError::InvalidDicom`] when the meta group lacks either UID.
pub fn sop_ids(head: &[u8]) -> Result<SopIds> {
    let meta = dataset::meta_of_head(head)?;
    let class = meta
        .sop_class()
        .ok_or_else(|| SlideError::InvalidDicom("no Media Storage SOP Class UID".into()))?;
    let instance = meta
        .meta
        .string(tags::MEDIA_STORAGE_SOP_INSTANCE_UID)
        .ok_or_else(|| SlideError::InvalidDicom("no Media Storage SOP Instance UID".into()))?;
    Ok(SopIds { class, instance })
}

/// The study and series a DICOM image instance belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesIds {
    /// Study Instance UID (0020,000D), where the data set has one.
    pub study: Option<String>,
    /// Series Instance UID (0020,000E).
    pub series: String,
}

/// Reads the Study and Series Instance UIDs of the image instance at `path` with the reader's
/// bounded header parser (the data set up to the pixel data; no frame is read): how instances
/// that arrive one by one are grouped into slides.
pub fn series_ids(path: &Path, limits: &SlideLimits) -> Result<SeriesIds> {
    let io = |source| SlideError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let meta = dataset::read_meta(&file, file_len, path)?;
    let body = dataset::read_body(path, meta.dataset_start, file_len, limits)?;
    let series = body
        .data
        .string(tags::SERIES_INSTANCE_UID)
        .ok_or_else(|| SlideError::InvalidDicom("no Series Instance UID".into()))?;
    Ok(SeriesIds {
        study: body.data.string(tags::STUDY_INSTANCE_UID),
        series,
    })
}

/// Whether `path` holds DICOM: a file with the DICOM magic, or a folder with at least one.
pub fn is_dicom(path: &Path, limits: &SlideLimits) -> Result<bool> {
    if path.is_dir() {
        Ok(!series::candidates(path, limits)?.files.is_empty())
    } else {
        series::is_dicom_file(path)
    }
}

impl DicomSlide {
    /// Opens the slide in folder `path`, or the series of the file `path`, with a decoded-frame
    /// cache of `cache_bytes`.
    pub fn open(path: &Path, limits: &SlideLimits, cache_bytes: usize) -> Result<Self> {
        let found = series::candidates(path, limits)?;
        if found.files.is_empty() {
            return Err(SlideError::NotASlide("a folder without DICOM files".into()));
        }
        let mut instances = Vec::new();
        let mut start_series = None;
        let mut failed = Vec::new();
        for file in &found.files {
            let is_start = found.start.as_deref() == Some(file.as_path());
            match Instance::open(file, limits) {
                Ok(Some(instance)) => {
                    if is_start {
                        start_series = Some(instance.series.clone());
                    }
                    instances.push(instance);
                }
                Ok(None) if is_start => {
                    return Err(SlideError::NotASlide(
                        "a DICOM file that is not a whole-slide image level, label or overview"
                            .into(),
                    ));
                }
                Ok(None) => {}
                // Opened from one file, a broken sibling matters only if it is of the same
                // series; that is checked once the start file's series is known.
                Err(error) if found.start.is_some() && !is_start => {
                    failed.push((file, error));
                }
                Err(error) => return Err(error),
            }
        }
        let series_uid = match (&found.start, start_series) {
            (Some(_), Some(uid)) => {
                for (file, error) in failed {
                    if series::series_of(file, limits).as_deref() == Some(uid.as_str()) {
                        return Err(error);
                    }
                    tracing::debug!(
                        file = %file.display(),
                        %error,
                        "skipped a DICOM file of another series"
                    );
                }
                uid
            }
            (Some(_), None) => {
                return Err(SlideError::NotASlide(
                    "not a DICOM whole-slide image".into(),
                ));
            }
            (None, _) => only_series(&instances)?,
        };
        instances.retain(|instance| instance.series == series_uid);
        Self::assemble(instances, limits, cache_bytes)
    }

    /// Builds levels and associated images from the instances of one series.
    fn assemble(
        instances: Vec<Instance>,
        limits: &SlideLimits,
        cache_bytes: usize,
    ) -> Result<Self> {
        // Levels: VOLUME instances by Total Pixel Matrix size, largest first.
        let mut by_size: BTreeMap<(std::cmp::Reverse<u64>, u64), Vec<usize>> = BTreeMap::new();
        let mut by_kind: BTreeMap<Kind, Vec<usize>> = BTreeMap::new();
        for (index, instance) in instances.iter().enumerate() {
            match instance.kind {
                Kind::Volume => by_size
                    .entry((std::cmp::Reverse(instance.width), instance.height))
                    .or_default()
                    .push(index),
                kind => by_kind.entry(kind).or_default().push(index),
            }
        }
        if by_size.is_empty() {
            return Err(SlideError::NotASlide(
                "a DICOM series without VOLUME images".into(),
            ));
        }
        let level_parts: Vec<Vec<usize>> = by_size
            .values()
            .map(|group| choose_parts(&instances, group))
            .collect();
        let associated_parts: Vec<(Kind, Vec<usize>)> = by_kind
            .iter()
            .map(|(kind, group)| (*kind, choose_parts(&instances, group)))
            .collect();

        // Keep only the instances used, renumbered in order of use.
        let mut slots: Vec<Option<Instance>> = instances.into_iter().map(Some).collect();
        let mut kept = Vec::new();
        let mut take = |parts: &[usize]| -> Result<Vec<usize>> {
            let mut renumbered = Vec::with_capacity(parts.len());
            for &old in parts {
                let mut instance = slots
                    .get_mut(old)
                    .and_then(Option::take)
                    .ok_or_else(|| SlideError::InvalidDicom("an instance used twice".into()))?;
                instance.locate_frames(kept.len(), limits)?;
                renumbered.push(kept.len());
                kept.push(instance);
            }
            Ok(renumbered)
        };
        let mut level_indices = Vec::new();
        for parts in &level_parts {
            level_indices.push(take(parts.as_slice())?);
        }
        let mut associated_indices = Vec::new();
        for (kind, parts) in &associated_parts {
            associated_indices.push((*kind, take(parts.as_slice())?));
        }
        let instances = kept;

        let levels = level_indices
            .iter()
            .map(|parts| build_image(&instances, parts, limits))
            .collect::<Result<Vec<_>>>()?;
        let mut associated = Vec::new();
        for (kind, parts) in &associated_indices {
            if let Some(name) = kind.associated_name() {
                associated.push((name.to_string(), build_image(&instances, parts, limits)?));
            }
        }
        let properties = describe(&instances, &levels, &associated);
        Ok(Self {
            instances,
            levels,
            associated,
            properties,
            limits: limits.clone(),
            cache: TileCache::new(cache_bytes),
        })
    }

    /// The files this slide is read from (its levels and associated images), for ingest to keep.
    pub fn files(&self) -> Vec<&Path> {
        self.instances.iter().map(|i| i.path.as_path()).collect()
    }

    fn level(&self, level: usize) -> Result<&Image> {
        self.levels.get(level).ok_or_else(|| {
            SlideError::OutOfRange(format!(
                "level {level} of a slide with {} levels",
                self.levels.len()
            ))
        })
    }

    /// The stored bytes of one frame (fragments joined), read by offset.
    fn frame_bytes(&self, instance: usize, frame: usize) -> Result<Vec<u8>> {
        let source = &self.instances[instance];
        let range = *source
            .ranges
            .get(frame)
            .ok_or_else(|| SlideError::OutOfRange(format!("frame {frame} of {}", source.name())))?;
        let bytes = frames::read_at(
            &source.file,
            &source.path,
            source.file_len,
            range.offset,
            range.len,
            "DICOM frame",
        )?;
        if source.codec == Codec::Native {
            return Ok(bytes);
        }
        frames::join_fragments(bytes).map_err(|message| SlideError::Decode {
            image: instance,
            index: frame,
            message,
        })
    }

    fn decode_frame(&self, image: &Image, instance: usize, frame: usize) -> Result<Vec<u8>> {
        let data = self.frame_bytes(instance, frame)?;
        frames::decode(
            image.codec,
            data,
            image.tile_w,
            image.tile_h,
            &self.limits,
            |message| SlideError::Decode {
                image: instance,
                index: frame,
                message,
            },
        )
    }

    /// The decoded frame, from the cache when possible.
    fn cached_frame(&self, image: &Image, instance: usize, frame: usize) -> Result<Arc<Vec<u8>>> {
        self.cache.get_or_decode((instance, frame), || {
            self.decode_frame(image, instance, frame)
        })
    }

    /// Composes `w × h` pixels of `image` at (`x`, `y`); missing tiles and the outside are white.
    fn compose(
        &self,
        image: &Image,
        x: u64,
        y: u64,
        w: u32,
        h: u32,
        cached: bool,
    ) -> Result<RgbImage> {
        let frames = Frames {
            slide: self,
            image,
            cached,
        };
        compose::compose(&frames, x, y, w, h, self.limits.max_region_pixels)
    }
}

/// One image's frames as tiles to compose, decoded through the slide's cache or not.
struct Frames<'a> {
    slide: &'a DicomSlide,
    image: &'a Image,
    cached: bool,
}

impl TileSource for Frames<'_> {
    fn size(&self) -> (u64, u64) {
        (self.image.width, self.image.height)
    }

    fn tile_size(&self) -> (u64, u64) {
        (u64::from(self.image.tile_w), u64::from(self.image.tile_h))
    }

    fn has_tile(&self, col: u64, row: u64) -> bool {
        // A sparse series may leave tiles without a frame: those are glass.
        self.image.frame_at(col, row).is_some()
    }

    fn tile(&self, col: u64, row: u64) -> Result<Arc<Vec<u8>>> {
        let (instance, frame) = self
            .image
            .frame_at(col, row)
            .ok_or_else(|| SlideError::OutOfRange(format!("no frame holds tile ({col}, {row})")))?;
        if self.cached {
            self.slide.cached_frame(self.image, instance, frame)
        } else {
            Ok(Arc::new(
                self.slide.decode_frame(self.image, instance, frame)?,
            ))
        }
    }
}

impl SlideReader for DicomSlide {
    fn properties(&self) -> &SlideProperties {
        &self.properties
    }

    fn read_region(&self, level: usize, x: u64, y: u64, w: u32, h: u32) -> Result<RgbImage> {
        let image = self.level(level)?;
        self.compose(image, x, y, w, h, true)
    }

    fn raw_tile(&self, level: usize, col: u64, row: u64) -> Result<Option<RawTile>> {
        let image = self.level(level)?;
        if col >= image.cols || row >= image.rows {
            return Err(SlideError::OutOfRange(format!(
                "tile ({col}, {row}) of a {}×{} grid",
                image.cols, image.rows
            )));
        }
        let Codec::Jpeg { rgb } = image.codec else {
            return Ok(None);
        };
        // A tile no frame covers has no stored JPEG: the caller renders it (white).
        let Some((instance, frame)) = image.frame_at(col, row) else {
            return Ok(None);
        };
        let data = self.frame_bytes(instance, frame)?;
        let jpeg = frames::jpeg_stream(data, rgb).map_err(|message| SlideError::Decode {
            image: instance,
            index: frame,
            message,
        })?;
        // What the stream holds, not what the series declares: some writers store edge frames
        // cropped to the image (wsidicomizer's added levels do), and a caller passing a stored
        // tile through must not present a cropped one as a whole tile. A header this quick
        // parse cannot read leaves the frame to the decoder, as a tile without a stored JPEG.
        let Some((width, height)) = crate::jpeg::frame_size(&jpeg) else {
            return Ok(None);
        };
        Ok(Some(RawTile {
            jpeg,
            width,
            height,
        }))
    }

    fn associated_image(&self, name: &str) -> Result<RgbImage> {
        let (_, image) = self
            .associated
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| SlideError::NoSuchAssociatedImage(name.to_string()))?;
        let (w, h) = (u32::try_from(image.width), u32::try_from(image.height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(SlideError::LimitExceeded {
                what: "associated image width",
                value: image.width.max(image.height),
                limit: u64::from(u32::MAX),
            });
        };
        self.compose(image, 0, 0, w, h, false)
    }
}

/// The one series of a folder that has VOLUME images.
fn only_series(instances: &[Instance]) -> Result<String> {
    let mut with_levels: Vec<&str> = instances
        .iter()
        .filter(|i| i.kind == Kind::Volume)
        .map(|i| i.series.as_str())
        .collect();
    with_levels.sort_unstable();
    with_levels.dedup();
    match with_levels.as_slice() {
        [] => Err(SlideError::NotASlide(
            "DICOM files without a whole-slide VOLUME image".into(),
        )),
        [one] => Ok((*one).to_string()),
        many => Err(SlideError::Unsupported(format!(
            "the DICOM files hold {} whole-slide series; a slide is one series",
            many.len()
        ))),
    }
}

/// From instances of the same image (same kind and size), the parts of one whole image: the
/// instances of the first concatenation source, ordered by their frame offset. Others (another
/// optical path or focal plane stored separately, a duplicate) are left out.
fn choose_parts(instances: &[Instance], group: &[usize]) -> Vec<usize> {
    let mut sources: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for &index in group {
        sources
            .entry(instances[index].source.as_str())
            .or_default()
            .push(index);
    }
    let rank = |parts: &Vec<usize>| {
        let first = &instances[parts[0]];
        (
            first.optical_path.clone().unwrap_or_default(),
            parts
                .iter()
                .filter_map(|&i| instances[i].instance_number)
                .min()
                .unwrap_or(i64::MAX),
            first.source.clone(),
        )
    };
    let mut chosen = sources.into_values().min_by_key(rank).unwrap_or_default();
    // The same instance twice (a copied file) is read once.
    let mut seen = std::collections::HashSet::new();
    chosen.retain(|&i| seen.insert(instances[i].sop.as_str()));
    chosen.sort_by_key(|&i| instances[i].frame_offset);
    chosen
}

/// The tile grid of one image from its parts.
fn build_image(instances: &[Instance], parts: &[usize], limits: &SlideLimits) -> Result<Image> {
    let Some(&first_index) = parts.first() else {
        return Err(SlideError::InvalidDicom(
            "an image without instances".into(),
        ));
    };
    let first = &instances[first_index];
    let (width, height, tile_w, tile_h) = (first.width, first.height, first.tile_w, first.tile_h);
    let cols = width.div_ceil(u64::from(tile_w));
    let rows = height.div_ceil(u64::from(tile_h));
    let tiles = cols * rows;
    let mut placed = Vec::with_capacity(parts.len());
    let mut next = 0u64;
    for &index in parts {
        let part = &instances[index];
        if (part.width, part.height, part.tile_w, part.tile_h) != (width, height, tile_w, tile_h)
            || part.codec != first.codec
        {
            return Err(SlideError::InvalidDicom(format!(
                "{} and {} are parts of one image but differ in size, tiling or encoding",
                first.name(),
                part.name()
            )));
        }
        if part.frame_offset != next {
            return Err(SlideError::InvalidDicom(format!(
                "{} starts at frame {} of its concatenation, expected {next}: a part is missing \
                 or repeated",
                part.name(),
                part.frame_offset
            )));
        }
        placed.push(Part {
            instance: index,
            first: next,
            count: part.frames,
        });
        next += part.frames;
    }
    if let Some(total) = first.concatenation_total
        && total != parts.len() as u64
    {
        return Err(SlideError::InvalidDicom(format!(
            "{} is one of {total} concatenation parts, {} were found",
            first.name(),
            parts.len()
        )));
    }
    if next > limits.max_tiles.min(u64::from(MISSING) - 1) {
        return Err(SlideError::LimitExceeded {
            what: "DICOM frame count",
            value: next,
            limit: limits.max_tiles.min(u64::from(MISSING) - 1),
        });
    }
    let all_full = parts
        .iter()
        .all(|&i| matches!(instances[i].layout, Layout::Full));
    let map = if all_full {
        if next < tiles {
            return Err(SlideError::InvalidDicom(format!(
                "{}: a TILED_FULL image of {tiles} tiles holds only {next} frames",
                first.name()
            )));
        }
        TileMap::Full
    } else {
        let mut table = vec![MISSING; tiles as usize];
        for part in &placed {
            let instance = &instances[part.instance];
            match &instance.layout {
                Layout::Full => {
                    for frame in part.first..(part.first + part.count).min(tiles) {
                        table[frame as usize] = frame as u32;
                    }
                }
                Layout::Sparse {
                    positions,
                    optical_paths,
                } => {
                    // Frames of other optical paths than the first are left out.
                    let chosen = instance
                        .optical_path
                        .as_ref()
                        .and_then(|id| optical_paths.iter().position(|p| p == id))
                        .map(|i| i as u32);
                    for (local, frame) in positions.iter().enumerate() {
                        if let (Some(path), Some(chosen)) = (frame.optical_path, chosen)
                            && path != chosen
                        {
                            continue;
                        }
                        let slot = sparse_slot(instance, local, frame.position, cols, rows)?;
                        if table[slot] == MISSING {
                            // The first frame at a position wins (the first focal plane).
                            table[slot] = (part.first + local as u64) as u32;
                        }
                    }
                }
            }
        }
        TileMap::Sparse(table)
    };
    Ok(Image {
        width,
        height,
        tile_w,
        tile_h,
        cols,
        rows,
        codec: first.codec,
        parts: placed,
        map,
    })
}

/// The tile index of a sparse frame at 1-based `position`, which must lie on the tile grid.
fn sparse_slot(
    instance: &Instance,
    local: usize,
    position: Option<(i64, i64)>,
    cols: u64,
    rows: u64,
) -> Result<usize> {
    let Some((column, row)) = position else {
        return Err(SlideError::InvalidDicom(format!(
            "{}: frame {} has no Plane Position (Slide)",
            instance.name(),
            local + 1
        )));
    };
    let (tw, th) = (i64::from(instance.tile_w), i64::from(instance.tile_h));
    if column < 1 || row < 1 {
        return Err(SlideError::InvalidDicom(format!(
            "{}: frame {} at column {column}, row {row} (positions start at 1)",
            instance.name(),
            local + 1
        )));
    }
    if (column - 1) % tw != 0 || (row - 1) % th != 0 {
        return Err(SlideError::Unsupported(format!(
            "{}: TILED_SPARSE frame {} at column {column}, row {row} is off the {tw}×{th} tile \
             grid",
            instance.name(),
            local + 1
        )));
    }
    let (col, tile_row) = (((column - 1) / tw) as u64, ((row - 1) / th) as u64);
    if col >= cols || tile_row >= rows {
        return Err(SlideError::InvalidDicom(format!(
            "{}: frame {} at column {column}, row {row} lies outside the total pixel matrix",
            instance.name(),
            local + 1
        )));
    }
    Ok((tile_row * cols + col) as usize)
}

/// The normalised description: geometry, MPP, objective power and the base level's attributes.
fn describe(
    instances: &[Instance],
    levels: &[Image],
    associated: &[(String, Image)],
) -> SlideProperties {
    let base = &instances[levels[0].parts[0].instance];
    let mut raw = BTreeMap::new();
    flatten("dicom", &base.meta, &mut raw);
    flatten("dicom", &base.data, &mut raw);
    // Pixel Spacing is row spacing then column spacing, in millimetres.
    let spacing = base
        .data
        .item(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0)
        .and_then(|shared| shared.item(tags::PIXEL_MEASURES_SEQUENCE, 0))
        .and_then(|measures| measures.floats(tags::PIXEL_SPACING))
        .unwrap_or_default();
    let micrometres = |mm: Option<&f64>| {
        mm.map(|mm| mm * 1000.0)
            .filter(|um| um.is_finite() && *um > 0.0)
    };
    let objective_power = base
        .data
        .item(tags::OPTICAL_PATH_SEQUENCE, 0)
        .and_then(|path| path.floats(tags::OBJECTIVE_LENS_POWER))
        .and_then(|values| values.first().copied())
        .filter(|power| power.is_finite() && *power > 0.0);
    let (w0, h0) = (levels[0].width as f64, levels[0].height as f64);
    SlideProperties {
        vendor: "dicom".into(),
        backend: "dicom",
        levels: levels
            .iter()
            .map(|image| Level {
                width: image.width,
                height: image.height,
                downsample: (w0 / image.width as f64 + h0 / image.height as f64) / 2.0,
                tile_size: Some((image.tile_w, image.tile_h)),
            })
            .collect(),
        mpp_x: micrometres(spacing.get(1)),
        mpp_y: micrometres(spacing.first()),
        objective_power,
        bounds: None,
        associated_images: associated
            .iter()
            .map(|(name, image)| AssociatedImage {
                name: name.clone(),
                width: image.width,
                height: image.height,
            })
            .collect(),
        raw,
    }
}

/// Adds the standard, non-binary attributes of `set` as OpenSlide names them.
fn flatten(prefix: &str, set: &DataSet, out: &mut BTreeMap<String, String>) {
    let dictionary = StandardDataDictionary;
    for (tag, element) in &set.elements {
        if out.len() >= MAX_PROPERTIES {
            return;
        }
        // Private attributes (odd groups) carry vendor data nobody asked to show.
        if !tag.0.is_multiple_of(2) {
            continue;
        }
        let Some(entry) = dictionary.by_tag(*tag) else {
            continue;
        };
        let keyword = entry.alias();
        match element {
            Element::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    flatten(&format!("{prefix}.{keyword}[{i}]"), item, out);
                }
            }
            Element::Value(vr, value) => {
                if matches!(
                    vr,
                    VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN
                ) {
                    continue;
                }
                let values = value.to_multi_str();
                if let [one] = values.as_ref() {
                    out.insert(format!("{prefix}.{keyword}"), one.trim().to_string());
                } else {
                    for (i, one) in values.iter().enumerate() {
                        out.insert(format!("{prefix}.{keyword}[{i}]"), one.trim().to_string());
                    }
                }
            }
        }
    }
}
