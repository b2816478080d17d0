"""The training recipe of Sect. 3.1 and the synchronous multi-GPU training of Sect. 3.3.

``train(cfg)`` runs the whole recipe and writes a *run folder* (``vgg_lib.runs``); its epochs
are ``fit``, the one SGD loop of the project (``transfer.fine_tune`` and the localisation nets use
it too)::

    params.json     the TrainConfig (plus what was derived from it: S, Q, classes, ...)
    metrics.csv     one row per epoch: losses, top-1/top-5 errors, lr, images/s, seconds
    summary.json    status (running / finished / failed), best epoch, final errors
    checkpoint.pt   model, optimizer, LR schedule, RNG states, epoch, mean RGB, preprocessing

The recipe (Sect. 3.1): mini-batch SGD, batch 256, momentum 0.9, weight decay 5e-4, dropout
0.5 on fc6 and fc7, learning rate 1e-2 divided by 10 when the validation accuracy stops
improving; the paper's lr was decreased three times and learning stopped. Training images are
rescaled isotropically so the smallest side is S (fixed, or drawn from [Smin, Smax]: scale
jittering), randomly cropped, flipped and colour-shifted (``vgg_lib.data``). Deep nets start
from net A's layers (``init="from_run"``) or from Glorot initialisation.

Every knob is a field of ``TrainConfig``; the same code runs in the book on a CPU (width 1/8
nets on 32-pixel crops of the built-in ``shapes`` data) and as a full-scale ImageNet job::

    torchrun --nproc_per_node 8 -m vgg_lib.train --config D --dataset imagefolder \\
        --data-root /data/imagenet --crop 224 --S 256 --width 1 --device cuda --workers 8 \\
        --init from_run --init_source runs/A-256

On a GPU the loop keeps the host out of the way: batches cross to the device as uint8 crops
and are normalised there, losses and accuracies are summed on the device and read once every
``SYNC_EVERY`` steps, and a step with a non-finite loss is skipped on the device (the run is
then stopped as diverged at the next read, keeping its last good checkpoint).

Reproducibility: the order of the images in an epoch comes from ``(seed, epoch)`` and the
random augmentation of an image from ``(seed, epoch, index)``, so the data a step sees do not
depend on the number of loader workers or processes, and a run killed at any moment resumes
from its last checkpoint to the same final weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checks import ConfigError, boolean, numeric, read_json
from .configs import resolve
from .models import VGG, init_from, init_weights, vgg
from .runs import (RUN_FILES, RUNTIME_FIELDS, UNITS, Run, load_checkpoint, load_run, read_summary,  # noqa: F401
                   run_failure, run_name, runs_root, save_checkpoint, status, write_csv, write_json)

INIT_CHOICES = ("normal", "glorot", "from_run")
DEVICE_CHOICES = ("cpu", "cuda", "auto")
AMP_CHOICES = ("bf16", "fp16", "off")
MAX_WORKERS = 8  # default loader workers per GPU: enough to decode ~1000 ImageNet JPEGs/s
SYNC_EVERY = 50  # steps between reads of the device's loss sums (divergence check, progress bar)
PAPER_S = 256  # the paper's smallest fixed training scale (Sect. 3.1), rescaled with the crop


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the paper's recipe (Sect. 3.1), with the
    geometry scaled down to 32-pixel crops for the small built-in data."""

    config: str = _f("A", "network configuration of Table 1: A, A-LRN, B, C, D, E, B-5x5 (or vgg11/13/16/19)")
    dataset: str = _f("shapes", "shapes | shapes_centred | digits | fashion_mnist | cifar10 | imagefolder")
    data_root: str | None = _f(None, "folder of the data (imagefolder: root/train/<class>/*, root/val/<class>/*)")
    download: bool = _f(False, "let torchvision download cifar10 into data_root")
    image_size: int | None = _f(None, "shapes: side at which images are drawn (None: 64)")
    train_size: int | None = _f(None, "number of training images (None: all of the data set)")
    val_size: int | None = _f(None, "number of validation images (None: all of the data set)")
    skip_corrupt: bool = _f(False, "imagefolder: skip unreadable images (counted) instead of failing")
    epochs: int = _f(74, "maximum number of epochs (the paper stopped after 370K iterations, 74 epochs); a run stopped by this cap goes on when started again with a larger one")
    batch_size: int = _f(256, "global mini-batch size (Sect. 3.1: 256)")
    micro_batch: int | None = _f(None, "images per forward pass; gradients are accumulated up to batch_size")
    lr: float = _f(1e-2, "initial learning rate (Sect. 3.1: 1e-2; 1e-3 when starting from a trained run)")
    momentum: float = _f(0.9, "SGD momentum (Sect. 3.1: 0.9)")
    weight_decay: float = _f(5e-4, "L2 penalty multiplier (Sect. 3.1: 5e-4)")
    dropout: float = _f(0.5, "dropout ratio of fc6 and fc7 (Sect. 3.1: 0.5)")
    patience: int = _f(2, "epochs without a better val accuracy before lr is divided by 10 (not given in the paper)")
    lr_factor: float = _f(0.1, "lr multiplier at each plateau (Sect. 3.1: 0.1)")
    max_decreases: int = _f(3, "lr decreases before training stops at the next plateau (Sect. 3.1: 3)")
    S: int | list | None = _f(None, "training scale: int (fixed S) or [Smin, Smax] (jittering); None: 256 scaled to the crop")
    crop: int = _f(32, "training crop side, the network input size (paper: 224)")
    flip: bool = _f(True, "random horizontal flips (Sect. 3.1)")
    colour_std: float = _f(0.1, "std of the random RGB colour shift (the PCA lighting of AlexNet; 0 turns it off)")
    pixel_scale: float = _f(1.0, "pixels are (0..255 - mean RGB) * pixel_scale (paper: 1)")
    width: float = _f(1.0, "channel multiplier of every layer (1: the paper; 1/8 trains on a CPU)")
    pools: int = _f(5, "max-poolings kept, from the first (5: the paper; 3: the miniature of the book, a 4x4 pool5 at crop 32)")
    batch_norm: bool = _f(False, "add batch normalisation after every conv (not in the paper)")
    init: str = _f("normal", "normal | glorot | from_run (first four convs and the FC layers of init_source)")
    init_std: float = _f(0.01, "std of the normal initialisation")
    init_source: str | None = _f(None, "run folder of a trained net A, for init from_run")
    init_run: str | None = _f(None, "run folder of a trained net of the same config: copy all its weights")
    seed: int = _f(0, "seed of the initialisation, the data order and the augmentation")
    device: str = _f("auto", "cpu | cuda | auto")
    workers: int | None = _f(None, "data-loader worker processes per process (0: load in the main process); "
                                   "None: 0 on cpu, min(8, CPUs per GPU) on cuda")
    compile: bool = _f(False, "torch.compile the network")
    amp: str | None = _f(None, "mixed precision: bf16 | fp16 (with a gradient scaler) | off; "
                               "None: bf16 on cuda and on a CPU with native bf16 (AVX512-BF16 or AMX), "
                               "off on other CPUs")
    progress: bool = _f(True, "show tqdm progress bars")
    max_steps: int | None = _f(None, "stop after this many SGD steps in total (for tests)")
    run_dir: str | None = _f(None, "run folder (None: ROOT/<config>-<dataset>-<hash of the parameters>)")
    root: str | None = _f(None, "parent of the run folder when run_dir is None ($VGG_LIB_RUNS or ./runs)")

    def __post_init__(self):
        for f in dataclasses.fields(self):  # "false" from papermill must not switch a flag on
            if f.type == "bool":
                setattr(self, f.name, boolean(f.name, getattr(self, f.name)))
        try:
            self.config = resolve(self.config)
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None
        from .data import DATASETS
        if self.dataset not in DATASETS:
            self._bad("dataset", f"one of {', '.join(DATASETS)}")
        self._check_numbers()
        if self.run_dir is not None:
            path = Path(self.run_dir).expanduser()
            if path.exists() and not path.is_dir():
                self._bad("run_dir", "a folder (new, or holding a run of these parameters); that path is a file")
        self.S = self._check_scale()
        for name, choices in (("init", INIT_CHOICES), ("device", DEVICE_CHOICES)):
            if getattr(self, name) not in choices:
                self._bad(name, f"one of {', '.join(choices)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            self._bad("device", "cpu or auto: no CUDA GPU is available on this machine")
        if self.amp is not None and self.amp not in AMP_CHOICES:
            self._bad("amp", f"one of {', '.join(AMP_CHOICES)} or None (bf16 on cuda and on a CPU with "
                                 "native bf16, off on other CPUs)")
        self._check_data_root()
        if self.init == "from_run":
            if self.init_source is None:
                self._bad("init_source", "the run folder of a trained net A when init='from_run'")
            self._check_source("init_source", same_config=False)
        elif self.init_source is not None:
            self._bad("init_source", "None unless init='from_run'")
        if self.init_run is not None:
            self._check_source("init_run", same_config=True)

    def _bad(self, name, allowed):
        raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

    def _integer(self, name, low, none_ok=False):
        v = numeric(getattr(self, name))
        if v is None and none_ok:
            return
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            self._bad(name, f"an integer >= {low}" + (" or None" if none_ok else ""))
        setattr(self, name, v)

    def _number(self, name, ok, allowed):
        v = numeric(getattr(self, name))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(float(v)):
            self._bad(name, allowed)
        setattr(self, name, float(v))

    def _check_numbers(self):
        """Every numeric field with its type and range; strings like "8" or "1e-3" (papermill,
        YAML) become numbers."""
        for name in ("epochs", "batch_size", "crop"):
            self._integer(name, 32 if name == "crop" else 1)
        for name in ("micro_batch", "train_size", "val_size", "max_steps"):
            self._integer(name, 1, none_ok=True)
        self._integer("image_size", 8, none_ok=True)
        for name in ("patience", "max_decreases", "seed"):
            self._integer(name, 0)
        self._integer("workers", 0, none_ok=True)
        self._integer("pools", 0)
        if self.pools > 5:
            self._bad("pools", "an integer in [0, 5] (the paper: 5)")
        for name, ok, allowed in (
                ("lr", lambda v: v > 0, "a number > 0 (the paper: 1e-2)"),
                ("momentum", lambda v: 0 <= v < 1, "a number in [0, 1) (the paper: 0.9)"),
                ("weight_decay", lambda v: v >= 0, "a number >= 0 (the paper: 5e-4)"),
                ("dropout", lambda v: 0 <= v < 1, "a number in [0, 1) (the paper: 0.5)"),
                ("lr_factor", lambda v: 0 < v < 1, "a number in (0, 1) (the paper: 0.1)"),
                ("colour_std", lambda v: v >= 0, "a number >= 0"),
                ("pixel_scale", lambda v: v > 0, "a number > 0"),
                ("width", lambda v: v > 0, "a number > 0 (1 for the paper, 0.125 for a CPU)"),
                ("init_std", lambda v: v > 0, "a number > 0")):
            self._number(name, ok, allowed)
        if self.micro_batch is not None and self.micro_batch > self.batch_size:
            self._bad("micro_batch", f"an integer in [1, batch_size={self.batch_size}] or None")
        if self.train_size is not None and self.train_size < self.batch_size:
            self._bad("train_size", f"an integer >= batch_size={self.batch_size} (every step takes one full "
                                    "batch) or None")

    def _check_scale(self):
        from .data import scaled_size
        s = self.S
        if s is None:
            return scaled_size(PAPER_S, self.crop)
        if isinstance(s, str):  # from a command line or papermill: "256" or "256,512" or "[256, 512]"
            try:
                s = [int(p) for p in s.strip("[]() ").replace(",", " ").split()]
            except ValueError:
                s = None
        if isinstance(s, (list, tuple)) and len(s) == 1:
            s = s[0]
        allowed = f"an integer >= crop={self.crop} or [Smin, Smax] with crop <= Smin <= Smax"
        if isinstance(s, (list, tuple)):
            if len(s) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in s):
                raise ConfigError(f"S={self.S!r} is not allowed: {allowed}")
            if s[0] > s[1]:
                raise ConfigError(f"S={self.S!r} has Smin > Smax: {allowed}")
            if s[0] < self.crop:
                raise ConfigError(f"S={self.S!r}: Smin is smaller than the crop; {allowed}")
            return list(s) if s[0] < s[1] else s[0]
        if not isinstance(s, int) or isinstance(s, bool) or s < self.crop:
            raise ConfigError(f"S={self.S!r} is not allowed: {allowed}")
        return s

    def _check_data_root(self):
        if self.dataset == "imagefolder":
            from .data.datasets import check_training_classes, find_classes
            try:
                find_classes(self.data_root)
            except ValueError as e:
                raise ConfigError(f"data_root={self.data_root!r} is not allowed: {e}") from None
            val = Path(self.data_root) / "val"
            if not val.is_dir() or not any(p.is_dir() for p in val.iterdir()):
                raise ConfigError(f"data_root={self.data_root!r} has no class folders in val/: "
                                  "imagefolder needs root/train/<class>/* and root/val/<class>/*")
            try:
                check_training_classes(self.data_root)
            except ValueError as e:
                raise ConfigError(f"data_root={self.data_root!r} is not allowed: {e}") from None
        elif self.data_root is not None and not self.download and not Path(self.data_root).expanduser().is_dir():
            raise ConfigError(f"data_root={self.data_root!r} does not exist: give an existing folder or None")

    def _check_source(self, name, same_config):
        path = Path(getattr(self, name)).expanduser()
        what = "the run folder of a finished training run" + (f" of config {self.config}" if same_config else "")
        if not (path / "checkpoint.pt").is_file() or not (path / "params.json").is_file():
            raise ConfigError(f"{name}={str(path)!r} is not allowed: no checkpoint.pt/params.json there; "
                              f"expected {what}")
        p = read_json(path / "params.json")
        state = status(path)
        if state != "finished":
            raise ConfigError(f"{name}={str(path)!r} is not allowed: that run is {state or 'not started'}, "
                              f"not finished; expected {what}")
        if same_config and p.get("config") != self.config:
            raise ConfigError(f"{name}={str(path)!r} is a run of config {p.get('config')}, but config="
                              f"{self.config!r}: expected {what}")
        from .data.datasets import SHAPES_FRAMING as shapes_framings
        for key in ("dataset", "crop", "width", "batch_norm", "pools"):
            theirs = p.get(key, 5) if key == "pools" else p.get(key)  # runs before `pools` had 5
            if key == "dataset" and {theirs, self.dataset} <= set(shapes_framings):
                continue  # both framings of shapes have the same ten classes
            if theirs != getattr(self, key):
                raise ConfigError(f"{name}={str(path)!r} was trained with {key}={theirs!r} but this run "
                                  f"has {key}={getattr(self, key)!r}: the weights would not fit")

    # -- derived values ----------------------------------------------------------------------
    @property
    def test_scale(self) -> int:
        """Q used for validation during training: S, or (Smin + Smax) / 2 when jittering (Sect. 4.1)."""
        return self.S if isinstance(self.S, int) else (self.S[0] + self.S[1]) // 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields that decide what a run computes (not how fast)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def resolved_run_dir(self) -> Path:
        if self.run_dir is not None:
            return Path(self.run_dir).expanduser()
        return runs_root(self.root) / run_name(self.identity(), (self.config, self.dataset, f"s{self.seed}"))


