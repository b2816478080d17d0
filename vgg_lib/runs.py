"""Run folders: the one place that names, writes, reads and lists them.

A *run folder* holds one training run (``vgg_lib.train``, the training job, the reference grid)
or one job's results (evaluation, fusion, transfer)::

    params.json     what was asked for (a TrainConfig, or a job's parameters) plus what was derived
    summary.json    status (running / finished / failed), stop reason, final errors in percent
    metrics.csv     one row per epoch (training runs): losses, errors in percent, lr, images/s
    checkpoint.pt   model, optimiser, schedule, RNG states, preprocessing (training runs)
    results_*.json  what jobs computed from the run (evaluation, transfer)

Every file is written atomically (``vgg_lib.atomic``: a temporary file, then a rename), so a
killed process never leaves half a file. A run is named by its *identity*, the parameters that change what it
computes (``run_name``): the same training started from ``python -m vgg_lib.train``, from the
training job or from the book lands in the same folder and is reused.

Units: every error rate stored or returned is in percent (``val_top1_err`` = 13.5 means 13.5%).
Folders written before that (errors as fractions) are refused with a message naming
``python -m vgg_lib.runs migrate FOLDER``, which converts them in place.
"""

from __future__ import annotations

import argparse
import csv
import errno
import hashlib
import json
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import write_atomic, write_csv, write_json
from .checks import ConfigError, read_json
from .loop import Fitted, Loop, TrainState, native_bf16

RUN_FILES = ("params.json", "summary.json", "metrics.csv", "checkpoint.pt")
# Fields that change how fast a run goes, not what it computes: they may differ on resume and
# are left out of the run's name.
RUNTIME_FIELDS = ("device", "workers", "compile", "amp", "progress", "run_dir", "root")
# summary.json says in which unit its errors are; folders without it hold fractions.
UNITS = "percent"
ERROR_KEYS = ("train_top1_err", "train_top5_err", "val_top1_err", "val_top5_err", "best_val_top1_err")


def runs_root(root=None) -> Path:
    """``root``, else ``$VGG_LIB_RUNS``, else ``./runs``."""
    return Path(root or os.environ.get("VGG_LIB_RUNS") or "runs").expanduser()


def run_name(identity: dict, words) -> str:
    """A readable slug plus a short hash of the run's identity: ``D-shapes-s0-3fa9c2d1``."""
    identity = json.loads(json.dumps(identity, default=str))  # tuples and lists name the same run
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    slug = "-".join(str(w).replace("/", "_").replace(" ", "") for w in words if w is not None)
    return f"{slug}-{digest}" if slug else digest


# --- checkpoints --------------------------------------------------------------------------------

def save_checkpoint(obj, path) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors, numbers, strings and containers
    only. A file that needs arbitrary unpickling (which could run code) is refused; a damaged
    one (truncated, empty, not a checkpoint) gets a one-line ``ConfigError`` naming it."""
    path = Path(path)
    damaged = (f"checkpoint {path} is damaged or not a checkpoint ({{}}); delete it to train that "
               "run again, or restore it from a copy")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise ConfigError(f"checkpoint {path} cannot be read ({e.strerror or e})") from None
    if not head:
        raise ConfigError(damaged.format("an empty file"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines()]
        first = next((ln for ln in lines if "Unsupported global" in ln), "")
        # a zip (torch.save) or pickle stream asking for globals or opcodes the safe loader
        # refuses: really a security refusal; anything else is just not a checkpoint
        if first or (head[:1] == b"\x80" and any("Unsupported operand" in ln for ln in lines)):
            raise ValueError(f"refusing to load checkpoint {path}: it needs arbitrary unpickling, which "
                             f"could run code; only tensors, numbers, strings and containers are allowed "
                             f"({first or 'a raw pickle'})") from None
        raise ConfigError(damaged.format("unreadable data")) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = "truncated" if isinstance(e, EOFError) or "central directory" in str(e) else \
            (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ConfigError(damaged.format(reason)) from None


# --- status -------------------------------------------------------------------------------------

def read_summary(run_dir, what: str = "") -> dict:
    """``summary.json`` of a run folder ({} when absent); errors in percent. A folder written
    with errors as fractions is refused with the command that migrates it."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return {}
    s = read_json(path, what or "delete the run folder to run it again")
    if _needs_migration(s):
        raise ConfigError(f"run folder {Path(run_dir)} stores its errors as fractions (written before "
                          f"errors were stored in percent); convert it with: python -m vgg_lib.runs "
                          f"migrate {Path(run_dir)}")
    return s


