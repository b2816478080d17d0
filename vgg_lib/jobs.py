"""Job notebooks, run folders and result tables: how the book and batch users run experiments.

A *job* is a notebook with a ``parameters`` cell (``book/jobs/train.ipynb``) executed by
papermill. ``run(notebook, params)`` executes it into a *run folder* named by its parameters
(``vgg_lib.runs``; a training job's folder is the one ``python -m vgg_lib.train`` would use,
``D-shapes-s0-1a2b3c4d``): the same parameters give the same folder, so a finished run
is reused (the Training chapter trains a net, the Testing chapter finds it), an unfinished one
resumes from its checkpoint, and ``force=True`` starts again. ``grid`` runs many jobs
(``--jobs`` at a time, with the scheduler of the reference grid, ``vgg_lib.scheduler``) and goes
on when one fails; ``collect`` reads every run folder under a root -- written by the book, by
papermill or by ``torchrun -m vgg_lib.train`` -- into one pandas DataFrame.

A grid has two executors: ``local`` (the default, processes on this machine) and ``slurm``
(``vgg_lib.cluster``: each job one Slurm job, with the grid file's ``resources``);
``grid_status`` says where each job of a grid is, locally or on the cluster.

From a shell::

    python -m vgg_lib.jobs grid book/jobs/example_grid.yaml
    python -m vgg_lib.jobs grid book/jobs/imagenet_table3_slurm.yaml --executor slurm
    python -m vgg_lib.jobs status book/jobs/imagenet_table3_slurm.yaml
    python -m vgg_lib.jobs collect runs
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

from .atomic import write_json
from .checks import ConfigError
from .runs import RUNTIME_FIELDS, collect_text, is_done, read_summary, run_name, runs_root, status

KERNEL = "python3"
NAME_WORDS = ("config", "dataset", "seed")


class JobError(RuntimeError):
    """A job notebook failed; the message is the notebook's error in one line."""

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


def notebook_parameters(notebook) -> dict:
    """The defaults of a notebook's ``parameters`` cell, as Python values."""
    import papermill

    out = {}
    for name, p in papermill.inspect_notebook(str(notebook)).items():
        try:
            out[name] = ast.literal_eval(p["default"])
        except (ValueError, SyntaxError):
            out[name] = p["default"]
    return out


def parameters_cell(config_class) -> str:
    """The ``parameters`` cell of a job notebook generated from a dataclass: one annotated line
    per field, ``name: type = default  # help``. The training job's cell is this text for
    ``TrainConfig`` (a test checks it), so an option is typed once, in ``TrainConfig``."""
    import dataclasses

    lines = []
    for f in dataclasses.fields(config_class):
        kind = str(f.type).split(" |")[0]
        if any(c in f.metadata["help"] for c in "='\""):  # papermill's parser skips such lines
            raise ValueError(f"the help of {config_class.__name__}.{f.name} has = or a quote: papermill cannot read it")
        default = json.dumps(f.default) if isinstance(f.default, str) else repr(f.default)
        lines.append(f"{f.name}: {kind} = {default}  # {f.metadata['help']}")
    return "\n".join(lines)


def is_training_job(parameters) -> bool:
    """A notebook whose parameters are exactly ``TrainConfig``'s fields trains one run."""
    import dataclasses

    from .options import TrainConfig

    return set(parameters) == {f.name for f in dataclasses.fields(TrainConfig)}


