//! `pathfed bench train`: training throughput of the patch classifier (forward, cross-entropy,
//! backward, Adam) on random input already on the device, Burn against references measured in
//! the same run: on the CPU flex against PyTorch at the main batch and against ndarray at a
//! small one (ndarray's convolution backward is too slow for more); on a GPU against PyTorch.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use clap::Args;
use pathfed_models::model::{Architecture, ModelConfig};

use crate::throughput::{Backend, Step, Throughput, cpu_threads, train_throughput};

/// The PyTorch reference, fed to the chosen Python on its standard input so the command works
/// from any directory.
const TORCH_SCRIPT: &str = include_str!("../../scripts/bench_train_torch.py");

/// The script's exit status when torch or torchvision cannot be imported.
const TORCH_UNAVAILABLE: i32 = 3;

/// Classes of the head: a binary patch classifier, as most pathology tasks are.
const CLASSES: usize = 2;

/// What a GPU run of Burn should reach, as a fraction of PyTorch eager.
const GPU_TARGET: f64 = 0.8;

/// Options of `pathfed bench train`.
#[derive(Debug, Args)]
pub struct TrainBenchArgs {
    /// Where Burn trains: flex (the CPU, also measured on ndarray), cuda or wgpu.
    #[arg(long, default_value = "flex", value_parser = ["flex", "cuda", "wgpu"])]
    device: String,
    /// Images per step [default: 64 on the CPU, 256 on a GPU].
    #[arg(long)]
    batch: Option<usize>,
    /// Timed steps, of which the median counts [default: 3 on the CPU, 20 on a GPU].
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed steps before them [default: 1 on the CPU, 5 on a GPU].
    #[arg(long)]
    warmup: Option<usize>,
    /// Model layout: resnet18 or resnet-small.
    #[arg(long, default_value = "resnet18")]
    model: String,
    /// Input side in pixels.
    #[arg(long, default_value_t = 224)]
    input_px: u32,
    /// Batch of the flex-against-ndarray comparison on the CPU (kept small: ndarray is slow).
    #[arg(long, default_value_t = 2)]
    ndarray_batch: usize,
    /// Python with torch and torchvision, for the PyTorch reference.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
}

/// Measures Burn's training throughput against the references and prints the figures.
pub fn run(args: &TrainBenchArgs) -> anyhow::Result<()> {
    let backend = Backend::parse(&args.device)?;
    let gpu = backend.is_gpu();
    // Fail before minutes of CPU measurement, not after.
    let device = backend.device()?;
    let config = ModelConfig {
        architecture: Architecture::parse(&args.model)?,
        classes: CLASSES,
        input_px: args.input_px,
    };
    let batch = args.batch.unwrap_or(if gpu { 256 } else { 64 });
    let steps = args.steps.unwrap_or(if gpu { 20 } else { 3 });
    let warmup = args.warmup.unwrap_or(if gpu { 5 } else { 1 });
    anyhow::ensure!(
        batch > 0 && steps > 0 && args.ndarray_batch > 0,
        "--batch, --ndarray-batch and --steps must be at least 1"
    );
    println!(
        "== training throughput: {}, {} px, {CLASSES} classes; {warmup} warm-up + {steps} timed steps (the median counts) of forward, cross-entropy, backward and Adam on random input already on the device",
        config.architecture.name(),
        config.input_px,
    );
    if !gpu {
        println!("   CPU threads: {} (Burn's rayon pool)", cpu_threads());
    }

    let measure = |backend: Backend, device: &_, batch: usize| -> anyhow::Result<Throughput> {
        eprintln!("measuring Burn {} at batch {batch}...", backend.name());
        let mut on_step = |s: Step| {
            eprintln!(
                "  {} step {}/{} ({}): {:.2} s",
                backend.name(),
                s.index,
                s.total,
                if s.warmup { "warm-up" } else { "timed" },
                s.seconds
            );
        };
        train_throughput(device, &config, batch, steps, warmup, &mut on_step)
            .with_context(|| format!("training on {}", backend.name()))
    };

    println!("-- batch {batch}");
    let burn = measure(backend, &device, batch)?;
    report(&format!("Burn {}", backend.name()), &burn);
    // PyTorch has no wgpu device; on the same GPU, CUDA is what it would use.
    let torch_device = if gpu { "cuda" } else { "cpu" };
    let params = TorchParams {
        device: torch_device,
        batch,
        steps,
        warmup,
    };
    match torch_reference(args, &config, &params)? {
        Torch::Measured {
            samples_per_s,
            median_step_s,
            version,
            threads,
        } => {
            println!(
                "   {:<26}: {samples_per_s:>8.1} samples/s ({median_step_s:.3} s/step)",
                format!("PyTorch {version} {torch_device} ({threads} threads)")
            );
            let ratio = burn.samples_per_second() / samples_per_s;
            let target = if gpu {
                format!(" (target >= {GPU_TARGET}x)")
            } else {
                String::new()
            };
            println!(
                "   ratio Burn {}/PyTorch {ratio:.2}x{target}",
                backend.name()
            );
        }
        Torch::Missing(why) => println!("   PyTorch: not installed ({why})"),
        Torch::NotRun(why) => println!("   PyTorch: not run ({why})"),
    }

    if !gpu {
        // ndarray's convolution backward is a direct scalar loop: a ResNet-18 step at batch 64
        // takes over ten minutes there, so the two CPU backends meet at a smaller batch.
        let small = args.ndarray_batch;
        println!("-- batch {small}: flex against ndarray");
        let flex = if small == batch {
            burn
        } else {
            measure(Backend::Flex, &device, small)?
        };
        report("Burn flex", &flex);
        match Backend::NdArray.device() {
            Ok(device) => {
                let ndarray = measure(Backend::NdArray, &device, small)?;
                report("Burn ndarray", &ndarray);
                println!(
                    "   ratio flex/ndarray {:.2}x",
                    flex.samples_per_second() / ndarray.samples_per_second()
                );
            }
            // `make bench` builds with the reference; everyday builds leave it out.
            Err(why) => println!("   Burn ndarray: not measured ({why})"),
        }
    }
    Ok(())
}

