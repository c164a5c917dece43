//! QIDO-RS query parameters (PS3.18 8.3.4): matching keys, paging, and the warnings an answer
//! carries about what was not done.
//!
//! Matching is on the attributes that tell slides and their parts apart: Study Instance UID,
//! Series Instance UID and SOP Instance UID (UID list matching: several values, comma or
//! backslash separated, or the key repeated), SOP Class UID, and Modality or Modalities in Study
//! (always `SM`). Keys may be keywords or tags (`0020000D`). Any other key is ignored and named
//! in a `Warning` header, as the standard allows; `includefield` is accepted and ignored, since
//! every answer carries all the attributes this server holds for its level. `limit` is at most
//! [`MAX_RESULTS`]; an answer with more results behind it says so in a `Warning`.

use pathfed_core::http::ApiError;

use super::json::{MODALITY_SM, WSI_STORAGE};
use super::uids;

/// Most results of one search.
pub(super) const MAX_RESULTS: usize = 1000;
/// Most query parameters read.
const MAX_PARAMETERS: usize = 64;
/// Most values one matching key may list.
const MAX_VALUES: usize = 100;

/// A matching key this server evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Study,
    Series,
    Instance,
    SopClass,
    Modality,
}

impl Key {
    const ALL: [Self; 5] = [
        Self::Study,
        Self::Series,
        Self::Instance,
        Self::SopClass,
        Self::Modality,
    ];

    /// A keyword (as the data dictionary spells it) or a tag (8 hex digits).
    fn parse(name: &str) -> Option<Self> {
        match name {
            "StudyInstanceUID" => return Some(Self::Study),
            "SeriesInstanceUID" => return Some(Self::Series),
            "SOPInstanceUID" => return Some(Self::Instance),
            "SOPClassUID" => return Some(Self::SopClass),
            "Modality" | "ModalitiesInStudy" => return Some(Self::Modality),
            _ => {}
        }
        match name.to_ascii_uppercase().as_str() {
            "0020000D" => Some(Self::Study),
            "0020000E" => Some(Self::Series),
            "00080018" => Some(Self::Instance),
            "00080016" => Some(Self::SopClass),
            "00080060" | "00080061" => Some(Self::Modality),
            _ => None,
        }
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Query {
    /// Keys with the values any of which matches; keys without a constraint are left out.
    keys: Vec<(Key, Vec<String>)>,
    limit: usize,
    offset: usize,
    warnings: Vec<String>,
}

fn bad_query(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("dicomweb_bad_query", message)
}

impl Query {
    /// Parses a query string (`None`: no query).
    pub(super) fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        let mut query = Self {
            keys: Vec::new(),
            limit: MAX_RESULTS,
            offset: 0,
            warnings: Vec::new(),
        };
        let mut given: Vec<(Key, String)> = Vec::new();
        let mut ignored: Vec<String> = Vec::new();
        let pairs = url::form_urlencoded::parse(text.unwrap_or_default().as_bytes());
        for (count, (name, value)) in pairs.enumerate() {
            if count == MAX_PARAMETERS {
                return Err(bad_query(format!(
                    "a search takes at most {MAX_PARAMETERS} query parameters"
                )));
            }
            match name.as_ref() {
                "limit" => query.limit = count_parameter("limit", &value)?.min(MAX_RESULTS),
                "offset" => query.offset = count_parameter("offset", &value)?,
                // Every answer holds all the attributes there are.
                "includefield" => {}
                "fuzzymatching" => {
                    if value == "true" {
                        query.warnings.push(
                            "fuzzy matching is not supported; only literal matching was performed"
                                .to_string(),
                        );
                    }
                }
                other => match Key::parse(other) {
                    Some(key) => given.push((key, value.into_owned())),
                    None => {
                        let shown: String = other
                            .chars()
                            .filter(char::is_ascii_alphanumeric)
                            .take(64)
                            .collect();
                        if !shown.is_empty() && ignored.len() < 10 && !ignored.contains(&shown) {
                            ignored.push(shown);
                        }
                    }
                },
            }
        }
        for key in Key::ALL {
            let texts: Vec<&str> = given
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.trim())
                .collect();
            // An empty value or a lone `*` matches everything, whatever else is given.
            if texts.is_empty()
                || texts
                    .iter()
                    .any(|v| v.is_empty() || v.chars().all(|c| c == '*'))
            {
                continue;
            }
            let values: Vec<String> = texts
                .iter()
                .flat_map(|v| v.split([',', '\\']))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect();
            if values.len() > MAX_VALUES {
                return Err(bad_query(format!(
                    "a matching key takes at most {MAX_VALUES} values"
                )));
            }
            query.keys.push((key, values));
        }
        if !ignored.is_empty() {
            query.warnings.push(format!(
                "the following search keys are not supported and were ignored: {}",
                ignored.join(", ")
            ));
        }
        Ok(query)
    }

    /// The Study Instance UIDs the query names, where it names any.
    pub(super) fn studies(&self) -> Option<&[String]> {
        self.keys
            .iter()
            .find(|(key, _)| *key == Key::Study)
            .map(|(_, values)| values.as_slice())
    }

