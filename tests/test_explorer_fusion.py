"""The fusion calculator without a browser: its numbers are ``evaluate.fuse`` of the committed
posteriors, its controls drive them, bad selections give a message, the page's quantised subset
reads back to what its JavaScript fuses, and any results folder is read by name."""
import json

import numpy as np
import pytest

from conftest import without_ipywidgets
from vgg_lib import evaluate as E
from vgg_lib import experiments as X
from vgg_lib.explorer.fusion.evaluations import (ImageSet, QuantisedPosteriors, ResultsPosteriors, available,
                                                 dequantise, method_label, quantise, subset_payload)
from vgg_lib.explorer.fusion.render import result_html
from vgg_lib.explorer.fusion.state import FusionState, ties, topk_error

committed = pytest.mark.skipif(not (X.results_root() / "E-full-s0").is_dir(), reason="no committed results")


@pytest.fixture(scope="module")
def evaluations():
    return available()


@pytest.fixture
def state(evaluations):
    return FusionState(evaluations)


def test_tie_rule_counts_a_tie_as_a_miss_and_is_topk_error_without_ties():
    p = np.array([[0.5, 0.5, 0, 0, 0, 0], [0.1, 0.6, 0.3, 0, 0, 0], [0.7, 0.1, 0.2, 0, 0, 0]], np.float32)
    y = np.array([0, 2, 1])
    assert topk_error(p, y, 1) == pytest.approx(100.0)               # a tie, a miss, a miss
    assert topk_error(p, y, 2) == pytest.approx(100 / 3)             # only row 3's 0.1 is third
    assert ties(p, y) == 1
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(10), size=500).astype(np.float32)
    labels = rng.integers(0, 10, 500)
    for k in (1, 5):
        assert topk_error(q, labels, k) == E.topk_error(q, labels, k)
    with pytest.raises(ValueError, match="k=11 is not valid for 10 classes"):
        topk_error(q, labels, 11)


@committed
def test_default_is_the_chapters_fusion_of_d_jittered_and_e(state):
    assert (state.nets, state.methods, state.seed) == (["E-full", "D-S256-512"], ["dense_paper"], 0)
    r = state.result
    assert r["message"] == "" and r["images"] == 10_000
    ours = X.fusion_table({"pair": ("D-S256-512", "E-full")}).loc["pair", 0]
    assert r["top1"] == pytest.approx(ours, abs=1e-9)
    p = [X.posteriors(n, 0, "dense_paper")[0] for n in ("E-full", "D-S256-512")]
    y = X.posteriors("E-full", 0, "dense_paper")[1]
    assert r["top5"] == topk_error(E.fuse(p), y, 5)
    # the evaluation's own number, from float32 posteriors: float16 storage may move an image or two
    evaluated = X.load("E-full", 0)["evals"]["dense_paper"]["top1_error"]
    assert r["singles"]["E-full|dense_paper"] == pytest.approx(evaluated, abs=0.025)


@committed
def test_controls_drive_the_numbers(state):
    before = state.result["top1"]
    state.select(nets=["A-full", "D-full", "E-full"])
    three = state.result
    assert [n for n, _ in three["members"]] == ["A-full", "D-full", "E-full"] and three["top1"] != before
    state.select(seed=1)
    assert state.result["top1"] != three["top1"]
    state.select(methods=["dense_paper", "dense_train"])      # each net by both methods: six members
    assert len(state.result["members"]) == 6
    html = result_html(state.result)
    assert f'data-value="{state.result["top1"]!r}"' in html and "fus-members" in html


@committed
def test_bad_selections_give_a_message(state):
    state.select(nets=[])
    assert state.result["message"] == "Select at least one net and one evaluation method."
    assert "fus-top1" not in result_html(state.result)
    state.select(nets=["E-full"], methods=["multi_crop_paper_n5000"])
    r = state.result
    assert r["message"] == "None of the selected nets was evaluated by the selected methods."
    assert r["skipped"] == ["E-full (multi-crop, three Q, 5,000 images)"]
    state.select(nets=["E-full", "D-S256-512"], methods=["dense_paper", "multi_crop_paper_n5000"])
    r = state.result
    assert r["message"].startswith("These evaluations scored different images")
    assert "fashion_mnist val, 10,000 images" in r["message"] and "5,000-image subset" in r["message"]
    state.select(nets=["E-full", "D-shapes-S256-512"], methods=["dense_paper"])
    assert "shapes val, 10,000 images" in state.result["message"]
    with pytest.raises(ValueError, match=r"^net 'Z' has no committed evaluation; allowed: A-full, "):
        state.select(nets=["E-full", "Z"])
    with pytest.raises(ValueError, match="seed 7 is not one of the reference seeds 0, 1, 2"):
        state.select(seed=7)
    assert state.nets == ["E-full", "D-shapes-S256-512"]       # unchanged by the refused ones


