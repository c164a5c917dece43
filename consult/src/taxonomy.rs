//! Diagnosis taxonomies: labels with stable codes, and which taxonomy each organ uses.
//!
//! The built-in set (`taxonomies.toml`) ships a general benign/atypical/malignant/
//! non-diagnostic taxonomy and the gastric biopsy Group 1–5 classification; a deployment
//! may add taxonomies and organ mappings from its own file.
//!
//! Every taxonomy and label reads in Japanese and English (`name_ja`/`name_en`,
//! `label_ja`/`label_en`). A file may give them; the built-in codes' Japanese comes from
//! `LABELS_JA`, keyed by code, since a code means the same wherever it appears; what is
//! still missing falls back to `name`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use pathfed_core::locale::Lang;
use serde::{Deserialize, Serialize};

use crate::error::ConsultError;

const BUILT_IN: &str = include_str!("../taxonomies.toml");

/// Japanese names of the built-in taxonomies, by id.
const TAXONOMIES_JA: &[(&str, &str)] = &[
    ("general", "一般分類（良性／異型／悪性／判定不能）"),
    ("gastric-group", "胃生検 Group 分類"),
];

/// Japanese labels of the built-in codes, as Japanese pathologists write them; the gastric
/// Group classification in the wording of the Japanese Classification of Gastric Carcinoma
/// (胃癌取扱い規約).
const LABELS_JA: &[(&str, &str)] = &[
    ("GEN-B", "良性"),
    ("GEN-A", "異型（良悪性鑑別困難）"),
    ("GEN-M", "悪性"),
    ("GEN-ND", "判定不能（検体不適正）"),
    ("GAS-G1", "Group 1（正常組織および非腫瘍性病変）"),
    ("GAS-G2", "Group 2（腫瘍性か非腫瘍性か判断の困難な病変）"),
    ("GAS-G3", "Group 3（腺腫）"),
    (
        "GAS-G4",
        "Group 4（腫瘍と判定される病変のうち、癌が疑われる病変）",
    ),
    ("GAS-G5", "Group 5（癌）"),
];

fn built_in_ja(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, ja)| *ja)
}

/// `value` unless blank, else `fallback`.
fn filled(value: &str, fallback: &str) -> String {
    if value.trim().is_empty() {
        fallback.to_string()
    } else {
        value.trim().to_string()
    }
}

/// One diagnosis label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Stable code (the training target).
    pub code: String,
    /// What pathologists read (the English label for the built-in codes).
    pub name: String,
    /// The label in Japanese.
    #[serde(default)]
    pub label_ja: String,
    /// The label in English.
    #[serde(default)]
    pub label_en: String,
}

impl Label {
    /// The label in `lang` (`name` where that language was not given).
    pub fn in_lang(&self, lang: Lang) -> &str {
        let text = match lang {
            Lang::Ja => &self.label_ja,
            Lang::En => &self.label_en,
        };
        if text.trim().is_empty() {
            &self.name
        } else {
            text
        }
    }
}

/// A named set of labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    /// Stable id, e.g. `gastric-group`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The name in Japanese.
    #[serde(default)]
    pub name_ja: String,
    /// The name in English.
    #[serde(default)]
    pub name_en: String,
    /// Labels in display order.
    pub labels: Vec<Label>,
}

impl Taxonomy {
    /// The taxonomy's name in `lang` (`name` where that language was not given).
    pub fn name_in(&self, lang: Lang) -> &str {
        let text = match lang {
            Lang::Ja => &self.name_ja,
            Lang::En => &self.name_en,
        };
        if text.trim().is_empty() {
            &self.name
        } else {
            text
        }
    }

