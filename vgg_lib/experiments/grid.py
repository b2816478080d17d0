"""The reference grid, read from ``grid.yaml`` (this folder): its runs, their training parameters
and seeds, evaluations, sets, transfer sources, localisers, and the tasks of ``reproduce`` in
scheduling order (the file's order).

The names below are the grid of the package's file. ``load(path)`` reads and checks another
file (``GridError`` names what is wrong); ``use(path)`` makes it the grid of this module (a test's
tiny grid)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

GRID_FILE = Path(__file__).with_name("grid.yaml")
TOP_KEYS = {"seeds", "crop", "scales", "eval_images", "multi_crop_images", "recipes", "evaluations", "runs",
            "sets", "transfer", "localisation", "tables"}
RECIPE_KEYS = {"derives", "params", "seeds", "init_run", "init_source"}
RUN_KEYS = {"recipe", "config", "params", "seeds", "init_run", "init_source", "evals"}
SET_KEYS = {"runs", "test", "paired"}
LOCALISATION_KEYS = {"source", "params", "localisers", "unions", "table8"}
TABLE_KEYS = {"evaluated", "evaluated_shapes", "table5_nets", "fusion_members", "ensembles", "verify"}
STARTS = ("init_run", "init_source")  # a run that starts from another run (same seed)
PARTS = ("train", "eval", "transfer", "localise")


class GridError(ValueError):
    """The grid file is not valid; the message names the file, the record and the fix."""


def _keys(where: str, record, allowed: set, required=()) -> dict:
    if not isinstance(record, dict):
        raise GridError(f"{where}: a {type(record).__name__}, expected a mapping with keys {sorted(allowed)}")
    unknown = sorted(set(map(str, record)) - allowed)
    if unknown:
        raise GridError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(map(str, allowed))}")
    missing = [k for k in required if k not in record]
    if missing:
        raise GridError(f"{where}: missing key(s) {missing}")
    return record


def _seeds(where: str, seeds) -> tuple[int, ...]:
    ok = (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in seeds) and len(set(seeds)) == len(seeds))
    if not ok:
        raise GridError(f"{where}: seeds={seeds!r}; expected a non-empty list of distinct integers >= 0")
    return tuple(seeds)


@functools.cache
def _param_names() -> frozenset[str]:
    import dataclasses

    from ..options import TrainConfig

    return frozenset(f.name for f in dataclasses.fields(TrainConfig))


def _params(where: str, params, names: set[str]) -> dict:
    _keys(where + " params", params or {}, names)
    bad = sorted(set(params or {}) & set(STARTS))
    if bad:
        raise GridError(f"{where}: {bad} go beside params (a run name), not in params")
    return dict(params or {})


def _recipes(spec: dict, names: set[str]) -> dict[str, dict]:
    """Each recipe's record with its chain resolved: params and seeds of the root first."""
    raw = spec.get("recipes") or {}
    out: dict[str, dict] = {}

    def resolve(name: str, chain: tuple) -> dict:
        if name in out:
            return out[name]
        if name not in raw:
            raise GridError(f"recipe {name!r} is unknown (named by {chain[-1]!r}); recipes: {', '.join(raw)}")
        if name in chain:
            raise GridError(f"recipes derive in a circle: {' -> '.join(chain + (name,))}")
        r = _keys(f"recipe {name}", raw[name], RECIPE_KEYS)
        base = resolve(r["derives"], chain + (name,)) if r.get("derives") else {"params": {}}
        rec = {**base, "params": {**base["params"], **_params(f"recipe {name}", r.get("params"), names)}}
        rec["params"].update({k: r[k] for k in STARTS if k in r})  # a run name, checked with the runs
        if "seeds" in r:
            rec["seeds"] = _seeds(f"recipe {name}", r["seeds"])
        out[name] = rec
        return rec

    for name in raw:
        resolve(name, ("recipes",))
    return out


