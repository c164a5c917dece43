//! The DICOM JSON model (PS3.18 F.2) and the attributes of a slide's study, series and
//! instances, as search results (QIDO-RS) and as metadata (WADO-RS).
//!
//! Each level is a VL Whole Slide Microscopy Image (PS3.3 A.32.8) of image type VOLUME: frames
//! `TILED_FULL`, one optical path (brightfield, full spectrum), one focal plane, pixel spacing
//! from the slide's resolution scaled by the level's size, all levels sharing one frame of
//! reference with its origin at the top left of the scanned area. Identity is left out on
//! purpose: Patient's Name, Patient ID, birth date, sex, accession number and study ID are empty
//! (type 2), because who a slide belongs to is kept by the case system, with its own access
//! rules, not in the image. Descriptions name the slide by its id, never by its uploaded file
//! name, which may carry a patient's name or number. Dates and times are the slide's
//! registration, in UTC.

use std::collections::BTreeMap;

use pathfed_ingest::slides::Slide;
use pathfed_slide::SlideProperties;
use serde_json::{Map, Value};

use super::frames::{Colour, Tiling};
use super::uids;

/// VL Whole Slide Microscopy Image Storage.
pub(super) const WSI_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.77.1.6";
/// JPEG Baseline (Process 1), the transfer syntax of every frame.
pub(super) const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
/// The one modality: slide microscopy.
pub(super) const MODALITY_SM: &str = "SM";

