//! Research-tier commands: `pathfed deid` (offline de-identification of a local file),
//! `pathfed dataset …` (versions through a server's API) and `pathfed opt-out`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

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
        /// Smallest published group, in distinct patients: at least the platform's minimum
        /// (its operator's setting research.min_cell_size), which is the default; a smaller
        /// value is refused.
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
        /// A slide level within this relative distance of --patch-mpp is read as stored,
        /// without resampling (0.02: a 0.499 µm/px scan gives 0.5 µm/px patches; 0: always
        /// resample to exactly --patch-mpp).
        #[arg(long, default_value_t = 0.02)]
        mpp_tolerance: f64,
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
    /// Download a version (manifest + research slides) into a folder; slides withdrawn since
    /// it was published are left out, with a notice.
    Export {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@N.
        reference: String,
        /// Destination folder (created; must be empty if it exists).
        #[arg(long)]
        out: PathBuf,
        /// Unlinkable by identifiers: fresh random slide, patient and hospital ids for this
        /// export only, and no object hash, creation time or shard location (the pixels stay
        /// the same).
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
            mpp_tolerance,
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
                            "mpp_tolerance": mpp_tolerance,
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
    let slides = content["slides"].as_array().map_or(&[][..], Vec::as_slice);
    let withdrawn = slides.iter().filter(|s| s["withdrawn"] == true).count();
    if withdrawn > 0 {
        println!(
            "slides: {} ({withdrawn} withdrawn since publication)",
            slides.len() - withdrawn
        );
    } else {
        println!("slides: {}", slides.len());
    }
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

/// Downloads a version's manifest and slides into `out`, through a hidden folder beside it
/// that is renamed into place once complete: a failure leaves nothing behind. Slides withdrawn
/// since the version was published are left out, and a notice says how many.
async fn export(
    api: &Api,
    name: &str,
    version: i64,
    out: &Path,
    rekey: bool,
) -> anyhow::Result<()> {
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", out.display());
    }
    let staging = staging_folder(out)?;
    let outcome = async {
        std::fs::create_dir_all(staging.join("slides"))
            .with_context(|| format!("creating {}", staging.display()))?;
        let written = export_into(api, name, version, &staging, rekey).await?;
        // An empty destination (allowed above) gives way to the finished export.
        if out.exists() {
            std::fs::remove_dir(out).with_context(|| format!("replacing {}", out.display()))?;
        }
        std::fs::rename(&staging, out)
            .with_context(|| format!("moving the export into {}", out.display()))?;
        Ok::<_, anyhow::Error>(written)
    }
    .await;
    let written = match outcome {
        Ok(written) => written,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    println!(
        "exported {name}@{version}: {} slides to {}",
        written.slides,
        out.display()
    );
    if written.withdrawn > 0 {
        println!(
            "notice: {} withdrawn slide(s) left out: withdrawn from the research tier since \
             {name}@{version} was published (the patient opted out, or the slide was retired)",
            written.withdrawn
        );
    }
    Ok(())
}

/// A fresh hidden folder beside `out`, on the same file system so the final rename is atomic.
fn staging_folder(out: &Path) -> anyhow::Result<PathBuf> {
    let parent = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let leaf = out
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    Ok(parent.join(format!(".{leaf}.partial-{}", random_hex())))
}

/// What an export wrote.
struct Written {
    /// Slides exported.
    slides: usize,
    /// Slides of the version left out as withdrawn.
    withdrawn: usize,
}

/// Writes the export into `dir`: the slides under `slides/`, then `manifest.json`.
async fn export_into(
    api: &Api,
    name: &str,
    version: i64,
    dir: &Path,
    rekey: bool,
) -> anyhow::Result<Written> {
    let path = format!("/api/v1/datasets/{name}/versions/{version}");
    let manifest = api.get(&path).await?;
    let entries = manifest
        .pointer("/content/slides")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = entries.len();
    let mut fresh = Fresh::default();
    let mut exported = Vec::with_capacity(total);
    let mut withdrawn = BTreeSet::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let id = entry["id"].as_str().unwrap_or_default().to_string();
        if entry["withdrawn"] == true {
            withdrawn.insert(id);
            continue;
        }
        let bytes = match api
            .get_bytes(&format!("/api/v1/research/slides/{id}"))
            .await
        {
            Ok(bytes) => bytes,
            // Withdrawn while we were downloading: the version says so now.
            Err(e) => {
                if withdrawn_now(api, &path, &id).await? {
                    withdrawn.insert(id);
                    continue;
                }
                return Err(e.context(format!("downloading {id}")));
            }
        };
        let local = if rekey {
            fresh.id(SLIDE, &id)
        } else {
            id.clone()
        };
        let file = dir.join("slides").join(format!("{local}.tiff"));
        std::fs::write(&file, &bytes).with_context(|| format!("writing {}", file.display()))?;
        exported.push(entry);
        eprint!("\rdownloaded {}/{total}", i + 1);
    }
    eprintln!();
    let mut manifest = manifest;
    if let Some(qc) = manifest
        .pointer_mut("/content/extraction/slides")
        .and_then(Value::as_object_mut)
    {
        qc.retain(|id, _| !withdrawn.contains(id));
    }
    let written = Written {
        slides: exported.len(),
        withdrawn: withdrawn.len(),
    };
    if let Some(slides) = manifest.pointer_mut("/content/slides") {
        *slides = Value::Array(exported);
    }
    let mut manifest = if rekey {
        rekeyed(&manifest, &mut fresh)
    } else {
        manifest
    };
    if let Some(top) = manifest.as_object_mut() {
        // The export holds what is left; it names nothing that was withdrawn.
        top.remove("withdrawn");
        top.insert(
            "export".into(),
            json!({ "rekeyed": rekey, "withdrawn_left_out": written.withdrawn }),
        );
    }
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(written)
}

