"""Table 1 and the model builder: configurations, sizes, fully-convolutional and weight import."""
import pytest
import torch
import torchvision
from torch import nn

from vgg_lib import paper
from vgg_lib.analysis import count_params
from vgg_lib.configs import ALIASES, CONFIGS, describe, resolve, weight_layers
from vgg_lib.models import (VGG, fully_convolutional, init_from, init_weights, load_torchvision_weights,
                            vgg)

SMALL = dict(width=1 / 16, input_size=32, num_classes=10)


def test_table1_weight_layers():
    assert {n: weight_layers(n) for n in CONFIGS} == {
        "A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19, "B-5x5": 8}


def test_config_c_has_1x1_convolutions_and_b5x5_replaces_pairs():
    assert describe("C")[2] == ["conv3-256", "conv3-256", "conv1-256"]
    assert [b for b in describe("B-5x5")] == [["conv5-64"], ["conv5-128"], ["conv5-256"],
                                               ["conv5-512"], ["conv5-512"]]
    assert describe("A-LRN")[0] == ["conv3-64", "LRN"]


def test_aliases():
    assert {a: resolve(a) for a in ALIASES} == {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
    assert vgg("vgg16", **SMALL).config == "D"


@pytest.mark.parametrize("name,expected", [("A", 132_863_336), ("A-LRN", 132_863_336), ("B", 133_047_848),
                                           ("C", 133_638_952), ("D", 138_357_544), ("E", 143_667_240)])
def test_parameter_counts_of_table2(name, expected):
    # on the meta device: the shapes without the 530-575 MB of float32 weights
    model = vgg(name, device="meta")
    assert count_params(model) == expected


def test_meta_device_counts_like_the_cpu_and_allocates_nothing():
    d = vgg("D", device="meta")
    assert all(p.is_meta for p in d.parameters()) and count_params(d) == 138_357_544
    millions = paper.table(2).set_index("config").params_millions
    assert round(count_params(vgg("A", device="meta")) / 1e6) == millions["A"] == 133
    small = vgg("E", batch_norm=True, **SMALL)
    assert count_params(vgg("E", batch_norm=True, device="meta", **SMALL)) == count_params(small) == sum(
        p.numel() for p in small.parameters())
    with pytest.raises(ValueError, match=r"device 'gpu9' is not a torch device \(e.g. 'cpu', 'cuda', 'meta'\)"):
        vgg("A", device="gpu9")


def test_layer_names_follow_the_paper():
    m = vgg("D", **SMALL)
    names = [n for n, _ in m.features.named_children()]
    assert names[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert "conv5_3" in names and names[-1] == "pool5"
    assert [n for n, _ in m.classifier.named_children()] == [
        "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]


def test_width_scales_channels_and_fc_and_input_size_fixes_fc6():
    m = vgg("A", width=1 / 8, input_size=32, num_classes=10)
    assert m.features.conv1_1.out_channels == 8 and m.features.conv5_2.out_channels == 64
    assert m.classifier.fc6.in_features == 64 * 1 * 1 and m.classifier.fc6.out_features == 512
    assert m.classifier.fc8.out_features == 10
    assert vgg("A", device="meta").classifier.fc6.in_features == 512 * 7 * 7
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_lrn_uses_alexnet_parameters():
    lrn = vgg("A-LRN", **SMALL).features.norm1
    assert isinstance(lrn, nn.LocalResponseNorm)
    # PyTorch divides alpha by the window size; AlexNet's alpha=1e-4 applies per neighbour.
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 5e-4, 0.75, 2.0)
    x = torch.rand(1, 8, 4, 4)
    ref = x / (2.0 + 1e-4 * torch.stack([  # AlexNet's formula, computed directly
        (x[:, max(0, c - 2):c + 3] ** 2).sum(1) for c in range(8)], 1)) ** 0.75
    torch.testing.assert_close(lrn(x), ref)


def test_batch_norm_and_dropout_options():
    m = vgg("B", batch_norm=True, dropout=0.2, **SMALL)
    assert isinstance(m.features.bn1_1, nn.BatchNorm2d)
    assert m.classifier.drop6.p == 0.2 and m.classifier.drop7.p == 0.2


@pytest.mark.parametrize("kwargs", [dict(name="vgg16"), dict(name="A-LRN", num_classes=7, width=0.0625, dropout=0.25,
                                                             input_size=40, pools=3),
                                    dict(name="B", num_classes=10, width=0.125, batch_norm=True, dropout=0.0,
                                         input_size=32, pools=5)])
def test_args_rebuild_the_same_network(kwargs):
    """``VGG.args`` is what a checkpoint keeps to rebuild the net (``runs.load_run``)."""
    model = vgg(**kwargs, init=None, device="meta")
    args = model.args
    assert args == {"name": resolve(kwargs["name"]), "num_classes": kwargs.get("num_classes", 1000),
                    "width": kwargs.get("width", 1.0), "batch_norm": kwargs.get("batch_norm", False),
                    "dropout": kwargs.get("dropout", 0.5), "input_size": kwargs.get("input_size", 224),
                    "pools": kwargs.get("pools", 5)}
    again = vgg(**args, init=None, device="meta")
    assert again.args == args and repr(again) == repr(model)


def test_wrong_input_size_says_what_to_do():
    m = vgg("A", **SMALL)
    with pytest.raises(ValueError, match="fully_convolutional"):
        m(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="F"), "config name 'F' is unknown; allowed: A, A-LRN, B, C, D, E, B-5x5, vgg11"),
    (dict(name="A", width=0), "width must be a number > 0"),
    (dict(name="A", width=-1.0), "width must be a number > 0"),
    (dict(name="A", input_size=16), "input_size must be an integer >= 32"),
    (dict(name="A", num_classes=0), "num_classes must be an integer >= 1"),
    (dict(name="A", dropout=1.0), "dropout must be in"),
    (dict(name="A", init="uniform"), "init must be one of normal, glorot, kaiming"),
])
def test_bad_arguments_raise_before_building(kwargs, match, monkeypatch):
    import vgg_lib.models as models

    def boom(*a, **k):
        raise AssertionError("layers were built before validation")
    monkeypatch.setattr(models, "make_features", boom)
    with pytest.raises(ValueError, match=match):
        vgg(**kwargs)


