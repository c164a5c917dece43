//! A tus client for `pathfed upload`, the benchmark and the tests.
//!
//! Resumable across process restarts: the upload URL of each (server, file digest) is kept in
//! a small JSON state file, so running the same command again asks the server for its offset
//! (`HEAD`) and sends only the rest. Every chunk carries an `Upload-Checksum`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use crate::tus::{SLIDE_ID_HEADER, TUS_VERSION};
use pathfed_core::digest::sha256_file;

/// What can stop an upload.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A local file could not be read or the state file written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server could not be reached (after retries).
    #[error("cannot reach the server: {0}")]
    Network(#[from] reqwest::Error),
    /// The server refused the request.
    #[error("the server refused the upload ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server answered something a tus server must not.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClientError {
    let context = context.into();
    move |source| ClientError::Io { context, source }
}

/// Where an upload stands, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Computing the whole-file SHA-256.
    Hashing,
    /// Sending bytes.
    Uploading,
    /// All bytes sent; the server is checking and storing the slide.
    Processing,
}

/// The result of a finished upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// The slide the upload became (or already was).
    pub slide_id: String,
    /// Bytes the server already had when this run started (resumed uploads).
    pub resumed_from: u64,
}

/// An authenticated tus client.
#[derive(Debug, Clone)]
pub struct UploadClient {
    http: reqwest::Client,
    server: String,
    token: String,
    state_file: PathBuf,
    chunk_bytes: u64,
}