/// Tags of the attributes written here.
mod tag {
    pub(super) const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
    pub(super) const IMAGE_TYPE: u32 = 0x0008_0008;
    pub(super) const SOP_CLASS_UID: u32 = 0x0008_0016;
    pub(super) const SOP_INSTANCE_UID: u32 = 0x0008_0018;
    pub(super) const PYRAMID_UID: u32 = 0x0008_0019;
    pub(super) const STUDY_DATE: u32 = 0x0008_0020;
    pub(super) const SERIES_DATE: u32 = 0x0008_0021;
    pub(super) const CONTENT_DATE: u32 = 0x0008_0023;
    pub(super) const ACQUISITION_DATE_TIME: u32 = 0x0008_002A;
    pub(super) const STUDY_TIME: u32 = 0x0008_0030;
    pub(super) const SERIES_TIME: u32 = 0x0008_0031;
    pub(super) const CONTENT_TIME: u32 = 0x0008_0033;
    pub(super) const ACCESSION_NUMBER: u32 = 0x0008_0050;
    pub(super) const MODALITY: u32 = 0x0008_0060;
    pub(super) const MODALITIES_IN_STUDY: u32 = 0x0008_0061;
    pub(super) const MANUFACTURER: u32 = 0x0008_0070;
    pub(super) const REFERRING_PHYSICIAN_NAME: u32 = 0x0008_0090;
    pub(super) const CODE_VALUE: u32 = 0x0008_0100;
    pub(super) const CODING_SCHEME_DESIGNATOR: u32 = 0x0008_0102;
    pub(super) const CODE_MEANING: u32 = 0x0008_0104;
    pub(super) const TIMEZONE_OFFSET_FROM_UTC: u32 = 0x0008_0201;
    pub(super) const AVAILABLE_TRANSFER_SYNTAX_UID: u32 = 0x0008_3002;
    pub(super) const SERIES_DESCRIPTION: u32 = 0x0008_103E;
    pub(super) const MANUFACTURER_MODEL_NAME: u32 = 0x0008_1090;
    pub(super) const FRAME_TYPE: u32 = 0x0008_9007;
    pub(super) const VOLUMETRIC_PROPERTIES: u32 = 0x0008_9206;
    pub(super) const PATIENT_NAME: u32 = 0x0010_0010;
    pub(super) const PATIENT_ID: u32 = 0x0010_0020;
    pub(super) const PATIENT_BIRTH_DATE: u32 = 0x0010_0030;
    pub(super) const PATIENT_SEX: u32 = 0x0010_0040;
    pub(super) const SLICE_THICKNESS: u32 = 0x0018_0050;
    pub(super) const DEVICE_SERIAL_NUMBER: u32 = 0x0018_1000;
    pub(super) const SOFTWARE_VERSIONS: u32 = 0x0018_1020;
    pub(super) const ILLUMINATION_TYPE_CODE_SEQUENCE: u32 = 0x0022_0016;
    pub(super) const STUDY_INSTANCE_UID: u32 = 0x0020_000D;
    pub(super) const SERIES_INSTANCE_UID: u32 = 0x0020_000E;
    pub(super) const STUDY_ID: u32 = 0x0020_0010;
    pub(super) const SERIES_NUMBER: u32 = 0x0020_0011;
    pub(super) const INSTANCE_NUMBER: u32 = 0x0020_0013;
    pub(super) const FRAME_OF_REFERENCE_UID: u32 = 0x0020_0052;
    pub(super) const POSITION_REFERENCE_INDICATOR: u32 = 0x0020_1040;
    pub(super) const NUMBER_OF_STUDY_RELATED_SERIES: u32 = 0x0020_1206;
    pub(super) const NUMBER_OF_STUDY_RELATED_INSTANCES: u32 = 0x0020_1208;
    pub(super) const NUMBER_OF_SERIES_RELATED_INSTANCES: u32 = 0x0020_1209;
    pub(super) const DIMENSION_ORGANIZATION_UID: u32 = 0x0020_9164;
    pub(super) const DIMENSION_ORGANIZATION_SEQUENCE: u32 = 0x0020_9221;
    pub(super) const DIMENSION_ORGANIZATION_TYPE: u32 = 0x0020_9311;
    pub(super) const SAMPLES_PER_PIXEL: u32 = 0x0028_0002;
    pub(super) const PHOTOMETRIC_INTERPRETATION: u32 = 0x0028_0004;
    pub(super) const PLANAR_CONFIGURATION: u32 = 0x0028_0006;
    pub(super) const NUMBER_OF_FRAMES: u32 = 0x0028_0008;
    pub(super) const ROWS: u32 = 0x0028_0010;
    pub(super) const COLUMNS: u32 = 0x0028_0011;
    pub(super) const PIXEL_SPACING: u32 = 0x0028_0030;
    pub(super) const BITS_ALLOCATED: u32 = 0x0028_0100;
    pub(super) const BITS_STORED: u32 = 0x0028_0101;
    pub(super) const HIGH_BIT: u32 = 0x0028_0102;
    pub(super) const PIXEL_REPRESENTATION: u32 = 0x0028_0103;
    pub(super) const BURNED_IN_ANNOTATION: u32 = 0x0028_0301;
    pub(super) const LOSSY_IMAGE_COMPRESSION: u32 = 0x0028_2110;
    pub(super) const PIXEL_MEASURES_SEQUENCE: u32 = 0x0028_9110;
    pub(super) const CONTAINER_IDENTIFIER: u32 = 0x0040_0512;
    pub(super) const ISSUER_OF_THE_CONTAINER_IDENTIFIER_SEQUENCE: u32 = 0x0040_0513;
    pub(super) const CONTAINER_TYPE_CODE_SEQUENCE: u32 = 0x0040_0518;
    pub(super) const SPECIMEN_IDENTIFIER: u32 = 0x0040_0551;
    pub(super) const SPECIMEN_UID: u32 = 0x0040_0554;
    pub(super) const ACQUISITION_CONTEXT_SEQUENCE: u32 = 0x0040_0555;
    pub(super) const SPECIMEN_DESCRIPTION_SEQUENCE: u32 = 0x0040_0560;
    pub(super) const ISSUER_OF_THE_SPECIMEN_IDENTIFIER_SEQUENCE: u32 = 0x0040_0562;
    pub(super) const SPECIMEN_PREPARATION_SEQUENCE: u32 = 0x0040_0610;
    pub(super) const WSI_FRAME_TYPE_SEQUENCE: u32 = 0x0040_0710;
    pub(super) const X_OFFSET_IN_SLIDE_COORDINATE_SYSTEM: u32 = 0x0040_072A;
    pub(super) const Y_OFFSET_IN_SLIDE_COORDINATE_SYSTEM: u32 = 0x0040_073A;
    pub(super) const IMAGED_VOLUME_WIDTH: u32 = 0x0048_0001;
    pub(super) const IMAGED_VOLUME_HEIGHT: u32 = 0x0048_0002;
    pub(super) const IMAGED_VOLUME_DEPTH: u32 = 0x0048_0003;
    pub(super) const TOTAL_PIXEL_MATRIX_COLUMNS: u32 = 0x0048_0006;
    pub(super) const TOTAL_PIXEL_MATRIX_ROWS: u32 = 0x0048_0007;
    pub(super) const TOTAL_PIXEL_MATRIX_ORIGIN_SEQUENCE: u32 = 0x0048_0008;
    pub(super) const SPECIMEN_LABEL_IN_IMAGE: u32 = 0x0048_0010;
    pub(super) const FOCUS_METHOD: u32 = 0x0048_0011;
    pub(super) const EXTENDED_DEPTH_OF_FIELD: u32 = 0x0048_0012;
    pub(super) const IMAGE_ORIENTATION_SLIDE: u32 = 0x0048_0102;
    pub(super) const OPTICAL_PATH_SEQUENCE: u32 = 0x0048_0105;
    pub(super) const OPTICAL_PATH_IDENTIFIER: u32 = 0x0048_0106;
    pub(super) const ILLUMINATION_COLOR_CODE_SEQUENCE: u32 = 0x0048_0108;
    pub(super) const OBJECTIVE_LENS_POWER: u32 = 0x0048_0112;
    pub(super) const NUMBER_OF_OPTICAL_PATHS: u32 = 0x0048_0302;
    pub(super) const TOTAL_PIXEL_MATRIX_FOCAL_PLANES: u32 = 0x0048_0303;
    pub(super) const SHARED_FUNCTIONAL_GROUPS_SEQUENCE: u32 = 0x5200_9229;
}

