//! Validation of an uploaded slide in a child process.
//!
//! The server never parses an untrusted upload itself: it runs `pathfed slide validate` on the
//! staged file with an address-space limit and a deadline. The child opens the slide through
//! the same readers the viewer uses, decodes a region of the full-resolution level and renders
//! the thumbnail, then prints a [`ValidationReport`] (or a [`ValidationFailure`]) as JSON. A
//! hostile file that makes the child crash, loop or balloon costs only the child.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use pathfed_core::SlideLimits;
use pathfed_core::config::IngestConfig;
use pathfed_core::http::ApiError;
use serde::{Deserialize, Serialize};

/// Longest side of the stored thumbnail.
pub const THUMBNAIL_SIDE: u32 = 512;
/// Properties kept per slide, and the longest value kept.
const MAX_PROPERTIES: usize = 500;
const MAX_PROPERTY_CHARS: usize = 4096;

/// What the child learned about a valid slide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Format as detected from the bytes.
    pub format: String,
    /// Vendor as the reader names it.
    pub vendor: String,
    /// Level-0 width.
    pub width: u64,
    /// Level-0 height.
    pub height: u64,
    /// Pyramid levels.
    pub levels: u64,
    /// Micrometres per pixel.
    pub mpp_x: Option<f64>,
    /// Micrometres per pixel.
    pub mpp_y: Option<f64>,
    /// Scanner objective.
    pub objective_power: Option<f64>,
    /// Whether a label image exists.
    pub has_label: bool,
    /// Vendor properties (bounded).
    pub properties: BTreeMap<String, String>,
}

/// Why the child refused a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationFailure {
    /// Stable code (`not_a_slide`, `invalid_slide`, `over_limits`, `unsupported`).
    pub code: String,
    /// What is wrong, for the uploader.
    pub message: String,
}

/// Runs in the child: opens `file`, checks it can be decoded, writes the thumbnail JPEG.
pub fn validate_here(
    file: &Path,
    limits: &SlideLimits,
    thumbnail_out: &Path,
) -> Result<ValidationReport, ValidationFailure> {
    use pathfed_slide::SlideError;
    let fail = |e: SlideError| {
        let code = match &e {
            SlideError::NotASlide(_) => "not_a_slide",
            SlideError::LimitExceeded { .. } => "over_limits",
            SlideError::Unsupported(_) => "unsupported",
            _ => "invalid_slide",
        };
        ValidationFailure {
            code: code.into(),
            message: e.to_string(),
        }
    };
    let format = match pathfed_slide::detect(file, limits).map_err(fail)? {
        pathfed_slide::Detected::FastPath(kind) => format!("{kind:?}").to_ascii_lowercase(),
        pathfed_slide::Detected::OpenSlide(vendor) => vendor,
        pathfed_slide::Detected::Dicom => "dicom".to_string(),
    };
    let reader = pathfed_slide::open(file, limits).map_err(fail)?;
    let props = reader.properties().clone();
    let (width, height) = props.dimensions();
    // Decoding a full-resolution region and the thumbnail touches both ends of the pyramid:
    // truncated or corrupt tile data fails here rather than in a pathologist's viewer.
    let (w, h) = (width.min(512) as u32, height.min(512) as u32);
    reader
        .read_region(
            0,
            (width - u64::from(w)) / 2,
            (height - u64::from(h)) / 2,
            w,
            h,
        )
        .map_err(fail)?;
    let thumb =
        pathfed_slide::thumbnail::thumbnail(reader.as_ref(), THUMBNAIL_SIDE).map_err(fail)?;
    let jpeg = pathfed_slide::jpeg::encode_rgb(&thumb, 85).map_err(fail)?;
    std::fs::write(thumbnail_out, jpeg).map_err(|e| ValidationFailure {
        code: "internal".into(),
        message: format!("writing the thumbnail: {e}"),
    })?;
    let has_label = props.associated_images.iter().any(|a| a.name == "label")
        && reader.associated_image("label").is_ok();
    let properties = props
        .raw
        .iter()
        .take(MAX_PROPERTIES)
        .map(|(k, v)| (k.clone(), v.chars().take(MAX_PROPERTY_CHARS).collect()))
        .collect();
    Ok(ValidationReport {
        format,
        vendor: props.vendor.clone(),
        width,
        height,
        levels: props.levels.len() as u64,
        mpp_x: props.mpp_x,
        mpp_y: props.mpp_y,
        objective_power: props.objective_power,
        has_label,
        properties,
    })
}

/// Caps this process's address space (called first thing in the child).
pub fn limit_own_memory(megabytes: u64) -> std::io::Result<()> {
    let bytes = megabytes.saturating_mul(1 << 20);
    rlimit::setrlimit(rlimit::Resource::AS, bytes, bytes)
}

/// Runs the validator executable on `file` and interprets its answer.
pub async fn validate_in_child(
    validator: &Path,
    file: &Path,
    thumbnail_out: &Path,
    limits: &SlideLimits,
    config: &IngestConfig,
) -> Result<ValidationReport, ApiError> {
    let limits_json = serde_json::to_string(limits).map_err(ApiError::internal)?;
    let mut command = tokio::process::Command::new(validator);
    command
        .args(["slide", "validate", "--json", "--max-memory-mb"])
        .arg(config.validation_memory_mb.to_string())
        .arg("--limits-json")
        .arg(limits_json)
        .arg("--thumbnail")
        .arg(thumbnail_out)
        .arg(file)
        .env("PATHFED_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().map_err(ApiError::internal)?;
    let deadline = Duration::from_secs(config.validation_timeout_s);
    let output = match tokio::time::timeout(deadline, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(ApiError::internal(e)),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_timeout",
                format!(
                    "the slide could not be checked within {} s",
                    config.validation_timeout_s
                ),
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        return serde_json::from_str(stdout.trim()).map_err(ApiError::internal);
    }
    if let Ok(failure) = serde_json::from_str::<ValidationFailure>(stdout.trim()) {
        let code: &'static str = match failure.code.as_str() {
            "not_a_slide" => "not_a_slide",
            "over_limits" => "over_limits",
            "unsupported" => "unsupported_format",
            "internal" => return Err(ApiError::internal(failure.message)),
            _ => "invalid_slide",
        };
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            failure.message,
        ));
    }
    tracing::warn!(
        status = %output.status,
        stderr = %String::from_utf8_lossy(&output.stderr),
        "slide validator failed without a verdict"
    );
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_slide",
        "the file could not be read as a slide (the validator ran out of memory or crashed)",
    ))
}
