//! The organs a consultation names, each with a stable code and its Japanese and English name.
//!
//! A case stores its organ as text, lower case: forms send the code (`stomach`), older cases
//! and API clients may hold any text, and both stay valid. The codes are what the taxonomy
//! mapping keys on, so [`code_of`] turns a name written either way (`胃`, `Stomach`,
//! `lymph node`) into its code.

use pathfed_core::locale::Lang;
use serde::Serialize;

/// One organ of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Organ {
    /// Stable code, lower case (what a case stores).
    pub code: &'static str,
    /// Japanese name, as a request form writes it.
    pub ja: &'static str,
    /// English name.
    pub en: &'static str,
    /// Other spellings people type (lower case), e.g. `esophagus`.
    pub aliases: &'static [&'static str],
}

const fn organ(code: &'static str, ja: &'static str, en: &'static str) -> Organ {
    Organ {
        code,
        ja,
        en,
        aliases: &[],
    }
}

/// Every organ, in the order a form lists them: digestive tract first, `other` last.
pub const ORGANS: &[Organ] = &[
    Organ {
        aliases: &["esophagus"],
        ..organ("oesophagus", "食道", "Oesophagus")
    },
    organ("stomach", "胃", "Stomach"),
    organ("duodenum", "十二指腸", "Duodenum"),
    organ("small-intestine", "小腸", "Small intestine"),
    organ("appendix", "虫垂", "Appendix"),
    organ("colon", "結腸", "Colon"),
    organ("rectum", "直腸", "Rectum"),
    organ("anus", "肛門", "Anus"),
    organ("liver", "肝臓", "Liver"),
    organ("gallbladder", "胆嚢", "Gallbladder"),
    organ("bile-duct", "胆管", "Bile duct"),
    organ("pancreas", "膵臓", "Pancreas"),
    organ("oral-cavity", "口腔", "Oral cavity"),
    organ("salivary-gland", "唾液腺", "Salivary gland"),
    organ("larynx", "喉頭", "Larynx"),
    organ("lung", "肺", "Lung"),
    organ("pleura", "胸膜", "Pleura"),
    organ("mediastinum", "縦隔", "Mediastinum"),
    organ("breast", "乳腺", "Breast"),
    organ("thyroid", "甲状腺", "Thyroid"),
    organ("adrenal-gland", "副腎", "Adrenal gland"),
    organ("kidney", "腎臓", "Kidney"),
    Organ {
        aliases: &["urinary bladder"],
        ..organ("bladder", "膀胱", "Bladder")
    },
    organ("prostate", "前立腺", "Prostate"),
    organ("testis", "精巣", "Testis"),
    Organ {
        aliases: &["cervix"],
        ..organ("uterine-cervix", "子宮頸部", "Uterine cervix")
    },
    organ("endometrium", "子宮内膜", "Endometrium"),
    organ("ovary", "卵巣", "Ovary"),
    organ("skin", "皮膚", "Skin"),
    organ("lymph-node", "リンパ節", "Lymph node"),
    organ("bone-marrow", "骨髄", "Bone marrow"),
    organ("soft-tissue", "軟部組織", "Soft tissue"),
    organ("bone", "骨", "Bone"),
    organ("brain", "脳", "Brain"),
    organ("other", "その他", "Other"),
];

/// Lower case, with spaces and underscores as hyphens: `Lymph node` and `lymph_node` read as
/// the code `lymph-node`.
fn normalised(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .split([' ', '_', '-'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// The organ with this code.
pub fn find(code: &str) -> Option<&'static Organ> {
    ORGANS.iter().find(|o| o.code == code)
}

/// The code of the organ `text` names: its code, its Japanese or English name, or an alias,
/// in any letter case. `None` for text that names no organ of the list.
pub fn code_of(text: &str) -> Option<&'static str> {
    let trimmed = text.trim();
    let key = normalised(trimmed);
    if key.is_empty() {
        return None;
    }
    ORGANS
        .iter()
        .find(|o| {
            o.code == key
                || o.ja == trimmed
                || normalised(o.en) == key
                || o.aliases.iter().any(|a| normalised(a) == key)
        })
        .map(|o| o.code)
}

/// How a stored organ reads in `lang`: the list's name for a code or a name of the list, the
/// text as stored otherwise.
pub fn name_in(organ: &str, lang: Lang) -> String {
    let Some(o) = code_of(organ).and_then(find) else {
        return organ.trim().to_string();
    };
    let name = match lang {
        Lang::Ja => o.ja,
        Lang::En => o.en,
    };
    name.to_string()
}

/// One organ as `GET /api/v1/organs` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrganName {
    /// Stable code, what a case's `organ` is set to (e.g. `stomach`).
    pub code: String,
    /// Japanese name (e.g. 胃).
    pub ja: String,
    /// English name (e.g. Stomach).
    pub en: String,
}

/// The answer of `GET /api/v1/organs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrganList {
    /// Every organ, in the order a form lists them.
    pub organs: Vec<OrganName>,
}

/// Every organ, as the API lists them.
pub fn list() -> OrganList {
    OrganList {
        organs: ORGANS
            .iter()
            .map(|o| OrganName {
                code: o.code.to_string(),
                ja: o.ja.to_string(),
                en: o.en.to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_lead_to_codes() {
        assert_eq!(code_of("stomach"), Some("stomach"));
        assert_eq!(code_of(" Stomach "), Some("stomach"));
        assert_eq!(code_of("胃"), Some("stomach"));
        assert_eq!(code_of("Lymph node"), Some("lymph-node"));
        assert_eq!(code_of("lymph_node"), Some("lymph-node"));
        assert_eq!(code_of("リンパ節"), Some("lymph-node"));
        assert_eq!(code_of("esophagus"), Some("oesophagus"));
        assert_eq!(code_of("Urinary bladder"), Some("bladder"));
        assert_eq!(code_of("cervix"), Some("uterine-cervix"));
        assert_eq!(code_of("endoscopic biopsy"), None);
        assert_eq!(code_of("  "), None);
        assert_eq!(name_in("stomach", Lang::Ja), "胃");
        assert_eq!(name_in("lymph node", Lang::En), "Lymph node");
        assert_eq!(name_in(" left hand ", Lang::Ja), "left hand");
    }

    #[test]
    fn the_list_is_unambiguous() {
        let mut seen = BTreeSet::new();
        for o in ORGANS {
            assert_eq!(
                o.code,
                normalised(o.code),
                "codes are already normal: {}",
                o.code
            );
            assert!(
                o.code.chars().count() <= 64,
                "cases keep at most 64 characters"
            );
            assert!(
                !o.ja.trim().is_empty() && !o.en.trim().is_empty(),
                "{}",
                o.code
            );
            // Every way of naming an organ leads to that organ and no other.
            let names: Vec<&str> = [o.code, o.ja, o.en]
                .into_iter()
                .chain(o.aliases.iter().copied())
                .collect();
            let own: BTreeSet<String> = names.iter().map(|name| normalised(name)).collect();
            for name in own {
                assert!(seen.insert(name.clone()), "{name:?} names two organs");
            }
            for name in names {
                assert_eq!(code_of(name), Some(o.code), "{name:?}");
            }
        }
        for required in [
            "stomach", "colon", "rectum", "lung", "breast", "skin", "other",
        ] {
            assert!(find(required).is_some(), "{required}");
        }
        assert_eq!(list().organs.len(), ORGANS.len());
    }
}
