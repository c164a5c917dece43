//! Research-tier commands: `pathfed deid` (offline de-identification of a local file),
//! `pathfed dataset …` (versions through a server's API) and `pathfed opt-out`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::{Api, ServerArgs};
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

/// `pathfed dataset …`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Build the next immutable version of a dataset from the research slides.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Dataset name (lowercase letters, digits, . _ -).
        name: String,
        /// Filter, e.g. organ=stomach (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// The taxonomy whose codes are the labels, e.g. gastric-group.
        #[arg(long)]
        labels: String,
        /// Seed of the patient-level split.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Train, validation and test fractions.
        #[arg(long, value_delimiter = ',', default_value = "0.7,0.15,0.15")]
        split: Vec<f64>,
        /// Smallest published group (default: the server's setting).
        #[arg(long)]
        min_cell_size: Option<u64>,
        /// Patch side in pixels.
        #[arg(long, default_value_t = 256)]
        patch_size: u32,
        /// Patch resolution in µm per pixel.
        #[arg(long, default_value_t = 0.5)]
        patch_mpp: f64,
        /// Share of a patch that must be tissue.
        #[arg(long, default_value_t = 0.5)]
        min_tissue: f64,
        /// A version of slides only: no patch extraction.
        #[arg(long)]
        no_patches: bool,
        /// Return once the version is accepted instead of waiting for its extraction.
        #[arg(long)]
        no_wait: bool,
    },
    /// List published versions.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a version's manifest (NAME@N).
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@N.
        reference: String,
    },
    /// What changed between two versions of a dataset.
    Diff {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@OLD.
        old: String,
        /// NAME@NEW.
        new: String,
    },
    /// Download a version (manifest + research slides) into a folder.
    Export {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@N.
        reference: String,
        /// Destination folder (created; must be empty if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Replace research ids by fresh random ids for this export only.
        #[arg(long)]
        rekey: bool,
    },
}

fn parse_reference(reference: &str) -> anyhow::Result<(String, i64)> {
    Ok(pathfed_datasets::versions::parse_reference(reference)?)
}

