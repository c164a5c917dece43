"""Reference files for the weight-import test (training/tests/import.rs).

Writes, into the directory given as the only argument, a resnet-small (3x3 stride-2 stem, one
basic block per stage of 16, 32, 64 and 128 channels, no max-pool) under torchvision's parameter
names with seeded pseudo-random weights, its eval-mode forward pass computed here in numpy, and
variants of the file that the importer must refuse or report. numpy computes the reference so
that the Rust side is checked against an implementation it shares no code with.

Exit status 3 means numpy or safetensors is missing from this interpreter.
"""

import json
import sys
from pathlib import Path

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as err:
    print(f"missing Python package {err.name}", file=sys.stderr)
    sys.exit(3)

WIDTHS = (16, 32, 64, 128)
CLASSES = 3
BATCH, SIDE = 2, 32
EPS = 1e-5  # torch's and Burn's batch-norm default


def blocks():
    """(name, in channels, out channels, stride) of each stage's single block."""
    inp = WIDTHS[0]
    for stage, out in enumerate(WIDTHS, start=1):
        yield f"layer{stage}.0", inp, out, (1 if stage == 1 else 2)
        inp = out


def make_weights(rng, classes):
    """float32 parameters and batch-norm buffers, named as torchvision's state_dict names them."""
    p = {}

    def conv(name, out, inp, k):
        # He initialisation keeps activations of order one through the four blocks.
        p[f"{name}.weight"] = rng.normal(0.0, np.sqrt(2.0 / (inp * k * k)), (out, inp, k, k))

    def bn(name, n):
        p[f"{name}.weight"] = rng.uniform(0.5, 1.5, n)
        p[f"{name}.bias"] = rng.normal(0.0, 0.1, n)
        p[f"{name}.running_mean"] = rng.normal(0.0, 0.1, n)
        p[f"{name}.running_var"] = rng.uniform(0.5, 2.0, n)

    conv("conv1", WIDTHS[0], 3, 3)
    bn("bn1", WIDTHS[0])
    for name, inp, out, stride in blocks():
        conv(f"{name}.conv1", out, inp, 3)
        bn(f"{name}.bn1", out)
        conv(f"{name}.conv2", out, out, 3)
        bn(f"{name}.bn2", out)
        if stride != 1 or inp != out:
            conv(f"{name}.downsample.0", out, inp, 1)
            bn(f"{name}.downsample.1", out)
    p["fc.weight"] = rng.normal(0.0, 1.0 / np.sqrt(WIDTHS[-1]), (classes, WIDTHS[-1]))
    p["fc.bias"] = rng.normal(0.0, 0.1, classes)
    p = {k: v.astype(np.float32) for k, v in p.items()}
    # torchvision saves this counter with every batch norm; the importer must ignore it.
    for k in [k for k in p if k.endswith(".running_var")]:
        p[k.replace(".running_var", ".num_batches_tracked")] = np.array(1000, dtype=np.int64)
    return p


def conv2d(x, w, stride, pad):
    """Cross-correlation of x [B, C, H, W] with w [O, C, k, k], as torch's Conv2d computes it."""
    _, _, h, wd = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(k):
        for j in range(k):
            window = xp[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]
            out += np.einsum("bchw,oc->bohw", window, w[:, :, i, j])
    return out


def batch_norm(p, name, x):
    """Eval mode: normalised by the running statistics, not the batch's."""
    col = lambda v: p[f"{name}.{v}"].astype(np.float64)[None, :, None, None]
    return (x - col("running_mean")) / np.sqrt(col("running_var") + EPS) * col("weight") + col(
        "bias"
    )


def relu(x):
    return np.maximum(x, 0.0)


def forward(p, x):
    """Logits [B, classes], in float64 from the float32 weights and input."""
    w = lambda name: p[name].astype(np.float64)
    y = relu(batch_norm(p, "bn1", conv2d(x, w("conv1.weight"), 2, 1)))
    for name, inp, out, stride in blocks():
        shortcut = y
        if stride != 1 or inp != out:
            shortcut = batch_norm(
                p, f"{name}.downsample.1", conv2d(y, w(f"{name}.downsample.0.weight"), stride, 0)
            )
        z = relu(batch_norm(p, f"{name}.bn1", conv2d(y, w(f"{name}.conv1.weight"), stride, 1)))
        z = batch_norm(p, f"{name}.bn2", conv2d(z, w(f"{name}.conv2.weight"), 1, 1))
        y = relu(z + shortcut)
    pooled = y.mean(axis=(2, 3))
    return pooled @ w("fc.weight").T + w("fc.bias")


def make_input():
    """Two smooth, different images from a formula, so the test needs no image files."""
    b, c, h, w = np.meshgrid(
        np.arange(BATCH), np.arange(3), np.arange(SIDE), np.arange(SIDE), indexing="ij"
    )
    x = 0.8 * np.sin(0.37 * h * (c + 1) + 0.23 * w + 1.1 * b) + 0.2 * np.cos(0.05 * h * w)
    return x.astype(np.float32)


def main():
    if len(sys.argv) != 2:
        print("usage: resnet_weights.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240611)

    weights = make_weights(rng, CLASSES)
    x = make_input()
    logits = forward(weights, x.astype(np.float64))
    save_file(weights, str(out / "weights.safetensors"))
    (out / "expected.json").write_text(
        json.dumps(
            {
                "input_shape": list(x.shape),
                "input": [float(v) for v in x.ravel()],
                "classes": CLASSES,
                "logits": logits.tolist(),
            }
        )
    )

    # The same values in float64, as some exports store them.
    save_file(
        {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in weights.items()},
        str(out / "weights_f64.safetensors"),
    )

    # The same backbone under an ImageNet head.
    imagenet = dict(weights)
    imagenet["fc.weight"] = rng.normal(0.0, 0.05, (1000, WIDTHS[-1])).astype(np.float32)
    imagenet["fc.bias"] = np.zeros(1000, dtype=np.float32)
    save_file(imagenet, str(out / "imagenet_head.safetensors"))

    # A 5x5 kernel where the model has 3x3.
    wrong = dict(weights)
    wrong["layer3.0.conv2.weight"] = rng.normal(0.0, 0.05, (64, 64, 5, 5)).astype(np.float32)
    save_file(wrong, str(out / "wrong_conv.safetensors"))

    # Without layer2's projection shortcut and one running variance.
    missing = {
        k: v
        for k, v in weights.items()
        if not k.startswith("layer2.0.downsample.") and k != "bn1.running_var"
    }
    save_file(missing, str(out / "missing.safetensors"))

    # A self-supervised checkpoint's projection head beside the backbone.
    extra = dict(weights)
    extra["projection.weight"] = rng.normal(0.0, 0.05, (64, WIDTHS[-1])).astype(np.float32)
    extra["projection.bias"] = np.zeros(64, dtype=np.float32)
    save_file(extra, str(out / "extra.safetensors"))

    # Some other network entirely.
    save_file(
        {
            "encoder.block.0.weight": rng.normal(0.0, 0.05, (8, 8)).astype(np.float32),
            "encoder.block.0.bias": np.zeros(8, dtype=np.float32),
        },
        str(out / "unrelated.safetensors"),
    )


if __name__ == "__main__":
    main()
