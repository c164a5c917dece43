//! `pathfed bench embed`: embedding extraction end to end (shard reads, JPEG decoding,
//! normalisation, the encoder, storing each slide's embeddings) against the encoder's compute
//! alone on the same patches already decoded in memory, in the same run. The ratio says how
//! much of the reading the pipeline hides behind the encoder: 1.0 is all of it.
//!
//! The encoder is a ViT with seeded random weights written to a temporary pretrained folder in
//! timm's layout and loaded as a researcher's would be (speed does not depend on what it
//! learned): ViT-Ti/16 at 224 px by default, which a CPU runs in minutes, or any preset's
//! architecture with `--preset` on a GPU. The patches are a generated two-texture dataset's,
//! 224 px at 0.5 µm/px, so nothing is resampled on the way.
//!
//! Where the chosen Python has torch and timm, the same weights file is loaded into timm's own
//! `VisionTransformer` and timed on the same normalised patches on the same kind of device
//! (`scripts/bench_embed_torch.py`), which also reports how far its embeddings are from Burn's.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use burn::prelude::*;
use clap::Args;
use pathfed_core::config::S3Config;
use pathfed_core::store::open_store;
use pathfed_models::vit::{self, EncoderSpec, Mlp, Pool, Preprocess, Vit, VitConfig};
use pathfed_training::data::{PatchSet, decode_rgb};
use pathfed_training::embed::{Encoder, extract, normalise};
use pathfed_training::synthetic::{TextureSpec, texture_dataset};

use crate::torch::{self, Reference};

/// The PyTorch + timm reference, run by [`torch::run`].
const TORCH_SCRIPT: &str = include_str!("../../scripts/bench_embed_torch.py");

/// What Burn should reach on a GPU, as a fraction of PyTorch's patches/s.
const GPU_TARGET: f64 = 0.8;

/// Options of `pathfed bench embed`.
#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// Where the generated slides and their shards are kept.
    #[arg(long, default_value = "data/bench")]
    work_dir: PathBuf,
    /// Generated slides (each 2048 × 2048 px at 0.5 µm/px, up to 81 patches).
    #[arg(long, default_value_t = 8)]
    slides: usize,
    /// A preset's architecture and preprocessing (uni, uni2-h, virchow2, h-optimus-0, …)
    /// instead of ViT-Ti/16; random weights all the same.
    #[arg(long, conflicts_with = "spec")]
    preset: Option<String>,
    /// A ViT described as in the pretrained folder (`{"vit": …, "preprocess": …}`), instead of
    /// ViT-Ti/16 or a preset; random weights all the same.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Patches per encoder call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Device: flex (CPU), cuda or wgpu.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Python with torch, timm and numpy, for the PyTorch reference.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
}

/// ViT-Ti/16 at 224 px: the smallest published ViT, so a CPU run takes minutes.
fn tiny_vit() -> EncoderSpec {
    EncoderSpec {
        vit: VitConfig {
            patch: 16,
            dim: 192,
            depth: 12,
            heads: 3,
            mlp: Mlp::Gelu,
            mlp_hidden: 768,
            registers: 0,
            pos_embed_prefix: true,
            layer_scale: false,
            pool: Pool::Class,
            grid: 14,
            norm_eps: 1e-6,
        },
        preprocess: Preprocess {
            input_px: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            mpp: 0.5,
        },
    }
}