/// Section thickness, in millimetres, where the scanner does not say (none of the formats
/// read here does): the value wsidicom writes in the same case, 0.5 µm.
const NOMINAL_SLICE_THICKNESS_MM: f64 = 0.0005;

/// A data set in DICOM JSON: attributes keyed by tag, each with its VR and values.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct DataSet(BTreeMap<u32, Value>);

impl DataSet {
    /// No attributes.
    pub(super) fn new() -> Self {
        Self::default()
    }

    fn put(&mut self, tag: u32, vr: &str, values: Vec<Value>) -> &mut Self {
        let mut element = Map::new();
        element.insert("vr".to_string(), Value::from(vr));
        // An attribute without values is written without `Value` (F.2.5: empty, type 2).
        if !values.is_empty() {
            element.insert("Value".to_string(), Value::Array(values));
        }
        self.0.insert(tag, Value::Object(element));
        self
    }

    /// A text attribute with one value; an empty text leaves it empty.
    pub(super) fn text(&mut self, tag: u32, vr: &str, value: &str) -> &mut Self {
        self.texts(tag, vr, &[value])
    }

    /// A text attribute with several values (empty texts are left out).
    pub(super) fn texts(&mut self, tag: u32, vr: &str, values: &[&str]) -> &mut Self {
        let values = values
            .iter()
            .filter(|v| !v.is_empty())
            .map(|v| Value::from(*v))
            .collect();
        self.put(tag, vr, values)
    }

    /// An attribute present without a value.
    pub(super) fn empty(&mut self, tag: u32, vr: &str) -> &mut Self {
        self.put(tag, vr, Vec::new())
    }

