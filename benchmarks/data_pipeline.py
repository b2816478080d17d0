"""Benchmark: the paper's training pre-processing (Sect. 3.1) on ImageNet-sized JPEGs.

S drawn from [256, 512] per image, random 224 crop, horizontal flip, RGB colour shift, mean
subtraction; one worker, one thread. ``vgg_lib.data`` (JPEG decoding to a uint8 tensor, only
the crop window resized, uint8 ops until the final float conversion) against a plain
torchvision pipeline doing the same steps on PIL images (open, resize the whole image to S,
random crop, flip, to-tensor, normalise). Also times drawing 10,000 64x64 ``shapes``.

    python benchmarks/data_pipeline.py [--images 200] [--repeats 3]

Prints markdown tables; the target is a ratio of at least 1.5x.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

from vgg_lib.data import build_dataset, train_transform
from vgg_lib.data.shapes import generate

SMIN, SMAX, CROP = 256, 512, 224
# ImageNet's statistics as used by AlexNet-style code (eigenvalues for RGB in [0, 1])
MEAN = [123.68, 116.78, 103.94]
EIGVAL = [0.2175, 0.0188, 0.0045]
EIGVEC = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]


def make_jpegs(folder: Path, n: int, width=500, height=375, classes=4):
    """ImageNet-sized JPEGs (quality 90) with real structure: big renders of ``shapes``."""
    images, labels = generate(n, image_size=width, seed=123)
    for i, (x, y) in enumerate(zip(images, labels)):
        d = folder / "train" / f"class{y % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x.transpose(1, 2, 0)[:height]).save(d / f"{i:04d}.jpg", quality=90)


class ReferenceDataset(torch.utils.data.Dataset):
    """The textbook torchvision pipeline on PIL images."""

    def __init__(self, files):
        self.files = files
        self.t = T.Compose([
            T.RandomChoice([T.Resize(s) for s in range(SMIN, SMAX + 1)]),  # S ~ U[256, 512]
            T.RandomCrop(CROP),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize([m / 255 for m in MEAN], [1 / 255] * 3),  # 0..255 minus the mean
        ])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return self.t(im.convert("RGB")), 0


def images_per_second(ds):
    t = time.perf_counter()
    for i in range(len(ds)):
        x, _ = ds[i]
    assert x.shape == (3, CROP, CROP)
    return len(ds) / (time.perf_counter() - t)


def best_of(pipelines, repeats):
    """Best rate of each pipeline, the runs interleaved so that a busy machine slows both."""
    best = [0.0] * len(pipelines)
    for _ in range(repeats):
        for k, ds in enumerate(pipelines):
            best[k] = max(best[k], images_per_second(ds))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", type=int, default=10_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_jpegs(root, args.images)
        ours = build_dataset("imagefolder", "train", root,
                             transform=train_transform((SMIN, SMAX), CROP, MEAN, EIGVAL, EIGVEC))
        ref = ReferenceDataset([p for p, _ in ours.samples])
        ref_ips, ours_ips = best_of([ref, ours], args.repeats)

    print(f"\n### Training transform, {args.images} JPEGs of 500x375, S in [{SMIN}, {SMAX}], "
          f"crop {CROP}, one thread\n")
    print("| pipeline | images/s |\n| --- | ---: |")
    print(f"| torchvision reference (PIL, resize whole image, crop, flip, to-tensor, normalise) "
          f"| {ref_ips:.1f} |")
    print("| vgg_lib.data (decode to uint8, resized crop, flip, colour shift, mean) "
          f"| {ours_ips:.1f} |")
    print(f"| **ratio** | **{ours_ips / ref_ips:.2f}x** (target >= 1.5x) |")

    t = time.perf_counter()
    images, _ = generate(args.shapes, image_size=64, seed=0)
    dt = time.perf_counter() - t
    print(f"\n### Drawing `shapes`, one thread\n\n| images | size | seconds | images/s |\n"
          "| ---: | --- | ---: | ---: |\n"
          f"| {args.shapes} | 64x64 | {dt:.2f} | {args.shapes / dt:.0f} |")
    print("\n(target: 10,000 images in under 30 s)")


if __name__ == "__main__":
    main()
