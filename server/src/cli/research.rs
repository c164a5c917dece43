//! Research-tier commands: `pathfed deid` (offline de-identification of a local file).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use pathfed_core::Config;
use pathfed_datasets::deid::{DeidOptions, deidentify_file};

/// `pathfed deid FILE --out OUT.tiff`.
#[derive(Debug, Args)]
pub struct DeidArgs {
    /// The slide to de-identify (any format the platform reads).
    file: PathBuf,
    /// Where to write the de-identified pyramidal BigTIFF.
    #[arg(long)]
    out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// JPEG quality where tiles must be re-encoded (formats only OpenSlide reads).
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `pathfed deid`.
pub fn deid(args: DeidArgs, config: &Config) -> anyhow::Result<()> {
    if args.out.exists() && !args.force {
        bail!("{} exists (pass --force to replace it)", args.out.display());
    }
    if !(1..=100).contains(&args.quality) {
        bail!("--quality must be 1 to 100");
    }
    let options = DeidOptions {
        jpeg_quality: args.quality,
        ..DeidOptions::default()
    };
    let report = deidentify_file(&args.file, &args.out, &config.slide, &options)
        .with_context(|| format!("de-identifying {}", args.file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let kept = &report.kept;
    println!(
        "wrote {} ({} bytes, {} tiles, {:?} pixels)",
        args.out.display(),
        report.output_bytes,
        report.tiles,
        report.pixel_path
    );
    println!("kept:");
    println!("  vendor          {}", kept.vendor);
    let levels: Vec<String> = kept
        .levels
        .iter()
        .map(|(w, h)| format!("{w}×{h}"))
        .collect();
    println!("  levels          {}", levels.join(", "));
    match kept.mpp {
        Some((x, y)) => println!("  MPP             {x} × {y} µm/px"),
        None => println!("  MPP             (the source declares none)"),
    }
    if let Some(power) = kept.objective_power {
        println!("  objective       {power}×");
    }
    println!("removed:");
    for item in &report.removed {
        println!("  {item}");
    }
    Ok(())
}