def status(run_dir) -> str | None:
    """``finished``, ``failed``, ``running`` (or killed) from ``summary.json``; None if absent."""
    path = Path(run_dir) / "summary.json"
    return read_json(path).get("status") if path.is_file() else None


def diverged(run_dir) -> bool:
    path = Path(run_dir) / "summary.json"
    return path.is_file() and read_json(path).get("stop_reason") == "diverged"


def is_done(run_dir) -> bool:
    """Finished, or diverged: a divergence is a result too (it would diverge again); only a
    crash or a kill is worth running again."""
    path = Path(run_dir) / "summary.json"
    summary = read_json(path) if path.is_file() else {}  # read once for both questions
    return summary.get("status") == "finished" or summary.get("stop_reason") == "diverged"


def run_failure(run_dir) -> str | None:
    """None for a finished run, else one line: why it failed and where (for exit statuses)."""
    summary = read_json(Path(run_dir) / "summary.json")
    if summary.get("status") == "finished":
        return None
    reason = (summary.get("failure") or {}).get("reason") or f"status {summary.get('status')!r}"
    return f"training failed: {reason} (run folder {run_dir})"


# --- loading a trained net ----------------------------------------------------------------------

@dataclass
class Run:
    """A trained network rebuilt from its run folder, with what its test transform needs."""

    model: torch.nn.Module
    params: dict
    summary: dict
    mean: torch.Tensor
    pixel_scale: float
    crop: int
    S: int | list
    classes: list
    path: Path

    @property
    def preprocessing(self) -> dict:
        """The keyword arguments of ``evaluate`` and ``transfer`` for this net's inputs."""
        return dict(mean=self.mean, pixel_scale=self.pixel_scale)


def load_run(run_dir) -> Run:
    """Rebuild the network of a finished run (on the CPU, in eval mode). ``ValueError`` if the
    folder holds no finished checkpoint."""
    from .models import vgg

    path = Path(run_dir).expanduser()
    summary_path, ckpt_path = path / "summary.json", path / "checkpoint.pt"
    if not ckpt_path.is_file() or not summary_path.is_file():
        raise ValueError(f"run_dir={str(path)!r} has no finished checkpoint (no checkpoint.pt/summary.json)")
    summary = read_summary(path)
    if not (path / "params.json").is_file():
        raise ConfigError(f"run_dir={str(path)!r} has no params.json: it cannot be told which run it "
                          "holds; restore the file or train the run again")
    params = read_json(path / "params.json")
    ckpt = load_checkpoint(ckpt_path)
    if summary.get("status") != "finished" or not isinstance(ckpt, dict) or not ckpt.get("finished"):
        raise ValueError(f"run_dir={str(path)!r} has no finished checkpoint: its status is "
                         f"{summary.get('status')!r}; train it to the end first")
    bad = [k for k, v in ckpt["model"].items() if torch.is_floating_point(v) and not torch.isfinite(v).all()]
    if bad:
        raise ConfigError(f"run_dir={str(path)!r}: checkpoint.pt has non-finite weights (NaN or inf in "
                          f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the file is damaged or "
                          "the run diverged: train it again")
    model = vgg(**ckpt["model_args"], init=None)
    model.load_state_dict(ckpt["model"])
    pre = ckpt["preprocess"]
    return Run(model=model.eval(), params=params, summary=summary,
               mean=ckpt["mean"], pixel_scale=pre["pixel_scale"], crop=pre["crop"], S=pre["S"],
               classes=list(ckpt["classes"]), path=path)


# --- writing a run folder -----------------------------------------------------------------------

METRICS = ["epoch", "train_loss", "train_top1_err", "train_top5_err", "val_top1_err", "val_top5_err",
           "lr", "images_per_s", "seconds"]


class RunFolder:
    """The writer of a run folder: each file atomically, and only by the main process (rank 0
    under torchrun; the others make the same calls and write nothing). ``train`` writes a
    training's folder with it (``TrainingFolder``), ``localisation.train_localiser`` a localiser's."""

    def __init__(self, run_dir, main: bool = True):
        self.run_dir, self.main = Path(run_dir), main

    def write_params(self, params: dict) -> None:
        if self.main:
            write_json(self.run_dir / "params.json", params)

    def write_metrics(self, history: list[dict], fields=METRICS) -> None:
        """``metrics.csv``: one row per epoch (``loop.fit``'s history)."""
        if self.main:
            write_csv(self.run_dir / "metrics.csv", history, fields)

    def write_checkpoint(self, checkpoint: dict) -> None:
        if self.main:
            save_checkpoint(checkpoint, self.run_dir / "checkpoint.pt")

    def write_results(self, name: str, results: dict) -> None:
        """``results_<name>.json``, which ``collect`` reads into ``results_<name>.<key>`` columns."""
        if self.main:
            write_json(self.run_dir / f"results_{name}.json", results)

    def write_summary(self, status: str, **fields) -> None:
        """``summary.json``: the status (running, finished or failed), the units of its errors, ``fields``."""
        if self.main:
            write_json(self.run_dir / "summary.json", {"status": status, "units": UNITS, **fields})


