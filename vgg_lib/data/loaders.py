"""The loaders of a training run (Sect. 3.1, 3.3): every image augmented from ``(seed, epoch,
index)``, every epoch's order from ``(seed, epoch)``, each process given its share of every
global batch.

So the data a step sees do not depend on the number of loader workers or processes, and a run
killed at any moment resumes to the same batches (``vgg_lib.train``). Batches are uint8 crops
with their offsets, normalised on the training device by ``loop.Loop.prepare``.
"""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist

from ..checks import ConfigError

MAX_WORKERS = 8  # default loader workers per GPU: enough to decode ~1000 ImageNet JPEGs/s


def derived_seed(*numbers) -> int:
    """A 63-bit seed from ``numbers`` (a stable hash, the same in every process and run)."""
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
        return *self.transform.split(image, torch.Generator().manual_seed(derived_seed(self.seed, epoch, i))), label

    def __getitems__(self, keys):
        # What a DataLoader calls for a whole batch: the transform batches its rescaling, and
        # the batch comes out collated already (see _collate).
        items = [self.base[i] for _, i in keys]
        gens = [torch.Generator().manual_seed(derived_seed(self.seed, epoch, i)) for epoch, i in keys]
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
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, epoch))).tolist()
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


def build_data(cfg):
    """Training and validation sets (uint8 images) and the training-set RGB statistics.

    Under torchrun only rank 0 computes the statistics (10,000 decoded JPEGs on ImageNet) and
    sends them to the others."""
    from .. import data
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


def training_loaders(cfg, train_set, val_set, stats, loop, workers: int, loader_gen):
    """This process's share of each global batch, augmented (Sect. 3.1), and the validation
    crops at Q = S; pinned memory and workers on a GPU."""
    from .transforms import test_transform, train_transform

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
