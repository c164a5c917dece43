//! Configuration: defaults, an optional `pathfed.toml`, then `PATHFED_*` environment variables.
//!
//! The environment wins so that one file can serve several deployments. Keys outside the
//! top-level ones map as `PATHFED_<SECTION>_<KEY>`, e.g. `PATHFED_SLIDE_MAX_PIXELS`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::SlideLimits;

/// Where the configuration could not be read or was invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file exists but could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or the environment holds a value of the wrong shape.
    #[error("invalid configuration{origin}: {message}")]
    Invalid {
        /// " in FILE" or " in the environment".
        origin: String,
        /// What was wrong.
        message: String,
    },
}

/// Deep Zoom tiling defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TilesConfig {
    /// Tile size in pixels; 0 means "the slide's own tile size when square, else 254".
    pub tile_size: u32,
    /// Pixels each tile overlaps its neighbours.
    pub overlap: u32,
    /// JPEG quality of re-encoded tiles (1–100).
    pub jpeg_quality: u8,
    /// Let the browser keep tiles, Deep Zoom descriptors and thumbnails in its private cache
    /// (`private`, never a shared proxy's); off answers them `no-store` like all clinical data,
    /// for workstations whose disk cache must hold nothing.
    pub browser_cache: bool,
}

impl Default for TilesConfig {
    fn default() -> Self {
        Self {
            tile_size: 0,
            overlap: 0,
            jpeg_quality: 80,
            browser_cache: true,
        }
    }
}

/// Credentials and endpoint for an S3-compatible object store (`s3://bucket/prefix` URLs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of a non-AWS server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when unset.
    pub region: Option<String>,
    /// Access key id (falls back to `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (falls back to `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<String>,
    /// Allow plain HTTP endpoints (test servers, private networks).
    pub allow_http: bool,
}

/// Upload and validation limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Seconds an unfinished upload is kept before it expires.
    pub upload_expiry_s: u64,
    /// Seconds the validation child process may run.
    pub validation_timeout_s: u64,
    /// Address-space limit of the validation child process, in MiB.
    pub validation_memory_mb: u64,
    /// Most entries a zip upload may hold.
    pub zip_max_entries: u64,
    /// Most bytes a zip upload may unpack to.
    pub zip_max_unpacked_bytes: u64,
    /// Largest unpacked/packed size ratio of any zip entry (zip bombs exceed it).
    pub zip_max_ratio: u64,
    /// Folder of unfinished uploads' bytes; `DATA_DIR/staging` when unset. Replicas behind one
    /// load balancer point it at one shared folder, so an upload resumes on any of them.
    pub staging_dir: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 20 << 30,
            upload_expiry_s: 24 * 3600,
            validation_timeout_s: 300,
            validation_memory_mb: 4096,
            zip_max_entries: 10_000,
            zip_max_unpacked_bytes: 40 << 30,
            zip_max_ratio: 200,
            staging_dir: None,
        }
    }
}

/// Sessions and sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Hours a browser session lasts.
    pub session_hours: u64,
    /// Mark the session cookie `Secure` on every answer. HTTPS answers (our own TLS, or a
    /// trusted proxy's `X-Forwarded-Proto: https`) mark every cookie `Secure` regardless; this
    /// is for a proxy that terminates TLS without saying so.
    pub secure_cookies: bool,
    /// Failed sign-ins with one user name that lock it (known or unknown name alike).
    pub max_failures_per_account: u32,
    /// Failed sign-ins from one client address that lock it (a shared workstation, or a proxy's
    /// address when the server runs behind one).
    pub max_failures_per_address: u32,
    /// Minutes over which failures are counted, and for which a key stays locked.
    pub lockout_minutes: u32,
    /// Days a new API token lasts unless its creator asks for fewer or more (at most 366).
    pub token_days: u32,
    /// Minutes without a request after which a browser session ends (a shared workstation left
    /// signed in); `session_hours` bounds it in any case.
    pub idle_minutes: u64,
    /// Admins (hospital and platform) must sign in with a second factor. On by default, as the
    /// security guideline asks; a hospital's policy can require it of everyone.
    pub second_factor_for_admins: bool,
    /// Minutes a second-factor code stays "fresh" for actions that ask for one (signing out a
    /// case under the hospital's `signout_second_factor` policy).
    pub fresh_second_factor_minutes: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_hours: 12,
            secure_cookies: false,
            max_failures_per_account: 5,
            max_failures_per_address: 30,
            lockout_minutes: 15,
            token_days: 90,
            idle_minutes: 30,
            second_factor_for_admins: true,
            fresh_second_factor_minutes: 5,
        }
    }
}