def job_dir(notebook, params: dict, root=None) -> Path:
    """The run folder of ``notebook`` with ``params``: the notebook's defaults are filled in
    first, so leaving a parameter out or giving its default value names the same run."""
    notebook = Path(notebook)
    defaults = notebook_parameters(notebook)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"params {unknown} are not parameters of {notebook.name}; allowed: "
                         f"{', '.join(defaults)}")
    if is_training_job(defaults):  # named as vgg_lib.train names it: the CLI run is the same folder
        from .options import TrainConfig

        args = {**defaults, **params, "run_dir": None, "root": str(runs_root(root))}
        try:
            return TrainConfig(**args).resolved_run_dir()
        except ConfigError as e:  # a bad parameter stops the job before anything is written
            raise JobError(f"{notebook.name} failed: ConfigError: {e}") from None
    full = {k: v for k, v in {**defaults, **params}.items() if k not in RUNTIME_FIELDS}
    words = [notebook.stem] + [full.get(k) for k in NAME_WORDS if k in full]
    words = [f"s{w}" if k == "seed" else w for k, w in zip(("nb",) + NAME_WORDS, words)]
    return runs_root(root) / run_name({"notebook": notebook.stem, **full}, words)


def run(notebook, params: dict | None = None, root=None, force: bool = False,
        progress: bool = False) -> Path:
    """Execute job ``notebook`` with ``params`` into its run folder under ``root`` and return
    the folder. A finished run is reused without executing anything; ``force=True`` deletes
    it and runs again; an unfinished one (killed, crashed) resumes from its checkpoint.

    The executed notebook is saved in the run folder. A failing job raises ``JobError`` with
    the notebook's error in one line; if it failed before writing anything (a bad parameter),
    nothing is left behind.
    """
    import papermill

    notebook = Path(notebook)
    if not notebook.is_file():
        raise ValueError(f"notebook={str(notebook)!r} does not exist")
    params = {k: str(v) if isinstance(v, Path) else v for k, v in (params or {}).items()}
    out_dir = job_dir(notebook, params, root)
    if force and out_dir.exists():
        shutil.rmtree(out_dir)
    if is_done(out_dir):
        return out_dir
    declares_run_dir = "run_dir" in notebook_parameters(notebook)
    if declares_run_dir:
        params["run_dir"] = str(out_dir.resolve())
    # Papermill writes the notebook as it runs: keep it aside until the job has a folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.{os.getpid()}.ipynb"
    error = None
    try:
        papermill.execute_notebook(str(notebook), str(partial), parameters=params, kernel_name=KERNEL,
                                   progress_bar=progress)
    except papermill.PapermillExecutionError as e:
        error = JobError(f"{notebook.name} failed: {e.ename}: {e.evalue}")
    except Exception as e:  # the kernel died, could not start, ...
        error = JobError(f"{notebook.name} failed: {type(e).__name__}: {e}")
    if not declares_run_dir and error is None:  # a job that does not manage a run folder
        write_json(out_dir / "params.json", params)
        write_json(out_dir / "summary.json", {"status": "finished"})
    if out_dir.is_dir():
        os.replace(partial, out_dir / notebook.name)
        if error is not None and status(out_dir) != "failed":
            write_json(out_dir / "summary.json", {**read_summary(out_dir), "status": "failed",
                                                  "failure": {"reason": str(error)}})
    else:
        partial.unlink(missing_ok=True)
    if error is not None:
        raise error
    return out_dir


def expand(grid: dict) -> list[dict]:
    """``{"config": ["A", "D"], "seed": [0, 1]}`` -> the four parameter dicts of the product."""
    keys = list(grid)
    values = [v if isinstance(v, list) else [v] for v in grid.values()]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


STARTS_FROM = "starts_from"  # in a job of a grid file's runs: {"init_run": index of the job it starts from}


