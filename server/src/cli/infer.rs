//! `pathfed infer`: AI support on a slide, two ways.
//!
//! - `pathfed infer SLIDE_ID --server URL --token T [--model NAME@V]` asks the server to run the
//!   deployed (or named) model on a clinical slide and follows the job; Ctrl-C cancels it.
//! - `pathfed infer FILE --model DIR|NAME@V --out DIR` runs a model on a local slide file
//!   without a server, for researchers: DIR is a folder with the model's files
//!   (`config.json`, `model.bpk`), NAME@V a version from this platform's registry (its
//!   database and object store as configured). Writes `result.json` and `heatmap.png`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pathfed_core::Config;
use pathfed_inference::heatmap::heatmap_png;
use pathfed_inference::job::{local_model, model_ref};
use pathfed_inference::pipeline::{PatchModel, RunOptions, predict_slide};
use pathfed_inference::results::{InferenceResult, ModelRef, NOTICE};
use serde_json::{Value, json};

use super::api::Api;
use super::progress::{self, Follow};

/// `pathfed infer`.
#[derive(Debug, Args)]
pub struct InferArgs {
    /// A slide id on the server, or a local slide file (with --out).
    slide: String,
    /// The model: NAME@V, or (offline) a folder holding config.json and model.bpk.
    #[arg(long)]
    model: Option<String>,
    /// Offline: write result.json and heatmap.png here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Offline: device to run on (flex, cuda, wgpu).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Offline: patches per model call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// The pathfed server, e.g. https://hub.example.org.
    #[arg(long, env = "PATHFED_SERVER")]
    server: Option<String>,
    /// API token (from `pathfed admin token create`).
    #[arg(long, env = "PATHFED_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Return once the job is queued.
    #[arg(long)]
    no_wait: bool,
}