impl AuthConfig {
    /// The throttle of one user name.
    pub fn account_limit(&self) -> crate::throttle::Limit {
        self.limit(self.max_failures_per_account)
    }

    /// The throttle of one client address.
    pub fn address_limit(&self) -> crate::throttle::Limit {
        self.limit(self.max_failures_per_address)
    }

    fn limit(&self, failures: u32) -> crate::throttle::Limit {
        let seconds = i64::from(self.lockout_minutes.max(1)) * 60;
        crate::throttle::Limit {
            failures: failures.max(1),
            window_s: seconds,
            lock_s: seconds,
        }
    }
}

/// HTTPS served by the platform itself, and what it trusts from a proxy in front of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key_file`, `pathfed serve` speaks HTTPS only.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub key_file: Option<PathBuf>,
    /// The oldest TLS version accepted: `1.3` (default) or `1.2`.
    pub min_version: String,
    /// `Strict-Transport-Security` max-age in seconds, sent over HTTPS (0: not sent).
    pub hsts_max_age_s: u64,
    /// HSTS also for every subdomain (`includeSubDomains`). Off by default: an intranet may
    /// have hosts under the same domain that speak plain HTTP, which browsers would then refuse.
    pub hsts_include_subdomains: bool,
    /// Comma-separated addresses of reverse proxies whose `X-Forwarded-For` (client address)
    /// and `X-Forwarded-Proto: https` (cookies `Secure`, HSTS) are believed; empty: none.
    pub trusted_proxies: String,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            min_version: "1.3".into(),
            hsts_max_age_s: 31_536_000,
            hsts_include_subdomains: false,
            trusted_proxies: String::new(),
        }
    }
}

impl TlsConfig {
    /// The certificate and key files when both are set (an empty value counts as unset):
    /// `pathfed serve` then speaks HTTPS.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        match (
            non_empty_path(&self.cert_file),
            non_empty_path(&self.key_file),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }

    /// The trusted proxies' addresses (entries that are not addresses were refused at load).
    pub fn proxies(&self) -> Vec<std::net::IpAddr> {
        self.proxy_entries()
            .filter_map(|entry| entry.parse().ok())
            .collect()
    }

    fn proxy_entries(&self) -> impl Iterator<Item = &str> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
    }

    /// Half a certificate, an unknown TLS version or a proxy that is not an address is refused
    /// at start rather than leaving the server on plain HTTP or trusting the wrong peer.
    fn check(&self) -> Result<(), ConfigError> {
        let refuse = |message: String| ConfigError::Invalid {
            origin: " in [tls]".into(),
            message,
        };
        match (
            non_empty_path(&self.cert_file),
            non_empty_path(&self.key_file),
        ) {
            (Some(_), None) => {
                return Err(refuse(
                    "cert_file is set but key_file is not (PATHFED_TLS_KEY_FILE): HTTPS needs both"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(refuse(
                    "key_file is set but cert_file is not (PATHFED_TLS_CERT_FILE): HTTPS needs both"
                        .into(),
                ));
            }
            _ => {}
        }
        if !matches!(self.min_version.trim(), "1.2" | "1.3") {
            return Err(refuse(format!(
                "min_version is {:?}: use \"1.3\" (the default) or \"1.2\"",
                self.min_version
            )));
        }
        for entry in self.proxy_entries() {
            if entry.parse::<std::net::IpAddr>().is_err() {
                return Err(refuse(format!(
                    "trusted_proxies holds {entry:?}, which is not an IP address \
                     (write addresses separated by commas, e.g. 127.0.0.1, 10.0.0.5)"
                )));
            }
        }
        Ok(())
    }
}

/// A path setting that is present and not empty.
fn non_empty_path(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// The audit log's checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Minutes between signed checkpoints of the chain's head (one is also written at
    /// shutdown); 0 turns the periodic ones off.
    pub checkpoint_minutes: u64,
    /// A syslog server (`host:port`, UDP) that also receives each checkpoint; empty: none.
    pub syslog_address: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_minutes: 10,
            syslog_address: String::new(),
        }
    }
}

