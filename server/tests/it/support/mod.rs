//! Test harness: real servers (the `pathfed` binary) on real backends.
//!
//! [`Backend::Local`] is the embedded default (SQLite file + local object store);
//! [`Backend::Remote`] is a throwaway PostgreSQL cluster + an S3-compatible server, both
//! started by [`services`]. Every behaviour test runs on both.
#![allow(dead_code)] // Not every helper is used by today's tests (e.g. `TestServer::backend`).

pub mod dicom;
pub mod people;
pub mod restore;
pub mod services;
pub mod totp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pathfed_core::config::S3Config;
use pathfed_core::store::{Store, list_keys, open_store};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Which database and object store a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + local files.
    Local,
    /// PostgreSQL + S3.
    Remote,
}

/// Both backends, for tests that loop over them.
pub const BACKENDS: [Backend; 2] = [Backend::Local, Backend::Remote];

/// The setting of the folder where unfinished uploads are staged (`ingest.staging_dir`).
const STAGING_DIR_VAR: &str = "PATHFED_INGEST_STAGING_DIR";

/// A running `pathfed serve` and everything to inspect what it stored.
pub struct TestServer {
    /// Base URL.
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    /// The data directory.
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    child: Option<Child>,
    s3: S3Config,
    object_store_url: String,
    database_url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A child process killed when the test ends, passing or not.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `pathfed` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pathfed"))
}

impl TestServer {
    /// Starts a server on `backend` with extra `PATHFED_*` settings.
    pub fn start_with(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let mut server = Self::configured(backend, "pathfed", extra);
        server.launch();
        server
    }

