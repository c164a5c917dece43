//! `pathfed train` (start or resume a run on a server and follow it), `pathfed embed` (fill the
//! embedding store for a version with an encoder) and `pathfed model …` (the registry: list,
//! show, deploy, retire). Both go through the server's API, so runs
//! started here appear in the web UI and the other way round.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::api::{Api, ServerArgs};
use super::progress::Follow;

/// `pathfed train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Dataset version with patches, NAME@N.
    #[arg(long, required_unless_present = "resume")]
    dataset: Option<String>,
    /// Architecture: resnet18 or resnet-small.
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// Registry name (default: DATASET-MODEL).
    #[arg(long)]
    name: Option<String>,
    /// Epochs at most (early stopping may end sooner; a head keeps its best validation epoch).
    /// Default: 10 for a CNN, 40 for an encoder's head.
    #[arg(long)]
    epochs: Option<usize>,
    /// Patches per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Initial learning rate (Adam, cosine schedule).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seeds to train; metrics are reported as mean ± sd over them.
    #[arg(long, default_value_t = 1)]
    seeds: usize,
    /// Model input side in pixels (default: 224 for resnet18, the patch size otherwise).
    #[arg(long)]
    input_px: Option<u32>,
    /// Epochs without a lower validation loss before stopping (0: never).
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Slide aggregation: mean, top-k:K or attention.
    #[arg(long, default_value = "mean")]
    aggregation: String,
    /// Threshold on the slide score for sensitivity, specificity and the confusion matrix.
    #[arg(long, default_value_t = 0.5)]
    threshold: f64,
    /// Positive class code (default: the last class).
    #[arg(long)]
    positive: Option<String>,
    /// Device: flex (CPU), cuda or wgpu.
    #[arg(long, default_value = "flex")]
    device: String,
    /// No flips, rotations or colour jitter.
    #[arg(long)]
    no_augment: bool,
    /// Start from pretrained weights: a file name in the platform's pretrained folder
    /// (safetensors or PyTorch, torchvision names); the head is trained anew.
    #[arg(long)]
    pretrained: Option<String>,
    /// Train a slide-level head on a frozen encoder's embeddings instead of a CNN: a preset
    /// (uni, uni2-h, virchow2, h-optimus-0, h-optimus-1, prov-gigapath) or a ViT described by
    /// NAME.json, with its weights in the pretrained folder. Stored embeddings are reused.
    #[arg(long, conflicts_with = "pretrained")]
    encoder: Option<String>,
    /// Head of an encoder run: abmil (gated attention), transmil (transformer), attention or
    /// mean (baseline).
    #[arg(long, requires = "encoder")]
    head: Option<String>,
    /// Cross-validation folds by patient of an encoder run (default 5; 0: none).
    #[arg(long, requires = "encoder")]
    folds: Option<usize>,
    /// Resume a cancelled or failed run from its last checkpoint (RUN id).
    #[arg(long, conflicts_with = "dataset")]
    resume: Option<String>,
    /// Return once the run is queued.
    #[arg(long)]
    no_wait: bool,
}

/// Runs `pathfed train`.
pub async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server.server, &args.server.token)?;
    let run = match &args.resume {
        Some(id) => api
            .post(&format!("/api/v1/training/runs/{id}/resume"), &json!({}))
            .await
            .with_context(|| format!("resuming run {id}"))?,
        None => {
            let body = json!({
                "dataset": args.dataset,
                "model": args.model,
                "name": args.name,
                // Heads train in seconds and keep their best epoch: they get more by default.
                "epochs": args.epochs.unwrap_or(if args.encoder.is_some() { 40 } else { 10 }),
                "batch": args.batch,
                "lr": args.lr,
                "seed": args.seed,
                "seeds": args.seeds,
                "input_px": args.input_px,
                "patience": args.patience,
                "aggregation": args.aggregation,
                "threshold": args.threshold,
                "positive": args.positive,
                "device": args.device,
                "augment": !args.no_augment,
                "pretrained": args.pretrained,
                "encoder": args.encoder,
                "head": args.head,
                "folds": args.folds,
            });
            api.post("/api/v1/training/runs", &body)
                .await
                .context("starting the run")?
        }
    };
    let id = run["id"].as_str().unwrap_or_default().to_string();
    println!(
        "run {id} queued on {}",
        run["request"]["device"].as_str().unwrap_or("flex")
    );
    if args.no_wait {
        return Ok(());
    }
    follow(&api, &id).await
}

