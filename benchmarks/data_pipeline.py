"""Benchmark: the paper's training pre-processing (Sect. 3.1) on photographs, through a DataLoader.

The JPEGs are real photographs: scikit-image's bundled ones (astronaut, coffee, rocket, the
Hubble deep field, ...), cut at random and re-encoded at ImageNet's usual sizes (500x375,
375x500, 500x333, 640x480; quality 90). Both pipelines run in a real ``DataLoader`` with the
same workers and batch, and end with a float32 batch on ``--device``:

* ``vgg_lib``: what ``train()`` runs: the image folder decoding to uint8 (at a reduced size
  when S allows), per batch S in [256, 512], the crop window resized to 224, flip, colour
  shift drawn per image; uint8 crops cross to the device and are normalised there;
* reference: the textbook torchvision pipeline on PIL images (open, resize the whole image to
  S, random crop, flip, to-tensor, normalise; no colour shift), float32 batches to the device.

    python benchmarks/data_pipeline.py [--images 256] [--workers 1 2] [--device cuda]

Prints markdown tables; the target is a ratio of at least 1.5x per worker. Also times drawing
10,000 64x64 ``shapes``.
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
from PIL import Image
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vgg_lib.data import build_dataset, train_transform  # noqa: E402
from vgg_lib.data.shapes import generate  # noqa: E402
from vgg_lib.data.loaders import _Augmented, _collate  # noqa: E402  (what train() runs)
from vgg_lib.loop import _to_device  # noqa: E402

SMIN, SMAX, CROP = 256, 512, 224
# ImageNet's statistics as used by AlexNet-style code (eigenvalues for RGB in [0, 1])
MEAN = [123.68, 116.78, 103.94]
EIGVAL = [0.2175, 0.0188, 0.0045]
EIGVEC = [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
SIZES = [(500, 375), (375, 500), (500, 333), (640, 480)]  # (width, height), ImageNet's common ones
PHOTOS = ["astronaut", "coffee", "rocket", "chelsea", "hubble_deep_field", "immunohistochemistry",
          "retina", "camera", "brick", "gravel", "grass", "moon", "clock", "coins"]


def make_jpegs(folder: Path, n: int, classes: int = 4, seed: int = 0) -> None:
    """``n`` photograph JPEGs in ``folder/train/<class>/``: random windows of scikit-image's
    bundled photographs, resized to an ImageNet size (grey ones repeated to RGB)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = []
    for name in PHOTOS:
        x = np.asarray(getattr(skimage.data, name)())
        photos.append(np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x[..., :3])
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        width, height = SIZES[rng.integers(len(SIZES))]
        # a window with the target's aspect ratio covering 60-100% of the photograph's side
        scale = rng.uniform(0.6, 1.0)
        ww = int(min(w, h * width / height) * scale)
        wh = int(ww * height / width)
        top, left = rng.integers(0, h - wh + 1), rng.integers(0, w - ww + 1)
        window = Image.fromarray(img[top:top + wh, left:left + ww]).resize((width, height), Image.BILINEAR)
        d = folder / "train" / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        window.save(d / f"{i:05d}.jpg", quality=90)


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


def rate(loader, device, epochs, to_device) -> float:
    """Images/s of ``epochs`` passes over ``loader``, each batch made a float32 tensor on
    ``device``; the loader's workers start before the clock (they persist in training)."""
    it = iter(loader)
    first = next(it)
    n, t = 0, time.perf_counter()
    for e in range(epochs):
        for batch in (it if e == 0 else loader):
            x = to_device(batch)
            n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    del first
    return n / (time.perf_counter() - t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=2, help="passes over the images per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best is kept")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shapes", type=int, default=10_000, help="shapes to draw (0: skip)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA GPU is available on this machine")
    if args.images < args.batch:
        sys.exit(f"error: --images {args.images} must be at least --batch {args.batch}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device(args.device)
    pin = device.type == "cuda"

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_jpegs(root, args.images)
        folder = build_dataset("imagefolder", "train", root)
        ours = _Augmented(folder, train_transform((SMIN, SMAX), CROP, MEAN, EIGVAL, EIGVEC), seed=0)
        ref = ReferenceDataset([p for p, _ in folder.samples])
        keys = [(0, i) for i in range(len(ours))]
        batches = [keys[s:s + args.batch] for s in range(0, len(keys) - args.batch + 1, args.batch)]
        rows = []
        for w in args.workers:
            common = dict(num_workers=w, pin_memory=pin, persistent_workers=w > 0)
            ours_loader = torch.utils.data.DataLoader(ours, batch_sampler=batches, collate_fn=_collate, **common)
            ref_loader = torch.utils.data.DataLoader(ref, batch_size=args.batch, shuffle=True, drop_last=True,
                                                     **common)
            best = [0.0, 0.0]
            for _ in range(args.repeats):  # interleaved so that a busy machine slows both
                best[0] = max(best[0], rate(ref_loader, device, args.epochs,
                                            lambda b: b[0].to(device, non_blocking=True)))
                best[1] = max(best[1], rate(ours_loader, device, args.epochs,
                                            lambda b: _to_device(b[0], b[1], device, 1.0)))
            rows.append((w, *best))
            del ours_loader, ref_loader

    sizes = ", ".join(f"{w}x{h}" for w, h in SIZES)
    print(f"\n### Training transform through a DataLoader: {args.images} photographs ({sizes}, "
          f"JPEG q90), S in [{SMIN}, {SMAX}], crop {CROP}, batch {args.batch}, to {args.device}, "
          f"one thread per process, best of {args.repeats}\n")
    print("| workers | torchvision reference (PIL) images/s | vgg_lib images/s | per worker: reference "
          "| per worker: vgg_lib | **ratio** |\n| ---: | ---: | ---: | ---: | ---: | ---: |")
    for w, r, o in rows:
        k = max(w, 1)
        print(f"| {w} | {r:.0f} | {o:.0f} | {r / k:.0f} | {o / k:.0f} | **{o / r:.2f}x** |")
    print("\nTarget: >= 1.5x per worker.")

    if args.shapes:
        t = time.perf_counter()
        generate(args.shapes, image_size=64, seed=0)
        dt = time.perf_counter() - t
        print(f"\n### Drawing `shapes`, one thread\n\n| images | size | seconds | images/s |\n"
              "| ---: | --- | ---: | ---: |\n"
              f"| {args.shapes} | 64x64 | {dt:.2f} | {args.shapes / dt:.0f} |")
        print("\n(target: 10,000 images in under 30 s)")


if __name__ == "__main__":
    main()
