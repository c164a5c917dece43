//! Passwords (argon2id), bearer secrets (sessions, API tokens, CSRF tokens) and one-time
//! codes, of which only hashes are stored.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{CoreError, CoreResult};

/// Hashes a password with argon2id and a random salt (PHC string). Whether the password is
/// good enough is [`crate::password_policy`]'s question, asked before this.
pub fn hash_password(password: &str) -> CoreResult<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| CoreError::Invalid(format!("cannot hash password: {e}")))
}

/// True when `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// Spends the same work as a real verification, so an unknown user name answers as slowly as
/// a wrong password and timing does not reveal which accounts exist.
pub fn verify_against_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"pathfed-timing-equaliser")
            .map(|h| h.to_string())
            .unwrap_or_default()
    });
    let _ = verify_password(password, hash);
}

/// A new random secret: 32 bytes, hex, with a prefix saying what it is for.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The stored form of a bearer secret: only its SHA-256 is kept.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip_and_rejections() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn secrets_are_distinct_and_hashed() {
        let a = new_secret("pf_");
        let b = new_secret("pf_");
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
    }
}
