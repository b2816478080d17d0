"""Training speed: forward + backward of vgg_lib's net D vs torchvision's vgg16 (same batch),
and what a small CPU run of the Training chapter costs.

    python benchmarks/train_step.py                 # both tables
    python benchmarks/train_step.py --part step     # D vs vgg16 only (target ratio >= 0.95)
    python benchmarks/train_step.py --part small    # width-1/8 nets A, D, E on 32-pixel shapes

On a CPU the D-vs-vgg16 batch is small (2 images of 224x224 by default); ``--size`` reduces
the input equally for both nets. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgg_lib.models import load_torchvision_weights, vgg  # noqa: E402


def step_rate(model, x, y, steps, warmup=1):
    """Images per second of forward + backward (the gradient computation of one SGD step)."""
    model.train()
    for _ in range(warmup):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t0)


def d_vs_vgg16(args, device):
    import torchvision

    theirs = torchvision.models.vgg16().to(device)
    # The same weight values in both: CPU speed depends on them (tiny values become denormals).
    ours = load_torchvision_weights(vgg("D", input_size=args.size, init=None), theirs.state_dict()).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    if device.type == "cuda":
        ours, theirs = (m.to(memory_format=torch.channels_last) for m in (ours, theirs))
        x = x.contiguous(memory_format=torch.channels_last)
    rates = {"vgg_lib vgg('D')": [], "torchvision vgg16()": []}
    for _ in range(args.rounds):  # alternate, so both see the same machine load
        rates["vgg_lib vgg('D')"].append(step_rate(ours, x, y, args.steps))
        rates["torchvision vgg16()"].append(step_rate(theirs, x, y, args.steps))
    best = {k: max(v) for k, v in rates.items()}
    ratio = best["vgg_lib vgg('D')"] / best["torchvision vgg16()"]
    print(f"\n### Forward + backward, batch {args.batch} x 3 x {args.size} x {args.size}, {device.type}, "
          f"{torch.get_num_threads()} threads (best of {args.rounds} rounds of {args.steps} steps)\n")
    print("| network | images/s |\n| --- | ---: |")
    for k, v in best.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| **ratio D / vgg16** | **{ratio:.3f}** (target >= 0.95) |")
    return ratio


def small_runs(args):
    """One real epoch of vgg_lib.train (data, augmentation, SGD, validation) per net."""
    from vgg_lib.train import TrainConfig, train

    print(f"\n### One epoch of `vgg_lib.train` on shapes: width 1/8, crop 32, {args.train_size} training and "
          f"{args.val_size} validation images, batch {args.small_batch}, {torch.get_num_threads()} threads\n")
    print("| net | weight layers | train images/s | epoch seconds (incl. validation) |\n| --- | ---: | ---: | ---: |")
    layers = {"A": 11, "B": 13, "D": 16, "E": 19}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            cfg = TrainConfig(config=config, width=0.125, epochs=1, batch_size=args.small_batch,
                              train_size=args.train_size, val_size=args.val_size, progress=False,
                              device="cpu", run_dir=str(Path(tmp) / config))
            path = train(cfg)
            s = json.loads((path / "summary.json").read_text())
            print(f"| {config} | {layers.get(config, '')} | {s['images_per_s']:.0f} | {s['seconds']:.1f} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["step", "small", "all"], default="all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 64 on CUDA")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["A", "D", "E"])
    p.add_argument("--train-size", type=int, default=1000)
    p.add_argument("--val-size", type=int, default=500)
    p.add_argument("--small-batch", type=int, default=64)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    args.batch = args.batch or (64 if device.type == "cuda" else 2)
    os.environ.setdefault("VGG_LIB_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "vgg_lib"))
    torch.manual_seed(0)
    if args.part in ("step", "all"):
        d_vs_vgg16(args, device)
    if args.part in ("small", "all"):
        small_runs(args)


if __name__ == "__main__":
    main()