def test_method_labels():
    assert method_label("dense_paper") == "dense, three Q"
    assert method_label("dense_train") == "dense, Q = S"
    assert method_label("multi_crop_paper_n5000") == "multi-crop, three Q, 5,000 images"


def test_quantised_posteriors_sum_exactly_as_the_page_does():
    rng = np.random.default_rng(1)
    ps = [rng.dirichlet(np.full(10, 0.2), size=300).astype(np.float16) for _ in range(7)]
    qs = [quantise(p) for p in ps]
    assert all(q.dtype == np.uint8 and q.max() <= 255 for q in qs)
    fused = E.fuse([dequantise(q) for q in qs]).numpy()
    sums = np.sum([q.astype(np.int64) for q in qs], axis=0)
    # the same order of classes, ties included, as the page's integer sums
    assert np.array_equal(np.argsort(fused, 1, kind="stable"), np.argsort(sums, 1, kind="stable"))
    assert np.array_equal(fused[:, :, None] == fused[:, None, :], sums[:, :, None] == sums[:, None, :])


def _fake_results(root, nets=("N1", "N2"), seeds=(0, 1, 2), n=40):
    """A results folder of another shape than the committed one: two nets, random posteriors."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, n)
    for net in nets:
        for seed in seeds:
            folder = root / X.folder_name(net, seed)
            folder.mkdir(parents=True)
            for tag, m in (("dense_paper", n), ("multi_crop_paper_n20", n // 2)):
                np.savez_compressed(folder / f"posteriors_{tag}.npz", labels=y[:m].astype(np.int16),
                                    posteriors=rng.dirichlet(np.ones(10), size=m).astype(np.float16))
                (folder / f"eval_{tag}.json").write_text(json.dumps({"dataset": "fashion_mnist", "split": "val",
                                                                     "images": m}))
    return y


def test_any_results_folder_is_read_by_name(tmp_path):
    y = _fake_results(tmp_path)
    found = available(("N1", "N2"), results=tmp_path)
    assert found[("N1", "dense_paper")] == ImageSet("fashion_mnist", "val", 40, False)
    assert found[("N2", "multi_crop_paper_n20")] == ImageSet("fashion_mnist", "val", 20, True)
    s = FusionState(found, ResultsPosteriors(tmp_path), nets=("N1", "N2"), methods=("dense_paper",), seed=2)
    p = [X.posteriors(n, 2, "dense_paper", tmp_path)[0] for n in ("N1", "N2")]
    assert s.result["top1"] == topk_error(E.fuse(p), y, 1)
    payload = subset_payload(25, found, results=tmp_path)
    assert set(payload["image_sets"]) == {"fashion_mnist val, 40 images", "fashion_mnist val, 20-image subset"}
    back = QuantisedPosteriors(payload)
    q, labels = back.get("N1", "dense_paper", 2)
    assert q.shape == (25, 10) and np.array_equal(labels, y[:25])
    assert np.array_equal(q, dequantise(quantise(p[0][:25])))
    page = FusionState(back.evaluations, back, nets=("N1", "N2"), methods=("dense_paper",), seed=2)
    assert page.result["images"] == 25
    page.select(methods=["dense_paper", "multi_crop_paper_n20"])
    assert page.result["message"].startswith("These evaluations scored different images")


def test_works_without_ipywidgets():
    assert without_ipywidgets("from vgg_lib.explorer.fusion import FusionState\n"
                              "from vgg_lib.explorer.fusion import render, static\n"
                              "print('vggFusionMount' in static.static_html({}))") == ["True"]



@committed
def test_calculator_checkboxes_drive_the_state():
    pytest.importorskip("ipywidgets")
    from vgg_lib.explorer.fusion import FusionCalculator

    calc = FusionCalculator(static=False)
    first = calc.result["top1"]
    calc.net_boxes["A-full"].value = True
    assert calc.state.nets == ["A-full", "E-full", "D-S256-512"] and calc.result["top1"] != first
    assert f'{calc.result["top1"]:.2f}%' in calc.result_w.value
    calc.select(nets=["Z"])
    assert "has no committed evaluation" in calc.result_w.value
    calc.select(nets=[], methods=["dense_paper"])
    assert not any(b.value for b in calc.net_boxes.values())
    assert "Select at least one net" in calc.result_w.value