fn report(what: &str, t: &Throughput) {
    println!(
        "   {what:<26}: {:>8.1} samples/s ({:.3} s/step)",
        t.samples_per_second(),
        t.median_step()
    );
}

/// What the PyTorch reference gave.
enum Torch {
    Measured {
        samples_per_s: f64,
        median_step_s: f64,
        version: String,
        threads: u64,
    },
    /// torch or torchvision is not importable.
    Missing(String),
    /// The Python interpreter could not be started.
    NotRun(String),
}

/// How the PyTorch reference runs.
struct TorchParams<'a> {
    device: &'a str,
    batch: usize,
    steps: usize,
    warmup: usize,
}

fn torch_reference(
    args: &TrainBenchArgs,
    config: &ModelConfig,
    params: &TorchParams,
) -> anyhow::Result<Torch> {
    let python = args.python.display().to_string();
    eprintln!("measuring PyTorch with {python}...");
    let spawned = Command::new(&args.python)
        .arg("-")
        .args(["--device", params.device])
        .args(["--model", config.architecture.name()])
        .args(["--batch", &params.batch.to_string()])
        .args(["--steps", &params.steps.to_string()])
        .args(["--warmup", &params.warmup.to_string()])
        .args(["--classes", &config.classes.to_string()])
        .args(["--input-px", &config.input_px.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Ok(Torch::NotRun(format!("cannot start {python}: {e}"))),
    };
    // Dropping stdin after the write closes it, so Python starts running the script.
    child
        .stdin
        .take()
        .context("python's standard input")?
        .write_all(TORCH_SCRIPT.as_bytes())
        .with_context(|| format!("sending the reference script to {python}"))?;
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {python}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    if output.status.code() == Some(TORCH_UNAVAILABLE) {
        let why = line["unavailable"]
            .as_str()
            .unwrap_or("torch is not importable");
        return Ok(Torch::Missing(why.to_string()));
    }
    anyhow::ensure!(
        output.status.success(),
        "the PyTorch reference failed ({}): {}",
        output.status,
        line["error"].as_str().unwrap_or("see its output above")
    );
    let number = |key: &str| {
        line[key]
            .as_f64()
            .with_context(|| format!("the PyTorch reference printed no {key}: {stdout}"))
    };
    Ok(Torch::Measured {
        samples_per_s: number("samples_per_s")?,
        median_step_s: number("median_step_s")?,
        version: line["torch"].as_str().unwrap_or("?").to_string(),
        threads: line["threads"].as_u64().unwrap_or(0),
    })
}
