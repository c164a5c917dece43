//! Throwaway PostgreSQL and S3 (moto) servers for the integration tests.
//!
//! The test binary (all of the server's integration tests, `tests/it`) starts at most one of
//! each, on first use, on free loopback ports, and hands every test its own database or bucket
//! so tests never see each other's data. Statics are never dropped, so a detached watchdog shell
//! stops each server and removes its files once the test process has exited. No test stops or
//! reconfigures them: every test of the binary shares them for its whole run. The binaries come
//! from `scripts/setup.sh`.
#![allow(dead_code)] // Not every accessor is used by today's tests (e.g. the servers' `port`).

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The role the tests connect as; initdb makes it the superuser.
const PG_USER: &str = "pathfed";
const SETUP_HINT: &str = "run scripts/setup.sh to install it";

/// A throwaway PostgreSQL cluster for this test process, started on first use.
pub struct Postgres {
    bin_dir: PathBuf,
    /// Holds the cluster (`data/`), its log, and its Unix socket.
    dir: PathBuf,
    port: u16,
    /// The system user the server runs as when we are root (postgres refuses to run as root).
    run_as: Option<String>,
}

impl Postgres {
    /// The shared cluster (started lazily, once per test binary).
    ///
    /// Panics with the reason if it cannot start, e.g. the binaries are missing; a failed start is
    /// remembered, so the other tests fail at once instead of each retrying it.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        match SHARED.get_or_init(Postgres::start) {
            Ok(pg) => pg,
            Err(e) => panic!("test PostgreSQL unavailable: {e}"),
        }
    }

    /// The TCP port the cluster listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh, empty database and returns its URL,
    /// e.g. `postgres://pathfed@127.0.0.1:PORT/NAME` (TCP on loopback, trust auth).
    pub fn create_database(&self, name_hint: &str) -> String {
        let name = unique_name(name_hint, '_', "db");
        // A plain client over TCP, as the current user: trust auth needs no password or runuser.
        let out = Command::new(self.bin_dir.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                PG_USER,
                &name,
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            output_text(&out)
        );
        format!("postgres://{PG_USER}@127.0.0.1:{}/{name}", self.port)
    }

    fn start() -> Result<Postgres, String> {
        let bin_dir = find_pg_bin_dir()?;
        let run_as = if running_as_root()? {
            Some("postgres".to_owned())
        } else {
            None
        };
        let dir = make_temp_dir("pathfed-pg")?;
        if let Some(user) = &run_as {
            let uid = id_of(&["-u", user])?;
            let gid = id_of(&["-g", user])?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {} to {user}: {e}", dir.display()))?;
        }
        let mut pg = Postgres {
            bin_dir,
            dir,
            port: 0,
            run_as,
        };

        // Armed before anything is started, so even a half-made cluster is cleaned up.
        let data = pg.data_dir();
        let mut stop = pg.as_server_user(&pg.bin_dir.join("pg_ctl"));
        stop.extend([
            "-D".into(),
            data.clone().into(),
            "-m".into(),
            "immediate".into(),
        ]);
        stop.extend(["-w".into(), "stop".into()]);
        spawn_watchdog(&stop, Some(&pg.dir))?;

        pg.run_server_tool(
            "initdb",
            &[
                "-D".into(),
                data.clone().into(),
                "-A".into(),
                "trust".into(),
                "-U".into(),
                PG_USER.into(),
                "--no-sync".into(),
                "-E".into(),
                "UTF8".into(),
                // Independent of the runner's locale, which could clash with UTF8.
                "--locale=C".into(),
            ],
        )?;

        // The free port is picked by binding and releasing it, so another process can take it
        // in between; a few tries make that race harmless. Connections: every test of the binary
        // uses this one cluster, as many at once as cargo runs test threads (one per CPU by
        // default), each with a server, its workers and CLI runs holding pools of up to 16.
        let mut last_error = String::new();
        for _ in 0..5 {
            pg.port = free_port()?;
            let options = format!(
                "-p {} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=500",
                pg.port,
                pg.dir.display()
            );
            let started = pg.run_server_tool(
                "pg_ctl",
                &[
                    "-D".into(),
                    data.clone().into(),
                    "-l".into(),
                    pg.dir.join("postgres.log").into(),
                    "-w".into(),
                    "-t".into(),
                    "60".into(),
                    "-o".into(),
                    options.into(),
                    "start".into(),
                ],
            );
            match started {
                Ok(()) => return Ok(pg),
                Err(e) => last_error = format!("{e}\n{}", pg.log_tail()),
            }
        }
        Err(last_error)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The command line that runs `program` as the server's user.
    fn as_server_user(&self, program: &Path) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(user) = &self.run_as {
            argv.extend(["runuser".into(), "-u".into(), user.into(), "--".into()]);
        }
        argv.push(program.into());
        argv
    }

    /// Runs initdb or pg_ctl as the server's user, turning failure into its output.
    fn run_server_tool(&self, tool: &str, args: &[OsString]) -> Result<(), String> {
        let argv = self.as_server_user(&self.bin_dir.join(tool));
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .args(args)
            // The postgres user may not be able to enter our working directory.
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", argv[0].to_string_lossy()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{tool} failed: {}", output_text(&out)))
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The newest `/usr/lib/postgresql/<ver>/bin`, else `pg_config --bindir`; an override for other
/// layouts comes from `PATHFED_TEST_PG_BINDIR`.
fn find_pg_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("PATHFED_TEST_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // "15" or "9.6": compared numerically, so 10 is newer than 9.6.
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|bin| bin.join("initdb").is_file());
    from_pg_config.ok_or_else(|| {
        format!("no PostgreSQL server binaries (initdb) in /usr/lib/postgresql/*/bin; {SETUP_HINT}")
    })
}