/// The node-local cache that materialises slide objects as files for the readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes the cache may hold on disk.
    pub max_bytes: u64,
    /// Open slide readers kept in memory.
    pub open_slides: usize,
    /// Bytes of encoded Deep Zoom tiles kept in memory.
    pub tile_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 20 << 30,
            open_slides: 64,
            tile_bytes: 256 << 20,
        }
    }
}

/// Consultation between spokes and hubs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsultConfig {
    /// Seconds a hub keeps read access to a case's slides after the case is closed
    /// (signed out or cancelled).
    pub access_after_close_s: u64,
    /// A TOML file of extra diagnosis taxonomies and organ mappings, added to the built-in ones.
    pub taxonomy_file: Option<PathBuf>,
}

impl Default for ConsultConfig {
    fn default() -> Self {
        Self {
            access_after_close_s: 30 * 24 * 3600,
            taxonomy_file: None,
        }
    }
}

/// The research tier and background workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResearchConfig {
    /// The platform's minimum cell size: the fewest distinct patients that may share a
    /// published (diagnosis, age band, sex, hospital, year) group; smaller groups are
    /// generalised or suppressed, decided over the whole research tier so that versions joined
    /// together reveal no smaller group. It is a floor: a dataset version may ask for a larger
    /// one, never a smaller one. Only the platform's operator sets it (configuration file or
    /// `PATHFED_RESEARCH_MIN_CELL_SIZE`); 0 counts as 1.
    pub min_cell_size: u64,
    /// Research-tier jobs at once in the worker processes `pathfed serve` starts and
    /// supervises (0: none, run `pathfed worker` instead; training and inference run one at a
    /// time in workers of their own).
    pub serve_workers: usize,
    /// Seconds a worker's claim on a job lasts between heartbeats: how long the job of a worker
    /// that died waits before another worker takes it over.
    pub job_lease_s: u64,
}

impl Default for ResearchConfig {
    fn default() -> Self {
        Self {
            min_cell_size: 5,
            serve_workers: 1,
            job_lease_s: 60,
        }
    }
}

/// Training runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Devices this platform's workers can train on, comma-separated (`flex`, `cuda`, `wgpu`):
    /// a run asking for another is refused at once instead of waiting for a worker forever.
    pub devices: String,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            devices: "flex".into(),
        }
    }
}

impl TrainingConfig {
    /// The configured device names.
    pub fn device_list(&self) -> Vec<String> {
        self.devices
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect()
    }
}

/// AI diagnostic support: running deployed models on clinical slides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    /// Device the `infer` jobs of this process run models on (`flex`, `cuda`, `wgpu`).
    pub device: String,
    /// Patches per model call.
    pub batch: usize,
    /// Threads reading and decoding patches while the model runs (0: half the cores).
    pub readers: usize,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            device: "flex".into(),
            batch: 32,
            readers: 0,
        }
    }
}

