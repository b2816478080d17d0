"""What the training loop costs: ``vgg_lib.train.train()`` end to end against a bare PyTorch loop.

Both train the same small net (A, width 1/8, 32-pixel crops: the book's) for the same epochs on
the same pre-decoded ``shapes`` tensors with the same recipe: SGD with momentum and weight
decay, dropout, a validation pass per epoch. ``train()`` does everything a real run does: its
DataLoader, the per-image augmentation of Sect. 3.1 (S, crop, flip and colour shift drawn from
(seed, epoch, image)), uint8 batches normalised on the device, metrics, summary and a checkpoint
per epoch. The bare loop is what one writes by hand: the whole data set as one uint8 tensor,
each batch rescaled, cropped, flipped and colour-shifted with vectorised tensor ops.

    python benchmarks/train_loop.py [--device cuda] [--epochs 3] [--train-size 2048]

Prints a markdown table; the target is train() / bare >= 0.9 (the loop costs at most 10%).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VGG_LIB_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "vgg_lib"))
from vgg_lib.data.loaders import build_data  # noqa: E402
from vgg_lib.options import TrainConfig  # noqa: E402
from vgg_lib.train import train  # noqa: E402
from vgg_lib.models import init_weights, vgg  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(cfg: TrainConfig, device: torch.device) -> tuple[float, int]:
    """The hand-written loop; returns (seconds, training images)."""
    t0 = time.perf_counter()
    train_set, val_set, stats = build_data(cfg)
    images = torch.from_numpy(np.array(train_set.images)).to(device)  # pre-decoded uint8
    labels = torch.as_tensor(train_set.labels).long().to(device)
    mean = stats["mean"].float().to(device)
    eig = (stats["eigvec"] * stats["eigval"]).float().to(device) * 255.0  # P diag(lambda), pixels
    S, c, n, B = cfg.S, cfg.crop, len(images), cfg.batch_size
    # validation: centre crops at Q = S, prepared once
    val = F.interpolate(torch.from_numpy(np.array(val_set.images)).float().to(device), size=(S, S),
                        mode="bilinear", antialias=True, align_corners=False).round().clamp(0, 255)
    o = (S - c) // 2
    val = val[:, :, o:o + c, o:o + c] - mean.view(1, 3, 1, 1)
    val_labels = torch.as_tensor(val_set.labels).long().to(device)
    torch.manual_seed(cfg.seed)
    net = init_weights(vgg(cfg.config, num_classes=len(train_set.classes), width=cfg.width,
                           input_size=c, dropout=cfg.dropout, init=None), "normal", cfg.init_std).to(device)
    # the optimiser train() uses (fused SGD), so that the ratio measures the loop, not the kernel
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          fused=True)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    ar = torch.arange(c, device=device)
    for epoch in range(cfg.epochs):
        net.train()
        order = torch.randperm(n, device=device, generator=g)
        for s in range(0, n - B + 1, B):
            idx = order[s:s + B]
            x = F.interpolate(images[idx].float(), size=(S, S), mode="bilinear", antialias=True,
                              align_corners=False)
            top = torch.randint(0, S - c + 1, (B,), device=device, generator=g)
            left = torch.randint(0, S - c + 1, (B,), device=device, generator=g)
            rows = (top[:, None] + ar)[:, None, :, None]
            cols = (left[:, None] + ar)[:, None, None, :]
            x = x[torch.arange(B, device=device)[:, None, None, None], torch.arange(3, device=device)[:, None, None], rows, cols]
            flip = torch.rand(B, device=device, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            alpha = torch.randn(B, 3, device=device, generator=g) * cfg.colour_std
            x = x - (mean - alpha @ eig.T)[:, :, None, None]
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            hits = sum((net(val[i:i + B]).argmax(1) == val_labels[i:i + B]).sum() for i in range(0, len(val), B))
        float(hits)  # one read per epoch, as a real loop logs its accuracy
    sync(device)
    return time.perf_counter() - t0, cfg.epochs * (n // B) * B


def train_run(cfg: TrainConfig, device: torch.device) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        run = TrainConfig(**{**cfg.to_dict(), "run_dir": str(Path(tmp) / "run")})
        t0 = time.perf_counter()
        train(run)
        sync(device)
        return time.perf_counter() - t0, cfg.epochs * (cfg.train_size // cfg.batch_size) * cfg.batch_size


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--config", default="A")
    p.add_argument("--width", type=float, default=1 / 8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--val-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1],
                   help="loader workers of train() to measure (the bare loop has none)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA GPU is available on this machine")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = dict(config=args.config, width=args.width, epochs=args.epochs, train_size=args.train_size,
                val_size=args.val_size, batch_size=args.batch, progress=False, device=args.device,
                patience=args.epochs, amp="off")
    cfgs = {w: TrainConfig(**base, workers=w) for w in args.workers}
    build_data(cfgs[args.workers[0]])  # data and statistics cached before anything is timed
    best: dict[str, float] = {}
    images = 0
    for _ in range(args.rounds):  # interleaved, so load from other processes hits all alike
        seconds, images = bare_loop(cfgs[args.workers[0]], device)
        best["bare"] = min(best.get("bare", float("inf")), seconds)
        for w, cfg in cfgs.items():
            seconds, _ = train_run(cfg, device)
            best[w] = min(best.get(w, float("inf")), seconds)
    print(f"\n### train() end to end vs a bare loop: net {args.config} width {args.width:g}, crop 32, "
          f"batch {args.batch}, {args.epochs} epochs of {args.train_size} images (+{args.val_size} "
          f"validation), {args.device}, {torch.get_num_threads()} thread(s), best of {args.rounds}\n")
    print("| loop | seconds | training images/s | ratio to bare |\n| --- | ---: | ---: | ---: |")
    print(f"| bare PyTorch loop (pre-decoded tensor, vectorised augmentation) | {best['bare']:.2f} | "
          f"{images / best['bare']:.0f} | 1.00 |")
    for w in args.workers:
        print(f"| `train()`, workers={w} (loader, per-image augmentation, logging, checkpoints) | "
              f"{best[w]:.2f} | {images / best[w]:.0f} | **{best['bare'] / best[w]:.2f}** |")
    print("\nTarget: ratio >= 0.9. Seconds include everything each does: building the net, the data "
          "(from the cache), validation every epoch, and train()'s files.")


if __name__ == "__main__":
    main()