# --- the learning-rate schedule (Sect. 3.1) -------------------------------------------------

class Schedule:
    """"The learning rate was initially set to 10^-2, and then decreased by a factor of 10 when
    the validation set accuracy stopped improving. In total, the learning rate was decreased
    3 times, and the learning was stopped" (Sect. 3.1).

    ``ReduceLROnPlateau(mode="max")`` on the validation accuracy; once the lr has been
    decreased ``max_decreases`` times, the next plateau stops training (``step`` returns True)
    instead of decreasing it again.
    """

    def __init__(self, optimizer, factor=0.1, patience=2, max_decreases=3):
        self.optimizer = optimizer
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=factor, patience=patience)
        self.max_decreases = max_decreases
        self.decreases = 0

    def lrs(self):
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self, val_accuracy: float) -> bool:
        before = self.lrs()
        self.plateau.step(val_accuracy)
        if self.lrs() < before:
            if self.decreases == self.max_decreases:  # a plateau at the last lr: stop
                for g, lr in zip(self.optimizer.param_groups, before):
                    g["lr"] = lr
                return True
            self.decreases += 1
        return False

    def state_dict(self):
        return {"plateau": self.plateau.state_dict(), "decreases": self.decreases}

    def load_state_dict(self, state):
        self.plateau.load_state_dict(state["plateau"])
        self.decreases = state["decreases"]