def training_summary(history: list[dict]) -> dict:
    """The summary of a training's epochs: their number, the best one, the last one's metrics,
    the time and the mean speed."""
    s = {"epochs_done": len(history)}
    if history:
        best = min(history, key=lambda r: r["val_top1_err"])
        last = history[-1]
        s.update(best_epoch=best["epoch"], best_val_top1_err=best["val_top1_err"],
                 **{k: last[k] for k in METRICS[1:7]},
                 seconds=round(sum(r["seconds"] for r in history), 2),
                 images_per_s=round(float(np.mean([r["images_per_s"] for r in history])), 1))
    return s


class TrainingFolder(RunFolder):
    """What ``train`` writes into its run folder (rank 0 only): params, a checkpoint and the
    metrics after every epoch, the summary (running, finished or failed)."""

    def __init__(self, cfg, run_dir, loop: Loop, stats: dict, classes: list):
        super().__init__(run_dir, main=loop.rank == 0)
        self.cfg, self.loop, self.stats, self.classes = cfg, loop, stats, classes
        self.fitted = Fitted([], "epochs", 0)

    def write_training_params(self, workers: int, train_images: int, val_images: int) -> None:
        # what this process resolved (workers, amp) is recorded, not the None defaults
        self.write_params({
            **self.cfg.to_dict(), "workers": workers, "amp": self.loop.amp, "run_dir": str(self.run_dir),
            "channels_last": self.loop.channels_last,
            **({"native_bf16": native_bf16()} if self.loop.device.type == "cpu" else {}),
            "classes": self.classes, "num_classes": len(self.classes), "test_scale": self.cfg.test_scale,
            "train_images": train_images, "val_images": val_images, "world_size": self.loop.world,
            "torch": torch.__version__})

    def start(self, model: torch.nn.Module, state: TrainState) -> None:
        """Bind the training's model and state, and write its metrics and summary so far."""
        self.model, self.state = model, state
        self.fitted = Fitted(list(state.history), "epochs", state.step)
        self.write_metrics(self.fitted.history)
        self._summary("running")

    def _summary(self, status: str, **extra) -> None:
        self.write_summary(status, **training_summary(self.fitted.history), steps=self.fitted.steps,
                           lr_decreases=self.state.schedule.decreases, **extra)

    def end_of_epoch(self, fitted: Fitted, done: bool) -> None:
        """``fit``'s ``on_epoch``: a checkpoint, the metrics and the summary after every epoch."""
        self.fitted = fitted
        if self.main:
            c = self.cfg
            self.write_checkpoint({
                "model": self.model.state_dict(), **self.state.state_dict(),
                "world_size": self.loop.world, "epoch": len(fitted.history), "step": fitted.steps, "units": UNITS,
                "history": fitted.history, "finished": done, "stop_reason": fitted.stop_reason,
                "model_args": self.model.args, "classes": self.classes, "mean": self.stats["mean"],
                "preprocess": dict(S=c.S, Q=c.test_scale, crop=c.crop, pixel_scale=c.pixel_scale, flip=c.flip,
                                   colour_std=c.colour_std),
                "eigval": self.stats["eigval"], "eigvec": self.stats["eigvec"]})
            self.write_metrics(fitted.history)
        self._summary("finished" if done else "running", stop_reason=fitted.stop_reason if done else None)
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
            self._summary("failed", stop_reason="diverged", failure={
                **f, "reason": f"non-finite loss at epoch {f['epoch']}, step {f['step']}; lr={lr} is probably "
                               f"too large; {kept}"})
        elif resumed_stop is not None:  # nothing was trained: the checkpoint already read says why it stopped
            self._summary("finished", stop_reason=resumed_stop)

    def crashed(self, e: BaseException) -> None:
        try:
            self._summary("failed", stop_reason="error", failure={
                "epoch": len(self.fitted.history) + 1, "step": None, "reason": f"{type(e).__name__}: {e}"})
        except OSError:
            pass  # the folder cannot be written at all (disk full, read-only): say so below
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT):
            ckpt = self.run_dir / "checkpoint.pt"
            kept = f"the checkpoint of epoch {load_checkpoint(ckpt)['epoch']} is kept" if ckpt.is_file() else \
                "no checkpoint was written"
            raise ConfigError(f"cannot write to run folder {self.run_dir} ({e.strerror}); {kept}: free some "
                              "space or make the folder writable, then run again to resume") from e


