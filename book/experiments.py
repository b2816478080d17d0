"""The book's training runs, shared by every chapter (Training, Testing, Fusion, ...).

Each run is ``jobs/train.ipynb`` executed by ``vgg_lib.jobs.run`` with ``BASE`` plus a few
overrides. Equal parameters name the same run folder, so the first chapter that asks for a
network trains it and every later one reuses it::

    import experiments
    path = experiments.run("D", seed=0)                  # one run folder
    table = experiments.train(experiments.DEPTH)         # a named set, every seed: a DataFrame

A named set maps a label to overrides of ``BASE``. An ``init_run`` or ``init_source`` that names
another label of the same set stands for that label's run folder (same seed): it is trained first.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

from vgg_lib import jobs
from vgg_lib.data import scaled_size

JOB = Path(__file__).resolve().parent / "jobs" / "train.ipynb"
SEEDS = (0, 1)
CROP = 32  # the paper's 224, scaled down
# The paper's training scales (Sect. 3.1), mapped to 32-pixel crops: 256 -> 37, 384 -> 55.
SCALES = {"256": scaled_size(256, CROP), "384": scaled_size(384, CROP),
          "256-512": [scaled_size(256, CROP), scaled_size(512, CROP)]}

# The paper's recipe (Sect. 3.1) except: 1/8 of the channels, 32-pixel crops, the built-in
# digits, 3 epochs of batches of 32, batch normalisation and Glorot initialisation (so that a
# few hundred SGD steps get somewhere).
BASE = dict(dataset="digits", width=0.125, crop=CROP, S=SCALES["256"], epochs=3, batch_size=32,
            lr=0.01, batch_norm=True, init="glorot", device="cpu")

# Table 3's comparisons, one named set each.
DEPTH = {c: dict(config=c) for c in ("A", "B", "D", "E")}          # 11, 13, 16, 19 layers
LRN = {c: dict(config=c) for c in ("A", "A-LRN")}                   # local response normalisation
FILTERS = {c: dict(config=c) for c in ("B", "B-5x5")}               # 3x3 pairs vs single 5x5
ONE_BY_ONE = {c: dict(config=c) for c in ("C", "D")}                # 1x1 vs 3x3 in the last blocks
# Sect. 3.1: S = 384 starts from the S = 256 net with lr 1e-3; the jittered net from S = 384.
SCALE = {"S=256": dict(config="D", S=SCALES["256"]),
         "S=384": dict(config="D", S=SCALES["384"], lr=1e-3, init_run="S=256"),
         "S=256-512": dict(config="D", S=SCALES["256-512"], lr=1e-3, init_run="S=384")}
# Sect. 3.1: random (normal, std 0.01) vs Glorot vs the first four convs and FC layers of net A.
INIT = {"A": dict(config="A"),
        "normal": dict(config="D", init="normal"),
        "glorot": dict(config="D", init="glorot"),
        "from A": dict(config="D", init="from_run", init_source="A")}
SETS = {"DEPTH": DEPTH, "LRN": LRN, "FILTERS": FILTERS, "ONE_BY_ONE": ONE_BY_ONE,
        "SCALE": SCALE, "INIT": INIT}


def params(config: str, seed: int = 0, **overrides) -> dict:
    """The job parameters of one run: ``BASE``, the config, the seed, the overrides."""
    return {**BASE, "config": config, "seed": seed, **overrides}


@lru_cache(maxsize=None)
def _job_dir(key: str, root: str) -> Path:  # reading the job's parameters takes a while
    return jobs.job_dir(JOB, json.loads(key), root).resolve()


def run_dir(config: str, seed: int = 0, **overrides) -> Path:
    """Where the run lives (trained or not): nothing is executed."""
    return _job_dir(json.dumps(params(config, seed, **overrides), sort_keys=True), str(jobs.runs_root()))


def run(config: str, seed: int = 0, **overrides) -> Path:
    """Train the run (or reuse it when finished) and return its folder."""
    path = run_dir(config, seed, **overrides)
    if jobs.status(path) == "finished":
        return path
    return jobs.run(JOB, params(config, seed, **overrides)).resolve()


def _resolve(named: dict, label: str, seed: int) -> dict:
    """The overrides of ``label`` with labels in ``init_run``/``init_source`` made run folders."""
    spec = dict(named[label])
    for key in ("init_run", "init_source"):
        if spec.get(key) in named:
            spec[key] = str(run_dir(seed=seed, **_resolve(named, spec[key], seed)))
    return spec


def _depth(named: dict, label: str) -> int:
    refs = [named[label].get(k) for k in ("init_run", "init_source")]
    return 1 + max((_depth(named, r) for r in refs if r in named), default=-1)


def train(named: dict, seeds=SEEDS, parallel: int = 2):
    """Run every label of a named set for every seed; returns one row per run (label, seed,
    config, S, final and best validation errors in percent, epochs, seconds, run folder).

    Up to ``parallel`` jobs run at once, each on one CPU thread (small nets use threads badly);
    a run that names another label waits for it."""
    import pandas as pd

    levels = sorted({_depth(named, k) for k in named})
    old = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({k: "1" for k in old})  # inherited by the job kernels
    try:
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            for level in levels:  # a level needs only the runs of lower levels
                todo = [(k, s) for k in named if _depth(named, k) == level for s in seeds]
                list(pool.map(lambda ks: run(seed=ks[1], **_resolve(named, *ks)), todo))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    rows = []
    for label in named:
        for seed in seeds:
            path = run_dir(seed=seed, **_resolve(named, label, seed))
            s = json.loads((path / "summary.json").read_text())
            spec = params(seed=seed, **_resolve(named, label, seed))
            rows.append({"label": label, "seed": seed, "config": spec["config"],
                         "S": "-".join(map(str, spec["S"])) if isinstance(spec["S"], list) else spec["S"],
                         "top1_err": 100 * s["val_top1_err"], "top5_err": 100 * s["val_top5_err"],
                         "best_top1_err": 100 * s["best_val_top1_err"], "epochs": s["epochs_done"],
                         "seconds": s["seconds"], "status": s["status"], "run_dir": str(path)})
    return pd.DataFrame(rows)


def summarise(results, by: str = "label"):
    """Mean and standard deviation over seeds of the final validation errors (percent)."""
    g = results.groupby(by, sort=False)
    out = g[["top1_err", "top5_err"]].agg(["mean", "std"]).round(1)
    out.columns = [f"{a} {b}" for a, b in out.columns]
    out.insert(0, "seeds", g.size())
    return out
