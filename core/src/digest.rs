//! SHA-256 of whole files: the identity of every upload, on the client and on the server.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// SHA-256 (hex) of a file read in large blocks; `progress` hears the bytes hashed so far.
/// Blocking: call it from a blocking thread.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64)) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut done = 0u64;
    loop {
        progress(done);
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_one_shot_digest_and_reports_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let mut seen = Vec::new();
        let digest = sha256_file(&path, |done| seen.push(done)).unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(&data)));
        assert_eq!(seen, vec![0, 8 << 20, 9 << 20]);
    }
}