    /// A fresh platform on `backend` (its own data folder, and on [`Backend::Remote`] its own
    /// database and bucket, named after `name`) with extra `PATHFED_*` settings, not started.
    pub(crate) fn configured(backend: Backend, name: &str, extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = vec![
            (
                "PATHFED_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("PATHFED_LOG".into(), "warn".into()),
            // Every process of this server reads its time through this file, so a test moves
            // the clock instead of waiting (`advance_clock`).
            (
                pathfed_core::clock::OFFSET_FILE_VAR.into(),
                dir.path().join("clock-offset").display().to_string(),
            ),
        ];
        let mut s3 = S3Config::default();
        let (database_url, object_store_url) = match backend {
            Backend::Local => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("data/pathfed.db").display()
                ),
                format!("file://{}", dir.path().join("data/objects").display()),
            ),
            Backend::Remote => {
                let pg = services::Postgres::shared();
                let s3_server = services::S3Server::shared();
                let bucket = s3_server.create_bucket(name);
                s3 = S3Config {
                    endpoint: Some(s3_server.endpoint()),
                    region: Some("us-east-1".into()),
                    access_key_id: Some("testing".into()),
                    secret_access_key: Some("testing".into()),
                    allow_http: true,
                };
                env.extend([
                    ("PATHFED_S3_ENDPOINT".into(), s3_server.endpoint()),
                    ("PATHFED_S3_REGION".into(), "us-east-1".into()),
                    ("PATHFED_S3_ACCESS_KEY_ID".into(), "testing".into()),
                    ("PATHFED_S3_SECRET_ACCESS_KEY".into(), "testing".into()),
                    ("PATHFED_S3_ALLOW_HTTP".into(), "true".into()),
                ]);
                (pg.create_database(name), format!("s3://{bucket}/objects"))
            }
        };
        env.push(("PATHFED_DATABASE_URL".into(), database_url.clone()));
        env.push(("PATHFED_OBJECT_STORE_URL".into(), object_store_url.clone()));
        if backend == Backend::Remote {
            // Said outright (it is the default) because replicas take this setting along: they
            // share the staging folder as they share the database and the object store.
            env.push((
                STAGING_DIR_VAR.into(),
                dir.path().join("data/staging").display().to_string(),
            ));
        }
        for (k, v) in extra {
            env.push((k.to_string(), v.to_string()));
        }
        Self {
            url: String::new(),
            backend,
            dir,
            env,
            child: None,
            s3,
            object_store_url,
            database_url,
        }
    }

    /// Starts a server on `backend` with default settings.
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[])
    }

    /// Starts a second replica of this (Remote) server: another `pathfed serve` of the same
    /// platform, on its own port and data folder, with the same database, object store, S3
    /// settings, upload staging folder (this server's), extra settings and clock.
    ///
    /// Replicas of one platform must share its secret keys (`core/src/keys.rs`: the research
    /// pseudonym key and the patient-id keys, each `DATA_DIR/keys/<name>.key` unless
    /// `PATHFED_KEY_<NAME>` is set): they are copied from this server's data folder, where its
    /// start created them, into the replica's before the replica starts.
    pub fn replica(&self) -> Self {
        assert_eq!(
            self.backend,
            Backend::Remote,
            "replicas share a database and object store: PostgreSQL + S3 only"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let keys = self.dir.path().join("data/keys");
        let replica_keys = data.join("keys");
        std::fs::create_dir_all(&replica_keys).expect("replica key folder");
        let mut copied = 0;
        for entry in std::fs::read_dir(&keys)
            .unwrap_or_else(|e| panic!("{}: {e}", keys.display()))
            .flatten()
        {
            // `fs::copy` keeps the 0600 mode of the key files.
            std::fs::copy(entry.path(), replica_keys.join(entry.file_name())).expect("copy key");
            copied += 1;
        }
        assert!(
            copied > 0,
            "the first replica made no keys in {}",
            keys.display()
        );
        let staging = self.staging_dir();
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter(|(k, _)| k != "PATHFED_DATA_DIR" && k != STAGING_DIR_VAR)
            .cloned()
            .collect();
        env.push(("PATHFED_DATA_DIR".into(), data.display().to_string()));
        env.push((STAGING_DIR_VAR.into(), staging.display().to_string()));
        let mut replica = Self {
            url: String::new(),
            backend: self.backend,
            dir,
            env,
            child: None,
            s3: self.s3.clone(),
            object_store_url: self.object_store_url.clone(),
            database_url: self.database_url.clone(),
        };
        replica.launch();
        replica
    }

    fn launch(&mut self) {
        // A restarted server comes back on the same address, as clients expect.
        let port = match self.url.rsplit(':').next().and_then(|p| p.parse().ok()) {
            Some(port) => port,
            None => free_port(),
        };
        // A server given a certificate speaks only HTTPS (`tls.cert_file`).
        let scheme = if self
            .env
            .iter()
            .any(|(k, v)| k == "PATHFED_TLS_CERT_FILE" && !v.is_empty())
        {
            "https"
        } else {
            "http"
        };
        self.url = format!("{scheme}://127.0.0.1:{port}");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let child = Command::new(bin())
            .arg("serve")
            .envs(self.env.iter().cloned())
            .env("PATHFED_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pathfed serve");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("server did not start; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Moves the clock of the server, its workers and its commands forward by `seconds` (for a
    /// replica, the clock it shares with the server it replicates).
    pub fn advance_clock(&self, seconds: i64) {
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == pathfed_core::clock::OFFSET_FILE_VAR)
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.path().join("clock-offset"));
        let current: i64 = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        std::fs::write(&path, (current + seconds).to_string()).unwrap();
    }

    /// Kills the server abruptly (SIGKILL), as a crash or power loss would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The worker processes the server started: (process id, command line), read from /proc.
    pub fn worker_processes(&self) -> Vec<(u32, String)> {
        let Some(server) = self.child.as_ref().map(Child::id) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // The parent is the second field after the command name, which is in parentheses.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if parent == Some(server) {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains(" worker ") {
                    found.push((pid, cmdline));
                }
            }
        }
        found
    }

    /// Kills and starts the server again on the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A `pathfed` command set up for this server's database and store.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin());
        command.args(args).envs(self.env.iter().cloned());
        command
    }

    /// Runs a `pathfed` command against this server's database and store.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run pathfed")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pathfed {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates a hospital (if new) and a user in it; returns an API token for the user.
    pub fn user(&self, hospital: &str, kind: &str, username: &str, role: &str) -> String {
        if !self
            .cli_ok(&["admin", "hospital", "list"])
            .contains(&format!("\t{hospital}\t"))
        {
            self.cli_ok(&["admin", "hospital", "add", hospital, "--kind", kind]);
        }
        let pw = self.dir.path().join(format!("{username}.pw"));
        std::fs::write(&pw, password(username)).expect("password file");
        self.cli_ok(&[
            "admin",
            "user",
            "add",
            username,
            "--hospital",
            hospital,
            "--role",
            role,
            "--password-file",
            pw.to_str().expect("utf-8 path"),
        ]);
        self.cli_ok(&["admin", "token", "create", "--user", username])
    }

    /// The object store the server writes to.
    pub fn store(&self) -> Store {
        open_store(&self.object_store_url, &self.s3).expect("open store")
    }

    /// Keys of every object under `clinical/`.
    pub async fn clinical_objects(&self) -> Vec<String> {
        list_keys(&self.store(), "clinical")
            .await
            .expect("list objects")
    }

    /// The database the server uses.
    pub async fn db(&self) -> pathfed_core::Db {
        pathfed_core::Db::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }

    /// The platform as the server opened it (database, store, data folder), for checks that
    /// need a service's own code, such as loading a registered model.
    pub async fn platform(&self) -> pathfed_core::Platform {
        let config = pathfed_core::Config {
            data_dir: self.dir.path().join("data"),
            database_url: Some(self.database_url.clone()),
            object_store_url: Some(self.object_store_url.clone()),
            s3: self.s3.clone(),
            ..pathfed_core::Config::default()
        };
        pathfed_core::Platform::open(config)
            .await
            .expect("open the platform")
    }

    /// The folder of unfinished uploads: the configured one (a replica's is the server's it
    /// replicates), else the data folder's.
    pub fn staging_dir(&self) -> PathBuf {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == STAGING_DIR_VAR)
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.path().join("data/staging"))
    }

    /// Files left in the staging folder.
    pub fn staging_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.staging_dir()) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows the end of what the server logged: the cause of a 500 is only
        // there, and the log goes with the temporary folder.
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- end of the server log ---\n{}", tail.join("\n"));
        }
    }
}

