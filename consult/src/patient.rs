//! The patient's local id, which only the submitting hospital needs to read back.
//!
//! It is stored twice, never in clear: an HMAC-SHA256 (keyed, so the id space cannot be
//! enumerated from a database copy) to find a patient's cases, and an AES-256-GCM ciphertext
//! to show the id to the spoke and print it on the report. Both keys live outside the database.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use pathfed_core::Config;
use pathfed_core::keys::{SecretKey, load_or_create};
use rand::RngCore;

use crate::error::{ConsultError, ConsultResult};

/// Name of the key used for patient-id hashes.
pub const HASH_KEY: &str = "patient-id-hmac";
/// Name of the key used for patient-id ciphertexts.
pub const ENCRYPTION_KEY: &str = "patient-id-aes";

/// Longest patient id accepted.
const MAX_ID_CHARS: usize = 64;

/// Hashes and encrypts patient ids.
#[derive(Clone)]
pub struct PatientIds {
    hash_key: SecretKey,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for PatientIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientIds(…)")
    }
}

impl PatientIds {
    /// Loads (or creates on first use) both keys.
    pub fn load(config: &Config) -> ConsultResult<Self> {
        let hash_key = load_or_create(config, HASH_KEY)?;
        let encryption = load_or_create(config, ENCRYPTION_KEY)?;
        Ok(Self::from_keys(hash_key, &encryption))
    }

    /// From explicit keys.
    pub fn from_keys(hash_key: SecretKey, encryption: &SecretKey) -> Self {
        Self {
            hash_key,
            cipher: Aes256Gcm::new(encryption.bytes().into()),
        }
    }

    /// Checks a patient id: non-empty, printable, not too long. Returns it trimmed.
    pub fn check(id: &str) -> ConsultResult<&str> {
        let id = id.trim();
        if id.is_empty() {
            return Err(ConsultError::Invalid("patient id is required".into()));
        }
        if id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
            return Err(ConsultError::Invalid(format!(
                "patient id must be at most {MAX_ID_CHARS} printable characters"
            )));
        }
        Ok(id)
    }

    /// The keyed hash of (hospital, id), hex.
    pub fn hash(&self, hospital_id: &str, id: &str) -> String {
        self.hash_key.keyed_hash(&[hospital_id, id])
    }

    /// Encrypts an id: base64 of nonce ‖ ciphertext.
    pub fn encrypt(&self, id: &str) -> ConsultResult<String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), id.as_bytes())
            .map_err(|_| ConsultError::Invalid("cannot encrypt the patient id".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Decrypts what [`encrypt`](Self::encrypt) produced; `None` if it was made under
    /// another key or altered.
    pub fn decrypt(&self, sealed: &str) -> Option<String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, body) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plain = self.cipher.decrypt(&Nonce::from(nonce), body).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PatientIds {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        PatientIds::load(&config).unwrap()
    }

    #[test]
    fn ids_round_trip_and_hash_per_hospital() {
        let ids = ids();
        let sealed = ids.encrypt("MRN-0042").unwrap();
        assert!(!sealed.contains("MRN-0042"));
        assert_ne!(
            sealed,
            ids.encrypt("MRN-0042").unwrap(),
            "nonces must differ"
        );
        assert_eq!(ids.decrypt(&sealed).as_deref(), Some("MRN-0042"));
        assert_eq!(ids.hash("h1", "MRN-0042"), ids.hash("h1", "MRN-0042"));
        assert_ne!(ids.hash("h1", "MRN-0042"), ids.hash("h2", "MRN-0042"));
        let mut tampered = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        assert_eq!(ids.decrypt(&tampered), None);
        assert!(PatientIds::check("  ").is_err());
        assert!(PatientIds::check("a\u{7}b").is_err());
        assert_eq!(PatientIds::check(" 12 ").unwrap(), "12");
    }
}
