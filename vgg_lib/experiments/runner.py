"""The grid's tasks -- train, evaluate, transfer, localise -- their provenance records, and
``reproduce``, which runs the tasks not done yet with ``vgg_lib.scheduler``.

Training goes through ``python -m vgg_lib.train`` (the same code as a papermill job or a
torchrun job); each run writes its checkpoint under ``runs/reference/`` (ignored) and its
light files -- parameters, metrics, summary, evaluation results, posteriors, provenance --
under ``results/<run>-s<seed>/``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import scheduler
from ..atomic import write_json
from ..cluster import train_arguments
from ..runs import diverged, load_run, read_summary, status
from . import grid as G
from .grid import folder_name, repo_root, results_root, train_params, work_root

def train_command(name: str, seed: int, work=None) -> list[str]:
    """``python -m vgg_lib.train ...`` for one run: what ``reproduce`` executes."""
    return [sys.executable, "-m", "vgg_lib.train", *train_arguments(train_params(name, seed, work))]


def _display(cmd: list[str], work) -> str:
    """The command as a user would type it: no interpreter path, no machine paths."""
    text = " ".join(["python"] + cmd[1:])
    return text.replace(str(work_root(work)), "runs/reference")


# --- provenance --------------------------------------------------------------------------------

def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "vgg_lib"], cwd=repo_root(),
                               capture_output=True, text=True).stdout.strip()
        return out + ("+modified" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(command: str, seconds: float, threads: int = 1, commit: str | None = None) -> dict:
    import torch

    return {"git_commit": commit or _git_commit(), "command": command, "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(), "threads": threads, "wall_seconds": round(seconds, 1),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "torch": torch.__version__}


# --- one run: train, export, evaluate ------------------------------------------------------------

LIGHT_FILES = ("params.json", "metrics.csv", "summary.json")


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _stale(out: Path, wanted: dict) -> list[str]:
    """The parameters whose exported value differs from ``wanted`` (none when not exported)."""
    have = _read(out / "params.json")
    if have is None:
        return []
    skip = ("run_dir", "init_run", "init_source", "device", "progress")
    return [k for k, v in wanted.items() if k not in skip and k in have and have[k] != v]


def _run_training(cmd: list[str]) -> subprocess.CompletedProcess:
    """``python -m vgg_lib.train ...`` on one thread, from the repository."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=repo_root())


def train_run(name: str, seed: int, results=None, work=None, log=print) -> Path:
    """Train run ``name``/``seed`` (reusing a finished checkpoint) and export its light files."""
    wanted = train_params(name, seed, work)
    work_dir = Path(wanted["run_dir"])
    out = results_root(results) / folder_name(name, seed)
    stale = _stale(out, wanted)
    if not stale and ((status(work_dir) == "finished" and status(out) == "finished")
                      or (diverged(work_dir) and diverged(out))):
        return out
    before = _read(out / "provenance.json") if stale == ["epochs"] else None
    cmd = train_command(name, seed, work)
    commit = _git_commit()  # the code the run starts with
    t0 = time.perf_counter()
    proc = _run_training(cmd)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or status(work_dir) != "finished":
        if not diverged(work_dir):  # a divergence is a result (it would diverge again); a crash is not
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"training {folder_name(name, seed)} failed: {tail[0]}")
    out.mkdir(parents=True, exist_ok=True)
    for f in LIGHT_FILES:
        shutil.copyfile(work_dir / f, out / f)
    params = json.loads((out / "params.json").read_text())
    for key in ("run_dir", "init_run", "init_source", "data_root"):  # no machine paths in git
        if params.get(key):
            params[key] = str(params[key]).replace(str(work_root(work)), "runs/reference")
    write_json(out / "params.json", params)
    if stale:  # what was computed from the old run describes another net
        for f in [*out.glob("eval_*.json"), *out.glob("posteriors_*.npz"),
                  *(out.parent / "transfer").glob(f"*{name}-s{seed}.json")]:
            f.unlink()
    if before:  # the cap was raised: this training went on from the old checkpoint (train.train)
        record = provenance(_display(cmd, work), before["wall_seconds"] + seconds, commit=commit)
        write_json(out / "provenance.json", {**record, "continued_from": before})
    elif not (out / "provenance.json").is_file() or seconds > 5:  # keep the training's own record
        write_json(out / "provenance.json", provenance(_display(cmd, work), seconds, commit=commit))
    log(f"trained {folder_name(name, seed)} in {seconds:.0f} s")
    return out