/// A throwaway S3-compatible server (`moto_server` from `.tools/venv`) for this test process.
pub struct S3Server {
    port: u16,
}

impl S3Server {
    /// The shared server (started lazily, once per test binary); panics with the reason if it
    /// cannot start.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<Result<S3Server, String>> = OnceLock::new();
        match SHARED.get_or_init(S3Server::start) {
            Ok(s3) => s3,
            Err(e) => panic!("test S3 server unavailable: {e}"),
        }
    }

    /// Endpoint URL, e.g. `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh bucket (unique name derived from the hint) and returns its name.
    pub fn create_bucket(&self, name_hint: &str) -> String {
        let name = unique_name(name_hint, '-', "bucket");
        let (status, body) = http_request(self.port, "PUT", &format!("/{name}"))
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        assert_eq!(status, 200, "creating bucket {name}: {body}");
        name
    }

    fn start() -> Result<S3Server, String> {
        let program = find_moto_server()?;
        let log_path =
            std::env::temp_dir().join(format!("pathfed-moto-{}.log", std::process::id()));
        let mut last_error = String::new();
        // Retried on a new port: the free port can be taken between picking and binding it.
        for _ in 0..3 {
            let port = free_port()?;
            let mut supervisor = Command::new("sh")
                .args(["-c", MOTO_SUPERVISOR, "pathfed-test-moto"])
                .arg(std::process::id().to_string())
                .arg(&log_path)
                .arg(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // Holding the test's stdout/stderr open would make cargo test wait for it.
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Out of the terminal's process group, so Ctrl-C on the tests leaves the cleanup
                // to run.
                .process_group(0)
                .spawn()
                .map_err(|e| format!("starting moto_server's watchdog: {e}"))?;

            let deadline = Instant::now() + Duration::from_secs(30);
            let exited = loop {
                if let Ok((200, _)) = http_request(port, "GET", "/") {
                    return Ok(S3Server { port });
                }
                if let Ok(Some(_)) = supervisor.try_wait() {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                thread::sleep(Duration::from_millis(100));
            };
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if !exited {
                return Err(format!(
                    "{} did not answer on port {port} within 30 s:\n{log}",
                    program.display()
                ));
            }
            let _ = fs::remove_file(&log_path);
            last_error = format!("{} exited:\n{log}", program.display());
        }
        Err(last_error)
    }
}

/// `moto_server` runs as the child of a watchdog shell rather than of this process: the
/// shell kills it once this process exits, and its pid cannot be reused by a stranger
/// before then because the shell has not reaped it. The shell also exits when moto_server
/// does, which is how a failed start shows here.
const MOTO_SUPERVISOR: &str = r#"
    pid=$1; log=$2; shift 2
    "$@" >"$log" 2>&1 </dev/null &
    child=$!
    while kill -0 "$pid" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
    kill "$child" 2>/dev/null
    wait "$child"
    # If the test process still lives, moto_server died on its own: the log explains why,
    # and the test process reads and removes it.
    kill -0 "$pid" 2>/dev/null || rm -f -- "$log"
"#;

/// `PATHFED_TEST_MOTO_SERVER`, else `.tools/venv/bin/moto_server` in the nearest directory above
/// this crate that has one (the repository root).
fn find_moto_server() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PATHFED_TEST_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join(".tools/venv/bin/moto_server"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            format!(
                "no .tools/venv/bin/moto_server above {}; {SETUP_HINT}",
                manifest_dir.display()
            )
        })
}

