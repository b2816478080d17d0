"""vgg_lib.jobs: papermill job runs, reuse, grids that survive a failing job, collect."""

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".state"
for var, sub in [("JUPYTER_CONFIG_DIR", "jupyter/config"), ("JUPYTER_DATA_DIR", "jupyter/data"),
                 ("JUPYTER_RUNTIME_DIR", "jupyter/runtime"), ("IPYTHONDIR", "ipython"),
                 ("MPLCONFIGDIR", "matplotlib")]:
    os.environ.setdefault(var, str(STATE / sub))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
os.environ.setdefault("VGG_LIB_CACHE", str(REPO / ".cache" / "vgg_lib"))

from vgg_lib import jobs, runs  # noqa: E402
from vgg_lib.atomic import write_json  # noqa: E402
from vgg_lib.checks import ConfigError  # noqa: E402
from vgg_lib.options import TrainConfig  # noqa: E402
from vgg_lib.train import train  # noqa: E402

NOTEBOOK = REPO / "book" / "jobs" / "train.ipynb"
GOOD = dict(width=0.0625, epochs=2, batch_size=32, train_size=128, val_size=64, image_size=40)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def good_run(root):
    return jobs.run(NOTEBOOK, GOOD, root=root)


def test_job_dir_names_runs_by_their_parameters(tmp_path):
    a = jobs.job_dir(NOTEBOOK, GOOD, tmp_path)
    assert a.parent == tmp_path and a.name.startswith("A-shapes-s0-")
    # defaults filled in: leaving a parameter out or giving its default is the same run
    assert jobs.job_dir(NOTEBOOK, {**GOOD, "lr": 0.01, "device": "cpu", "workers": 2}, tmp_path) == a
    assert jobs.job_dir(NOTEBOOK, {**GOOD, "lr": 0.02}, tmp_path) != a
    assert jobs.job_dir(NOTEBOOK, {**GOOD, "config": "D", "seed": 1}, tmp_path).name.startswith("D-shapes-s1-")
    # the folder python -m vgg_lib.train would use for the same settings
    assert TrainConfig(**GOOD, root=str(tmp_path)).resolved_run_dir() == a
    with pytest.raises(ValueError, match=r"params \['learning_rate'\] are not parameters of train.ipynb"):
        jobs.job_dir(NOTEBOOK, {"learning_rate": 0.1}, tmp_path)


