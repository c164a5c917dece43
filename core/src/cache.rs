//! The node-local slide cache: materialises a slide's objects as local files (OpenSlide and
//! the TIFF reader need paths), evicting the least recently used slides beyond a byte budget.
//!
//! A slide in use (someone holds its [`CachedSlide`]) is never evicted. Every file is checked
//! against the SHA-256 recorded at upload while it is copied.
//!
//! Several processes share the cache folder (the server, its workers, an admin command run
//! beside them): each owns a folder of its own, `proc-{id}`, marked by a lock file it holds
//! open for its lifetime. A starting process removes only the folders whose owner is gone
//! (their lock is free), so a half-copied file from a crash is never served and no command
//! empties the cache under a running server. A slide whose folder vanished anyway (removed by
//! hand, or purged by another process) is copied again rather than failing its reader.
//!
//! A slide withdrawn from the research tier is purged from every process's folder at once
//! ([`SlideCache::purge`]), not left until those processes restart.

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
    /// This process's own folder.
    root: PathBuf,
    /// Held (locked) while this process lives: tells other processes the folder is in use.
    _owner: std::fs::File,
    max_bytes: u64,
    state: Mutex<State>,
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl SlideCache {
    /// A cache under `shared_root` holding up to `max_bytes`, in a folder of this process's
    /// own; what processes that are gone left there is removed now.
    pub fn new(shared_root: &Path, max_bytes: u64) -> CoreResult<Self> {
        std::fs::create_dir_all(shared_root)
            .map_err(|e| CoreError::io(format!("creating {}", shared_root.display()), e))?;
        remove_abandoned(shared_root)?;
        let name = format!("{OWNED_PREFIX}{}", crate::db::new_id());
        // The lock comes before the folder: a folder without a held lock is abandoned.
        let lock_path = shared_root.join(format!("{name}{LOCK_SUFFIX}"));
        let owner = std::fs::File::create(&lock_path)
            .map_err(|e| CoreError::io(format!("creating {}", lock_path.display()), e))?;
        owner
            .lock()
            .map_err(|e| CoreError::io(format!("locking {}", lock_path.display()), e))?;
        let root = shared_root.join(&name);
        std::fs::create_dir_all(&root)
            .map_err(|e| CoreError::io(format!("creating {}", root.display()), e))?;
        Ok(Self {
            root,
            _owner: owner,
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

    /// Deletes every copy of a slide on this node: this process's and those of every other
    /// process sharing the cache folder, so a withdrawn slide does not wait for their restart.
    /// A reader with a file open keeps reading it (it is unlinked, not truncated); the next
    /// lookup in any process misses and copies again, from a store that should no longer hold
    /// it (delete the object first). Returns how many copies were removed.
    pub fn purge(&self, slide_id: &str) -> CoreResult<usize> {
        // Our own ids, but a name that could reach outside a process's folder is refused.
        if slide_id.is_empty() || slide_id.starts_with('.') || slide_id.contains(['/', '\\']) {
            return Err(CoreError::Invalid(format!(
                "not a cached slide's name: {slide_id:?}"
            )));
        }
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slide) = state.slides.pop(slide_id) {
                state.bytes -= slide.bytes;
            }
        }
        let Some(shared) = self.root.parent() else {
            return Ok(0);
        };
        let listing = std::fs::read_dir(shared)
            .map_err(|e| CoreError::io(format!("listing {}", shared.display()), e))?;
        let mut removed = 0;
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let folder = entry.file_type().is_ok_and(|t| t.is_dir());
            if !folder || !name.starts_with(OWNED_PREFIX) {
                continue;
            }
            let copy = entry.path().join(slide_id);
            match std::fs::remove_dir_all(&copy) {
                Ok(()) => {
                    removed += 1;
                    tracing::debug!(slide = %slide_id, dir = %copy.display(), "purged from slide cache");
                }
                // Not cached there, or that process's folder went meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CoreError::io(format!("removing {}", copy.display()), e)),
            }
        }
        Ok(removed)
    }

    /// Bytes held on disk.
    pub fn bytes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// The cached slide, if its folder is still there; one that vanished is forgotten, so the
    /// caller copies it again.
    fn lookup(&self, slide_id: &str) -> Option<Arc<CachedSlide>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let hit = state.slides.get(slide_id).cloned()?;
        if hit.dir.is_dir() {
            return Some(hit);
        }
        tracing::warn!(slide = %slide_id, dir = %hit.dir.display(), "cached slide vanished; copying it again");
        state.slides.pop(slide_id);
        state.bytes -= hit.bytes;
        None
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

impl Drop for SlideCache {
    /// A process that ends cleanly takes its folder with it; after a crash the next process
    /// to start does.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        let mut lock = self.root.clone().into_os_string();
        lock.push(LOCK_SUFFIX);
        let _ = std::fs::remove_file(lock);
    }
}

/// Folders of a process's own start with this; its lock file is the folder's name plus
/// [`LOCK_SUFFIX`].
const OWNED_PREFIX: &str = "proc-";
const LOCK_SUFFIX: &str = ".lock";

