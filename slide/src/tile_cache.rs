//! The decoded-tile cache one open slide keeps: decoded tiles (TIFF chunks, DICOM frames) by
//! (image, index), evicted least recently used once their total bytes pass the capacity. Shared
//! by the readers so that each holds a byte bound, not a count, whatever its tile size.

use std::sync::{Arc, Mutex};

/// A tile's place: (image or instance, tile or frame index).
pub(crate) type TileKey = (usize, usize);

struct Entries {
    entries: lru::LruCache<TileKey, Arc<Vec<u8>>>,
    bytes: usize,
}

/// Decoded tiles of one slide, at most `capacity` bytes; safe to share between threads.
pub(crate) struct TileCache {
    inner: Mutex<Entries>,
    capacity: usize,
}

impl TileCache {
    /// An empty cache holding at most `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Entries {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            capacity,
        }
    }

    /// The tile at `key`, decoding it with `decode` (outside the lock) when it is not held; a
    /// poisoned lock only costs the caching.
    pub(crate) fn get_or_decode(
        &self,
        key: TileKey,
        decode: impl FnOnce() -> crate::Result<Vec<u8>>,
    ) -> crate::Result<Arc<Vec<u8>>> {
        if let Ok(mut cache) = self.inner.lock()
            && let Some(hit) = cache.entries.get(&key)
        {
            return Ok(Arc::clone(hit));
        }
        let pixels = Arc::new(decode()?);
        if pixels.len() <= self.capacity
            && let Ok(mut cache) = self.inner.lock()
        {
            cache.bytes += pixels.len();
            if let Some(old) = cache.entries.put(key, Arc::clone(&pixels)) {
                cache.bytes -= old.len();
            }
            while cache.bytes > self.capacity {
                match cache.entries.pop_lru() {
                    Some((_, evicted)) => cache.bytes -= evicted.len(),
                    None => break,
                }
            }
        }
        Ok(pixels)
    }
}
