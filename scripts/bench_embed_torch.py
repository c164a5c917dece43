#!/usr/bin/env python3
"""PyTorch + timm reference for `pathfed bench embed`.

Builds timm's own VisionTransformer with the architecture the Rust side measured, loads the very
safetensors file Burn loaded (strictly: a name or shape timm does not expect fails the run), and
times the encoder alone on the same normalised patches, in eval mode under inference_mode, batch
by batch with the embeddings copied back to the host as the Rust side does. It also reports how
far its embeddings are from Burn's on those patches, so the two sides are known to compute the
same function.

Inputs are files the Rust side wrote: the encoder spec (JSON), the weights, the patches
(little-endian float32, [N, 3, S, S]) and Burn's embeddings (float32, [N, F]). Prints one JSON
line on stdout; progress goes to stderr.

Exit status 3 with {"unavailable": ...} means torch, timm or numpy cannot be imported.
"""

import argparse
import json
import sys
import time

UNAVAILABLE = 3


def build(torch, spec):
    """timm's VisionTransformer for the Rust `VitConfig`, without a classifier head."""
    from functools import partial

    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    vit, pre = spec["vit"], spec["preprocess"]
    trained_px = vit["grid"] * vit["patch"]
    kwargs = dict(
        img_size=trained_px,
        patch_size=vit["patch"],
        embed_dim=vit["dim"],
        depth=vit["depth"],
        num_heads=vit["heads"],
        # timm takes the MLP width as int(dim * ratio); half a unit over keeps it exact.
        mlp_ratio=(vit["mlp_hidden"] + 0.5) / vit["dim"],
        qkv_bias=True,
        class_token=True,
        reg_tokens=vit.get("registers", 0),
        no_embed_class=not vit["pos_embed_prefix"],
        init_values=1e-5 if vit["layer_scale"] else None,
        num_classes=0,
        global_pool="token",
        norm_layer=partial(torch.nn.LayerNorm, eps=vit.get("norm_eps", 1e-6)),
        # Another input side resamples the position embeddings, as the Rust side does.
        dynamic_img_size=pre["input_px"] != trained_px,
    )
    if vit["mlp"] == "swiglu":
        kwargs.update(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)
    return VisionTransformer(**kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()

    try:
        import numpy as np
        import timm
        import torch
        from safetensors.torch import load_file
        from timm.layers import SwiGLUPacked  # noqa: F401 (timm ≥ 0.9, which has it)
    except ImportError as err:
        print(json.dumps({"unavailable": str(err)}))
        return UNAVAILABLE

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return 1
    device = torch.device(args.device)
    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    vit, side = spec["vit"], spec["preprocess"]["input_px"]

    model = build(torch, spec)
    try:
        model.load_state_dict(load_file(args.weights), strict=True)
    except RuntimeError as err:
        print(json.dumps({"error": f"timm does not take Burn's weights file: {err}"}))
        return 1
    model = model.to(device).eval()
    prefix = 1 + vit.get("registers", 0)

    def embed(x):
        tokens = model.forward_features(x)
        if vit["pool"] == "class+mean":
            return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(dim=1)], dim=-1)
        return tokens[:, 0]

    images = np.fromfile(args.images, dtype="<f4").reshape(args.count, 3, side, side)
    expected = np.fromfile(args.embeddings, dtype="<f4").reshape(args.count, -1)
    batches = [
        torch.from_numpy(images[i : i + args.batch].copy()).to(device)
        for i in range(0, args.count, args.batch)
    ]
    del images

    outputs = []
    with torch.inference_mode():
        # The first call (allocations, kernel choice) is not counted, as on the Rust side.
        embed(batches[0]).cpu()
        started = time.perf_counter()
        for index, batch in enumerate(batches, 1):
            # .cpu() waits for the device, as Burn's into_data does.
            outputs.append(embed(batch).cpu())
            print(f"  pytorch batch {index}/{len(batches)}", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
    got = torch.cat(outputs).numpy()
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "timm": timm.__version__,
                "device": args.device,
                "threads": torch.get_num_threads(),
                "patches": args.count,
                "seconds": seconds,
                "patches_per_s": args.count / seconds,
                "max_abs_diff": float(np.abs(got - expected).max()),
                "max_abs": float(np.abs(expected).max()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
