//! Backups that restore: a consistent online copy of the database, the object store and the
//! secret keys, kept in generations, and the rebuild of a platform from one of them.
//!
//! A backup folder holds:
//! - `generations/<UTC time>/manifest.json`: what the generation holds ([`Manifest`]): the
//!   database dump's file name and SHA-256, every object's key, SHA-256 and size, row counts.
//!   It is written last, so a generation without one is unfinished and is removed by the next
//!   run.
//! - `generations/<UTC time>/database.sqlite` (SQLite's `VACUUM INTO`, a consistent snapshot
//!   taken while the platform runs) or `database.pgdump` (`pg_dump --format=custom`, one
//!   transaction's snapshot).
//! - `objects/<first two hex digits>/<SHA-256>`: the objects' contents, once each whatever the
//!   number of keys or generations holding them. An object unchanged since the previous
//!   generation (same key, size, time and tag) is not read again; new content is copied once.
//! - `keys/<UTC time>.keys.enc` (or the folder `--keys-out` names): the files of
//!   `DATA_DIR/keys`, sealed with AES-256-GCM under a key derived from a passphrase by
//!   Argon2id. The database alone must not reveal patients, so the keys belong elsewhere than
//!   the backup: copy this file, and keep the passphrase, apart from it. The sealed part also
//!   covers the generation's name and the SHA-256 of its exact `manifest.json`: the manifest
//!   (and through its hashes the dump and every object) cannot be changed, nor a keys file of
//!   another generation slipped in, by anyone without the passphrase.
//!
//! Generations beyond the number kept are removed, then every object no remaining generation
//! holds. Restoring ([`restore`]) needs an empty target (no table with rows, no object, none of
//! the key files in its keys folder) and checks everything it can before writing anything: the
//! passphrase opens the keys, which were sealed for this generation and this very manifest; the
//! dump and every object are present with their recorded SHA-256 and size; each object is
//! hashed again as it is written back.
//!
//! Audit checkpoints ([`crate::audit_checkpoint`]) of rows later than the database snapshot's
//! are left out: they certify rows the snapshot does not hold, and a restored platform would
//! read them as a truncated log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload, WriteMultipart};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit::AuditEvent;
use crate::config::Config;
use crate::db::{Db, DbKind};
use crate::digest::sha256_file;
use crate::error::{CoreError, CoreResult};
use crate::platform::Platform;
use crate::store::{Store, open_store};

/// The format tag of a generation's manifest.
pub const MANIFEST_FORMAT: &str = "pathfed-backup-1";
/// The format tag of a sealed keys file (2: bound to its generation's manifest).
pub const KEYS_FORMAT: &str = "pathfed-keys-2";
/// Shortest passphrase accepted for sealing keys.
pub const PASSPHRASE_MIN_CHARS: usize = 12;
/// A checkpoint whose name gives no row is left out when written this close before the
/// snapshot, or after it: a clock a little off costs one checkpoint (earlier ones remain),
/// never a false "truncated".
const CHECKPOINT_MARGIN_MS: i64 = 2_000;
/// Objects up to this size are restored in one request; larger ones in parts.
const SMALL_OBJECT: u64 = 8 << 20;
/// Argon2id cost: 64 MiB, three passes (a few tenths of a second, once per backup).
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_PASSES: u32 = 3;
const KDF_LANES: u32 = 1;
/// The most Argon2id cost a keys file may ask for: its header is read before anything vouches
/// for it, and an altered one must not make a restore take all the memory or hours.
const KDF_MAX_MEMORY_KIB: u32 = 1024 * 1024;
const KDF_MAX_PASSES: u32 = 10;
const KDF_MAX_LANES: u32 = 16;
/// Tables whose rows each manifest counts.
const COUNTED_TABLES: &[&str] = &[
    "hospitals",
    "users",
    "slides",
    "cases",
    "case_reports",
    "research_slides",
    "models",
    "audit_log",
];

/// One object of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Its key in the object store.
    pub key: String,
    /// SHA-256 (hex) of its content: also its file name under `objects/`.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// When the store last changed it (Unix milliseconds), to spot it unchanged next time.
    pub modified_ms: i64,
    /// The store's tag for this version, when it gives one.
    pub e_tag: Option<String>,
}

/// The database dump of a generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseDump {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// File name in the generation's folder.
    pub file: String,
    /// SHA-256 (hex) of the file.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// What a generation holds: `generations/<name>/manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The generation's name (its UTC time).
    pub generation: String,
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
    /// The pathfed version that made it.
    pub platform_version: String,
    /// The database dump.
    pub database: DatabaseDump,
    /// The sealed keys' file name (in the keys folder).
    pub keys_file: String,
    /// Names of the key files sealed in it.
    pub key_files: Vec<String>,
    /// Keys the platform read from `PATHFED_KEY_*` variables: not in the backup.
    pub environment_keys: Vec<String>,
    /// Rows of the main tables when the backup began.
    pub rows: BTreeMap<String, i64>,
    /// Number of objects.
    pub object_count: u64,
    /// Their bytes.
    pub object_bytes: u64,
    /// Every object, by key.
    pub objects: Vec<ObjectEntry>,
}

/// What a backup or restore reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The database was dumped (backup) or loaded (restore).
    Database {
        /// `sqlite` or `postgres`.
        kind: &'a str,
        /// The dump's bytes.
        bytes: u64,
    },
    /// One object was handled.
    Object {
        /// Objects handled so far, this one included.
        done: u64,
        /// Objects in all.
        total: u64,
        /// Its key.
        key: &'a str,
        /// Its bytes.
        size: u64,
        /// Backup: its content was copied (false: already in the backup). Restore: always true.
        copied: bool,
    },
    /// An old generation was removed.
    Pruned {
        /// Its name.
        generation: &'a str,
    },
}

/// What `pathfed admin backup` asks for.
// No Debug: it holds the passphrase.
#[derive(Clone)]
pub struct BackupOptions {
    /// The backup folder.
    pub out: PathBuf,
    /// Generations to keep (at least 1).
    pub keep: usize,
    /// Where the sealed keys go; `OUT/keys` when `None`.
    pub keys_dir: Option<PathBuf>,
    /// Seals the keys.
    pub passphrase: String,
    /// Recorded in the audit log just before the database is dumped, so the backup holds the
    /// row that says it was made.
    pub audit: Option<AuditEvent>,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    /// The new generation's name.
    pub generation: String,
    /// Its folder.
    pub folder: PathBuf,
    /// The sealed keys file.
    pub keys_file: PathBuf,
    /// Objects in the generation.
    pub objects: u64,
    /// Objects whose content was copied this time.
    pub copied: u64,
    /// Objects whose content the backup already had.
    pub reused: u64,
    /// Bytes copied this time.
    pub bytes_copied: u64,
    /// Bytes of all the generation's objects.
    pub bytes_total: u64,
    /// Audit checkpoints newer than the database snapshot, left out.
    pub skipped_checkpoints: u64,
    /// The database dump.
    pub database: DatabaseDump,
    /// Key files sealed.
    pub key_files: Vec<String>,
    /// Keys set by `PATHFED_KEY_*` variables (not in the backup).
    pub environment_keys: Vec<String>,
    /// Generations removed (beyond the number kept).
    pub pruned: Vec<String>,
    /// Object files removed because no generation holds them any more.
    pub removed_objects: u64,
}

