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
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .checks import ConfigError, read_json
from .data.loaders import build_data, default_workers, training_loaders
from .loop import Loop, Recipe, TrainState, cpu_precision, fit, resolved_amp
from .models import VGG, init_from, init_weights, vgg
from .options import TrainConfig
from .runs import RUN_FILES, TrainingFolder, load_checkpoint, load_run, read_summary, run_failure


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
    classes = list(train_set.classes)
    folder = TrainingFolder(cfg, run_dir, loop, stats, classes)
    folder.write_training_params(workers, len(train_set), len(val_set))
    model = _initial_model(cfg, len(classes), loop)
    recipe = Recipe(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, patience=cfg.patience,
                    lr_factor=cfg.lr_factor, max_decreases=cfg.max_decreases)
    state = TrainState.start(model.parameters(), recipe,
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


def _initial_model(cfg: TrainConfig, num_classes: int, loop: Loop) -> VGG:
    """The network and its initialisation (Sect. 3.1), on the device."""
    torch.manual_seed(cfg.seed)
    model = vgg(cfg.config, num_classes, width=cfg.width, batch_norm=cfg.batch_norm, dropout=cfg.dropout,
                input_size=cfg.crop, init=None, pools=cfg.pools)
    model = init_weights(model, "glorot" if cfg.init == "glorot" else "normal", cfg.init_std)
    if cfg.init == "from_run":  # the rest stays random, as in the paper
        init_from(model, load_run(cfg.init_source).model)  # Sect. 3.1, layers matched by name
    if cfg.init_run is not None:
        model.load_state_dict(load_run(cfg.init_run).model.state_dict())
    model.to(loop.device)
    return model.to(memory_format=torch.channels_last) if loop.channels_last else model


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