def test_scales(S, crop: int, scales) -> tuple[int, ...]:
    """``"paper"``: the three scales of Sect. 4.2; ``"train"``: the single scale of Sect. 4.1
    (S, or the middle of the jitter range); otherwise the given ints."""
    from ..data import jitter_middle
    from ..evaluate import paper_test_scales

    if scales == "paper":
        return paper_test_scales(S, crop=crop)
    if scales == "train":
        return (jitter_middle(S),)
    return tuple(int(q) for q in scales)


def eval_tag(method: str, scales, size=None) -> str:
    s = scales if isinstance(scales, str) else "-".join(map(str, scales))
    return f"{method}_{s}" + ("" if size is None else f"_n{size}")


def evaluate_run(name: str, seed: int, method: str, scales="paper", size=None, results=None,
                 work=None, log=print) -> Path:
    """Evaluate a trained reference run on the validation split; writes ``eval_<tag>.json`` and,
    for the ``"paper"`` and ``"train"`` scales, ``posteriors_<tag>.npz`` (float16) into its
    results folder."""
    import torch

    from .. import data
    from .. import evaluate as E

    out = results_root(results) / folder_name(name, seed)
    tag = eval_tag(method, scales, size)
    target = out / f"eval_{tag}.json"
    if target.is_file():
        return target
    torch.set_num_threads(1)
    commit = _git_commit()
    run = load_run(train_params(name, seed, work)["run_dir"])
    qs = test_scales(run.S, run.crop, scales)
    p = run.params
    val = data.build_dataset(p["dataset"], "val", root=p.get("data_root"),
                             size=size or G.EVAL_IMAGES.get(p["dataset"]))
    t0 = time.perf_counter()
    ev = E.evaluate(run.model, val, method, qs, mean=run.mean, pixel_scale=run.pixel_scale,
                    batch_size=64)
    seconds = time.perf_counter() - t0
    if isinstance(scales, str):  # the cross-scale scores (explicit Q) are read as numbers only: their
        # posteriors would take 10 MB of results/ for nothing
        np.savez_compressed(out / f"posteriors_{tag}.npz", posteriors=ev.posteriors.numpy().astype(np.float16),
                            labels=ev.labels.numpy().astype(np.int16))
    shown = scales if isinstance(scales, str) else ",".join(map(str, scales))  # as the command line takes them
    cmd = f"python -m vgg_lib.experiments evaluate {name} {seed} {method} {shown}" + (
        f" --size {size}" if size else "")
    write_json(target, {**ev.summary(), "dataset": p["dataset"], "split": "val",
                         "provenance": provenance(cmd, seconds, commit=commit)})
    log(f"evaluated {folder_name(name, seed)} {tag}: top-1 {ev.top1:.2f}% in {seconds:.0f} s")
    return target


def transfer_data():
    """The target's training and test sets (drawn once, cached by ``vgg_lib.data``)."""
    from .. import data

    t = G.TRANSFER_TARGET
    return (data.build_dataset(t["dataset"], "train", size=t["train"], image_size=t["image_size"]),
            data.build_dataset(t["dataset"], "test", size=t["test"], image_size=t["image_size"]))