/// What `pathfed admin restore` asks for.
// No Debug: it holds the passphrase.
#[derive(Clone)]
pub struct RestoreOptions {
    /// The backup folder.
    pub from: PathBuf,
    /// The generation; the newest when `None`.
    pub generation: Option<String>,
    /// The sealed keys file; `FROM/keys/<generation>.keys.enc` when `None`.
    pub keys_file: Option<PathBuf>,
    /// Opens the keys.
    pub passphrase: String,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// The generation restored.
    pub manifest: Manifest,
    /// Objects written back (each verified).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Key files written into the data folder.
    pub key_files: Vec<String>,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CoreError {
    let context = context.into();
    move |e| CoreError::io(context, e)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A generation's name: the UTC time to the millisecond, so names sort by age.
fn generation_name(ms: i64) -> CoreResult<String> {
    let at = jiff::Timestamp::from_millisecond(ms)
        .map_err(|e| CoreError::Invalid(format!("the clock reads an impossible time: {e}")))?;
    let utc = at.to_zoned_datetime(jiff::tz::TimeZone::UTC);
    Ok(format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        utc.year(),
        utc.month(),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.millisecond()
    ))
}

fn db_kind(url: &str) -> DbKind {
    if url.starts_with("sqlite:") {
        DbKind::Sqlite
    } else {
        DbKind::Postgres
    }
}

fn kind_name(kind: DbKind) -> &'static str {
    match kind {
        DbKind::Sqlite => "sqlite",
        DbKind::Postgres => "postgres",
    }
}

/// The file of a `sqlite:` URL (`None` for an in-memory database).
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(PathBuf::from(path))
    }
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where the content with this SHA-256 lives in the backup.
fn content_path(objects: &Path, sha256: &str) -> PathBuf {
    objects.join(&sha256[..2]).join(sha256)
}

fn generations_dir(root: &Path) -> PathBuf {
    root.join("generations")
}

/// Names of the finished generations (those with a manifest), oldest first.
pub fn generations(root: &Path) -> CoreResult<Vec<String>> {
    let dir = generations_dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CoreError::io(format!("reading {}", dir.display()), e)),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().join("manifest.json").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Reads a generation's manifest.
pub fn read_manifest(root: &Path, generation: &str) -> CoreResult<Manifest> {
    read_manifest_bytes(root, generation).map(|(manifest, _)| manifest)
}

/// Reads a generation's manifest, with the exact bytes of its file (which the sealed keys
/// vouch for).
fn read_manifest_bytes(root: &Path, generation: &str) -> CoreResult<(Manifest, Vec<u8>)> {
    let path = generations_dir(root).join(generation).join("manifest.json");
    let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| CoreError::Invalid(format!("{} is not a manifest: {e}", path.display())))?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(CoreError::Invalid(format!(
            "{} has format {:?}; this pathfed reads {MANIFEST_FORMAT:?}",
            path.display(),
            manifest.format
        )));
    }
    // Hashes name files in the backup: anything else could point outside it.
    let damaged = std::iter::once(&manifest.database.sha256)
        .chain(manifest.objects.iter().map(|o| &o.sha256))
        .find(|sha| !is_sha256(sha));
    if let Some(bad) = damaged {
        return Err(CoreError::Invalid(format!(
            "{} is damaged: {bad:?} is not a SHA-256",
            path.display()
        )));
    }
    // File names are joined to folders: anything but a plain name could point elsewhere.
    for name in [&manifest.keys_file, &manifest.database.file] {
        if !plain_file_name(name) {
            return Err(CoreError::Invalid(format!(
                "{} is damaged: {name:?} is not a plain file name",
                path.display()
            )));
        }
    }
    Ok((manifest, bytes))
}

/// A file name of its own: not empty, not hidden, no folder separator, nothing that climbs.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute()
        && name.len() <= 255
}

/// Writes `bytes` to `path` whole: a sibling file first, synced, then renamed into place.
async fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> CoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let context = format!("writing {}", path.display());
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let partial = path.with_file_name(format!(
            ".{}.partial",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&partial)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)
    })
    .await
    .map_err(|e| CoreError::io(context.clone(), std::io::Error::other(e)))?
    .map_err(io(context))
}

// ---------------------------------------------------------------------------------------------
// Keys

/// A keys file: the key files' contents sealed under a passphrase.
#[derive(Debug, Serialize, Deserialize)]
struct SealedKeys {
    format: String,
    generation: String,
    /// SHA-256 (hex) of the generation's `manifest.json`. Absent from older formats, which
    /// are then refused by their format tag rather than by a missing field.
    #[serde(default)]
    manifest_sha256: String,
    kdf: String,
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    salt: String,
    cipher: String,
    nonce: String,
    ciphertext: String,
}

impl SealedKeys {
    /// Everything but the ciphertext, bound to it so the header cannot be swapped.
    fn associated_data(&self) -> Vec<u8> {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.format,
            self.generation,
            self.manifest_sha256,
            self.kdf,
            self.memory_kib,
            self.passes,
            self.lanes,
            self.salt,
            self.cipher
        )
        .into_bytes()
    }
}

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    memory_kib: u32,
    passes: u32,
    lanes: u32,
) -> CoreResult<[u8; 32]> {
    let params = argon2::Params::new(memory_kib, passes, lanes, Some(32))
        .map_err(|e| CoreError::Invalid(format!("key derivation parameters: {e}")))?;
    let mut key = [0u8; 32];
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| CoreError::Invalid(format!("deriving a key from the passphrase: {e}")))?;
    Ok(key)
}