    /// An integer attribute (US, UL, IS).
    pub(super) fn integer(&mut self, tag: u32, vr: &str, value: u64) -> &mut Self {
        self.put(tag, vr, vec![Value::from(value)])
    }

    /// A decimal attribute (DS, FL, FD) with its values.
    pub(super) fn decimals(&mut self, tag: u32, vr: &str, values: &[f64]) -> &mut Self {
        let values = values.iter().filter_map(|&v| decimal(v)).collect();
        self.put(tag, vr, values)
    }

    /// A sequence of items.
    pub(super) fn sequence(&mut self, tag: u32, items: Vec<DataSet>) -> &mut Self {
        let items = items.into_iter().map(DataSet::into_json).collect();
        self.put(tag, "SQ", items)
    }

    /// The data set as a JSON object, attributes in tag order, keys as 8 upper-case hex digits.
    pub(super) fn into_json(self) -> Value {
        Value::Object(
            self.0
                .into_iter()
                .map(|(tag, element)| (format!("{tag:08X}"), element))
                .collect(),
        )
    }
}

/// A decimal rounded to 9 significant digits, so that its shortest form fits a DS value
/// (16 characters); `None` for what is not a finite number.
fn decimal(value: f64) -> Option<Value> {
    if !value.is_finite() {
        return None;
    }
    let rounded: f64 = format!("{value:.8e}").parse().ok()?;
    // `-0` is written `0`.
    let rounded = if rounded == 0.0 { 0.0 } else { rounded };
    serde_json::Number::from_f64(rounded).map(Value::Number)
}

/// A code sequence item.
fn code(value: &str, scheme: &str, meaning: &str) -> DataSet {
    let mut item = DataSet::new();
    item.text(tag::CODE_VALUE, "SH", value)
        .text(tag::CODING_SCHEME_DESIGNATOR, "SH", scheme)
        .text(tag::CODE_MEANING, "LO", meaning);
    item
}

/// A text made fit for a LO value: no control characters or backslashes (the value
/// separator), at most 64 characters.
fn long_string(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && *c != '\\')
        .take(64)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The slide's registration time as DICOM date (`YYYYMMDD`) and time (`HHMMSS`), UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
struct When {
    date: String,
    time: String,
}