/// E-mail notices of case events. Nothing is sent unless `smtp_url` is set here and a hospital
/// turns its notices on (`pathfed admin hospital email HOSPITAL on`); the in-app notices need
/// neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// The SMTP server: `smtp://host:25` (plain), `smtp://host:587?tls=required` (STARTTLS),
    /// `smtps://host:465` (TLS from the start); `user:password@` before the host signs in.
    pub smtp_url: Option<String>,
    /// Require STARTTLS on an `smtp://` server (as `?tls=required` does): never send in clear.
    /// On by default; a relay on the same host or network without TLS needs `starttls = false`.
    pub starttls: bool,
    /// The sender, e.g. `pathfed <noreply@pathology.example.jp>`.
    pub from: Option<String>,
    /// The web UI's address as people open it, e.g. `https://pathfed.example.jp`; the notices
    /// link to `{base_url}/case?id=…`.
    pub base_url: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            starttls: true,
            from: None,
            base_url: None,
        }
    }
}

impl NotifyConfig {
    /// Whether the operator configured e-mail at all.
    pub fn email_configured(&self) -> bool {
        self.smtp_url
            .as_deref()
            .is_some_and(|url| !url.trim().is_empty())
    }

    /// A named SMTP server needs a sender and the address the links point to: refused at start
    /// rather than failing every notice later.
    fn check(&self) -> Result<(), ConfigError> {
        if !self.email_configured() {
            return Ok(());
        }
        let missing: Vec<&str> = [("from", &self.from), ("base_url", &self.base_url)]
            .into_iter()
            .filter(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()))
            .map(|(name, _)| name)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: " in [notify]".into(),
                message: format!(
                    "smtp_url is set but {} is not (PATHFED_NOTIFY_FROM, PATHFED_NOTIFY_BASE_URL)",
                    missing.join(" and ")
                ),
            })
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Directory for the database, local objects, the slide cache and keys.
    pub data_dir: PathBuf,
    /// Database URL; a SQLite file in the data directory when unset.
    pub database_url: Option<String>,
    /// Object store URL (`file:///…`, `s3://bucket/prefix`, `memory://`); `DATA_DIR/objects`
    /// when unset.
    pub object_store_url: Option<String>,
    /// Limits for untrusted slide files.
    pub slide: SlideLimits,
    /// Deep Zoom tiling.
    pub tiles: TilesConfig,
    /// S3 options.
    pub s3: S3Config,
    /// Uploads.
    pub ingest: IngestConfig,
    /// Sign-in and sessions.
    pub auth: AuthConfig,
    /// Slide cache.
    pub cache: CacheConfig,
    /// Consultation.
    pub consult: ConsultConfig,
    /// Research tier.
    pub research: ResearchConfig,
    /// Training.
    pub training: TrainingConfig,
    /// AI diagnostic support.
    pub inference: InferenceConfig,
    /// E-mail notices.
    pub notify: NotifyConfig,
    /// HTTPS and trusted proxies.
    pub tls: TlsConfig,
    /// Audit checkpoints.
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            object_store_url: None,
            slide: SlideLimits::default(),
            tiles: TilesConfig::default(),
            s3: S3Config::default(),
            ingest: IngestConfig::default(),
            auth: AuthConfig::default(),
            cache: CacheConfig::default(),
            consult: ConsultConfig::default(),
            research: ResearchConfig::default(),
            training: TrainingConfig::default(),
            inference: InferenceConfig::default(),
            notify: NotifyConfig::default(),
            tls: TlsConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

impl Config {
    /// Loads `path` if given (an error if it is missing), else `./pathfed.toml` if present,
    /// then applies the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PATHFED_"))
            .collect();
        let (file, must_exist) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("pathfed.toml"), false),
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => None,
            Err(source) => return Err(ConfigError::Read { path: file, source }),
        };
        Self::from_sources(text.as_deref(), &file, &env)
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("pathfed.db").display()
            ),
        }
    }

    /// The object store URL in effect.
    pub fn object_store_url(&self) -> String {
        match &self.object_store_url {
            Some(url) => url.clone(),
            None => {
                let dir = self.data_dir.join("objects");
                let dir = std::path::absolute(&dir).unwrap_or(dir);
                format!("file://{}", dir.display())
            }
        }
    }

    /// The folder of unfinished uploads in effect (`ingest.staging_dir`, else
    /// `DATA_DIR/staging`).
    pub fn staging_dir(&self) -> PathBuf {
        match &self.ingest.staging_dir {
            Some(dir) => dir.clone(),
            None => self.data_dir.join("staging"),
        }
    }

    /// Builds the configuration from a file's text (if any) and environment variables.
    pub fn from_sources(
        file_text: Option<&str>,
        file: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut table = match file_text {
            Some(text) => text
                .parse::<toml::Table>()
                .map_err(|e| invalid(format!(" in {}", file.display()), e))?,
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e| invalid(" (file and environment together)".into(), e))?;
        config.notify.check()?;
        config.tls.check()?;
        Ok(config)
    }
}

