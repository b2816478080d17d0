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
import hashlib
import json
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import write_atomic, write_csv, write_json
from .checks import ConfigError, read_json

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
