//! `pathfed admin tls self-signed`: a certificate and key for trying HTTPS before the
//! hospital's own certificate authority (or a public one) issues the real certificate.
//!
//! Browsers warn about a self-signed certificate until it is trusted on the workstation, so it
//! is for trials and closed test networks. The key is written readable by its owner only; the
//! command prints the settings that make `pathfed serve` use the pair.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

/// The names a trial certificate is for when no `--host` is given: this machine.
const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// The longest validity accepted, in days (ten years).
const MAX_DAYS: u32 = 3650;

/// `pathfed admin tls …`
#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Make a self-signed certificate (cert.pem) and its private key (key.pem) for trying
    /// HTTPS; browsers warn about it unless it is trusted on the workstation.
    SelfSigned {
        /// Folder to write cert.pem and key.pem into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// A host name or IP address clients use to reach the server; repeat for several
        /// (default: localhost, 127.0.0.1 and ::1).
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the certificate is valid, from today.
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Replace cert.pem and key.pem when the folder already has them.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `pathfed admin tls` command (no database or store is needed).
pub fn run(cmd: TlsCommand) -> anyhow::Result<()> {
    match cmd {
        TlsCommand::SelfSigned {
            out,
            hosts,
            days,
            force,
        } => self_signed(&out, &hosts, days, force),
    }
}

fn self_signed(out: &Path, hosts: &[String], days: u32, force: bool) -> anyhow::Result<()> {
    if !(1..=MAX_DAYS).contains(&days) {
        bail!("--days must be between 1 and {MAX_DAYS}");
    }
    let hosts: Vec<String> = if hosts.is_empty() {
        DEFAULT_HOSTS.iter().map(|h| (*h).to_string()).collect()
    } else {
        hosts.iter().map(|h| h.trim().to_string()).collect()
    };
    for host in &hosts {
        if host.is_empty() || !host.is_ascii() || host.contains(char::is_whitespace) {
            bail!(
                "--host {host:?} is not a host name or IP address \
                 (write internationalised names in their xn-- form)"
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                bail!(
                    "{} exists; pass --force to replace it (a server using it then needs a restart)",
                    path.display()
                );
            }
        }
    }

    let mut params =
        rcgen::CertificateParams::new(hosts.clone()).context("the certificate's host names")?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(
        rcgen::DnType::CommonName,
        format!("pathfed trial certificate ({})", hosts[0]),
    );
    params.distinguished_name = name;
    // A server certificate that is its own trust anchor: not a CA, for TLS servers only.
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let today = days_since_epoch(std::time::SystemTime::now());
    // From yesterday, so a workstation whose clock is a little behind accepts it too.
    let (y, m, d) = civil_date(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil_date(today + i64::from(days));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let until = format!("{y:04}-{m:02}-{d:02}");

    let key = rcgen::KeyPair::generate().context("generating the private key")?;
    let certificate = params
        .self_signed(&key)
        .context("signing the certificate")?;

    write_private(&key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certificate.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;

    let cert = cert_path.display().to_string();
    let key = key_path.display().to_string();
    println!(
        "wrote {cert} (self-signed, for {}; valid until {until})",
        hosts.join(", ")
    );
    println!("wrote {key} (private key, readable by this user only)");
    println!();
    println!("serve HTTPS with these lines in pathfed.toml:");
    println!("[tls]");
    println!("cert_file = {cert:?}");
    println!("key_file = {key:?}");
    println!();
    println!("or in the environment:");
    println!("PATHFED_TLS_CERT_FILE={cert}");
    println!("PATHFED_TLS_KEY_FILE={key}");
    println!();
    println!(
        "browsers warn about a self-signed certificate: for a trial, trust {cert} on the \
         workstations; in production use a certificate from the hospital's or a public CA"
    );
    Ok(())
}

/// Writes a secret file readable and writable by its owner only, even when it existed with a
/// wider mode.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whole days from 1970-01-01 (UTC) to `at`.
fn days_since_epoch(at: std::time::SystemTime) -> i64 {
    let seconds = match at.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    };
    seconds.div_euclid(86_400)
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard
/// Hinnant's `civil_from_days`; exact for every day a certificate can name.
fn civil_date(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // day is 1..=31 and month 1..=12 by construction; years stay far inside i32.
    (year as i32, month as u8, day as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_become_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(19_723 + 365 + 59), (2025, 2, 28));
    }
}