impl UploadClient {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`) with an API token; resumable
    /// state is kept in `state_file`.
    pub fn new(server: &str, token: &str, state_file: &Path) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            state_file: state_file.to_path_buf(),
            chunk_bytes: 32 << 20,
        })
    }

    /// Sets the chunk size (bytes per PATCH request).
    pub fn with_chunk_bytes(mut self, bytes: u64) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Uploads `file`, calling `progress(phase, done, total)` as it goes.
    pub async fn upload(
        &self,
        file: &Path,
        progress: &(dyn Fn(Phase, u64, u64) + Send + Sync),
    ) -> Result<Uploaded, ClientError> {
        let size = std::fs::metadata(file)
            .map_err(io(format!("reading {}", file.display())))?
            .len();
        let filename = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "slide".into());
        let digest = hash_with_progress(file, size, progress).await?;
        let state_key = format!("{}|{digest}|{size}", self.server);
        let mut url = None;
        if let Some(known) = self.load_state()?.get(&state_key) {
            match self.offset_of(known).await? {
                Some(_) => url = Some(known.clone()),
                None => self.forget(&state_key)?,
            }
        }
        let url = match url {
            Some(url) => url,
            None => {
                let created = self.create(&filename, &digest, size).await?;
                self.remember(&state_key, &created)?;
                created
            }
        };
        let result = self.send(file, &url, size, progress).await;
        match &result {
            Ok(_) | Err(ClientError::Refused { .. }) => self.forget(&state_key)?,
            Err(_) => {}
        }
        result
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("Tus-Resumable", TUS_VERSION)
    }

    async fn create(&self, filename: &str, digest: &str, size: u64) -> Result<String, ClientError> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("{}/api/v1/uploads", self.server),
            )
            .header("Upload-Length", size)
            .header(
                "Upload-Metadata",
                format!("filename {},sha256 {}", b64(filename), b64(digest)),
            )
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(refused(response).await);
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ClientError::Protocol("no Location in the creation answer".into()))?;
        Ok(if location.starts_with("http") {
            location.to_string()
        } else {
            format!("{}{location}", self.server)
        })
    }

    /// The server's offset, or `None` if the upload is gone (expired, finished, unknown).
    async fn offset_of(&self, url: &str) -> Result<Option<u64>, ClientError> {
        let response = self.request(reqwest::Method::HEAD, url).send().await?;
        match response.status() {
            StatusCode::OK => header_u64(&response, "upload-offset").map(Some),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(None),
            _ => Err(refused(response).await),
        }
    }

    async fn send(
        &self,
        file: &Path,
        url: &str,
        size: u64,
        progress: &(dyn Fn(Phase, u64, u64) + Send + Sync),
    ) -> Result<Uploaded, ClientError> {
        let mut offset = self
            .offset_of(url)
            .await?
            .ok_or_else(|| ClientError::Protocol("the upload vanished before it started".into()))?;
        let resumed_from = offset;
        let source = std::sync::Arc::new(
            std::fs::File::open(file).map_err(io(format!("opening {}", file.display())))?,
        );
        let read_error = format!("reading {}", file.display());
        let mut failures = 0u32;
        // The next chunk is read and hashed while the current one is on the wire.
        let mut prefetched: Option<(u64, tokio::task::JoinHandle<std::io::Result<Chunk>>)> = None;
        loop {
            progress(Phase::Uploading, offset, size);
            let len = self.chunk_bytes.min(size - offset);
            let pending = match prefetched.take() {
                Some((at, pending)) if at == offset => pending,
                _ => Chunk::read(source.clone(), offset, len),
            };
            let Chunk {
                bytes: chunk,
                checksum,
            } = pending
                .await
                .map_err(|e| io(read_error.clone())(std::io::Error::other(e)))?
                .map_err(io(read_error.clone()))?;
            let next = offset + len;
            if next < size {
                let next_len = self.chunk_bytes.min(size - next);
                prefetched = Some((next, Chunk::read(source.clone(), next, next_len)));
            }
            if offset + len == size {
                progress(Phase::Processing, size, size);
            }
            let sent = self
                .request(reqwest::Method::PATCH, url)
                .header("Content-Type", "application/offset+octet-stream")
                .header("Upload-Offset", offset)
                .header("Upload-Checksum", format!("sha256 {checksum}"))
                .body(chunk)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) if failures < 5 => {
                    failures += 1;
                    tracing::warn!(error = %e, "chunk failed; resuming");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                    offset = self.offset_of(url).await?.ok_or_else(|| {
                        ClientError::Protocol("the upload expired while resuming".into())
                    })?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            match response.status() {
                StatusCode::NO_CONTENT => {
                    failures = 0;
                    offset = header_u64(&response, "upload-offset")?;
                    if offset == size {
                        let slide_id = response
                            .headers()
                            .get(SLIDE_ID_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .ok_or_else(|| {
                                ClientError::Protocol("no slide id in the answer".into())
                            })?
                            .to_string();
                        return Ok(Uploaded {
                            slide_id,
                            resumed_from,
                        });
                    }
                }
                // Out of step (another client resumed it) or a garbled chunk: ask and resend.
                StatusCode::CONFLICT | StatusCode::LOCKED if failures < 5 => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    offset = self.offset_of(url).await?.ok_or_else(|| {
                        ClientError::Protocol("the upload expired while resuming".into())
                    })?;
                }
                status if status.as_u16() == 460 && failures < 5 => failures += 1,
                _ => return Err(refused(response).await),
            }
        }
    }

    fn load_state(&self) -> Result<BTreeMap<String, String>, ClientError> {
        match std::fs::read_to_string(&self.state_file) {
            Ok(text) => Ok(serde_json::from_str(&text).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(format!("reading {}", self.state_file.display()))(e)),
        }
    }

    fn save_state(&self, state: &BTreeMap<String, String>) -> Result<(), ClientError> {
        let context = format!("writing {}", self.state_file.display());
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(io(context.clone()))?;
        }
        let text = serde_json::to_string_pretty(state).unwrap_or_default();
        let partial = self.state_file.with_extension("partial");
        std::fs::write(&partial, text).map_err(io(context.clone()))?;
        std::fs::rename(&partial, &self.state_file).map_err(io(context))
    }

    fn remember(&self, key: &str, url: &str) -> Result<(), ClientError> {
        let mut state = self.load_state()?;
        state.insert(key.to_string(), url.to_string());
        self.save_state(&state)
    }

    fn forget(&self, key: &str) -> Result<(), ClientError> {
        let mut state = self.load_state()?;
        if state.remove(key).is_some() {
            self.save_state(&state)?;
        }
        Ok(())
    }
}

fn header_u64(response: &reqwest::Response, name: &str) -> Result<u64, ClientError> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("missing or invalid {name}")))
}

async fn refused(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    ClientError::Refused {
        status,
        code: body["error"]["code"]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
        message: body["error"]["message"]
            .as_str()
            .unwrap_or("no explanation given")
            .to_string(),
    }
}

async fn hash_with_progress(
    file: &Path,
    size: u64,
    progress: &(dyn Fn(Phase, u64, u64) + Send + Sync),
) -> Result<String, ClientError> {
    tokio::task::block_in_place(|| sha256_file(file, |done| progress(Phase::Hashing, done, size)))
        .map_err(io(format!("reading {}", file.display())))
}

/// One request's worth of the file with its `Upload-Checksum` value.
struct Chunk {
    bytes: Vec<u8>,
    checksum: String,
}

impl Chunk {
    /// Reads and hashes `len` bytes at `offset` off the async threads.
    fn read(
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: u64,
    ) -> tokio::task::JoinHandle<std::io::Result<Chunk>> {
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut bytes = vec![0u8; len as usize];
            file.read_exact_at(&mut bytes, offset)?;
            let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
            Ok(Chunk { bytes, checksum })
        })
    }
}
