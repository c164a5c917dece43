//! `pathfed admin backup` and `pathfed admin restore`: the command-line side of
//! [`pathfed_core::backup`]: the arguments, the passphrase, progress lines, the audit rows, and
//! after a restore the audit log's check.
//!
//! The passphrase comes from `--passphrase-file` (its first line) or the
//! `PATHFED_BACKUP_PASSPHRASE` variable, never from the command line, where other users of the
//! host could read it. Keep the sealed keys file and the passphrase apart from the backup: the
//! database alone must not reveal patients.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use pathfed_core::backup::{self, BackupOptions, Progress, RestoreOptions};
use pathfed_core::quota::human_bytes;
use pathfed_core::{Config, Platform};

use super::admin::cli_event;

/// The variable that may hold the backup passphrase.
const PASSPHRASE_VAR: &str = "PATHFED_BACKUP_PASSPHRASE";

/// `pathfed admin backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup folder (created if missing); each run adds one generation to it.
    #[arg(long)]
    out: PathBuf,
    /// Generations to keep; older ones, and the objects only they held, are removed.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    keep: u32,
    /// Where the sealed keys file goes (default: OUT/keys). Copy it, and keep the passphrase,
    /// apart from the backup.
    #[arg(long)]
    keys_out: Option<PathBuf>,
    /// File holding the passphrase that seals the keys (first line; at least 12 characters).
    /// Without it, PATHFED_BACKUP_PASSPHRASE.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

/// `pathfed admin restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup folder.
    #[arg(long)]
    from: PathBuf,
    /// The generation to restore (a folder name under FROM/generations; default: the newest).
    #[arg(long)]
    generation: Option<String>,
    /// The sealed keys file (default: FROM/keys/<generation>.keys.enc).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// File holding the passphrase (first line). Without it, PATHFED_BACKUP_PASSPHRASE.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

fn passphrase(file: Option<&Path>) -> anyhow::Result<String> {
    let passphrase = match file {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the passphrase file {}", file.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => match std::env::var(PASSPHRASE_VAR) {
            Ok(value) => value,
            Err(_) => bail!("give --passphrase-file FILE, or set {PASSPHRASE_VAR}"),
        },
    };
    if passphrase.is_empty() {
        bail!("the backup passphrase is empty");
    }
    Ok(passphrase)
}

fn print_backup_progress(step: Progress<'_>) {
    match step {
        Progress::Database { kind, bytes } => {
            println!("database: {kind} dump, {}", human_bytes(bytes));
        }
        Progress::Object {
            done,
            total,
            key,
            size,
            copied,
        } => {
            // Every copy is named; unchanged objects only now and then, so a large store does
            // not print a line per slide.
            if copied {
                println!("[{done}/{total}] copied {key} ({})", human_bytes(size));
            } else if done.is_multiple_of(1000) || done == total {
                println!("[{done}/{total}] already in the backup");
            }
        }
        Progress::Pruned { generation } => println!("removed generation {generation}"),
    }
}

fn print_restore_progress(step: Progress<'_>) {
    match step {
        Progress::Database { kind, bytes } => {
            println!("database: {kind} dump loaded ({})", human_bytes(bytes));
        }
        Progress::Object {
            done,
            total,
            key,
            size,
            ..
        } => println!(
            "[{done}/{total}] restored {key} ({}, SHA-256 verified)",
            human_bytes(size)
        ),
        Progress::Pruned { .. } => {}
    }
}

/// Makes a backup generation and prints what it did.
pub async fn backup(args: BackupArgs, config: &Config) -> anyhow::Result<()> {
    let passphrase = passphrase(args.passphrase_file.as_deref())?;
    let platform = Platform::open(config.clone())
        .await
        .context("opening the platform database and store")?;
    let target = format!("backup:{}", args.out.display());
    let options = BackupOptions {
        out: args.out.clone(),
        keep: args.keep as usize,
        keys_dir: args.keys_out.clone(),
        passphrase,
        audit: Some(cli_event("admin.backup", &target)),
    };
    let summary = match backup::backup(&platform, &options, &mut print_backup_progress).await {
        Ok(summary) => summary,
        Err(e) => {
            let mut failed = cli_event("admin.backup", &target).detail(e.to_string());
            failed.outcome = "failed".into();
            let _ = platform.audit(failed).await;
            return Err(anyhow::Error::new(e).context(format!(
                "backup into {} failed; no generation was made",
                args.out.display()
            )));
        }
    };
    println!(
        "generation {} in {}",
        summary.generation,
        summary.folder.display()
    );
    println!(
        "objects: {} ({} copied, {} already in the backup), {} copied of {}",
        summary.objects,
        summary.copied,
        summary.reused,
        human_bytes(summary.bytes_copied),
        human_bytes(summary.bytes_total)
    );
    if summary.skipped_checkpoints > 0 {
        println!(
            "left out {} audit checkpoint(s) newer than the database snapshot",
            summary.skipped_checkpoints
        );
    }
    println!(
        "database: {} ({}, SHA-256 {})",
        summary.database.file,
        human_bytes(summary.database.size),
        summary.database.sha256
    );
    println!(
        "keys: {} key file(s) sealed in {}; store a copy of it, and the passphrase, apart from \
         the backup",
        summary.key_files.len(),
        summary.keys_file.display()
    );
    if !summary.environment_keys.is_empty() {
        println!(
            "note: {} come from the environment and are not in the backup; keep them in your \
             secret store",
            summary.environment_keys.join(", ")
        );
    }
    if summary.removed_objects > 0 {
        println!(
            "removed {} object file(s) no remaining generation holds",
            summary.removed_objects
        );
    }
    Ok(())
}

/// Restores a generation into the configured (empty) platform, then checks the audit log.
pub async fn restore(args: RestoreArgs, config: &Config) -> anyhow::Result<()> {
    let passphrase = passphrase(args.passphrase_file.as_deref())?;
    let options = RestoreOptions {
        from: args.from.clone(),
        generation: args.generation.clone(),
        keys_file: args.keys.clone(),
        passphrase,
    };
    let summary = backup::restore(config, &options, &mut print_restore_progress)
        .await
        .with_context(|| format!("restoring from {}", args.from.display()))?;
    let manifest = &summary.manifest;
    println!(
        "restored generation {} (made {} by pathfed {}): {} objects ({}), {} key file(s)",
        manifest.generation,
        manifest.created_at,
        manifest.platform_version,
        summary.objects,
        human_bytes(summary.bytes),
        summary.key_files.len()
    );
    if !manifest.environment_keys.is_empty() {
        println!(
            "note: the backed-up platform read {} from its environment; set them to the same \
             values here, from your secret store",
            manifest.environment_keys.join(", ")
        );
    }
    let platform = Platform::open(config.clone())
        .await
        .context("opening the restored platform")?;
    let verification = platform
        .verify_audit()
        .await
        .context("checking the restored audit log")?;
    if let Some(problem) = &verification.problem {
        bail!(
            "the restored audit log does NOT verify: {problem} ({} rows checked, {} \
             checkpoint(s))",
            verification.rows,
            verification.checkpoints
        );
    }
    println!(
        "audit log intact: {} rows, {} checkpoint(s) match",
        verification.rows, verification.checkpoints
    );
    platform
        .audit(
            cli_event("admin.restore", &format!("backup:{}", args.from.display()))
                .detail(format!("generation {}", manifest.generation)),
        )
        .await?;
    Ok(())
}
