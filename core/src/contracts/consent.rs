//! Reads of the `opt_outs` table, which consultation (`pathfed_consult::research`) owns and
//! writes: patients who refused research use, as their hospital's keyed hash. Consultation
//! checks it before queueing curation, and the research tier before it publishes anything.
//!
//! An opt-out finds a patient's cases only if both name the patient the same way, so the one
//! rule for what a typed patient id means is declared here, [`PatientId::normalise`], and both
//! sides (a case's creation and an opt-out) key the patient through it: Unicode NFKC (a
//! Japanese IME's full-width `ＡＢ１２３` is `AB123`), surrounding white space trimmed (the
//! ideographic space U+3000 included), and letter case folded to upper case where the
//! hospital says its ids ignore case ([`PatientIdCase`]).

use std::str::FromStr;

use sqlx::{AnyConnection, Row};
use unicode_normalization::UnicodeNormalization;

use crate::db::Db;
use crate::error::{CoreError, CoreResult};

/// Longest patient id accepted, in characters after normalisation.
pub const MAX_PATIENT_ID_CHARS: usize = 64;

/// Whether a hospital's patient ids distinguish letter case (a per-hospital setting, stored by
/// `accounts::{patient_id_case, set_patient_id_case}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatientIdCase {
    /// `ab123` and `AB123` are different patients (the default).
    #[default]
    Sensitive,
    /// `ab123` and `AB123` are one patient: ids are folded to upper case.
    Insensitive,
}

impl PatientIdCase {
    /// Both settings.
    pub const ALL: [PatientIdCase; 2] = [PatientIdCase::Sensitive, PatientIdCase::Insensitive];

    /// The stored (and command-line) name.
    pub fn as_str(self) -> &'static str {
        match self {
            PatientIdCase::Sensitive => "sensitive",
            PatientIdCase::Insensitive => "insensitive",
        }
    }
}

impl FromStr for PatientIdCase {
    type Err = CoreError;
    fn from_str(s: &str) -> CoreResult<Self> {
        PatientIdCase::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                CoreError::Invalid(format!(
                    "unknown patient id case {s:?} (sensitive or insensitive)"
                ))
            })
    }
}

/// A patient's local id in the one form a hospital keys it by: only [`PatientId::normalise`]
/// makes one, so nothing can hash or store an id that skipped the rule.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PatientId(String);

impl std::fmt::Debug for PatientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identifying: kept out of logs and panic messages.
        f.write_str("PatientId(…)")
    }
}

impl PatientId {
    /// Normalises an id as staff type it: NFKC, trimmed (U+3000 included: NFKC makes it a
    /// space), folded to upper case under [`PatientIdCase::Insensitive`]. Refuses an id that
    /// is then empty, longer than [`MAX_PATIENT_ID_CHARS`] or holds control characters.
    pub fn normalise(raw: &str, case: PatientIdCase) -> CoreResult<Self> {
        // Invisible formatting characters that survive NFKC (zero-width space and joiners, the
        // byte-order mark, direction marks) come with ids pasted from other systems.
        let composed: String = raw
            .nfkc()
            .filter(|c| {
                !matches!(
                    c,
                    '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}' | '\u{FEFF}'
                )
            })
            .collect();
        let trimmed = composed.trim();
        let id = match case {
            PatientIdCase::Sensitive => trimmed.to_string(),
            // NFKC again: a few upper-case mappings leave the normal form.
            PatientIdCase::Insensitive => trimmed.to_uppercase().nfkc().collect(),
        };
        if id.is_empty() {
            return Err(CoreError::Invalid("patient id is required".into()));
        }
        if id.chars().count() > MAX_PATIENT_ID_CHARS || id.chars().any(char::is_control) {
            return Err(CoreError::Invalid(format!(
                "patient id must be at most {MAX_PATIENT_ID_CHARS} printable characters"
            )));
        }
        Ok(Self(id))
    }

    /// The normalised id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A patient who opted out of research use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OptedOut {
    /// The patient's hospital.
    pub hospital_id: String,
    /// The hospital's keyed hash of the patient id.
    pub patient_hash: String,
}