    /// Whether every key matches the study `study` of `levels` levels: its series when `level`
    /// is `None`, else its instance of that level. A study or series matches an instance key
    /// when it holds such an instance.
    pub(super) fn matches(&self, study: &str, level: Option<usize>, levels: usize) -> bool {
        self.keys.iter().all(|(key, values)| {
            values.iter().any(|value| match key {
                Key::Study => value == study,
                Key::Series => uids::is_series(study, value),
                Key::Instance => uids::level_of_instance(study, value)
                    .is_some_and(|named| named < levels && level.is_none_or(|own| own == named)),
                Key::SopClass => value == WSI_STORAGE,
                Key::Modality => value == MODALITY_SM,
            })
        })
    }

    /// The page of `items` the query asks for, and the warnings its answer carries.
    pub(super) fn page<T>(&self, items: Vec<T>) -> (Vec<T>, Vec<String>) {
        let total = items.len();
        let page: Vec<T> = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect();
        let mut warnings = self.warnings.clone();
        let shown = self.offset.saturating_add(page.len());
        if shown < total {
            warnings.push(format!(
                "there are {} more results: ask again with offset={shown}",
                total - shown
            ));
        }
        (page, warnings)
    }
}

/// `limit` or `offset`: a non-negative integer.
fn count_parameter(name: &str, value: &str) -> Result<usize, ApiError> {
    if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_query(format!(
            "{name} must be a whole number, not {value:?}"
        )));
    }
    value
        .parse()
        .map_err(|_| bad_query(format!("{name} must be a whole number, not {value:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY: &str = "2.25.1234";

    fn query(text: &str) -> Query {
        Query::parse(Some(text)).unwrap()
    }

    #[test]
    fn what_wsidicom_asks_finds_the_slides_instances_only() {
        // wsidicom's search for the WSI instances of a series, and for its annotations.
        let wsi = query(
            "00080016=1.2.840.10008.5.1.4.1.1.77.1.6&00080060=SM&0020000E=2.25.1234.1\
             &includefield=AvailableTransferSyntaxUID",
        );
        assert!(wsi.matches(STUDY, Some(0), 3));
        assert!(wsi.matches(STUDY, Some(2), 3));
        assert!(wsi.warnings.is_empty(), "{:?}", wsi.warnings);
        let annotations =
            query("00080016=1.2.840.10008.5.1.4.1.1.91.1&00080060=ANN&0020000E=2.25.1234.1");
        assert!(!annotations.matches(STUDY, Some(0), 3));
    }

    #[test]
    fn uid_lists_match_any_of_their_values() {
        let repeated = query("SeriesInstanceUID=2.25.9.1&SeriesInstanceUID=2.25.1234.1");
        assert!(repeated.matches(STUDY, None, 1));
        let listed = query("StudyInstanceUID=2.25.9,2.25.1234");
        assert!(listed.matches(STUDY, None, 1));
        assert_eq!(
            listed.studies(),
            Some(["2.25.9".to_string(), "2.25.1234".to_string()].as_slice())
        );
        assert!(!query("StudyInstanceUID=2.25.9").matches(STUDY, None, 1));
        // An instance key: a study matches when it holds the instance, an instance when it is it.
        let instance = query("SOPInstanceUID=2.25.1234.1.2");
        assert!(instance.matches(STUDY, None, 2));
        assert!(!instance.matches(STUDY, None, 1));
        assert!(instance.matches(STUDY, Some(1), 2));
        assert!(!instance.matches(STUDY, Some(0), 2));
        // Empty values and a lone wildcard constrain nothing.
        assert!(query("StudyInstanceUID=&Modality=*").matches(STUDY, None, 1));
        assert_eq!(query("StudyInstanceUID=").studies(), None);
    }

    #[test]
    fn paging_is_bounded_and_says_what_is_left() {
        let all: Vec<u32> = (0..2500).collect();
        let (page, warnings) = query("").page(all.clone());
        assert_eq!(page.len(), MAX_RESULTS);
        assert!(
            warnings.iter().any(|w| w.contains("offset=1000")),
            "{warnings:?}"
        );
        let (page, warnings) = query("limit=5000&offset=2000").page(all.clone());
        assert_eq!(page.first(), Some(&2000));
        assert_eq!(page.len(), 500);
        assert!(warnings.is_empty(), "{warnings:?}");
        let (page, _) = query("limit=2&offset=10").page(all);
        assert_eq!(page, vec![10, 11]);
        for bad in ["limit=-1", "limit=ten", "offset=1.5", "limit="] {
            let error = Query::parse(Some(bad)).expect_err(bad);
            assert_eq!(error.code, "dicomweb_bad_query", "{bad}");
        }
        let many = (0..=MAX_PARAMETERS)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(Query::parse(Some(&many)).is_err());
    }

    #[test]
    fn unsupported_keys_are_ignored_with_a_warning() {
        let q = query("PatientName=DOE%5EJOHN&fuzzymatching=true&StudyDate=20240101");
        assert!(q.matches(STUDY, None, 1));
        assert_eq!(q.warnings.len(), 2, "{:?}", q.warnings);
        assert!(
            q.warnings
                .iter()
                .any(|w| w.contains("PatientName, StudyDate"))
        );
    }
}