# --- listing ------------------------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def collect(root=None):
    """Every run folder under ``root`` (recursively) as one row: its params, its summary (the
    final metrics, best epoch, status), and any ``results*.json`` written by other jobs
    (evaluation, transfer), flattened into ``<file stem>.<key>`` columns."""
    import pandas as pd

    root = runs_root(root)
    folders = sorted({p.parent for p in root.rglob("params.json")} | {p.parent for p in root.rglob("summary.json")})
    rows = []
    for folder in folders:
        row = {"run": folder.name, "path": str(folder)}
        damaged = []  # said in the row, not skipped silently
        for name in ("params.json", "summary.json"):
            if (folder / name).is_file():
                try:
                    data = read_json(folder / name)
                except ConfigError:
                    damaged.append(name)
                    continue
                data.pop("classes", None)
                data.pop("run_dir", None)
                row.update(_flatten(data))
        for path in sorted(folder.glob("results*.json")):
            try:
                row.update(_flatten(read_json(path), prefix=path.stem + "."))
            except ConfigError:
                damaged.append(path.name)
        if damaged:
            row.update(status="damaged", damaged=", ".join(damaged))
        elif _needs_migration(row):
            row.update(status="old units", damaged="errors stored as fractions: python -m vgg_lib.runs migrate")
        if isinstance(row.get("S"), list):
            row["S"] = "-".join(map(str, row["S"]))  # hashable: groupby works on it
        rows.append(row)
    return pd.DataFrame(rows)


def collect_text(root=None) -> str:
    """``collect`` as the command lines print it: one line per run, the main columns."""
    table = collect(root)
    cols = [c for c in ("run", "config", "status", "epochs_done", "val_top1_err", "val_top5_err") if c in table]
    return table[cols].to_string(index=False) if len(table) else "no runs"


# --- units: fractions (old folders) to percent ---------------------------------------------------

def _needs_migration(summary: dict) -> bool:
    return summary.get("units") != UNITS and any(k in summary for k in ERROR_KEYS)


def _to_percent(row: dict) -> dict:
    return {k: (100 * float(v) if k in ERROR_KEYS and v not in (None, "") else v) for k, v in row.items()}


def migrate(run_dir) -> bool:
    """Convert a training run folder whose errors are fractions to percent, in place (summary,
    metrics and the history in its checkpoint, which a resumed run appends to). Returns False
    when there was nothing to convert. Each file is rewritten atomically; the summary last, so
    an interrupted migration is simply run again."""
    run_dir = Path(run_dir)
    path = run_dir / "summary.json"
    summary = read_json(path) if path.is_file() else {}
    if not _needs_migration(summary):
        return False
    metrics = run_dir / "metrics.csv"
    if metrics.is_file():
        with open(metrics, newline="") as f:
            reader = csv.DictReader(f)
            rows, fields = list(reader), reader.fieldnames
        # not converted yet when its last row still equals the (unconverted) summary
        last, final = rows[-1].get("val_top1_err") if rows else None, summary.get("val_top1_err")
        if last not in (None, "") and final is not None and abs(float(last) - float(final)) < 1e-9:
            write_csv(metrics, [_to_percent(r) for r in rows], fields)
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        if isinstance(ckpt, dict) and ckpt.get("units") != UNITS:
            ckpt["history"] = [_to_percent(r) for r in ckpt.get("history", [])]
            ckpt["units"] = UNITS
            save_checkpoint(ckpt, ckpt_path)
    write_json(path, {**_to_percent(summary), "units": UNITS})
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vgg_lib.runs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="convert run folders (recursively) whose errors are fractions to percent")
    m.add_argument("folders", nargs="+")
    c = sub.add_parser("collect", help="print every run folder under ROOT as a table")
    c.add_argument("root", nargs="?", default=None)
    args = p.parse_args(argv)
    if args.command == "migrate":
        n = 0
        for folder in args.folders:
            for summary in sorted(Path(folder).rglob("summary.json")):
                n += migrate(summary.parent)
        print(f"migrated {n} run folder(s) to percent")
        return 0
    print(collect_text(args.root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
