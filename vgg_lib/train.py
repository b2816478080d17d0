"""The training recipe of Sect. 3.1 and the synchronous multi-GPU training of Sect. 3.3.

``train(cfg)`` runs the whole recipe of a ``TrainConfig`` (``vgg_lib.options``) and writes a
*run folder* (``vgg_lib.runs``); its epochs are ``loop.fit``, the one SGD loop of the project
(``transfer.fine_tune`` and the localisation nets use it too), over the loaders of
``data.loaders``::

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

Reproducibility: the order of the images in an epoch comes from ``(seed, epoch)`` and the
random augmentation of an image from ``(seed, epoch, index)``, so the data a step sees do not
depend on the number of loader workers or processes, and a run killed at any moment resumes
from its last checkpoint to the same final weights as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checks import ConfigError, read_json
from .data.loaders import build_data, default_workers, training_loaders
from .loop import Fitted, Loop, Recipe, TrainState, cpu_precision, fit, native_bf16, resolved_amp
from .models import VGG, init_from, init_weights, vgg
from .options import TrainConfig
from .runs import (RUN_FILES, UNITS, load_checkpoint, load_run, read_summary, run_failure, save_checkpoint,
                   write_csv, write_json)

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
    state = TrainState.start(model.parameters(), Recipe(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.patience,
                                                        cfg.lr_factor, cfg.max_decreases),
                             scaler=torch.amp.GradScaler(loop.device.type) if loop.amp == "fp16" else None,
                             loader_generator=torch.Generator().manual_seed(cfg.seed))
    if isinstance(resume, dict):
        state.restore(resume, model, cfg.epochs)
    state.net = _stepped_net(model, cfg, loop)
    loader, val_loader = training_loaders(cfg, train_set, val_set, stats, loop, workers, state.loader_generator)
    folder.start(model, state)
    try:
        fitted = fit(model, loader, val_loader, epochs=cfg.epochs, state=state, loop=loop,
                     on_epoch=folder.end_of_epoch)
        # a resumed run whose last checkpoint was final: its stop reason is in that checkpoint
        folder.end(fitted, resume["stop_reason"] if state.start_epoch >= cfg.epochs else None)
    except BaseException as e:
        folder.crashed(e)
        raise
    if loop.world > 1:
        dist.barrier()
    return run_dir


def _stepped_net(model: VGG, cfg: TrainConfig, loop: Loop) -> nn.Module:
    """What the SGD steps run: the model itself, or with several processes its synchronous
    data-parallel wrapper (Sect. 3.3), compiled when ``cfg.compile``."""
    net = model
    if loop.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[loop.device.index] if loop.device.type == "cuda" else None)
    return torch.compile(net) if cfg.compile else net


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

    def start(self, model, state: TrainState) -> None:
        """Bind the training's model and state, and write its metrics and summary so far."""
        self.model, self.state = model, state
        self.fitted = Fitted(list(state.history), "epochs", state.step)
        if self.main:
            write_csv(self.run_dir / "metrics.csv", self.fitted.history, METRICS)
        self.summary("running")

    def summary(self, status: str, **extra) -> None:
        if self.main:
            write_json(self.run_dir / "summary.json", _summary(status, self.fitted.history, steps=self.fitted.steps,
                                                               lr_decreases=self.state.schedule.decreases, **extra))

    def end_of_epoch(self, fitted: Fitted, done: bool) -> None:
        self.fitted = fitted
        if self.main:
            c = self.cfg
            save_checkpoint({
                "model": self.model.state_dict(), **self.state.state_dict(),
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
