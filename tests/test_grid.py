"""The grid as data (vgg_lib/experiments/grid.yaml): what the loader rejects, the scheduler shared
by `experiments reproduce` and `jobs grid`, and a reproduce that has nothing to do."""

import threading
import time

import pytest
import yaml

from vgg_lib import scheduler
from vgg_lib.experiments import grid as G
from vgg_lib.experiments import runner as R

SPEC = yaml.safe_load(G.GRID_FILE.read_text())


def load(tmp_path, change):
    """Load the package's grid file after ``change(spec)``."""
    spec = yaml.safe_load(G.GRID_FILE.read_text())
    change(spec)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return G.load(path)


def test_every_run_is_one_record_and_the_schedule_is_the_files_order():
    assert list(G.RUNS) == list(SPEC["runs"])
    assert [t[1] for t in G.tasks(parts=("train",))][::1] == [n for n in SPEC["runs"] for _ in G.seeds_of(n)]
    text = G.GRID_FILE.read_text()
    for name in G.RUNS:  # a record key once; everything else refers to it
        assert text.count(f"\n  {name}: {{") + text.count(f"\n  {name}:\n") == 1, name
    assert G.RECIPES["FULL_60K"]["train_size"] is None and G.seeds_of("A-60k") == (0, 1, 2, 3, 4)


def set_key(path, value):
    def change(spec):
        *parents, last = path
        node = spec
        for p in parents:
            node = node[p]
        node[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (set_key(("runs", "A", "recipe"), "FAST"), r"run A: recipe 'FAST' is unknown; recipes: RECIPE, PLAIN"),
    (set_key(("recipes", "FULL", "derives"), "QUICK"), r"recipe 'QUICK' is unknown \(named by 'FULL'\)"),
    (set_key(("recipes", "RECIPE", "derives"), "CENTRED_TUNE"), r"recipes derive in a circle"),
    (set_key(("sets", "DEPTH", "runs", "A (11)"), "A-ful"), r"set DEPTH names unknown run\(s\) \['A-ful'\]"),
    (set_key(("runs", "A", "epochs"), 3), r"run A: unknown key\(s\) \['epochs'\]; allowed: "),
    (set_key(("runs", "A", "params"), {"epoch": 3}), r"run A params: unknown key\(s\) \['epoch'\]"),
    (set_key(("runs", "A", "seeds"), [0, 0]), r"run A: seeds=\[0, 0\]; expected a non-empty list of distinct"),
    (set_key(("runs", "A", "seeds"), []), r"run A: seeds=\[\]"),
    (set_key(("runs", "A", "evals"), ["dense"]), None),
    (set_key(("runs", "A", "evals"), ["denser"]), r"run A: evaluation group 'denser' is unknown"),
    (set_key(("runs", "A", "evals"), ["dense paper many"]), r"run A: evaluation 'dense paper many'; expected 'method scales \[images\]'"),
    (set_key(("runs", "D-S384", "init_run"), "D-S256-512"), r"run D-S384: init_run='D-S256-512' is not a run defined before it"),
    (set_key(("transfer", "sources"), ["random F"]), r"transfer names unknown run\(s\) \['F'\]"),
    (set_key(("localisation", "unions", "x"), ["PCR-fc", "PCR-conv"]), r"localisation x names unknown localiser"),
    (set_key(("tables", "ensembles", "x"), ["A"]), r"ensemble 'x' names nets that are not fusion members"),
    (set_key(("sets", "LRN", "pairs"), True), r"set LRN: unknown key\(s\) \['pairs'\]"),
])
def test_a_bad_grid_file_is_rejected_with_a_clear_error(tmp_path, change, message):
    if message is None:
        assert load(tmp_path, change)["EVALS"]["A"] == [("dense", "paper", None), ("dense", "train", None)]
        return
    with pytest.raises(G.GridError, match=r"grid file .*grid.yaml: " + message):
        load(tmp_path, change)


