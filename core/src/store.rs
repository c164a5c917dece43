//! The object store: originals, thumbnails and later research data, addressed by key.
//!
//! Chosen by URL: `file:///dir` (the default, `DATA_DIR/objects`), `s3://bucket[/prefix]` with
//! the `[s3]` options, or `memory://` for unit tests. Objects are written once, streamed from
//! local files so a multi-gigabyte slide never sits in memory. A file the caller hands over for
//! good ([`adopt_file`]) becomes a local object by hard link rather than by copy.

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::S3Config;
use crate::error::{CoreError, CoreResult};

/// A shared object store; dereferences to [`ObjectStore`].
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Set for `file://` stores, whose objects are plain files that can be linked in.
    local: Option<Arc<LocalFileSystem>>,
}

impl Store {
    fn remote(objects: impl ObjectStore) -> Self {
        Self {
            objects: Arc::new(objects),
            local: None,
        }
    }
}

impl Deref for Store {
    type Target = dyn ObjectStore;

    fn deref(&self) -> &Self::Target {
        self.objects.as_ref()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.objects, f)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.objects, f)
    }
}

/// Opens the store a URL names.
pub fn open_store(url: &str, s3: &S3Config) -> CoreResult<Store> {
    let parsed = url::Url::parse(url)
        .map_err(|e| CoreError::Invalid(format!("object store URL {url:?}: {e}")))?;
    match parsed.scheme() {
        "memory" => Ok(Store::remote(InMemory::new())),
        "file" => {
            let dir = parsed.to_file_path().map_err(|()| {
                CoreError::Invalid(format!("object store URL {url:?}: not a path"))
            })?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| CoreError::io(format!("creating {}", dir.display()), e))?;
            // Clinical originals must survive a power cut once the upload has been answered.
            let local = Arc::new(LocalFileSystem::new_with_prefix(dir)?.with_fsync(true));
            Ok(Store {
                objects: local.clone(),
                local: Some(local),
            })
        }
        "s3" => {
            let bucket = parsed.host_str().ok_or_else(|| {
                CoreError::Invalid(format!("object store URL {url:?}: no bucket"))
            })?;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(s3.region.clone().unwrap_or_else(|| "us-east-1".into()))
                .with_allow_http(s3.allow_http);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            let store = builder.build()?;
            let prefix = parsed.path().trim_matches('/');
            if prefix.is_empty() {
                Ok(Store::remote(store))
            } else {
                Ok(Store::remote(PrefixStore::new(store, prefix)))
            }
        }
        other => Err(CoreError::Invalid(format!(
            "object store URL {url:?}: unsupported scheme {other:?} (use file://, s3:// or memory://)"
        ))),
    }
}

/// Streams a local file into the store under `key`; the object appears only when complete.
pub async fn put_file(store: &Store, key: &str, file: &Path) -> CoreResult<()> {
    let mut source = tokio::fs::File::open(file)
        .await
        .map_err(|e| CoreError::io(format!("opening {}", file.display()), e))?;
    let mut writer =
        BufWriter::with_capacity(store.objects.clone(), ObjectPath::from(key), 16 << 20);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = source
            .read(&mut buf)
            .await
            .map_err(|e| CoreError::io(format!("reading {}", file.display()), e))?;
        if n == 0 {
            break;
        }
        if let Err(e) = writer.write_all(&buf[..n]).await {
            let _ = writer.abort().await;
            return Err(CoreError::io(format!("storing {key}"), e));
        }
    }
    writer
        .shutdown()
        .await
        .map_err(|e| CoreError::io(format!("storing {key}"), e))
}

/// Stores a local file the caller will not change again under `key`.
///
/// On a `file://` store on the same filesystem the object is a hard link to `file`: no bytes
/// are copied, and the caller may delete its own name afterwards. Anywhere else it is copied
/// like [`put_file`].
pub async fn adopt_file(store: &Store, key: &str, file: &Path) -> CoreResult<()> {
    let Some(local) = &store.local else {
        return put_file(store, key, file).await;
    };
    let target = local.path_to_filesystem(&ObjectPath::from(key))?;
    let source = file.to_path_buf();
    let linked = tokio::task::spawn_blocking(move || link_durably(&source, &target))
        .await
        .map_err(|e| CoreError::io(format!("storing {key}"), std::io::Error::other(e)))?;
    match linked {
        Ok(()) => Ok(()),
        Err(e) if link_unsupported(&e) => {
            tracing::debug!(key, error = %e, "cannot link into the object store; copying");
            put_file(store, key, file).await
        }
        Err(e) => Err(CoreError::io(format!("storing {key}"), e)),
    }
}

/// Links `source` at `target` (the link appears whole, at once), then makes both the data and
/// the new directory entry durable.
fn link_durably(source: &Path, target: &Path) -> std::io::Result<()> {
    std::fs::File::open(source)?.sync_all()?;
    let parent = target
        .parent()
        .ok_or_else(|| std::io::Error::other("object path has no folder"))?;
    std::fs::create_dir_all(parent)?;
    match std::fs::hard_link(source, target) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if same_file(source, target)? {
                return Ok(());
            }
            // Objects are overwritten whole: link beside the old one, then swap names.
            let beside = parent.join(format!(".adopt-{}", uuid::Uuid::new_v4()));
            std::fs::hard_link(source, &beside)?;
            std::fs::rename(&beside, target)?;
        }
        other => other?,
    }
    std::fs::File::open(parent)?.sync_all()
}

