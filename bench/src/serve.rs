//! `pathfed bench serve`: the HTTP service measured in-process over loopback, each figure next
//! to a reference measured in the same run.
//!
//! 1. Upload: a generated ~1 GiB SVS sent with the tus client of `pathfed upload` until the
//!    server answers with the slide id, against `sha256sum` reading the same file (target:
//!    the upload reaches at least 0.7× `sha256sum`'s rate).
//! 2. Tile serving: a fixed random sample of Deep Zoom tiles fetched by 1, 8 and 64 concurrent
//!    clients, cold (server tile cache cleared) and warm, against openslide-rs's
//!    `DeepZoomGenerator` plus the same JPEG encoder on 1 and 2 threads.
//! 3. WADO-RS frames: as many frames of the same slide's DICOMweb instances (its stored JPEG
//!    tiles, passed through), sampled the same way from its finest levels, fetched by the same
//!    numbers of clients, against the Deep Zoom tiles of the same pass.
//! 4. Tiles while a training job runs: the same sample fetched cold by 64 clients while a
//!    `train` job runs in a worker process started as `pathfed serve` starts its own, against
//!    the same pass with the workers idle, measured just before (target: p99 at most 2× idle).
//!
//! The server is the real application (the `pathfed` binary's, handed in as an [`Application`]:
//! this crate cannot depend on the binary) on a throwaway data directory (SQLite and local
//! object store) with its own hospital, user and API token.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use pathfed_core::accounts::{self, HospitalKind, Role};
use pathfed_core::{Config, Platform};
use pathfed_ingest::client::{Phase, UploadClient};
use pathfed_synth::{SynthSpec, generate};

/// Options of `pathfed bench serve`.
#[derive(Debug, Args)]
pub struct ServeBenchArgs {
    /// Where generated slides are kept between runs.
    #[arg(long, default_value = "data/bench")]
    work_dir: PathBuf,
    /// Target size of the uploaded slide, in MiB.
    #[arg(long, default_value_t = 1024)]
    upload_mb: u64,
    /// Bytes per upload request, in MiB (`pathfed upload`'s default).
    #[arg(long, default_value_t = 32)]
    chunk_mb: u64,
    /// Deep Zoom tiles sampled for the serving measurement.
    #[arg(long, default_value_t = 2000)]
    tiles: usize,
    /// Concurrent HTTP clients, one cold and one warm pass each.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
}

/// The tile-serving slide: the one `pathfed bench slide` generates, so both share the file.
const TILE_SLIDE: (u64, u64) = (40_000, 30_000);
/// Tiles are sampled from this many of the highest-resolution Deep Zoom levels, where viewers
/// spend their time and where the pyramid has most of its tiles.
const TOP_LEVELS: usize = 4;
/// Seed of the tile sample, fixed so that every run fetches the same tiles.
const SAMPLE_SEED: u64 = 0x5EED_7115;
/// The upload rate the service should reach, as a fraction of `sha256sum`'s.
const UPLOAD_TARGET: f64 = 0.7;
/// Clients of the tiles-while-training comparison.
const LOADED_CLIENTS: usize = 64;
/// Tile latency p99 while training, at most this multiple of the idle p99.
const LOADED_P99_TARGET: f64 = 2.0;
const MIB: f64 = (1u64 << 20) as f64;

/// The application under measurement, as `pathfed serve` runs it on a platform.
pub struct Application {
    /// Every route of the service.
    pub router: axum::Router,
    /// Drops every encoded tile the service keeps in memory, so a pass starts cold.
    pub clear_tiles: Box<dyn Fn() + Send + Sync>,
}

/// Builds the [`Application`] on a platform; the `pathfed` binary supplies it.
pub type BuildApplication = dyn Fn(Platform) -> anyhow::Result<Application>;

/// Measures upload and tile serving against their references and prints the figures.
pub fn run(args: &ServeBenchArgs, config: &Config, build: &BuildApplication) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.upload_mb > 0 && args.chunk_mb > 0 && args.tiles > 0,
        "--upload-mb, --chunk-mb and --tiles must be positive"
    );
    anyhow::ensure!(
        !args.concurrency.is_empty() && !args.concurrency.contains(&0),
        "--concurrency needs one or more positive client counts"
    );
    let upload_path = upload_slide(&args.work_dir, args.upload_mb)?;
    let (w, h) = TILE_SLIDE;
    let tile_path = super::cached_synthetic(
        &args.work_dir,
        &format!("synthetic-{w}x{h}"),
        &SynthSpec {
            width: w,
            height: h,
            ..SynthSpec::default()
        },
    )?;

    // The reference first: the upload leaves gigabytes of dirty pages (staging file, stored
    // object) whose write-back would otherwise run during `sha256sum`. Both start with no
    // write-back pending (a slide generated just now is still being written) and read from the
    // page cache, warmed here.
    settle_writeback();
    eprintln!(
        "reading {} once to warm the page cache",
        upload_path.display()
    );
    let size = warm_page_cache(&upload_path)?;
    eprintln!("timing sha256sum");
    let (reference_digest, reference_time) = time_sha256sum(&upload_path)?;

    let scratch = ScratchDir::create()?;
    let bench_config = bench_config(config, scratch.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async {
        let server = BenchServer::start(bench_config.clone(), scratch.path(), build).await?;
        let measured = serve_measurements(&server, args, &upload_path, &tile_path).await;
        server.stop().await;
        measured
    })?;
    drop(runtime);

    report_upload(
        &upload_path,
        size,
        args.chunk_mb,
        &served.upload,
        reference_time,
    );
    anyhow::ensure!(
        served.upload_digest == reference_digest,
        "the server registered SHA-256 {} but sha256sum says {reference_digest}",
        served.upload_digest
    );

    eprintln!(
        "rendering the same {} tiles with OpenSlide",
        served.tiles.sample.len()
    );
    let reference = openslide_reference(
        &tile_path,
        &served.tiles.sample,
        &served.tiles.dzi,
        bench_config.tiles.jpeg_quality,
    )?;
    report_tiles(
        &tile_path,
        &served.tiles,
        reference.as_deref(),
        bench_config.cache.tile_bytes,
    );
    report_loaded(&served.loaded);
    Ok(())
}