def grid(notebook, params_list, root=None, force: bool = False, progress: bool = True, jobs: int = 1,
         executor: str = "local", poll: float = 30.0):
    """Run every parameter dict of ``params_list``, ``jobs`` at a time (``vgg_lib.scheduler``); a
    failing job is recorded and the rest go on, but a job that starts from another one
    (``{"starts_from": {"init_run": i}}``, from a grid file's ``runs``) waits for job ``i``, is
    given its run folder, and is skipped if it failed. Returns a DataFrame with one row per job,
    in the given order: its params, ``run_dir``, ``status``, ``error``.

    ``executor="slurm"`` submits every job to Slurm at once instead (``vgg_lib.cluster``: each
    job held by ``afterok`` on those it starts from, its ``{"resources": {...}}`` asked for) and
    follows them every ``poll`` seconds; the table gains the Slurm job ids."""
    import contextlib

    import pandas as pd

    from . import cluster, scheduler

    if executor not in cluster.EXECUTORS:
        raise ConfigError(f"executor={executor!r} is not allowed: one of {', '.join(cluster.EXECUTORS)}")
    starts = [dict(p.get(STARTS_FROM) or {}) for p in params_list]
    asked = [cluster.resources(p.get(cluster.RESOURCES), f"job {i}") for i, p in enumerate(params_list)]
    params_list = [{k: v for k, v in p.items() if k not in (STARTS_FROM, cluster.RESOURCES)} for p in params_list]
    rows = [{**params, "run_dir": None, "status": None, "error": None} for params in params_list]
    if executor == "slurm":  # every job is submitted before any is followed
        slurm = cluster.SlurmGrid(notebook, params_list, starts, asked, root=root, force=force, poll=poll)
        for i, row in enumerate(rows):
            row.update(run_dir=slurm.run_dirs[i] and str(slurm.run_dirs[i]), slurm_job=slurm.job_id(i))
        jobs = max(1, len(params_list))  # following a job costs nothing: follow all at once
    finished = []

    def execute(i: int, params: dict) -> Path:
        if executor == "slurm":
            return slurm.wait(i)
        return run(notebook, params, root=root, force=force)

    def job(i: int):
        def fn():
            t0, row = time.perf_counter(), rows[i]
            params = {**params_list[i], **{k: rows[j]["run_dir"] for k, j in starts[i].items()}}
            try:
                if executor == "local":
                    row["run_dir"] = str(job_dir(notebook, params, root))
                row["status"] = status(execute(i, params))
            except Exception as e:
                row.update(status="failed", error=str(e))
                raise
            finally:
                finished.append(i)
                if progress:
                    print(f"[{len(finished)}/{len(params_list)}] {row['status']:8s} {time.perf_counter() - t0:6.1f} s  "
                          f"{json.dumps(params_list[i], default=str)}" + (f"\n    {row['error']}" if row["error"] else ""),
                          flush=True)
        return fn

    tasks = [scheduler.Task(i, job(i), set(starts[i].values()), label=json.dumps(p, default=str))
             for i, p in enumerate(params_list)]
    with slurm.following() if executor == "slurm" else contextlib.nullcontext():
        scheduler.run(tasks, jobs, log=lambda line: None)  # each failure is in its row
    skipped = [i for i, row in enumerate(rows) if row["status"] is None]
    for i in skipped:
        rows[i].update(status="skipped", error="the job it starts from failed")
    if executor == "slurm":
        slurm.cancel(skipped)  # held on a failed job: the cluster would keep them pending
    return pd.DataFrame(rows)


def grid_status(notebook, params_list, root=None):
    """Where each job of a grid is, read from its run folder and, for jobs submitted to Slurm,
    from the queue (jobs are named by their run folders): ``queued``, ``running``, ``finished``,
    ``failed``, ``skipped`` (a job it starts from failed) or ``not started``. One row per job:
    its params, ``run_dir``, ``status``, ``slurm_job``, ``error``."""
    import pandas as pd

    from . import cluster

    queue = cluster.queued_by_name()
    rows = []
    for p in params_list:
        starts = dict(p.get(STARTS_FROM) or {})
        own = {k: v for k, v in p.items() if k not in (STARTS_FROM, cluster.RESOURCES)}
        row = {**own, "run_dir": None, "status": "not started", "slurm_job": None, "error": None}
        rows.append(row)
        try:
            params = {**own, **{k: rows[j]["run_dir"] for k, j in starts.items()}}
            run_dir = cluster.run_folder(notebook, params, root, pending=starts)
        except Exception as e:
            row.update(status="failed", error=str(e))
            continue
        row["run_dir"] = str(run_dir)
        job_id, state, reason = queue.get(run_dir.name, (None, None, None))
        row["slurm_job"] = job_id
        summary = read_summary(run_dir)
        if not summary and any(rows[j]["status"] in ("failed", "skipped") for j in starts.values()):
            row.update(status="skipped", error="a job it starts from failed")  # held, or cancelled for it
        elif is_done(run_dir):
            row.update(status=summary["status"], error=(summary.get("failure") or {}).get("reason"))
        elif state == "PENDING":
            row["status"] = "skipped" if reason == cluster.NEVER else "queued"
        elif state in cluster.RUNNING:
            row["status"] = "running"
        elif state is not None and state not in cluster.ENDED:  # requeued, preempted: to run again
            row["status"] = "queued"
        elif summary.get("status") == "failed" or state in cluster.ENDED - {"COMPLETED"}:
            row.update(status="failed", error=(summary.get("failure") or {}).get("reason")
                       or (f"Slurm job {job_id} ended {state} ({reason})" if state else None))
        elif summary.get("status") == "running":
            row["status"] = "running"
    return pd.DataFrame(rows)