/// Measures extraction end to end against the encoder's compute and prints both.
pub fn run(args: &EmbedBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let device = pathfed_models::device::open(&args.device)?;
    let (name, spec) = match (&args.preset, &args.spec) {
        (Some(name), _) => (
            name.clone(),
            vit::preset(name).with_context(|| format!("no preset {name:?}"))?,
        ),
        (None, Some(path)) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let spec: EncoderSpec = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not an encoder description", path.display()))?;
            spec.vit.check()?;
            ("custom".to_string(), spec)
        }
        (None, None) => ("vit-ti16".to_string(), tiny_vit()),
    };
    let side = spec.preprocess.input_px;

    let work = args.work_dir.join("embed");
    let objects = work.join("objects");
    // A fresh store per run: nothing may be reused, or the encoder would not run.
    if objects.exists() {
        std::fs::remove_dir_all(&objects)
            .with_context(|| format!("clearing {}", objects.display()))?;
    }
    std::fs::create_dir_all(&objects)?;
    let store = open_store(
        &format!("file://{}", objects.display()),
        &S3Config::default(),
    )?;
    let texture = TextureSpec {
        slides: args.slides.max(2),
        size: (2048, 2048),
        patch_px: side,
        patch_mpp: 0.5,
        ..TextureSpec::default()
    };
    let slides_dir = work.join("slides");
    std::fs::create_dir_all(&slides_dir)?;
    eprintln!(
        "generating {} slides and their patch shards...",
        texture.slides
    );
    let manifest = runtime.block_on(texture_dataset(&store, &slides_dir, "bench", &texture))?;
    let hash = manifest
        .content
        .extraction
        .as_ref()
        .and_then(|x| x["params_hash"].as_str())
        .context("the generated version has no patches")?
        .to_string();
    let set = runtime.block_on(PatchSet::fetch(
        &store,
        &manifest,
        &work.join("cache"),
        |_, _| {},
    ))?;

    let pretrained = tempfile::tempdir()?;
    device.seed(11);
    let model = Vit::new(&spec.vit, &device);
    vit::import::save_timm(
        &model,
        &pretrained.path().join(format!("{name}.safetensors")),
    )?;
    drop(model);
    if args.preset.is_none() {
        // Not a preset: described beside its weights, as a researcher's own ViT would be.
        std::fs::write(
            pretrained.path().join(format!("{name}.json")),
            serde_json::to_vec(&spec)?,
        )?;
    }
    let encoder = Encoder::open(pretrained.path(), &name, &device)?;
    println!(
        "{name} ({} wide, {} blocks, patch {}) at {side} px, {} features; {} patches of {} slides; batch {}, device {}",
        spec.vit.dim,
        spec.vit.depth,
        spec.vit.patch,
        spec.vit.features(),
        set.patches.len(),
        set.slides.len(),
        args.batch,
        args.device
    );

    // The reference: every patch decoded and normalised in memory first, then the encoder
    // alone. Its first call (allocations, kernel selection) is not counted.
    let images: Vec<Vec<f32>> = (0..set.patches.len())
        .map(|i| {
            let rgb = decode_rgb(&set.jpeg(i)?, side)?;
            Ok(normalise(
                &rgb,
                side as usize,
                spec.preprocess.mean,
                spec.preprocess.std,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    // The same patches, for the PyTorch reference.
    let reference_dir = tempfile::tempdir()?;
    let images_path = reference_dir.path().join("images.f32");
    write_f32(&images_path, images.iter().map(Vec::as_slice))?;
    let batches: Vec<Tensor<4>> = images
        .chunks(args.batch.max(1))
        .map(|chunk| {
            Tensor::<1>::from_floats(chunk.concat().as_slice(), &device).reshape([
                chunk.len(),
                3,
                side as usize,
                side as usize,
            ])
        })
        .collect();
    drop(images);
    // Copying the embeddings back is part of the timing: it waits for the device.
    let to_host = |t: Tensor<2>| {
        t.into_data()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("embeddings: {e:?}"))
    };
    if let Some(first) = batches.first() {
        to_host(encoder.model.embed(first.clone()))?;
    }
    let started = Instant::now();
    let mut embeddings = Vec::with_capacity(batches.len());
    for batch in &batches {
        embeddings.push(to_host(encoder.model.embed(batch.clone()))?);
    }
    let compute = started.elapsed().as_secs_f64();
    drop(batches);
    let embeddings_path = reference_dir.path().join("embeddings.f32");
    write_f32(&embeddings_path, embeddings.iter().map(Vec::as_slice))?;
    drop(embeddings);

    let bar = crate::progress::bar("embedding", "slides");
    let started = Instant::now();
    let report = extract(
        runtime.handle(),
        &store,
        &set,
        &hash,
        &encoder,
        args.batch,
        &|done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
        &|_| true,
        &AtomicBool::new(false),
    )?;
    let end_to_end = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let patches = report.encoded as f64;
    println!(
        "end to end: {end_to_end:.1} s for {} patches ({:.1} patches/s; {} slides stored)",
        report.encoded,
        patches / end_to_end,
        report.computed
    );
    println!(
        "encoder compute alone: {compute:.1} s for the same patches decoded in memory ({:.1} patches/s)",
        set.patches.len() as f64 / compute
    );
    println!(
        "ratio end to end / compute (patches/s): {:.2} (target ≥ 0.9)",
        (patches / end_to_end) / (set.patches.len() as f64 / compute)
    );

    let gpu = args.device != "flex";
    let torch_device = if gpu { "cuda" } else { "cpu" };
    let spec_path = reference_dir.path().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let script_args = torch::flags([
        ("--spec", spec_path.display().to_string()),
        (
            "--weights",
            pretrained
                .path()
                .join(format!("{name}.safetensors"))
                .display()
                .to_string(),
        ),
        ("--images", images_path.display().to_string()),
        ("--embeddings", embeddings_path.display().to_string()),
        ("--count", set.patches.len().to_string()),
        ("--batch", args.batch.max(1).to_string()),
        ("--device", torch_device.to_string()),
    ]);
    match torch::run(&args.python, TORCH_SCRIPT, &script_args)? {
        Reference::Measured(line) => {
            let per_s = torch::number(&line, "patches_per_s")?;
            println!(
                "PyTorch {} + timm {} {torch_device} ({} threads), timm's VisionTransformer on Burn's weights file: {:.1} s for the same patches ({per_s:.1} patches/s); largest difference from Burn's embeddings {:.1e} (largest value {:.1})",
                line["torch"].as_str().unwrap_or("?"),
                line["timm"].as_str().unwrap_or("?"),
                line["threads"].as_u64().unwrap_or(0),
                torch::number(&line, "seconds")?,
                torch::number(&line, "max_abs_diff")?,
                torch::number(&line, "max_abs")?,
            );
            let target = if gpu {
                format!(" (target ≥ {GPU_TARGET})")
            } else {
                String::new()
            };
            println!(
                "ratio Burn {} / PyTorch {torch_device} (encoder alone, patches/s): {:.2}{target}",
                args.device,
                (set.patches.len() as f64 / compute) / per_s
            );
        }
        absent => println!("PyTorch: {}", absent.absent().unwrap_or_default()),
    }
    Ok(())
}

/// Writes float32 values, little-endian, one slice after another.
fn write_f32<'a>(path: &Path, parts: impl Iterator<Item = &'a [f32]>) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for part in parts {
        for value in part {
            out.write_all(&value.to_le_bytes())?;
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}
