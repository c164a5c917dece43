//! Dataset versions: which research slides, with which labels, in which split.
//!
//! A version is built from the live research slides that match a filter, minus every patient
//! who has opted out, then protected against small cells (decided over the whole research
//! tier, in patients: see [`crate::anonymity`]) and split by patient. The manifest's content
//! hash covers everything but the name, version and time, so the same slides, labels,
//! parameters, seed and research tier always give the same hash.

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, DatasetResult};
use crate::patches::ExtractParams;

/// What a dataset version asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionParams {
    /// Only slides of this organ (`None`: every organ).
    #[serde(default)]
    pub organ: Option<String>,
    /// The taxonomy whose codes are the labels (slides of other taxonomies are left out).
    pub labels: String,
    /// Seed of the patient shuffle.
    #[serde(default = "default_seed")]
    #[schema(default = default_seed)]
    pub seed: u64,
    /// Fractions of patients in (train, validation, test), per stratum.
    #[serde(default = "default_fractions")]
    #[schema(default = default_fractions)]
    pub fractions: [f64; 3],
    /// Smallest published group, in distinct patients sharing a label and quasi-identifiers:
    /// at least the platform's minimum cell size (`research.min_cell_size`, which only the
    /// platform's operator sets), which is also what `null` takes. A smaller value is refused
    /// (400, `min_cell_size_below_floor`). A larger one protects this version alone at that
    /// size; joins with other versions are protected at the platform's minimum.
    #[serde(default)]
    pub min_cell_size: Option<u64>,
    /// Patch extraction (`null`: a version of slides only, published at once).
    #[serde(default = "default_extraction")]
    pub extraction: Option<ExtractParams>,
}

fn default_extraction() -> Option<ExtractParams> {
    Some(ExtractParams::default())
}

fn default_seed() -> u64 {
    1
}

fn default_fractions() -> [f64; 3] {
    [0.7, 0.15, 0.15]
}

impl VersionParams {
    /// Refuses parameters that cannot make a sensible version.
    pub fn check(&self) -> DatasetResult<()> {
        let sum: f64 = self.fractions.iter().sum();
        if self.fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || (sum - 1.0).abs() > 1e-6 {
            return Err(DatasetError::Invalid(format!(
                "split fractions {:?} must be within 0–1 and sum to 1",
                self.fractions
            )));
        }
        if self.labels.trim().is_empty() {
            return Err(DatasetError::Invalid("labels: name a taxonomy".into()));
        }
        if self.min_cell_size == Some(0) {
            return Err(DatasetError::Invalid(
                "min_cell_size must be at least 1".into(),
            ));
        }
        if let Some(extraction) = &self.extraction {
            extraction.check()?;
        }
        Ok(())
    }
}

/// A research slide as the builder sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Research slide id.
    pub id: String,
    /// Research patient id.
    pub patient: String,
    /// Slide-level label (taxonomy code).
    pub label: String,
    /// Quasi-identifiers, generalised where a cell was small.
    pub quasi: Quasi,
    /// Object key of the research slide.
    pub object_key: String,
    /// SHA-256 of the research slide.
    pub sha256: String,
    /// Level-0 width and height.
    pub dimensions: (u64, u64),
    /// Micrometres per pixel (x, y), if known.
    pub mpp: Option<(f64, f64)>,
    /// Labelled regions (see [`crate::curate::Region`]).
    pub regions: serde_json::Value,
    /// AI results that disagreed with the final diagnosis (`[{model, version, predicted}]`),
    /// so a version's users can review or weight the slide; absent where none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_discordant: Option<serde_json::Value>,
}

/// The attributes a re-identification could combine.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quasi {
    /// Age band ("60-69"), or "any" once generalised.
    pub age_band: String,
    /// Sex, or "any" once generalised.
    pub sex: String,
    /// Research hospital id, or "any" once generalised.
    pub hospital: String,
    /// Year of sign-out, or "any" once generalised.
    pub year: String,
}

