"""The testing explorer without a browser: its views are ``vgg_lib.evaluate``'s numbers, the
committed precomputed views read back to them, its controls drive what is shown, bad values are
one-line errors that change nothing, and without a checkpoint it says so in one line."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import without_ipywidgets
from vgg_lib import evaluate as E
from vgg_lib.explorer.testing import precomputed as P
from vgg_lib.explorer.testing.sources import sources_for
from vgg_lib.explorer.testing.state import TestingState
from vgg_lib.explorer.testing.views import compute_view
from vgg_lib.models import vgg

committed = pytest.mark.skipif(not P.views_file().is_file(), reason="no committed precomputed views")


@pytest.fixture(scope="module")
def run():
    """A random net of the reference geometry (32-pixel crops, three poolings), as a run."""
    torch.manual_seed(0)
    model = vgg("A", num_classes=10, width=1 / 16, input_size=32, pools=3, init="kaiming").eval()
    return SimpleNamespace(model=model, mean=torch.tensor([72.0, 72.0, 72.0]), pixel_scale=1 / 64, crop=32)


@pytest.fixture(scope="module")
def image():
    return torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("Q", [32, 55, 73])
def test_a_view_is_evaluates_numbers(run, image, Q):
    v = compute_view(run, image, 3, Q)
    x = E.preprocess(image[None], run.mean, run.pixel_scale)
    side = Q // 8 - 4 + 1                                  # pool5 of a 32 crop is 4x4, stride 8
    assert v["scores"].shape == (side, side, 10) and v["stride"] == 8 and v["crop"] == 32
    assert v["positions"].tolist() == [list(p) for p in E.crop_positions(Q, Q, 32)]
    assert np.allclose(v["dense"], E.dense(run.model, x, Q)[0].numpy(), atol=1e-6)
    assert np.allclose(v["multi"], v["crops"].mean(0), atol=1e-6)          # multi-crop: the crops' mean
    assert np.allclose(v["centre"], v["crops"][12], atol=1e-5)             # the grid's middle is the centre crop
    if Q == 32:                                                            # one window: the centre crop
        assert np.allclose(torch.softmax(torch.tensor(v["scores"][0, 0]), 0), v["centre"], atol=1e-5)


def _page(run, image, qs=(32, 73)):
    views = [[compute_view(run, image, 3, q) for q in qs]]
    return views, P.payload({"rand": ("A", views)}, [{"index": 5, "label": 3, "png": "data:,"}],
                            [f"class {c}" for c in range(10)], qs)


def test_precomputed_views_read_back_to_the_computed_ones(run, image):
    views, payload = _page(run, image)
    back = P.PrecomputedViews(payload, "rand")
    for q, v in zip((32, 73), views[0]):
        b = back.view(5, q)
        for key in ("centre", "crops", "multi", "dense"):
            assert np.abs(b[key] - v[key]).max() <= 0.5 / 255 + 1e-6, key        # 8 bits, rounded
        assert np.abs(b["scores"] - v["scores"]).max() <= 0.005 + 1e-6
        assert b["scores"].shape == v["scores"].shape and np.array_equal(b["positions"], v["positions"])
    with pytest.raises(ValueError):
        back.view(6, 32)                                     # not a precomputed image


def test_controls_drive_the_numbers_and_bad_values_change_nothing(run, image):
    _, payload = _page(run, image)
    s = TestingState({"rand": P.PrecomputedViews(payload, "rand")}, [5], [32, 73], payload["classes"], method="centre")
    assert (s.net, s.image, s.method, s.Q) == ("rand", 5, "centre", 73)
    assert s["boxes"] == [(20, 20, 32)] and s["shown"] == 3           # the centre of 73: (73 - 32) / 2
    s.select(method="multi")
    assert len(s["boxes"]) == 25 and s["per_crop"].shape == (50,)
    assert s["prediction"] == int(np.argmax(s.view["multi"]))
    s.select(method="dense")
    assert len(s["boxes"]) == 36 and s["boxes"][-1] == (40, 40, 32)   # 6x6 windows, stride 8
    s.select(Q=32)
    assert s["boxes"] == [(0, 0, 32)]
    s.select(cls="class 7")
    assert s["shown"] == 7 and s["per_crop"][0] == pytest.approx(
        float(torch.softmax(torch.tensor(s.view["scores"][0, 0]), 0)[7]), abs=1e-6)
    with pytest.raises(ValueError, match=r"^Q 40 is not available; allowed: 32, 73$"):
        s.select(method="multi", Q=40)
    with pytest.raises(ValueError, match=r"^method 'sliding' is not available; allowed: centre, multi, dense$"):
        s.select(method="sliding")
    assert (s.method, s.Q, s["shown"]) == ("dense", 32, 7)           # unchanged by the refused ones


@committed
def test_committed_views_are_small_consistent_and_say_where_they_come_from():
    f = P.views_file()
    assert f.stat().st_size < 60_000
    payload = P.load()
    prov = payload["provenance"]
    assert prov["command"] == "python -m vgg_lib.explorer.testing.precomputed"
    assert set(prov["nets"]) == set(P.NETS) and all(n["checkpoint"].startswith("runs/") for n in prov["nets"].values())
    assert payload["qs"] == list(P.QS) and len(payload["images"]) == len(P.CLASSES_SHOWN)
    for net in P.NETS:
        views = P.PrecomputedViews(payload, net)
        for e in payload["images"]:
            v = views.view(e["index"], 55)
            assert v["label"] == e["label"]
            assert np.abs(v["multi"] - v["crops"].mean(0)).max() <= 1 / 255
            assert np.abs(v["centre"] - v["crops"][12]).max() <= 1 / 255


@committed
def test_without_a_checkpoint_it_says_so_and_shows_the_precomputed_views(tmp_path):
    sources, note = sources_for(P.load(), runs=tmp_path)
    assert all(isinstance(s, P.PrecomputedViews) for s in sources.values())
    assert note.startswith("No checkpoint of A-s0, D-s0 under runs/") and "\n" not in note


@committed
def test_live_views_agree_with_the_committed_ones():
    sources, note = sources_for(P.load())
    live = [n for n, s in sources.items() if not isinstance(s, P.PrecomputedViews)]
    if not live:
        pytest.skip("no reference checkpoint under runs/ (python -m vgg_lib.experiments reproduce --runs A D --seeds 0)")
    assert note.startswith("Live")
    stored = P.PrecomputedViews(P.load(), live[0])
    index = stored.images[0]
    a, b = sources[live[0]].view(index, 42), stored.view(index, 42)
    assert np.abs(a["dense"] - b["dense"]).max() <= 0.5 / 255 + 1e-4
    assert np.abs(a["scores"] - b["scores"]).max() <= 0.005 + 1e-3


@committed
def test_explorer_widget_controls_drive_the_state(tmp_path):
    pytest.importorskip("ipywidgets")
    from vgg_lib.explorer.testing import TestingExplorer

    tex = TestingExplorer(runs=tmp_path, static=False)           # no checkpoint there: precomputed
    assert "No checkpoint" in tex.note_w.value
    tex.method_w.value = "multi"
    assert tex.state.method == "multi" and tex.image_html.value.count("<rect") == 25 + 1
    tex.q_w.value = 32
    tex.method_w.value = "dense"
    assert "1x1 windows" in tex.right_html.value
    tex.select(Q=99)
    assert "Q 99 is not available" in tex.message_w.value and tex.q_w.value == 32
    html = tex._repr_mimebundle_()
    assert "text/html" not in html


def test_works_without_ipywidgets():
    assert without_ipywidgets(
        "from vgg_lib.explorer.testing import TestingState\n"
        "from vgg_lib.explorer.testing import render, static, precomputed, sources\n"
        "print('vggTestingMount' in static.static_html({'nets': {'x': {}}, 'qs': [37], 'images': [{'index': 1}]}))"
    ) == ["True"]
