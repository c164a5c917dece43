//! Training throughput: timed full steps (forward, cross-entropy, backward, Adam update) on one
//! random batch that is already on the device, so the figure is the backend's compute and not
//! data loading. `pathfed bench train` compares backends with it.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use pathfed_models::model::{ModelConfig, ResNet};
use pathfed_training::error::{TrainError, TrainResult};

/// A compute backend to train on, chosen by name at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// Burn's ndarray CPU backend: the CPU reference for flex.
    NdArray,
    /// An NVIDIA GPU through CUDA (builds with the `cuda` feature).
    Cuda,
    /// A GPU through wgpu (builds with the `wgpu` feature).
    Wgpu,
}

impl Backend {
    /// Parses the CLI name.
    pub fn parse(name: &str) -> TrainResult<Self> {
        match name {
            "flex" => Ok(Self::Flex),
            "ndarray" => Ok(Self::NdArray),
            "cuda" => Ok(Self::Cuda),
            "wgpu" => Ok(Self::Wgpu),
            other => Err(TrainError::Invalid(format!(
                "unknown device {other:?}: use flex, ndarray, cuda or wgpu"
            ))),
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::NdArray => "ndarray",
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
        }
    }

    /// Whether it runs on a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::Cuda | Self::Wgpu)
    }

    /// The backend's first device, or why this build cannot use it. The GPU backends open
    /// as training opens them, checked with one operation.
    pub fn device(self) -> TrainResult<Device> {
        match self {
            Self::NdArray => ndarray_device(),
            other => pathfed_models::device::open(other.name()).map_err(TrainError::from),
        }
    }
}

// Burn 0.22 deprecates ndarray in favour of flex; it stays as the benchmark's CPU reference,
// built only for benchmarks: it is the slowest crate of the stack to compile.
#[cfg(feature = "ndarray-reference")]
#[allow(deprecated)]
fn ndarray_device() -> TrainResult<Device> {
    Ok(Device::ndarray())
}

#[cfg(not(feature = "ndarray-reference"))]
fn ndarray_device() -> TrainResult<Device> {
    Err(TrainError::Device {
        device: "ndarray".into(),
        reason: "this build has no ndarray backend: rebuild with --features ndarray-reference"
            .into(),
    })
}

/// Threads the CPU backends compute with (both use the global rayon pool).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// One finished training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// 1-based, warm-up steps included.
    pub index: usize,
    /// Warm-up and timed steps together.
    pub total: usize,
    /// A warm-up step, not counted.
    pub warmup: bool,
    /// Wall-clock seconds, device synchronised.
    pub seconds: f64,
}

/// The median of `values` (NaN when there are none): one outlier does not move it.
pub fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Timed training steps of one model on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Images per step.
    pub batch: usize,
    /// Seconds of each timed step (warm-up excluded).
    pub step_seconds: Vec<f64>,
}

impl Throughput {
    /// The median step time in seconds.
    pub fn median_step(&self) -> f64 {
        median(&self.step_seconds)
    }

    /// Images per second at the median step time: one slow step (a page fault storm, another
    /// process) does not move it the way a total would.
    pub fn samples_per_second(&self) -> f64 {
        self.batch as f64 / self.median_step()
    }
}

/// Runs `warmup` untimed then `steps` timed training steps of a freshly initialised `config`
/// model on `device` with batches of `batch` random images, reporting each step to `progress`.
pub fn train_throughput(
    device: &Device,
    config: &ModelConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    progress: &mut dyn FnMut(Step),
) -> TrainResult<Throughput> {
    if batch == 0 || steps == 0 || config.classes < 2 {
        return Err(TrainError::Invalid(
            "batch and steps must be at least 1, classes at least 2".into(),
        ));
    }
    let device = device.clone().autodiff();
    device.seed(1);
    let mut model = ResNet::new(config, &device);
    let mut optim = AdamConfig::new().init();
    let loss = CrossEntropyLossConfig::new().init(&device);
    let side = config.input_px as usize;
    let images = Tensor::<4>::random(
        [batch, 3, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let labels: Vec<i64> = (0..batch as i64)
        .map(|i| i % config.classes as i64)
        .collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), &device);
    sync(&device)?;

    let total = warmup + steps;
    let mut step_seconds = Vec::with_capacity(steps);
    for index in 1..=total {
        let started = Instant::now();
        let logits = model.forward(images.clone());
        let grads = loss.forward(logits, targets.clone()).backward();
        let grads = GradientsParams::from_grads(grads, &model);
        model = optim.step(1e-3, model, grads);
        // GPU backends queue work: without waiting, the clock would stop before the step ran.
        sync(&device)?;
        let seconds = started.elapsed().as_secs_f64();
        let warmup = index <= warmup;
        if !warmup {
            step_seconds.push(seconds);
        }
        progress(Step {
            index,
            total,
            warmup,
            seconds,
        });
    }
    Ok(Throughput {
        batch,
        step_seconds,
    })
}

fn sync(device: &Device) -> TrainResult<()> {
    device.sync().map_err(|e| TrainError::Device {
        device: format!("{device:?}"),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pathfed_models::model::Architecture;

    #[test]
    fn a_small_model_trains_on_the_cpu_backends_of_this_build() {
        let config = ModelConfig {
            architecture: Architecture::ResnetSmall,
            classes: 2,
            input_px: 32,
        };
        let mut backends = vec![Backend::Flex];
        if cfg!(feature = "ndarray-reference") {
            backends.push(Backend::NdArray);
        }
        for backend in backends {
            let device = backend.device().expect("this build has the backend");
            let mut seen = Vec::new();
            let result = train_throughput(&device, &config, 4, 2, 1, &mut |s| seen.push(s))
                .expect("training steps");
            assert_eq!(result.step_seconds.len(), 2);
            assert_eq!(
                seen.iter().map(|s| (s.index, s.warmup)).collect::<Vec<_>>(),
                [(1, true), (2, false), (3, false)]
            );
            assert!(result.samples_per_second() > 0.0, "{}", backend.name());
        }
    }

    #[test]
    fn the_median_ignores_one_slow_step() {
        let t = Throughput {
            batch: 10,
            step_seconds: vec![1.0, 9.0, 1.0],
        };
        assert_eq!(t.samples_per_second(), 10.0);
        let even = Throughput {
            batch: 10,
            step_seconds: vec![1.0, 3.0],
        };
        assert_eq!(even.median_step(), 2.0);
    }

    #[test]
    fn names_round_trip_and_missing_gpu_backends_say_how_to_get_them() {
        for b in [
            Backend::Flex,
            Backend::NdArray,
            Backend::Cuda,
            Backend::Wgpu,
        ] {
            assert_eq!(Backend::parse(b.name()).ok(), Some(b));
        }
        assert!(Backend::parse("tpu").is_err());
        #[cfg(not(feature = "ndarray-reference"))]
        {
            let err = Backend::NdArray.device().err().map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some(
                    "device ndarray: this build has no ndarray backend: \
                     rebuild with --features ndarray-reference"
                )
            );
        }
        #[cfg(not(feature = "cuda"))]
        {
            let err = Backend::Cuda.device().err().map(|e| e.to_string());
            let want = format!(
                "device cuda: this build has no cuda backend (built with {}); rebuild with \
                 --features pathfed-training/cuda or choose flex",
                pathfed_models::device::compiled().join(", ")
            );
            assert_eq!(err, Some(want));
        }
    }
}