/// Follows a run until it ends: a progress bar, a line per epoch metric; Ctrl-C cancels it.
async fn follow(api: &Api, id: &str) -> anyhow::Result<()> {
    let bar = super::progress::bar("training", "‰");
    bar.set_length(1000);
    let mut printed = 0;
    let mut follow = Follow::new(
        api,
        format!("/api/v1/training/runs/{id}"),
        Duration::from_millis(700),
    );
    let state = loop {
        let Some(state) = follow.next().await? else {
            bar.abandon();
            api.post(&format!("/api/v1/training/runs/{id}/cancel"), &json!({}))
                .await?;
            bail!(
                "cancel requested; the run keeps its checkpoints: resume with `pathfed train --resume {id}`"
            );
        };
        let history = state["history"].as_array().cloned().unwrap_or_default();
        for point in history.iter().skip(printed) {
            // Printed above the bar, and also when there is no terminal to draw one on.
            bar.suspend(|| {
                println!(
                    "seed {} epoch {} {:5} {:14} {:.4}",
                    point["seed"],
                    point["epoch"],
                    point["split"].as_str().unwrap_or_default(),
                    point["name"].as_str().unwrap_or_default(),
                    point["value"].as_f64().unwrap_or(f64::NAN)
                )
            });
        }
        printed = printed.max(history.len());
        bar.set_position((state["progress"].as_f64().unwrap_or_default() * 1000.0) as u64);
        bar.set_message(state["note"].as_str().unwrap_or_default().to_string());
        match state["status"].as_str() {
            Some("queued" | "running") => {}
            _ => break state,
        }
    };
    bar.finish_and_clear();
    match state["status"].as_str() {
        Some("succeeded") => {
            let model = state["model"].as_str().unwrap_or_default();
            println!("registered {model}");
            if let Some((name, version)) = model.split_once('@') {
                let shown = api
                    .get(&format!("/api/v1/models/{name}/versions/{version}"))
                    .await?;
                print_metrics(&shown["model"]["summary"]);
            }
            Ok(())
        }
        Some("cancelled") => {
            bail!("run {id} was cancelled; resume with `pathfed train --resume {id}`")
        }
        _ => bail!(
            "run {id} failed: {}",
            state["error"].as_str().unwrap_or("no reason recorded")
        ),
    }
}

fn interval(v: &Value) -> String {
    match (v["value"].as_f64(), v["low"].as_f64(), v["high"].as_f64()) {
        (Some(x), Some(lo), Some(hi)) => format!("{x:.3} (95% CI {lo:.3}–{hi:.3})"),
        _ => "n/a".into(),
    }
}

