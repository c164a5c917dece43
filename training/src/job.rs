//! The `train` job: fetches the run's patches, trains each seed (continuing from checkpoints
//! on resume), evaluates on the test split, draws the plots, writes the model card and
//! registers the model. Per-epoch metrics go to the run row as they come, for live curves; a
//! cancel reaches Burn's interrupter within a second. Seeds already finished are kept on disk,
//! so a resumed multi-seed run does not train them again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use burn::prelude::Device;
use burn::train::Interrupter;
use pathfed_core::db::now;
use pathfed_core::jobs::kinds::TrainPayload;
use pathfed_core::worker::{JobFailure, RunningJob};
use pathfed_datasets::Research;
use pathfed_models::device;
use pathfed_models::metrics::{Evaluation, mean_sd};
use pathfed_models::registry::{self, InferenceConfig, Registration};
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::augment::Augment;
use crate::card;
use crate::data::PatchSet;
use crate::error::{TrainError, TrainResult};
use crate::heads::CrossValidation;
use crate::plots::{self, Series};
use crate::run::{EpochMetric, Progress, SeedResult, TrainParams, train};
use crate::runs::{CheckedRequest, HistoryPoint, TrainRequest, check_request, fetch_patches};

/// The code that trained a model: crate version and the commit it was built from.
pub const CODE_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("PATHFED_COMMIT"));

fn failure(e: TrainError) -> JobFailure {
    JobFailure::from_error(&e)
}

/// Where runs keep checkpoints and finished seeds on this node.
pub fn runs_dir(research: &Research) -> PathBuf {
    research
        .platform
        .config
        .data_dir
        .join("training")
        .join("runs")
}

/// Runs a `train` job.
pub async fn run_train(
    research: Research,
    payload: TrainPayload,
    job: RunningJob,
) -> Result<Value, JobFailure> {
    let TrainPayload { run, resume, .. } = payload;
    let outcome = train_run(&research, &job, &run, resume).await;
    let _ = sqlx::query("UPDATE training_runs SET finished_at = $1 WHERE id = $2")
        .bind(now())
        .bind(&run)
        .execute(research.platform.db.pool())
        .await;
    match outcome {
        Ok(value) => Ok(value),
        Err(TrainError::Cancelled) => Err(job
            .check_cancel()
            .err()
            .unwrap_or_else(|| JobFailure::permanent("stopped"))),
        Err(e) => Err(failure(e)),
    }
}

async fn train_run(
    research: &Research,
    job: &RunningJob,
    run: &str,
    resume: bool,
) -> TrainResult<Value> {
    let db = research.platform.db.pool();
    let row = sqlx::query("SELECT request, created_by, history FROM training_runs WHERE id = $1")
        .bind(run)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| TrainError::NotFound(format!("training run {run}")))?;
    let request: TrainRequest = serde_json::from_str(&row.try_get::<String, _>("request")?)
        .map_err(|e| TrainError::Invalid(format!("stored request: {e}")))?;
    let created_by: String = row.try_get("created_by")?;
    let checked = check_request(research, request).await?;
    let device = device::open(&checked.request.device)?;
    let set = fetch_patches(research, &checked.manifest, job, 0.05).await?;
    let set = Arc::new(set);
    job.check_cancel().map_err(|_| TrainError::Cancelled)?;

    let dir = runs_dir(research).join(run);
    // A fresh start forgets an earlier attempt's history; a resume keeps it.
    let mut history: Vec<HistoryPoint> = if resume {
        serde_json::from_str(&row.try_get::<String, _>("history")?).unwrap_or_default()
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| TrainError::io(format!("clearing {}", dir.display()), e))?;
        }
        Vec::new()
    };
    let seeds: Vec<u64> = (0..checked.request.seeds as u64)
        .map(|i| checked.request.seed + i)
        .collect();
    let (results, trained) = match &checked.encoder {
        Some(plan) => {
            let (results, trained) =
                crate::head_run::train(research, job, &checked, plan, &device, set.clone(), &seeds)
                    .await?;
            // A head trains in seconds: its curves are recorded once it is done.
            let history: Vec<HistoryPoint> = results
                .iter()
                .flat_map(|r| {
                    r.history
                        .iter()
                        .map(|m| HistoryPoint::of(r.seed, m.clone()))
                })
                .collect();
            save_history(research, run, &history).await;
            (results, trained)
        }
        None => {
            train_seeds(
                research,
                job,
                run,
                &checked,
                &set,
                &device,
                (&seeds, &dir),
                resume,
                &mut history,
            )
            .await?
        }
    };
    let _ = job.progress(0.97, "registering the model");
    let registration = registration(&checked, &set, &results, trained, run, &created_by)?;
    let summary = registration.summary.clone();
    let (name, version) = registry::register(&research.platform, registration).await?;
    sqlx::query("UPDATE training_runs SET model_version = $1 WHERE id = $2")
        .bind(version)
        .bind(run)
        .execute(db)
        .await?;
    // Checkpoints are only for resuming; the registry holds what lasts.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({ "model": name, "version": version, "summary": summary }))
}