def test_training_job_parameters_are_trainconfig_fields():
    """Options are typed once: the parameters cell is generated from TrainConfig, so every
    field is settable from the job with the same default and help."""
    import dataclasses

    cell = next(c for c in json.loads(NOTEBOOK.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert "".join(cell["source"]) == jobs.parameters_cell(TrainConfig), \
        "book/jobs/train.ipynb's parameters cell differs from TrainConfig: regenerate it with jobs.parameters_cell"
    defaults = jobs.notebook_parameters(NOTEBOOK)
    assert defaults == {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert jobs.is_training_job(defaults)


def test_cli_run_and_job_run_share_one_folder(tmp_path, capsys):
    """python -m vgg_lib.train and the training job with the same settings are one run: the job
    finds the finished folder of the command line and reuses it without executing anything."""
    from vgg_lib.train import main

    args = {**GOOD, "epochs": 1, "device": "cpu"}
    argv = [x for k, v in args.items() for x in (f"--{k}", str(v))] + ["--root", str(tmp_path), "--no-progress"]
    cli_dir = main(argv)
    before = (cli_dir / "summary.json").stat().st_mtime_ns
    assert jobs.run(NOTEBOOK, args, root=tmp_path) == cli_dir
    assert (cli_dir / "summary.json").stat().st_mtime_ns == before  # reused, not trained again
    assert not (cli_dir / "train.ipynb").exists()


def test_notebook_lists_its_parameters_with_their_meaning():
    import papermill

    params = papermill.inspect_notebook(str(NOTEBOOK))
    for name in ("config", "dataset", "data_root", "epochs", "batch_size", "lr", "S", "width", "pools",
                 "init", "init_run", "seed", "device", "workers", "compile", "amp", "run_dir"):
        assert params[name]["help"], name
    assert jobs.notebook_parameters(NOTEBOOK)["lr"] == 0.01


@pytest.mark.slow
def test_bad_parameter_fails_with_one_line_and_writes_nothing(root):
    bad_root = root / "bad"
    with pytest.raises(jobs.JobError) as e:
        jobs.run(NOTEBOOK, {**GOOD, "S": 20}, root=bad_root)
    assert str(e.value) == ("train.ipynb failed: ConfigError: S=20 is not allowed: an integer >= crop=32 "
                            "or [Smin, Smax] with crop <= Smin <= Smax")
    assert not bad_root.exists() or list(bad_root.iterdir()) == []  # refused before any folder is made


@pytest.mark.slow
def test_good_job_writes_a_complete_run_folder_and_is_reused(good_run, root):
    names = sorted(p.name for p in good_run.iterdir())
    assert names == ["checkpoint.pt", "metrics.csv", "params.json", "summary.json", "train.ipynb"]
    summary = json.loads((good_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    executed = json.loads((good_run / "train.ipynb").read_text())
    assert any(o.get("output_type") == "display_data" for c in executed["cells"] for o in c.get("outputs", []))
    # same parameters (defaults written out): the finished run is returned without running
    mtime = (good_run / "checkpoint.pt").stat().st_mtime_ns
    assert jobs.run(NOTEBOOK, {**GOOD, "lr": 0.01}, root=root) == good_run
    assert (good_run / "checkpoint.pt").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_grid_records_a_failing_job_and_goes_on(good_run, root):
    table = jobs.grid(NOTEBOOK, [{**GOOD, "lr": -1.0}, GOOD], root=root, progress=False)
    assert table.status.tolist() == ["failed", "finished"]
    assert "lr=-1.0 is not allowed: a number > 0" in table.error[0]
    assert table.run_dir[1] == str(good_run)


@pytest.mark.slow
def test_grid_command_line(good_run, root, tmp_path, capsys):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(f"notebook: {NOTEBOOK}\nbase: {json.dumps(GOOD)}\ngrid:\n  seed: [0]\n")
    assert jobs.main(["grid", str(grid_file), "--root", str(root)]) == 0
    assert "finished" in capsys.readouterr().out


def test_example_grid_is_valid():
    notebook, params, _ = jobs.load_grid(REPO / "book" / "jobs" / "example_grid.yaml")
    assert notebook == NOTEBOOK and len(params) >= 2
    for p in params:
        jobs.job_dir(notebook, p, "unused")  # every key is a parameter of the notebook
        TrainConfig(**p)


def test_collect_reads_every_kind_of_run_folder(tmp_path):
    book = train(TrainConfig(**{**GOOD, "epochs": 1}, progress=False, root=str(tmp_path / "book")))
    (book / "results_eval.json").write_text(json.dumps({"top1_err": 0.25, "scales": {"Q": 37}}))
    nested = tmp_path / "deep" / "er" / "run"
    nested.mkdir(parents=True)
    (nested / "params.json").write_text(json.dumps({"config": "E", "S": [256, 512]}))
    (nested / "summary.json").write_text(json.dumps({"status": "failed", "failure": {"epoch": 3}}))
    table = runs.collect(tmp_path).set_index("config")
    assert sorted(table.index) == ["A", "E"]
    assert table.loc["A", "status"] == "finished" and table.loc["A", "results_eval.top1_err"] == 0.25
    assert table.loc["A", "results_eval.scales.Q"] == 37 and 0 <= table.loc["A", "val_top1_err"] <= 100
    assert table.loc["E", "failure.epoch"] == 3 and table.loc["E", "S"] == "256-512"
    assert len(runs.collect(tmp_path / "nothing")) == 0


def test_a_grid_file_may_list_runs_as_records_of_the_reference_grid(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(f"""notebook: {NOTEBOOK}
base: {{dataset: shapes, width: 0.0625}}
recipes:
  SHORT: {{params: {{epochs: 2, train_size: 128}}}}
  TUNE: {{derives: SHORT, params: {{lr: 0.001}}, init_run: A-short}}
runs:
  A-short: {{recipe: SHORT, config: A, seeds: [0, 1]}}
  A-tuned: {{recipe: TUNE, config: A, params: {{S: 48}}, seeds: [1]}}
""")
    notebook, params, _ = jobs.load_grid(grid_file)
    assert params == [
        dict(dataset="shapes", width=0.0625, epochs=2, train_size=128, config="A", seed=0),
        dict(dataset="shapes", width=0.0625, epochs=2, train_size=128, config="A", seed=1),
        dict(dataset="shapes", width=0.0625, epochs=2, train_size=128, lr=0.001, config="A", S=48, seed=1,
             starts_from={"init_run": 1})]
    grid_file.write_text(grid_file.read_text().replace("seeds: [0, 1]", "seeds: [0]"))
    with pytest.raises(ConfigError, match=r"run A-tuned seed 1 starts from \['A-short-s1'\], not in the grid"):
        jobs.load_grid(grid_file)
    grid_file.write_text(grid_file.read_text().replace("lr: 0.001", "rate: 0.001"))
    with pytest.raises(ConfigError, match=r"recipe TUNE params: unknown key\(s\) \['rate'\]"):
        jobs.load_grid(grid_file)


def test_grid_gives_a_job_the_folder_it_starts_from_and_skips_it_when_that_failed(monkeypatch, tmp_path):
    seen = []

    def fake_run(notebook, params, root=None, force=False):
        seen.append(params)
        if params.get("lr") == -1:
            raise jobs.JobError("bad lr")
        folder = tmp_path / f"run-{params['seed']}-{params.get('lr')}"
        write_json(folder / "summary.json", {"status": "finished"})
        return folder

    monkeypatch.setattr(jobs, "run", fake_run)
    monkeypatch.setattr(jobs, "job_dir", lambda nb, p, root=None: tmp_path / f"run-{p['seed']}-{p.get('lr')}")
    table = jobs.grid(NOTEBOOK, [{"seed": 0}, {"seed": 1, "lr": -1}, {"seed": 0, "lr": 0.1, "starts_from": {"init_run": 0}},
                                 {"seed": 1, "lr": 0.1, "starts_from": {"init_run": 1}}], progress=False, jobs=2)
    assert table.status.tolist() == ["finished", "failed", "finished", "skipped"]
    assert seen[-1]["init_run"] == str(tmp_path / "run-0-None") and len(seen) == 3
    assert "starts_from" not in table.columns
