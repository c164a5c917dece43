//! The node-local slide cache: materialises a slide's objects as local files (OpenSlide and
//! the TIFF reader need paths), evicting the least recently used slides beyond a byte budget.
//!
//! A slide in use (someone holds its [`CachedSlide`]) is never evicted. Every file is checked
//! against the SHA-256 recorded at upload while it is copied. The cache starts empty after a
//! restart, so a half-copied file from a crash can never be served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{CoreError, CoreResult};
use crate::store::{Store, get_to_file};

/// One object of a slide and where it goes inside the slide's folder.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlideFile {
    /// Object key.
    pub key: String,
    /// Path relative to the slide's folder (already sanitised at upload).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (hex) recorded at upload.
    pub sha256: String,
}

/// A slide's folder in the cache; kept on disk while any holder exists.
#[derive(Debug)]
pub struct CachedSlide {
    /// The folder holding the slide's files.
    pub dir: PathBuf,
    /// Bytes on disk.
    pub bytes: u64,
}

#[derive(Debug)]
struct State {
    slides: LruCache<String, Arc<CachedSlide>>,
    bytes: u64,
}

/// The cache.
#[derive(Debug)]
pub struct SlideCache {
    root: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SlideCache {
    /// A cache in `root` (emptied now) holding up to `max_bytes`.
    pub fn new(root: &Path, max_bytes: u64) -> CoreResult<Self> {
        if root.exists() {
            std::fs::remove_dir_all(root)
                .map_err(|e| CoreError::io(format!("clearing {}", root.display()), e))?;
        }
        std::fs::create_dir_all(root)
            .map_err(|e| CoreError::io(format!("creating {}", root.display()), e))?;
        Ok(Self {
            root: root.to_path_buf(),
            max_bytes,
            state: Mutex::new(State {
                slides: LruCache::unbounded(),
                bytes: 0,
            }),
            fetching: Mutex::new(HashMap::new()),
        })
    }

    /// The slide's folder, copying its objects from the store on first use.
    pub async fn get(
        &self,
        slide_id: &str,
        files: &[SlideFile],
        store: &Store,
    ) -> CoreResult<Arc<CachedSlide>> {
        if let Some(hit) = self.lookup(slide_id) {
            return Ok(hit);
        }
        // One copy per slide even when many tile requests arrive at once.
        let gate = {
            let mut map = self.fetching.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(slide_id.to_string()).or_default().clone()
        };
        let _fetching = gate.lock().await;
        if let Some(hit) = self.lookup(slide_id) {
            return Ok(hit);
        }
        let result = self.fetch(slide_id, files, store).await;
        self.fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(slide_id);
        result
    }

    /// Forgets a slide (deleted); its folder goes when the last holder lets go of it.
    pub fn remove(&self, slide_id: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slide) = state.slides.pop(slide_id) {
            state.bytes -= slide.bytes;
            if Arc::strong_count(&slide) == 1 {
                let _ = std::fs::remove_dir_all(&slide.dir);
            }
        }
    }

    /// Bytes held on disk.
    pub fn bytes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    fn lookup(&self, slide_id: &str) -> Option<Arc<CachedSlide>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.slides.get(slide_id).cloned()
    }

    async fn fetch(
        &self,
        slide_id: &str,
        files: &[SlideFile],
        store: &Store,
    ) -> CoreResult<Arc<CachedSlide>> {
        let staging = self.root.join(format!(".partial-{}", crate::db::new_id()));
        let outcome = copy_files(&staging, files, store).await;
        let bytes = match outcome {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(e);
            }
        };
        let dir = self.root.join(slide_id);
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::rename(&staging, &dir)
            .await
            .map_err(|e| CoreError::io(format!("moving into {}", dir.display()), e))?;
        let slide = Arc::new(CachedSlide { dir, bytes });
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.slides.put(slide_id.to_string(), slide.clone());
        state.bytes += bytes;
        self.evict(&mut state);
        Ok(slide)
    }

    fn evict(&self, state: &mut State) {
        if state.bytes <= self.max_bytes {
            return;
        }
        // Least recently used first; slides somebody holds stay.
        let candidates: Vec<String> = state
            .slides
            .iter()
            .rev()
            .filter(|(_, slide)| Arc::strong_count(slide) == 1)
            .map(|(id, _)| id.clone())
            .collect();
        for id in candidates {
            if state.bytes <= self.max_bytes {
                break;
            }
            if let Some(slide) = state.slides.pop(&id) {
                state.bytes -= slide.bytes;
                let _ = std::fs::remove_dir_all(&slide.dir);
                tracing::debug!(slide = %id, bytes = slide.bytes, "evicted from slide cache");
            }
        }
    }
}

async fn copy_files(staging: &Path, files: &[SlideFile], store: &Store) -> CoreResult<u64> {
    let mut bytes = 0;
    for file in files {
        let target = staging.join(&file.path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| CoreError::io(format!("creating {}", parent.display()), e))?;
        }
        let digest = get_to_file(store, &file.key, &target).await?;
        if digest != file.sha256 {
            return Err(CoreError::Integrity(file.key.clone()));
        }
        bytes += file.size;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{open_store, put_bytes};
    use sha2::Digest;

    fn file(key: &str, data: &[u8]) -> SlideFile {
        SlideFile {
            key: key.into(),
            path: key.rsplit('/').next().unwrap().into(),
            size: data.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(data)),
        }
    }

    #[tokio::test]
    async fn materialises_verifies_and_evicts_unused_slides() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store("memory://", &Default::default()).unwrap();
        let cache = SlideCache::new(&dir.path().join("cache"), 150).unwrap();
        let a = vec![1u8; 100];
        let b = vec![2u8; 100];
        put_bytes(&store, "x/a.svs", a.clone()).await.unwrap();
        put_bytes(&store, "y/b.svs", b.clone()).await.unwrap();

        let held = cache
            .get("a", &[file("x/a.svs", &a)], &store)
            .await
            .unwrap();
        assert_eq!(std::fs::read(held.dir.join("a.svs")).unwrap(), a);
        // Over budget, but "a" is in use: both stay.
        let b_slide = cache
            .get("b", &[file("y/b.svs", &b)], &store)
            .await
            .unwrap();
        assert!(held.dir.exists() && b_slide.dir.exists());
        drop(b_slide);
        drop(held);
        // The next fetch evicts the least recently used unheld slide.
        let again = cache
            .get("b2", &[file("y/b.svs", &b)], &store)
            .await
            .unwrap();
        assert!(!dir.path().join("cache/a").exists());
        assert!(again.dir.exists());
        assert!(cache.bytes() <= 200);

        let mut bad = file("x/a.svs", &a);
        bad.sha256 = "00".repeat(32);
        let err = cache.get("c", &[bad], &store).await.unwrap_err();
        assert!(matches!(err, CoreError::Integrity(_)), "{err}");
        assert!(!dir.path().join("cache/c").exists());
    }
}
