//! What a report states ([`ReportContent`] and its parts) and its hash: built by `report`,
//! rendered by `render`, so neither file needs the other for it. Re-exported from `report`,
//! the public path.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// A slide as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSlide {
    /// Slide id.
    pub id: String,
    /// Uploaded file name.
    pub filename: String,
    /// Width in pixels.
    pub width: i64,
    /// Height in pixels.
    pub height: i64,
    /// Microns per pixel, if known.
    pub mpp: Option<f64>,
}

/// A per-slide diagnosis with its label spelled out.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSlideRead {
    /// Slide id.
    pub slide_id: String,
    /// Label name, if a code was given.
    pub label: Option<String>,
    /// Code, if given.
    pub code: Option<String>,
    /// Findings.
    pub findings: String,
}

/// A read as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRead {
    /// "First" or "Second (double-check)".
    pub kind_name: String,
    /// Reader's user name.
    pub reader: String,
    /// Code.
    pub code: String,
    /// Label name.
    pub label: String,
    /// Findings.
    pub findings: String,
    /// Per-slide diagnoses.
    pub slides: Vec<ReportSlideRead>,
    /// When entered.
    pub entered_at: i64,
}

/// The final diagnosis.
#[derive(Debug, Clone, Serialize)]
pub struct FinalDiagnosis {
    /// Code.
    pub code: String,
    /// Label name.
    pub label: String,
    /// Findings.
    pub findings: String,
    /// Who recorded it after adjudication or amendment (none when the reads agreed).
    pub decided_by: Option<String>,
    /// Adjudication note.
    pub note: String,
}

/// Everything a report states; its canonical JSON is what the report hash covers.
#[derive(Debug, Clone, Serialize)]
pub struct ReportContent {
    /// Format tag, so a later layout change is recognisable.
    pub format: &'static str,
    /// Case id.
    pub case_id: String,
    /// Report version (1 = first sign-out).
    pub version: i64,
    /// Hash of the version this one replaces.
    pub supersedes_hash: Option<String>,
    /// Why it was amended.
    pub amendment_reason: Option<String>,
    /// Submitting hospital.
    pub spoke: String,
    /// Reading hospital.
    pub hub: String,
    /// The patient's local id (decrypted for the report).
    pub patient_id: String,
    /// Age band.
    pub age_band: String,
    /// Sex.
    pub sex: String,
    /// Organ.
    pub organ: String,
    /// Specimen.
    pub specimen: String,
    /// Clinical question.
    pub clinical_question: String,
    /// Urgency.
    pub urgency: String,
    /// Submitted at.
    pub submitted_at: i64,
    /// Taxonomy id.
    pub taxonomy: String,
    /// Slides.
    pub slides: Vec<ReportSlide>,
    /// Both reads.
    pub reads: Vec<ReportRead>,
    /// Whether the reads agreed.
    pub concordant: bool,
    /// The final diagnosis.
    pub final_diagnosis: FinalDiagnosis,
    /// Who signed.
    pub signed_by: String,
    /// When.
    pub signed_at: i64,
}

impl ReportContent {
    /// SHA-256 (hex) of the canonical JSON.
    pub fn hash(&self) -> String {
        // Serialising a struct of strings and numbers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }
}