def _evaluation(where: str, text: str, groups: dict) -> list[tuple]:
    """``"dense paper"``, ``"multi_crop paper 5000"``, ``"dense 37"`` or a group's name."""
    words = str(text).split()
    if len(words) == 1:
        if words[0] not in groups:
            raise GridError(f"{where}: evaluation group {text!r} is unknown; groups: {', '.join(groups)}")
        return [e for item in groups[words[0]] for e in _evaluation(where, item, {})]
    if len(words) not in (2, 3) or not (len(words) == 2 or words[2].isdigit()):
        raise GridError(f"{where}: evaluation {text!r}; expected 'method scales [images]'")
    method, scales = words[0], words[1]
    if scales not in ("paper", "train"):
        if not all(q.isdigit() for q in scales.split(",")):
            raise GridError(f"{where}: evaluation {text!r}: scales are paper, train or Q,Q,...")
        scales = tuple(int(q) for q in scales.split(","))
    return [(method, scales, int(words[2]) if len(words) == 3 else None)]


def records(spec: dict, names: set[str], required=("recipe", "config")) -> tuple[dict, dict, dict]:
    """(params of each run, its seeds, its evaluations), in the file's order, from the
    ``recipes``, ``runs``, ``evaluations`` and ``seeds`` of a grid file's ``spec``; ``names``:
    the parameters a run may set. Also the schema of ``python -m vgg_lib.jobs grid``'s runs."""
    recipes = _recipes(spec, names)
    runs, seeds, evals = {}, {}, {}
    default = _seeds("seeds", spec.get("seeds", [0, 1, 2]))
    groups = spec.get("evaluations") or {}
    for name, raw in (spec.get("runs") or {}).items():
        where = f"run {name}"
        r = _keys(where, raw, RUN_KEYS, required=required)
        if "recipe" in r and r["recipe"] not in recipes:
            raise GridError(f"{where}: recipe {r['recipe']!r} is unknown; recipes: {', '.join(recipes)}")
        base = recipes[r["recipe"]] if "recipe" in r else {"params": {}}
        config = {"config": r["config"]} if "config" in r else {}
        p = {**base["params"], **config, **_params(where, r.get("params"), names)}
        for key in STARTS:
            start = r.get(key, p.get(key))
            if start is not None:
                if start not in runs:
                    raise GridError(f"{where}: {key}={start!r} is not a run defined before it (a run starts "
                                    f"from an earlier one of the file)")
                p[key] = start
        runs[name] = p
        seeds[name] = _seeds(where, r["seeds"]) if "seeds" in r else base.get("seeds", default)
        evals[name] = [e for item in r.get("evals") or [] for e in _evaluation(where, item, groups)]
    if not runs:
        raise GridError("the grid has no runs")
    return runs, seeds, evals


def _refer(where: str, names, runs) -> None:
    unknown = [n for n in names if n not in runs]
    if unknown:
        raise GridError(f"{where} names unknown run(s) {unknown}; runs: {', '.join(runs)}")


def _sets(spec: dict, runs: dict) -> tuple[dict, dict, tuple]:
    sets, tests, paired = {}, {}, []
    for name, raw in (spec.get("sets") or {}).items():
        s = _keys(f"set {name}", raw, SET_KEYS, required=("runs",))
        _refer(f"set {name}", list(s["runs"].values()), runs)
        sets[name] = {str(label): run for label, run in s["runs"].items()}
        if s.get("test"):
            tests[name] = s["test"]
        if s.get("paired"):
            paired.append(name)
    return sets, tests, tuple(paired)


def _localisation(spec: dict, runs: dict) -> dict:
    loc = _keys("localisation", spec.get("localisation") or {}, LOCALISATION_KEYS,
                required=("source", "params", "localisers"))
    _refer("localisation source", [loc["source"]], runs)
    localisers = {}
    for name, v in loc["localisers"].items():
        v = dict(_keys(f"localiser {name}", v, {"per_class", "layers", "lr", "seeds"}))
        if "seeds" in v:
            v["seeds"] = _seeds(f"localiser {name}", v["seeds"])
        localisers[name] = v
    unions = {name: tuple(m) for name, m in (loc.get("unions") or {}).items()}
    for name, members in [*unions.items(), ("table8", loc.get("table8") or [])]:
        unknown = [m for m in members if m not in localisers]
        if unknown:
            raise GridError(f"localisation {name} names unknown localiser(s) {unknown}; localisers: "
                            f"{', '.join(localisers)}")
    return {"source": loc["source"], "params": dict(loc["params"]), "localisers": localisers, "unions": unions,
            "table8": tuple(loc.get("table8") or ())}


