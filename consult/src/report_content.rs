//! What a report states ([`ReportContent`] and its parts) and its hash: built by `report`,
//! rendered by `render`, so neither file needs the other for it. Re-exported from `report`,
//! the public path.
//!
//! The hash covers the canonical JSON of [`ReportContent`], so any change to what is stated
//! changes the format tag ([`REPORT_FORMAT`]). Versions issued under an earlier format keep the
//! hash recorded when they were issued (`case_reports`), which is what verification compares;
//! nothing re-hashes a stored report.

use pathfed_core::locale::Lang;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::reads::ReadKind;

/// The format tag of reports issued now. `pathfed-report/1` had English labels, user names
/// and times in UTC; `/2` adds the hub's language and time zone, people's full names and
/// qualifications, and slide labels.
pub const REPORT_FORMAT: &str = "pathfed-report/2";

/// A person as a report names them.
#[derive(Debug, Clone, Serialize)]
pub struct ReportPerson {
    /// Sign-in name (stable, for audit).
    pub username: String,
    /// Full name as printed (the user name when none is registered).
    pub name: String,
    /// Qualification as registered (e.g. 病理専門医), if any.
    pub qualification: Option<String>,
}

/// A slide as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSlide {
    /// Slide id.
    pub id: String,
    /// The specimen/block label the case gives it (e.g. `A1`), if any.
    pub label: Option<String>,
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
    /// Diagnosis label in the report's language, if a code was given.
    pub label: Option<String>,
    /// Code, if given.
    pub code: Option<String>,
    /// Findings.
    pub findings: String,
}

/// A read as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportRead {
    /// First read or the blind double-check.
    pub kind: ReadKind,
    /// Who read.
    pub reader: ReportPerson,
    /// Code.
    pub code: String,
    /// Diagnosis label in the report's language.
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
    /// Diagnosis label in the report's language.
    pub label: String,
    /// Findings.
    pub findings: String,
    /// Who recorded it after adjudication or amendment (none when the reads agreed).
    pub decided_by: Option<ReportPerson>,
    /// Adjudication note.
    pub note: String,
}

/// Everything a report states; its canonical JSON is what the report hash covers.
#[derive(Debug, Clone, Serialize)]
pub struct ReportContent {
    /// Format tag ([`REPORT_FORMAT`]), so a later layout change is recognisable.
    pub format: &'static str,
    /// The language of the report: the reading hospital's.
    pub language: Lang,
    /// The time zone its dates are printed in: the reading hospital's (IANA name).
    pub time_zone: String,
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
    /// Age band, as stored (`60-69`, `90+`, `unknown`).
    pub age_band: String,
    /// Sex, as stored (`female`, `male`, `other`, `unknown`).
    pub sex: String,
    /// Organ.
    pub organ: String,
    /// Specimen.
    pub specimen: String,
    /// Clinical question.
    pub clinical_question: String,
    /// Urgency (`routine` or `urgent`).
    pub urgency: String,
    /// Received: when the spoke submitted the case.
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
    /// Who signed (issued) this version.
    pub signed_by: ReportPerson,
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

    /// The first read (the diagnosing pathologist's), if present.
    pub fn primary_read(&self) -> Option<&ReportRead> {
        self.reads.iter().find(|r| r.kind == ReadKind::Primary)
    }

    /// The double-check read, if present.
    pub fn second_read(&self) -> Option<&ReportRead> {
        self.reads.iter().find(|r| r.kind == ReadKind::Second)
    }

    /// The slide with `id`, if the report lists it.
    pub fn slide(&self, id: &str) -> Option<&ReportSlide> {
        self.slides.iter().find(|s| s.id == id)
    }
}