def test_the_package_ships_the_grid_file():
    import tomllib

    pyproject = tomllib.loads((G.repo_root() / "pyproject.toml").read_text())
    assert "experiments/grid.yaml" in pyproject["tool"]["setuptools"]["package-data"]["vgg_lib"]


# --- the scheduler --------------------------------------------------------------------------------

def test_scheduler_runs_in_parallel_after_needs_and_a_failure_fails_only_its_dependants():
    started, lock = [], threading.Lock()

    def job(key, fail=False, sleep=0.05):
        def fn():
            with lock:
                started.append(key)
            time.sleep(sleep)
            if fail:
                raise RuntimeError(f"{key} broke")
            return key
        return fn

    tasks = [scheduler.Task("a", job("a")), scheduler.Task("b", job("b", fail=True)),
             scheduler.Task("c", job("c"), needs={"a"}), scheduler.Task("d", job("d"), needs={"b"}),
             scheduler.Task("e", job("e"), needs={"d"}), scheduler.Task("f", job("f"), needs={"elsewhere"})]
    lines = []
    out = scheduler.run(tasks, jobs=2, log=lines.append)
    assert out.done == {"a", "c", "f"} and started[:2] in (["a", "b"], ["b", "a"])
    assert started.index("c") > started.index("a") and "d" not in started and "e" not in started
    assert out.failures == ["b: b broke", "skipped d: a task it needs failed", "skipped e: a task it needs failed"]
    assert lines == ["FAILED b: b broke"] and out.results["c"] == "c"


def test_scheduler_uses_at_most_jobs_threads():
    running, most, lock = [0], [0], threading.Lock()

    def fn():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1

    assert scheduler.run([scheduler.Task(i, fn) for i in range(6)], jobs=2).failures == []
    assert most[0] == 2


# --- reproduce on a finished results/ -------------------------------------------------------------

RESULTS = G.results_root()
FINISHED = [n for n in G.RUNS if not n.endswith("-60k")]  # the 60k runs are being trained


@pytest.mark.skipif(not RESULTS.is_dir(), reason="no results/ folder")
def test_reproduce_on_finished_results_does_nothing_and_says_so(monkeypatch, tmp_path):
    def forbidden(*a, **k):
        raise AssertionError("reproduce started work on a finished grid")

    for name in ("run", "Task"):
        monkeypatch.setattr(scheduler, name, forbidden)
    monkeypatch.setattr(R, "load_run", forbidden)
    monkeypatch.setattr(R, "_run_training", forbidden)
    lines = []
    assert R.reproduce(FINISHED, jobs=2, work=tmp_path, log=lines.append) == []
    assert len(lines) == 1 and lines[0].startswith(f"nothing to do: {len(FINISHED)} runs (")
    assert f"already in {RESULTS}" in lines[0] and "evaluations" in lines[0] and "localisations" in lines[0]
    assert "torch.nn" not in str(lines)


def test_reproduce_runs_only_what_is_missing_and_what_it_needs(monkeypatch, tmp_path):
    todo = G.tasks(["D-12ep", "D-S384"], seeds=(0,))
    missing = ("eval", "D-S384", 0, ("dense", "train", None))
    monkeypatch.setattr(R, "is_done", lambda t, *a: t != missing)
    ran = []
    monkeypatch.setattr(R, "run_task", lambda t, *a: ran.append(t))
    assert R.reproduce(["D-12ep", "D-S384"], seeds=(0,), jobs=1, log=lambda *a: None) == []
    # the trainings it needs run first (each reuses its checkpoint, or trains again where there
    # is none), and nothing else
    assert ran == [("train", "D-12ep", 0, None), ("train", "D-S384", 0, None), missing] and len(todo) > 3
    # a training not done (missing, or its parameters changed) brings every evaluation of it
    monkeypatch.setattr(R, "is_done", lambda t, *a: t[:2] != ("train", "D-S384"))
    assert [t for t in R.pending(todo) if t[1] == "D-S384"] == [t for t in todo if t[1] == "D-S384"]
