"""The one SGD loop of the project (Sect. 3.1, 3.3): ``fit``, its epochs, its precision.

``fit`` serves every training: ``train.train`` (a run folder, resume, torchrun),
``transfer.fine_tune`` and the localisation nets. It is SGD with the plateau schedule of
Sect. 3.1 over loaders of (inputs, targets) batches; what differs between those uses is passed
in: the loss, what counts as a correct prediction, how a batch reaches the device (``Loop``),
where a resumed training stands (``TrainState``).

On a GPU the loop keeps the host out of the way: batches cross to the device as uint8 crops
and are normalised there, losses and accuracies are summed on the device and read once every
``SYNC_EVERY`` steps, and a step with a non-finite loss is skipped on the device (the run is
then stopped as diverged at the next read, keeping its last good checkpoint).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data.loaders import derived_seed

if TYPE_CHECKING:
    from .options import TrainConfig

SYNC_EVERY = 50  # steps between reads of the device's loss sums (divergence check, progress bar)


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


@dataclass(frozen=True)
class Recipe:
    """The SGD recipe of Sect. 3.1 that ``TrainState.start`` sets up: the optimiser's lr,
    momentum and weight decay, and the plateau schedule (``Schedule``)."""

    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    patience: int = 2
    lr_factor: float = 0.1
    max_decreases: int = 3


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


# --- random streams --------------------------------------------------------------------------

# Random streams and resume at any world size. The data a step sees come from (seed, epoch,
# index), and each process's dropout stream (CPU and its own GPU) is reseeded at the start of
# every epoch from (seed, rank, epoch): nothing per-process or per-GPU has to be saved, so a
# run resumes with more or fewer processes, or GPUs, than it was saved with. The checkpoint
# keeps rank 0's host streams (loader generator, Python, NumPy), which every process restores.

def _dropout_seed(seed: int, rank: int, epoch: int) -> int:
    return derived_seed(seed, "dropout", rank, epoch)


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


# --- where a training stands: what fit goes on from, what a checkpoint keeps -------------------

@dataclass
class TrainState:
    """Where a training stands: the optimiser, the schedule and the scaler it steps, the
    epochs done (``history``), the next epoch and the steps taken. ``fit`` goes on from it;
    a checkpoint keeps its ``state_dict`` beside the weights, and ``restore`` loads one back."""

    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    net: nn.Module | None = None  # what the steps run, when not the model itself (DDP, torch.compile)
    loader_generator: torch.Generator | None = None  # the loaders' own stream, saved with the others
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0
    step: int = 0

    @classmethod
    def start(cls, parameters, recipe: Recipe | None = None, **fields) -> TrainState:
        """A training at its first step: SGD (``sgd``) over the ``parameters`` that require a
        gradient, and the plateau schedule, both from ``recipe`` (the paper's by default)."""
        recipe = recipe or Recipe()
        optimizer = sgd([p for p in parameters if p.requires_grad], recipe.lr, recipe.momentum,
                        recipe.weight_decay)
        return cls(optimizer, Schedule(optimizer, recipe.lr_factor, recipe.patience, recipe.max_decreases),
                   **fields)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of this state (the weights aside)."""
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "rng": _rng_state(self.loader_generator),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def restore(self, checkpoint: dict, model: nn.Module, epochs: int) -> None:
        """Load a checkpoint into ``model`` and this state, to go on to ``epochs``."""
        model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group in self.optimizer.param_groups:  # checkpoints of the unfused optimiser
            group.update(fused=True, foreach=None)
        self.schedule.load_state_dict(checkpoint["schedule"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_state(checkpoint["rng"], self.loader_generator)
        # killed after its last checkpoint, before its summary: nothing left to train
        epoch = checkpoint["epoch"]
        self.start_epoch = epoch if not checkpoint.get("finished") else max(epoch, epochs)
        self.history, self.step = list(checkpoint["history"]), checkpoint["step"]


# --- the loop: fit ------------------------------------------------------------------------------

def fit(model: nn.Module, train_loader, val_loader=None, *, epochs: int, state: TrainState | None = None,
        loss_fn=cross_entropy_sum, correct_fn=topk_correct, loop: Loop | None = None, on_epoch=None) -> Fitted:
    """Train ``model`` for at most ``epochs`` epochs with the recipe of Sect. 3.1: SGD (``sgd``),
    the learning rate divided by ``1 / lr_factor`` when the validation error stops improving for
    ``patience`` epochs, a stop at the plateau after ``max_decreases`` divisions (``Recipe``).

    ``train_loader`` yields ``(x, target)`` batches (or ``(uint8 crops, offsets, target)``, see
    ``Loop.prepare``) of one global batch size; its batch sampler's ``set_epoch`` is called
    before each epoch when it has one. ``loss_fn(outputs, targets)`` is the batch's *summed*
    loss; ``correct_fn(outputs, targets)`` counts correct predictions (top-1, top-5 by default);
    errors are reported in percent.

    ``state`` is where the training stands (``TrainState``): by default a new one over all of
    the model's parameters with the paper's recipe; ``TrainState.start(parameters, Recipe(...))``
    updates only ``parameters`` with another recipe, and a run that resumes passes the state its
    checkpoint restored. ``on_epoch(fitted, done)`` is called after every epoch (a checkpoint).
    A non-finite loss skips its step on the device and stops the loop as diverged.
    """
    loop = loop or Loop(device=next(model.parameters()).device)
    state = state or TrainState.start(model.parameters())
    fitted = Fitted(list(state.history), "epochs", state.step)
    sampler = getattr(train_loader, "batch_sampler", None)
    batch_size = getattr(sampler, "batch_size", None) or train_loader.batch_size
    for epoch in range(state.start_epoch, epochs):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        torch.manual_seed(_dropout_seed(loop.seed, loop.rank, epoch))  # this process's dropout masks
        t0 = time.perf_counter()
        sums, images = train_one_epoch(model if state.net is None else state.net, train_loader, state.optimizer,
                                       state.scaler, loss_fn, correct_fn, loop, fitted, batch_size,
                                       f"epoch {epoch + 1}/{epochs}")
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
                               "lr": state.optimizer.param_groups[0]["lr"], "images_per_s": images / train_seconds,
                               "seconds": time.perf_counter() - t0})
        if fitted.stop_reason != "max_steps" and val_loader is not None and state.schedule.step(100 - val[0]):
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


# --- precision and the device side of a step ----------------------------------------------

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