# --- data ------------------------------------------------------------------------------------

def _mix(*numbers) -> int:
    return int.from_bytes(hashlib.blake2b(repr(numbers).encode(), digest_size=8).digest(), "little") >> 1


class _Augmented(torch.utils.data.Dataset):
    """Item ``(epoch, i)`` of the training set, augmented with a random generator seeded by
    ``(seed, epoch, i)``: the same image gets the same crop, flip and colour shift however many
    workers or processes load it, and again after a resume. Items are ``(uint8 crop, offset,
    label)``: ``vgg_lib.data.normalise`` finishes the transform on the training device."""

    def __init__(self, base, transform, seed):
        self.base, self.transform, self.seed = base, transform, seed
        _hint_size(base, transform)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        epoch, i = key
        image, label = self.base[i]
        return *self.transform.split(image, torch.Generator().manual_seed(_mix(self.seed, epoch, i))), label

    def __getitems__(self, keys):
        # What a DataLoader calls for a whole batch: the transform batches its rescaling, and
        # the batch comes out collated already (see _collate).
        items = [self.base[i] for _, i in keys]
        gens = [torch.Generator().manual_seed(_mix(self.seed, epoch, i)) for epoch, i in keys]
        crops, offsets = self.transform.split_many([x for x, _ in items], gens)
        return _Batch((crops, offsets, torch.as_tensor([int(y) for _, y in items], dtype=torch.long)))


class _Batch(tuple):
    """A batch that ``_Augmented.__getitems__`` already stacked."""


def _collate(items):
    return items if isinstance(items, _Batch) else torch.utils.data.default_collate(items)


class _Transformed(torch.utils.data.Dataset):
    """Validation items ``(uint8 crop, mean, label)``, normalised on the device as above."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform
        _hint_size(base, transform)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return *self.transform.split(image), label


def _hint_size(base, transform):
    """Let an image folder decode its JPEGs at reduced scale, down to the largest side the
    transform needs (``ImageFolder.decode_size``): much faster on ImageNet-sized files."""
    if getattr(base, "name", None) == "imagefolder" and base.decode_size is None:
        base.decode_size = transform.max_size


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1):
    """This process's share of every global batch of an epoch (Sect. 3.3: "each batch of
    training images is split into several GPU batches"). The order depends only on
    ``(seed, epoch)``; a last incomplete batch is dropped so every step has ``batch_size`` images."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch))).tolist()
    return [[(epoch, i) for i in order[s:s + batch_size][rank::world]]
            for s in range(0, n - batch_size + 1, batch_size)]


