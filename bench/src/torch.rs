//! Running a PyTorch reference script: the script is fed to the chosen Python on its standard
//! input (so `pathfed bench` works from any directory) and answers with one JSON line on
//! stdout; exit status 3 means its Python lacks a package it needs.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

/// The scripts' exit status when a package they need cannot be imported.
const UNAVAILABLE: i32 = 3;

/// What a reference script gave.
pub enum Reference {
    /// It ran: its JSON line.
    Measured(serde_json::Value),
    /// A package it needs (torch, torchvision, timm, numpy) is not importable.
    Missing(String),
    /// The Python interpreter could not be started.
    NotRun(String),
}

impl Reference {
    /// The line to print when the reference did not run.
    pub fn absent(&self) -> Option<String> {
        match self {
            Reference::Measured(_) => None,
            Reference::Missing(why) => Some(format!("not installed ({why})")),
            Reference::NotRun(why) => Some(format!("not run ({why})")),
        }
    }
}

/// Runs `script` with `python` and `args`; an error when it ran and failed.
pub fn run(python: &Path, script: &str, args: &[String]) -> anyhow::Result<Reference> {
    let shown = python.display().to_string();
    eprintln!("measuring PyTorch with {shown}...");
    let spawned = Command::new(python)
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Ok(Reference::NotRun(format!("cannot start {shown}: {e}"))),
    };
    // Dropping stdin after the write closes it, so Python starts running the script.
    child
        .stdin
        .take()
        .context("python's standard input")?
        .write_all(script.as_bytes())
        .with_context(|| format!("sending the reference script to {shown}"))?;
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {shown}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    if output.status.code() == Some(UNAVAILABLE) {
        let why = line["unavailable"]
            .as_str()
            .unwrap_or("a package it needs is not importable");
        return Ok(Reference::Missing(why.to_string()));
    }
    anyhow::ensure!(
        output.status.success(),
        "the PyTorch reference failed ({}): {}",
        output.status,
        line["error"].as_str().unwrap_or("see its output above")
    );
    Ok(Reference::Measured(line))
}

/// `--flag value` pairs as arguments.
pub fn flags<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Vec<String> {
    pairs
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
}

/// A number the reference printed, or an error naming it.
pub fn number(line: &serde_json::Value, key: &str) -> anyhow::Result<f64> {
    line[key]
        .as_f64()
        .with_context(|| format!("the PyTorch reference printed no {key}: {line}"))
}