/// The configured tiling, limits and cache sizes (so the figures are what this deployment
/// would serve) on throwaway storage: never the configured database or object store.
fn bench_config(loaded: &Config, data_dir: &Path) -> Config {
    let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    Config {
        // Named outright, so the worker process the benchmark starts opens the same ones.
        database_url: Some(format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("pathfed.db").display()
        )),
        object_store_url: Some(format!("file://{}", data_dir.join("objects").display())),
        data_dir,
        slide: loaded.slide.clone(),
        tiles: loaded.tiles.clone(),
        ingest: loaded.ingest.clone(),
        cache: loaded.cache.clone(),
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------
// Slides

/// The upload slide of about `target_mib` MiB, generated once and kept in `work_dir`.
fn upload_slide(work_dir: &Path, target_mib: u64) -> anyhow::Result<PathBuf> {
    let target = target_mib << 20;
    // Dense tissue at high JPEG quality (~0.86 bytes per pixel): 1 GiB takes ~1.2 Gpx, about
    // a minute to generate, where the default spec (~0.27 bytes per pixel) would need ~4 Gpx.
    let template = SynthSpec {
        jpeg_quality: 90,
        tissue_fraction: 0.9,
        // Classic TIFF offsets are 32-bit.
        big_tiff: target > 3 << 30,
        label_lines: vec!["PATHFED BENCH".into(), "UPLOAD".into()],
        ..SynthSpec::default()
    };
    let stem = format!("upload-{target_mib}MiB");
    let spec_path = work_dir.join(format!("{stem}.spec.json"));
    // An earlier run's probe chose the dimensions; reuse them while the rest is unchanged.
    let earlier: Option<SynthSpec> = std::fs::read_to_string(&spec_path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let spec = match earlier {
        Some(spec)
            if spec
                == (SynthSpec {
                    width: spec.width,
                    height: spec.height,
                    ..template.clone()
                }) =>
        {
            spec
        }
        _ => size_by_probe(work_dir, template, target)?,
    };
    super::cached_synthetic(work_dir, &stem, &spec)
}

/// `template` with 4:3 dimensions that give about `target` bytes, from the bytes per pixel of
/// a small slide generated with the same spec.
fn size_by_probe(work_dir: &Path, template: SynthSpec, target: u64) -> anyhow::Result<SynthSpec> {
    const PROBE: (u64, u64) = (8192, 6144);
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let probe_path = work_dir.join("upload-probe.svs");
    eprintln!(
        "sizing the upload slide from a {}x{} probe",
        PROBE.0, PROBE.1
    );
    let probe = SynthSpec {
        width: PROBE.0,
        height: PROBE.1,
        ..template.clone()
    };
    let report = generate(&probe, &probe_path, &|_, _| {})?;
    std::fs::remove_file(&probe_path)
        .with_context(|| format!("removing {}", probe_path.display()))?;
    let bytes_per_pixel = report.bytes as f64 / (PROBE.0 * PROBE.1) as f64;
    let pixels = target as f64 / bytes_per_pixel;
    // Width a multiple of 1024, so the height (3/4 of it) is whole tiles too.
    let width = (((pixels * 4.0 / 3.0).sqrt() / 1024.0).round() as u64).max(1) * 1024;
    Ok(SynthSpec {
        width,
        height: width / 4 * 3,
        ..template
    })
}

/// Reads the whole file once; returns its size.
fn warm_page_cache(path: &Path) -> anyhow::Result<u64> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Runs `sha256sum FILE`; returns the digest and the wall time.
fn time_sha256sum(path: &Path) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum (GNU coreutils)")?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        output.status.success(),
        "sha256sum failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let digest = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .context("sha256sum printed no digest")?;
    Ok((digest, elapsed))
}

// ---------------------------------------------------------------------------------------
// The server

/// A directory under the system's temporary folder, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn create() -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path = std::env::temp_dir().join(format!(
            "pathfed-bench-serve-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// The application served on a loopback port by a task of the current runtime.
struct BenchServer {
    base: String,
    token: String,
    /// A researcher of the platform, who starts the training run.
    researcher: pathfed_core::accounts::User,
    state_file: PathBuf,
    platform: Platform,
    clear_tiles: Box<dyn Fn() + Send + Sync>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl BenchServer {
    async fn start(
        config: Config,
        scratch: &Path,
        build: &BuildApplication,
    ) -> anyhow::Result<Self> {
        let platform = Platform::open(config)
            .await
            .context("opening the platform")?;
        let db = &platform.db;
        let hospital = accounts::create_hospital(db, "Bench Hospital", HospitalKind::Spoke)
            .await
            .context("creating the hospital")?;
        // Nobody signs in with the password; the token is what the clients use.
        let password = pathfed_core::secrets::new_secret("pw_");
        let user = accounts::create_user(db, &hospital, "bench", Role::Submitter, &password)
            .await
            .context("creating the user")?;
        let (_, token) = accounts::create_token(db, &user, "bench serve", 1)
            .await
            .context("creating the API token")?;
        let hub = accounts::create_hospital(db, "Bench Hub", HospitalKind::Hub)
            .await
            .context("creating the hub")?;
        let researcher =
            accounts::create_user(db, &hub, "bench-research", Role::Researcher, &password)
                .await
                .context("creating the researcher")?;
        let Application {
            router,
            clear_tiles,
        } = build(platform.clone())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listening on a loopback port")?;
        let address = listener.local_addr().context("reading the bound address")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        let task = tokio::spawn(async move { serving.await });
        eprintln!("server listening on http://{address}");
        Ok(Self {
            base: format!("http://{address}"),
            token,
            researcher,
            state_file: scratch.join("upload-state.json"),
            platform,
            clear_tiles,
            stop,
            task,
        })
    }

    fn get(&self, http: &reqwest::Client, path: &str) -> reqwest::RequestBuilder {
        http.get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Stops accepting, lets open connections finish, and closes the database.
    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("warning: the server stopped with an error: {e}"),
            Ok(Err(e)) => eprintln!("warning: the server task failed: {e}"),
            Err(_) => {
                eprintln!("warning: the server did not stop within 10 s; aborting it");
                abort.abort();
            }
        }
        self.platform.db.pool().close().await;
    }
}

/// What was measured against the running server.
struct Served {
    upload: UploadTiming,
    upload_digest: String,
    tiles: TileRun,
    loaded: LoadedRun,
}

async fn serve_measurements(
    server: &BenchServer,
    args: &ServeBenchArgs,
    upload_path: &Path,
    tile_path: &Path,
) -> anyhow::Result<Served> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("building the HTTP client")?;
    let chunk_bytes = args.chunk_mb << 20;
    let upload = timed_upload(server, upload_path, chunk_bytes).await?;
    let registered: serde_json::Value = server
        .get(&http, &format!("/api/v1/slides/{}", upload.slide_id))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("reading the uploaded slide's metadata")?
        .json()
        .await
        .context("reading the uploaded slide's metadata")?;
    let upload_digest = registered["sha256"]
        .as_str()
        .context("the slide metadata has no sha256")?
        .to_string();
    anyhow::ensure!(
        registered["size_bytes"].as_u64() == Some(upload.bytes),
        "the server registered {} bytes, not {}",
        registered["size_bytes"],
        upload.bytes
    );
    let tiles = serve_tiles(server, &http, args, tile_path, chunk_bytes).await?;
    let loaded = tiles_while_training(server, &http, &tiles).await?;
    Ok(Served {
        upload,
        upload_digest,
        tiles,
        loaded,
    })
}