/// Uploads `file` as the owner of `token` with the platform's tus client; returns the slide id.
pub async fn upload(server: &TestServer, token: &str, file: &Path) -> String {
    let name = file.file_name().expect("a file name").to_string_lossy();
    let state = server.dir.path().join(format!("{name}.upload.json"));
    pathfed_ingest::client::UploadClient::new(&server.url, token, &state)
        .expect("upload client")
        .upload(file, &|_: pathfed_ingest::client::Phase, _: u64, _: u64| {})
        .await
        .expect("upload")
        .slide_id
}

/// The password the harness gives `username`.
pub fn password(username: &str) -> String {
    format!("{username}-password-123")
}

/// A generated SVS slide of the given size in `dir`.
pub fn synth_slide(dir: &Path, name: &str, width: u32, height: u32, seed: u32) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new(bin())
        .args(["slide", "synth", "--out"])
        .arg(&out)
        .args([
            "--width",
            &width.to_string(),
            "--height",
            &height.to_string(),
        ])
        .args(["--seed", &seed.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run slide synth");
    assert!(status.success(), "slide synth failed");
    out
}

/// SHA-256 (hex) of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Awaits `make` while no other call of this function is in progress anywhere in the test
/// binary. It is for `pathfed_training::synthetic::texture_model`, which trains the shared model
/// into a fixed folder (`target/test-artifacts/texture-model`) when the folder has none: when
/// the first two callers overlap, both train (a minute each on two cores) and then race to move
/// their copy into place, and the loser fails. Taking turns, the first trains and the others
/// read its copy. Only `make`'s output is named here, so this does not depend on where the
/// model's types live.
pub async fn one_at_a_time<T>(make: impl Future<Output = T>) -> T {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = TURN.lock().await;
    make.await
}

/// An HTTP client with a bearer token.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// A user's view of the API.
pub struct As<'a> {
    /// The server.
    pub server: &'a TestServer,
    /// The user's API token.
    pub token: String,
}

impl As<'_> {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = client()
            .request(method, format!("{}{path}", self.server.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value
    }

    pub async fn refused(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> String {
        let (status, value) = self.call(method.clone(), path, body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {value}");
        let message = value["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "{method} {path}: no JSON error: {value}"
        );
        message.to_string()
    }

    pub async fn raw(&self, path: &str) -> (StatusCode, Vec<u8>) {
        let response = client()
            .get(format!("{}{path}", self.server.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (response.status(), response.bytes().await.unwrap().to_vec())
    }
}

/// `pathfed case create --upload FILE --submit` as a spoke user for `patient`; returns
/// (case id, slide id).
pub fn submit_case(
    server: &TestServer,
    token: &str,
    file: &Path,
    patient: &str,
) -> (String, String) {
    let state = server.dir.path().join("upload-state.json");
    let out = server.cli_ok(&[
        "case",
        "create",
        "--server",
        &server.url,
        "--token",
        token,
        "--patient-id",
        patient,
        "--age-band",
        "60-69",
        "--sex",
        "male",
        "--organ",
        "stomach",
        "--specimen",
        "endoscopic biopsy, antrum",
        "--question",
        "Dysplasia or carcinoma?",
        "--upload",
        file.to_str().unwrap(),
        "--submit",
        "--state-file",
        state.to_str().unwrap(),
    ]);
    let case_id = out.lines().last().unwrap().trim().to_string();
    let slide_id = out
        .lines()
        .find_map(|l| l.split("\tslide ").nth(1))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    (case_id, slide_id)
}

/// What a GeoJSON export says of each annotation (shape, class, kind, note), sorted: two
/// exports of the same annotations agree on it whatever their order and ids.
pub fn geojson_essence(collection: &serde_json::Value) -> Vec<String> {
    let mut all: Vec<String> = collection["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            serde_json::json!([
                f["geometry"],
                f["properties"]["classification"],
                f["properties"]["pathfed"]["kind"],
                f["properties"]["name"],
            ])
            .to_string()
        })
        .collect();
    all.sort();
    all
}

/// `PATHFED_TEST_PYTHON`, else the tools venv's interpreter in the nearest directory above this
/// crate (`scripts/setup.sh` installs there the tools the tests use as writers and oracles:
/// aiosmtpd, tifffile, wsidicomizer, pydicom, the IIIF validator).
pub fn tools_python() -> PathBuf {
    if let Some(path) = std::env::var_os("PATHFED_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join(".tools/venv/bin/python"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no .tools/venv/bin/python above {}; run scripts/setup.sh",
                manifest_dir.display()
            )
        })
}
