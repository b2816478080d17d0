"""The receptive-field explorer's Python side: the numbers it shows are those of
``analysis.receptive_field`` (D: 196 at conv5_3, 212 at pool5), bad input becomes a message in
the widget, a control change is rendered once with every control agreeing with the state, and
the static HTML needs nothing outside the page. (The state alone: test_explorer_state.py.)"""
import re

import numpy as np
import pytest
import torch
from torch import nn

from vgg_lib.analysis import SUPPORTED, receptive_field
from vgg_lib.explorer import geometry, images, static
from vgg_lib.explorer.erf import compare_erfs
from vgg_lib.models import vgg
from vgg_lib.widgets import ReceptiveFieldExplorer


@pytest.fixture(scope="module")
def explorer():
    return ReceptiveFieldExplorer("D", static=False)


def test_rows_match_receptive_field_and_paper_parameter_counts():
    rows = {r["name"]: r for r in geometry.full_size_rows("D", 224)[0]}
    rf = receptive_field(vgg("D", width=1 / 64, init=None))
    for name, row in rows.items():
        assert (row["size"], row["jump"], row["start"]) == tuple(rf.loc[name, ["size", "jump", "start"]])
    assert rows["conv5_3"]["size"] == 196 and rows["pool5"]["size"] == 212
    assert rows["pool5"]["jump"] == 32 and rows["pool5"]["map"] == 7
    # the convolutional part of VGG-16 (D) holds 14,714,688 weights and biases
    assert rows["pool5"]["params"] == 14_714_688
    assert [r["name"] for r in geometry.full_size_rows("A", 224)[0]][:3] == ["conv1_1", "pool1", "conv2_1"]


def test_layer_spec_is_what_the_page_walks():
    spec = geometry.full_size_rows("B-5x5", 224)[1]
    assert spec[0] == dict(name="conv1_1", kind="conv", k=5, s=1, p=2, cin=3, cout=64, bias=True)
    assert spec[1] == dict(name="pool1", kind="pool", k=2, s=2, p=0, cin=0, cout=0, bias=False)


def test_explorer_shows_box_and_numbers(explorer):
    explorer.select(config="D", layer="conv5_3")
    assert explorer.state["size"] == 196 and explorer.unit == (7, 7)
    assert '<span class="rfx-size">196</span>' in explorer.controls.numbers_w.value
    # unit (7, 7) of conv5_3 is centred on pixel 7.5 + 7 * 16 = 119.5; box edge 119.5 - 97.5 - 0.5
    assert 'class="rfx-box" x="21.5" y="21.5" width="196" height="196"' in explorer.controls.view_w.value
    explorer.select(layer="pool5")                    # the same image point: unit (3, 3) of pool5
    assert explorer.state["size"] == 212 and explorer.unit == (3, 3)
    assert 'width="212"' in explorer.controls.view_w.value and "rfx-erf" in explorer.controls.view_w.value
    assert explorer.message == ""


def test_coordinates_are_named_row_and_column(explorer):
    explorer.select(config="D", layer="conv5_3", unit=(2, 9))
    # unit (2, 9) of conv5_3: rows 7.5 + 2 * 16, columns 7.5 + 9 * 16
    assert ('<span class="rfx-unit-rc">(2, 9)</span>, centred on input pixel '
            '<span class="rfx-pixel">(row 39.5, column 151.5)</span>') in explorer.controls.numbers_w.value
    assert "<th>unit (row, column)</th>" in explorer.controls.numbers_w.value
    axes = explorer.controls.view_w.value.split('class="rfx-axes"')[1]
    assert "column 0 \u2192 223</text>" in axes and "rotate(90)\">row 0 \u2192 223</text>" in axes


def test_grid_shows_unit_centres_spaced_by_the_jump(explorer):
    explorer.select(config="D", layer="pool5")
    dots = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', explorer.controls.view_w.value.split("rfx-grid")[1])
    xs = sorted({float(x) for x, _ in dots})
    assert xs == [15.5 + 32 * u for u in range(7)]