class EpochBatches:
    """``epoch_batches`` as a DataLoader ``batch_sampler`` whose epoch is set before each pass,
    so one loader (and its persistent workers) serves every epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_batches(self.n, self.batch_size, self.seed, self.epoch, self.rank, self.world))

    def __len__(self):
        return self.n // self.batch_size


def build_data(cfg: TrainConfig):
    """Training and validation sets (uint8 images) and the training-set RGB statistics.

    Under torchrun only rank 0 computes the statistics (10,000 decoded JPEGs on ImageNet) and
    sends them to the others."""
    from . import data
    common = dict(root=cfg.data_root, image_size=cfg.image_size, download=cfg.download,
                  skip_corrupt=cfg.skip_corrupt)
    train_set = data.build_dataset(cfg.dataset, "train", size=cfg.train_size, **common)
    val_set = data.build_dataset(cfg.dataset, "val", size=cfg.val_size, **common)
    if not cfg.skip_corrupt:  # a file that is not an image fails now, not after an epoch
        for ds in (train_set, val_set):
            if hasattr(ds, "check_headers"):
                try:
                    ds.check_headers()
                except ValueError as e:
                    raise ConfigError(str(e)) from None
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [data.rgb_statistics(train_set) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return train_set, val_set, box[0]
    return train_set, val_set, data.rgb_statistics(train_set)


def default_workers(device: torch.device) -> int:
    """Loader workers per process when ``workers=None``: none on the CPU (the training
    process has the cores), else the CPUs this process may use shared among the GPUs of the
    machine, at most ``MAX_WORKERS``."""
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpus = int(os.environ.get("LOCAL_WORLD_SIZE") or torch.cuda.device_count() or 1)
    return max(1, min(MAX_WORKERS, cpus // gpus))


# --- checkpoints -----------------------------------------------------------------------------

# Random streams and resume at any world size. The data a step sees come from (seed, epoch,
# index), and each process's dropout stream (CPU and its own GPU) is reseeded at the start of
# every epoch from (seed, rank, epoch): nothing per-process or per-GPU has to be saved, so a
# run resumes with more or fewer processes, or GPUs, than it was saved with. The checkpoint
# keeps rank 0's host streams (loader generator, Python, NumPy), which every process restores.

def _dropout_seed(seed: int, rank: int, epoch: int) -> int:
    return _mix(seed, "dropout", rank, epoch)


def _rng_state(loader_generator: torch.Generator) -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "loader": loader_generator.get_state()}


def _set_rng_state(state, loader_generator: torch.Generator) -> None:
    if isinstance(state, list):  # checkpoints before resume at any world size: one per rank
        state = state[0]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, g = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, g))
    loader_generator.set_state(state["loader"])
    # No CUDA state: older checkpoints held one per visible GPU, which fails on another machine.


# --- run folders -----------------------------------------------------------------------------

METRICS = ["epoch", "train_loss", "train_top1_err", "train_top5_err", "val_top1_err", "val_top5_err",
           "lr", "images_per_s", "seconds"]


def _summary(status, history, **extra) -> dict:
    s = {"status": status, "units": UNITS, "epochs_done": len(history)}
    if history:
        best = min(history, key=lambda r: r["val_top1_err"])
        last = history[-1]
        s.update(best_epoch=best["epoch"], best_val_top1_err=best["val_top1_err"],
                 **{k: last[k] for k in METRICS[1:7]},
                 seconds=round(sum(r["seconds"] for r in history), 2),
                 images_per_s=round(float(np.mean([r["images_per_s"] for r in history])), 1))
    s.update(extra)
    return s


# --- the loop: fit ------------------------------------------------------------------------------
# One loop serves every training of the project: train() (a run folder, resume, torchrun),
# transfer.fine_tune and the localisation nets. It is SGD with the plateau schedule of Sect. 3.1
# over loaders of (inputs, targets) batches; what differs between those uses is passed in:
# the loss, what counts as a correct prediction, how a batch reaches the device.

def topk_correct(outputs: torch.Tensor, targets: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Correct top-1 and top-k predictions of a batch, ``[hits1, hitsk]`` on the device (no
    host sync; ``evaluate.topk_error`` is the same count on posteriors already on the host)."""
    hit = outputs.topk(min(k, outputs.shape[1]), dim=1).indices == targets[:, None]
    return torch.stack([hit[:, 0].sum(), hit.any(dim=1).sum()])