fn same_file(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

/// Whether a failed link means "copy instead" (another filesystem, no link support).
fn link_unsupported(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::CrossesDevices | ErrorKind::Unsupported | ErrorKind::PermissionDenied
    ) || error.raw_os_error() == Some(31) // EMLINK: the source has too many links already
}

/// Stores a small object from memory.
pub async fn put_bytes(store: &Store, key: &str, bytes: Vec<u8>) -> CoreResult<()> {
    store.put(&ObjectPath::from(key), bytes.into()).await?;
    Ok(())
}

/// Reads a small object into memory.
pub async fn get_bytes(store: &Store, key: &str) -> CoreResult<Vec<u8>> {
    Ok(store
        .get(&ObjectPath::from(key))
        .await?
        .bytes()
        .await?
        .to_vec())
}

/// Copies an object to a local file, returning the SHA-256 (hex) of what was written.
pub async fn get_to_file(store: &Store, key: &str, file: &Path) -> CoreResult<String> {
    let mut stream = store.get(&ObjectPath::from(key)).await?.into_stream();
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| CoreError::io(format!("creating {}", file.display()), e))?;
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| CoreError::io(format!("writing {}", file.display()), e))?;
    }
    out.flush()
        .await
        .map_err(|e| CoreError::io(format!("writing {}", file.display()), e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Deletes every object under `prefix` (a slide's folder).
pub async fn delete_prefix(store: &Store, prefix: &str) -> CoreResult<()> {
    let prefix = ObjectPath::from(prefix);
    let keys: Vec<_> = store
        .list(Some(&prefix))
        .map(|meta| meta.map(|m| m.location))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for key in keys {
        store.delete(&key).await?;
    }
    Ok(())
}

/// Keys of every object under `prefix` (empty for an unknown prefix).
pub async fn list_keys(store: &Store, prefix: &str) -> CoreResult<Vec<String>> {
    let prefix = ObjectPath::from(prefix);
    let mut keys = Vec::new();
    let mut listing = store.list(Some(&prefix));
    while let Some(meta) = listing.next().await {
        keys.push(meta?.location.to_string());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_round_trip_and_prefix_delete() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("objects").display());
        let store = open_store(&url, &S3Config::default()).unwrap();
        let src = dir.path().join("src.bin");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        put_file(&store, "clinical/h/s/original/a.svs", &src)
            .await
            .unwrap();
        put_bytes(&store, "clinical/h/s/thumbnail.jpg", vec![1, 2, 3])
            .await
            .unwrap();
        let back = dir.path().join("back.bin");
        let digest = get_to_file(&store, "clinical/h/s/original/a.svs", &back)
            .await
            .unwrap();
        assert_eq!(digest, hex::encode(Sha256::digest(&data)));
        assert_eq!(std::fs::read(&back).unwrap(), data);
        assert_eq!(list_keys(&store, "clinical/h/s").await.unwrap().len(), 2);
        delete_prefix(&store, "clinical/h/s").await.unwrap();
        assert!(list_keys(&store, "clinical/h").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn adopted_files_are_linked_locally_and_copied_elsewhere() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let local = open_store(
            &format!("file://{}", objects.display()),
            &S3Config::default(),
        )
        .unwrap();
        let memory = open_store("memory://", &S3Config::default()).unwrap();
        let src = dir.path().join("staged.part");
        std::fs::write(&src, b"slide bytes").unwrap();
        for store in [&local, &memory] {
            adopt_file(store, "clinical/h/s/original/a.svs", &src)
                .await
                .unwrap();
            // Adopting again replaces the object rather than failing.
            adopt_file(store, "clinical/h/s/original/a.svs", &src)
                .await
                .unwrap();
            let back = get_bytes(store, "clinical/h/s/original/a.svs")
                .await
                .unwrap();
            assert_eq!(back, b"slide bytes");
            assert_eq!(list_keys(store, "clinical/h/s").await.unwrap().len(), 1);
        }
        let stored = objects.join("clinical/h/s/original/a.svs");
        assert_eq!(
            std::fs::metadata(&stored).unwrap().ino(),
            std::fs::metadata(&src).unwrap().ino(),
            "a local object should share the staged file's inode"
        );
        std::fs::remove_file(&src).unwrap();
        assert_eq!(std::fs::read(&stored).unwrap(), b"slide bytes");
        let other = dir.path().join("other.part");
        std::fs::write(&other, b"other bytes").unwrap();
        adopt_file(&local, "clinical/h/s/original/a.svs", &other)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&stored).unwrap(), b"other bytes");
        assert_eq!(list_keys(&local, "clinical/h/s").await.unwrap().len(), 1);
    }

    #[test]
    fn unknown_schemes_are_refused() {
        let err = open_store("ftp://x/y", &S3Config::default()).err().unwrap();
        assert!(err.to_string().contains("unsupported scheme"), "{err}");
    }
}