/// One HTTP/1.1 request with an empty body; returns the status code and the whole response.
fn http_request(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    // Connection: close lets us read to the end instead of parsing the framing.
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    Ok((status, response))
}

/// Starts a detached shell that waits for this process to exit, then runs `cleanup` and removes
/// `remove`. It is needed because the shared servers live in statics, which are never dropped.
fn spawn_watchdog(cleanup: &[OsString], remove: Option<&Path>) -> Result<(), String> {
    const SCRIPT: &str = r#"
        pid=$1; remove=$2; shift 2
        while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
        "$@"
        if [ -n "$remove" ]; then rm -rf -- "$remove"; fi
    "#;
    Command::new("sh")
        .args(["-c", SCRIPT, "pathfed-test-watchdog"])
        .arg(std::process::id().to_string())
        .arg(remove.map(Path::as_os_str).unwrap_or_default())
        .args(cleanup)
        // Holding the test's stdout/stderr open would make cargo test wait for the watchdog.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Out of the terminal's process group, so Ctrl-C on the tests does not skip the cleanup.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the cleanup watchdog: {e}"))?;
    Ok(())
}

/// A name unique to this call: the hint reduced to `[a-z0-9]` runs joined by `sep`, then the
/// process id and a counter. Valid as a bucket name (with `-`) and a database name (with `_`).
fn unique_name(hint: &str, sep: char, fallback: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let words: Vec<String> = hint
        .to_ascii_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    let mut base = words.join(&sep.to_string());
    // Room for the suffix within the 63-character limit that buckets and databases share.
    base.truncate(40);
    let base = base.trim_end_matches(sep);
    // Database names must not start with a digit when unquoted; buckets don't mind the prefix.
    let base = match base.chars().next() {
        Some(c) if c.is_ascii_lowercase() => base.to_owned(),
        Some(_) => format!("{fallback}{sep}{base}"),
        None => fallback.to_owned(),
    };
    format!("{base}{sep}{}{sep}{n}", std::process::id())
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn make_temp_dir(prefix: &str) -> Result<PathBuf, String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    // The server insists its directories are private.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    Ok(dir)
}

fn running_as_root() -> Result<bool, String> {
    Ok(id_of(&["-u"])? == 0)
}

/// The number `id ARGS` prints (a uid or gid).
fn id_of(args: &[&str]) -> Result<u32, String> {
    let out = Command::new("id")
        .args(args)
        .output()
        .map_err(|e| format!("running id: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse().map_err(|_| {
        format!(
            "id {} failed (is there a postgres user? {SETUP_HINT}): {}",
            args.join(" "),
            output_text(&out)
        )
    })
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