/// A slide of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The slide.
    #[serde(flatten)]
    pub slide: Candidate,
    /// "train", "val" or "test".
    pub split: String,
}

/// What small-cell protection did (see [`crate::anonymity`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmallCells {
    /// The minimum group size applied, in distinct patients (never below the platform's).
    pub min_cell_size: u64,
    /// The smallest group published (label and quasi-identifiers), in distinct patients.
    pub smallest_published: u64,
    /// Slides whose quasi-identifiers were generalised.
    pub generalised: u64,
    /// Slides left out because even generalised their group was too small.
    pub suppressed: u64,
}

/// The manifest's hashed content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// The parameters asked for.
    pub params: VersionParams,
    /// How research slides were made (de-identification parameters).
    pub curation: serde_json::Value,
    /// Where the patches are and each slide's extraction QC, when extracted.
    pub extraction: Option<serde_json::Value>,
    /// Slides in id order.
    pub slides: Vec<Entry>,
    /// Slides per split and label.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Small-cell protection.
    pub small_cells: SmallCells,
    /// Research patients left out because they opted out since curation.
    pub opted_out_excluded: u64,
}

/// A dataset version's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Dataset name.
    pub dataset: String,
    /// Version number.
    pub version: i64,
    /// When built (Unix seconds).
    pub created_at: i64,
    /// SHA-256 of the canonical JSON of `content`.
    pub content_hash: String,
    /// Everything the hash covers.
    pub content: Content,
    /// Entries withdrawn since publication (their patients opted out, or they were retired),
    /// by id only: the stored manifest keeps nothing else of them, while `content_hash` still
    /// names the version as it was published.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<String>,
}

impl Content {
    /// SHA-256 (hex) of the canonical JSON (serde_json writes struct fields in order and maps sorted).
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// Splits by patient, stratified by each patient's most frequent label, reproducibly for a seed.
pub fn split_by_patient(slides: Vec<Candidate>, fractions: [f64; 3], seed: u64) -> Vec<Entry> {
    let mut by_patient: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for s in slides {
        by_patient.entry(s.patient.clone()).or_default().push(s);
    }
    let mut strata: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (patient, slides) in &by_patient {
        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        for s in slides {
            *tally.entry(&s.label).or_default() += 1;
        }
        // Most frequent label; ties go to the smallest code, so the choice is deterministic.
        let stratum = tally
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(label, _)| (*label).to_string())
            .unwrap_or_default();
        strata.entry(stratum).or_default().push(patient.clone());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut split_of: BTreeMap<String, &'static str> = BTreeMap::new();
    for patients in strata.values_mut() {
        patients.shuffle(&mut rng);
        let n = patients.len() as f64;
        let n_val = (n * fractions[1]).round() as usize;
        let n_test = (n * fractions[2]).round() as usize;
        for (i, patient) in patients.iter().enumerate() {
            let split = if i < n_test {
                "test"
            } else if i < n_test + n_val {
                "val"
            } else {
                "train"
            };
            split_of.insert(patient.clone(), split);
        }
    }
    let mut entries: Vec<Entry> = by_patient
        .into_values()
        .flatten()
        .map(|slide| Entry {
            split: split_of
                .get(&slide.patient)
                .copied()
                .unwrap_or("train")
                .to_string(),
            slide,
        })
        .collect();
    entries.sort_by(|a, b| a.slide.id.cmp(&b.slide.id));
    entries
}

/// Slides per split and label.
pub fn count(entries: &[Entry]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for e in entries {
        *counts
            .entry(e.split.clone())
            .or_default()
            .entry(e.slide.label.clone())
            .or_default() += 1;
    }
    counts
}

/// What changed between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Diff {
    /// Slides only in the newer version.
    pub added: Vec<String>,
    /// Slides only in the older version.
    pub removed: Vec<String>,
    /// Slides whose label changed: `[id, old, new]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub relabelled: Vec<(String, String, String)>,
    /// Slides whose split changed: `[id, old, new]`.
    #[schema(value_type = Vec<Vec<String>>)]
    pub moved: Vec<(String, String, String)>,
    /// Whether the parameters differ.
    pub params_changed: bool,
}