/// Trains a CNN run's seeds, skipping those a resumed run finished before; their results and
/// the first seed's files.
#[allow(clippy::too_many_arguments)]
async fn train_seeds(
    research: &Research,
    job: &RunningJob,
    run: &str,
    checked: &CheckedRequest,
    set: &Arc<PatchSet>,
    device: &Device,
    (seeds, dir): (&[u64], &Path),
    resume: bool,
    history: &mut Vec<HistoryPoint>,
) -> TrainResult<(Vec<SeedResult>, TrainedFiles)> {
    let mut results = Vec::new();
    for (index, &seed) in seeds.iter().enumerate() {
        let seed_dir = dir.join(format!("seed-{seed}"));
        let done_file = seed_dir.join("result.json");
        if let Ok(bytes) = std::fs::read(&done_file)
            && let Ok(done) = serde_json::from_slice::<SeedResult>(&bytes)
        {
            results.push(done);
            continue;
        }
        let span = (index as f64, seeds.len() as f64);
        let result = train_seed(
            research, job, run, checked, set, device, seed, &seed_dir, resume, span, history,
        )
        .await?;
        results.push(result);
    }

    let first_dir = dir.join(format!("seed-{}", seeds[0]));
    let trained = cnn_files(checked, set, &first_dir)?;
    Ok((results, trained))
}

