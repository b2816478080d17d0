"""The reference experiments: Fashion-MNIST, the miniature geometry, the grid, its statistics and
the committed results."""

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from vgg_lib import experiments as X
from vgg_lib import stats as stats_lib
from vgg_lib.data import build_dataset, datasets
from vgg_lib.models import fully_convolutional, init_from, vgg
from vgg_lib.options import TrainConfig
from vgg_lib.train import parser

REPO = Path(__file__).resolve().parent.parent


# --- Fashion-MNIST ------------------------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    """A folder with the four IDX files: 60 training and 20 test images, label = image value."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 60)
    images = np.broadcast_to(labels[:, None, None], (60, 28, 28)).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:20], gz=False)  # unzipped works too
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:20], gz=False)
    monkeypatch.setattr(datasets, "FASHION_MNIST_VAL", 15)
    return tmp_path


def test_fashion_mnist_reads_idx_files_into_disjoint_rgb_splits(fake_fashion):
    train = build_dataset("fashion_mnist", "train", root=fake_fashion)
    val = build_dataset("fashion_mnist", "val", root=fake_fashion)
    test = build_dataset("fashion_mnist", "test", root=fake_fashion)
    assert (len(train), len(val), len(test)) == (45, 15, 20)
    assert train.classes[0] == "T-shirt/top" and train.num_classes == 10
    image, label = train[3]
    assert image.shape == (3, 28, 28) and image.dtype == torch.uint8
    assert (image == label).all()  # grey replicated to RGB, labels aligned with images
    a = {tuple(train.images[i, 0, 0, :3]) + (int(train.labels[i]), i) for i in range(len(train))}
    assert len(a) == 45
    assert build_dataset("fashion_mnist", "val", root=fake_fashion, image_size=32)[0][0].shape == (3, 32, 32)