/// Whether the version now lists `id` as withdrawn.
async fn withdrawn_now(api: &Api, path: &str, id: &str) -> anyhow::Result<bool> {
    let manifest = api.get(path).await?;
    Ok(manifest
        .pointer("/content/slides")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|e| e["id"] == id && e["withdrawn"] == true))
}

/// Prefixes of a rekeyed export's ids: slides, patients, hospitals.
const SLIDE: &str = "xs";
const PATIENT: &str = "xp";
const HOSPITAL: &str = "xh";

/// Fresh random ids for one export: the same original gets the same new id everywhere in it.
#[derive(Default)]
struct Fresh {
    ids: BTreeMap<(&'static str, String), String>,
}

impl Fresh {
    fn id(&mut self, prefix: &'static str, original: &str) -> String {
        self.ids
            .entry((prefix, original.to_string()))
            .or_insert_with(|| format!("{prefix}-{}", random_hex()))
            .clone()
    }
}

/// The manifest of a rekeyed export, built from an allow-list so that nothing it shares with
/// the research tier or another export can join them by identifier: per-export random slide,
/// patient and hospital ids everywhere they occur (entries, extraction QC, file names); no
/// object hash (the files are the research tier's bytes, so their hash would link them), no
/// shard location or parameter hash, no creation time; a content hash of its own. Entries are
/// in the order of their new ids, so positions do not link exports either. What stays the
/// same is the content: pixels, dimensions, regions, labels and generalised attributes.
fn rekeyed(manifest: &Value, fresh: &mut Fresh) -> Value {
    let content = &manifest["content"];
    let mut slides: Vec<Value> = content["slides"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let id = fresh.id(SLIDE, e["id"].as_str().unwrap_or_default());
            let quasi = &e["quasi"];
            let hospital = match quasi["hospital"].as_str() {
                Some(h) if h != "any" => Value::String(fresh.id(HOSPITAL, h)),
                _ => Value::String("any".into()),
            };
            let mut entry = json!({
                "id": id,
                "patient": fresh.id(PATIENT, e["patient"].as_str().unwrap_or_default()),
                "label": e["label"],
                "quasi": {
                    "age_band": quasi["age_band"],
                    "sex": quasi["sex"],
                    "hospital": hospital,
                    "year": quasi["year"],
                },
                "object_key": format!("slides/{id}.tiff"),
                "dimensions": e["dimensions"],
                "mpp": e["mpp"],
                "regions": e["regions"],
                "split": e["split"],
            });
            if !e["ai_discordant"].is_null() {
                entry["ai_discordant"] = e["ai_discordant"].clone();
            }
            entry
        })
        .collect();
    slides.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let extraction = match content["extraction"].as_object() {
        None => Value::Null,
        Some(x) => {
            let qc: serde_json::Map<String, Value> = x
                .get("slides")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(id, qc)| (fresh.id(SLIDE, id), qc.clone()))
                .collect();
            json!({
                "format": x.get("format"),
                "params": x.get("params"),
                "patches": x.get("patches"),
                "patch_counts": x.get("patch_counts"),
                "slides": qc,
            })
        }
    };
    let content = json!({
        "params": content["params"],
        "curation": content["curation"],
        "extraction": extraction,
        "slides": slides,
        "counts": content["counts"],
        "small_cells": content["small_cells"],
        "opted_out_excluded": content["opted_out_excluded"],
    });
    let content_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&content).unwrap_or_default(),
    ));
    json!({
        "dataset": manifest["dataset"],
        "version": manifest["version"],
        "content_hash": content_hash,
        "content": content,
    })
}