#[allow(clippy::too_many_arguments)]
async fn train_seed(
    research: &Research,
    job: &RunningJob,
    run: &str,
    checked: &CheckedRequest,
    set: &Arc<PatchSet>,
    device: &Device,
    seed: u64,
    seed_dir: &Path,
    resume: bool,
    (index, seeds): (f64, f64),
    history: &mut Vec<HistoryPoint>,
) -> TrainResult<SeedResult> {
    std::fs::create_dir_all(seed_dir)
        .map_err(|e| TrainError::io(format!("creating {}", seed_dir.display()), e))?;
    let request = &checked.request;
    let params = TrainParams {
        architecture: checked.architecture,
        epochs: request.epochs,
        batch: request.batch,
        lr: request.lr,
        seed,
        input_px: checked.input_px,
        augment: if request.augment {
            Augment::default()
        } else {
            Augment::none()
        },
        patience: request.patience,
        positive: request.positive.clone(),
        aggregation: checked.aggregation,
        threshold: request.threshold,
        shuffle_labels: false,
        pretrained: checked.pretrained.as_ref().map(|(path, _)| path.clone()),
    };
    let resume_from = if resume {
        last_checkpoint(seed_dir)
    } else {
        None
    };
    // Points from epochs the checkpoint does not cover are trained again.
    let kept = resume_from.unwrap_or(0);
    history.retain(|h| h.seed != seed || h.epoch <= kept);

    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<EpochMetric>();
    let progress_job = job.clone();
    let epochs = request.epochs as f64;
    let observer: Arc<dyn Fn(Progress) + Send + Sync> = Arc::new(move |event| match event {
        Progress::Items {
            epoch,
            epochs: total,
            split,
            done,
            total: items,
        } => {
            // Training takes most of an epoch; validation the rest.
            let done = done as f64 / items.max(1) as f64;
            let within = if split == "train" {
                0.8 * done
            } else {
                0.8 + 0.2 * done
            };
            let part = (epoch as f64 - 1.0 + within) / epochs;
            let fraction = 0.05 + 0.9 * (index + part.clamp(0.0, 1.0)) / seeds;
            let _ = progress_job.progress(
                fraction,
                format!("seed {seed}: epoch {epoch}/{total}, {split} {done}/{items}"),
            );
        }
        Progress::Metric(metric) => {
            let _ = sender.send(metric);
        }
        Progress::Evaluating => {
            let _ = progress_job.progress(
                0.05 + 0.9 * (index + 1.0) / seeds,
                format!("seed {seed}: evaluating on the test split"),
            );
        }
    });
    let interrupter = Interrupter::new();
    let watcher = {
        let (job, interrupter) = (job.clone(), interrupter.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if job.check_cancel().is_err() {
                    interrupter.stop(Some("cancelled on request"));
                    break;
                }
            }
        })
    };
    let training = {
        let (set, dir, device) = (set.clone(), seed_dir.to_path_buf(), device.clone());
        tokio::task::spawn_blocking(move || {
            train(
                set,
                &params,
                &device,
                &dir,
                resume_from,
                observer,
                interrupter,
            )
        })
    };
    tokio::pin!(training);
    let outcome = loop {
        tokio::select! {
            Some(metric) = receiver.recv() => {
                history.push(HistoryPoint::of(seed, metric));
                save_history(research, run, history).await;
            }
            joined = &mut training => break joined,
        }
    };
    watcher.abort();
    while let Ok(metric) = receiver.try_recv() {
        history.push(HistoryPoint::of(seed, metric));
    }
    save_history(research, run, history).await;
    let trained =
        outcome.map_err(|e| TrainError::Invalid(format!("the training thread failed: {e}")))??;
    if trained.interrupted.is_some() {
        return Err(TrainError::Cancelled);
    }
    let result = SeedResult {
        seed,
        history: trained.history.clone(),
        evaluation: trained.evaluation.clone(),
        slides: trained.slides.clone(),
    };
    let write = |name: &str, bytes: &[u8]| {
        let path = seed_dir.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| TrainError::io(format!("writing {}", path.display()), e))
    };
    write("model.bpk", &registry::model_bytes(&trained.model)?)?;
    if let Some(aggregator) = &trained.aggregator {
        write("aggregator.bpk", &registry::model_bytes(&aggregator.head)?)?;
        write(
            "attention.json",
            &serde_json::to_vec(&aggregator.config).unwrap_or_default(),
        )?;
    }
    write(
        "classes.json",
        &serde_json::to_vec(&json!({"classes": trained.classes, "positive": trained.positive}))
            .unwrap_or_default(),
    )?;
    // Written last: its presence means the seed is complete.
    write(
        "result.json",
        &serde_json::to_vec(&result).unwrap_or_default(),
    )?;
    Ok(result)
}

async fn save_history(research: &Research, run: &str, history: &[HistoryPoint]) {
    let text = serde_json::to_string(history).unwrap_or_else(|_| "[]".into());
    if let Err(e) = sqlx::query("UPDATE training_runs SET history = $1 WHERE id = $2")
        .bind(text)
        .bind(run)
        .execute(research.platform.db.pool())
        .await
    {
        tracing::warn!(run, error = %e, "recording training metrics failed");
    }
}