/// Compares two manifests.
pub fn diff(old: &Manifest, new: &Manifest) -> Diff {
    let index = |m: &Manifest| -> BTreeMap<String, Entry> {
        m.content
            .slides
            .iter()
            .map(|e| (e.slide.id.clone(), e.clone()))
            .collect()
    };
    let (a, b) = (index(old), index(new));
    let ids: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut d = Diff {
        added: Vec::new(),
        removed: Vec::new(),
        relabelled: Vec::new(),
        moved: Vec::new(),
        params_changed: old.content.params != new.content.params,
    };
    for id in ids {
        match (a.get(id), b.get(id)) {
            (None, Some(_)) => d.added.push(id.clone()),
            (Some(_), None) => d.removed.push(id.clone()),
            (Some(x), Some(y)) => {
                if x.slide.label != y.slide.label {
                    d.relabelled
                        .push((id.clone(), x.slide.label.clone(), y.slide.label.clone()));
                }
                if x.split != y.split {
                    d.moved.push((id.clone(), x.split.clone(), y.split.clone()));
                }
            }
            (None, None) => {}
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: usize, patient: usize, label: &str, age: &str) -> Candidate {
        Candidate {
            id: format!("rs-{id:04}"),
            patient: format!("rp-{patient:04}"),
            label: label.into(),
            quasi: Quasi {
                age_band: age.into(),
                sex: "female".into(),
                hospital: "rh-1".into(),
                year: "2026".into(),
            },
            object_key: String::new(),
            sha256: String::new(),
            dimensions: (1, 1),
            mpp: None,
            regions: serde_json::Value::Null,
            ai_discordant: None,
        }
    }

    /// 60 patients, 1–3 slides each, two labels.
    fn cohort() -> Vec<Candidate> {
        let mut slides = Vec::new();
        let mut id = 0;
        for patient in 0..60 {
            for _ in 0..=(patient % 3) {
                let label = if patient % 2 == 0 { "GAS-G1" } else { "GAS-G5" };
                slides.push(candidate(id, patient, label, "60-69"));
                id += 1;
            }
        }
        slides
    }

    #[test]
    fn every_patient_lies_in_one_split_and_strata_are_balanced() {
        let entries = split_by_patient(cohort(), [0.7, 0.15, 0.15], 7);
        let mut split_of: BTreeMap<&str, &str> = BTreeMap::new();
        for e in &entries {
            let previous = split_of.insert(&e.slide.patient, &e.split);
            assert!(
                previous.is_none_or(|p| p == e.split),
                "patient {} in two splits",
                e.slide.patient
            );
        }
        assert_eq!(entries.len(), cohort().len());
        // 30 patients per label: 5 test, 5 validation, 20 train each.
        for label in ["GAS-G1", "GAS-G5"] {
            let patients = |split: &str| {
                entries
                    .iter()
                    .filter(|e| e.split == split && e.slide.label == label)
                    .map(|e| e.slide.patient.as_str())
                    .collect::<BTreeSet<_>>()
                    .len()
            };
            assert_eq!(
                (patients("train"), patients("val"), patients("test")),
                (20, 5, 5),
                "{label}"
            );
        }
    }

    #[test]
    fn a_fixed_seed_gives_the_same_split_and_another_seed_does_not() {
        let a = split_by_patient(cohort(), [0.7, 0.15, 0.15], 7);
        let b = split_by_patient(cohort().into_iter().rev().collect(), [0.7, 0.15, 0.15], 7);
        let c = split_by_patient(cohort(), [0.7, 0.15, 0.15], 8);
        assert_eq!(a, b, "input order does not matter");
        assert_ne!(a, c);
    }
}