/// Flushes dirty pages (`sync`), so that the write-back of freshly written slides does not
/// compete with the next measurement. Best effort: without `sync` the figures are noisier.
fn settle_writeback() {
    match std::process::Command::new("sync").status() {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("warning: sync exited with {status}"),
        Err(e) => eprintln!("warning: cannot run sync: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Upload

/// Timings of one upload, split by the client's progress phases.
struct UploadTiming {
    slide_id: String,
    bytes: u64,
    /// The client's whole-file SHA-256, before anything is sent.
    hashing: Duration,
    /// From the first chunk to the slide id.
    sending: Duration,
    /// Bytes in every chunk but the last, and the time from the first chunk to the last one's
    /// start: the transfer with the per-chunk work but without the server's final processing.
    wire: Option<(u64, Duration)>,
    /// From the start of the last chunk to the slide id.
    last_chunk_on: Duration,
}

#[derive(Default)]
struct Marks {
    first_chunk: Option<Instant>,
    last_chunk: Option<Instant>,
    last_offset: u64,
    reported_tenths: u64,
}

async fn timed_upload(
    server: &BenchServer,
    path: &Path,
    chunk_bytes: u64,
) -> anyhow::Result<UploadTiming> {
    let client = UploadClient::new(&server.base, &server.token, &server.state_file)
        .context("preparing the upload client")?
        .with_chunk_bytes(chunk_bytes);
    let name = path.display().to_string();
    eprintln!("uploading {name}");
    let marks = Mutex::new(Marks::default());
    let progress = |phase: Phase, done: u64, total: u64| {
        let now = Instant::now();
        let mut marks = marks.lock().unwrap_or_else(|p| p.into_inner());
        match phase {
            Phase::Hashing => {}
            Phase::Uploading => {
                marks.first_chunk.get_or_insert(now);
                marks.last_offset = done;
                let tenths = done * 10 / total.max(1);
                if tenths > marks.reported_tenths {
                    marks.reported_tenths = tenths;
                    eprintln!("  {name}: {}% sent", tenths * 10);
                }
            }
            Phase::Processing => {
                if marks.last_chunk.is_none() {
                    marks.last_chunk = Some(now);
                    eprintln!("  {name}: last chunk; the server checks and stores the slide");
                }
            }
        }
    };
    let started = Instant::now();
    let uploaded = client
        .upload(path, &progress)
        .await
        .with_context(|| format!("uploading {name}"))?;
    let finished = Instant::now();
    anyhow::ensure!(
        uploaded.resumed_from == 0,
        "the upload resumed an earlier one, so it was not measured whole"
    );
    let bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {name}"))?
        .len();
    let marks = marks.into_inner().unwrap_or_else(|p| p.into_inner());
    let first = marks.first_chunk.unwrap_or(started);
    let last = marks.last_chunk.unwrap_or(first);
    Ok(UploadTiming {
        slide_id: uploaded.slide_id,
        bytes,
        hashing: first - started,
        sending: finished - first,
        wire: (marks.last_offset > 0).then(|| (marks.last_offset, last - first)),
        last_chunk_on: finished - last,
    })
}

fn mib_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / MIB / time.as_secs_f64()
}

fn report_upload(
    path: &Path,
    size: u64,
    chunk_mb: u64,
    upload: &UploadTiming,
    reference: Duration,
) {
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "\n== upload: {} ({size} bytes, {:.1} MiB), tus over loopback, {chunk_mb} MiB chunks",
        path.display(),
        size as f64 / MIB
    );
    println!(
        "   client whole-file SHA-256 before sending (excluded)  {:>7.2} s",
        secs(upload.hashing)
    );
    let upload_rate = mib_per_s(upload.bytes, upload.sending);
    println!(
        "   upload incl. server-side processing                  {:>7.2} s  {upload_rate:>7.1} MiB/s",
        secs(upload.sending)
    );
    if let Some((bytes, time)) = upload.wire {
        let wire_rate = mib_per_s(bytes, time);
        // The last chunk travels at about the same rate; the rest of its request is the
        // server's final work.
        let last_bytes = upload.bytes - bytes;
        let processing = secs(upload.last_chunk_on) - last_bytes as f64 / MIB / wire_rate;
        println!(
            "   bytes on the wire (all chunks but the last, {:.0} MiB)  {:>7.2} s  {wire_rate:>7.1} MiB/s",
            bytes as f64 / MIB,
            secs(time)
        );
        println!("   server processing after the last byte (estimated)    {processing:>7.2} s");
    }
    let reference_rate = mib_per_s(size, reference);
    println!(
        "   sha256sum of the same file (page cache warm)         {:>7.2} s  {reference_rate:>7.1} MiB/s",
        secs(reference)
    );
    let ratio = upload_rate / reference_rate;
    println!(
        "   ratio upload / sha256sum {ratio:.2}x (target >= {UPLOAD_TARGET}x: {})",
        if ratio >= UPLOAD_TARGET {
            "met"
        } else {
            "NOT met"
        }
    );
}

// ---------------------------------------------------------------------------------------
// Tiles

/// The Deep Zoom geometry a `.dzi` descriptor announces.
#[derive(Debug, Clone, Copy)]
struct Dzi {
    width: u64,
    height: u64,
    tile_size: u32,
    overlap: u32,
}

impl Dzi {
    fn parse(xml: &str) -> anyhow::Result<Self> {
        fn attribute<T: std::str::FromStr>(xml: &str, name: &str) -> anyhow::Result<T> {
            let start = xml
                .find(&format!(" {name}=\""))
                .with_context(|| format!("the .dzi has no {name}"))?
                + name.len()
                + 3;
            xml[start..]
                .split('"')
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("the .dzi's {name} is not a number"))
        }
        Ok(Self {
            width: attribute(xml, "Width")?,
            height: attribute(xml, "Height")?,
            tile_size: attribute(xml, "TileSize")?,
            overlap: attribute(xml, "Overlap")?,
        })
    }

    /// Dimensions of every level, 1×1 first: each level halves the next, rounding up.
    fn levels(&self) -> Vec<(u64, u64)> {
        let (mut w, mut h) = (self.width, self.height);
        let mut levels = vec![(w, h)];
        while w > 1 || h > 1 {
            w = w.div_ceil(2);
            h = h.div_ceil(2);
            levels.push((w, h));
        }
        levels.reverse();
        levels
    }
}

