"""Issue 10: the probes of bad behaviour, one test (or more) per row of the issue's table.

Each failed before the fix (silently wrong, a raw traceback, or exit 0) and now gets one clear
line. Tiny nets (width 1/16, 64 images, one epoch) keep this quick.
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("VGG_LIB_CACHE", str(REPO / ".cache" / "vgg_lib"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

from vgg_lib import checks, jobs, runs  # noqa: E402
from vgg_lib import evaluate as E  # noqa: E402
from vgg_lib import train as T  # noqa: E402
from vgg_lib.checks import ConfigError  # noqa: E402
from vgg_lib.options import TrainConfig  # noqa: E402
from vgg_lib.runs import load_checkpoint, load_run  # noqa: E402
from vgg_lib.train import train  # noqa: E402

JOBS = REPO / "book" / "jobs"
TINY = dict(dataset="shapes", train_size=64, val_size=32, epochs=1, batch_size=32, width=1 / 16,
            device="cpu", progress=False)
NB_TINY = {k: v for k, v in TINY.items() if k != "progress"}  # the train job has no progress parameter


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("probes")


@pytest.fixture(scope="module")
def finished(root):
    """A tiny finished run of net A on shapes."""
    return train(TrainConfig(**TINY, run_dir=str(root / "A")))


def copy_run(run, dst):
    shutil.copytree(run, dst)
    return dst


# --- row 1: booleans from papermill / the API ------------------------------------------------

@pytest.mark.parametrize("value, expected", [("false", False), ("False", False), ("no", False), (0, False),
                                             ("true", True), ("yes", True), (1, True), (True, True)])
def test_row1_boolean_spellings(value, expected):
    assert checks.boolean("batch_norm", value) is expected
    cfg = TrainConfig(batch_norm=value, flip=value, compile=value, download=value, skip_corrupt=value)
    assert (cfg.batch_norm, cfg.flip, cfg.compile, cfg.download, cfg.skip_corrupt) == (expected,) * 5


def test_row1_bad_boolean_is_one_line():
    for value in ("maybe", 2, "", None, 0.5):
        with pytest.raises(ConfigError, match=re.escape(f"batch_norm={value!r} is not allowed: a boolean "
                                                        "(True/False, true/false, yes/no, 1/0)")):
            TrainConfig(batch_norm=value)


def test_row1_numbers_as_strings():
    cfg = TrainConfig(lr="1e-3", epochs="3", width="0.125")
    assert (cfg.lr, cfg.epochs, cfg.width) == (1e-3, 3, 0.125)
    with pytest.raises(ConfigError, match=r"lr='fast' is not allowed: a number > 0"):
        TrainConfig(lr="fast")


@pytest.mark.slow
def test_row1_papermill_boolean_string_in_the_train_job(tmp_path):
    import papermill
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(JOBS / "train.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   parameters={"batch_norm": "maybe", "device": "cpu"}, progress_bar=False)
    assert e.value.ename == "ConfigError" and e.value.evalue.startswith("batch_norm='maybe' is not allowed")


# --- row 2: unknown papermill parameters are an error in every job notebook -------------------

@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["train.ipynb", "evaluate.ipynb", "transfer.ipynb"])
def test_row2_unknown_parameter_fails_the_notebook(notebook, tmp_path):
    import papermill
    with pytest.raises(papermill.PapermillExecutionError) as e:
        papermill.execute_notebook(str(JOBS / notebook), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   parameters={"learning_rate": 0.5}, progress_bar=False)
    assert e.value.ename == "ConfigError"
    assert e.value.evalue.startswith(f"learning_rate is not a parameter of {notebook}; allowed: ")
    assert "\n" not in e.value.evalue


def test_row2_unknown_parameters_helper():
    ns = {"In": [], "__annotations__": {"lr": float}, "x": 1}
    before = set(ns)
    ns.update(lr=0.5, learning_rate=0.5, _private=1)
    with pytest.raises(ConfigError, match=r"^learning_rate is not a parameter of t.ipynb; allowed: lr$"):
        checks.unknown_parameters(ns, before, "t.ipynb")
    del ns["learning_rate"]
    checks.unknown_parameters(ns, before, "t.ipynb")


# --- row 3: a diverged run exits non-zero and says what was kept ------------------------------

def test_row3_cli_huge_lr_exits_non_zero(tmp_path):
    run_dir = tmp_path / "huge"
    with pytest.raises(SystemExit) as e:
        T.main(["--width", "0.0625", "--train_size", "128", "--val_size", "32", "--batch_size", "32",
                "--epochs", "1", "--lr", "1e6", "--device", "cpu", "--no-progress", "--run_dir", str(run_dir)])
    msg = str(e.value.code)
    assert msg.startswith("error: training failed: non-finite loss at epoch 1")
    assert "no checkpoint was written (no epoch finished)" in msg and "is kept" not in msg
    assert not (run_dir / "checkpoint.pt").exists()


@pytest.mark.slow
def test_row3_papermill_job_with_huge_lr_fails(tmp_path):
    with pytest.raises(jobs.JobError, match=r"train.ipynb failed: ConfigError: training failed: non-finite loss"):
        jobs.run(JOBS / "train.ipynb", {**NB_TINY, "train_size": 128, "lr": 1e6}, root=tmp_path)
    [folder] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert runs.status(folder) == "failed"


# --- rows 4, 5, 16: run folders are only reused when their identity matches -------------------

def test_row4_finished_run_without_params_is_not_overwritten(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / "params.json").unlink()
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"holds checkpoint.pt, metrics.csv, summary.json but no params.json"):
        train(TrainConfig(**{**TINY, "run_dir": str(run)}, config="B"))
    assert (run / "checkpoint.pt").read_bytes() == before


def test_row5_run_dir_of_a_transfer_job_is_refused(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"kind": "transfer", "dataset": "shapes"}))
    (tmp_path / "summary.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(ConfigError, match=r"holds a transfer job's folder, not a training run"):
        train(TrainConfig(**TINY, run_dir=str(tmp_path)))


def test_row16_cli_errors_are_one_line_before_data(finished, tmp_path, monkeypatch):
    import vgg_lib.data as data
    monkeypatch.setattr(data, "build_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("data loaded")))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [(["--train_size", "16", "--batch_size", "32"],
              "error: train_size=16 is not allowed: an integer >= batch_size=32"),
             (["--run_dir", str(a_file)], "error: run_dir="),
             (["--run_dir", str(finished), "--lr", "0.5", "--width", "0.0625", "--train_size", "64",
               "--val_size", "32", "--epochs", "1", "--batch_size", "32"],
              "holds a run with other parameters (lr: 0.01 there, 0.5 here)"),
             (["--width", "inf"], "error: width=inf is not allowed: a number > 0")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            T.main(argv)
        assert message in str(e.value.code) and "\n" not in str(e.value.code)


def test_row16_topk_error_refuses_labels_outside_the_classes():
    p = torch.softmax(torch.randn(4, 3), 1)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 2\] for 3 classes; got labels from 0 to 7"):
        E.topk_error(p, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match=r"got labels from -1"):
        E.topk_error(p, torch.tensor([-1, 1, 2, 0]))


# --- rows 6, 7, 8: evaluation checks that model and data agree --------------------------------

def test_row6_evaluate_refuses_a_model_of_other_classes():
    from vgg_lib import data
    from vgg_lib.models import vgg
    model = vgg("A", num_classes=2, width=1 / 16, input_size=32).eval()
    digits = data.build_dataset("digits", "val", size=8)
    with pytest.raises(ValueError, match=r"the model has 2 classes but the dataset has 10"):
        E.evaluate(model, digits, "single_scale", [32], mean=(128, 128, 128))


def test_row8_nan_weights_are_refused(finished, tmp_path):
    run = copy_run(finished, tmp_path / "nan")
    ckpt = load_checkpoint(run / "checkpoint.pt")
    ckpt["model"]["classifier.fc8.weight"][0, 0] = float("nan")
    torch.save(ckpt, run / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"checkpoint.pt has non-finite weights \(NaN or inf in classifier.fc8.weight\)"):
        load_run(run)
    model = load_run(finished).model
    with torch.no_grad():
        model.classifier.fc8.bias[0] = float("inf")
    from vgg_lib import data
    with pytest.raises(ValueError, match=r"the model has non-finite weights"):
        E.evaluate(model, data.build_dataset("shapes", "val", size=4), "single_scale", [37], mean=(128,) * 3)


@pytest.fixture(scope="module")
def digits_run(root):
    return train(TrainConfig(**{**TINY, "dataset": "digits"}, run_dir=str(root / "digits")))


@pytest.mark.slow
def test_row6_7_evaluate_job_checks_classes_data_and_names_results(finished, digits_run, tmp_path):
    ev = JOBS / "evaluate.ipynb"
    # a shapes net on digits, and a fusion of a shapes net with a digits net: refused
    with pytest.raises(jobs.JobError, match=r"ConfigError: A was trained on \d+ classes \(.*\) but digits val has 10"):
        jobs.run(ev, {"run_dirs": str(finished), "dataset": "digits", "size": 8}, root=tmp_path)
    with pytest.raises(jobs.JobError, match=r"ConfigError: run_dirs .*(different classes|different data sets)"):
        jobs.run(ev, {"run_dirs": f"{finished},{digits_run}", "size": 8}, root=tmp_path)
    # its own data, then the same classes from another data_root: two result files
    jobs.run(ev, {"run_dirs": str(finished), "size": 8, "method": "single_scale", "scales": "train"}, root=tmp_path)
    jobs.run(ev, {"run_dirs": str(finished), "size": 8, "method": "single_scale", "scales": "train",
                  "dataset": "shapes", "data_root": str(tmp_path)}, root=tmp_path)
    names = sorted(p.name for p in finished.glob("results_single_scale_*.json"))
    assert len(names) == 2 and any("_shapes-" in n for n in names), names


# --- row 12: malformed grid files --------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "a YAML list, expected a mapping"),
    ("42\n", "a YAML int, expected a mapping"),
    ("notebook: train.ipynb\ngrid: [1, 2]\n", "grid is a list; expected"),
    ("notebook: train.ipynb\njobs: {seed: 1}\n", "jobs is a dict; expected"),
    ("notebook: train.ipynb\nbase: hello\ngrid: {seed: [0]}\n", "base is a str; expected"),
    ("notebook: train.ipynb\n", "defines no jobs"),
    ("notebook: train.ipynb\njobs: [1, 2]\n", "every entry of jobs must be a mapping"),
    ("notebook: train.ipynb\ngrid: {seed: []}\n", "grid has an empty list"),
    ("notebook: [a\n", "is not valid YAML"),
    ("grid: {seed: [0]}\n", "notebook required"),
])
def test_row12_malformed_grid_files(tmp_path, capsys, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        jobs.load_grid(path)
    assert jobs.main(["grid", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: grid file") and err.count("\n") == 1


# --- row 13: damaged checkpoints and JSON files ------------------------------------------------

@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b"", "an empty file"),
    # random bytes after a byte that is no pickle opcode: garbage that starts like a pickle
    # asking for a global ("c...") is refused as needing arbitrary unpickling, which is right too
    (lambda b: b"\x00" + os.urandom(3999), "unreadable data"),
])
def test_row13_damaged_checkpoint(finished, tmp_path, damage, reason):
    run = copy_run(finished, tmp_path / "run")
    path = run / "checkpoint.pt"
    data = path.read_bytes()
    for attempt in range(5):  # random bytes that happen to start like a pickle are re-drawn
        new = damage(data)
        if new[:1] != b"\x80":
            break
    path.write_bytes(new)
    with pytest.raises(ConfigError) as e:
        load_run(run)
    assert str(e.value) == (f"checkpoint {path} is damaged or not a checkpoint ({reason}); delete it to train "
                            "that run again, or restore it from a copy")


def test_row13_raw_pickles_are_still_refused(tmp_path):
    import pickle
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(pickle.dumps({"x": Path("a")}, protocol=4))
    with pytest.raises(ValueError, match=r"refusing to load checkpoint .*needs arbitrary unpickling"):
        load_checkpoint(path)


def test_row13_damaged_json(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / "summary.json").write_text('{"status": "fini')
    with pytest.raises(ConfigError, match=re.escape(f"{run / 'summary.json'} is damaged (not valid JSON")):
        load_run(run)
    with pytest.raises(ConfigError, match=r"summary.json is damaged"):
        train(TrainConfig(**TINY, run_dir=str(run)))
    (run / "params.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"params.json is damaged \(a JSON list, not an object\)"):
        train(TrainConfig(**TINY, run_dir=str(run)))
    row = runs.collect(tmp_path).set_index("run").loc["run"]
    assert row["status"] == "damaged" and row["damaged"] == "params.json, summary.json"


# --- row 14: a failed write leaves no temporary file -------------------------------------------

def test_row14_failed_checkpoint_write_removes_its_tmp(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    runs.save_checkpoint({"a": torch.ones(2)}, path)
    real = torch.save

    def disk_full(obj, f, *a, **k):
        real(obj, f, *a, **k)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        runs.save_checkpoint({"a": torch.zeros(2)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))


# --- row 15: transfer job values -------------------------------------------------------------

@pytest.mark.slow
def test_row15_transfer_job_checks_device_and_booleans_first(tmp_path):
    import papermill
    for params, message in [({"device": "cuda"} if not torch.cuda.is_available() else {"device": "tpu"},
                             "device="),
                            ({"flip": "perhaps"}, "flip='perhaps' is not allowed: a boolean")]:
        with pytest.raises(papermill.PapermillExecutionError) as e:
            papermill.execute_notebook(str(JOBS / "transfer.ipynb"), str(tmp_path / "out.ipynb"),
                                       kernel_name="python3", parameters=params, progress_bar=False)
        assert e.value.ename == "ConfigError" and e.value.evalue.startswith(message)


# --- rows 9, 10, 11: image folders ----------------------------------------------------------

def make_folder(root, classes=("cat", "dog"), n=4, value=None):
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                px = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) if value is None else \
                    np.full((40, 40, 3), value, np.uint8)
                Image.fromarray(px).save(root / split / c / f"{j}.png")
    return root


def test_row9_empty_or_single_class_folders_are_refused(tmp_path):
    one = make_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(ConfigError, match=r"has a single class folder \(cat\) in train/: a classifier needs at least 2"):
        TrainConfig(dataset="imagefolder", data_root=str(one))
    empty = make_folder(tmp_path / "empty")
    (empty / "train" / "bird").mkdir()
    with pytest.raises(ConfigError, match=r"class folder '.*bird' has no image files"):
        TrainConfig(dataset="imagefolder", data_root=str(empty))


def test_row10_a_file_that_is_no_image_fails_before_training(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "val" / "dog" / "notes.jpg").write_text("not an image")
    run_dir = tmp_path / "run"
    cfg = dict(dataset="imagefolder", data_root=str(root), batch_size=4, crop=32, width=1 / 16, epochs=1,
               device="cpu", progress=False, run_dir=str(run_dir))
    with pytest.raises(ConfigError, match=r"image file '.*notes.jpg' cannot be read .*set skip_corrupt=True"):
        train(TrainConfig(**cfg))
    assert not (run_dir / "params.json").exists()  # nothing written: a retry may change skip_corrupt
    train(TrainConfig(**cfg, skip_corrupt=True))
    assert runs.status(run_dir) == "finished"


def test_row11_statistics_follow_changed_images(tmp_path):
    from vgg_lib import data
    root = make_folder(tmp_path / "data", value=100)
    first = data.rgb_statistics(data.build_dataset("imagefolder", "train", root=root))["mean"]
    make_folder(root, value=250)
    for f in root.rglob("*.png"):  # a later edit (file systems may store coarse times)
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    second = data.rgb_statistics(data.build_dataset("imagefolder", "train", root=root))["mean"]
    assert first.tolist() == pytest.approx([100] * 3) and second.tolist() == pytest.approx([250] * 3)


def test_row14_disk_full_mid_run_is_one_line_and_marks_the_run_failed(tmp_path, monkeypatch):
    real, calls = torch.save, {"n": 0}

    def full_on_second(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"partial") if hasattr(f, "write") else Path(f).write_bytes(b"partial")
            raise OSError(28, "No space left on device")
        return real(obj, f, *a, **k)
    monkeypatch.setattr(torch, "save", full_on_second)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(f"cannot write to run folder {run_dir} (No space left on device); "
                                                    "the checkpoint of epoch 1 is kept: free some space")):
        train(TrainConfig(**{**TINY, "epochs": 2}, run_dir=str(run_dir)))
    assert runs.status(run_dir) == "failed"
    assert not list(run_dir.glob("*.tmp")) and load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