def test_unit_outside_the_map_is_a_message(explorer):
    explorer.select(config="D", layer="pool5", unit=(2, 4))
    assert explorer.unit == (2, 4)
    explorer.select(unit=(7, 0))
    assert explorer.message == ("unit (7, 0) is outside layer pool5's 7x7 feature map; "
                                "rows and columns go from 0 to 6")
    assert "outside layer pool5" in explorer.controls.message_w.value and explorer.unit == (2, 4)
    explorer.select(layer="fc6")
    assert explorer.message.startswith("layer 'fc6' is not a convolution or pooling layer of D")


def test_small_image_is_a_message(explorer):
    explorer.set_image(np.zeros((20, 40, 3), dtype=np.uint8))
    assert explorer.message == ("image is 20x40 pixels; the explorer needs at least 32x32 "
                                "(VGG's five 2x2 poolings halve it five times)")
    assert "needs at least 32x32" in explorer.controls.message_w.value
    assert explorer.controls.image_w.value == "chelsea"        # the previous image stays


def test_own_image_array_is_used(explorer):
    rng = np.random.default_rng(0)
    explorer.set_image(rng.random((48, 64)))           # grey, not square: centre square
    assert explorer.message == "" and explorer.controls.image_w.value == "your image"
    assert explorer.state.photo.shape == (224, 224, 3)
    explorer.controls.image_w.value = "chelsea"


def test_unsupported_model_is_a_message_not_a_traceback():
    ex = ReceptiveFieldExplorer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2)), static=False)
    assert ex.message == ("this model cannot be explored: layer 1 is a Upsample, which the receptive-field "
                          "and cost analysis does not support; supported: " + SUPPORTED)
    assert ex.controls.config_w.value == "D" and ex.state["size"] == 196     # the explorer still works
    ex = ReceptiveFieldExplorer("Z", static=False)
    assert ex.message.startswith("model 'Z' is not a configuration; allowed: A, A-LRN, B")


def test_your_own_vgg_is_explored_as_it_is():
    torch.manual_seed(0)
    model = vgg("A", width=1 / 16, input_size=64, init="kaiming")
    ex = ReceptiveFieldExplorer(model, input_size=64, static=False)
    assert ex.controls.config_w.value == "your model (A, width 0.0625)"
    rf = receptive_field(model)
    assert ex.state["size"] == rf.loc[ex.controls.layer_w.value, "size"]
    assert ex.state["map"] == 2 and ex.state["params"] == sum(
        p.numel() for p in model.features.parameters())
    assert "rfx-erf" in ex.controls.view_w.value


def test_follow_unit_and_erf_crop():
    rows = {r["name"]: r for r in geometry.full_size_rows("D", 224)[0]}
    assert geometry.follow_unit(rows["conv1_1"], rows["pool5"], (0, 223)) == (0, 6)
    erf = np.zeros((224, 224))
    crop, box = geometry.erf_crop(erf, rows["conv3_3"], (0, 0))   # 40 px box around pixel 2.5: clipped
    assert box == (0, 0, 22, 22) and crop.shape == (22, 22)
    with pytest.raises(ValueError, match=r"unit \(56, 0\) is outside layer conv3_3's 56x56"):
        geometry.check_unit(rows["conv3_3"], (56, 0))


def test_load_image_rejects_bad_input():
    with pytest.raises(ValueError, match="image 'lena' is not a bundled sample; allowed: chelsea"):
        images.load_image("lena")
    with pytest.raises(ValueError, match=r"got shape \(5, 40, 40, 3\)"):
        images.load_image(np.zeros((5, 40, 40, 3)))
    photo = images.load_image(torch.rand(3, 40, 50), size=32)
    assert photo.shape == (32, 32, 3) and 0 <= photo.min() and photo.max() <= 1


def test_compare_tab_uses_stack_vs_single(explorer):
    explorer.compare.n_w.value, explorer.compare.c_w.value = 3, 512
    # the slider's readout and the next control's label stay apart (they ran together)
    assert explorer.compare.c_w.layout.margin and explorer.compare.c_w.description == "channels C (in and out)"
    html = explorer.compare.html_w.value
    assert "7,077,888 = 27 C&sup2;" in html and "12,845,056 = 49 C&sup2;" in html
    assert '<span class="rfx-cmp-ratio">1.81</span>' in html
    erfs = compare_erfs(3)
    # the stack's ERF peaks at the centre; the single 7x7 layer's is flat by comparison
    assert erfs["stack"][3, 3] == 1 and erfs["stack"][0, 0] < 0.2 < erfs["single"][0, 0]


