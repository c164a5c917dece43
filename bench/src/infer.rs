//! `pathfed bench infer`: slide inference end to end on a generated 40,000 × 30,000 slide
//! (tissue detection, patch grid, reading and decoding, batching, the model, slide scores and
//! the heatmap PNG), against the model's pure compute on the same patches already in memory,
//! in the same run. The ratio says how much of the reading the pipeline hides behind the
//! model: 1.0 is all of it.
//!
//! The model is a real one with seeded random weights (speed does not depend on what it
//! learned). Holding every patch in memory would take gigabytes at larger patch sizes, so the
//! reference runs on up to `--reference-patches` of them, evenly spread over the slide, and is
//! scaled to the slide's patch count.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use pathfed_core::Config;
use pathfed_inference::heatmap::heatmap_png;
use pathfed_inference::pipeline::{
    PatchModel, RunOptions, compute_only, predict_slide, slide_patches,
};
use pathfed_models::aggregate::Aggregation;
use pathfed_models::model::{Architecture, ModelConfig, ResNet};
use pathfed_models::registry::{Backbone, InferenceConfig};
use pathfed_synth::SynthSpec;

/// Options of `pathfed bench infer`.
#[derive(Debug, Args)]
pub struct InferBenchArgs {
    /// Width of the generated slide.
    #[arg(long, default_value_t = 40_000)]
    width: u64,
    /// Height of the generated slide.
    #[arg(long, default_value_t = 30_000)]
    height: u64,
    /// Where the generated slide is kept between runs.
    #[arg(long, default_value = "data/bench")]
    work_dir: PathBuf,
    /// Architecture: resnet-small or resnet18.
    #[arg(long, default_value = "resnet-small")]
    model: String,
    /// Patch side in pixels.
    #[arg(long, default_value_t = 128)]
    patch_px: u32,
    /// Patch resolution in µm per pixel.
    #[arg(long, default_value_t = 1.0)]
    patch_mpp: f64,
    /// Model input side (default: the patch side).
    #[arg(long)]
    input_px: Option<u32>,
    /// Patches per model call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Reader threads (0: half the cores).
    #[arg(long, default_value_t = 0)]
    readers: usize,
    /// Device: flex (CPU), cuda or wgpu.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Patches the compute-only reference runs on at most.
    #[arg(long, default_value_t = 2048)]
    reference_patches: usize,
}

/// Measures slide inference end to end against the model's pure compute and prints both.
pub fn run(args: &InferBenchArgs, config: &Config) -> anyhow::Result<()> {
    let spec = SynthSpec {
        width: args.width,
        height: args.height,
        ..SynthSpec::default()
    };
    let path = super::cached_synthetic(&args.work_dir, "infer-svs", &spec)?;
    let device = pathfed_models::device::open(&args.device)?;
    let architecture = Architecture::parse(&args.model)?;
    let input_px = args.input_px.unwrap_or(args.patch_px);
    let model_config = ModelConfig {
        architecture,
        classes: 2,
        input_px,
    };
    device.seed(7);
    let model = PatchModel {
        config: InferenceConfig {
            model: Some(model_config.clone()),
            encoder: None,
            classes: vec!["A".into(), "B".into()],
            positive: "B".into(),
            aggregation: Aggregation::Mean,
            attention: None,
            threshold: 0.5,
            patch_px: args.patch_px,
            patch_mpp: args.patch_mpp,
            mpp_tolerance: pathfed_slide::tissue::GridParams::default().mpp_tolerance,
        },
        model: Backbone::Cnn(Box::new(ResNet::new(&model_config, &device))),
        aggregator: None,
        device,
    };
    let options = RunOptions {
        batch: args.batch,
        readers: args.readers,
        ..RunOptions::default()
    };
    println!(
        "{} on {} ({} × {} px), {} px patches at {} µm/px, input {input_px} px, batch {}, device {}",
        args.model,
        path.display(),
        args.width,
        args.height,
        args.patch_px,
        args.patch_mpp,
        args.batch,
        args.device
    );
    let reader = pathfed_slide::open(&path, &config.slide)
        .with_context(|| format!("opening {}", path.display()))?;
    // Untimed pass: the page cache holds the file for both measurements, and the model's
    // first call (allocations, kernel selection) is not counted against either.
    super::extract::warm_page_cache(&path)?;
    let sample = slide_patches(reader.as_ref(), &model.config, &options)?;
    compute_only(&model, &sample[..sample.len().min(args.batch)], args.batch)?;

    let reader = pathfed_slide::open(&path, &config.slide)?;
    let bar = crate::progress::bar("inference", "patches");
    let started = Instant::now();
    let prediction = predict_slide(
        reader.as_ref(),
        &model,
        &options,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &AtomicBool::new(false),
    )?;
    let png = heatmap_png(&prediction.map)?;
    let end_to_end = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let patches = prediction.patches;

    let step = (sample.len() as f64 / args.reference_patches.max(1) as f64).max(1.0);
    let reference: Vec<Vec<u8>> = (0..sample.len().min(args.reference_patches))
        .map(|k| sample[(k as f64 * step) as usize].clone())
        .collect();
    drop(sample);
    let measured = compute_only(&model, &reference, args.batch)?;
    let per_patch = measured / reference.len().max(1) as f64;
    let compute = per_patch * patches as f64;

    println!(
        "end to end: {end_to_end:.1} s for {patches} patches ({:.0} patches/s; tissue {:.0}%, heatmap {} KiB)",
        patches as f64 / end_to_end,
        prediction.tissue_fraction * 100.0,
        png.len() / 1024
    );
    println!(
        "  of which in the model: {:.1} s ({:.0}% of the run)",
        prediction.model_seconds,
        100.0 * prediction.model_seconds / end_to_end
    );
    println!(
        "pure compute: {compute:.1} s for the same {patches} patches ({:.0} patches/s; measured on {} of them in memory)",
        1.0 / per_patch,
        reference.len()
    );
    println!(
        "ratio end to end / pure compute: {:.2} (target ≤ 1.5)",
        end_to_end / compute
    );
    Ok(())
}
