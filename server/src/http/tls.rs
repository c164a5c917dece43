//! Transport security: HTTPS served by the platform itself (rustls, TLS 1.3 unless 1.2 is
//! allowed by `tls.min_version`), and the request context every request runs in.
//!
//! [`context`] is the application's outermost middleware. It works out the client's address
//! and whether the request came over HTTPS — from the connection, or from a trusted proxy's
//! `X-Forwarded-For` / `X-Forwarded-Proto` (`tls.trusted_proxies`; anyone else's are ignored)
//! — and runs the request inside [`pathfed_core::request_context::scope`], so the sign-in
//! throttle and the audit log see the real client. Answers to HTTPS requests carry
//! `Strict-Transport-Security` (`tls.hsts_max_age_s`; `includeSubDomains` only with
//! `tls.hsts_include_subdomains`) and mark every cookie they set `Secure`,
//! so a session cookie made over TLS never travels over plain HTTP.
//!
//! [`server_config`] loads the certificate chain and key (PEM) into a rustls configuration,
//! with errors that name the file; `pathfed serve` refuses to start without one when HTTPS is
//! configured rather than falling back to plain HTTP.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use pathfed_core::config::TlsConfig;
use pathfed_core::request_context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the request-context middleware needs to know about the transport.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Proxies whose forwarded headers are believed.
    trusted: Vec<IpAddr>,
    /// This server terminates TLS itself (`tls.cert_file` and `tls.key_file` are set).
    tls: bool,
    /// The `Strict-Transport-Security` value for HTTPS answers; `None` when turned off.
    hsts: Option<HeaderValue>,
}

impl Transport {
    /// The transport as configured: `pathfed serve` speaks HTTPS exactly when both files are
    /// set, so the same settings tell the middleware whether a connection is TLS.
    pub fn new(tls: &TlsConfig) -> Self {
        let hsts = if tls.hsts_max_age_s > 0 {
            // Subdomains only when asked: other hosts of the domain may speak plain HTTP.
            let subdomains = if tls.hsts_include_subdomains {
                "; includeSubDomains"
            } else {
                ""
            };
            HeaderValue::from_str(&format!("max-age={}{subdomains}", tls.hsts_max_age_s)).ok()
        } else {
            None
        };
        Self {
            trusted: tls.proxies(),
            tls: tls.files().is_some(),
            hsts,
        }
    }
}

/// The outermost middleware: runs the request in its [`request_context`] and, over HTTPS,
/// adds HSTS and makes every cookie the answer sets `Secure`.
pub async fn context(
    State(transport): State<Arc<Transport>>,
    request: Request,
    next: Next,
) -> Response {
    let ctx = {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        let headers = request.headers();
        let forwarded_for = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok());
        let forwarded_proto = headers
            .get_all("x-forwarded-proto")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .next_back();
        request_context::resolve(
            peer,
            transport.tls,
            &transport.trusted,
            forwarded_for,
            forwarded_proto,
        )
    };
    let mut response = request_context::scope(ctx, next.run(request)).await;
    if ctx.https {
        if let Some(hsts) = &transport.hsts {
            response
                .headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        secure_cookies(&mut response);
    }
    response
}

/// Adds the `Secure` attribute to every `Set-Cookie` of an HTTPS answer that lacks it: the
/// browser then never sends the cookie over plain HTTP, whoever set it.
fn secure_cookies(response: &mut Response) {
    let headers = response.headers_mut();
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        let secured = cookie
            .to_str()
            .ok()
            .filter(|text| {
                !text
                    .split(';')
                    .skip(1)
                    .any(|attribute| attribute.trim().eq_ignore_ascii_case("secure"))
            })
            .and_then(|text| HeaderValue::from_str(&format!("{text}; Secure")).ok())
            .unwrap_or(cookie);
        headers.append(header::SET_COOKIE, secured);
    }
}

/// The rustls configuration for `tls`, or `None` when no certificate is configured (plain
/// HTTP: loopback, or behind a proxy that terminates TLS).
pub fn server_config(tls: &TlsConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let Some((cert_file, key_file)) = tls.files() else {
        return Ok(None);
    };
    // TLS 1.3 only unless the hospital's clients need 1.2 (older Windows workstations).
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match tls.min_version.trim() {
        "1.3" => vec![&rustls::version::TLS13],
        "1.2" => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        other => bail!("tls.min_version is {other:?}: use \"1.3\" (the default) or \"1.2\""),
    };
    let certificates = load_certificates(cert_file)?;
    let key = load_key(key_file)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .context("choosing the TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .with_context(|| {
            format!(
                "the private key in {} does not fit the certificate in {} (tls.key_file, tls.cert_file)",
                key_file.display(),
                cert_file.display()
            )
        })?;
    // axum-server leaves ALPN to us: without it browsers would not use HTTP/2.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The certificate chain in a PEM file (the server's certificate first, then intermediates).
fn load_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot read the certificate file {} (tls.cert_file): {e}",
                path.display()
            )
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow::anyhow!(
                "the certificate file {} (tls.cert_file) is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certificates.is_empty() {
        bail!(
            "the certificate file {} (tls.cert_file) holds no PEM certificate \
             (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certificates)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "the key file {} (tls.key_file) holds no PEM private key \
             (-----BEGIN PRIVATE KEY-----, RSA or EC)",
            path.display()
        ),
        rustls::pki_types::pem::Error::Io(io) => anyhow::anyhow!(
            "cannot read the key file {} (tls.key_file): {io}",
            path.display()
        ),
        other => anyhow::anyhow!(
            "the key file {} (tls.key_file) is not valid PEM: {other}",
            path.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn https_answers_mark_cookies_secure_once() {
        let mut response = Response::new(axum::body::Body::empty());
        let headers = response.headers_mut();
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("a=1; HttpOnly; Path=/"),
        );
        headers.append(
            header::SET_COOKIE,
            HeaderValue::from_static("b=2; Path=/; secure"),
        );
        secure_cookies(&mut response);
        let cookies: Vec<&str> = response
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            ["a=1; HttpOnly; Path=/; Secure", "b=2; Path=/; secure"]
        );
    }

    #[test]
    fn missing_and_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("cert.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let config = |cert: &Path, key: &Path| TlsConfig {
            cert_file: Some(cert.to_path_buf()),
            key_file: Some(key.to_path_buf()),
            ..TlsConfig::default()
        };
        let missing = dir.path().join("missing.pem");
        let err = server_config(&config(&missing, &missing)).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err:#}");
        let err = server_config(&config(&not_pem, &missing)).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err:#}"
        );
        assert!(server_config(&TlsConfig::default()).unwrap().is_none());
    }
}
