//! HTTPS served by the platform itself, checked from outside: OpenSSL's own client (a TLS
//! implementation independent of ours) reports the protocol version a server agrees to, and a
//! browser-like client signs in and gets HSTS and a `Secure` session cookie. Behind a trusted
//! proxy the forwarded scheme and client address count (the sign-in throttle locks the
//! forwarded address, not the proxy's); from anyone else the same headers are ignored. A
//! half-configured or unusable certificate stops `pathfed serve` with a message naming it.
//! HSTS covers subdomains only when `tls.hsts_include_subdomains` says so. Plain HTTP on an
//! address other machines reach, with no trusted proxy named, starts with a warning.
//!
//! Transport does not depend on the database, so these run on the local backend only.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::json;

use crate::support::{Backend, TestServer, bin, password};

const SESSION: &str = "/api/v1/session";

/// Runs a command to its end, failing the test if it is still running after `within`.
fn finish(command: &mut Command, within: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{command:?} still running after {within:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A certificate for 127.0.0.1 made the way an admin makes one for a trial; (cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let out = dir.join("tls");
    let made = finish(
        Command::new(bin())
            .current_dir(dir)
            .args(["admin", "tls", "self-signed", "--out"])
            .arg(&out)
            .args(["--host", "127.0.0.1", "--host", "localhost", "--days", "2"]),
        Duration::from_secs(60),
    );
    let said = String::from_utf8_lossy(&made.stdout);
    assert!(
        made.status.success(),
        "self-signed: {said}{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
    // It says how to use the pair, by the paths it wrote.
    assert!(
        said.contains(&format!("PATHFED_TLS_CERT_FILE={}", cert.display()))
            && said.contains(&format!("PATHFED_TLS_KEY_FILE={}", key.display()))
            && said.contains("[tls]"),
        "{said}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is its owner's only");
    // Made again without --force, it refuses to replace a key a server may be using.
    let again = finish(
        Command::new(bin())
            .current_dir(dir)
            .args(["admin", "tls", "self-signed", "--out"])
            .arg(&out),
        Duration::from_secs(60),
    );
    assert!(!again.status.success(), "an existing key was replaced");
    (cert, key)
}

fn tls_settings<'a>(cert: &'a Path, key: &'a Path) -> Vec<(&'static str, &'a str)> {
    vec![
        ("PATHFED_TLS_CERT_FILE", cert.to_str().unwrap()),
        ("PATHFED_TLS_KEY_FILE", key.to_str().unwrap()),
    ]
}

fn port(server: &TestServer) -> u16 {
    server.url.rsplit(':').next().unwrap().parse().unwrap()
}

/// OpenSSL's client at exactly one protocol version (`-tls1_3`, `-tls1_2`), trusting only
/// `cert` and checking it names 127.0.0.1: whether the handshake succeeded, and its report.
fn openssl_client(port: u16, version: &str, cert: &Path) -> (bool, String) {
    let out = finish(
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                version,
            ])
            .arg("-CAfile")
            .arg(cert)
            .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-brief"]),
        Duration::from_secs(30),
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && report.contains("CONNECTION ESTABLISHED"),
        report,
    )
}

fn hsts(headers: &HeaderMap) -> Option<String> {
    headers
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap().to_string())
}

/// The session cookie's `Set-Cookie` and whether it is `Secure`; panics when none was set.
fn session_cookie_secure(headers: &HeaderMap) -> bool {
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("pathfed_session="))
        .unwrap_or_else(|| panic!("no session cookie in {headers:?}"));
    cookie
        .split(';')
        .skip(1)
        .any(|attribute| attribute.trim().eq_ignore_ascii_case("secure"))
}

