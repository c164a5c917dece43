//! Secret keys that must live outside the database: a copy of the database alone must not
//! reveal which patient a case belongs to.
//!
//! Each key is 32 random bytes, read from `PATHFED_KEY_<NAME>` (hex) when set, else from
//! `DATA_DIR/keys/<name>.key`, which is created (mode 0600) the first time it is needed.
//! Replicas of one deployment must share the same keys (the variable, or a shared file).

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::config::Config;
use crate::error::{CoreError, CoreResult};

/// A 32-byte secret key.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// HMAC-SHA256 (hex) of `parts` joined by NUL bytes, so ("ab", "c") and ("a", "bc") differ.
    pub fn keyed_hash(&self, parts: &[&str]) -> String {
        use hmac::{Hmac, KeyInit as _, Mac};
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                mac.update(&[0]);
            }
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

/// Where the named key is kept on disk.
pub fn key_path(config: &Config, name: &str) -> PathBuf {
    config.data_dir.join("keys").join(format!("{name}.key"))
}

/// The environment variable that may hold the named key.
pub fn key_variable(name: &str) -> String {
    format!(
        "PATHFED_KEY_{}",
        name.to_ascii_uppercase().replace(['-', '.'], "_")
    )
}

/// Loads the named key, creating its file on first use.
pub fn load_or_create(config: &Config, name: &str) -> CoreResult<SecretKey> {
    if let Ok(hex_key) = std::env::var(key_variable(name)) {
        return parse(&hex_key)
            .map_err(|why| CoreError::Invalid(format!("{}: {why}", key_variable(name))));
    }
    let path = key_path(config, name);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(text.trim())
            .map_err(|why| CoreError::Invalid(format!("key file {}: {why}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
    }
}

fn parse(hex_key: &str) -> Result<SecretKey, String> {
    let bytes = hex::decode(hex_key).map_err(|_| "not hexadecimal".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "a key is 32 bytes (64 hex digits)".to_string())?;
    Ok(SecretKey(bytes))
}

fn create(path: &Path) -> CoreResult<SecretKey> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| CoreError::io(format!("creating key file {}", path.display()), e);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    // create_new: two processes racing to create the key must not end up with different keys.
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(hex::encode(bytes).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            tracing::info!(path = %path.display(), "created a new secret key");
            Ok(SecretKey(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(io)?;
            parse(text.trim())
                .map_err(|why| CoreError::Invalid(format!("key file {}: {why}", path.display())))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let first = load_or_create(&config, "test-key").unwrap();
        let again = load_or_create(&config, "test-key").unwrap();
        assert_eq!(first.bytes(), again.bytes());
        let other = load_or_create(&config, "other-key").unwrap();
        assert_ne!(first.bytes(), other.bytes());
        std::fs::write(key_path(&config, "bad-key"), "zz").unwrap();
        let err = load_or_create(&config, "bad-key").unwrap_err();
        assert!(err.to_string().contains("not hexadecimal"), "{err}");
    }
}