impl When {
    /// `None` outside the years a DA value can hold.
    fn of(unix: i64) -> Option<Self> {
        let (days, seconds) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
        // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm, proleptic Gregorian).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let day_of_era = z.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let shifted_month = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
        let month = if shifted_month < 10 {
            shifted_month + 3
        } else {
            shifted_month - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        if !(1..=9999).contains(&year) {
            return None;
        }
        Some(Self {
            date: format!("{year:04}{month:02}{day:02}"),
            time: format!(
                "{:02}{:02}{:02}",
                seconds / 3600,
                seconds % 3600 / 60,
                seconds % 60
            ),
        })
    }
}

/// Patient and study attributes, shared by search results and metadata: identity empty.
fn patient_and_study(data: &mut DataSet, slide: &Slide, study: &str) {
    let when = When::of(slide.created_at);
    let (date, time) = when
        .as_ref()
        .map_or(("", ""), |w| (w.date.as_str(), w.time.as_str()));
    data.text(tag::SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192")
        .text(tag::STUDY_DATE, "DA", date)
        .text(tag::STUDY_TIME, "TM", time)
        .text(tag::TIMEZONE_OFFSET_FROM_UTC, "SH", "+0000")
        .empty(tag::ACCESSION_NUMBER, "SH")
        .empty(tag::REFERRING_PHYSICIAN_NAME, "PN")
        .empty(tag::PATIENT_NAME, "PN")
        .empty(tag::PATIENT_ID, "LO")
        .empty(tag::PATIENT_BIRTH_DATE, "DA")
        .empty(tag::PATIENT_SEX, "CS")
        .text(tag::STUDY_INSTANCE_UID, "UI", study)
        .empty(tag::STUDY_ID, "SH");
}

/// Series attributes.
fn series(data: &mut DataSet, slide: &Slide, study: &str) {
    let when = When::of(slide.created_at);
    let (date, time) = when
        .as_ref()
        .map_or(("", ""), |w| (w.date.as_str(), w.time.as_str()));
    data.text(tag::MODALITY, "CS", MODALITY_SM)
        .text(tag::SERIES_INSTANCE_UID, "UI", &uids::series_uid(study))
        .integer(tag::SERIES_NUMBER, "IS", 1)
        .text(tag::SERIES_DATE, "DA", date)
        .text(tag::SERIES_TIME, "TM", time)
        .text(
            tag::SERIES_DESCRIPTION,
            "LO",
            &format!("slide {}", long_string(&slide.id)),
        );
}

/// Pyramid levels a slide row records.
pub(super) fn stored_levels(slide: &Slide) -> usize {
    usize::try_from(slide.levels).unwrap_or(0)
}

/// A study as a study search answers it.
pub(super) fn study_result(slide: &Slide, study: &str) -> DataSet {
    let mut data = DataSet::new();
    patient_and_study(&mut data, slide, study);
    data.texts(tag::MODALITIES_IN_STUDY, "CS", &[MODALITY_SM])
        .integer(tag::NUMBER_OF_STUDY_RELATED_SERIES, "IS", 1)
        .integer(
            tag::NUMBER_OF_STUDY_RELATED_INSTANCES,
            "IS",
            u64::try_from(stored_levels(slide)).unwrap_or(0),
        );
    data
}

/// A series as a series search answers it.
pub(super) fn series_result(slide: &Slide, study: &str) -> DataSet {
    let mut data = DataSet::new();
    data.text(tag::SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192")
        .text(tag::STUDY_INSTANCE_UID, "UI", study);
    series(&mut data, slide, study);
    data.integer(
        tag::NUMBER_OF_SERIES_RELATED_INSTANCES,
        "IS",
        u64::try_from(stored_levels(slide)).unwrap_or(0),
    );
    data
}

/// Image Type (and Frame Type): the full-resolution level is the original, the others derived
/// from it.
fn image_type(level: usize) -> [&'static str; 4] {
    if level == 0 {
        ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    } else {
        ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    }
}

/// An instance as an instance search answers it, with the transfer syntax its frames are in.
pub(super) fn instance_result(study: &str, tiling: &Tiling) -> DataSet {
    let mut data = DataSet::new();
    data.text(tag::SPECIFIC_CHARACTER_SET, "CS", "ISO_IR 192")
        .text(tag::STUDY_INSTANCE_UID, "UI", study)
        .text(tag::SERIES_INSTANCE_UID, "UI", &uids::series_uid(study))
        .text(tag::MODALITY, "CS", MODALITY_SM)
        .text(tag::SOP_CLASS_UID, "UI", WSI_STORAGE)
        .text(
            tag::SOP_INSTANCE_UID,
            "UI",
            &uids::instance_uid(study, tiling.level),
        )
        .texts(tag::IMAGE_TYPE, "CS", &image_type(tiling.level))
        .text(tag::AVAILABLE_TRANSFER_SYNTAX_UID, "UI", JPEG_BASELINE);
    instance_geometry(&mut data, tiling);
    data
}

/// Size, frames and sample layout of an instance.
fn instance_geometry(data: &mut DataSet, tiling: &Tiling) {
    data.integer(
        tag::INSTANCE_NUMBER,
        "IS",
        u64::try_from(tiling.level).unwrap_or(0) + 1,
    )
    .integer(tag::ROWS, "US", u64::from(tiling.frame_height))
    .integer(tag::COLUMNS, "US", u64::from(tiling.frame_width))
    .integer(tag::NUMBER_OF_FRAMES, "IS", tiling.count())
    .integer(tag::TOTAL_PIXEL_MATRIX_COLUMNS, "UL", tiling.width)
    .integer(tag::TOTAL_PIXEL_MATRIX_ROWS, "UL", tiling.height)
    .integer(tag::BITS_ALLOCATED, "US", 8);
}

/// Micrometres per level-0 pixel along x and y, where the slide says (and says sensibly).
fn resolution(properties: &SlideProperties) -> Option<(f64, f64)> {
    let (mpp_x, mpp_y) = (properties.mpp_x?, properties.mpp_y?);
    (mpp_x > 0.0 && mpp_y > 0.0 && mpp_x.is_finite() && mpp_y.is_finite()).then_some((mpp_x, mpp_y))
}

/// Millimetres per pixel of a level along (rows, columns): the slide's resolution scaled by
/// how much smaller the level is than level 0 along each axis.
fn pixel_spacing(properties: &SlideProperties, tiling: &Tiling) -> Option<(f64, f64)> {
    let (mpp_x, mpp_y) = resolution(properties)?;
    let (width, height) = properties.dimensions();
    let scale = |full: u64, level: u64| full as f64 / level.max(1) as f64;
    Some((
        mpp_y * scale(height, tiling.height) / 1000.0,
        mpp_x * scale(width, tiling.width) / 1000.0,
    ))
}

/// The complete metadata of the instance of `tiling`'s level, whose frames are in `colour`.
pub(super) fn instance_metadata(
    slide: &Slide,
    study: &str,
    properties: &SlideProperties,
    tiling: &Tiling,
    colour: Colour,
) -> DataSet {
    let when = When::of(slide.created_at);
    let (date, time) = when
        .as_ref()
        .map_or(("", ""), |w| (w.date.as_str(), w.time.as_str()));
    let date_time = format!("{date}{time}");
    let image_type = image_type(tiling.level);
    let manufacturer = long_string(&properties.vendor);
    let mut data = DataSet::new();
    patient_and_study(&mut data, slide, study);
    series(&mut data, slide, study);
    instance_geometry(&mut data, tiling);
    // SOP common, general image and equipment.
    data.text(tag::SOP_CLASS_UID, "UI", WSI_STORAGE)
        .text(
            tag::SOP_INSTANCE_UID,
            "UI",
            &uids::instance_uid(study, tiling.level),
        )
        .texts(tag::IMAGE_TYPE, "CS", &image_type)
        .text(tag::CONTENT_DATE, "DA", date)
        .text(tag::CONTENT_TIME, "TM", time)
        .text(tag::ACQUISITION_DATE_TIME, "DT", &date_time)
        .text(tag::MANUFACTURER, "LO", &manufacturer)
        .text(tag::MANUFACTURER_MODEL_NAME, "LO", "unknown")
        .text(tag::DEVICE_SERIAL_NUMBER, "LO", "unknown")
        .text(
            tag::SOFTWARE_VERSIONS,
            "LO",
            concat!("pathfed ", env!("CARGO_PKG_VERSION")),
        )
        .text(tag::VOLUMETRIC_PROPERTIES, "CS", "VOLUME")
        .text(tag::BURNED_IN_ANNOTATION, "CS", "NO")
        .text(tag::SPECIMEN_LABEL_IN_IMAGE, "CS", "NO");
    // Frame of reference and the multi-frame dimensions.
    data.text(
        tag::FRAME_OF_REFERENCE_UID,
        "UI",
        &uids::frame_of_reference_uid(study),
    )
    .text(tag::POSITION_REFERENCE_INDICATOR, "LO", "SLIDE_CORNER")
    .text(tag::PYRAMID_UID, "UI", &uids::pyramid_uid(study))
    .sequence(tag::DIMENSION_ORGANIZATION_SEQUENCE, {
        let mut item = DataSet::new();
        item.text(
            tag::DIMENSION_ORGANIZATION_UID,
            "UI",
            &uids::dimension_organization_uid(study),
        );
        vec![item]
    })
    .text(tag::DIMENSION_ORGANIZATION_TYPE, "CS", "TILED_FULL");
    // Pixels: what the frames hold. JPEG baseline is lossy.
    data.integer(tag::SAMPLES_PER_PIXEL, "US", 3)
        .text(
            tag::PHOTOMETRIC_INTERPRETATION,
            "CS",
            colour.photometric_interpretation(),
        )
        .integer(tag::PLANAR_CONFIGURATION, "US", 0)
        .integer(tag::BITS_STORED, "US", 8)
        .integer(tag::HIGH_BIT, "US", 7)
        .integer(tag::PIXEL_REPRESENTATION, "US", 0)
        .text(tag::LOSSY_IMAGE_COMPRESSION, "CS", "01");
    // The slide as a specimen container, named by its id.
    let slide_id = long_string(&slide.id);
    data.text(tag::CONTAINER_IDENTIFIER, "LO", &slide_id)
        .sequence(tag::ISSUER_OF_THE_CONTAINER_IDENTIFIER_SEQUENCE, Vec::new())
        .sequence(
            tag::CONTAINER_TYPE_CODE_SEQUENCE,
            vec![code("433466003", "SCT", "Microscope slide")],
        )
        .sequence(tag::ACQUISITION_CONTEXT_SEQUENCE, Vec::new())
        .sequence(tag::SPECIMEN_DESCRIPTION_SEQUENCE, {
            let mut specimen = DataSet::new();
            specimen
                .text(tag::SPECIMEN_IDENTIFIER, "LO", &slide_id)
                .text(tag::SPECIMEN_UID, "UI", &uids::specimen_uid(study))
                .sequence(tag::ISSUER_OF_THE_SPECIMEN_IDENTIFIER_SEQUENCE, Vec::new())
                .sequence(tag::SPECIMEN_PREPARATION_SEQUENCE, Vec::new());
            vec![specimen]
        });
    // Whole slide microscopy image: geometry in the slide's coordinates, one plane, one path.
    let mut measures = DataSet::new();
    measures.decimals(tag::SLICE_THICKNESS, "DS", &[NOMINAL_SLICE_THICKNESS_MM]);
    if let Some((row_spacing, column_spacing)) = pixel_spacing(properties, tiling) {
        measures.decimals(tag::PIXEL_SPACING, "DS", &[row_spacing, column_spacing]);
    }
    if let Some((mpp_x, mpp_y)) = resolution(properties) {
        // The same area at every level: level 0's pixels times level 0's spacing, in mm (and
        // the depth in µm, as the standard has it).
        let (width, height) = properties.dimensions();
        data.decimals(
            tag::IMAGED_VOLUME_WIDTH,
            "FL",
            &[width as f64 * mpp_x / 1000.0],
        )
        .decimals(
            tag::IMAGED_VOLUME_HEIGHT,
            "FL",
            &[height as f64 * mpp_y / 1000.0],
        )
        .decimals(
            tag::IMAGED_VOLUME_DEPTH,
            "FL",
            &[NOMINAL_SLICE_THICKNESS_MM * 1000.0],
        );
    }
    let mut frame_type = DataSet::new();
    frame_type.texts(tag::FRAME_TYPE, "CS", &image_type);
    let mut shared = DataSet::new();
    shared
        .sequence(tag::PIXEL_MEASURES_SEQUENCE, vec![measures])
        .sequence(tag::WSI_FRAME_TYPE_SEQUENCE, vec![frame_type]);
    let mut origin = DataSet::new();
    origin
        .decimals(tag::X_OFFSET_IN_SLIDE_COORDINATE_SYSTEM, "DS", &[0.0])
        .decimals(tag::Y_OFFSET_IN_SLIDE_COORDINATE_SYSTEM, "DS", &[0.0]);
    let mut path = DataSet::new();
    path.sequence(
        tag::ILLUMINATION_TYPE_CODE_SEQUENCE,
        vec![code("111744", "DCM", "Brightfield illumination")],
    )
    .text(tag::OPTICAL_PATH_IDENTIFIER, "SH", "0")
    .sequence(
        tag::ILLUMINATION_COLOR_CODE_SEQUENCE,
        vec![code("414298005", "SCT", "Full Spectrum")],
    );
    if let Some(power) = properties.objective_power.filter(|p| *p > 0.0) {
        path.decimals(tag::OBJECTIVE_LENS_POWER, "DS", &[power]);
    }
    data.sequence(tag::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared])
        .sequence(tag::TOTAL_PIXEL_MATRIX_ORIGIN_SEQUENCE, vec![origin])
        // Rows run along the slide's -Y axis and columns along its -X axis: the label (never
        // served) at the left, as slide scanners image it.
        .decimals(
            tag::IMAGE_ORIENTATION_SLIDE,
            "DS",
            &[0.0, -1.0, 0.0, -1.0, 0.0, 0.0],
        )
        .text(tag::FOCUS_METHOD, "CS", "AUTO")
        .text(tag::EXTENDED_DEPTH_OF_FIELD, "CS", "NO")
        .sequence(tag::OPTICAL_PATH_SEQUENCE, vec![path])
        .integer(tag::NUMBER_OF_OPTICAL_PATHS, "UL", 1)
        .integer(tag::TOTAL_PIXEL_MATRIX_FOCAL_PLANES, "UL", 1);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sets_are_dicom_json() {
        let mut data = DataSet::new();
        data.text(tag::MODALITY, "CS", "SM")
            .empty(tag::PATIENT_NAME, "PN")
            .text(tag::PATIENT_ID, "LO", "")
            .integer(tag::ROWS, "US", 240)
            .decimals(tag::PIXEL_SPACING, "DS", &[0.000_499, 1.0 / 3.0])
            .sequence(tag::OPTICAL_PATH_SEQUENCE, vec![code("1", "DCM", "one")]);
        let json = data.into_json();
        assert_eq!(
            json,
            serde_json::json!({
                "00080060": {"vr": "CS", "Value": ["SM"]},
                "00100010": {"vr": "PN"},
                "00100020": {"vr": "LO"},
                "00280010": {"vr": "US", "Value": [240]},
                "00280030": {"vr": "DS", "Value": [0.000499, 0.333333333]},
                "00480105": {"vr": "SQ", "Value": [{
                    "00080100": {"vr": "SH", "Value": ["1"]},
                    "00080102": {"vr": "SH", "Value": ["DCM"]},
                    "00080104": {"vr": "LO", "Value": ["one"]},
                }]},
            })
        );
        // Keys come in tag order.
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for value in [0.000_998_673_162_5, 123_456.789_012_3, 1e-7, -0.0] {
            let written = decimal(value).unwrap().to_string();
            assert!(written.len() <= 16, "{written}");
            assert!(!written.starts_with('-') || value < 0.0, "{written}");
        }
        assert_eq!(decimal(f64::NAN), None);
    }

    #[test]
    fn registration_times_are_utc_dates_and_times() {
        let at = |unix| When::of(unix).map(|w| (w.date, w.time));
        assert_eq!(at(0), Some(("19700101".into(), "000000".into())));
        assert_eq!(at(951_782_400), Some(("20000229".into(), "000000".into())));
        assert_eq!(
            at(1_700_000_000),
            Some(("20231114".into(), "221320".into()))
        );
        assert_eq!(at(-1), Some(("19691231".into(), "235959".into())));
        assert_eq!(at(i64::MAX / 2), None);
    }

    #[test]
    fn long_strings_are_clean_and_short() {
        assert_eq!(long_string("Aperio\\Leica\n"), "AperioLeica");
        assert_eq!(long_string(&"x".repeat(100)).len(), 64);
    }
}