/// The last epoch with a complete checkpoint (model, optimiser and scheduler).
fn last_checkpoint(dir: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(dir.join("checkpoint")).ok()?;
    let epochs: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse()
                .ok()
        })
        .collect();
    epochs
        .into_iter()
        .filter(|k| {
            ["optim", "scheduler"]
                .iter()
                .all(|part| dir.join(format!("checkpoint/{part}-{k}.bpk")).exists())
        })
        .max()
}

/// Headline metrics: the first seed's with intervals, and mean ± sd over seeds.
pub fn summary(results: &[SeedResult]) -> Value {
    let first = &results[0].evaluation;
    let over = |pick: fn(&Evaluation) -> Option<f64>| {
        let values: Vec<f64> = results.iter().filter_map(|r| pick(&r.evaluation)).collect();
        let (mean, sd) = mean_sd(&values);
        json!({ "mean": mean, "sd": sd, "n": values.len() })
    };
    json!({
        "test_slides": first.cases,
        "threshold": first.threshold,
        "auc": first.auc,
        "balanced_accuracy": first.balanced_accuracy,
        "sensitivity": first.sensitivity,
        "specificity": first.specificity,
        "confusion": first.confusion,
        "seeds": results.len(),
        "over_seeds": {
            "auc": over(|e| e.auc.as_ref().map(|i| i.value)),
            "balanced_accuracy": over(|e| e.balanced_accuracy.as_ref().map(|i| i.value)),
            "sensitivity": over(|e| e.sensitivity.as_ref().map(|i| i.value)),
            "specificity": over(|e| e.specificity.as_ref().map(|i| i.value)),
        },
    })
}

/// What a run trained, ready to register: the inference configuration, the weights
/// (`model.bpk`: the CNN, or an encoder run's head), the CNN's attention head, and
/// cross-validation when the run did it.
pub(crate) struct TrainedFiles {
    /// `config.json`.
    pub config: InferenceConfig,
    /// `model.bpk`.
    pub weights: Vec<u8>,
    /// `aggregator.bpk`.
    pub aggregator: Option<Vec<u8>>,
    /// Cross-validation by patient.
    pub cross_validation: Option<CrossValidation>,
}

/// The patch size, resolution and resolution tolerance the version's patches were cut with,
/// which inference cuts slides with too.
pub(crate) fn patch_geometry(checked: &CheckedRequest) -> TrainResult<(u32, f64, f64)> {
    let extraction = checked
        .manifest
        .content
        .extraction
        .clone()
        .unwrap_or(Value::Null);
    let patches: pathfed_datasets::patches::ExtractParams =
        serde_json::from_value(extraction["params"].clone())
            .map_err(|e| TrainError::Invalid(format!("extraction parameters: {e}")))?;
    Ok((
        patches.grid.patch_px,
        patches.grid.patch_mpp,
        patches.grid.mpp_tolerance,
    ))
}

/// A CNN run's files, from its first seed's folder.
fn cnn_files(
    checked: &CheckedRequest,
    set: &PatchSet,
    first_dir: &Path,
) -> TrainResult<TrainedFiles> {
    let read = |name: &str| {
        let path = first_dir.join(name);
        std::fs::read(&path).map_err(|e| TrainError::io(format!("reading {}", path.display()), e))
    };
    let classes: Value = serde_json::from_slice(&read("classes.json")?)
        .map_err(|e| TrainError::Invalid(format!("classes of the run: {e}")))?;
    let positive = classes["positive"].as_str().unwrap_or_default().to_string();
    let attention = if first_dir.join("attention.json").exists() {
        Some(
            serde_json::from_slice(&read("attention.json")?)
                .map_err(|e| TrainError::Invalid(format!("attention head shape: {e}")))?,
        )
    } else {
        None
    };
    let (patch_px, patch_mpp, mpp_tolerance) = patch_geometry(checked)?;
    let config = InferenceConfig {
        model: Some(pathfed_models::model::ModelConfig {
            architecture: checked.architecture,
            classes: set.classes.len(),
            input_px: checked.input_px,
        }),
        encoder: None,
        classes: set.classes.clone(),
        positive,
        aggregation: checked.aggregation,
        attention,
        threshold: checked.request.threshold,
        patch_px,
        patch_mpp,
        mpp_tolerance,
    };
    let aggregator = if config.attention.is_some() {
        Some(read("aggregator.bpk")?)
    } else {
        None
    };
    Ok(TrainedFiles {
        config,
        weights: read("model.bpk")?,
        aggregator,
        cross_validation: None,
    })
}