/// Whether the patient opted out, read on `conn` so it can share the caller's transaction.
pub async fn is_opted_out(
    conn: &mut AnyConnection,
    hospital_id: &str,
    patient_hash: &str,
) -> CoreResult<bool> {
    Ok(
        sqlx::query("SELECT 1 AS one FROM opt_outs WHERE hospital_id = $1 AND patient_hash = $2")
            .bind(hospital_id)
            .bind(patient_hash)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// Every patient who opted out.
pub async fn all(db: &Db) -> CoreResult<Vec<OptedOut>> {
    let rows = sqlx::query("SELECT hospital_id, patient_hash FROM opt_outs")
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OptedOut {
                hospital_id: row.try_get("hospital_id")?,
                patient_hash: row.try_get("patient_hash")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensitive(raw: &str) -> String {
        PatientId::normalise(raw, PatientIdCase::Sensitive)
            .map(|id| id.as_str().to_string())
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    fn insensitive(raw: &str) -> String {
        PatientId::normalise(raw, PatientIdCase::Insensitive)
            .map(|id| id.as_str().to_string())
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn full_width_and_ideographic_spaces_type_the_same_id() {
        assert_eq!(sensitive("ＡＢ１２３"), "AB123");
        assert_eq!(sensitive("１２３４５"), "12345");
        assert_eq!(sensitive("\u{3000} AB123\u{3000}\t"), "AB123");
        // Pasted from another system with invisible marks.
        assert_eq!(sensitive("\u{FEFF}AB\u{200B}123\u{200E}"), "AB123");
        assert_eq!(sensitive("ＭＲＮ－００４２"), "MRN-0042");
        // Half-width katakana becomes full-width, as NFKC defines.
        assert_eq!(sensitive("ｶﾀｶﾅ"), "カタカナ");
        // Inner spaces are part of the id.
        assert_eq!(sensitive("AB 123"), "AB 123");
    }

    #[test]
    fn case_is_folded_only_where_the_hospital_says_so() {
        assert_eq!(sensitive("ab123"), "ab123");
        assert_ne!(sensitive("ab123"), sensitive("AB123"));
        assert_eq!(insensitive("ab123"), "AB123");
        assert_eq!(insensitive("ａｂ１２３"), insensitive("AB123"));
        assert_eq!(PatientIdCase::default(), PatientIdCase::Sensitive);
        for case in PatientIdCase::ALL {
            assert_eq!(case.as_str().parse::<PatientIdCase>().ok(), Some(case));
        }
        assert!("upper".parse::<PatientIdCase>().is_err());
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for raw in ["ＡＢ１２３", " ab-12 ", "ß-ﬁ-１", "Ǆ12", "ｶﾀｶﾅ"] {
            for case in PatientIdCase::ALL {
                let once = PatientId::normalise(raw, case).map(|id| id.as_str().to_string());
                let twice = once
                    .as_deref()
                    .map(|id| PatientId::normalise(id, case).map(|id| id.as_str().to_string()));
                match (once.as_ref(), twice) {
                    (Ok(once), Ok(Ok(twice))) => assert_eq!(once, &twice, "{raw:?} {case:?}"),
                    other => panic!("{raw:?} {case:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn empty_long_and_control_ids_are_refused() {
        for raw in ["", "  ", "\u{3000}", "a\u{7}b"] {
            assert!(
                PatientId::normalise(raw, PatientIdCase::Sensitive).is_err(),
                "{raw:?}"
            );
        }
        let long = "1".repeat(MAX_PATIENT_ID_CHARS + 1);
        assert!(PatientId::normalise(&long, PatientIdCase::Sensitive).is_err());
        // Full-width digits count once each, as their ASCII forms.
        let full = "１".repeat(MAX_PATIENT_ID_CHARS);
        assert!(PatientId::normalise(&full, PatientIdCase::Sensitive).is_ok());
        assert_eq!(format!("{:?}", PatientId("AB123".into())), "PatientId(…)");
    }
}