/// Runs a dataset command.
pub async fn dataset(cmd: DatasetCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetCommand::Create {
            server,
            name,
            filters,
            labels,
            seed,
            split,
            min_cell_size,
            patch_size,
            patch_mpp,
            min_tissue,
            no_patches,
            no_wait,
        } => {
            let mut organ = None;
            for filter in &filters {
                match filter.split_once('=') {
                    Some(("organ", value)) => organ = Some(value.to_string()),
                    _ => bail!("unknown filter {filter:?} (supported: organ=NAME)"),
                }
            }
            let [train, val, test] = split[..] else {
                bail!("--split takes three fractions, e.g. 0.7,0.15,0.15");
            };
            let api = Api::new(&server.server, &server.token)?;
            let body = json!({
                "name": name,
                "params": {
                    "organ": organ,
                    "labels": labels,
                    "seed": seed,
                    "fractions": [train, val, test],
                    "min_cell_size": min_cell_size,
                    "extraction": (!no_patches).then(|| json!({
                        "grid": {
                            "patch_px": patch_size,
                            "patch_mpp": patch_mpp,
                            "min_tissue": min_tissue,
                        },
                    })),
                },
            });
            let state = api
                .post("/api/v1/datasets", &body)
                .await
                .context("creating the version")?;
            let version = state["version"].as_i64().unwrap_or_default();
            if state["status"] == "building" {
                println!(
                    "{name}@{version} accepted; extracting patches (job {})",
                    state["job_id"].as_str().unwrap_or_default()
                );
                if no_wait {
                    return Ok(());
                }
                wait_for_version(&api, &name, version).await?;
            }
            let manifest = api
                .get(&format!("/api/v1/datasets/{name}/versions/{version}"))
                .await?;
            print_summary(&manifest);
        }
        DatasetCommand::List { server } => {
            let api = Api::new(&server.server, &server.token)?;
            let listed = api.get("/api/v1/datasets").await?;
            for v in listed.as_array().into_iter().flatten() {
                println!(
                    "{}@{}\t{}\t{}",
                    v["dataset"].as_str().unwrap_or_default(),
                    v["version"],
                    v["content_hash"].as_str().unwrap_or_default(),
                    v["counts"]
                );
            }
        }
        DatasetCommand::Show { server, reference } => {
            let (name, version) = parse_reference(&reference)?;
            let api = Api::new(&server.server, &server.token)?;
            let manifest = api
                .get(&format!("/api/v1/datasets/{name}/versions/{version}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
        DatasetCommand::Diff { server, old, new } => {
            let (name, from) = parse_reference(&old)?;
            let (other, to) = parse_reference(&new)?;
            if name != other {
                bail!("compare two versions of one dataset ({name} vs {other})");
            }
            let api = Api::new(&server.server, &server.token)?;
            let d = api
                .get(&format!("/api/v1/datasets/{name}/diff?from={from}&to={to}"))
                .await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        DatasetCommand::Export {
            server,
            reference,
            out,
            rekey,
        } => {
            let (name, version) = parse_reference(&reference)?;
            let api = Api::new(&server.server, &server.token)?;
            export(&api, &name, version, &out, rekey).await?;
        }
    }
    Ok(())
}

/// Follows a building version's job until it is published or fails.
async fn wait_for_version(api: &Api, name: &str, version: i64) -> anyhow::Result<()> {
    let bar = super::progress::bar(&format!("{name}@{version}"), "‰");
    bar.set_length(1000);
    loop {
        let state = api
            .get(&format!(
                "/api/v1/datasets/{name}/versions/{version}/status"
            ))
            .await?;
        match state["status"].as_str() {
            Some("published") => {
                bar.finish_and_clear();
                return Ok(());
            }
            Some("building") => {
                let progress = state["progress"].as_f64().unwrap_or_default();
                bar.set_position((progress * 1000.0) as u64);
                bar.set_message(format!(
                    "{name}@{version}: {}",
                    state["note"].as_str().unwrap_or_default()
                ));
            }
            _ => {
                bar.abandon();
                bail!(
                    "{name}@{version} failed: {}",
                    state["error"].as_str().unwrap_or("no reason recorded")
                );
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn print_summary(manifest: &Value) {
    println!(
        "{}@{}\t{}",
        manifest["dataset"].as_str().unwrap_or_default(),
        manifest["version"],
        manifest["content_hash"].as_str().unwrap_or_default()
    );
    let content = &manifest["content"];
    println!(
        "slides: {}",
        content["slides"].as_array().map_or(0, Vec::len)
    );
    if let Some(splits) = content["counts"].as_object() {
        for (split, labels) in splits {
            println!("  {split}: {labels}");
        }
    }
    println!("small cells: {}", content["small_cells"]);
    let extraction = &content["extraction"];
    if extraction.is_object() {
        println!(
            "patches: {} under {}",
            extraction["patches"],
            extraction["shards"].as_str().unwrap_or_default()
        );
        if let Some(splits) = extraction["patch_counts"].as_object() {
            for (split, labels) in splits {
                println!("  {split}: {labels}");
            }
        }
    }
}

/// Downloads the manifest and every slide; a rekeyed export renames ids consistently.
async fn export(
    api: &Api,
    name: &str,
    version: i64,
    out: &std::path::Path,
    rekey: bool,
) -> anyhow::Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", out.display());
    }
    std::fs::create_dir_all(out.join("slides"))
        .with_context(|| format!("creating {}", out.display()))?;
    let mut manifest = api
        .get(&format!("/api/v1/datasets/{name}/versions/{version}"))
        .await?;
    let slides = manifest["content"]["slides"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut renamed = std::collections::BTreeMap::new();
    for (i, slide) in slides.iter().enumerate() {
        let id = slide["id"].as_str().unwrap_or_default().to_string();
        let bytes = api
            .get_bytes(&format!("/api/v1/research/slides/{id}"))
            .await
            .with_context(|| format!("downloading {id}"))?;
        let local = if rekey {
            format!("x-{}", uuid_like())
        } else {
            id.clone()
        };
        let file = out.join("slides").join(format!("{local}.tiff"));
        std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
        renamed.insert(id, local);
        eprint!("\rdownloaded {}/{}", i + 1, slides.len());
    }
    eprintln!();
    if rekey {
        let mut patients = std::collections::BTreeMap::new();
        for slide in manifest["content"]["slides"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let id = slide["id"].as_str().unwrap_or_default().to_string();
            slide["id"] = json!(renamed.get(&id));
            let patient = slide["patient"].as_str().unwrap_or_default().to_string();
            let fresh = patients
                .entry(patient)
                .or_insert_with(|| format!("xp-{}", uuid_like()))
                .clone();
            slide["patient"] = json!(fresh);
            slide["object_key"] = json!(format!("slides/{}.tiff", renamed[&id]));
        }
        manifest["rekeyed_export"] = json!(true);
    }
    let path = out.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "exported {name}@{version}: {} slides to {}",
        slides.len(),
        out.display()
    );
    Ok(())
}

/// 96 random bits, hex.
fn uuid_like() -> String {
    pathfed_core::secrets::new_secret("")[..24].to_string()
}

/// `pathfed opt-out PATIENT_ID`: records that a patient of your hospital refuses research use.
#[derive(Debug, Args)]
pub struct OptOutArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The patient's id at your hospital.
    patient_id: String,
}

/// Runs `pathfed opt-out`.
pub async fn opt_out(args: OptOutArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server.server, &args.server.token)?;
    let recorded = api
        .post(
            "/api/v1/opt-outs",
            &json!({ "patient_id": args.patient_id }),
        )
        .await?;
    let when = recorded["recorded_at"].as_i64().unwrap_or_default();
    if recorded["newly_recorded"].as_bool() == Some(true) {
        println!(
            "opt-out recorded; research data of this patient is being removed (job {})",
            recorded["forget_job"].as_str().unwrap_or_default()
        );
    } else {
        println!(
            "opt-out already on record since {when} (Unix time); removal re-checked (job {})",
            recorded["forget_job"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