fn print_metrics(summary: &Value) {
    println!(
        "test split: {} slides, threshold {}",
        summary["test_slides"], summary["threshold"]
    );
    for (label, key) in [
        ("AUC", "auc"),
        ("balanced accuracy", "balanced_accuracy"),
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
    ] {
        let over = &summary["over_seeds"][key];
        let seeds = if summary["seeds"].as_u64().unwrap_or(1) > 1 {
            format!(
                "; over {} seeds {:.3} ± {:.3}",
                over["n"],
                over["mean"].as_f64().unwrap_or(f64::NAN),
                over["sd"].as_f64().unwrap_or(f64::NAN)
            )
        } else {
            String::new()
        };
        println!("  {label:18} {}{seeds}", interval(&summary[key]));
    }
    let c = &summary["confusion"];
    println!(
        "  confusion          TP {} FP {} TN {} FN {}",
        c["tp"], c["fp"], c["tn"], c["fn_"]
    );
    let cv = &summary["cross_validation"];
    if cv.is_object() {
        println!(
            "{}-fold cross-validation by patient: {} patients, {} slides scored out of fold",
            cv["folds"], cv["patients"], cv["pooled"]["slides"]
        );
        for (label, key) in [
            ("AUC", "auc"),
            ("balanced accuracy", "balanced_accuracy"),
            ("sensitivity", "sensitivity"),
            ("specificity", "specificity"),
        ] {
            let fold = &cv["over_folds"][key];
            println!(
                "  {label:18} {:.3} ± {:.3} over folds; pooled {}",
                fold["mean"].as_f64().unwrap_or(f64::NAN),
                fold["sd"].as_f64().unwrap_or(f64::NAN),
                interval(&cv["pooled"][key])
            );
        }
    }
}

/// `pathfed model …`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List registered and retired model versions.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a version's card and metrics (NAME@V).
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@V.
        reference: String,
        /// The whole entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Use a version for an organ's slides in its taxonomy (replaces what was deployed).
    Deploy {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@V.
        reference: String,
        /// Organ (default: the organ its dataset was limited to).
        #[arg(long)]
        organ: Option<String>,
        /// Why deploy it: required when the version's test balanced accuracy is not shown to
        /// beat chance; kept with the deployment and in the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retire a version: undeployed everywhere, kept for the record.
    Retire {
        #[command(flatten)]
        server: ServerArgs,
        /// NAME@V.
        reference: String,
    },
}

fn model_path(reference: &str) -> anyhow::Result<String> {
    let (name, version) = pathfed_models::registry::parse_reference(reference)?;
    Ok(format!("/api/v1/models/{name}/versions/{version}"))
}