/// Runs `pathfed infer`.
pub async fn run(args: InferArgs, config: &Config) -> anyhow::Result<()> {
    let local = Path::new(&args.slide);
    if args.out.is_some() || local.is_file() {
        return offline(args, config).await;
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        bail!(
            "{:?} is not a local file; to run on a server's slide give --server and --token \
             (or PATHFED_SERVER and PATHFED_TOKEN)",
            args.slide
        );
    };
    let api = Api::new(server, token)?;
    let base = format!("/api/v1/slides/{}/ai", args.slide);
    let job = api
        .post(&base, &json!({ "model": args.model }))
        .await
        .with_context(|| format!("asking for AI support on slide {}", args.slide))?;
    let id = job["id"].as_str().unwrap_or_default().to_string();
    println!(
        "job {id}: {}@{} on slide {}",
        job["model"].as_str().unwrap_or_default(),
        job["version"],
        args.slide
    );
    if args.no_wait {
        return Ok(());
    }
    let bar = progress::bar("inference", "‰");
    bar.set_length(1000);
    let mut follow = Follow::new(&api, base.clone(), Duration::from_millis(700));
    let job = loop {
        let Some(overview) = follow.next().await? else {
            bar.abandon();
            api.post(&format!("{base}/jobs/{id}/cancel"), &json!({}))
                .await?;
            bail!("job {id} cancelled");
        };
        let job = overview["jobs"]
            .as_array()
            .and_then(|jobs| jobs.iter().find(|j| j["id"] == id.as_str()).cloned())
            .unwrap_or(Value::Null);
        bar.set_position((job["progress"].as_f64().unwrap_or_default() * 1000.0) as u64);
        bar.set_message(
            job["progress_note"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        match job["status"].as_str() {
            Some("queued" | "running") => {}
            _ => break (job, overview),
        }
    };
    bar.finish_and_clear();
    let (job, overview) = job;
    match job["status"].as_str() {
        Some("succeeded") => {}
        Some("cancelled") => bail!("job {id} was cancelled"),
        _ => bail!(
            "job {id} failed: {}",
            job["error"].as_str().unwrap_or("no reason recorded")
        ),
    }
    if overview["hidden"].as_bool() == Some(true) {
        println!(
            "done; the result is hidden from you for now: {}",
            overview["hidden_reason"].as_str().unwrap_or_default()
        );
        return Ok(());
    }
    let (model, version) = (
        job["model"].as_str().unwrap_or_default(),
        job["version"].as_i64().unwrap_or_default(),
    );
    let result = api.get(&format!("{base}/{model}/{version}")).await?;
    print_result(&result);
    Ok(())
}

fn print_result(result: &Value) {
    let model = &result["model"];
    println!(
        "{}@{}: {} score {:.3} (threshold {}) → {}{}",
        model["name"].as_str().unwrap_or_default(),
        model["version"],
        model["positive"].as_str().unwrap_or_default(),
        result["score"].as_f64().unwrap_or(f64::NAN),
        model["threshold"],
        result["predicted"].as_str().unwrap_or_default(),
        if result["flagged"].as_bool() == Some(true) {
            "  [flagged]"
        } else {
            ""
        }
    );
    println!(
        "{} patches at {:.2} µm/px, tissue {:.0}% of the slide",
        result["patches"],
        result["grid_mpp"].as_f64().unwrap_or(f64::NAN),
        result["tissue_fraction"].as_f64().unwrap_or_default() * 100.0
    );
    for r in result["top_regions"].as_array().into_iter().flatten() {
        println!(
            "  region at ({}, {}) {}×{} px: {:.3}",
            r["x"],
            r["y"],
            r["width"],
            r["height"],
            r["score"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("{NOTICE}");
}

async fn offline(args: InferArgs, config: &Config) -> anyhow::Result<()> {
    let Some(out) = &args.out else {
        bail!("a local slide needs --out DIR for result.json and heatmap.png");
    };
    let Some(model_arg) = &args.model else {
        bail!("a local slide needs --model: a model folder or NAME@V from the registry");
    };
    let device = pathfed_models::device::open(&args.device)?;
    let folder = Path::new(model_arg);
    let (model, model_ref): (PatchModel, ModelRef) = if folder.is_dir() {
        local_model(folder, &config.data_dir.join("pretrained"), device)
            .with_context(|| format!("loading the model in {model_arg}"))?
    } else {
        let (name, version) = pathfed_models::registry::parse_reference(model_arg)
            .with_context(|| format!("--model {model_arg:?} is neither a folder nor NAME@V"))?;
        let platform = pathfed_core::Platform::open(config.clone())
            .await
            .context("opening this platform's registry (database and object store)")?;
        let loaded = pathfed_models::registry::load(&platform, &name, version, &device)
            .await
            .with_context(|| format!("loading {model_arg} from the registry"))?;
        let record = loaded.record.clone();
        let model = PatchModel {
            config: loaded.config,
            model: loaded.model,
            aggregator: loaded.aggregator,
            device,
        };
        let model_ref = model_ref(&record, &model);
        (model, model_ref)
    };
    let file = PathBuf::from(&args.slide);
    let limits = config.slide.clone();
    let options = RunOptions {
        batch: args.batch,
        ..RunOptions::default()
    };
    let bar = progress::bar("inference", "patches");
    let prediction = {
        let bar = bar.clone();
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let reader = pathfed_slide::open(&file, &limits)
                .with_context(|| format!("opening {}", file.display()))?;
            let progress = |done: usize, total: usize| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            predict_slide(
                reader.as_ref(),
                &model,
                &options,
                &progress,
                &AtomicBool::new(false),
            )
            .with_context(|| format!("running the model on {}", file.display()))
        })
        .await
        .context("inference stopped")??
    };
    bar.finish_and_clear();
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = InferenceResult::new(&name, model_ref, prediction, None);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = serde_json::to_vec_pretty(&result)?;
    let heatmap = heatmap_png(&result.map)?;
    for (file, bytes) in [("result.json", json), ("heatmap.png", heatmap)] {
        let path = out.join(file);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    print_result(&serde_json::to_value(&result)?);
    println!(
        "wrote {} and {} ({:.1} s)",
        out.join("result.json").display(),
        out.join("heatmap.png").display(),
        result.seconds
    );
    Ok(())
}