/// 96 random bits, hex.
fn random_hex() -> String {
    pathfed_core::secrets::new_secret("")[..24].to_string()
}

/// `pathfed opt-out PATIENT_ID`: records that a patient of your hospital refuses research use;
/// `pathfed opt-out --list`: your hospital's opt-outs.
#[derive(Debug, Args)]
pub struct OptOutArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The patient's id at your hospital, as staff type it (full-width characters and
    /// surrounding spaces are normalised as for cases).
    #[arg(required_unless_present = "list", conflicts_with = "list")]
    patient_id: Option<String>,
    /// List your hospital's opt-outs instead: who recorded each, when, and what it matched.
    #[arg(long)]
    list: bool,
    /// Print the server's answer as JSON.
    #[arg(long)]
    json: bool,
}

/// "1 case", "2 cases".
fn count(n: i64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Runs `pathfed opt-out`.
pub async fn opt_out(args: OptOutArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server.server, &args.server.token)?;
    // clap makes the id and --list exclusive, and one of them required.
    let Some(patient_id) = args.patient_id else {
        let listed = api.get("/api/v1/opt-outs").await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&listed)?);
            return Ok(());
        }
        let entries = listed["opt_outs"].as_array().cloned().unwrap_or_default();
        println!(
            "{}: {} (patient ids are case-{})",
            listed["hospital"].as_str().unwrap_or_default(),
            count(entries.len() as i64, "opt-out", "opt-outs"),
            listed["patient_id_case"].as_str().unwrap_or("sensitive")
        );
        for entry in &entries {
            let id = entry["patient_id"].as_str().map_or_else(
                || {
                    format!(
                        "(hash {})",
                        entry["patient_hash_prefix"].as_str().unwrap_or("?")
                    )
                },
                str::to_string,
            );
            let matched = |field: &str| {
                entry[field]
                    .as_i64()
                    .map_or_else(|| "?".to_string(), |n| n.to_string())
            };
            println!(
                "{id}\trecorded {} by {}\tmatched {} case(s), {} research slide(s)\t{} case(s) now",
                entry["recorded_at"].as_i64().unwrap_or_default(),
                entry["recorded_by"].as_str().unwrap_or_default(),
                matched("matched_cases"),
                matched("matched_research_slides"),
                entry["cases_now"].as_i64().unwrap_or_default()
            );
        }
        return Ok(());
    };
    let recorded = api
        .post("/api/v1/opt-outs", &json!({ "patient_id": patient_id }))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&recorded)?);
        return Ok(());
    }
    let id = recorded["normalised_patient_id"]
        .as_str()
        .unwrap_or_default();
    let job = recorded["forget_job"].as_str().unwrap_or_default();
    let cases = recorded["matched_cases"].as_i64().unwrap_or_default();
    let slides = recorded["matched_research_slides"]
        .as_i64()
        .unwrap_or_default();
    // Said plainly either way: zero matches is recorded too, and may be a mistyped id.
    let matched = if cases == 0 {
        format!("no case of this hospital has patient id {id} yet; future cases will be excluded")
    } else {
        format!(
            "{} of this hospital; {} being withdrawn; future cases will be excluded",
            count(cases, "case", "cases"),
            count(slides, "research slide", "research slides")
        )
    };
    if recorded["newly_recorded"].as_bool() == Some(true) {
        println!("opt-out recorded for {id}: {matched} (job {job})");
    } else {
        let when = recorded["recorded_at"].as_i64().unwrap_or_default();
        println!(
            "{id} has been opted out since {when} (Unix time): {matched}; removal re-checked \
             (job {job})"
        );
    }
    Ok(())
}