/// Removes what processes that are gone left under `shared_root`: folders whose lock file is
/// missing or not held, with their lock files, and anything else (an older layout).
fn remove_abandoned(shared_root: &Path) -> CoreResult<()> {
    let listing = std::fs::read_dir(shared_root)
        .map_err(|e| CoreError::io(format!("listing {}", shared_root.display()), e))?;
    for entry in listing.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(LOCK_SUFFIX) {
            // Lock files go with their folders; one whose folder was never made is an owner
            // between its two steps, or a crash then: kept if held, else removed.
            let folder = shared_root.join(name.trim_end_matches(LOCK_SUFFIX));
            if !folder.exists() && !held(&path) {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if name.starts_with(OWNED_PREFIX) && held(&shared_root.join(format!("{name}{LOCK_SUFFIX}")))
        {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {
                let _ = std::fs::remove_file(shared_root.join(format!("{name}{LOCK_SUFFIX}")));
            }
            // Another starting process may have removed it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CoreError::io(format!("removing {}", path.display()), e)),
        }
    }
    Ok(())
}

/// Whether a live process holds the lock file at `path`.
fn held(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        // Unknown: keep the folder rather than risk removing a live one.
        Err(std::fs::TryLockError::Error(_)) => true,
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
        assert!(!cache.root.join("a").exists());
        assert!(again.dir.exists());
        assert!(cache.bytes() <= 200);

        let mut bad = file("x/a.svs", &a);
        bad.sha256 = "00".repeat(32);
        let err = cache.get("c", &[bad], &store).await.unwrap_err();
        assert!(matches!(err, CoreError::Integrity(_)), "{err}");
        assert!(!cache.root.join("c").exists());
    }

    #[tokio::test]
    async fn a_purged_slide_leaves_every_process_folder() {
        use object_store::ObjectStoreExt as _;

        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("cache");
        let store = open_store("memory://", &Default::default()).unwrap();
        let data = vec![9u8; 64];
        put_bytes(&store, "research/slides/rs-1.tiff", data.clone())
            .await
            .unwrap();
        let slide = file("research/slides/rs-1.tiff", &data);
        // Two processes on one node, both with a copy; a third slide stays.
        let worker = SlideCache::new(&shared, 1 << 20).unwrap();
        let forgetter = SlideCache::new(&shared, 1 << 20).unwrap();
        let held = worker
            .get("rs-1", std::slice::from_ref(&slide), &store)
            .await
            .unwrap();
        let mut open = std::fs::File::open(held.dir.join("rs-1.tiff")).unwrap();
        forgetter
            .get("rs-1", std::slice::from_ref(&slide), &store)
            .await
            .unwrap();
        let other = data.clone();
        put_bytes(&store, "research/slides/rs-2.tiff", other.clone())
            .await
            .unwrap();
        worker
            .get("rs-2", &[file("research/slides/rs-2.tiff", &other)], &store)
            .await
            .unwrap();

        // The object goes first, then the process running the forget job purges.
        store
            .delete(&object_store::path::Path::from("research/slides/rs-1.tiff"))
            .await
            .unwrap();
        assert_eq!(forgetter.purge("rs-1").unwrap(), 2);
        assert!(!worker.root.join("rs-1").exists() && !forgetter.root.join("rs-1").exists());
        assert!(worker.root.join("rs-2").exists(), "other slides stay");
        // A reader with the file open keeps reading; the next open anywhere misses.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut open, &mut bytes).unwrap();
        assert_eq!(bytes, data);
        assert!(
            worker
                .get("rs-1", std::slice::from_ref(&slide), &store)
                .await
                .is_err()
        );
        assert_eq!(
            forgetter.purge("rs-1").unwrap(),
            0,
            "purging twice is harmless"
        );
        assert!(forgetter.purge("../x").is_err());
    }

    #[tokio::test]
    async fn a_second_process_leaves_a_live_cache_alone() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("cache");
        let store = open_store("memory://", &Default::default()).unwrap();
        let data = vec![7u8; 64];
        put_bytes(&store, "s/a.svs", data.clone()).await.unwrap();
        let server = SlideCache::new(&shared, 1 << 20).unwrap();
        let held = server
            .get("a", &[file("s/a.svs", &data)], &store)
            .await
            .unwrap();
        // What a crashed process left: a folder whose lock nobody holds, and an older layout.
        std::fs::create_dir_all(shared.join("proc-dead/x")).unwrap();
        std::fs::write(shared.join("proc-dead.lock"), b"").unwrap();
        std::fs::create_dir_all(shared.join("old-slide")).unwrap();

        // An admin command starting beside the server.
        let admin = SlideCache::new(&shared, 1 << 20).unwrap();
        assert_eq!(std::fs::read(held.dir.join("a.svs")).unwrap(), data);
        assert!(!shared.join("proc-dead").exists() && !shared.join("proc-dead.lock").exists());
        assert!(!shared.join("old-slide").exists());
        drop(admin);
        drop(held);

        // A folder removed from under the cache is copied again.
        std::fs::remove_dir_all(server.root.join("a")).unwrap();
        let again = server
            .get("a", &[file("s/a.svs", &data)], &store)
            .await
            .unwrap();
        assert_eq!(std::fs::read(again.dir.join("a.svs")).unwrap(), data);
    }
}