# --- command line ------------------------------------------------------------------------------

def load_grid(path) -> tuple[Path, list[dict], Path | None]:
    """Read a grid file: ``notebook`` (relative to the file), optional ``root``, ``base``
    parameters shared by all jobs, and ``grid`` (a product of lists), ``jobs`` (a list) and/or
    ``runs`` with their ``recipes`` and ``seeds`` (records as in ``vgg_lib/experiments/grid.yaml``,
    see ``run_jobs``); ``resources`` for the ``slurm`` executor (``vgg_lib.cluster.Resources``),
    which a ``jobs:`` entry may override with its own ``resources``: each job then carries its
    checked resources under ``"resources"``."""
    import dataclasses

    import yaml

    from . import cluster

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"grid file {str(path)!r} does not exist")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"grid file {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    spec = {} if spec is None else spec
    keys = "keys notebook (required), root, base (a mapping), grid (a mapping of lists), jobs (a list of mappings)"
    if not isinstance(spec, dict):
        raise ConfigError(f"grid file {path}: a YAML {type(spec).__name__}, expected a mapping with {keys}")
    unknown = set(spec) - {"notebook", "root", "base", "grid", "jobs", "recipes", "runs", "seeds", cluster.RESOURCES}
    if unknown or "notebook" not in spec:
        raise ConfigError(f"grid file {path}: keys must be notebook, root, base, grid, jobs, recipes, runs, "
                          f"seeds, resources (notebook required); got {sorted(map(str, spec))}")
    if not isinstance(spec["notebook"], str) or not spec["notebook"]:
        raise ConfigError(f"grid file {path}: notebook={spec['notebook']!r}, expected a notebook path")
    base, grid_, jobs_ = spec.get("base") or {}, spec.get("grid") or {}, spec.get("jobs") or []
    for name, value, want in (("base", base, dict), ("grid", grid_, dict), ("jobs", jobs_, list)):
        if not isinstance(value, want):
            raise ConfigError(f"grid file {path}: {name} is a {type(value).__name__}; expected {keys}")
    if not all(isinstance(j, dict) for j in jobs_):
        raise ConfigError(f"grid file {path}: every entry of jobs must be a mapping of parameters")
    if any(isinstance(v, list) and not v for v in grid_.values()):
        raise ConfigError(f"grid file {path}: grid has an empty list; give every parameter at least one value")
    notebook = (path.parent / spec["notebook"]).resolve()
    jobs = [{**base, **p} for p in expand(grid_)] if grid_ else []
    jobs += [{**base, **p} for p in jobs_]
    jobs += run_jobs(spec, path, notebook, base, len(jobs))
    if not jobs:
        raise ConfigError(f"grid file {path} defines no jobs: give grid (a mapping of lists), jobs "
                          "(a list of mappings) and/or runs (records, as in vgg_lib/experiments/grid.yaml)")
    shared = cluster.resources(spec.get(cluster.RESOURCES), f"grid file {path}")
    if cluster.RESOURCES in spec or any(cluster.RESOURCES in j for j in jobs):  # checked now: before any submission
        for i, job in enumerate(jobs):
            own = cluster.resources(job.get(cluster.RESOURCES), f"grid file {path}, job {i}", base=shared)
            job[cluster.RESOURCES] = dataclasses.asdict(own)
    root = Path(spec["root"]) if spec.get("root") else None
    return notebook, jobs, root