/// One Deep Zoom tile.
#[derive(Debug, Clone, Copy)]
struct TileId {
    level: usize,
    col: u64,
    row: u64,
}

/// SplitMix64: a few lines of deterministic randomness, enough to pick a sample.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// `count` distinct tiles drawn uniformly from the `TOP_LEVELS` highest-resolution levels, in
/// random order (viewers of different slide areas interleave).
fn sample_tiles(dzi: &Dzi, count: usize) -> Vec<TileId> {
    let levels = dzi.levels();
    let ts = u64::from(dzi.tile_size);
    let grids: Vec<(usize, u64, u64)> = levels
        .iter()
        .enumerate()
        .skip(levels.len().saturating_sub(TOP_LEVELS))
        .map(|(level, &(w, h))| (level, w.div_ceil(ts), h.div_ceil(ts)))
        .collect();
    let total: u64 = grids.iter().map(|&(_, cols, rows)| cols * rows).sum();
    let mut indices: Vec<u64> = (0..total).collect();
    let count = count.min(indices.len());
    // Partial Fisher–Yates: the first `count` places end up a uniform sample without repeats.
    let mut rng = SplitMix(SAMPLE_SEED);
    for i in 0..count {
        let j = i + rng.below(indices.len() - i);
        indices.swap(i, j);
    }
    indices[..count]
        .iter()
        .filter_map(|&index| {
            let mut rest = index;
            for &(level, cols, rows) in &grids {
                if rest < cols * rows {
                    return Some(TileId {
                        level,
                        col: rest % cols,
                        row: rest / cols,
                    });
                }
                rest -= cols * rows;
            }
            None
        })
        .collect()
}

