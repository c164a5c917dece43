//! Research pseudonyms: HMAC-SHA256 under a key kept outside the database.
//!
//! A research slide id, patient id or hospital id is a keyed hash of the clinical id, so the
//! research tier holds no link back; the clinical side recomputes the pseudonym when it must
//! find research data again (opt-out). Rotation: a new key yields new ids for everything
//! curated afterwards, see the operations section of `docs/architecture.md`.

use pathfed_core::config::Config;
use pathfed_core::keys::{self, SecretKey};

use crate::error::DatasetResult;

/// Name of the pseudonym key (file `DATA_DIR/keys/research-id.key` or `PATHFED_KEY_RESEARCH_ID`).
pub const KEY_NAME: &str = "research-id";

/// Hex characters kept of each pseudonym (96 bits: collisions are out of reach).
const ID_HEX: usize = 24;

/// Derives research pseudonyms.
#[derive(Clone, Debug)]
pub struct Pseudonyms {
    key: SecretKey,
}

impl Pseudonyms {
    /// Loads the key, creating it on first use.
    pub fn load(config: &Config) -> DatasetResult<Self> {
        Ok(Self {
            key: keys::load_or_create(config, KEY_NAME)?,
        })
    }

    /// With an explicit key (tests, tools).
    pub fn with_key(key: SecretKey) -> Self {
        Self { key }
    }

    fn derive(&self, prefix: &str, parts: &[&str]) -> String {
        let mut all = vec![prefix];
        all.extend_from_slice(parts);
        let digest = self.key.keyed_hash(&all);
        format!("{prefix}-{}", &digest[..ID_HEX])
    }

    /// The research id of a clinical slide.
    pub fn slide(&self, slide_id: &str) -> String {
        self.derive("rs", &[slide_id])
    }

    /// The research id of a patient (the hospital and the patient's keyed hash there).
    pub fn patient(&self, hospital_id: &str, patient_hash: &str) -> String {
        self.derive("rp", &[hospital_id, patient_hash])
    }

    /// The research id of a submitting hospital.
    pub fn hospital(&self, hospital_id: &str) -> String {
        self.derive("rh", &[hospital_id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(byte: u8) -> Pseudonyms {
        Pseudonyms::with_key(SecretKey::from_bytes([byte; 32]))
    }

    #[test]
    fn pseudonyms_are_stable_distinct_and_keyed() {
        let (a, b) = (with(1), with(2));
        assert_eq!(a.slide("s1"), a.slide("s1"));
        assert_ne!(a.slide("s1"), a.slide("s2"));
        assert_ne!(a.slide("s1"), b.slide("s1"), "another key, other ids");
        assert_ne!(
            a.patient("h", "p1"),
            a.patient("hp", "1"),
            "parts are separated"
        );
        assert!(a.slide("s1").starts_with("rs-") && a.slide("s1").len() == 27);
    }
}
