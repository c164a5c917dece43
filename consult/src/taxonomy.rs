//! Diagnosis taxonomies: labels with stable codes, and which taxonomy each organ uses.
//!
//! The built-in set (`taxonomies.toml`) ships a general benign/atypical/malignant/
//! non-diagnostic taxonomy and the gastric biopsy Group 1–5 classification; a deployment
//! may add taxonomies and organ mappings from its own file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConsultError;

const BUILT_IN: &str = include_str!("../taxonomies.toml");

/// One diagnosis label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Stable code (the training target).
    pub code: String,
    /// What pathologists read.
    pub name: String,
}

/// A named set of labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    /// Stable id, e.g. `gastric-group`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Labels in display order.
    pub labels: Vec<Label>,
}

impl Taxonomy {
    /// The label with `code`, if this taxonomy has it.
    pub fn label(&self, code: &str) -> Option<&Label> {
        self.labels.iter().find(|l| l.code == code)
    }

    /// The label with `code`, or the refusal naming the taxonomy.
    pub fn require_label(&self, code: &str) -> Result<&Label, ConsultError> {
        self.label(code).ok_or_else(|| {
            ConsultError::Invalid(format!(
                "{code:?} is not a label of the {} taxonomy",
                self.id
            ))
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaxonomyFile {
    default_taxonomy: Option<String>,
    #[serde(default)]
    taxonomy: Vec<Taxonomy>,
    #[serde(default)]
    organs: BTreeMap<String, String>,
}

/// Every taxonomy in force and the organ mapping.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Taxonomies {
    /// Taxonomies by id.
    pub taxonomies: BTreeMap<String, Taxonomy>,
    /// Organ (lower case) → taxonomy id.
    pub organs: BTreeMap<String, String>,
    /// Taxonomy of organs not mapped.
    pub default_taxonomy: String,
}

impl Taxonomies {
    /// The built-in taxonomies plus those of `extra` (a TOML file), if given.
    pub fn load(extra: Option<&Path>) -> Result<Self, ConsultError> {
        let mut all = Self::empty();
        all.merge(parse(BUILT_IN, "the built-in taxonomies")?)?;
        if let Some(path) = extra {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConsultError::Invalid(format!("cannot read taxonomy file {}: {e}", path.display()))
            })?;
            all.merge(parse(&text, &path.display().to_string())?)?;
        }
        Ok(all)
    }

    fn empty() -> Self {
        Self {
            taxonomies: BTreeMap::new(),
            organs: BTreeMap::new(),
            default_taxonomy: String::new(),
        }
    }

    fn merge(&mut self, file: TaxonomyFile) -> Result<(), ConsultError> {
        for taxonomy in file.taxonomy {
            let mut codes = std::collections::BTreeSet::new();
            for label in &taxonomy.labels {
                if !codes.insert(label.code.as_str()) {
                    return Err(ConsultError::Invalid(format!(
                        "taxonomy {} lists code {} twice",
                        taxonomy.id, label.code
                    )));
                }
            }
            if taxonomy.labels.is_empty() {
                return Err(ConsultError::Invalid(format!(
                    "taxonomy {} has no labels",
                    taxonomy.id
                )));
            }
            if let Some(old) = self.taxonomies.get(&taxonomy.id) {
                // Codes are training targets: a redefinition may add labels, never drop one.
                if let Some(lost) = old
                    .labels
                    .iter()
                    .find(|l| taxonomy.label(&l.code).is_none())
                {
                    return Err(ConsultError::Invalid(format!(
                        "taxonomy {} may not drop code {}",
                        taxonomy.id, lost.code
                    )));
                }
            }
            self.taxonomies.insert(taxonomy.id.clone(), taxonomy);
        }
        for (organ, id) in file.organs {
            self.organs.insert(organ.to_lowercase(), id);
        }
        if let Some(default) = file.default_taxonomy {
            self.default_taxonomy = default;
        }
        let dangling = self
            .organs
            .values()
            .chain(std::iter::once(&self.default_taxonomy))
            .find(|id| !self.taxonomies.contains_key(*id));
        if let Some(id) = dangling {
            return Err(ConsultError::Invalid(format!(
                "no taxonomy {id:?} is defined"
            )));
        }
        Ok(())
    }

    /// The taxonomy a case of `organ` uses.
    pub fn for_organ(&self, organ: &str) -> &Taxonomy {
        let id = self
            .organs
            .get(&organ.trim().to_lowercase())
            .unwrap_or(&self.default_taxonomy);
        // `merge` guarantees every mapped id exists.
        &self.taxonomies[id]
    }

    /// The taxonomy with `id`.
    pub fn get(&self, id: &str) -> Option<&Taxonomy> {
        self.taxonomies.get(id)
    }
}

fn parse(text: &str, origin: &str) -> Result<TaxonomyFile, ConsultError> {
    toml::from_str(text).map_err(|e| ConsultError::Invalid(format!("{origin}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_taxonomies_map_organs() {
        let all = Taxonomies::load(None).unwrap();
        assert_eq!(all.for_organ("Stomach").id, "gastric-group");
        assert_eq!(all.for_organ("colon").id, "general");
        let gastric = all.get("gastric-group").unwrap();
        assert_eq!(gastric.labels.len(), 5);
        assert!(gastric.label("GAS-G5").unwrap().name.contains("carcinoma"));
        assert!(all.get("general").unwrap().label("GEN-ND").is_some());
    }

    #[test]
    fn extra_files_add_but_never_drop_codes() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("t.toml");
        std::fs::write(
            &extra,
            "[[taxonomy]]\nid = \"colon\"\nname = \"Colon\"\nlabels = [{ code = \"COL-1\", name = \"One\" }]\n[organs]\ncolon = \"colon\"\n",
        )
        .unwrap();
        let all = Taxonomies::load(Some(&extra)).unwrap();
        assert_eq!(all.for_organ("colon").id, "colon");
        std::fs::write(
            &extra,
            "[[taxonomy]]\nid = \"general\"\nname = \"G\"\nlabels = [{ code = \"GEN-B\", name = \"B\" }]\n",
        )
        .unwrap();
        let err = Taxonomies::load(Some(&extra)).unwrap_err();
        assert!(err.to_string().contains("may not drop code GEN-A"), "{err}");
        std::fs::write(&extra, "[organs]\nskin = \"nope\"\n").unwrap();
        let err = Taxonomies::load(Some(&extra)).unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }
}
