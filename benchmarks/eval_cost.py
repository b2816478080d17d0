"""Cost per image of dense vs multi-crop evaluation (Sect. 3.2), measured beside multiply-adds.

The paper argues dense evaluation is cheaper than many crops because the crops overlap and a
fully-convolutional net shares that computation. Here both run on the same net (VGG-D with the
paper's 224 geometry, channels scaled by ``--width`` so it runs on a CPU) over a 3:4 image at
Q in {256, 384, 512}: dense = the whole image and its flip, multi-crop = 50 crops (5x5 grid and
flips). The multiply-adds of each are counted with forward hooks (conv and linear layers).

Target: multi-crop's measured time relative to dense is within 1.3x of its multiply-add ratio,
i.e. the crops are batched and pay no per-crop Python overhead.

    python benchmarks/eval_cost.py [--width 0.125] [--images 2] [--repeats 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from vgg_lib import evaluate as E
from vgg_lib.models import vgg

SCALES = (256, 384, 512)
TARGET = 1.3


def macs(net: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one forward pass of ``net`` on ``x`` (conv and linear layers)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out.numel() * k
        else:
            total += out.numel() * m.in_features

    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    with torch.no_grad():
        net(x.to(next(net.parameters()).device))
    for h in handles:
        h.remove()
    return total


def per_image_seconds(fns, images, repeats: int, clock) -> list[float]:
    """Best time per image of each function; calls interleaved so that load from other
    processes hits all of them alike."""
    best = [float("inf")] * len(fns)
    for r in range(repeats + 1):
        for i, fn in enumerate(fns):
            t = clock()
            fn(images)
            if r:  # the first round is a warm-up
                best[i] = min(best[i], clock() - t)
    return [b / len(images) for b in best]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=1 / 8, help="channel width of VGG-D (1 = paper)")
    ap.add_argument("--images", type=int, default=2, help="images per timed call")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats (the best is kept)")
    ap.add_argument("--height", type=int, default=384, help="image height (width is 4/3 of it)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; with 1 the CPU time of this thread is measured, which "
                         "other processes on a shared machine barely disturb (more: wall clock)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where the net runs (cuda: wall-clock time; results come back to the CPU, "
                         "which waits for the GPU)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA GPU is available on this machine")
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 and args.device == "cpu" else time.perf_counter

    torch.manual_seed(0)
    # He init keeps activations O(1) through 16 layers, as in a trained net (the paper's
    # N(0, 0.01^2) shrinks them into denormal floats, which are slow on CPUs).
    model = vgg("D", width=args.width, init="kaiming").eval().to(args.device)
    crop = model.input_size
    fcn = E.fcn_of(model)
    images = torch.randn(args.images, 3, args.height, args.height * 4 // 3)

    rows, totals = [], [0.0, 0.0, 0, 0]
    for q in SCALES:
        h, w = E.rescaled_size(args.height, args.height * 4 // 3, q)
        mac_dense = 2 * macs(fcn, torch.zeros(1, 3, h, w))        # image and its flip
        mac_crops = 50 * macs(model, torch.zeros(1, 3, crop, crop))  # 25 crops and their flips
        fns = [lambda x: E.dense(model, x, q), lambda x: E.multi_crop(model, x, q)]
        t_dense, t_crops = per_image_seconds(fns, images, args.repeats, clock)
        rows.append((f"{q} ({h}x{w})", t_dense, t_crops, mac_dense, mac_crops))
        totals = [a + b for a, b in zip(totals, (t_dense, t_crops, mac_dense, mac_crops))]
    rows.append(("all three (150 crops)", *totals))

    print(f"VGG-D, width {args.width:g}, crop {crop}, {args.images} images of "
          f"{args.height}x{args.height * 4 // 3}, best of {args.repeats}, "
          f"{torch.get_num_threads()} thread(s), {args.device}, "
          f"{'CPU' if clock is time.thread_time else 'wall-clock'} time\n")
    print("| Q | dense ms/img | multi-crop ms/img | time ratio | dense GMAC | multi-crop GMAC "
          "| MAC ratio | time ratio / MAC ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for name, td, tc, md, mc in rows:
        rt, rm = tc / td, mc / md
        worst = max(worst, rt / rm, rm / rt)
        print(f"| {name} | {1e3 * td:.1f} | {1e3 * tc:.1f} | {rt:.2f} | {md / 1e9:.2f} | "
              f"{mc / 1e9:.2f} | {rm:.2f} | {rt / rm:.2f} |")
    verdict = "met" if worst <= TARGET else "NOT met"
    print(f"\nTarget (multi-crop's time ratio within {TARGET}x of its MAC ratio): {verdict}, "
          f"worst factor {worst:.2f}")


if __name__ == "__main__":
    main()