    /// Fills both languages: what the file gave, else the built-in Japanese of the id or code.
    /// A name or label with no Japanese is refused, naming each one: the platform shows every
    /// code in both languages.
    fn localise(&mut self) -> Result<(), ConsultError> {
        let mut missing = Vec::new();
        let ja = built_in_ja(TAXONOMIES_JA, &self.id).unwrap_or_default();
        self.name_ja = filled(&self.name_ja, ja);
        if self.name_ja.trim().is_empty() {
            missing.push("name_ja".to_string());
        }
        self.name_en = filled(&self.name_en, &self.name);
        for label in &mut self.labels {
            let ja = built_in_ja(LABELS_JA, &label.code).unwrap_or_default();
            label.label_ja = filled(&label.label_ja, ja);
            if label.label_ja.trim().is_empty() {
                missing.push(format!("label_ja of {}", label.code));
            }
            label.label_en = filled(&label.label_en, &label.name);
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConsultError::Invalid(format!(
                "taxonomy {} has no Japanese for: {}",
                self.id,
                missing.join(", ")
            )))
        }
    }

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
        *IN_FORCE.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(all.clone()));
        Ok(all)
    }

    /// The built-in taxonomies alone, parsed once.
    fn built_in() -> Option<&'static Self> {
        static BUILT_IN_SET: OnceLock<Option<Taxonomies>> = OnceLock::new();
        BUILT_IN_SET
            .get_or_init(|| {
                let mut all = Self::empty();
                all.merge(parse(BUILT_IN, "the built-in taxonomies").ok()?)
                    .ok()?;
                Some(all)
            })
            .as_ref()
    }

    fn empty() -> Self {
        Self {
            taxonomies: BTreeMap::new(),
            organs: BTreeMap::new(),
            default_taxonomy: String::new(),
        }
    }

    fn merge(&mut self, file: TaxonomyFile) -> Result<(), ConsultError> {
        for mut taxonomy in file.taxonomy {
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
            taxonomy.localise()?;
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

    /// The taxonomy a case of `organ` uses: the mapping of the organ as written, else of the
    /// organ list's code it names (so `胃` and `Stomach` map as `stomach` does).
    pub fn for_organ(&self, organ: &str) -> &Taxonomy {
        let written = organ.trim().to_lowercase();
        let id = self
            .organs
            .get(&written)
            .or_else(|| crate::organs::code_of(&written).and_then(|code| self.organs.get(code)))
            .unwrap_or(&self.default_taxonomy);
        // `merge` guarantees every mapped id exists.
        &self.taxonomies[id]
    }

    /// The taxonomy with `id`.
    pub fn get(&self, id: &str) -> Option<&Taxonomy> {
        self.taxonomies.get(id)
    }

    /// The label of `code` in taxonomy `taxonomy_id`, in `lang`, if both exist.
    pub fn label_in(&self, taxonomy_id: &str, code: &str, lang: Lang) -> Option<String> {
        let label = self.get(taxonomy_id)?.label(code)?;
        Some(label.in_lang(lang).to_string())
    }
}

/// The taxonomies the last successful [`Taxonomies::load`] produced: the process's own set (the
/// server loads it once at start), so [`label_in`] also knows a deployment's taxonomies.
static IN_FORCE: RwLock<Option<Arc<Taxonomies>>> = RwLock::new(None);

/// The label of `code` in taxonomy `taxonomy_id`, in `lang` (`GAS-G5` in Japanese is
/// `Group 5（癌）`): from the taxonomies this process loaded, else the built-in ones. `None`
/// for an unknown taxonomy or code.
pub fn label_in(taxonomy_id: &str, code: &str, lang: Lang) -> Option<String> {
    let in_force = IN_FORCE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    in_force
        .and_then(|all| all.label_in(taxonomy_id, code, lang))
        .or_else(|| Taxonomies::built_in()?.label_in(taxonomy_id, code, lang))
}

fn parse(text: &str, origin: &str) -> Result<TaxonomyFile, ConsultError> {
    toml::from_str(text).map_err(|e| ConsultError::Invalid(format!("{origin}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pathfed_core::locale::is_japanese;

    #[test]
    fn built_in_taxonomies_map_organs() {
        let all = Taxonomies::load(None).unwrap();
        assert_eq!(all.for_organ("Stomach").id, "gastric-group");
        assert_eq!(all.for_organ("colon").id, "general");
        let gastric = all.get("gastric-group").unwrap();
        assert_eq!(gastric.labels.len(), 5);
        assert!(gastric.label("GAS-G5").unwrap().name.contains("carcinoma"));
        assert!(all.get("general").unwrap().label("GEN-ND").is_some());
        // An organ named as the organ list names it maps as its code does.
        assert_eq!(all.for_organ(" 胃 ").id, "gastric-group");
        assert_eq!(all.for_organ("皮膚").id, "general");
    }

    #[test]
    fn every_code_reads_in_japanese_and_english() {
        let all = Taxonomies::load(None).unwrap();
        let mut labels = 0;
        for (id, taxonomy) in &all.taxonomies {
            assert!(
                taxonomy.name_in(Lang::Ja).chars().any(is_japanese),
                "taxonomy {id}: {:?}",
                taxonomy.name_ja
            );
            assert!(
                !taxonomy.name_in(Lang::En).trim().is_empty(),
                "taxonomy {id}"
            );
            for label in &taxonomy.labels {
                let ja = label_in(id, &label.code, Lang::Ja).unwrap();
                let en = label_in(id, &label.code, Lang::En).unwrap();
                assert!(ja.chars().any(is_japanese), "{id} {}: {ja:?}", label.code);
                assert!(!en.trim().is_empty(), "{id} {}", label.code);
                assert_ne!(ja, en, "{id} {}", label.code);
                assert_eq!(ja, label.label_ja);
                assert_eq!(en, label.label_en);
                labels += 1;
            }
        }
        assert!(labels >= 9, "the built-in set has 9 codes, not {labels}");
        assert_eq!(
            label_in("gastric-group", "GAS-G1", Lang::Ja).unwrap(),
            "Group 1（正常組織および非腫瘍性病変）"
        );
        assert_eq!(
            label_in("gastric-group", "GAS-G5", Lang::En).unwrap(),
            "Group 5: carcinoma"
        );
        assert_eq!(label_in("gastric-group", "GEN-B", Lang::Ja), None);
        assert_eq!(label_in("nope", "GEN-B", Lang::Ja), None);
        // Every entry of the Japanese tables names a built-in id or code, so none is a typo.
        for (id, _) in TAXONOMIES_JA {
            assert!(all.get(id).is_some(), "{id}");
        }
        for (code, _) in LABELS_JA {
            assert!(
                all.taxonomies.values().any(|t| t.label(code).is_some()),
                "{code}"
            );
        }
        // The answer of `/api/v1/taxonomies` carries both languages.
        let json = serde_json::to_value(&all).unwrap();
        assert_eq!(
            json["taxonomies"]["gastric-group"]["labels"][4]["label_ja"],
            "Group 5（癌）"
        );
        assert_eq!(
            json["taxonomies"]["gastric-group"]["name_ja"],
            "胃生検 Group 分類"
        );
    }

    #[test]
    fn files_may_name_labels_in_both_languages() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("t.toml");
        std::fs::write(
            &extra,
            "[[taxonomy]]\nid = \"lung-test\"\nname = \"Lung\"\nname_ja = \"肺\"\n\
             labels = [{ code = \"LUNG-AD\", name = \"Adenocarcinoma\", label_ja = \"腺癌\" },\
             { code = \"LUNG-X\", name = \"Other\" }]\n",
        )
        .unwrap();
        // A code without Japanese is refused, by name.
        let refused = Taxonomies::load(Some(&extra)).unwrap_err().to_string();
        assert!(refused.contains("label_ja of LUNG-X"), "{refused}");
        std::fs::write(
            &extra,
            "[[taxonomy]]\nid = \"lung-test\"\nname = \"Lung\"\nname_ja = \"肺\"\n\
             labels = [{ code = \"LUNG-AD\", name = \"Adenocarcinoma\", label_ja = \"腺癌\" },\
             { code = \"LUNG-X\", name = \"Other\", label_ja = \"その他\" }]\n",
        )
        .unwrap();
        let all = Taxonomies::load(Some(&extra)).unwrap();
        let lung = all.get("lung-test").unwrap();
        assert_eq!(lung.name_in(Lang::Ja), "肺");
        assert_eq!(lung.name_in(Lang::En), "Lung");
        assert_eq!(
            all.label_in("lung-test", "LUNG-AD", Lang::Ja).unwrap(),
            "腺癌"
        );
        assert_eq!(
            all.label_in("lung-test", "LUNG-AD", Lang::En).unwrap(),
            "Adenocarcinoma"
        );
        assert_eq!(
            all.label_in("lung-test", "LUNG-X", Lang::Ja).unwrap(),
            "その他"
        );
        // Built-in codes keep their Japanese beside the file's taxonomies.
        assert_eq!(all.label_in("general", "GEN-M", Lang::Ja).unwrap(), "悪性");
    }

    #[test]
    fn extra_files_add_but_never_drop_codes() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("t.toml");
        std::fs::write(
            &extra,
            "[[taxonomy]]\nid = \"colon\"\nname = \"Colon\"\nname_ja = \"大腸\"\nlabels = [{ code = \"COL-1\", name = \"One\", label_ja = \"一\" }]\n[organs]\ncolon = \"colon\"\n",
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