def test_fashion_mnist_errors_name_the_file_and_the_fix(tmp_path, fake_fashion):
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\] not found .*apt-get install dataset-fashion-mnist"):
        build_dataset("fashion_mnist", "test", root=tmp_path / "nowhere")
    (fake_fashion / "t10k-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte is not an IDX file"):
        build_dataset("fashion_mnist", "test", root=fake_fashion)
    write_idx(fake_fashion / "t10k-images-idx3-ubyte", np.zeros((20, 28, 28)), gz=False)
    raw = (fake_fashion / "t10k-images-idx3-ubyte").read_bytes()
    (fake_fashion / "t10k-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="is truncated"):
        build_dataset("fashion_mnist", "test", root=fake_fashion)


@pytest.mark.skipif(not datasets.FASHION_MNIST_ROOT.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_debian_package_gives_the_real_data_set():
    sizes = {s: len(build_dataset("fashion_mnist", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 50_000, "val": 10_000, "test": 10_000}
    test = build_dataset("fashion_mnist", "test")
    assert np.bincount(test.labels).tolist() == [1000] * 10  # the official test set is balanced


# --- the miniature: three poolings ----------------------------------------------------------------

def test_three_poolings_leave_a_4x4_pool5_and_keep_the_layer_names():
    net = vgg("D", num_classes=10, width=0.125, input_size=32, pools=3, init="glorot")
    names = [n for n, _ in net.features.named_children()]
    assert [n for n in names if n.startswith("pool")] == ["pool1", "pool2", "pool3"]
    assert "conv5_3" in names and "conv4_1" in names
    assert net.feature_size == 4 and net.classifier.fc6.in_features == 64 * 4 * 4
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    fcn = fully_convolutional(net.eval())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fcn(x).flatten(1), net(x), rtol=1e-4, atol=1e-5)
    assert fcn(torch.randn(1, 3, 55, 55)).shape[-2:] == (3, 3)  # overlapping windows: 55 // 8 - 4 + 1
    init_from(vgg("D", num_classes=10, width=0.125, input_size=32, pools=3),
              vgg("A", num_classes=10, width=0.125, input_size=32, pools=3))


def test_pools_is_checked():
    with pytest.raises(ValueError, match=r"pools must be an integer in \[0, 5\]"):
        vgg("A", pools=6)
    with pytest.raises(ValueError, match=r"input_size must be an integer >= 32 \(5 2x2 poolings\)"):
        vgg("A", input_size=16)
    from vgg_lib.checks import ConfigError
    with pytest.raises(ConfigError, match=r"pools=7 is not allowed"):
        TrainConfig(pools=7)


# --- the grid -------------------------------------------------------------------------------------

def test_every_training_command_parses_back_to_its_parameters(tmp_path):
    for name in X.RUNS:
        cmd = X.train_command(name, 1, work=tmp_path)
        assert cmd[1:3] == ["-m", "vgg_lib.train"]
        args = vars(parser().parse_args(cmd[3:]))
        want = X.train_params(name, 1, work=tmp_path)
        if len(args["S"]) == 1:  # the CLI takes S as a list; TrainConfig makes [s] an int
            args["S"] = args["S"][0]
        for key, value in want.items():
            assert args[key] == value, (name, key)
    assert X._display(X.train_command("D-S384", 2, work=tmp_path), tmp_path).startswith("python -m vgg_lib.train")
    assert "runs/reference/D-12ep-s2" in X._display(X.train_command("D-S384", 2, work=tmp_path), tmp_path)


def test_tasks_come_after_what_they_need():
    order = X.tasks()
    seen = set()
    for t in order:
        kind, name, seed, _ = t
        if kind == "train":
            assert all(("train", d, seed) in seen for d in X.dependencies(name)), name
        elif kind in ("eval", "transfer"):
            assert ("train", name.split()[-1], seed) in seen
        assert X.needs(t) <= seen, t  # the scheduler's rule agrees with the order
        seen.add(t[:3])
    assert len([t for t in order if t[0] == "train"]) == sum(len(X.seeds_of(n)) for n in X.RUNS)
    assert X.seeds_of("D-60k") == (0, 1, 2, 3, 4) and X.seeds_of("D-full") == (0, 1, 2)
    assert [t[2] for t in X.tasks(["D-60k"], seeds=(1, 7), parts=("train",))] == [1]
    with pytest.raises(ValueError, match="run 'F' is unknown"):
        X.train_params("F", 0)


def test_test_scales():
    assert X.test_scales(37, 32, "paper") == (32, 37, 42)
    assert X.test_scales([37, 73], 32, "paper") == (37, 55, 73)
    assert X.test_scales([37, 73], 32, "train") == (55,)
    assert X.test_scales(37, 32, [40, 50]) == (40, 50)


def use_grid(monkeypatch, path, spec: dict) -> dict:
    """Make the grid file ``spec`` (written to ``path``) the grid of ``vgg_lib.experiments``."""
    import yaml

    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    names = X.grid.load(path)
    for key, value in names.items():
        monkeypatch.setattr(X.grid, key, value)
    return names


@pytest.mark.slow
def test_a_tiny_grid_trains_evaluates_exports_and_reuses(tmp_path, monkeypatch):
    use_grid(monkeypatch, tmp_path / "tiny.yaml", {
        "recipes": {"RECIPE": {"params": X.RECIPE}},
        "runs": {"tiny": {"recipe": "RECIPE", "config": "A", "evals": ["dense train 50"],
                          "params": dict(dataset="digits", train_size=64, val_size=None, epochs=1,
                                         batch_size=32, width=0.0625)}}})
    results, work = tmp_path / "results", tmp_path / "runs"
    assert X.reproduce(seeds=(0,), jobs=1, results=results, work=work) == []
    folder = results / "tiny-s0"
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["eval_dense_train_n50.json", "metrics.csv", "params.json", "posteriors_dense_train_n50.npz",
                     "provenance.json", "summary.json"]
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["command"].startswith("python -m vgg_lib.train ") and prov["threads"] == 1
    assert str(work) not in (folder / "params.json").read_text()  # no machine paths in results
    ev = json.loads((folder / "eval_dense_train_n50.json").read_text())
    assert ev["images"] == 50 and 0 <= ev["top1_error"] <= 100
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert X.reproduce(seeds=(0,), jobs=1, results=results, work=work) == []  # all reused
    assert before == {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    # A larger epoch cap: the run goes on from its checkpoint, the old evaluation is redone and
    # the provenance adds up both parts.
    monkeypatch.setitem(X.grid.RUNS["tiny"], "epochs", 2)
    assert X._stale(folder, X.train_params("tiny", 0, work)) == ["epochs"]
    assert X.reproduce(seeds=(0,), jobs=1, results=results, work=work) == []
    assert json.loads((folder / "summary.json").read_text())["epochs_done"] == 2
    assert (folder / "eval_dense_train_n50.json").stat().st_mtime_ns != before["eval_dense_train_n50.json"]
    prov2 = json.loads((folder / "provenance.json").read_text())
    assert prov2["continued_from"] == prov and prov2["wall_seconds"] > prov["wall_seconds"]
    assert "--epochs 2" in prov2["command"]


# --- the committed reference results ----------------------------------------------------------------

RESULTS = X.results_root()
committed = pytest.mark.skipif(not RESULTS.is_dir(), reason="no results/ folder")


@committed
def test_results_are_small_and_hold_no_machine_paths():
    files = [p for p in RESULTS.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files) <= 2 * 2 ** 20
    # 30 MiB before the -60k study; its 35 run folders (about 0.4 MB each) land over several sittings
    assert sum(p.stat().st_size for p in files) <= 48 * 2 ** 20
    for p in files:
        if p.suffix in (".json", ".csv"):
            text = p.read_text()
            assert not re.search(r"/(work|root|home|tmp)/", text), p


# The -60k set (the whole training file: 50,000 training images, 10,000 validation) is being produced by a background grid over several sessions (the
# experiments issue); its finished seeds are committed one by one and checked as the others are.
PRODUCING = {n for n in X.RUNS if n.endswith("-60k")}


def committed_seeds(name):
    seeds = X.seeds_of(name)
    if name in PRODUCING:
        return tuple(s for s in seeds if (RESULTS / X.folder_name(name, s) / "provenance.json").is_file())
    return seeds


@committed
def test_every_reference_run_is_finished_with_its_provenance_and_evaluations():
    for name in X.RUNS:
        for seed in committed_seeds(name):
            r = X.load(name, seed)
            if r["summary"].get("stop_reason") == "diverged":  # a result: std 0.1 blows the plain D up
                assert name == "D-plain-std0.1", name
                continue
            assert r["summary"]["status"] == "finished"
            # the committed run is the one RUNS and RECIPE define (e.g. not an older epoch cap)
            assert X._stale(RESULTS / X.folder_name(name, seed), X.train_params(name, seed)) == [], (name, seed)
            assert r["params"]["seed"] == seed and r["params"]["config"] == X.RUNS[name]["config"]
            for key in ("git_commit", "command", "cpu", "threads", "wall_seconds", "date"):
                assert r["provenance"][key] not in (None, ""), (name, key)
            for method, scales, size in X.EVALS.get(name, []):
                assert X.eval_tag(method, scales, size) in r["evals"], (name, seed, method)
    for source in X.TRANSFER_SOURCES:
        for seed in X.SEEDS:
            assert (RESULTS / "transfer" / f"{source.replace(' ', '-')}-s{seed}.json").is_file()


@committed
def test_the_depth_set_has_a_small_seed_spread():
    # The experiments issue asks for at most 1.0 point of seed standard deviation for every net of
    # the depth set, trained to the end of its schedule (at the 12-epoch budget E had 1.5).
    table = X.table("DEPTH")
    spread = X.summarise(table)["std"]
    assert len(spread) == 4 and (spread <= 1.0).all(), spread
    assert (table.groupby("label").seed.nunique() >= 3).all()
    assert (table.epochs > 12).all()  # trained beyond the short budget: the schedule or the 30-epoch cap


def test_grid_wall_time_is_the_union_of_the_records_even_across_sittings(tmp_path):
    import json

    def record(folder, end, seconds):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / "provenance.json").write_text(json.dumps({"date": end, "wall_seconds": seconds}))

    record("a-s0", "2026-01-01T01:00:00+00:00", 3600)  # 00:00-01:00
    record("b-s0", "2026-01-01T01:30:00+00:00", 3600)  # 00:30-01:30, overlaps a
    record("c-s0", "2026-01-09T00:30:00+00:00", 1800)  # another sitting, eight days later
    wall = X.grid_wall_time(tmp_path)
    assert wall["records"] == 3 and wall["wall_hours"] == 2.0 and wall["cpu_hours"] == 2.5


# The comparisons the chapters state as converged: every run stopped by the paper's schedule, or
# at its epoch cap with a flat curve. The 12-epoch sets are there to show what a short budget
# costs, the initialisation set asks whether a plain net starts (4-8 epochs), and a diverged run
# is a result. The runs known not to be flat at their cap, each said in the Training chapter:
SHORT_BUDGET_SETS = ("DEPTH_12", "SCALE_FASHION", "INIT")
NOT_FLAT_AT_CAP = {("C-full", 1): "its first division of the rate came at epoch 28 of 30",
                   ("D-shapes", 1): "still at lr 1e-3 at the 40-epoch cap",
                   # the jittered fine-tunings on shapes: a noisy validation curve (its crops of 55-pixel
                   # images cut the large objects), still at lr 1e-4 at the 30-epoch cap
                   **{("D-shapes-S256-512", s): "still falling at lr 1e-4 at the 30-epoch cap" for s in (0, 1)},
                   ("D-centred-S384", 1): "still at lr 1e-3 at the 30-epoch cap"}


@committed
@pytest.mark.parametrize("set_name", [s for s in X.SETS if s not in SHORT_BUDGET_SETS])
def test_every_comparison_runs_until_the_schedule_stops_or_the_curve_is_flat(set_name):
    for label, name in X.SETS[set_name].items():
        for seed in committed_seeds(name):
            r = X.load(name, seed)
            stop, m = r["summary"].get("stop_reason"), r["metrics"]
            if stop in ("lr_schedule", "diverged"):
                continue
            assert stop == "epochs" and len(m) >= 12, (name, seed, stop, len(m))
            # flat: the last three epochs lowered the best error by less than half a point
            err = m.val_top1_err
            flat = err.iloc[:-3].min() - err.min() < 0.5
            assert flat != ((name, seed) in NOT_FLAT_AT_CAP), (name, seed, err.iloc[-6:].tolist())


@committed
def test_every_evaluation_scores_at_least_5000_images_and_the_scale_set_sees_many_sizes():
    for name, specs in X.EVALS.items():
        for seed in committed_seeds(name):
            evals = X.load(name, seed)["evals"]
            for method, scales, size in specs:
                assert evals[X.eval_tag(method, scales, size)]["images"] >= 5_000, (name, method)
    for name in X.SETS["SCALE"].values():  # objects of many sizes: the question of scale jittering
        assert X.load(name, 0)["params"]["dataset"] == "shapes"
    assert X.load("D-shapes-S256-512", 0)["params"]["S"] == [X.S_256, X.S_512]
    # the control: the same fine-tunings, from the same start, on centred objects
    for name in X.SETS["SCALE_CENTRED"].values():
        for seed in X.SEEDS:
            r = X.load(name, seed)
            p = r["params"]
            assert p["dataset"] == "shapes_centred" and p["init_run"] == f"runs/reference/D-shapes-s{seed}", p
            assert r["evals"][X.eval_tag("dense", "train")]["dataset"] == "shapes_centred"


def test_sets_fine_tuned_from_one_net_are_compared_paired_by_seed(tmp_path, monkeypatch):
    table = __import__("pandas").DataFrame({"label": ["x"] * 3 + ["y"] * 3, "seed": [0, 1, 2] * 2,
                                            "top1_err": [10.0, 20.0, 30.0, 11.0, 21.0, 31.5]})
    monkeypatch.setattr(X.readers, "table", lambda *a, **k: table)
    paired = X.compare("SCALE", "x", "y")
    welch = X.compare("DEPTH", "x", "y")
    assert paired["diff"] == pytest.approx(welch["diff"]) == pytest.approx(3.5 / 3)
    # the large spread of the common start widens Welch's interval, not the paired one
    assert paired["low"] > 0 > welch["low"]
    assert paired == stats_lib.paired_difference([10, 20, 30], [11, 21, 31.5])


@committed
@pytest.mark.slow
def test_a_bf16_run_agrees_with_the_committed_float32_run_within_the_seed_spread(tmp_path):
    # The reference run A seed 0 was trained in float32; re-trained with bf16 autocast (what
    # train now picks on a CPU with native bf16) it lands within 3 seed standard deviations.
    if not __import__("vgg_lib.loop", fromlist=["native_bf16"]).native_bf16():
        pytest.skip("this CPU has no native bf16: train runs float32 here, nothing to compare")
    r = X.verify(*X.VERIFY, work=tmp_path, amp="bf16")
    # (runs trained before bf16 was used on the CPU do not record amp: they ran float32)
    assert r["amp"] == "bf16" and X.load(*X.VERIFY)["params"].get("amp", "off") == "off"
    print(r)
    assert abs(r["difference"]) <= r["tolerance"], r


def test_the_core_sets_on_all_the_training_data_are_paired_five_seed_sets_of_the_full_recipe():
    # the experiments issue: the depth, LRN, 3x3-vs-5x5 and 1x1 comparisons on all of Fashion-MNIST's
    # training images, at least five seeds, paired by seed (one data order per seed for every net)
    for set_name, twelve_k in (("DEPTH_60K", "DEPTH"), ("LRN_60K", "LRN"), ("FILTERS_60K", "FILTERS"),
                               ("ONE_BY_ONE_60K", "ONE_BY_ONE")):
        assert set_name in X.PAIRED_SETS and list(X.SETS[set_name]) == list(X.SETS[twelve_k])
        for name in X.SETS[set_name].values():
            p = X.train_params(name, 0)
            assert len(X.seeds_of(name)) >= 5 and p["train_size"] is None and p["amp"] == "bf16"
            # the same recipe as the 12,000-image study but for the data and the precision
            same = X.train_params(name.replace("-60k", "-full"), 0)
            assert {k for k in p if p[k] != same.get(k)} == {"train_size", "amp", "run_dir"}, name


@committed
def test_the_landed_60k_runs_saw_every_training_image_of_the_split():
    for name in PRODUCING:
        for seed in committed_seeds(name):
            params = X.load(name, seed)["params"]
            assert params["train_images"] == 50_000 and params["val_images"] == 10_000, (name, seed)
            assert params["amp"] == "bf16", (name, seed)