#[tokio::test(flavor = "multi_thread")]
async fn https_speaks_tls13_and_marks_the_session_secure() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let server = TestServer::start_with(Backend::Local, &tls_settings(&cert, &key));
    assert!(server.url.starts_with("https://"), "{}", server.url);
    server.user("Spoke TLS", "spoke", "tls_user", "submitter");
    let port = port(&server);

    // An independent TLS client: TLS 1.3 with the certificate verified; 1.2 refused.
    let (ok, report) = openssl_client(port, "-tls1_3", &cert);
    assert!(ok, "TLS 1.3 handshake failed: {report}");
    assert!(report.contains("Protocol version: TLSv1.3"), "{report}");
    assert!(report.contains("Verification: OK"), "{report}");
    let (ok, report) = openssl_client(port, "-tls1_2", &cert);
    assert!(!ok, "TLS 1.2 was accepted by default: {report}");

    // A browser-like client that trusts this certificate and nothing else signs in.
    let pem = std::fs::read(&cert).unwrap();
    let browser = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .cookie_store(true)
        .build()
        .unwrap();
    let response = browser
        .post(format!("{}{SESSION}", server.url))
        .json(&json!({"username": "tls_user", "password": password("tls_user")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Not for subdomains unless asked: other intranet hosts of the domain may be plain HTTP.
    assert_eq!(
        hsts(response.headers()).as_deref(),
        Some("max-age=31536000")
    );
    assert!(
        session_cookie_secure(response.headers()),
        "the session cookie is not Secure: {:?}",
        response.headers()
    );
    // The Secure cookie comes back over HTTPS: the session works.
    let session = browser
        .get(format!("{}{SESSION}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    assert!(
        hsts(session.headers()).is_some(),
        "every HTTPS answer has HSTS"
    );

    // The HTTPS port speaks nothing else: plain HTTP gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // And a client that does not trust the certificate does not get through.
    let untrusted = reqwest::Client::new()
        .get(format!("{}/healthz", server.url))
        .send()
        .await;
    assert!(untrusted.is_err(), "an unverified certificate was accepted");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls12_is_accepted_when_configured() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(certs.path());
    let mut settings = tls_settings(&cert, &key);
    settings.push(("PATHFED_TLS_MIN_VERSION", "1.2"));
    let server = TestServer::start_with(Backend::Local, &settings);
    let port = port(&server);
    let (ok, report) = openssl_client(port, "-tls1_2", &cert);
    assert!(ok, "TLS 1.2 refused with min_version 1.2: {report}");
    assert!(report.contains("Protocol version: TLSv1.2"), "{report}");
    let (ok, report) = openssl_client(port, "-tls1_3", &cert);
    assert!(
        ok && report.contains("Protocol version: TLSv1.3"),
        "{report}"
    );
}

/// A sign-in as it reaches the server through a proxy: `headers` are the forwarded ones.
async fn sign_in(
    server: &TestServer,
    username: &str,
    pw: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{SESSION}", server.url))
        .json(&json!({"username": username, "password": pw}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_forwards_the_scheme_and_the_client() {
    let server = TestServer::start_with(
        Backend::Local,
        &[
            ("PATHFED_TLS_TRUSTED_PROXIES", "127.0.0.1"),
            ("PATHFED_TLS_HSTS_INCLUDE_SUBDOMAINS", "true"),
            ("PATHFED_AUTH_MAX_FAILURES_PER_ADDRESS", "2"),
        ],
    );
    server.user("Spoke Proxy", "spoke", "proxied", "submitter");
    let right = password("proxied");

    // The proxy terminated TLS: HSTS and a Secure cookie, though the hop to us is plain HTTP.
    let response = sign_in(
        &server,
        "proxied",
        &right,
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "198.51.100.7"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    // Subdomains too, as `tls.hsts_include_subdomains` asks.
    assert_eq!(
        hsts(response.headers()).as_deref(),
        Some("max-age=31536000; includeSubDomains"),
        "HSTS behind the proxy"
    );
    assert!(session_cookie_secure(response.headers()));
    // The same proxy passing on a plain-HTTP request: neither.
    let response = sign_in(&server, "proxied", &right, &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(hsts(response.headers()), None);
    assert!(!session_cookie_secure(response.headers()));

    // The throttle locks the forwarded client's address, not the proxy's.
    let from = |address: &'static str| [("X-Forwarded-For", address)];
    for n in 1..=2 {
        let status = sign_in(&server, "tls_guess", "wrong", &from("198.51.100.20"))
            .await
            .status();
        assert_eq!(status, 401, "attempt {n}");
    }
    let status = sign_in(&server, "tls_guess", "wrong", &from("198.51.100.20"))
        .await
        .status();
    assert_eq!(status, 429, "the forwarded address was not locked");
    // Writing another address in front does not help: the proxy appended the real one.
    let status = sign_in(
        &server,
        "tls_guess",
        "wrong",
        &from("203.0.113.99, 198.51.100.20"),
    )
    .await
    .status();
    assert_eq!(status, 429, "a forged hop escaped the lock");
    // Another client behind the same proxy is not locked out with it.
    let status = sign_in(&server, "tls_guess", "wrong", &from("198.51.100.21"))
        .await
        .status();
    assert_eq!(status, 401, "the proxy's other clients were locked too");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let server = TestServer::start_with(
        Backend::Local,
        &[("PATHFED_AUTH_MAX_FAILURES_PER_ADDRESS", "2")],
    );
    server.user("Spoke Direct", "spoke", "direct", "submitter");
    let response = sign_in(
        &server,
        "direct",
        &password("direct"),
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "198.51.100.7"),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(hsts(response.headers()), None, "a client claimed HTTPS");
    assert!(!session_cookie_secure(response.headers()));

    // A new forged address per attempt does not escape the lock of the real one.
    for (n, address) in ["198.51.100.30", "198.51.100.31"].into_iter().enumerate() {
        let status = sign_in(
            &server,
            "tls_guess",
            "wrong",
            &[("X-Forwarded-For", address)],
        )
        .await
        .status();
        assert_eq!(status, 401, "attempt {n}");
    }
    let status = sign_in(
        &server,
        "tls_guess",
        "wrong",
        &[("X-Forwarded-For", "198.51.100.32")],
    )
    .await
    .status();
    assert_eq!(status, 429, "a forged X-Forwarded-For escaped the lock");
}

/// `pathfed serve` with these TLS settings must stop at once, non-zero; its error output.
fn serve_refused(dir: &Path, settings: &[(&str, &str)]) -> String {
    let out = finish(
        Command::new(bin())
            .current_dir(dir)
            .arg("serve")
            .env("PATHFED_DATA_DIR", dir.join("data"))
            .env("PATHFED_LISTEN", "127.0.0.1:0")
            .env("PATHFED_LOG", "warn")
            .envs(settings.iter().copied()),
        Duration::from_secs(60),
    );
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "served with {settings:?}: {}{said}",
        String::from_utf8_lossy(&out.stdout)
    );
    said
}

#[test]
fn an_unusable_certificate_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let cert = cert.to_str().unwrap();

    let said = serve_refused(dir.path(), &[("PATHFED_TLS_CERT_FILE", cert)]);
    assert!(said.contains("key_file is not"), "{said}");

    let missing = dir.path().join("nowhere.pem");
    let said = serve_refused(
        dir.path(),
        &[
            ("PATHFED_TLS_CERT_FILE", missing.to_str().unwrap()),
            ("PATHFED_TLS_KEY_FILE", key.to_str().unwrap()),
        ],
    );
    assert!(said.contains("nowhere.pem"), "{said}");

    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(&not_a_key, "this is not a key\n").unwrap();
    let said = serve_refused(
        dir.path(),
        &[
            ("PATHFED_TLS_CERT_FILE", cert),
            ("PATHFED_TLS_KEY_FILE", not_a_key.to_str().unwrap()),
        ],
    );
    assert!(
        said.contains("not-a-key.pem") && said.contains("no PEM private key"),
        "{said}"
    );

    let said = serve_refused(
        dir.path(),
        &[
            ("PATHFED_TLS_CERT_FILE", cert),
            ("PATHFED_TLS_KEY_FILE", key.to_str().unwrap()),
            ("PATHFED_TLS_MIN_VERSION", "1.0"),
        ],
    );
    assert!(said.contains("min_version"), "{said}");
    // Nothing was opened or created before the refusal.
    assert!(!dir.path().join("data").exists());
}

/// `pathfed serve` on `listen` with `settings` (its own data folder `name`), stopped once it
/// has said where it listens; what it wrote to its error output by then.
fn start_output(dir: &Path, name: &str, listen: &str, settings: &[(&str, &str)]) -> String {
    let errors = dir.join(format!("{name}.err"));
    let mut child = Command::new(bin())
        .current_dir(dir)
        .arg("serve")
        .env("PATHFED_DATA_DIR", dir.join(name))
        .env("PATHFED_LISTEN", listen)
        .env("PATHFED_LOG", "warn")
        .env("PATHFED_RESEARCH_SERVE_WORKERS", "0")
        .envs(settings.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    // The warning comes before this line, so it is written once the line is read.
    let mut said = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let errors = std::fs::read_to_string(&errors).unwrap();
    assert!(
        said.starts_with("pathfed listening on "),
        "{name}: {said}{errors}"
    );
    errors
}

#[test]
fn plain_http_beyond_this_host_starts_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let said = start_output(dir.path(), "everywhere", "0.0.0.0:0", &[]);
    assert!(
        said.contains("WARNING: serving plain HTTP")
            && said.contains("tls.cert_file")
            && said.contains("tls.trusted_proxies"),
        "{said}"
    );
    // Loopback only, or behind a named proxy: nothing to warn about.
    let said = start_output(dir.path(), "loopback", "127.0.0.1:0", &[]);
    assert!(!said.contains("plain HTTP"), "{said}");
    let proxied = [("PATHFED_TLS_TRUSTED_PROXIES", "127.0.0.1")];
    let said = start_output(dir.path(), "proxied", "0.0.0.0:0", &proxied);
    assert!(!said.contains("plain HTTP"), "{said}");
}