/// Cross-validation as the summary shows it: mean ± sd over folds and the pooled out-of-fold
/// estimate with its bootstrap intervals.
fn cross_validation_summary(cv: &CrossValidation) -> Value {
    json!({
        "folds": cv.folds,
        "patients": cv.patients,
        "over_folds": cv.summary,
        "pooled": {
            "slides": cv.pooled.cases,
            "auc": cv.pooled.auc,
            "balanced_accuracy": cv.pooled.balanced_accuracy,
            "sensitivity": cv.pooled.sensitivity,
            "specificity": cv.pooled.specificity,
        },
    })
}

fn registration(
    checked: &CheckedRequest,
    set: &PatchSet,
    results: &[SeedResult],
    trained: TrainedFiles,
    run: &str,
    created_by: &str,
) -> TrainResult<Registration> {
    let TrainedFiles {
        config,
        weights,
        aggregator,
        cross_validation,
    } = trained;
    let positive = config.positive.clone();
    let mut summary = summary(results);
    if let Some(cv) = &cross_validation {
        summary["cross_validation"] = cross_validation_summary(cv);
    }
    let metrics = json!({
        "positive": positive,
        "aggregation": config.aggregation.name(),
        "summary": summary,
        "seeds": results,
        "cross_validation": cross_validation,
    });
    let mut loss = Vec::new();
    for r in results {
        for split in ["train", "valid"] {
            let points: Vec<(f64, f64)> = r
                .history
                .iter()
                .filter(|m| m.split == split && m.name == "Loss")
                .map(|m| (m.epoch as f64, m.value))
                .collect();
            if !points.is_empty() {
                loss.push(Series {
                    label: format!("seed {} {split}", r.seed),
                    points,
                });
            }
        }
    }
    let roc: Vec<Series> = results
        .iter()
        .map(|r| Series {
            label: format!(
                "seed {} (AUC {})",
                r.seed,
                r.evaluation
                    .auc
                    .as_ref()
                    .map_or("n/a".into(), |a| format!("{:.3}", a.value))
            ),
            points: r.evaluation.roc.clone(),
        })
        .collect();
    let card = card::model_card(
        checked,
        set,
        &summary,
        &positive,
        results,
        config.encoder.as_ref(),
        CODE_VERSION,
    );
    let mut files = vec![
        ("model.bpk".to_string(), weights),
        (
            "metrics.json".to_string(),
            serde_json::to_vec_pretty(&metrics).unwrap_or_default(),
        ),
        (
            "card.json".to_string(),
            serde_json::to_vec_pretty(&card).unwrap_or_default(),
        ),
        ("loss.png".to_string(), plots::loss_curves(&loss)?),
        ("roc.png".to_string(), plots::roc_curves(&roc)?),
    ];
    if let Some(bytes) = aggregator {
        files.push(("aggregator.bpk".to_string(), bytes));
    }
    Ok(Registration {
        name: checked.name.clone(),
        run_id: run.to_string(),
        architecture: checked.architecture_name(),
        dataset: checked.dataset.clone(),
        dataset_version: checked.version,
        dataset_hash: checked.manifest.content_hash.clone(),
        taxonomy: checked.manifest.content.params.labels.clone(),
        organ: checked.manifest.content.params.organ.clone(),
        config,
        code_version: CODE_VERSION.to_string(),
        summary,
        created_by: created_by.to_string(),
        files,
    })
}
