#!/usr/bin/env python3
"""PyTorch reference for `pathfed bench train`.

Times full training steps in eager mode (forward, cross-entropy, backward and an Adam update)
on one random batch already on the device, as the Rust side does: torchvision's ResNet-18, or
the same small ResNet as the Rust `resnet-small`. Prints one JSON line on stdout; progress
goes to stderr.

Exit status 3 with {"unavailable": ...} means torch or torchvision cannot be imported.
"""

import argparse
import json
import statistics
import sys
import time

UNAVAILABLE = 3


def resnet_small(torch, torchvision, classes):
    """The Rust `resnet-small`: 3x3 stride-2 stem, no max-pool, one basic block per stage of
    16, 32, 64 and 128 channels."""
    nn = torch.nn
    block = torchvision.models.resnet.BasicBlock
    widths = [16, 32, 64, 128]
    layers = [
        nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
    ]
    inp = widths[0]
    for i, out in enumerate(widths):
        stride = 1 if i == 0 else 2
        down = None
        if stride != 1 or inp != out:
            down = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        layers.append(block(inp, out, stride, down))
        inp = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inp, classes)]
    return nn.Sequential(*layers)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", choices=["resnet18", "resnet-small"], default="resnet18")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--input-px", type=int, default=224)
    args = parser.parse_args()

    try:
        import torch
        import torchvision
    except ImportError as err:
        print(json.dumps({"unavailable": str(err)}))
        return UNAVAILABLE

    if args.device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA device"}))
        return 1
    device = torch.device(args.device)
    torch.manual_seed(1)
    if args.model == "resnet18":
        model = torchvision.models.resnet18(num_classes=args.classes)
    else:
        model = resnet_small(torch, torchvision, args.classes)
    model = model.to(device)
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    images = torch.randn(args.batch, 3, args.input_px, args.input_px, device=device)
    targets = (torch.arange(args.batch, device=device) % args.classes).long()

    def sync() -> None:
        # CUDA launches are asynchronous: the clock must wait for the step to finish.
        if device.type == "cuda":
            torch.cuda.synchronize()

    total = args.warmup + args.steps
    times = []
    sync()
    for index in range(1, total + 1):
        started = time.perf_counter()
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), targets)
        loss.backward()
        optim.step()
        sync()
        seconds = time.perf_counter() - started
        warm = index <= args.warmup
        if not warm:
            times.append(seconds)
        label = "warm-up" if warm else "timed"
        print(
            f"  pytorch step {index}/{total} ({label}): {seconds:.2f} s",
            file=sys.stderr,
            flush=True,
        )

    median = statistics.median(times)
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "device": args.device,
                "model": args.model,
                "threads": torch.get_num_threads(),
                "batch": args.batch,
                "median_step_s": median,
                "step_s": times,
                "samples_per_s": args.batch / median,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