/// Runs a model command.
pub async fn model(cmd: ModelCommand) -> anyhow::Result<()> {
    match cmd {
        ModelCommand::List { server } => {
            let api = Api::new(&server.server, &server.token)?;
            for m in api
                .get("/api/v1/models")
                .await?
                .as_array()
                .into_iter()
                .flatten()
            {
                let deployed: Vec<String> = m["deployed_for"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| {
                        format!(
                            "{}/{}",
                            d["organ"].as_str().unwrap_or_default(),
                            d["taxonomy"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                println!(
                    "{}@{}\t{}\t{}@{}\tAUC {}\t{}{}",
                    m["name"].as_str().unwrap_or_default(),
                    m["version"],
                    m["architecture"].as_str().unwrap_or_default(),
                    m["dataset"].as_str().unwrap_or_default(),
                    m["dataset_version"],
                    m["summary"]["auc"]["value"]
                        .as_f64()
                        .map_or("n/a".into(), |v| format!("{v:.3}")),
                    m["status"].as_str().unwrap_or_default(),
                    if deployed.is_empty() {
                        String::new()
                    } else {
                        format!("\tdeployed for {}", deployed.join(", "))
                    }
                );
            }
        }
        ModelCommand::Show {
            server,
            reference,
            json,
        } => {
            let api = Api::new(&server.server, &server.token)?;
            let shown = api.get(&model_path(&reference)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
                return Ok(());
            }
            let m = &shown["model"];
            let card = &shown["card"];
            println!(
                "{reference}  ({})",
                m["status"].as_str().unwrap_or_default()
            );
            println!("{}", card["notice"].as_str().unwrap_or_default());
            println!(
                "intended use: {}",
                card["intended_use"].as_str().unwrap_or_default()
            );
            println!(
                "trained on {}@{} (content {}) by {}, code {}",
                m["dataset"].as_str().unwrap_or_default(),
                m["dataset_version"],
                m["dataset_hash"].as_str().unwrap_or_default(),
                m["created_by"].as_str().unwrap_or_default(),
                m["code_version"].as_str().unwrap_or_default()
            );
            print_metrics(&m["summary"]);
            println!("limitations:");
            for l in card["limitations"].as_array().into_iter().flatten() {
                println!("  - {}", l.as_str().unwrap_or_default());
            }
        }
        ModelCommand::Deploy {
            server,
            reference,
            organ,
            reason,
        } => {
            let api = Api::new(&server.server, &server.token)?;
            let d = api
                .post(
                    &format!("{}/deploy", model_path(&reference)?),
                    &json!({ "organ": organ, "reason": reason }),
                )
                .await
                .with_context(|| format!("deploying {reference}"))?;
            println!(
                "{reference} deployed for {} slides in {}",
                d["organ"].as_str().unwrap_or_default(),
                d["taxonomy"].as_str().unwrap_or_default()
            );
        }
        ModelCommand::Retire { server, reference } => {
            let api = Api::new(&server.server, &server.token)?;
            let r = api
                .post(&format!("{}/retire", model_path(&reference)?), &json!({}))
                .await
                .with_context(|| format!("retiring {reference}"))?;
            let n = r["undeployed"].as_array().map_or(0, Vec::len);
            println!("{reference} retired (removed from {n} deployment(s))");
        }
    }
    Ok(())
}

/// `pathfed embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Dataset version with patches, NAME@N.
    reference: String,
    /// Encoder: a preset (uni, uni2-h, virchow2, h-optimus-0, h-optimus-1, prov-gigapath) or a
    /// ViT described by NAME.json, its weights in the platform's pretrained folder.
    #[arg(long)]
    encoder: String,
    /// Device: flex (CPU), cuda or wgpu.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Queue it and return without following it.
    #[arg(long)]
    no_wait: bool,
}

/// Queues an extraction and follows it: a progress bar, then what was embedded and reused;
/// Ctrl-C cancels it (what is stored so far is kept).
pub async fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server.server, &args.server.token)?;
    let state = api
        .post(
            "/api/v1/embeddings",
            &json!({
                "dataset": args.reference,
                "encoder": args.encoder,
                "device": args.device,
            }),
        )
        .await
        .context("requesting the extraction")?;
    let id = state["job_id"].as_str().unwrap_or_default().to_string();
    if args.no_wait {
        println!("{id}");
        return Ok(());
    }
    let label = format!("{} with {}", args.reference, args.encoder);
    let bar = super::progress::bar(&label, "‰");
    bar.set_length(1000);
    let mut follow = Follow::new(
        &api,
        format!("/api/v1/embeddings/{id}"),
        Duration::from_millis(500),
    );
    let state = loop {
        let Some(state) = follow.next().await? else {
            bar.abandon();
            api.post(&format!("/api/v1/embeddings/{id}/cancel"), &json!({}))
                .await?;
            bail!("cancel requested; the slides embedded so far are kept and reused next time");
        };
        bar.set_position((state["progress"].as_f64().unwrap_or_default() * 1000.0) as u64);
        bar.set_message(state["note"].as_str().unwrap_or_default().to_string());
        match state["status"].as_str() {
            Some("queued" | "running") => {}
            _ => break state,
        }
    };
    bar.finish_and_clear();
    let result = &state["result"];
    match state["status"].as_str() {
        Some("succeeded") => {
            println!(
                "{label}: {} slides embedded ({} patches), {} reused from the store; {} \
                 features per patch (key {})",
                result["computed"],
                result["encoded"],
                result["reused"],
                result["features"],
                result["key"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        Some("cancelled") => bail!("the extraction was cancelled; run it again to resume"),
        _ => bail!(
            "the extraction failed: {}",
            state["error"].as_str().unwrap_or("no reason recorded")
        ),
    }
}