def test_fully_convolutional_equals_the_original_at_224():
    torch.manual_seed(0)
    m = vgg("D", width=1 / 8, init="kaiming").eval()   # full geometry, 1/8 of the channels
    f = fully_convolutional(m)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(f(x).flatten(1), m(x), atol=1e-5, rtol=0)
        assert f(torch.randn(1, 3, 384, 384)).shape == (1, 1000, 6, 6)
    assert f.classifier.fc6.kernel_size == (7, 7) and f.classifier.fc7.kernel_size == (1, 1)


@pytest.mark.parametrize("device, dtype", [("cpu", torch.float64), ("cpu", torch.bfloat16),
                                           ("meta", torch.float32)])
def test_fully_convolutional_keeps_the_models_device_and_dtype(device, dtype):
    # float64, bf16 and the meta device stand in for a CUDA model: fc6..fc8 must follow it
    m = vgg("A", num_classes=10, width=1 / 16, input_size=64).to(device, dtype)
    f = fully_convolutional(m)
    assert {(p.device.type, p.dtype) for p in f.parameters()} == {(device, dtype)}
    if device == "cpu":
        with torch.no_grad():
            assert f.eval()(torch.zeros(1, 3, 96, 96, dtype=dtype)).shape == (1, 10, 2, 2)


def test_fully_convolutional_full_size_class_score_map():
    # shapes only (the values are checked at width 1/8 above): the meta device runs the same
    # shape checks as the CPU kernels without 530 MB of weights and 20 GMACs of arithmetic
    m = vgg("A", device="meta").eval()
    f = fully_convolutional(m)
    assert f.classifier.fc6.weight.is_meta and f.classifier.fc6.kernel_size == (7, 7)
    assert f(torch.empty(1, 3, 384, 384, device="meta")).shape == (1, 1000, 6, 6)
    with pytest.raises(ValueError, match="use fully_convolutional"):
        m(torch.empty(1, 3, 384, 384, device="meta"))


