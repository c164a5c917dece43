//! Slide upload: a tus 1.0 server, validation of each upload in a child process, and
//! registration of valid slides in the clinical tier.
//!
//! Flow: `POST /api/v1/uploads` reserves an upload (name, size, whole-file SHA-256);
//! `PATCH` appends chunks (each optionally checksummed) to a staging file whose length is the
//! upload's offset, so a restarted server resumes exactly where the bytes stopped; the last
//! chunk triggers [`register`]: digest check, unzip if needed, validation, storage, the slide
//! row and the audit entry. Any failure leaves no row, no object and no staging file.
//!
//! DICOM series may also arrive instance by instance over STOW-RS ([`stow`], routed by the
//! server): each series is registered through the same steps as a zip of its instances.
//!
//! The staging folder (`ingest.staging_dir`) may be shared by several replicas: a request that
//! writes to an upload holds a lock on its staging file, so one upload is written by one
//! request at a time whichever replica takes it, and the offset is read from the shared file.

pub mod client;
pub mod names;
pub mod register;
pub mod slides;
pub mod stow;
pub mod tus;
pub mod unzip;
mod upload;
pub mod validate;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pathfed_core::Platform;
use pathfed_core::accounts::Role;
use sha2::Sha256;

pub use tus::router;

/// A lock that serialises work on one key (an upload, a digest).
type Gate = Arc<tokio::sync::Mutex<()>>;

/// The upload service's state; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

struct Inner {
    platform: Platform,
    validator: PathBuf,
    staging: PathBuf,
    /// One request at a time per upload in this process (the staging file's lock does the same
    /// across processes; see `tus::StagedFile`).
    upload_locks: Mutex<HashMap<String, Gate>>,
    /// Whole-file digests carried across chunks: (offset hashed so far, hasher). Lost on
    /// restart, and stale once another replica appended to the upload; either way the staged
    /// file is hashed again at the end.
    digests: Mutex<HashMap<String, (u64, Sha256)>>,
    /// One registration at a time per (hospital, digest), so identical parallel uploads
    /// make one slide.
    registrations: Mutex<HashMap<(String, String), Gate>>,
}

impl Ingest {
    /// An upload service validating with `validator` (this program; it has `slide validate`),
    /// staging uploads in the configured folder (`DATA_DIR/staging` unless set).
    pub fn new(platform: Platform, validator: &Path) -> std::io::Result<Self> {
        let staging = platform.config.staging_dir();
        std::fs::create_dir_all(&staging)?;
        Ok(Self {
            inner: Arc::new(Inner {
                platform,
                validator: validator.to_path_buf(),
                staging,
                upload_locks: Mutex::default(),
                digests: Mutex::default(),
                registrations: Mutex::default(),
            }),
        })
    }

    /// The platform.
    pub fn platform(&self) -> &Platform {
        &self.inner.platform
    }

    /// The staging folder (tests check it is left empty).
    pub fn staging_dir(&self) -> &Path {
        &self.inner.staging
    }
}

/// Whether a role may upload slides (over tus or STOW-RS): clinical staff and admins.
pub fn can_upload(role: Role) -> bool {
    matches!(
        role,
        Role::Submitter | Role::Pathologist | Role::Admin | Role::PlatformAdmin
    )
}

fn keyed_lock<K: std::hash::Hash + Eq + Clone>(map: &Mutex<HashMap<K, Gate>>, key: &K) -> Gate {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    // Drop gates nobody waits on, so the map does not grow with every upload ever made.
    map.retain(|_, gate| Arc::strong_count(gate) > 1);
    map.entry(key.clone()).or_default().clone()
}