/// Seals key files (name → content) under `passphrase`, bound to `generation` and the SHA-256
/// (hex) of its manifest's bytes: the bytes of a keys file.
pub fn seal_keys(
    files: &BTreeMap<String, String>,
    generation: &str,
    manifest_sha256: &str,
    passphrase: &str,
) -> CoreResult<Vec<u8>> {
    if passphrase.chars().count() < PASSPHRASE_MIN_CHARS {
        return Err(CoreError::Invalid(format!(
            "the backup passphrase must have at least {PASSPHRASE_MIN_CHARS} characters"
        )));
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut salt);
    rand::rng().fill_bytes(&mut nonce);
    let mut sealed = SealedKeys {
        format: KEYS_FORMAT.into(),
        generation: generation.into(),
        manifest_sha256: manifest_sha256.into(),
        kdf: "argon2id".into(),
        memory_kib: KDF_MEMORY_KIB,
        passes: KDF_PASSES,
        lanes: KDF_LANES,
        salt: hex::encode(salt),
        cipher: "aes-256-gcm".into(),
        nonce: hex::encode(nonce),
        ciphertext: String::new(),
    };
    let key = derive_key(passphrase, &salt, KDF_MEMORY_KIB, KDF_PASSES, KDF_LANES)?;
    let plain = serde_json::to_vec(files)
        .map_err(|e| CoreError::Invalid(format!("listing the keys: {e}")))?;
    let aad = sealed.associated_data();
    let ciphertext = Aes256Gcm::new((&key).into())
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .map_err(|_| CoreError::Invalid("sealing the keys failed".into()))?;
    sealed.ciphertext = hex::encode(ciphertext);
    let mut bytes = serde_json::to_vec_pretty(&sealed)
        .map_err(|e| CoreError::Invalid(format!("writing the keys file: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Opens a keys file with `passphrase`: key file name → content. It must have been sealed
/// for `generation` and the manifest whose bytes have SHA-256 (hex) `manifest_sha256`. A
/// wrong passphrase and an altered file are told apart from nothing else, and both are
/// refused.
pub fn open_keys(
    bytes: &[u8],
    passphrase: &str,
    generation: &str,
    manifest_sha256: &str,
) -> CoreResult<BTreeMap<String, String>> {
    let sealed: SealedKeys = serde_json::from_slice(bytes)
        .map_err(|e| CoreError::Invalid(format!("not a pathfed keys file: {e}")))?;
    if sealed.format != KEYS_FORMAT || sealed.kdf != "argon2id" || sealed.cipher != "aes-256-gcm" {
        return Err(CoreError::Invalid(format!(
            "keys file format {:?} ({}, {}) is not one this pathfed reads ({KEYS_FORMAT:?})",
            sealed.format, sealed.kdf, sealed.cipher
        )));
    }
    // Nothing vouches for the header before the key is derived: bound what it may cost.
    if sealed.memory_kib > KDF_MAX_MEMORY_KIB
        || sealed.passes > KDF_MAX_PASSES
        || sealed.lanes > KDF_MAX_LANES
    {
        return Err(CoreError::Invalid(format!(
            "the keys file asks for a key derivation of {} KiB, {} passes, {} lanes: more than \
             this pathfed allows ({KDF_MAX_MEMORY_KIB} KiB, {KDF_MAX_PASSES} passes, \
             {KDF_MAX_LANES} lanes); the file was altered",
            sealed.memory_kib, sealed.passes, sealed.lanes
        )));
    }
    // Told before the passphrase is tried, so the answer says what is wrong; a header altered
    // to pass these checks fails the decryption below, which covers it.
    if sealed.generation != generation {
        return Err(CoreError::Invalid(format!(
            "the keys file belongs to generation {}, not to generation {generation}; give the \
             keys file made with that generation",
            sealed.generation
        )));
    }
    if sealed.manifest_sha256 != manifest_sha256 {
        return Err(CoreError::Invalid(format!(
            "the backup's manifest was changed after it was made (its SHA-256 is \
             {manifest_sha256}; the sealed keys recorded {}): the backup cannot be trusted",
            sealed.manifest_sha256
        )));
    }
    let damaged = || CoreError::Invalid("the keys file is damaged".into());
    let salt = hex::decode(&sealed.salt).map_err(|_| damaged())?;
    let nonce: [u8; 12] = hex::decode(&sealed.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(damaged)?;
    let ciphertext = hex::decode(&sealed.ciphertext).map_err(|_| damaged())?;
    let key = derive_key(
        passphrase,
        &salt,
        sealed.memory_kib,
        sealed.passes,
        sealed.lanes,
    )?;
    let aad = sealed.associated_data();
    let plain = Aes256Gcm::new((&key).into())
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| {
            CoreError::Invalid(
                "the passphrase does not open the keys file (wrong passphrase, or the file was \
                 altered)"
                    .into(),
            )
        })?;
    let files: BTreeMap<String, String> = serde_json::from_slice(&plain).map_err(|_| damaged())?;
    for name in files.keys() {
        if !valid_key_file_name(name) {
            return Err(CoreError::Invalid(format!(
                "the keys file names {name:?}, which is not a key file name"
            )));
        }
    }
    Ok(files)
}

/// `<name>.key`, a plain file name: nothing that could climb out of the keys folder.
fn valid_key_file_name(name: &str) -> bool {
    name.ends_with(".key")
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 200
}

/// The key files of the data folder (name → content).
fn read_key_files(config: &Config) -> CoreResult<BTreeMap<String, String>> {
    let dir = config.data_dir.join("keys");
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(CoreError::io(format!("reading {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(format!("reading {}", dir.display())))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_key_file_name(&name) || !entry.path().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .map_err(io(format!("reading {}", entry.path().display())))?;
        files.insert(name, text.trim().to_string());
    }
    Ok(files)
}

/// Names of the `PATHFED_KEY_*` variables set: keys the platform reads from its environment.
fn environment_keys() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("PATHFED_KEY_"))
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL tools

/// `pg_dump` or `pg_restore`: in `PATHFED_PG_BINDIR`, else the newest installed PostgreSQL's
/// `bin` folder, else on the `PATH`.
fn pg_tool(name: &str) -> CoreResult<PathBuf> {
    if let Some(dir) = std::env::var_os("PATHFED_PG_BINDIR") {
        let tool = PathBuf::from(dir).join(name);
        if tool.is_file() {
            return Ok(tool);
        }
        return Err(CoreError::Invalid(format!(
            "{name} is not in PATHFED_PG_BINDIR ({})",
            tool.display()
        )));
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let tool = entry.path().join("bin").join(name);
            tool.is_file().then_some((version, tool))
        })
        .collect();
    versions.sort();
    if let Some((_, tool)) = versions.pop() {
        return Ok(tool);
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|tool| tool.is_file())
        .ok_or_else(|| {
            CoreError::Invalid(format!(
                "{name} (PostgreSQL client tools) is not installed; install it or set \
                 PATHFED_PG_BINDIR"
            ))
        })
}

/// The URL without its password, and the password (for `PGPASSWORD`, so it does not show in
/// the process list).
fn split_password(url: &str) -> CoreResult<(String, Option<String>)> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| CoreError::Invalid(format!("database URL: {e}")))?;
    let password = parsed.password().map(percent_decode);
    if password.is_some() {
        parsed
            .set_password(None)
            .map_err(|()| CoreError::Invalid("database URL: cannot remove the password".into()))?;
    }
    Ok((parsed.to_string(), password))
}

/// Undoes a URL's `%XX` escapes.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex_digit = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
        {
            // Two hex digits make one byte: high * 16 + low is at most 255.
            out.push(u8::try_from(high * 16 + low).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn run_pg_tool(tool: &str, args: &[String], url: &str) -> CoreResult<()> {
    let program = pg_tool(tool)?;
    let (url, password) = split_password(url)?;
    let mut command = tokio::process::Command::new(&program);
    command
        .arg(format!("--dbname={url}"))
        .args(args)
        .stdin(std::process::Stdio::null());
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command
        .output()
        .await
        .map_err(io(format!("running {}", program.display())))?;
    if !output.status.success() {
        return Err(CoreError::Invalid(format!(
            "{tool} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Backup

/// Makes one generation in `options.out`, then removes generations beyond `options.keep` and
/// the objects only they held.
pub async fn backup(
    platform: &Platform,
    options: &BackupOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> CoreResult<BackupSummary> {
    if options.keep == 0 {
        return Err(CoreError::Invalid("keep at least one generation".into()));
    }
    if options.passphrase.chars().count() < PASSPHRASE_MIN_CHARS {
        return Err(CoreError::Invalid(format!(
            "the backup passphrase must have at least {PASSPHRASE_MIN_CHARS} characters"
        )));
    }
    let root = &options.out;
    let keys_dir = options
        .keys_dir
        .clone()
        .unwrap_or_else(|| root.join("keys"));
    for dir in [
        generations_dir(root),
        root.join("objects"),
        keys_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    // Clinical data: readable by the platform's account only, where the file system allows.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
    }
    let lock_path = root.join(".backup.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(format!("opening {}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(CoreError::Invalid(format!(
                "another backup is writing to {}; let it finish first",
                root.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(CoreError::io(format!("locking {}", lock_path.display()), e));
        }
    }
    remove_unfinished(root)?;
    let previous = match generations(root)?.last() {
        Some(name) => Some(read_manifest(root, name)?),
        None => None,
    };
    let (generation, folder) = new_generation_folder(root).await?;
    let keys_file = keys_dir.join(format!("{generation}.keys.enc"));
    let made = make_generation(
        platform,
        options,
        &generation,
        &folder,
        &keys_file,
        previous.as_ref(),
        progress,
    )
    .await;
    let mut summary = match made {
        Ok(summary) => summary,
        Err(e) => {
            // Half a generation is no generation: nothing of it stays (its copied objects go
            // with the next run's clean-up).
            let _ = std::fs::remove_dir_all(&folder);
            let _ = std::fs::remove_file(&keys_file);
            return Err(e);
        }
    };
    let all = generations(root)?;
    let excess = all.len().saturating_sub(options.keep);
    for old in &all[..excess] {
        let dir = generations_dir(root).join(old);
        std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        let old_keys = keys_dir.join(format!("{old}.keys.enc"));
        if let Err(e) = std::fs::remove_file(&old_keys)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(CoreError::io(format!("removing {}", old_keys.display()), e));
        }
        progress(Progress::Pruned { generation: old });
        summary.pruned.push(old.clone());
    }
    summary.removed_objects = collect_garbage(root)?;
    drop(lock);
    Ok(summary)
}

/// Removes generation folders without a manifest (runs that stopped half-way).
fn remove_unfinished(root: &Path) -> CoreResult<()> {
    let dir = generations_dir(root);
    for entry in std::fs::read_dir(&dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .flatten()
    {
        if entry.path().is_dir() && !entry.path().join("manifest.json").is_file() {
            tracing::info!(folder = %entry.path().display(), "removing an unfinished generation");
            std::fs::remove_dir_all(entry.path())
                .map_err(io(format!("removing {}", entry.path().display())))?;
        }
    }
    Ok(())
}

async fn new_generation_folder(root: &Path) -> CoreResult<(String, PathBuf)> {
    loop {
        let name = generation_name(now_ms())?;
        let folder = generations_dir(root).join(&name);
        match std::fs::create_dir(&folder) {
            Ok(()) => return Ok((name, folder)),
            // Two runs within one millisecond: the next millisecond names this one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            Err(e) => return Err(CoreError::io(format!("creating {}", folder.display()), e)),
        }
    }
}

async fn make_generation(
    platform: &Platform,
    options: &BackupOptions,
    generation: &str,
    folder: &Path,
    keys_file: &Path,
    previous: Option<&Manifest>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> CoreResult<BackupSummary> {
    let key_files = read_key_files(&platform.config)?;
    let environment_keys = environment_keys();

    let rows = count_rows(&platform.db).await?;
    if let Some(event) = &options.audit {
        platform
            .audit(event.clone().detail(format!("generation {generation}")))
            .await?;
    }
    // Read before the dump: every row up to here is in it (rows appended meanwhile may be too;
    // leaving out their checkpoints only costs a checkpoint).
    let head_seq = audit_head(&platform.db).await?;
    let snapshot_ms = now_ms();
    let database = dump_database(platform, folder).await?;
    progress(Progress::Database {
        kind: &database.kind,
        bytes: database.size,
    });

    let mut listed: Vec<ObjectMeta> = Vec::new();
    let mut listing = platform.store.list(None);
    while let Some(meta) = listing.next().await {
        listed.push(meta?);
    }
    listed.sort_by(|a, b| a.location.cmp(&b.location));
    let before = listed.len();
    listed.retain(|meta| !later_checkpoint(meta, head_seq, snapshot_ms));
    let skipped_checkpoints = (before - listed.len()) as u64;

    let known: BTreeMap<&str, &ObjectEntry> = previous
        .map(|m| m.objects.iter().map(|o| (o.key.as_str(), o)).collect())
        .unwrap_or_default();
    let objects_dir = options.out.join("objects");
    let total = listed.len() as u64;
    let mut entries = Vec::with_capacity(listed.len());
    let (mut copied, mut reused, mut bytes_copied, mut bytes_total) = (0u64, 0u64, 0u64, 0u64);
    for (i, meta) in listed.iter().enumerate() {
        let key: &str = meta.location.as_ref();
        let modified_ms = meta.last_modified.timestamp_millis();
        let unchanged = known.get(key).filter(|old| {
            old.size == meta.size
                && old.modified_ms == modified_ms
                && old.e_tag == meta.e_tag
                && std::fs::metadata(content_path(&objects_dir, &old.sha256))
                    .is_ok_and(|m| m.len() == old.size)
        });
        let (entry, was_copied) = match unchanged {
            Some(old) => (ObjectEntry::clone(old), false),
            None => {
                let (sha256, size, was_copied) =
                    copy_object(&platform.store, &meta.location, &objects_dir).await?;
                (
                    ObjectEntry {
                        key: key.to_string(),
                        sha256,
                        size,
                        modified_ms,
                        e_tag: meta.e_tag.clone(),
                    },
                    was_copied,
                )
            }
        };
        if was_copied {
            copied += 1;
            bytes_copied += entry.size;
        } else {
            reused += 1;
        }
        bytes_total += entry.size;
        progress(Progress::Object {
            done: i as u64 + 1,
            total,
            key,
            size: entry.size,
            copied: was_copied,
        });
        entries.push(entry);
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        generation: generation.into(),
        created_at: jiff::Timestamp::from_millisecond(snapshot_ms)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        platform_version: env!("CARGO_PKG_VERSION").into(),
        database: database.clone(),
        keys_file: keys_file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string(),
        key_files: key_files.keys().cloned().collect(),
        environment_keys: environment_keys.clone(),
        rows,
        object_count: total,
        object_bytes: bytes_total,
        objects: entries,
    };
    let mut text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CoreError::Invalid(format!("writing the manifest: {e}")))?;
    text.push(b'\n');
    // Sealed last, over the manifest's exact bytes: without the passphrase, neither the
    // manifest nor (through its hashes) the dump and objects can be changed unnoticed. The
    // manifest still goes last of all: it marks the generation finished.
    let manifest_sha256 = hex::encode(Sha256::digest(&text));
    let sealed = seal_keys(
        &key_files,
        generation,
        &manifest_sha256,
        &options.passphrase,
    )?;
    write_atomically(keys_file, &sealed, 0o600).await?;
    write_atomically(&folder.join("manifest.json"), &text, 0o600).await?;
    Ok(BackupSummary {
        generation: generation.into(),
        folder: folder.to_path_buf(),
        keys_file: keys_file.to_path_buf(),
        objects: total,
        copied,
        reused,
        bytes_copied,
        bytes_total,
        skipped_checkpoints,
        database,
        key_files: key_files.into_keys().collect(),
        environment_keys,
        pruned: Vec::new(),
        removed_objects: 0,
    })
}

/// The audit log's last sequence number (0 when empty).
async fn audit_head(db: &Db) -> CoreResult<i64> {
    let last: Option<i64> = sqlx::query("SELECT MAX(seq) AS m FROM audit_log")
        .fetch_one(db.pool())
        .await?
        .try_get("m")?;
    Ok(last.unwrap_or(0))
}

/// Whether an object is an audit checkpoint of a row after `head_seq` (named
/// `{seq:020}-{at}.json`), or, for a name without a row, one written after the snapshot.
fn later_checkpoint(meta: &ObjectMeta, head_seq: i64, snapshot_ms: i64) -> bool {
    let key: &str = meta.location.as_ref();
    let Some(name) = key
        .strip_prefix(crate::audit_checkpoint::PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return false;
    };
    match name
        .split('-')
        .next()
        .and_then(|seq| seq.parse::<i64>().ok())
    {
        Some(seq) => seq > head_seq,
        None => meta.last_modified.timestamp_millis() >= snapshot_ms - CHECKPOINT_MARGIN_MS,
    }
}

async fn count_rows(db: &Db) -> CoreResult<BTreeMap<String, i64>> {
    let mut rows = BTreeMap::new();
    for table in COUNTED_TABLES {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(db.pool())
        .await?
        .try_get("n")?;
        rows.insert((*table).to_string(), n);
    }
    Ok(rows)
}

/// Dumps the database into the generation's folder.
async fn dump_database(platform: &Platform, folder: &Path) -> CoreResult<DatabaseDump> {
    let kind = platform.db.kind();
    let file = match kind {
        DbKind::Sqlite => "database.sqlite",
        DbKind::Postgres => "database.pgdump",
    };
    let path = folder.join(file);
    match kind {
        DbKind::Sqlite => {
            let target = path.to_str().ok_or_else(|| {
                CoreError::Invalid(format!("{} is not a UTF-8 path", path.display()))
            })?;
            // One read transaction's view, written as a compact database file, while the
            // platform keeps working.
            sqlx::query("VACUUM INTO $1")
                .bind(target)
                .execute(platform.db.pool())
                .await?;
        }
        DbKind::Postgres => {
            let args = vec![
                "--format=custom".to_string(),
                "--no-owner".to_string(),
                "--no-privileges".to_string(),
                format!("--file={}", path.display()),
            ];
            run_pg_tool("pg_dump", &args, &platform.config.database_url()).await?;
        }
    }
    let (sha256, size) = hash_file(&path).await?;
    Ok(DatabaseDump {
        kind: kind_name(kind).into(),
        file: file.into(),
        sha256,
        size,
    })
}

/// SHA-256 (hex) and size of a local file, read off the async threads.
async fn hash_file(path: &Path) -> CoreResult<(String, u64)> {
    let owned = path.to_path_buf();
    let digest = tokio::task::spawn_blocking(move || {
        let size = std::fs::metadata(&owned)?.len();
        sha256_file(&owned, |_| {}).map(|sha| (sha, size))
    })
    .await
    .map_err(|e| CoreError::io("hashing", std::io::Error::other(e)))?;
    digest.map_err(io(format!("hashing {}", path.display())))
}

/// Streams one object into the backup while hashing it; returns its SHA-256, its size and
/// whether its content was new to the backup.
async fn copy_object(
    store: &Store,
    location: &ObjectPath,
    objects_dir: &Path,
) -> CoreResult<(String, u64, bool)> {
    let incoming = objects_dir.join(format!(".incoming-{}", crate::db::new_id()));
    let streamed = stream_to_file(store, location, &incoming).await;
    let (sha256, size) = match streamed {
        Ok(done) => done,
        Err(e) => {
            let _ = tokio::fs::remove_file(&incoming).await;
            return Err(e);
        }
    };
    let target = content_path(objects_dir, &sha256);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == size) {
        let _ = tokio::fs::remove_file(&incoming).await;
        return Ok((sha256, size, false));
    }
    let parent = objects_dir.join(&sha256[..2]);
    std::fs::create_dir_all(&parent).map_err(io(format!("creating {}", parent.display())))?;
    std::fs::rename(&incoming, &target).map_err(io(format!("storing {}", target.display())))?;
    Ok((sha256, size, true))
}

async fn stream_to_file(
    store: &Store,
    location: &ObjectPath,
    file: &Path,
) -> CoreResult<(String, u64)> {
    let mut stream = store.get(location).await?.into_stream();
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(io(format!("creating {}", file.display())))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        out.write_all(&chunk)
            .await
            .map_err(io(format!("writing {}", file.display())))?;
    }
    out.flush()
        .await
        .map_err(io(format!("writing {}", file.display())))?;
    out.sync_all()
        .await
        .map_err(io(format!("writing {}", file.display())))?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Removes object files no generation holds (and leftovers of interrupted copies); returns
/// how many went.
fn collect_garbage(root: &Path) -> CoreResult<u64> {
    let mut held: BTreeSet<String> = BTreeSet::new();
    for generation in generations(root)? {
        held.extend(
            read_manifest(root, &generation)?
                .objects
                .into_iter()
                .map(|o| o.sha256),
        );
    }
    let objects = root.join("objects");
    let mut removed = 0;
    for entry in std::fs::read_dir(&objects)
        .map_err(io(format!("reading {}", objects.display())))?
        .flatten()
    {
        let path = entry.path();
        if path.is_file() {
            // An interrupted copy's `.incoming-…` file.
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
            continue;
        }
        for file in std::fs::read_dir(&path)
            .map_err(io(format!("reading {}", path.display())))?
            .flatten()
        {
            let name = file.file_name().to_string_lossy().to_string();
            if !held.contains(&name) {
                std::fs::remove_file(file.path())
                    .map_err(io(format!("removing {}", file.path().display())))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

// ---------------------------------------------------------------------------------------------
// Restore

/// Rebuilds the configured platform (database, object store, keys) from a generation. The
/// target must be empty; nothing is written until the passphrase, the dump and every object
/// have been checked.
pub async fn restore(
    config: &Config,
    options: &RestoreOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> CoreResult<RestoreSummary> {
    let root = &options.from;
    let all = generations(root)?;
    let generation = match &options.generation {
        Some(name) if all.contains(name) => name.clone(),
        Some(name) => {
            return Err(CoreError::NotFound(format!(
                "generation {name} in {} (there are: {})",
                root.display(),
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.join(", ")
                }
            )));
        }
        None => all.last().cloned().ok_or_else(|| {
            CoreError::NotFound(format!(
                "a finished backup generation in {}",
                root.display()
            ))
        })?,
    };
    let (manifest, manifest_bytes) = read_manifest_bytes(root, &generation)?;
    if manifest.generation != generation {
        return Err(CoreError::Invalid(format!(
            "the manifest of generation {generation} says it is generation {}: the backup was \
             altered; nothing was restored",
            manifest.generation
        )));
    }
    let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
    let folder = generations_dir(root).join(&generation);

    // 1. The keys open, and were sealed for this generation and this very manifest (a wrong
    // passphrase or an altered backup stops everything before anything is written).
    let keys_path = options
        .keys_file
        .clone()
        .unwrap_or_else(|| root.join("keys").join(&manifest.keys_file));
    let sealed = std::fs::read(&keys_path)
        .map_err(io(format!("reading the keys file {}", keys_path.display())))?;
    let opened = open_keys(&sealed, &options.passphrase, &generation, &manifest_sha256);
    let key_files = opened.map_err(|e| match e {
        CoreError::Invalid(why) => CoreError::Invalid(format!(
            "{}: {why}; nothing was restored",
            keys_path.display()
        )),
        other => other,
    })?;

    // 2. The dump and every object are there, whole.
    let url = config.database_url();
    let kind = db_kind(&url);
    if manifest.database.kind != kind_name(kind) {
        return Err(CoreError::Invalid(format!(
            "generation {generation} holds a {} database; the configured database is {}",
            manifest.database.kind,
            kind_name(kind)
        )));
    }
    if manifest.database.file.contains('/') {
        return Err(CoreError::Invalid(format!(
            "the manifest names the dump {:?}",
            manifest.database.file
        )));
    }
    let dump = folder.join(&manifest.database.file);
    let (dump_sha, _) = hash_file(&dump).await?;
    if dump_sha != manifest.database.sha256 {
        return Err(CoreError::Integrity(format!(
            "the database dump {} (SHA-256 {dump_sha}, the manifest says {}); nothing was \
             restored",
            dump.display(),
            manifest.database.sha256
        )));
    }
    let objects_dir = root.join("objects");
    for entry in &manifest.objects {
        if !is_sha256(&entry.sha256) {
            return Err(CoreError::Invalid(format!(
                "the manifest gives object {} a SHA-256 of {:?}",
                entry.key, entry.sha256
            )));
        }
        ObjectPath::parse(&entry.key).map_err(|e| {
            CoreError::Invalid(format!("the manifest names object {:?}: {e}", entry.key))
        })?;
        let path = content_path(&objects_dir, &entry.sha256);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == entry.size => {}
            Ok(meta) => {
                return Err(CoreError::Integrity(format!(
                    "object {} ({} has {} bytes, not {}); nothing was restored",
                    entry.key,
                    path.display(),
                    meta.len(),
                    entry.size
                )));
            }
            Err(e) => {
                return Err(CoreError::io(
                    format!(
                        "object {} is missing from the backup ({}); nothing was restored",
                        entry.key,
                        path.display()
                    ),
                    e,
                ));
            }
        }
    }

    // 3. The target is empty.
    let store = open_store(&config.object_store_url(), &config.s3)?;
    if let Some(table) = table_with_rows(&url, kind).await? {
        return Err(CoreError::Invalid(format!(
            "the target is not empty: the database's table {table} has rows; restore only into \
             an empty database and object store (nothing was restored)"
        )));
    }
    if let Some(meta) = store.list(None).next().await {
        let meta = meta?;
        return Err(CoreError::Invalid(format!(
            "the target is not empty: the object store holds {} (and maybe more); restore only \
             into an empty database and object store (nothing was restored)",
            meta.location
        )));
    }
    let keys_dir = config.data_dir.join("keys");
    if let Some(name) = key_files
        .keys()
        .find(|name| keys_dir.join(name).symlink_metadata().is_ok())
    {
        return Err(CoreError::Invalid(format!(
            "the target is not empty: its keys folder {} already holds {name}; restore only \
             into a platform without keys, or move them away first (nothing was restored)",
            keys_dir.display()
        )));
    }

    // 4. Write: database, objects, keys.
    match kind {
        DbKind::Sqlite => restore_sqlite(&url, &dump).await?,
        DbKind::Postgres => {
            let args = vec![
                "--no-owner".to_string(),
                "--no-privileges".to_string(),
                "--clean".to_string(),
                "--if-exists".to_string(),
                "--single-transaction".to_string(),
                "--exit-on-error".to_string(),
                dump.display().to_string(),
            ];
            run_pg_tool("pg_restore", &args, &url).await?;
        }
    }
    progress(Progress::Database {
        kind: &manifest.database.kind,
        bytes: manifest.database.size,
    });
    let total = manifest.objects.len() as u64;
    let mut bytes = 0;
    for (i, entry) in manifest.objects.iter().enumerate() {
        let location = ObjectPath::parse(&entry.key).map_err(|e| {
            CoreError::Invalid(format!("the manifest names object {:?}: {e}", entry.key))
        })?;
        let file = content_path(&objects_dir, &entry.sha256);
        upload_verified(&store, &location, &file, entry).await?;
        bytes += entry.size;
        progress(Progress::Object {
            done: i as u64 + 1,
            total,
            key: &entry.key,
            size: entry.size,
            copied: true,
        });
    }
    std::fs::create_dir_all(&keys_dir).map_err(io(format!("creating {}", keys_dir.display())))?;
    for (name, content) in &key_files {
        write_atomically(&keys_dir.join(name), content.as_bytes(), 0o600).await?;
    }
    Ok(RestoreSummary {
        manifest,
        objects: total,
        bytes,
        key_files: key_files.into_keys().collect(),
    })
}

/// The first table (other than the migrations') that has a row, if any.
async fn table_with_rows(url: &str, kind: DbKind) -> CoreResult<Option<String>> {
    let connect_url = match kind {
        DbKind::Sqlite => {
            let Some(path) = sqlite_path(url) else {
                return Ok(None);
            };
            if !path.exists() {
                return Ok(None);
            }
            // Read-write without create: a read-only connection may not open a WAL database.
            format!("sqlite://{}?mode=rw", path.display())
        }
        DbKind::Postgres => url.to_string(),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&connect_url)
        .await?;
    let listing = match kind {
        DbKind::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        }
        DbKind::Postgres => {
            "SELECT CAST(tablename AS TEXT) AS name FROM pg_catalog.pg_tables \
             WHERE schemaname = current_schema()"
        }
    };
    let mut found = None;
    let tables = sqlx::query(listing).fetch_all(&pool).await?;
    for row in tables {
        let table: String = row.try_get("name")?;
        if table == "_sqlx_migrations" {
            continue;
        }
        let quoted = format!("\"{}\"", table.replace('"', "\"\""));
        let any = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 AS present FROM {quoted} LIMIT 1"
        )))
        .fetch_optional(&pool)
        .await?;
        if any.is_some() {
            found = Some(table);
            break;
        }
    }
    pool.close().await;
    Ok(found)
}

/// Puts the dump in place of the (empty) SQLite database file.
async fn restore_sqlite(url: &str, dump: &Path) -> CoreResult<()> {
    let path = sqlite_path(url).ok_or_else(|| {
        CoreError::Invalid(
            "the configured SQLite database is in memory: nothing to restore to".into(),
        )
    })?;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    // A write-ahead log left beside the old file would be replayed into the restored one.
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        if let Err(e) = std::fs::remove_file(&name)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(CoreError::io(
                format!("removing {}", PathBuf::from(name).display()),
                e,
            ));
        }
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".restoring");
    let partial = PathBuf::from(partial);
    tokio::fs::copy(dump, &partial)
        .await
        .map_err(io(format!("copying the dump to {}", partial.display())))?;
    tokio::fs::File::open(&partial)
        .await
        .map_err(io(format!("opening {}", partial.display())))?
        .sync_all()
        .await
        .map_err(io(format!("syncing {}", partial.display())))?;
    std::fs::rename(&partial, &path).map_err(io(format!("placing {}", path.display())))?;
    Ok(())
}

/// Writes a backed-up object to the store, hashing it on the way: a copy that does not match
/// its recorded SHA-256 is not left in the store.
async fn upload_verified(
    store: &Store,
    location: &ObjectPath,
    file: &Path,
    entry: &ObjectEntry,
) -> CoreResult<()> {
    let corrupt = |sha: &str| {
        CoreError::Integrity(format!(
            "object {} in the backup ({} has SHA-256 {sha}, the manifest says {}); the target \
             is incomplete: empty it before restoring again",
            entry.key,
            file.display(),
            entry.sha256
        ))
    };
    if entry.size <= SMALL_OBJECT {
        let bytes = tokio::fs::read(file)
            .await
            .map_err(io(format!("reading {}", file.display())))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != entry.sha256 {
            return Err(corrupt(&sha));
        }
        store.put(location, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let mut source = tokio::fs::File::open(file)
        .await
        .map_err(io(format!("opening {}", file.display())))?;
    let upload = store.put_multipart(location).await?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = match source.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(CoreError::io(format!("reading {}", file.display()), e));
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Err(e) = writer.wait_for_capacity(4).await {
            let _ = writer.abort().await;
            return Err(e.into());
        }
        writer.write(&buf[..n]);
    }
    let sha = hex::encode(hasher.finalize());
    if sha != entry.sha256 {
        let _ = writer.abort().await;
        return Err(corrupt(&sha));
    }
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_open_with_their_passphrase_only() {
        let mut files = BTreeMap::new();
        files.insert("audit.key".to_string(), "ab".repeat(32));
        files.insert("patient-hash.key".to_string(), "cd".repeat(32));
        let generation = "20250101T000000.000Z";
        let manifest = "ef".repeat(32);
        let sealed = seal_keys(&files, generation, &manifest, "correct horse battery").unwrap();
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(!text.contains(&"ab".repeat(32)), "keys sealed in clear");
        assert_eq!(
            open_keys(&sealed, "correct horse battery", generation, &manifest).unwrap(),
            files
        );
        let wrong = open_keys(&sealed, "correct horse batterz", generation, &manifest).unwrap_err();
        assert!(wrong.to_string().contains("passphrase"), "{wrong}");
        // Sealed for one generation and one manifest: another's are refused.
        let other = "20250102T000000.000Z";
        let elsewhere = open_keys(&sealed, "correct horse battery", other, &manifest).unwrap_err();
        assert!(
            elsewhere.to_string().contains("belongs to generation"),
            "{elsewhere}"
        );
        let changed = open_keys(
            &sealed,
            "correct horse battery",
            generation,
            &"12".repeat(32),
        )
        .unwrap_err();
        assert!(
            changed.to_string().contains("manifest was changed"),
            "{changed}"
        );
        // The header is bound to the ciphertext: one edited to match does not open.
        let moved = text.replace(generation, other);
        assert!(open_keys(moved.as_bytes(), "correct horse battery", other, &manifest).is_err());
        let rehashed = text.replace(&manifest, &"12".repeat(32));
        let forged = open_keys(
            rehashed.as_bytes(),
            "correct horse battery",
            generation,
            &"12".repeat(32),
        )
        .unwrap_err();
        assert!(forged.to_string().contains("passphrase"), "{forged}");
        // A header asking for an absurd key derivation is refused before deriving.
        let costly = text.replace("\"memory_kib\": 65536", "\"memory_kib\": 4194304");
        assert_ne!(costly, text);
        let refused = open_keys(
            costly.as_bytes(),
            "correct horse battery",
            generation,
            &manifest,
        )
        .unwrap_err();
        assert!(refused.to_string().contains("more than"), "{refused}");
        let slow = text.replace("\"passes\": 3", "\"passes\": 1000");
        assert_ne!(slow, text);
        assert!(
            open_keys(
                slow.as_bytes(),
                "correct horse battery",
                generation,
                &manifest
            )
            .is_err()
        );
        assert!(seal_keys(&files, "g", &manifest, "short").is_err());
    }

    #[test]
    fn manifest_file_names_are_plain() {
        assert!(plain_file_name("20250101T000000.000Z.keys.enc"));
        assert!(plain_file_name("database.sqlite"));
        for bad in [
            "",
            "../x.keys.enc",
            "/etc/passwd",
            "keys/x.keys.enc",
            "..\\x.keys.enc",
            ".hidden",
            "a\0b",
        ] {
            assert!(!plain_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn generation_names_sort_by_time() {
        let a = generation_name(1_700_000_000_000).unwrap();
        let b = generation_name(1_700_000_000_001).unwrap();
        let c = generation_name(1_700_000_060_000).unwrap();
        assert_eq!(a, "20231114T221320.000Z");
        assert!(a < b && b < c);
    }

    #[test]
    fn passwords_are_taken_out_of_database_urls() {
        let (url, password) = split_password("postgres://app:s%40cret@db.example:5432/pf").unwrap();
        assert_eq!(url, "postgres://app@db.example:5432/pf");
        assert_eq!(password.as_deref(), Some("s@cret"));
        let (url, password) = split_password("postgres://app@db/pf").unwrap();
        assert_eq!((url.as_str(), password), ("postgres://app@db/pf", None));
    }

    #[test]
    fn key_file_names_stay_in_their_folder() {
        assert!(valid_key_file_name("audit.key"));
        for bad in ["../audit.key", "a/b.key", ".hidden.key", "audit.txt"] {
            assert!(!valid_key_file_name(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_sqlite_platform_backs_up_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        let platform = Platform::open(config.clone()).await.unwrap();
        crate::accounts::create_hospital(
            &platform.db,
            "Backup Hospital",
            crate::accounts::HospitalKind::Hub,
        )
        .await
        .unwrap();
        crate::keys::load_or_create(&platform.config, "test").unwrap();
        crate::store::put_bytes(&platform.store, "clinical/a/one.bin", vec![1; 1000])
            .await
            .unwrap();
        crate::store::put_bytes(&platform.store, "clinical/b/same.bin", vec![1; 1000])
            .await
            .unwrap();
        let options = BackupOptions {
            out: dir.path().join("backup"),
            keep: 2,
            keys_dir: None,
            passphrase: "a long enough passphrase".into(),
            audit: Some(AuditEvent::anonymous("admin.backup", "backup", "ok")),
        };
        let first = backup(&platform, &options, &mut |_| {}).await.unwrap();
        assert_eq!((first.objects, first.copied, first.reused), (2, 1, 1));
        let second = backup(&platform, &options, &mut |_| {}).await.unwrap();
        assert_eq!((second.copied, second.reused), (0, 2));
        let third = backup(&platform, &options, &mut |_| {}).await.unwrap();
        assert_eq!(third.pruned, vec![first.generation.clone()]);
        assert_eq!(generations(&options.out).unwrap().len(), 2);

        let target = Config {
            data_dir: dir.path().join("restored"),
            ..Config::default()
        };
        let restore_options = RestoreOptions {
            from: options.out.clone(),
            generation: None,
            keys_file: None,
            passphrase: "not the passphrase".into(),
        };
        assert!(
            restore(&target, &restore_options, &mut |_| {})
                .await
                .is_err()
        );
        assert!(!target.data_dir.join("pathfed.db").exists());
        let restore_options = RestoreOptions {
            passphrase: options.passphrase.clone(),
            ..restore_options
        };
        // Keys already in the target's keys folder are not overwritten.
        let present = crate::keys::key_path(&target, "test");
        std::fs::create_dir_all(present.parent().unwrap()).unwrap();
        std::fs::write(&present, "00".repeat(32)).unwrap();
        let over = restore(&target, &restore_options, &mut |_| {})
            .await
            .unwrap_err();
        assert!(
            over.to_string().contains("already holds test.key"),
            "{over}"
        );
        assert!(!target.data_dir.join("pathfed.db").exists());
        std::fs::remove_file(&present).unwrap();
        let done = restore(&target, &restore_options, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(done.objects, 2);
        let restored = Platform::open(target.clone()).await.unwrap();
        let verification = restored.verify_audit().await.unwrap();
        assert!(verification.intact(), "{verification:?}");
        assert!(
            verification.rows >= 3,
            "one row per backup: {verification:?}"
        );
        assert!(
            crate::accounts::hospital_by_name(&restored.db, "Backup Hospital")
                .await
                .is_ok()
        );
        assert_eq!(
            crate::store::get_bytes(&restored.store, "clinical/b/same.bin")
                .await
                .unwrap(),
            vec![1; 1000]
        );
        assert_eq!(
            crate::keys::load_or_create(&target, "test")
                .unwrap()
                .bytes(),
            crate::keys::load_or_create(&platform.config, "test")
                .unwrap()
                .bytes()
        );
        let again = restore(&target, &restore_options, &mut |_| {})
            .await
            .unwrap_err();
        assert!(again.to_string().contains("not empty"), "{again}");
    }
}
