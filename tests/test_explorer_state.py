"""The receptive-field explorer's state and rendering without ipywidgets: the numbers it reports
are those of ``vgg_lib.analysis``, units follow and clamp at the edges of feature maps, and bad
names are one-line errors that list what is allowed and change nothing."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import REPO
from vgg_lib.analysis import layer_table, receptive_field
from vgg_lib.explorer.images import SAMPLE_IMAGES
from vgg_lib.explorer.render import numbers_html, view_svg
from vgg_lib.explorer.state import ExplorerState
from vgg_lib.models import vgg


@pytest.fixture
def d():
    return ExplorerState("D")


def test_works_without_ipywidgets():
    # a fresh interpreter in which importing ipywidgets or traitlets fails
    code = ("import sys; sys.modules['ipywidgets'] = sys.modules['traitlets'] = None\n"
            "from vgg_lib.explorer import ExplorerState\n"
            "from vgg_lib.explorer import render, static\n"
            "s = ExplorerState('D'); s.select(layer='pool5')\n"
            "assert 'rfx-box' in render.view_svg(s) and 'vggRfxMount' in static.static_html({})\n"
            "print(s['size'], s.unit, 'ipywidgets' in sys.modules and sys.modules['ipywidgets'] is not None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["212", "(3,", "3)", "False"]


def test_numbers_of_d_at_conv5_3_are_the_analysis_ones(d):
    rf = receptive_field(vgg("D", device="meta")).loc["conv5_3"]
    table = layer_table(vgg("D", device="meta"), total=False).set_index("name")
    assert (d.config, d.layer, d.unit) == ("D", "conv5_3", (7, 7))        # the centre of a 14x14 map
    assert d["size"] == rf["size"] == 196 and d["jump"] == rf["jump"] == 16 and d["start"] == rf["start"] == 7.5
    assert d["map"] == 14 and d["params"] == table.loc[:"conv5_3", "params"].sum() == 14_714_688
    assert d["pixel"] == (7.5 + 7 * 16, 7.5 + 7 * 16)
    d.select(layer="pool5")
    assert (d["size"], d["jump"], d["map"]) == (212, 32, 7)
    d.select(config="E")                                              # the same layer name, E's field
    assert (d.layer, d["size"]) == ("pool5", 268)


def test_move_clamps_at_the_edges(d):
    d.select(layer="pool5")                                           # a 7x7 map, unit (3, 3)
    assert d.move(10, -10) == (6, 0) == d.unit
    assert d.move(-1, 1) == (5, 1)
    assert d.move(-100, 100) == (0, 6)
    with pytest.raises(ValueError, match=r"^move takes integer steps \(rows, cols\), got \(0.5, 0\)$"):
        d.move(0.5, 0)
    assert d.unit == (0, 6)


def test_a_new_layer_or_configuration_keeps_the_units_place_clamped(d):
    d.select(layer="conv1_1", unit=(0, 223))                          # the top-right pixel
    d.select(layer="pool5")
    assert d.unit == (0, 6)                                           # its unit of pool5, at the edge
    d.select(layer="conv4_3", unit=(27, 0))
    d.select(config="B-5x5")                                          # no conv4_3 nor conv5_3: the last
    assert (d.layer, d.unit) == ("pool5", (6, 0))
    d.select(config="A", layer="conv3_2", unit=(0, 0))
    assert d["size"] == 26
    d.select(config="C")                                              # C has conv3_2: kept, C's field
    assert (d.layer, d.unit, d["size"]) == ("conv3_2", (0, 0), 32)


def test_bad_names_are_one_line_errors_that_list_what_is_allowed(d):
    with pytest.raises(ValueError, match=r"^model 'Z' is not a configuration; allowed: A, A-LRN, B, C, D, E, "
                                         r"B-5x5, or a VGG / nn.Sequential model$"):
        ExplorerState("Z")
    with pytest.raises(ValueError, match=r"^configuration 'F' is unknown; allowed: A, A-LRN, B, C, D, E, B-5x5$"):
        d.select(config="F")
    with pytest.raises(ValueError) as e:
        d.select(config="A", layer="conv5_3")                         # A's block 5 has two convolutions
    assert str(e.value) == ("layer 'conv5_3' is not a convolution or pooling layer of A; allowed: conv1_1, "
                            "pool1, conv2_1, pool2, conv3_1, conv3_2, pool3, conv4_1, conv4_2, pool4, "
                            "conv5_1, conv5_2, pool5")
    with pytest.raises(ValueError, match=r"^unit \(14, 0\) is outside layer conv5_3's 14x14 feature map; "
                                         r"rows and columns go from 0 to 13$"):
        d.select(unit=(14, 0))
    assert (d.config, d.layer, d.unit) == ("D", "conv5_3", (7, 7))    # nothing was applied
    with pytest.raises(ValueError, match="^image 'lena' is not a bundled sample; allowed: chelsea, astronaut"):
        d.set_image("lena")
    with pytest.raises(ValueError, match="^no image of yours was given; allowed: chelsea"):
        d.set_image("your image")
    with pytest.raises(ValueError, match="^input_size must be an integer >= 32, got 16$"):
        ExplorerState("D", input_size=16)
    assert d.image == "chelsea"


def test_unexplorable_model_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^this model cannot be explored: layer 1 is a Upsample, .*; "
                                         r"supported: Conv2d, MaxPool2d"):
        ExplorerState(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2)))


def test_your_model_and_your_image():
    torch.manual_seed(0)
    model = vgg("B", width=1 / 16, input_size=64)
    s = ExplorerState(model, image=np.random.default_rng(0).random((40, 60, 3)), input_size=64)
    assert s.configs[-1] == s.config == "your model (B, width 0.0625)" and s.is_user_model
    assert s.layer == "pool5" and s["size"] == receptive_field(model).loc["pool5", "size"]
    assert s.image == "your image" and s.images == list(SAMPLE_IMAGES) + ["your image"]
    mine = s.photo
    s.set_image("coffee")
    assert s.image == "coffee" and s.photo.shape == (64, 64, 3)
    s.set_image("your image")
    assert s.photo is mine
    s.select(config="D")                                              # Table 1 stays available
    assert (s.layer, s["size"], s.is_user_model) == ("pool5", 212, False)


def test_rendering_is_a_function_of_the_state(d):
    d.select(layer="conv4_3", unit=(0, 0))
    svg = view_svg(d)
    # conv4_3: 92 px, unit (0, 0) centred on pixel 3.5: the box starts in the padding
    assert 'class="rfx-box" x="-42.5" y="-42.5" width="92" height="92"' in svg
    assert svg.count("<circle") == 28 * 28 + 1 and "rfx-erf" not in svg    # the grid and the unit
    d.show_grid = False
    assert "rfx-grid" not in view_svg(d) and view_svg(d) == view_svg(d)
    assert '<span class="rfx-pixel">(row 3.5, column 3.5)</span>' in numbers_html(d)
    assert '<span class="rfx-params">7,635,264</span>' in numbers_html(d)