def _tables(spec: dict, runs: dict) -> dict:
    t = _keys("tables", spec.get("tables") or {}, TABLE_KEYS)
    for key in ("evaluated", "evaluated_shapes", "table5_nets"):
        _refer(f"tables.{key}", list((t.get(key) or {}).values()), runs)
    members = tuple(t.get("fusion_members") or ())
    _refer("tables.fusion_members", members, runs)
    ensembles = {name: tuple(m) for name, m in (t.get("ensembles") or {}).items()}
    for name, m in ensembles.items():
        if not set(m) <= set(members):
            raise GridError(f"ensemble {name!r} names nets that are not fusion members: {sorted(set(m) - set(members))}")
    verify = t.get("verify") or {"run": next(iter(runs)), "seed": 0}
    _refer("tables.verify", [verify["run"]], runs)
    return {"EVALUATED": dict(t.get("evaluated") or {}), "EVALUATED_SHAPES": dict(t.get("evaluated_shapes") or {}),
            "TABLE5_NETS": dict(t.get("table5_nets") or {}), "FUSION_MEMBERS": members, "ENSEMBLES": ensembles,
            "VERIFY": (verify["run"], int(verify["seed"]))}


def load(path=GRID_FILE) -> dict:
    """The grid of YAML file ``path``, checked, as the names of this module (``RUNS``, ``SETS``, ...)."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise GridError(f"grid file {path}: {str(e).splitlines()[0]}") from None
    try:
        _keys("the grid", spec, TOP_KEYS, required=("runs", "recipes"))
        recipes = _recipes(spec, _param_names())
        runs, seeds, evals = records(spec, _param_names())
        sets, tests, paired = _sets(spec, runs)
        transfer = _keys("transfer", spec.get("transfer") or {"sources": []}, {"sources", "target"})
        _refer("transfer", [s.split()[-1] for s in transfer["sources"]], runs)
        loc = _localisation(spec, runs) if spec.get("localisation") else None
        tables = _tables(spec, runs)
    except GridError as e:
        raise GridError(f"grid file {path}: {e}") from None
    scales = spec.get("scales") or {}
    default = _seeds("seeds", spec.get("seeds", [0, 1, 2]))
    return {"GRID_PATH": path, "SEEDS": default, "CROP": spec.get("crop", 32), **scales,
            "EVAL_IMAGES": dict(spec.get("eval_images") or {}), "MULTI_CROP_IMAGES": spec.get("multi_crop_images"),
            "RECIPES": {k: v["params"] for k, v in recipes.items()}, "RUNS": runs, "SEEDS_OF": seeds,
            "EVALS": {k: v for k, v in evals.items() if v}, "SETS": sets, "SET_TESTS": tests, "PAIRED_SETS": paired,
            "TRANSFER_SOURCES": tuple(transfer["sources"]), "TRANSFER_TARGET": transfer.get("target"),
            "LOC_SOURCE": loc and loc["source"], "LOCALISATION": loc and loc["params"],
            "LOCALISERS": loc["localisers"] if loc else {}, "LOCALISER_UNIONS": loc["unions"] if loc else {},
            "TABLE8": loc["table8"] if loc else (), "CROSS_SCALES": tuple(scales.values()), **tables}


def use(path=GRID_FILE) -> dict:
    """Make the grid of ``path`` this module's grid (every function below reads it)."""
    names = load(path)
    globals().update(names)
    return names


use()


def seeds_of(name: str, wanted=None) -> tuple[int, ...]:
    """The grid's seeds of run ``name`` (of those in ``wanted``, when given)."""
    return tuple(s for s in SEEDS_OF.get(name, SEEDS) if wanted is None or s in wanted)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def results_root(root=None) -> Path:
    """``root``, else ``$VGG_LIB_RESULTS``, else ``results/`` of the repository."""
    return Path(root or os.environ.get("VGG_LIB_RESULTS") or repo_root() / "results").expanduser()


