//! Compute devices by name: `flex` (the CPU, always built), `cuda` and `wgpu` when this build has
//! their cargo features. A device that is named but missing, or that fails its first operation
//! (no GPU, no driver), is a clear [`ModelError::Device`] before any work starts.

use burn::prelude::*;

use crate::error::{ModelError, ModelResult};

/// Device names a request may use.
pub const NAMES: [&str; 3] = ["flex", "cuda", "wgpu"];

/// Device names this build can open.
pub fn compiled() -> Vec<&'static str> {
    let mut names = vec!["flex"];
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    names
}

/// Checks that `name` is a device at all.
pub fn check_name(name: &str) -> ModelResult<()> {
    if NAMES.contains(&name) {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "unknown device {name:?}: use {}",
            NAMES.join(", ")
        )))
    }
}

/// Opens `name` and runs one small operation on it, so a missing GPU fails here.
pub fn open(name: &str) -> ModelResult<Device> {
    check_name(name)?;
    let unavailable = |reason: String| ModelError::Device {
        device: name.to_string(),
        reason,
    };
    let device = match name {
        "flex" => Device::flex(),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        other => {
            return Err(unavailable(format!(
                "this build has no {other} backend (built with {}); rebuild with --features pathfed-training/{other} or choose flex",
                compiled().join(", ")
            )));
        }
    };
    // GPU runtimes initialise lazily and panic when there is no device or driver.
    let probe = std::panic::catch_unwind(|| {
        Tensor::<1>::from_floats([1.0, 2.0], &device)
            .sum()
            .into_data()
            .try_into_vec::<f32>()
            .map(|v| v.first().copied())
    });
    match probe {
        Ok(Ok(Some(v))) if (v - 3.0).abs() < 1e-6 => Ok(device),
        Ok(other) => Err(unavailable(format!("a test operation gave {other:?}"))),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "its runtime failed to start".into());
            Err(unavailable(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_opens_and_unknown_or_missing_devices_are_refused() {
        assert!(open("flex").is_ok());
        let e = open("tpu").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown device \"tpu\""), "{e}");
        if !cfg!(feature = "cuda") {
            let e = open("cuda")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.contains("device cuda: this build has no cuda backend"),
                "{e}"
            );
        }
    }
}