def transfer_run(source: str, seed: int, results=None, work=None, log=print) -> Path:
    """Appendix B for one source net: stacked fc7 descriptors at Q = 37, 55, 73 (the paper's
    256, 384, 512), from which the single-scale and averaged variants follow; a linear SVM
    (C = 1) per variant; mean class recall in percent into ``results/transfer/``."""
    import torch
    from sklearn.preprocessing import normalize

    from .. import transfer as T
    from ..models import vgg

    out = results_root(results) / "transfer" / f"{source.replace(' ', '-')}-s{seed}.json"
    if out.is_file():
        return out
    torch.set_num_threads(1)
    commit = _git_commit()
    if source.startswith("random "):  # the architecture alone: Glorot weights, never trained
        trained = load_run(train_params(source.split()[1], seed, work)["run_dir"])
        torch.manual_seed(seed)
        model = vgg(trained.model.config, num_classes=trained.model.num_classes, width=trained.model.width,
                    batch_norm=trained.model.batch_norm, input_size=trained.crop, pools=trained.model.pools,
                    init="glorot").eval()
        run = trained
    else:
        run = load_run(train_params(source, seed, work)["run_dir"])
        model = run.model
    train_set, test_set = transfer_data()
    qs = T.paper_scales(model)
    t0 = time.perf_counter()
    kw = dict(scales=qs, aggregate="stack", mean=run.mean, pixel_scale=run.pixel_scale, batch_size=128,
              progress=False, return_labels=True)
    (xtr, ytr), (xte, yte) = T.extract_features(model, train_set, **kw), T.extract_features(model, test_set, **kw)

    def variants(stacked):
        blocks = stacked.reshape(len(stacked), len(qs), -1)
        return {f"single scale (Q={qs[0]})": normalize(blocks[:, 0]),
                "three scales, averaged": normalize(blocks.mean(1)), "three scales, stacked": stacked}

    vtr, vte = variants(xtr), variants(xte)
    scores = {k: T.linear_svm(vtr[k], ytr, vte[k], yte, C=1.0).mean_class_recall for k in vtr}
    seconds = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = f"python -m vgg_lib.experiments transfer '{source}' {seed}"
    write_json(out, {"source": source, "seed": seed, "target": G.TRANSFER_TARGET, "scales": list(qs),
                      "mean_class_recall": scores, "unit": "percent", "fc7_units": int(xtr.shape[1] // len(qs)),
                      "provenance": provenance(cmd, seconds, commit=commit)})
    log(f"transfer {source} s{seed}: " + ", ".join(f"{k} {v:.1f}" for k, v in scores.items()))
    return out


# --- localisation (Appendix A) ---------------------------------------------------------------------

def localisation_folder(name: str, seed: int, root) -> Path:
    """``<root>/localisation/<variant or union>-s<seed>``: the layout of results and checkpoints."""
    return Path(root) / "localisation" / folder_name(name, seed)


def localisation_params(name: str, seed: int) -> dict:
    """The parameters of localiser ``name`` (a key of ``LOCALISERS``) or of a union of
    localisers (``LOCALISER_UNIONS``) with ``seed``; ``source`` as the repository names it."""
    if name not in G.LOCALISERS and name not in G.LOCALISER_UNIONS:
        raise ValueError(f"localisation variant {name!r} is unknown; allowed: "
                         f"{', '.join([*G.LOCALISERS, *G.LOCALISER_UNIONS])}")
    S = train_params(G.LOC_SOURCE, seed)["S"]
    common = {"source": f"runs/reference/{folder_name(G.LOC_SOURCE, seed)}", "S": S,
              "protocol2_scales": list(test_scales(S, G.CROP, "paper")), "seed": seed}
    if name in G.LOCALISER_UNIONS:
        keep = ("val_size", "protocol2_size", "examples")
        return {"kind": "localise-union", "members": list(G.LOCALISER_UNIONS[name]), **common,
                **{k: G.LOCALISATION[k] for k in keep}}
    variant = {k: v for k, v in G.LOCALISERS[name].items() if k != "seeds"}
    return {"kind": "localise", **G.LOCALISATION, **variant, **common}


def _localisation_source(seed: int, work):
    """The finished D-shapes net of ``seed`` (``ValueError`` in one line if it is not there)."""
    return load_run(work_root(work) / folder_name(G.LOC_SOURCE, seed))


def _localisation_command(name: str, seed: int) -> str:
    return f"python -m vgg_lib.experiments localise --variants {name} --seeds {seed}"


LOCALISATION_FILES = ("params.json", "metrics.csv", "summary.json", "examples.npz")


def localise_run(name: str, seed: int, results=None, work=None, log=print) -> Path:
    """Fine-tune and test localiser ``name`` from the D-shapes net of ``seed`` with
    ``localisation.train_localiser`` (the code of the localise job): the checkpoint under
    ``runs/reference/localisation/``, the light files and provenance under
    ``results/localisation/<name>-s<seed>/``. A finished run with the same parameters is reused."""
    import torch

    from .. import localisation as L

    wanted = localisation_params(name, seed)
    if name not in G.LOCALISERS:
        raise ValueError(f"{name!r} is a union of localisers, not one; allowed: {', '.join(G.LOCALISERS)}")
    out = localisation_folder(name, seed, results_root(results))
    work_dir = localisation_folder(name, seed, work_root(work))
    if status(out) == "finished" and status(work_dir) == "finished" and _read(out / "params.json") == wanted:
        return out
    source = _localisation_source(seed, work)
    if _read(work_dir / "params.json") != wanted or status(work_dir) != "finished":
        torch.set_num_threads(1)
        commit = _git_commit()
        t0 = time.perf_counter()
        L.train_localiser(source, wanted, work_dir)
        record = provenance(_localisation_command(name, seed), time.perf_counter() - t0, commit=commit)
        write_json(work_dir / "provenance.json", record)
    out.mkdir(parents=True, exist_ok=True)
    for f in (*LOCALISATION_FILES, "provenance.json"):
        shutil.copyfile(work_dir / f, out / f)
    s = read_summary(out)
    log(f"localised {folder_name(name, seed)}: protocol 1 {s['protocol1_error']:.1f}%, protocol 2 "
        f"top-5 {s.get('top5_loc_error', float('nan')):.1f}% in {s['seconds']:.0f} s of fine-tuning")
    return out


def localise_union_run(name: str, seed: int, results=None, work=None, log=print) -> Path:
    """Protocol 2 for a union of localisers of one seed (``LOCALISER_UNIONS``): their boxes
    pooled and merged, rated by the D-shapes net; ``params.json``, ``summary.json``,
    ``examples.npz`` and ``provenance.json`` under ``results/localisation/<name>-s<seed>/``."""
    import torch

    from .. import localisation as L

    if name not in G.LOCALISER_UNIONS:
        raise ValueError(f"localisation union {name!r} is unknown; allowed: {', '.join(G.LOCALISER_UNIONS)}")
    wanted = localisation_params(name, seed)
    out = localisation_folder(name, seed, results_root(results))
    if status(out) == "finished" and _read(out / "params.json") == wanted:
        return out
    source = _localisation_source(seed, work)
    nets = [L.load_localiser(localisation_folder(m, seed, work_root(work)), source) for m in wanted["members"]]
    torch.set_num_threads(1)
    commit = _git_commit()
    t0 = time.perf_counter()
    scores = L.evaluate_localisers(nets, source, wanted, out)
    seconds = time.perf_counter() - t0
    write_json(out / "params.json", wanted)
    write_json(out / "provenance.json", provenance(_localisation_command(name, seed), seconds, commit=commit))
    write_json(out / "summary.json", {"status": "finished", "units": "percent", **scores})
    log(f"localised {folder_name(name, seed)}: protocol 2 top-5 {scores['top5_loc_error']:.1f}%")
    return out


# --- the grid: what is done, what is left, in what order -------------------------------------------

def is_done(task, results=None, work=None) -> bool:
    """Whether ``task``'s results are in ``results/`` (read from its files only: no model is loaded)."""
    kind, name, seed, spec = task
    root = results_root(results)
    if kind == "train":
        out = root / folder_name(name, seed)
        return (status(out) == "finished" or diverged(out)) and not _stale(out, train_params(name, seed, work))
    if kind == "eval":
        return (root / folder_name(name, seed) / f"eval_{eval_tag(*spec)}.json").is_file()
    if kind == "transfer":
        return (root / "transfer" / f"{name.replace(' ', '-')}-s{seed}.json").is_file()
    out = localisation_folder(name, seed, root)
    return status(out) == "finished" and _read(out / "params.json") == localisation_params(name, seed)


def pending(todo: list[tuple], results=None, work=None) -> list[tuple]:
    """The tasks of ``todo`` to run: those not done, what they need (a training that is done is
    reused from its checkpoint if there is one), and the evaluations and transfers of a training
    that is not done (a training whose parameters changed deletes them)."""
    by_key = {G.task_key(t): t for t in todo}
    keys = {k for k, t in by_key.items() if not is_done(t, results, work)}
    trained = {(k[1], k[2]) for k in keys if k[0] == "train"}
    stack = list(keys)
    while stack:
        for need in G.needs(by_key[stack.pop()]):
            if need in by_key and need not in keys:
                keys.add(need)
                stack.append(need)
    keys |= {k for k, t in by_key.items() if t[0] in ("eval", "transfer") and (t[1].split()[-1], t[2]) in trained}
    return [t for t in todo if G.task_key(t) in keys]


def nothing_to_do(todo: list[tuple], results=None) -> str:
    count = {kind: sum(t[0] == kind for t in todo) for kind in ("train", "eval", "transfer")}
    runs = len({t[1] for t in todo if t[0] == "train"})
    localisations = sum(t[0].startswith("localise") for t in todo)
    return (f"nothing to do: {runs} runs ({count['train']} trainings), {count['eval']} evaluations, "
            f"{count['transfer']} transfers and {localisations} localisations already in {results_root(results)}")


def run_task(task, results=None, work=None):
    kind, name, seed, spec = task
    if kind == "eval":
        return evaluate_run(name, seed, *spec, results=results, work=work)
    run = {"train": train_run, "transfer": transfer_run, "localise": localise_run,
           "localise-union": localise_union_run}[kind]
    return run(name, seed, results, work)


def describe(task) -> str:
    kind, name, seed, spec = task
    return f"{kind} {folder_name(name, seed)}" + (f" {spec}" if spec else "")


def reproduce(names=None, seeds=None, jobs: int = 2, results=None, work=None, parts=G.PARTS,
              localisers=None, log=print) -> list[str]:
    """Run the tasks of the grid (``grid.tasks``) whose results are not in ``results/`` yet, with
    ``jobs`` threads (each task on one thread: training in a subprocess); a task starts when
    what it needs is done. Returns the failures (a failed task fails only what needs it)."""
    todo = G.tasks(names, seeds, parts, localisers)
    left = pending(todo, results, work)
    if not left:
        log(nothing_to_do(todo, results))
        return []
    log(f"{len(left)} of the grid's {len(todo)} tasks to do ({len(todo) - len(left)} already in "
        f"{results_root(results)}), {max(1, jobs)} at a time")
    work_list = [scheduler.Task(G.task_key(t), lambda t=t: run_task(t, results, work), G.needs(t), describe(t))
                 for t in left]
    outcome = scheduler.run(work_list, jobs, log=lambda line: print(line, flush=True))
    log(f"grid finished in {outcome.seconds:.0f} s; {len(outcome.failures)} failures")
    return outcome.failures


# --- verification (the book build re-runs one reference run) --------------------------------------

def verify(name: str | None = None, seed: int | None = None, results=None, work=None, amp: str | None = None) -> dict:
    """Re-train run ``name``/``seed`` (default: ``VERIFY``) from its recorded parameters into a
    fresh folder and compare its final validation errors with the committed ones. Agreement
    means within the seed spread of that run (3 standard deviations over the committed seeds, at
    least 0.5 points). Raises ``AssertionError`` with both numbers otherwise. ``amp``: re-train in
    another precision than the committed run's (bf16 against a float32 run: the same result
    within the seed spread)."""
    from .readers import load

    name, seed = name or G.VERIFY[0], G.VERIFY[1] if seed is None else seed
    committed = load(name, seed, results)
    spread = [load(name, s, results)["summary"]["val_top1_err"] for s in G.seeds_of(name)]
    tol = max(3 * float(np.std(spread, ddof=1)), 0.5)
    fresh_work = work_root(work).parent / ("verify" if amp is None else f"verify-{amp}")
    run_dir = fresh_work / "reference" / folder_name(name, seed)
    cmd = train_command(name, seed, fresh_work) + ([] if amp is None else ["--amp", amp])
    if status(run_dir) != "finished":
        proc = _run_training(cmd)
        if proc.returncode != 0:
            raise RuntimeError(f"verification run failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    fresh = read_summary(run_dir)
    ours, theirs = fresh["val_top1_err"], committed["summary"]["val_top1_err"]
    result = {"run": folder_name(name, seed), "committed_top1": theirs, "fresh_top1": ours,
              "amp": json.loads((run_dir / "params.json").read_text())["amp"],
              "difference": ours - theirs, "tolerance": tol, "seed_values": spread,
              "committed_epochs": committed["summary"]["epochs_done"], "fresh_epochs": fresh["epochs_done"]}
    if abs(ours - theirs) > tol:
        raise AssertionError(f"reference run {folder_name(name, seed)} does not reproduce: committed "
                             f"top-1 error {theirs:.2f}%, re-run {ours:.2f}% (difference "
                             f"{ours - theirs:+.2f} > tolerance {tol:.2f} points)")
    return result
