//! `pathfed bench train`: training throughput of the patch classifier (forward, cross-entropy,
//! backward, Adam) on random input already on the device, Burn against references measured in
//! the same run: on the CPU flex against PyTorch at the main batch and against ndarray at a
//! small one (ndarray's convolution backward is too slow for more); on a GPU against PyTorch.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pathfed_models::model::{Architecture, ModelConfig};

use crate::throughput::{Backend, Step, Throughput, cpu_threads, train_throughput};
use crate::torch::{self, Reference};

/// The PyTorch reference, run by [`torch::run`].
const TORCH_SCRIPT: &str = include_str!("../../scripts/bench_train_torch.py");

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
        Reference::Measured(line) => {
            let samples_per_s = torch::number(&line, "samples_per_s")?;
            let median_step_s = torch::number(&line, "median_step_s")?;
            let version = line["torch"].as_str().unwrap_or("?");
            let threads = line["threads"].as_u64().unwrap_or(0);
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
        absent => println!("   PyTorch: {}", absent.absent().unwrap_or_default()),
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
) -> anyhow::Result<Reference> {
    let script_args = torch::flags([
        ("--device", params.device.to_string()),
        ("--model", config.architecture.name().to_string()),
        ("--batch", params.batch.to_string()),
        ("--steps", params.steps.to_string()),
        ("--warmup", params.warmup.to_string()),
        ("--classes", config.classes.to_string()),
        ("--input-px", config.input_px.to_string()),
    ]);
    torch::run(&args.python, TORCH_SCRIPT, &script_args)
}