/// One pass over the sample.
struct Pass {
    elapsed: Duration,
    /// Per-request latencies, sorted.
    latencies: Vec<Duration>,
    bytes: u64,
}

impl Pass {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((p / 100.0 * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1].as_secs_f64() * 1e3
    }
}

/// The serving measurement.
struct TileRun {
    /// How the tile slide's own upload went (a second, smaller data point).
    upload: UploadTiming,
    /// The slide's API path.
    base: String,
    dzi: Dzi,
    sample: Vec<TileId>,
    /// (clients, cold pass, warm pass).
    passes: Vec<(usize, Pass, Pass)>,
    /// WADO-RS frames: (clients, cold pass, warm pass), as many requests as `sample`.
    frames: Vec<(usize, Pass, Pass)>,
}

async fn serve_tiles(
    server: &BenchServer,
    http: &reqwest::Client,
    args: &ServeBenchArgs,
    tile_path: &Path,
    chunk_bytes: u64,
) -> anyhow::Result<TileRun> {
    let upload = timed_upload(server, tile_path, chunk_bytes).await?;
    let base = format!("/api/v1/slides/{}", upload.slide_id);
    // Also opens the slide on the server (fetching it into the slide cache), which would
    // otherwise land on the first tile request.
    let xml = server
        .get(http, &format!("{base}/slide.dzi"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("fetching the .dzi")?
        .text()
        .await
        .context("reading the .dzi")?;
    let dzi = Dzi::parse(&xml)?;
    tokio::task::block_in_place(settle_writeback);
    let sample = sample_tiles(&dzi, args.tiles);
    let urls = tile_urls(server, &base, &sample);
    let mut passes = Vec::new();
    // Only the encoded-tile cache is cleared: the slide reader stays open with whatever its
    // decoded-tile cache (64 MiB) kept from the previous pass, a small share of what a
    // sample of thousands of tiles needs.
    for &clients in &args.concurrency {
        eprintln!("fetching {} tiles with {clients} clients", urls.len());
        (server.clear_tiles)();
        let cold = fetch_pass(http, &server.token, &urls, clients, None).await?;
        let warm = fetch_pass(http, &server.token, &urls, clients, None).await?;
        passes.push((clients, cold, warm));
    }
    let frame_urls = frame_urls(server, http, &upload.slide_id, sample.len()).await?;
    let mut frames = Vec::new();
    for &clients in &args.concurrency {
        eprintln!(
            "fetching {} WADO-RS frames with {clients} clients",
            frame_urls.len()
        );
        (server.clear_tiles)();
        let accept = Some(FRAME_ACCEPT);
        let cold = fetch_pass(http, &server.token, &frame_urls, clients, accept).await?;
        let warm = fetch_pass(http, &server.token, &frame_urls, clients, accept).await?;
        frames.push((clients, cold, warm));
    }
    Ok(TileRun {
        upload,
        base,
        dzi,
        sample,
        passes,
        frames,
    })
}

/// What a DICOMweb viewer asks frames as: the stored JPEG, one part per frame.
const FRAME_ACCEPT: &str = "multipart/related; type=\"image/jpeg\"";

/// `count` WADO-RS frame URLs of the slide (one frame each), drawn with the tile sample's seed
/// from the frames of its finest `TOP_LEVELS` instances (one instance per pyramid level).
async fn frame_urls(
    server: &BenchServer,
    http: &reqwest::Client,
    slide_id: &str,
    count: usize,
) -> anyhow::Result<Arc<Vec<String>>> {
    // A slide's study is `2.25.` and its id (a UUID) as a decimal integer; its one series adds `.1`.
    let uuid = uuid::Uuid::parse_str(slide_id).context("the slide id is not a UUID")?;
    let series_path = format!(
        "/dicomweb/studies/2.25.{0}/series/2.25.{0}.1",
        uuid.as_u128()
    );
    let metadata: serde_json::Value = server
        .get(http, &format!("{series_path}/metadata"))
        .header(reqwest::header::ACCEPT, "application/dicom+json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("fetching the series' WADO-RS metadata")?
        .json()
        .await
        .context("reading the series' WADO-RS metadata")?;
    let value = |instance: &serde_json::Value, tag: &str| instance[tag]["Value"][0].clone();
    let mut instances: Vec<(String, u64)> = metadata
        .as_array()
        .context("the series metadata is not a JSON array")?
        .iter()
        .filter_map(|instance| {
            let uid = value(instance, "00080018").as_str()?.to_string();
            let frames = value(instance, "00280008");
            // IS values may come as numbers or as strings.
            let frames = frames
                .as_u64()
                .or_else(|| frames.as_str().and_then(|s| s.trim().parse().ok()))?;
            Some((uid, frames))
        })
        .collect();
    anyhow::ensure!(
        !instances.is_empty(),
        "the series has no instance with frames"
    );
    instances.sort_by_key(|(_, frames)| std::cmp::Reverse(*frames));
    instances.truncate(TOP_LEVELS);
    let total: u64 = instances.iter().map(|(_, frames)| frames).sum();
    let mut rng = SplitMix(SAMPLE_SEED);
    let urls = (0..count)
        .filter_map(|_| {
            let mut rest = rng.next() % total;
            for (uid, frames) in &instances {
                if rest < *frames {
                    return Some(format!(
                        "{}{series_path}/instances/{uid}/frames/{}",
                        server.base,
                        rest + 1
                    ));
                }
                rest -= frames;
            }
            None
        })
        .collect();
    Ok(Arc::new(urls))
}

/// The sample's tile URLs on the server.
fn tile_urls(server: &BenchServer, base: &str, sample: &[TileId]) -> Arc<Vec<String>> {
    Arc::new(
        sample
            .iter()
            .map(|t| {
                format!(
                    "{}{base}/slide_files/{}/{}_{}.jpeg",
                    server.base, t.level, t.col, t.row
                )
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Tiles while training

/// Cold passes with [`LOADED_CLIENTS`] clients, idle and while a training job runs.
struct LoadedRun {
    idle: Pass,
    training: Pass,
    /// The training run's epochs done when the loaded pass ended (proof it was training).
    epochs_during: usize,
}

/// Measures the idle pass, then starts a training run on a generated texture dataset, runs its
/// job in a worker process launched as `pathfed serve` launches its own, and measures the same
/// pass again once the run is training.
async fn tiles_while_training(
    server: &BenchServer,
    http: &reqwest::Client,
    tiles: &TileRun,
) -> anyhow::Result<LoadedRun> {
    use pathfed_training::runs::{self, TrainRequest};
    use pathfed_training::synthetic::{TextureSpec, texture_dataset};

    let urls = tile_urls(server, &tiles.base, &tiles.sample);
    eprintln!(
        "fetching {} tiles with {LOADED_CLIENTS} clients, workers idle",
        urls.len()
    );
    (server.clear_tiles)();
    let idle = fetch_pass(http, &server.token, &urls, LOADED_CLIENTS, None).await?;

    eprintln!("generating a texture dataset to train on");
    let research = pathfed_datasets::Research::new(server.platform.clone())
        .context("loading the research pseudonym key")?;
    let work = server.state_file.with_file_name("textures");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let name = "bench-textures";
    let manifest = texture_dataset(&server.platform.store, &work, name, &TextureSpec::default())
        .await
        .context("generating the texture dataset")?;
    let version = pathfed_datasets::versions::reserve(
        &research,
        &server.researcher,
        name,
        &manifest.content.params,
    )
    .await?;
    pathfed_datasets::versions::finish(&research, name, version, manifest.content).await?;
    let request: TrainRequest = serde_json::from_value(serde_json::json!({
        "dataset": format!("{name}@{version}"),
        "model": "resnet-small",
        // Longer than the measurement: the run is cancelled once it is done.
        "epochs": 1000,
        "patience": 1000,
    }))
    .context("building the training request")?;
    let run = runs::start(&research, &server.researcher, request).await?;

    let exe = std::env::current_exe().context("locating the pathfed binary")?;
    use pathfed_core::jobs::kinds::{JobKind as _, Train};
    let args: Vec<String> = ["worker", "--kinds", Train::NAME]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut command = pathfed_core::worker::worker_command(&exe, &args);
    let config = &server.platform.config;
    command
        .env("PATHFED_DATA_DIR", &config.data_dir)
        .env("PATHFED_DATABASE_URL", config.database_url())
        .env("PATHFED_OBJECT_STORE_URL", config.object_store_url())
        .stdout(std::process::Stdio::null());
    let mut worker = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .context("starting the training worker")?;

    // Measured once the run has finished an epoch, so it trains (not loads) throughout.
    let started = Instant::now();
    loop {
        let state = runs::state(&research, &server.researcher, &run.id).await?;
        anyhow::ensure!(
            !matches!(state.status.as_str(), "failed" | "cancelled" | "succeeded"),
            "the training run ended before the measurement: {} {}",
            state.status,
            state.error.unwrap_or_default()
        );
        if state.status == "running" && !state.history.is_empty() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the training run did not start within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "fetching {} tiles with {LOADED_CLIENTS} clients while training",
        urls.len()
    );
    (server.clear_tiles)();
    let training = fetch_pass(http, &server.token, &urls, LOADED_CLIENTS, None).await?;
    let state = runs::state(&research, &server.researcher, &run.id).await?;
    anyhow::ensure!(
        state.status == "running",
        "the training run stopped during the measurement: {}",
        state.status
    );
    let _ = runs::cancel(&research, &server.researcher, &run.id).await;
    let _ = worker.kill().await;
    Ok(LoadedRun {
        idle,
        training,
        epochs_during: state.history.len(),
    })
}

fn report_loaded(run: &LoadedRun) {
    println!(
        "\n== tiles while a training job runs: the sample fetched cold by {LOADED_CLIENTS} clients, \
         a worker process (nice {}) training resnet-small on generated textures",
        pathfed_core::worker::WORKER_NICENESS
    );
    println!(
        "   {:>14} | {:>9} {:>8} {:>8}",
        "", "t/s", "p50 ms", "p99 ms"
    );
    for (what, pass) in [("workers idle", &run.idle), ("training", &run.training)] {
        println!(
            "   {what:>14} | {:>9.0} {:>8.2} {:>8.2}",
            pass.rate(),
            pass.percentile_ms(50.0),
            pass.percentile_ms(99.0)
        );
    }
    let ratio = run.training.percentile_ms(99.0) / run.idle.percentile_ms(99.0);
    println!(
        "   p99 training / idle {ratio:.2}x (target <= {LOADED_P99_TARGET}x: {}); the run logged {} epoch metrics meanwhile",
        if ratio <= LOADED_P99_TARGET {
            "met"
        } else {
            "NOT met"
        },
        run.epochs_during
    );
}

/// Fetches every URL once with `clients` tasks taking the next URL from a shared counter.
async fn fetch_pass(
    http: &reqwest::Client,
    token: &str,
    urls: &Arc<Vec<String>>,
    clients: usize,
    accept: Option<&'static str>,
) -> anyhow::Result<Pass> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (http, urls, next, token) =
            (http.clone(), urls.clone(), next.clone(), token.to_string());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0u64;
            while let Some(url) = urls.get(next.fetch_add(1, Ordering::Relaxed)) {
                let sent = Instant::now();
                let mut request = http.get(url).bearer_auth(&token);
                if let Some(accept) = accept {
                    request = request.header(reqwest::header::ACCEPT, accept);
                }
                let body = request
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .with_context(|| format!("fetching {url}"))?
                    .bytes()
                    .await
                    .with_context(|| format!("reading {url}"))?;
                latencies.push(sent.elapsed());
                anyhow::ensure!(!body.is_empty(), "{url} answered an empty tile");
                bytes += body.len() as u64;
            }
            Ok::<_, anyhow::Error>((latencies, bytes))
        });
    }
    let mut latencies = Vec::with_capacity(urls.len());
    let mut bytes = 0;
    while let Some(joined) = workers.join_next().await {
        let (mine, my_bytes) = joined.context("a client task failed")??;
        latencies.extend(mine);
        bytes += my_bytes;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Pass {
        elapsed,
        latencies,
        bytes,
    })
}

/// Tiles per second of openslide-rs's `DeepZoomGenerator` + the JPEG encoder the server uses,
/// over the same tiles, for 1 and 2 threads (the machines we measure on have 2 cores).
#[cfg(feature = "openslide")]
fn openslide_reference(
    path: &Path,
    sample: &[TileId],
    dzi: &Dzi,
    quality: u8,
) -> anyhow::Result<Option<Vec<(usize, f64)>>> {
    use openslide_rs::deepzoom::{DeepZoomGenerator, DeepZoomOptions};
    use openslide_rs::{Address, OpenSlide};
    use pathfed_slide::jpeg;

    let mut rates = Vec::new();
    for threads in [1usize, 2] {
        // A fresh handle each time, so no measurement profits from the previous one's cache.
        let slide = OpenSlide::new(path).map_err(|e| anyhow::anyhow!("OpenSlide: {e}"))?;
        let generator = DeepZoomGenerator::new(
            &slide,
            DeepZoomOptions::new(dzi.tile_size).with_overlap(dzi.overlap),
        )
        .map_err(|e| anyhow::anyhow!("OpenSlide Deep Zoom: {e}"))?;
        anyhow::ensure!(
            generator.level_count() as usize == dzi.levels().len(),
            "OpenSlide's Deep Zoom pyramid differs in shape from the server's"
        );
        let next = AtomicUsize::new(0);
        let started = Instant::now();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| -> anyhow::Result<()> {
                        while let Some(t) = sample.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let address = Address {
                                x: u32::try_from(t.col)?,
                                y: u32::try_from(t.row)?,
                            };
                            let image = generator
                                .tile_rgb(u32::try_from(t.level)?, address)
                                .map_err(|e| anyhow::anyhow!("OpenSlide tile: {e}"))?;
                            jpeg::encode_rgb(&image, quality)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("an OpenSlide thread panicked"))?
            })
        })?;
        rates.push((
            threads,
            sample.len() as f64 / started.elapsed().as_secs_f64(),
        ));
    }
    Ok(Some(rates))
}

