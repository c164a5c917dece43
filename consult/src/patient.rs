//! The patient's local id, which only the submitting hospital needs to read back.
//!
//! It is stored twice, never in clear: an HMAC-SHA256 (keyed, so the id space cannot be
//! enumerated from a database copy) to find a patient's cases, and an AES-256-GCM ciphertext
//! to show the id to the spoke and print it on the report. Both keys live outside the database.
//!
//! Both are made from the id as the hospital keys it ([`PatientId::normalise`] under the
//! hospital's `patient_id_case` setting), for a case and for an opt-out alike, so the two find
//! each other however the id was typed.

use std::collections::HashSet;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use pathfed_core::contracts::consent::{PatientId, PatientIdCase};
use pathfed_core::keys::{SecretKey, load_or_create};
use pathfed_core::{Config, CoreError, CoreResult, Db, accounts};
use rand::RngCore;
use sqlx::Row;

use crate::error::{ConsultError, ConsultResult};

/// Name of the key used for patient-id hashes.
pub const HASH_KEY: &str = "patient-id-hmac";
/// Name of the key used for patient-id ciphertexts.
pub const ENCRYPTION_KEY: &str = "patient-id-aes";

/// A patient id as a case or an opt-out stores it.
#[derive(Debug, Clone)]
pub struct SealedId {
    /// The id as the hospital keys it.
    pub id: PatientId,
    /// Its keyed hash under the hospital.
    pub hash: String,
    /// Its ciphertext.
    pub cipher: String,
}

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

    /// Checks a patient id before its hospital's letter-case rule is read (a form's first
    /// check): normalised (NFKC, trimmed), non-empty, printable, not too long. Returns it so.
    pub fn check(id: &str) -> ConsultResult<String> {
        let id = refused_as_invalid(PatientId::normalise(id, PatientIdCase::Sensitive))?;
        Ok(id.as_str().to_string())
    }

    /// The id typed as `raw` as `hospital_id` keys it: normalised under the hospital's
    /// `patient_id_case` setting.
    pub async fn normalise(db: &Db, hospital_id: &str, raw: &str) -> ConsultResult<PatientId> {
        let case = accounts::patient_id_case(db, hospital_id).await?;
        refused_as_invalid(PatientId::normalise(raw, case))
    }

    /// The id typed as `raw`, normalised for `hospital_id`, with its hash and ciphertext: what
    /// a case or an opt-out stores.
    pub async fn seal(&self, db: &Db, hospital_id: &str, raw: &str) -> ConsultResult<SealedId> {
        let id = Self::normalise(db, hospital_id, raw).await?;
        Ok(SealedId {
            hash: self.hash(hospital_id, &id),
            cipher: self.encrypt(&id)?,
            id,
        })
    }

    /// The keyed hash of (hospital, id), hex.
    pub fn hash(&self, hospital_id: &str, id: &PatientId) -> String {
        self.hash_key.keyed_hash(&[hospital_id, id.as_str()])
    }

    /// Encrypts an id: base64 of nonce ‖ ciphertext.
    pub fn encrypt(&self, id: &PatientId) -> ConsultResult<String> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), id.as_str().as_bytes())
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

/// A refused id is the request's fault (400, audited as refused), not the platform's.
fn refused_as_invalid(result: CoreResult<PatientId>) -> ConsultResult<PatientId> {
    result.map_err(|e| match e {
        CoreError::Invalid(message) => ConsultError::Invalid(message),
        other => other.into(),
    })
}

/// Sets whether `hospital_id`'s patient ids distinguish letter case, once it is sure that no
/// id already stored (on a case or an opt-out) would be keyed differently under the new rule:
/// such a case would stop matching its patient's opt-out, and its research slides would stop
/// matching the patient's later ones. The change is refused, naming what is in the way, if
/// any would.
pub async fn set_id_case(
    db: &Db,
    ids: &PatientIds,
    hospital_id: &str,
    case: PatientIdCase,
) -> ConsultResult<()> {
    let current = accounts::patient_id_case(db, hospital_id).await?;
    if current == case {
        return Ok(());
    }
    // Whether the stored (hash, ciphertext) would hash the same under the new rule.
    let keeps_key = |hash: &str, cipher: &str| -> bool {
        ids.decrypt(cipher)
            .and_then(|plain| PatientId::normalise(&plain, case).ok())
            .is_some_and(|id| ids.hash(hospital_id, &id) == hash)
    };
    let mut moved_cases = 0usize;
    let mut case_hashes = HashSet::new();
    let rows = sqlx::query("SELECT patient_hash, patient_cipher FROM cases WHERE spoke_id = $1")
        .bind(hospital_id)
        .fetch_all(db.pool())
        .await?;
    for row in &rows {
        let hash: String = row.try_get("patient_hash")?;
        let cipher: String = row.try_get("patient_cipher")?;
        if !keeps_key(&hash, &cipher) {
            moved_cases += 1;
        }
        case_hashes.insert(hash);
    }
    let mut moved_opt_outs = 0usize;
    let rows =
        sqlx::query("SELECT patient_hash, patient_cipher FROM opt_outs WHERE hospital_id = $1")
            .bind(hospital_id)
            .fetch_all(db.pool())
            .await?;
    for row in &rows {
        let hash: String = row.try_get("patient_hash")?;
        let moved = match row.try_get::<Option<String>, _>("patient_cipher")? {
            Some(cipher) => !keeps_key(&hash, &cipher),
            // Recorded before ids were kept with opt-outs: known only through a case of the
            // same patient, which the cases' check covered.
            None => !case_hashes.contains(&hash),
        };
        if moved {
            moved_opt_outs += 1;
        }
    }
    if moved_cases + moved_opt_outs > 0 {
        return Err(ConsultError::Transition(format!(
            "patient ids of this hospital stay case-{}: {moved_cases} case(s) and \
             {moved_opt_outs} opt-out(s) hold ids that would be keyed differently as \
             case-{}, so they would no longer match their patient's opt-out or later cases",
            current.as_str(),
            case.as_str()
        )));
    }
    accounts::set_patient_id_case(db, hospital_id, case).await?;
    Ok(())
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
        let mrn = PatientId::normalise("MRN-0042", PatientIdCase::Sensitive).unwrap();
        let sealed = ids.encrypt(&mrn).unwrap();
        assert!(!sealed.contains("MRN-0042"));
        assert_ne!(sealed, ids.encrypt(&mrn).unwrap(), "nonces must differ");
        assert_eq!(ids.decrypt(&sealed).as_deref(), Some("MRN-0042"));
        assert_eq!(ids.hash("h1", &mrn), ids.hash("h1", &mrn));
        assert_ne!(ids.hash("h1", &mrn), ids.hash("h2", &mrn));
        let typed =
            PatientId::normalise("\u{3000}ＭＲＮ－００４２ ", PatientIdCase::Sensitive).unwrap();
        assert_eq!(ids.hash("h1", &typed), ids.hash("h1", &mrn));
        let mut tampered = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(tampered);
        assert_eq!(ids.decrypt(&tampered), None);
        assert!(matches!(
            PatientIds::check("  "),
            Err(ConsultError::Invalid(_))
        ));
        assert!(PatientIds::check("a\u{7}b").is_err());
        assert_eq!(PatientIds::check(" 12 ").unwrap(), "12");
        assert_eq!(PatientIds::check("\u{3000}１２\u{3000}").unwrap(), "12");
    }
}