def run_jobs(spec: dict, path, notebook, base: dict, first: int = 0) -> list[dict]:
    """The jobs of a grid file's ``recipes`` and ``runs``, records as in the reference grid
    (``vgg_lib/experiments/grid.yaml``: a run derives from a recipe with overrides, has seeds, and
    may start from an earlier run of the same seed, ``init_run``/``init_source``): one job per
    run and seed, in the file's order, numbered from ``first``, with ``base`` under each."""
    from .experiments import grid as G

    if not spec.get("runs"):
        return []
    try:
        runs, seeds, evals = G.records(spec, set(notebook_parameters(notebook)), required=())
    except G.GridError as e:
        raise ConfigError(f"grid file {path}: {e}") from None
    if any(evals.values()):
        raise ConfigError(f"grid file {path}: evals are run by python -m vgg_lib.experiments, not by job grids")
    index, out = {}, []
    for name, params in runs.items():
        for seed in seeds[name]:
            starts = {k: (params[k], seed) for k in G.STARTS if params.get(k)}
            missing = [f"{n}-s{s}" for n, s in starts.values() if (n, s) not in index]
            if missing:
                raise ConfigError(f"grid file {path}: run {name} seed {seed} starts from {missing}, not in the grid")
            job = {**base, **{k: v for k, v in params.items() if k not in G.STARTS}, "seed": seed}
            out.append({**job, STARTS_FROM: {k: index[d] for k, d in starts.items()}} if starts else job)
            index[(name, seed)] = first + len(out) - 1
    return out


def main(argv=None) -> int:
    from .cluster import EXECUTORS

    p = argparse.ArgumentParser(prog="python -m vgg_lib.jobs", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grid", help="run every job of a GRID.yaml file")
    g.add_argument("grid_file")
    g.add_argument("--root", default=None, help="runs root (default: the file's root, $VGG_LIB_RUNS, ./runs)")
    g.add_argument("--force", action="store_true", help="rerun finished jobs")
    g.add_argument("--jobs", type=int, default=1, help="local executor: jobs at a time (default 1)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: processes on this machine; slurm: one Slurm job per job, through submitit")
    g.add_argument("--poll", type=float, default=30.0, help="slurm executor: seconds between looks at the queue")
    s = sub.add_parser("status", help="queued / running / finished / failed per job of a GRID.yaml file")
    s.add_argument("grid_file")
    s.add_argument("--root", default=None, help="runs root (default: the file's root, $VGG_LIB_RUNS, ./runs)")
    c = sub.add_parser("collect", help="print every run folder under ROOT as a table")
    c.add_argument("root", nargs="?", default=None)
    args = p.parse_args(argv)
    if args.command == "collect":
        print(collect_text(args.root))
        return 0
    try:
        notebook, jobs, root = load_grid(args.grid_file)
        if args.command == "status":
            table = grid_status(notebook, jobs, root=args.root or root)
            print(table[["status", "slurm_job", "run_dir", "error"]].fillna("").to_string(index=False))
            return 0
        table = grid(notebook, jobs, root=args.root or root, force=args.force, jobs=args.jobs,
                     executor=args.executor, poll=args.poll)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if getattr(args, "executor", None) == "slurm":  # the submitted jobs go on without this process
            print(f"\nstopped following the grid; its Slurm jobs go on: python -m vgg_lib.jobs status {args.grid_file}",
                  file=sys.stderr)
        return 130
    print(table.drop(columns=["error"]).to_string(index=False))
    return int((table.status != "finished").any())


if __name__ == "__main__":
    sys.exit(main())