def cross_entropy_sum(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The classification loss of Sect. 3.1 (multinomial logistic regression), summed over the
    batch: ``fit`` divides by the global batch size, so micro-batches and processes add up."""
    return F.cross_entropy(outputs.float(), targets, reduction="sum")


def sgd(parameters, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.optim.SGD:
    """Mini-batch SGD with momentum and weight decay (Sect. 3.1). PyTorch's rule is v = m v + g,
    w -= lr v (Caffe's: v = m v + lr g): the same at a constant lr. Fused: one kernel for all
    parameters, and it can skip a step on the device (``_sgd_step``)."""
    return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)


@dataclass
class Loop:
    """How the steps run -- what changes the speed of a training, not its result."""

    device: torch.device = torch.device("cpu")
    rank: int = 0
    world: int = 1
    amp: str = "off"  # bf16 | fp16 | off
    micro_batch: int | None = None  # images per forward pass; gradients accumulate to the batch
    max_steps: int | None = None  # stop after this many steps in total (tests)
    progress: bool = False
    seed: int = 0  # dropout masks of epoch e come from (seed, rank, e): resumable anywhere
    pixel_scale: float = 1.0  # of uint8 batches normalised on the device
    dtype: torch.dtype | None = None  # of the inputs, when the model's is not float32
    channels_last: bool = False  # NHWC batches (the model converted by the caller): faster convolutions

    def prepare(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of the loader on the device: ``(x, y)``, or ``(uint8 crops, offsets, y)``
        normalised there (``vgg_lib.data.normalise``)."""
        if len(batch) == 3:
            images, offsets, y = batch
            x = _to_device(images, offsets, self.device, self.pixel_scale, self.channels_last)
        else:
            x, y = batch
            x = x.to(self.device, non_blocking=True)
        return (x if self.dtype is None else x.to(self.dtype)), y.to(self.device, non_blocking=True)


@dataclass
class Fitted:
    """What ``fit`` did: one row per epoch (errors in percent), why it stopped, steps taken,
    and for a divergence where it happened."""

    history: list[dict]
    stop_reason: str  # epochs | lr_schedule | max_steps | diverged
    steps: int
    failure: dict | None = None


def fit(model: nn.Module, train_loader, val_loader=None, *, epochs: int, lr: float | None = None,
        momentum: float = 0.9, weight_decay: float = 5e-4, patience: int = 2, lr_factor: float = 0.1,
        max_decreases: int = 3, loss_fn=cross_entropy_sum, correct_fn=topk_correct, parameters=None,
        loop: Loop | None = None, optimizer=None, schedule=None, scaler=None, net=None,
        history=(), start_epoch: int = 0, step: int = 0, on_epoch=None) -> Fitted:
    """Train ``model`` for at most ``epochs`` epochs with the recipe of Sect. 3.1: SGD (``sgd``),
    the learning rate divided by ``1 / lr_factor`` when the validation error stops improving for
    ``patience`` epochs, a stop at the plateau after ``max_decreases`` divisions.

    ``train_loader`` yields ``(x, target)`` batches (or ``(uint8 crops, offsets, target)``, see
    ``Loop.prepare``) of one global batch size; its batch sampler's ``set_epoch`` is called
    before each epoch when it has one. ``loss_fn(outputs, targets)`` is the batch's *summed*
    loss; ``correct_fn(outputs, targets)`` counts correct predictions (top-1, top-5 by default);
    errors are reported in percent. ``parameters`` are what is updated (default: all).

    A run that resumes passes its ``optimizer``, ``schedule``, ``scaler``, ``history``,
    ``start_epoch`` and ``step``; ``on_epoch(fitted, done)`` is called after every epoch (a
    checkpoint). A non-finite loss skips its step on the device and stops the loop as diverged.
    """
    loop = loop or Loop(device=next(model.parameters()).device)
    if optimizer is None:
        params = [p for p in (model.parameters() if parameters is None else parameters) if p.requires_grad]
        optimizer = sgd(params, lr, momentum, weight_decay)
    schedule = schedule or Schedule(optimizer, lr_factor, patience, max_decreases)
    fitted = Fitted(list(history), "epochs", step)
    sampler = getattr(train_loader, "batch_sampler", None)
    batch_size = getattr(sampler, "batch_size", None) or train_loader.batch_size
    for epoch in range(start_epoch, epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        torch.manual_seed(_dropout_seed(loop.seed, loop.rank, epoch))  # this process's dropout masks
        t0 = time.perf_counter()
        sums, images = train_one_epoch(model if net is None else net, train_loader, optimizer, scaler, loss_fn, correct_fn,
                                       loop, fitted, batch_size, f"epoch {epoch + 1}/{epochs}")
        if fitted.stop_reason == "diverged":
            fitted.failure["epoch"] = epoch + 1
            break
        train_seconds = time.perf_counter() - t0
        val = validate(model, val_loader, correct_fn, loop) if val_loader is not None else [float("nan")] * 2
        loss_sum, *correct = sums
        fitted.history.append({"epoch": epoch + 1, "train_loss": loss_sum / images,
                               "train_top1_err": 100 * (1 - correct[0] / images),
                               "train_top5_err": 100 * (1 - correct[-1] / images),
                               "val_top1_err": val[0], "val_top5_err": val[-1],
                               "lr": optimizer.param_groups[0]["lr"], "images_per_s": images / train_seconds,
                               "seconds": time.perf_counter() - t0})
        if fitted.stop_reason != "max_steps" and val_loader is not None and schedule.step(100 - val[0]):
            fitted.stop_reason = "lr_schedule"
        done = fitted.stop_reason != "epochs" or epoch + 1 == epochs
        if on_epoch is not None:
            on_epoch(fitted, done)
        if done:
            break
    return fitted


def train_one_epoch(net, loader, optimizer, scaler, loss_fn, correct_fn, loop: Loop, fitted: Fitted,
                    batch_size: int, desc: str = "") -> tuple[list[float], int]:
    """One pass over ``loader``: (sums of loss and correct counts, images seen). Sums stay on
    the device and are read once every ``SYNC_EVERY`` steps (the only host syncs)."""
    from tqdm.auto import tqdm

    net.train()
    totals, first_bad, images, start = None, torch.full((), -1, dtype=torch.int64, device=loop.device), 0, fitted.steps
    bar = tqdm(loader, desc=desc, leave=False, disable=not (loop.progress and loop.rank == 0), dynamic_ncols=True)
    for i, batch in enumerate(bar):
        x, y = loop.prepare(batch)
        optimizer.zero_grad(set_to_none=True)
        step_totals = _forward_backward(net, x, y, loss_fn, correct_fn, loop, scaler, batch_size)
        if loop.world > 1:  # an asynchronous collective: every process sees the same sums
            dist.all_reduce(step_totals)
        bad = ~torch.isfinite(step_totals[0])
        first_bad = torch.where(bad & (first_bad < 0), i, first_bad)
        _sgd_step(optimizer, scaler, bad.float())  # never a step on a non-finite loss
        fitted.steps += 1
        totals = step_totals if totals is None else totals + step_totals
        images += batch_size  # every step is one full global batch
        last = loop.max_steps is not None and fitted.steps >= loop.max_steps
        if (i + 1) % SYNC_EVERY == 0 or last:
            if int(first_bad) >= 0:
                break
            if not bar.disable:
                    bar.set_postfix(loss=f"{totals[0].item() / images:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.0e}",
                                refresh=False)
        if last:
            fitted.stop_reason = "max_steps"
            break
    bar.close()
    if int(first_bad) >= 0:
        at = int(first_bad) + 1
        fitted.stop_reason = "diverged"
        fitted.failure = {"step": at, "global_step": start + at}
    return totals.tolist(), images


def _forward_backward(net, x, y, loss_fn, correct_fn, loop: Loop, scaler, batch_size: int) -> torch.Tensor:
    """Loss and gradients of one global batch, by micro-batches: the sum over micro-batches and
    processes of loss_sum / batch_size is the mean loss of the batch (DDP averages over
    processes, hence the factor world). Returns [loss sum, correct counts...] on the device."""
    chunks = list(zip(x.split(loop.micro_batch or len(x)), y.split(loop.micro_batch or len(x))))
    step_totals = None
    for j, (xc, yc) in enumerate(chunks):
        sync = contextlib.nullcontext() if loop.world == 1 or j == len(chunks) - 1 else net.no_sync()
        with sync:
            with _autocast(loop.amp, loop.device):
                outputs = net(xc)
            loss = loss_fn(outputs.float(), yc)
            scaled = loss * (loop.world / batch_size)
            if scaler is not None:
                scaled = scaler.scale(scaled * _poison(loss))
            scaled.backward()
        counts = torch.cat([loss.detach().double().reshape(1), correct_fn(outputs.detach().float(), yc).double()])
        step_totals = counts if step_totals is None else step_totals + counts
    return step_totals


@torch.no_grad()
def validate(model, loader, correct_fn=topk_correct, loop: Loop | None = None) -> list[float]:
    """Errors in percent of ``model`` over ``loader`` (top-1, top-5 with the default
    ``correct_fn``), summed over processes under torchrun."""
    loop = loop or Loop(device=next(model.parameters()).device)
    model.eval()
    counts, n = None, 0
    for batch in loader:
        x, y = loop.prepare(batch)
        with _autocast(loop.amp, loop.device):
            outputs = model(x)
        c = correct_fn(outputs.float(), y).double()
        counts = c if counts is None else counts + c
        n += len(y)
    counts = torch.cat([counts, torch.tensor([float(n)], dtype=torch.float64, device=loop.device)])
    if loop.world > 1:
        dist.all_reduce(counts)
    *correct, n = counts.tolist()
    return [100 * (1 - c / n) for c in correct]


# --- train(): one run folder, from the command line, a job or the book ----------------------

def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles). Without it, oneDNN
    emulates bf16 and autocast is slower than float32, so it is not the default there."""
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


def cpu_precision() -> dict:
    """What ``train`` runs on this CPU when ``amp`` is not given: bf16 autocast where the CPU has
    native bf16, and channels_last tensors, which oneDNN's convolutions prefer on any x86 CPU
    (``benchmarks/cpu_precision.py`` measures both against float32 NCHW)."""
    native = native_bf16()
    return {"amp": "bf16" if native else "off", "channels_last": True, "native_bf16": native}


def resolved_amp(cfg: TrainConfig, device: torch.device) -> str:
    """``cfg.amp``, or its default for ``device``: bf16 on cuda; on cpu bf16 where the CPU has
    native bf16 (``native_bf16``), off otherwise."""
    if cfg.amp:
        return cfg.amp
    return "bf16" if device.type == "cuda" else cpu_precision()["amp"]


def _autocast(amp: str, device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def _to_device(images, offsets, device, pixel_scale, channels_last: bool = True):
    """A uint8 batch crosses to the device and is normalised there (``vgg_lib.data.normalise``)."""
    from .data import normalise
    x = images.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return normalise(x, offsets.to(device, non_blocking=True), pixel_scale)


def _sgd_step(optimizer, scaler, skip: torch.Tensor) -> None:
    """One SGD step, skipped on the device when ``skip`` (a 0-d float tensor) is 1: no host
    sync. The fused SGD kernel honours ``found_inf`` (the contract GradScaler uses); with fp16
    the scaler adds the gradients' own overflow check."""
    if scaler is not None:
        scaler.step(optimizer)  # non-finite losses reach it as NaN gradients (see _poison)
        scaler.update()
        return
    optimizer.grad_scale, optimizer.found_inf = None, skip
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale, optimizer.found_inf


def _poison(loss: torch.Tensor) -> torch.Tensor:
    """1, or NaN when ``loss`` is not finite: a factor on the loss that makes every gradient
    NaN, so GradScaler skips the step even if the gradients themselves came out finite."""
    return torch.where(torch.isfinite(loss), 1.0, float("nan")).detach()


def train(cfg: TrainConfig) -> Path:
    """Train one network with the recipe of Sect. 3.1; returns the run folder.

    Started again on a folder that holds an unfinished run of the same parameters, it resumes
    from the last checkpoint, with any number of processes; on a finished one it returns at
    once. Under ``torchrun`` it trains with synchronous data parallelism (Sect. 3.3) and only
    rank 0 writes the folder.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train expects a TrainConfig, got {type(cfg).__name__}")
    loop = _setup_loop(cfg)
    run_dir = cfg.resolved_run_dir()
    resume = _open_run_folder(cfg, run_dir)
    if resume == "finished":
        return run_dir
    train_set, val_set, stats = build_data(cfg)
    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the training set "
                          f"({len(train_set)} images); use a smaller batch_size or more images")
    workers = default_workers(loop.device) if cfg.workers is None else cfg.workers
    folder = _RunFolder(cfg, run_dir, loop, stats, list(train_set.classes))
    folder.write_params(workers, len(train_set), len(val_set))
    model = _initial_model(cfg, folder.model_args, loop)
    optimizer = sgd(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    scaler = torch.amp.GradScaler(loop.device.type) if loop.amp == "fp16" else None
    schedule = Schedule(optimizer, cfg.lr_factor, cfg.patience, cfg.max_decreases)
    loader_gen = torch.Generator().manual_seed(cfg.seed)
    state = _restore(resume, model, optimizer, schedule, scaler, loader_gen, cfg.epochs)
    net = model
    if loop.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[loop.device.index] if loop.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    loader, val_loader = _loaders(cfg, train_set, val_set, stats, loop, workers, loader_gen)
    folder.bind(model, optimizer, schedule, scaler, loader_gen)
    folder.start(state)
    try:
        fitted = fit(model, loader, val_loader, epochs=cfg.epochs, loop=loop, optimizer=optimizer,
                     schedule=schedule, scaler=scaler, net=net, on_epoch=folder.end_of_epoch, **state)
        # a resumed run whose last checkpoint was final: its stop reason is in that checkpoint
        folder.end(fitted, resume["stop_reason"] if state["start_epoch"] >= cfg.epochs else None)
    except BaseException as e:
        folder.crashed(e)
        raise
    if loop.world > 1:
        dist.barrier()
    return run_dir


def _setup_loop(cfg: TrainConfig) -> Loop:
    """Processes (torchrun's environment), device and precision of this training."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(cfg, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return Loop(device=device, rank=rank, world=world, amp=resolved_amp(cfg, device), micro_batch=cfg.micro_batch,
                max_steps=cfg.max_steps, progress=cfg.progress and rank == 0, seed=cfg.seed,
                pixel_scale=cfg.pixel_scale,
                channels_last=device.type == "cuda" or cpu_precision()["channels_last"])


def _device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    return torch.device("cpu") if cpu else torch.device("cuda", local_rank)


def _open_run_folder(cfg: TrainConfig, run_dir: Path):
    """What ``run_dir`` holds for this run: None (nothing yet), "finished" (reuse it), or the
    checkpoint to resume from. An existing folder must hold a run of the same parameters; a run
    stopped by its epoch cap goes on when the cap is raised."""
    params_path, ckpt_path = run_dir / "params.json", run_dir / "checkpoint.pt"
    if run_dir.is_dir() and not params_path.is_file():
        leftovers = sorted(p.name for p in run_dir.iterdir() if p.name in RUN_FILES)
        if leftovers:  # nothing says which run these belong to: never write over them
            raise ConfigError(f"run_dir={str(run_dir)!r} holds {', '.join(leftovers)} but no params.json, "
                              "so it cannot be told which run it is; choose another run_dir, or restore "
                              "params.json")
    if not params_path.is_file():
        return None
    old = read_json(params_path, "restore it or choose another run_dir")
    if old.get("kind", "train") != "train" or "config" not in old:
        raise ConfigError(f"run_dir={str(run_dir)!r} holds a {old.get('kind', 'non-training')} job's "
                          "folder, not a training run; choose another run_dir")
    diff = [k for k, v in cfg.identity().items() if k in old and _jsonable(old[k]) != _jsonable(v)]
    summary = read_summary(run_dir)
    extend = diff == ["epochs"] and cfg.epochs > old["epochs"] and ckpt_path.is_file() and (
        summary.get("stop_reason") in ("epochs", None) and summary.get("status") != "failed")
    if diff and not extend:
        raise ConfigError(f"run_dir={str(run_dir)!r} holds a run with other parameters ("
                          + ", ".join(f"{k}: {old[k]!r} there, {getattr(cfg, k)!r} here" for k in diff)
                          + "); choose another run_dir"
                          + ("" if diff != ["epochs"] else
                             " (a run continues to a larger epochs only if its epoch cap stopped it)"))
    if summary.get("status") == "finished" and not extend:
        return "finished"
    if ckpt_path.is_file() and old.get("amp") not in (None, resolved_amp(cfg, _device(cfg))):
        # bf16 and float32 steps differ in the last bits: one run in two precisions is neither
        raise ConfigError(f"run_dir={str(run_dir)!r} was trained with amp={old['amp']!r} and would go on "
                          f"with amp={resolved_amp(cfg, _device(cfg))!r}; pass amp={old['amp']!r} to resume "
                          "it, or choose another run_dir")
    if not ckpt_path.is_file():
        return None
    resume = load_checkpoint(ckpt_path)
    if extend:  # stopped by the old cap only: training on is the run with the larger cap
        resume["finished"] = False
    return resume


def _initial_model(cfg: TrainConfig, model_args: dict, loop: Loop) -> VGG:
    """The network and its initialisation (Sect. 3.1), on the device."""
    torch.manual_seed(cfg.seed)
    model = init_weights(vgg(**model_args, init=None), "glorot" if cfg.init == "glorot" else "normal",
                         cfg.init_std)
    if cfg.init == "from_run":  # the rest stays random, as in the paper
        init_from(model, load_run(cfg.init_source).model)  # Sect. 3.1, layers matched by name
    if cfg.init_run is not None:
        model.load_state_dict(load_run(cfg.init_run).model.state_dict())
    model.to(loop.device)
    return model.to(memory_format=torch.channels_last) if loop.channels_last else model


def _restore(resume, model, optimizer, schedule, scaler, loader_gen, epochs: int) -> dict:
    """Load a checkpoint into the training's objects; ``fit``'s resume arguments."""
    if not isinstance(resume, dict):
        return dict(history=[], start_epoch=0, step=0)
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    for group in optimizer.param_groups:  # checkpoints of the unfused optimiser
        group.update(fused=True, foreach=None)
    schedule.load_state_dict(resume["schedule"])
    if scaler is not None and resume.get("scaler"):
        scaler.load_state_dict(resume["scaler"])
    _set_rng_state(resume["rng"], loader_gen)
    # killed after its last checkpoint, before its summary: nothing left to train
    start = resume["epoch"] if not resume.get("finished") else max(resume["epoch"], epochs)
    return dict(history=list(resume["history"]), start_epoch=start, step=resume["step"])


def _loaders(cfg: TrainConfig, train_set, val_set, stats, loop: Loop, workers: int, loader_gen):
    """This process's share of each global batch, augmented (Sect. 3.1), and the validation
    crops at Q = S; pinned memory and workers on a GPU."""
    from .data import test_transform, train_transform

    mean, eig = stats["mean"], dict(eigval=stats["eigval"], eigvec=stats["eigvec"])
    augment = train_transform(cfg.S, cfg.crop, mean, **eig, flip=cfg.flip, colour_std=cfg.colour_std,
                              pixel_scale=cfg.pixel_scale)
    val_data = _Transformed(val_set, test_transform(cfg.test_scale, mean, crop=cfg.crop, pixel_scale=cfg.pixel_scale))
    args = dict(num_workers=workers, pin_memory=loop.device.type == "cuda", persistent_workers=workers > 0,
                generator=loader_gen)
    val_idx = list(range(loop.rank, len(val_data), loop.world))
    val_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_data, val_idx),
                                             batch_size=max(cfg.micro_batch or cfg.batch_size, 1), shuffle=False, **args)
    return augmented_loader(train_set, augment, cfg.batch_size, cfg.seed, loop.rank, loop.world, **args), val_loader