#[cfg(not(feature = "openslide"))]
fn openslide_reference(
    _path: &Path,
    _sample: &[TileId],
    _dzi: &Dzi,
    _quality: u8,
) -> anyhow::Result<Option<Vec<(usize, f64)>>> {
    Ok(None)
}

fn report_tiles(path: &Path, run: &TileRun, reference: Option<&[(usize, f64)]>, cache_bytes: u64) {
    let levels = run.dzi.levels().len();
    let top = levels.saturating_sub(TOP_LEVELS);
    println!(
        "\n== tile serving: {} ({} x {} px), Deep Zoom tile {} overlap {}",
        path.display(),
        run.dzi.width,
        run.dzi.height,
        run.dzi.tile_size,
        run.dzi.overlap
    );
    println!(
        "   (uploaded like the first: {:.1} MiB in {:.2} s, {:.1} MiB/s incl. server-side processing)",
        run.upload.bytes as f64 / MIB,
        run.upload.sending.as_secs_f64(),
        mib_per_s(run.upload.bytes, run.upload.sending)
    );
    println!(
        "   {} distinct tiles sampled from levels {top}..={} (seed {SAMPLE_SEED:#x}); cold = server tile cache cleared first, warm = the same tiles again",
        run.sample.len(),
        levels.saturating_sub(1)
    );
    match reference {
        Some(rates) => {
            let listed: Vec<String> = rates
                .iter()
                .map(|(threads, rate)| {
                    format!(
                        "{threads} thread{} {rate:.0} tiles/s",
                        if *threads == 1 { "" } else { "s" }
                    )
                })
                .collect();
            println!(
                "   openslide-rs DeepZoomGenerator + JPEG, same tiles: {}",
                listed.join(" | ")
            );
        }
        None => println!("   (no OpenSlide reference: this build lacks the `openslide` feature)"),
    }
    println!(
        "   {:>7} | {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>22}",
        "clients",
        "cold t/s",
        "p50 ms",
        "p99 ms",
        "warm t/s",
        "p50 ms",
        "p99 ms",
        "vs OpenSlide cold/warm"
    );
    for (clients, cold, warm) in &run.passes {
        // The reference with as many threads as it can use for this many clients.
        let versus = reference
            .and_then(|rates| {
                rates
                    .iter()
                    .filter(|(threads, _)| threads <= clients)
                    .max_by_key(|(threads, _)| *threads)
            })
            .map(|&(threads, rate)| {
                format!(
                    "{:.2}x / {:.2}x ({threads} thr)",
                    cold.rate() / rate,
                    warm.rate() / rate
                )
            })
            .unwrap_or_else(|| "n/a".into());
        println!(
            "   {clients:>7} | {:>9.0} {:>8.2} {:>8.2} | {:>9.0} {:>8.2} {:>8.2} | {versus:>22}",
            cold.rate(),
            cold.percentile_ms(50.0),
            cold.percentile_ms(99.0),
            warm.rate(),
            warm.percentile_ms(50.0),
            warm.percentile_ms(99.0),
        );
    }
    println!(
        "   WADO-RS frames (one per request, stored JPEG tiles passed through), {} sampled from the finest {TOP_LEVELS} instances:",
        run.sample.len()
    );
    println!(
        "   {:>7} | {:>9} {:>8} {:>8} | {:>9} {:>8} {:>8} | {:>22}",
        "clients",
        "cold f/s",
        "p50 ms",
        "p99 ms",
        "warm f/s",
        "p50 ms",
        "p99 ms",
        "vs Deep Zoom cold/warm"
    );
    for ((clients, cold, warm), (_, tiles_cold, tiles_warm)) in run.frames.iter().zip(&run.passes) {
        println!(
            "   {clients:>7} | {:>9.0} {:>8.2} {:>8.2} | {:>9.0} {:>8.2} {:>8.2} | {:>22}",
            cold.rate(),
            cold.percentile_ms(50.0),
            cold.percentile_ms(99.0),
            warm.rate(),
            warm.percentile_ms(50.0),
            warm.percentile_ms(99.0),
            format!(
                "{:.2}x / {:.2}x",
                cold.rate() / tiles_cold.rate(),
                warm.rate() / tiles_warm.rate()
            ),
        );
    }
    if let Some((_, cold, _)) = run.passes.first()
        && cold.bytes > cache_bytes
    {
        println!(
            "   note: the sample ({:.0} MiB) exceeds the server's tile cache ({:.0} MiB), so warm passes also render",
            cold.bytes as f64 / MIB,
            cache_bytes as f64 / MIB
        );
    }
}
