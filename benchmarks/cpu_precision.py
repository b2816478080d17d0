"""How fast one training step runs on this CPU in each precision and memory layout.

The reference nets of the book (A, D, E at width 1/8, three poolings, batch norm, 32-pixel crops,
batch 128, one thread) take SGD steps (forward, backward, fused SGD: what ``vgg_lib.loop`` does)
in four modes: float32 with NCHW tensors (what training on the CPU did before bf16 was used),
float32 channels_last, bf16 autocast NCHW, bf16 autocast channels_last. Each is printed as
images/s, as a ratio to float32 NCHW, and as the fraction of this machine's own float32 GEMM rate
that the step reaches (the step's multiply-adds x 3 for forward + backward, over the seconds).

    python benchmarks/cpu_precision.py [--configs A D E] [--steps 20] [--threads 1]

Target: the mode ``train`` picks on this CPU (``vgg_lib.loop.cpu_precision``) >= 1.7x float32
NCHW at this geometry.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgg_lib.analysis import layer_table  # noqa: E402
from vgg_lib.models import vgg  # noqa: E402
from vgg_lib.loop import cpu_precision, native_bf16  # noqa: E402

MODES = {"fp32 NCHW": ("off", False), "fp32 channels_last": ("off", True),
         "bf16 NCHW": ("bf16", False), "bf16 channels_last": ("bf16", True)}


def gemm_rate(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Multiply-adds per second of a float32 n x n x n matrix product on ``threads`` threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * n ** 3 / (time.perf_counter() - t0)


def step_rate(config: str, amp: str, channels_last: bool, batch: int, steps: int) -> float:
    """Training images per second of SGD steps on random 32-pixel crops."""
    torch.manual_seed(0)
    net = vgg(config, num_classes=10, width=0.125, input_size=32, pools=3, batch_norm=True, init="glorot")
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext()
    net.train()

    def one():
        opt.zero_grad(set_to_none=True)
        with cast:
            out = net(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()

    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * batch / (time.perf_counter() - t0)


def macs(config: str) -> float:
    net = vgg(config, num_classes=10, width=0.125, input_size=32, pools=3, batch_norm=True)
    return float(layer_table(net, input_size=32, total=False)["macs"].sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["A", "D", "E"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = gemm_rate(args.threads)
    chosen = cpu_precision()
    print(f"float32 GEMM: {peak / 1e9:.1f} GMAC/s on {args.threads} thread(s); native bf16: {native_bf16()}; "
          f"train picks amp={chosen['amp']!r}, channels_last={chosen['channels_last']}\n")
    print("| net | mode | images/s | x fp32 NCHW | fraction of fp32 GEMM |")
    print("| --- | --- | ---: | ---: | ---: |")
    for config in args.configs:
        work = 3 * macs(config)  # forward + two backward products per layer
        base = None
        for mode, (amp, cl) in MODES.items():
            rate = step_rate(config, amp, cl, args.batch, args.steps)
            base = base or rate
            mark = " (train's choice)" if (amp, cl) == (chosen["amp"], chosen["channels_last"]) else ""
            print(f"| {config} | {mode}{mark} | {rate:.0f} | {rate / base:.2f} | {rate * work / peak:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