def augmented_loader(dataset, transform, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                     **loader_args) -> torch.utils.data.DataLoader:
    """A loader of this process's share of every global batch of ``dataset``, each image
    augmented by ``transform`` (``data.train_transform``) from ``(seed, epoch, index)``: batches
    ``(uint8 crops, offsets, labels)`` that ``Loop.prepare`` normalises on the device. The
    order depends only on ``(seed, epoch)``; ``fit`` sets the epoch."""
    batches = EpochBatches(len(dataset), batch_size, seed, rank, world)
    return torch.utils.data.DataLoader(_Augmented(dataset, transform, seed), batch_sampler=batches,
                                       collate_fn=_collate, **loader_args)


class _RunFolder:
    """What ``train`` writes into its run folder (rank 0 only): params, a checkpoint and the
    metrics after every epoch, the summary (running, finished or failed)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, loop: Loop, stats: dict, classes: list):
        self.cfg, self.run_dir, self.loop, self.stats, self.classes = cfg, run_dir, loop, stats, classes
        self.main = loop.rank == 0
        self.model_args = dict(name=cfg.config, num_classes=len(classes), width=cfg.width, batch_norm=cfg.batch_norm,
                               dropout=cfg.dropout, input_size=cfg.crop, pools=cfg.pools)
        self.fitted = Fitted([], "epochs", 0)

    def write_params(self, workers: int, train_images: int, val_images: int) -> None:
        if self.main:  # what this process resolved (workers, amp) is recorded, not the None defaults
            write_json(self.run_dir / "params.json", {
                **self.cfg.to_dict(), "workers": workers, "amp": self.loop.amp, "run_dir": str(self.run_dir),
                "channels_last": self.loop.channels_last,
                **({"native_bf16": native_bf16()} if self.loop.device.type == "cpu" else {}),
                "classes": self.classes, "num_classes": len(self.classes), "test_scale": self.cfg.test_scale,
                "train_images": train_images, "val_images": val_images, "world_size": self.loop.world,
                "torch": torch.__version__})

    def bind(self, model, optimizer, schedule, scaler, loader_gen) -> None:
        self.model, self.optimizer, self.schedule, self.scaler, self.loader_gen = \
            model, optimizer, schedule, scaler, loader_gen

    def start(self, state: dict) -> None:
        self.fitted = Fitted(list(state["history"]), "epochs", state["step"])
        if self.main:
            write_csv(self.run_dir / "metrics.csv", self.fitted.history, METRICS)
        self.summary("running")

    def summary(self, status: str, **extra) -> None:
        if self.main:
            write_json(self.run_dir / "summary.json", _summary(status, self.fitted.history, steps=self.fitted.steps,
                                                               lr_decreases=self.schedule.decreases, **extra))

    def end_of_epoch(self, fitted: Fitted, done: bool) -> None:
        self.fitted = fitted
        if self.main:
            c = self.cfg
            save_checkpoint({
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": _rng_state(self.loader_gen),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "world_size": self.loop.world, "epoch": len(fitted.history), "step": fitted.steps, "units": UNITS,
                "history": fitted.history, "finished": done, "stop_reason": fitted.stop_reason,
                "model_args": self.model_args, "classes": self.classes, "mean": self.stats["mean"],
                "preprocess": dict(S=c.S, Q=c.test_scale, crop=c.crop, pixel_scale=c.pixel_scale, flip=c.flip,
                                   colour_std=c.colour_std),
                "eigval": self.stats["eigval"], "eigvec": self.stats["eigvec"]}, self.run_dir / "checkpoint.pt")
            write_csv(self.run_dir / "metrics.csv", fitted.history, METRICS)
        self.summary("finished" if done else "running", stop_reason=fitted.stop_reason if done else None)
        if self.main and self.cfg.progress:
            r = fitted.history[-1]
            print(f"epoch {r['epoch']:3d}  loss {r['train_loss']:.3f}  train top-1 {r['train_top1_err']:.2f}%  "
                  f"val top-1 {r['val_top1_err']:.2f}%  top-5 {r['val_top5_err']:.2f}%  lr {r['lr']:.0e}  "
                  f"{r['images_per_s']:.0f} img/s", flush=True)

    def end(self, fitted: Fitted, resumed_stop: str | None) -> None:
        self.fitted = fitted
        if fitted.stop_reason == "diverged":  # keep the last good checkpoint
            f, lr = fitted.failure, self.cfg.lr
            kept = (f"the checkpoint of epoch {f['epoch'] - 1} is kept" if (self.run_dir / "checkpoint.pt").is_file()
                    else "no checkpoint was written (no epoch finished)")
            self.summary("failed", stop_reason="diverged", failure={
                **f, "reason": f"non-finite loss at epoch {f['epoch']}, step {f['step']}; lr={lr} is probably "
                               f"too large; {kept}"})
        elif resumed_stop is not None:  # nothing was trained: the checkpoint already read says why it stopped
            self.summary("finished", stop_reason=resumed_stop)

    def crashed(self, e: BaseException) -> None:
        try:
            self.summary("failed", stop_reason="error", failure={
                "epoch": len(self.fitted.history) + 1, "step": None, "reason": f"{type(e).__name__}: {e}"})
        except OSError:
            pass  # the folder cannot be written at all (disk full, read-only): say so below
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            ckpt = self.run_dir / "checkpoint.pt"
            kept = f"the checkpoint of epoch {load_checkpoint(ckpt)['epoch']} is kept" if ckpt.is_file() else \
                "no checkpoint was written"
            raise ConfigError(f"cannot write to run folder {self.run_dir} ({e.strerror}); {kept}: free some "
                              "space or make the folder writable, then run again to resume") from e


def _jsonable(v):
    return json.loads(json.dumps(v, default=str))


# --- command line: python -m vgg_lib.train / torchrun -m vgg_lib.train ----------------------

def parser() -> argparse.ArgumentParser:
    """One option per TrainConfig field, with the field's help and default."""
    p = argparse.ArgumentParser(prog="python -m vgg_lib.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    types = {"int": int, "float": float, "str": str}
    for f in dataclasses.fields(TrainConfig):
        opts = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kind = str(f.type).split(" |")[0]
        if f.name == "S":
            p.add_argument(*opts, nargs="+", type=int, default=f.default, metavar="S",
                           help=f.metadata["help"] + " (two numbers: Smin Smax)")
        elif kind == "bool":
            p.add_argument(*opts, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            p.add_argument(*opts, type=types.get(kind, str), default=f.default, help=f.metadata["help"])
    return p


def main(argv=None) -> Path:
    args = vars(parser().parse_args(argv))
    try:
        cfg = TrainConfig(**args)
        path = train(cfg)
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    if dist.is_initialized():
        dist.destroy_process_group()
    failure = run_failure(path)
    if failure:  # the exit status tells the truth: a diverged run is not a success
        sys.exit(f"error: {failure}")
    return path


if __name__ == "__main__":
    main()
