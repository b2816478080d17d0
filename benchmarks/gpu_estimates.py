"""What a full-size run needs per GPU: memory (computed) and images/s (estimated).

Memory comes from ``vgg_lib.analysis.training_memory``: parameters, gradients, momentum,
autocast weight copies, DDP buckets, and the activations autograd keeps, walked layer by layer
(checked against the tensors autograd really saves in tests/test_analysis.py). Not included:
the CUDA context and cuDNN workspaces, about 1-2 GB.

Images/s is an *estimate*, not a measurement (this project has no GPU): a training step costs
about 3x the forward multiply-adds (forward, gradient w.r.t. inputs, w.r.t. weights), 2 FLOPs
each, and the GPU is assumed to sustain ``--utilisation`` of its peak ``--peak-tflops``. The
default 0.3 of an A100's 312 bf16 TFLOP/s is an assumption; measure with
``benchmarks/train_loop.py --device cuda`` on the real machine.

    python benchmarks/gpu_estimates.py [--gpus 8] [--batch 256] [--gpu-gb 80]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgg_lib.analysis import layer_table, training_memory  # noqa: E402
from vgg_lib.models import vgg  # noqa: E402

CONFIGS = ("A", "A-LRN", "B", "C", "D", "E")
GB = 1e9


def fitting_micro_batch(net, batch, amp, ddp, budget) -> int | None:
    """The largest divisor of ``batch`` whose step fits in ``budget`` bytes (None: none fits)."""
    for m in sorted((d for d in range(1, batch + 1) if batch % d == 0), reverse=True):
        if training_memory(net, m, amp, ddp=ddp)["total"] <= budget:
            return m
    return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--batch", type=int, default=256, help="global batch (Sect. 3.1: 256)")
    p.add_argument("--amp", default="bf16", choices=["bf16", "fp16", "off"])
    p.add_argument("--gpu-gb", type=float, default=80, help="memory of one GPU, GB")
    p.add_argument("--peak-tflops", type=float, default=312, help="the GPU's peak in the amp dtype")
    p.add_argument("--utilisation", type=float, default=0.3, help="assumed fraction of the peak")
    p.add_argument("--worker-rate", type=float, default=None,
                   help="images/s one loader worker delivers (benchmarks/data_pipeline.py): adds the "
                        "workers each GPU needs to keep up")
    p.add_argument("--device", default="cpu", help="accepted for symmetry; nothing runs on it")
    args = p.parse_args(argv)
    if not math.isfinite(args.utilisation) or not 0 < args.utilisation <= 1:
        sys.exit("error: --utilisation must be in (0, 1]")
    if args.batch % args.gpus:
        sys.exit(f"error: --batch {args.batch} is not divisible by --gpus {args.gpus}")
    per_gpu = args.batch // args.gpus
    budget = (args.gpu_gb - 2) * GB  # leave ~2 GB for the CUDA context and cuDNN workspaces
    print(f"Per GPU, {args.amp}, crop 224, 1000 classes; batch {args.batch} on 1 GPU and "
          f"{per_gpu} x {args.gpus} GPUs (DDP); images/s at {args.utilisation:.0%} of "
          f"{args.peak_tflops:g} TFLOP/s (estimate)\n")
    workers = args.worker_rate is not None
    print(f"| net | params (M) | GMAC/img | weights+grads+momentum GB | activations GB/img | "
          f"1 GPU, batch {args.batch}: GB | micro_batch for {args.gpu_gb:g} GB | "
          f"{args.gpus} GPUs, {per_gpu}/GPU: GB | est. images/s per GPU | est. min/epoch on "
          f"{args.gpus} GPUs (1.28M img) |" + (" loader workers per GPU |" if workers else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if workers else ""))
    for name in CONFIGS:
        net = vgg(name, init=None)
        t = layer_table(net)
        macs = int(t.macs.iloc[-1])
        one = training_memory(net, args.batch, args.amp)
        many = training_memory(net, per_gpu, args.amp, ddp=args.gpus > 1)
        fixed = one["weights"] + one["gradients"] + one["momentum"]
        micro = fitting_micro_batch(net, args.batch, args.amp, False, budget)
        rate = args.peak_tflops * 1e12 * args.utilisation / (6 * macs)
        minutes = 1.28e6 / (rate * args.gpus) / 60
        print(f"| {name} | {t.params.iloc[-1] / 1e6:.1f} | {macs / 1e9:.2f} | {fixed / GB:.2f} | "
              f"{training_memory(net, 1, args.amp)['activations'] / GB:.3f} | {one['total'] / GB:.1f} | "
              f"{micro if micro is not None else 'none fits'} | {many['total'] / GB:.1f} | "
              f"{rate:.0f} | {minutes:.1f} |"
              + (f" {math.ceil(rate / args.worker_rate)} |" if workers else ""))
    print("\nGB exclude the CUDA context and cuDNN workspaces (~1-2 GB). A step of batch B costs "
          "6 x GMAC x B GFLOP; images/s = peak x utilisation / (6 x MACs per image).")


if __name__ == "__main__":
    main()