def test_static_html_is_self_contained_and_both_lives_in_one_output(monkeypatch):
    payload = static.static_payload("chelsea", configs=("D",))
    assert set(payload["configs"]["D"]["erf"]) == {r["name"] for r in geometry.full_size_rows("D", 224)[0]}
    page = static.static_html(payload, "D", "pool5")
    # no script, stylesheet or image is fetched: images are data URIs, SVG filters are local
    assert not re.search(r"<script[^>]*\ssrc=|<link|@import|//cdn|unpkg|jsdelivr", page)
    assert set(re.findall(r"url\((.)", page)) == {"#"}
    assert len(re.findall(r'"data:image/png;base64,', page)) == len(payload["configs"]["D"]["erf"]) + 10
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "vggRfxMount" in page
    monkeypatch.setattr(static, "cached_payload", lambda image, size: payload)   # D only: faster
    ex = ReceptiveFieldExplorer("D", static=True)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/html"].count("vggRfxMount(") == 2       # definition and call


def test_a_control_change_renders_once_and_the_controls_agree_with_the_state():
    ex = ReceptiveFieldExplorer("D", layer="conv4_3", static=False)
    c, views = ex.controls, []
    c.view_w.observe(lambda ch: views.append(ch.new), "value")
    c.config_w.value = "E"        # new layer options: the dropdown passes through "conv1_1" on the way
    assert (ex.state.config, ex.state.layer, ex.unit, ex.state["size"]) == ("E", "conv4_3", (14, 14), 100)
    assert len(views) == 1 and 'width="100"' in views[0] and ex.message == ""
    assert (c.layer_w.value, c.layer_w.options[-1], c.row_w.max, c.row_w.value) == ("conv4_3", "pool5", 27, 14)
    c.layer_w.value = "pool5"
    assert ex.unit == (3, 3) and (c.row_w.max, c.row_w.value, c.col_w.value) == (6, 3, 3) and len(views) == 2
    c.col_w.value = 5
    assert ex.unit == (3, 5) and len(views) == 3
    ex.select(layer="conv1_1")     # pixel (111.5, 175.5); a wider map: the sliders' range grows first
    assert ex.unit == (112, 176) and (c.row_w.max, c.row_w.value, c.col_w.value) == (223, 112, 176)
    ex.select(layer="conv3_2", unit=(0, 0))        # E -> B-5x5, which has no conv3_2 (it used to fail)
    c.config_w.value = "B-5x5"
    assert (ex.state.layer, ex.state["size"], c.layer_w.value, ex.message) == ("pool5", 156, "pool5", "")


def test_move_and_toggles_from_python_and_from_the_controls(explorer):
    explorer.select(config="D", layer="pool5", unit=(3, 3))
    explorer.move(100, -1)
    assert explorer.unit == (6, 2) and explorer.controls.row_w.value == 6 and explorer.message == ""
    explorer.move(0.5)
    assert explorer.message == "move takes integer steps (rows, cols), got (0.5, 0)" and explorer.unit == (6, 2)
    explorer.controls.grid_w.value = False
    assert "rfx-grid" not in explorer.controls.view_w.value and not explorer.state.show_grid
    explorer.controls.erf_w.value = False
    assert "rfx-erf" not in explorer.controls.view_w.value and "Heat" not in explorer.controls.numbers_w.value
    explorer.controls.grid_w.value = explorer.controls.erf_w.value = True
    assert "rfx-grid" in explorer.controls.view_w.value and "rfx-erf" in explorer.controls.view_w.value


def test_compare_tab_with_one_layer_each(explorer):
    explorer.compare.n_w.value, explorer.compare.c_w.value = 1, 64     # both sides labelled "1 x 3x3"
    html = explorer.compare.html_w.value
    assert html.count("36,864 = 9 C&sup2;") == 2 and '<span class="rfx-cmp-ratio">1.00</span>' in html