fn invalid(origin: String, e: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        origin,
        message: e.to_string(),
    }
}

/// Top-level keys that are not sections; every other variable is `PATHFED_<SECTION>_<KEY>`.
const TOP_LEVEL: &[&str] = &["listen", "data_dir", "database_url", "object_store_url"];
/// Sections the environment may set.
const SECTIONS: &[&str] = &[
    "slide",
    "tiles",
    "s3",
    "ingest",
    "auth",
    "cache",
    "consult",
    "research",
    "training",
    "inference",
    "notify",
    "tls",
    "audit",
];
/// Fields that stay strings even when the value looks like a number (keys, secrets, paths).
const STRING_FIELDS: &[&str] = &[
    "access_key_id",
    "secret_access_key",
    "region",
    "endpoint",
    "taxonomy_file",
    "devices",
    "device",
    "staging_dir",
    "smtp_url",
    "from",
    "base_url",
    "cert_file",
    "key_file",
    "min_version",
    "trusted_proxies",
    "syslog_address",
];

fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("PATHFED_") else {
            continue;
        };
        let key = rest.to_ascii_lowercase();
        // Only known sections take part, so unrelated PATHFED_* variables (used by tests and
        // scripts) do not make the configuration invalid.
        if TOP_LEVEL.contains(&key.as_str()) {
            // Every top-level key is a string (addresses, paths, URLs).
            table.insert(key, toml::Value::String(raw.clone()));
            continue;
        }
        let Some((section, field)) = key.split_once('_') else {
            continue;
        };
        if !SECTIONS.contains(&section) {
            continue;
        }
        let value = if STRING_FIELDS.contains(&field) {
            toml::Value::String(raw.clone())
        } else {
            parse_env_value(raw)
        };
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(section_table) = entry.as_table_mut() else {
            return Err(invalid(
                " in the environment".into(),
                format!("{section} is not a section"),
            ));
        };
        section_table.insert(field.to_string(), value);
    }
    Ok(())
}