def test_init_schemes():
    torch.manual_seed(0)
    m = vgg("D", width=1 / 4, init=None, input_size=32)
    init_weights(m, "normal", std=0.01)
    w = m.classifier.fc6.weight
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4
    assert all((mod.bias == 0).all() for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    init_weights(m, "normal", std=0.1)                       # the literal "10^-2 variance"
    assert abs(m.classifier.fc6.weight.std().item() - 0.1) < 5e-3
    init_weights(m, "glorot")
    conv = m.features.conv3_1                               # Glorot: U(-a, a), a = sqrt(6/(fan_in+fan_out))
    bound = (6 / (conv.in_channels * 9 + conv.out_channels * 9)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    init_weights(m, "kaiming")
    assert abs(conv.weight.std().item() - (2 / (conv.out_channels * 9)) ** 0.5) < 0.01
    with pytest.raises(ValueError, match="init scheme must be one of normal, glorot, kaiming, got 'he'"):
        init_weights(m, "he")


@pytest.mark.parametrize("deep", ["B", "C", "D", "E"])
def test_init_from_copies_a_first_four_convs_and_the_fc_layers_by_name(deep):
    torch.manual_seed(0)
    a = vgg("A", **SMALL)
    net = vgg(deep, **SMALL)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    init_from(net, a)
    copied = {f"features.{n}.{p}" for n in ("conv1_1", "conv2_1", "conv3_1", "conv3_2") for p in ("weight", "bias")}
    copied |= {f"classifier.{n}.{p}" for n in ("fc6", "fc7", "fc8") for p in ("weight", "bias")}
    src = a.state_dict()
    for key, value in net.state_dict().items():
        if key in copied:
            assert torch.equal(value, src[key]), key
        else:
            assert torch.equal(value, before[key]), key     # left as initialised


def test_init_from_shape_mismatch_names_the_layer_and_copies_nothing():
    a = vgg("A", **SMALL)
    b5 = vgg("B-5x5", **SMALL)
    before = {k: v.clone() for k, v in b5.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer features.conv1_1 has weight shape \(4, 3, 5, 5\) but the "
                                         r"source's has \(4, 3, 3, 3\)"):
        init_from(b5, a)
    assert all(torch.equal(v, before[k]) for k, v in b5.state_dict().items())
    with pytest.raises(ValueError, match="has weight shape"):
        init_from(vgg("D", width=1 / 8, input_size=32), a)


@pytest.mark.parametrize("tv_name,ours,bn", [("vgg11", "A", False), ("vgg13", "B", False),
                                             ("vgg16", "D", False), ("vgg19", "E", False),
                                             ("vgg16_bn", "D", True)])
def test_torchvision_weights_give_identical_outputs(tv_name, ours, bn):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, tv_name)(weights=None, num_classes=1000).eval()
    m = load_torchvision_weights(vgg(ours, batch_norm=bn, init=None), tv.state_dict()).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(m(x), tv(x), atol=1e-5, rtol=0)


def test_torchvision_weights_of_another_architecture_name_key_and_shapes():
    # the mismatch is found from shapes alone: every net on the meta device
    with torch.device("meta"):
        tv19, tv16_bn = torchvision.models.vgg19(weights=None), torchvision.models.vgg16_bn(weights=None)
    d = vgg("D", init=None, device="meta")
    with pytest.raises(ValueError, match=r"model key features.conv4_1.weight has shape \(512, 256, 3, 3\) "
                                         r"but state-dict key features.16.weight has shape \(256, 256, 3, 3\)"):
        load_torchvision_weights(d, tv19.state_dict())
    with pytest.raises(ValueError, match="state-dict key features.1.weight"):
        load_torchvision_weights(d, tv16_bn.state_dict())