def work_root(root=None) -> Path:
    """Where the reference runs keep their checkpoints (ignored by git)."""
    base = Path(root or os.environ.get("VGG_LIB_RUNS") or repo_root() / "runs").expanduser()
    return base / "reference"


def folder_name(name: str, seed: int) -> str:
    return f"{name}-s{seed}"


def train_params(name: str, seed: int, work=None) -> dict:
    """The TrainConfig fields of run ``name`` with ``seed`` (dependencies as run folders)."""
    if name not in RUNS:
        raise ValueError(f"run {name!r} is unknown; the reference runs are: {', '.join(RUNS)}")
    p = {**RECIPES.get("RECIPE", {}), **RUNS[name], "seed": seed}
    for key in STARTS:
        if p.get(key) is not None:
            p[key] = str(work_root(work) / folder_name(p[key], seed))
    p["run_dir"] = str(work_root(work) / folder_name(name, seed))
    return p


def dependencies(name: str) -> list[str]:
    return [RUNS[name][k] for k in STARTS if RUNS[name].get(k)]


def with_dependencies(runs) -> list[str]:
    """``runs`` and every run they start from, in scheduling order."""
    wanted, stack = set(), list(runs)
    while stack:
        n = stack.pop()
        if n not in wanted:
            wanted.add(n)
            stack += dependencies(n)
    return [n for n in RUNS if n in wanted]


def localiser_seeds(name: str, seeds=None) -> tuple[int, ...]:
    """The seeds of ``seeds`` (default: the grid's) for which the grid has localiser or union ``name``."""
    seeds = SEEDS if seeds is None else seeds
    return tuple(s for s in seeds if s in LOCALISERS.get(name, {}).get("seeds", seeds))


def tasks(names=None, seeds=None, parts=PARTS, localisers=None) -> list[tuple]:
    """Every (kind, name, seed, spec) of the grid, in scheduling order. ``parts``: which kinds
    of work besides training (``"eval"``, ``"transfer"``, ``"localise"``: the localisers and
    their unions, when their source ``LOC_SOURCE`` is among ``names``); ``localisers``: only
    these variants and unions (default all)."""
    names = list(RUNS) if names is None else names
    out = []
    for name in names:
        for seed in seeds_of(name, seeds):
            out.append(("train", name, seed, None))
            if "eval" in parts:
                out += [("eval", name, seed, spec) for spec in EVALS.get(name, [])]
    if "transfer" in parts:
        for source in TRANSFER_SOURCES:
            base = source.split()[-1]
            if base in names:
                out += [("transfer", source, seed, None) for seed in seeds_of(base, seeds)]
    if "localise" in parts and LOC_SOURCE in names:
        wanted = set(LOCALISERS) | set(LOCALISER_UNIONS) if localisers is None else set(localisers)
        for union in wanted & set(LOCALISER_UNIONS):
            wanted |= set(LOCALISER_UNIONS[union])
        for seed in seeds_of(LOC_SOURCE, seeds):
            out += [("localise", v, seed, None) for v in LOCALISERS if v in wanted and seed in localiser_seeds(v)]
            out += [("localise-union", u, seed, None) for u in LOCALISER_UNIONS if u in wanted]
    return out


def task_key(task) -> tuple:
    """What other tasks' ``needs`` name: ``(kind, name, seed)``, and the spec of an evaluation."""
    return tuple(task) if task[0] == "eval" else tuple(task[:3])


def needs(task) -> set[tuple]:
    """The tasks (``(kind, name, seed)``) that must be done before ``task`` starts."""
    kind, name, seed, _ = task
    if kind == "eval":
        return {("train", name, seed)}
    if kind == "transfer":
        return {("train", name.split()[-1], seed)}
    if kind == "localise":
        return {("train", LOC_SOURCE, seed)}
    if kind == "localise-union":
        return {("localise", member, seed) for member in LOCALISER_UNIONS[name]}
    return {("train", d, seed) for d in dependencies(name)}