/// Environment values are strings; numbers and booleans are recognised so that typed fields
/// deserialise.
fn parse_env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    toml::Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_without_file_or_environment() {
        let c = Config::from_sources(None, Path::new("pathfed.toml"), &env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, "127.0.0.1:8080");
    }

    #[test]
    fn environment_overrides_file() {
        let file = "listen = \"0.0.0.0:9000\"\n[slide]\nmax_pixels = 5\nmax_ifds = 7\n";
        let c = Config::from_sources(
            Some(file),
            Path::new("x.toml"),
            &env(&[
                ("PATHFED_SLIDE_MAX_PIXELS", "10"),
                ("PATHFED_LISTEN", "127.0.0.1:1"),
                ("PATHFED_UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.slide.max_pixels, 10);
        assert_eq!(c.slide.max_ifds, 7);
    }

    #[test]
    fn the_staging_folder_is_the_data_folder_s_unless_set() {
        let c = Config::from_sources(
            None,
            Path::new("pathfed.toml"),
            &env(&[("PATHFED_DATA_DIR", "/var/pathfed")]),
        )
        .unwrap();
        assert_eq!(c.staging_dir(), PathBuf::from("/var/pathfed/staging"));
        // A folder name that looks like a number stays a path.
        let c = Config::from_sources(
            None,
            Path::new("pathfed.toml"),
            &env(&[("PATHFED_INGEST_STAGING_DIR", "2024")]),
        )
        .unwrap();
        assert_eq!(c.ingest.staging_dir, Some(PathBuf::from("2024")));
        assert_eq!(c.staging_dir(), PathBuf::from("2024"));
    }

    #[test]
    fn e_mail_is_off_unless_an_smtp_server_is_named() {
        let c = Config::from_sources(None, Path::new("pathfed.toml"), &env(&[])).unwrap();
        assert!(!c.notify.email_configured());
        let c = Config::from_sources(
            Some("[notify]\nfrom = \"pathfed <noreply@example.jp>\"\n"),
            Path::new("x.toml"),
            &env(&[
                ("PATHFED_NOTIFY_SMTP_URL", "smtp://127.0.0.1:2525"),
                ("PATHFED_NOTIFY_STARTTLS", "true"),
                ("PATHFED_NOTIFY_BASE_URL", "https://pathfed.example.jp"),
            ]),
        )
        .unwrap();
        assert!(c.notify.email_configured());
        assert!(c.notify.starttls);
        assert!(
            Config::default().notify.starttls,
            "STARTTLS is required by default"
        );
        let partial = Config::from_sources(
            None,
            Path::new("x.toml"),
            &env(&[("PATHFED_NOTIFY_SMTP_URL", "smtp://127.0.0.1:2525")]),
        );
        let message = partial
            .expect_err("a sender and base URL are needed")
            .to_string();
        assert!(message.contains("from and base_url"), "{message}");
        assert_eq!(
            c.notify.from.as_deref(),
            Some("pathfed <noreply@example.jp>")
        );
        assert_eq!(
            c.notify.base_url.as_deref(),
            Some("https://pathfed.example.jp")
        );
    }

    #[test]
    fn bad_values_are_reported_with_their_origin() {
        let err = Config::from_sources(
            Some("[slide]\nmax_pixels = \"many\""),
            Path::new("a.toml"),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_pixels"), "{err}");
        let err = Config::from_sources(
            None,
            Path::new("a.toml"),
            &env(&[("PATHFED_SLIDE_MAX_IFDS", "-3")]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_ifds"), "{err}");
        let err =
            Config::from_sources(Some("listen = "), Path::new("a.toml"), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("a.toml"), "{err}");
    }

    #[test]
    fn tls_settings_are_checked_at_load() {
        let load =
            |pairs: &[(&str, &str)]| Config::from_sources(None, Path::new("a.toml"), &env(pairs));
        let err = load(&[("PATHFED_TLS_CERT_FILE", "/etc/pathfed/cert.pem")]).unwrap_err();
        assert!(err.to_string().contains("key_file is not"), "{err}");
        let err = load(&[("PATHFED_TLS_KEY_FILE", "/etc/pathfed/key.pem")]).unwrap_err();
        assert!(err.to_string().contains("cert_file is not"), "{err}");
        let err = load(&[("PATHFED_TLS_MIN_VERSION", "1.1")]).unwrap_err();
        assert!(err.to_string().contains("min_version"), "{err}");
        let err = load(&[("PATHFED_TLS_TRUSTED_PROXIES", "127.0.0.1, proxy.local")]).unwrap_err();
        assert!(err.to_string().contains("proxy.local"), "{err}");

        let c = load(&[
            ("PATHFED_TLS_CERT_FILE", "/etc/pathfed/cert.pem"),
            ("PATHFED_TLS_KEY_FILE", "/etc/pathfed/key.pem"),
            ("PATHFED_TLS_MIN_VERSION", "1.2"),
            ("PATHFED_TLS_TRUSTED_PROXIES", "127.0.0.1, ::1"),
        ])
        .unwrap();
        assert!(c.tls.files().is_some());
        assert_eq!(c.tls.proxies().len(), 2);
        // Empty values (an unset variable in a service file) leave HTTPS off, not half on.
        let c = load(&[("PATHFED_TLS_CERT_FILE", ""), ("PATHFED_TLS_KEY_FILE", "")]).unwrap();
        assert!(c.tls.files().is_none());
    }
}
