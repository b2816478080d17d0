"""Table 2 and Sect. 2.3 recomputed: parameters, multiply-adds, receptive fields."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from vgg_lib import paper
from vgg_lib.analysis import (effective_receptive_field, layer_table, receptive_field,
                              stack_vs_single)
from vgg_lib.models import fully_convolutional, vgg

COLUMNS = ["name", "kind", "out_shape", "params", "macs", "activation_bytes", "rf_size", "rf_jump", "rf_start"]


@pytest.fixture(scope="module")
def full_tables():
    # full-size nets on the meta device: layer_table reads shapes, not weights
    return {n: layer_table(vgg(n, device="meta")) for n in ["A", "A-LRN", "B", "C", "D", "E"]}


def test_table2_parameters_exactly(full_tables):
    assert {n: int(t.params.iloc[-1]) for n, t in full_tables.items()} == paper.PARAMS
    millions = paper.table(2).set_index("config").params_millions.to_dict()
    assert {n: round(t.params.iloc[-1] / 1e6) for n, t in full_tables.items()} == millions


def test_multiply_adds_match_torchvision(full_tables):
    for name, gmacs in paper.TORCHVISION_GMACS.items():
        assert round(full_tables[name].macs.iloc[-1] / 1e9, 2) == gmacs


def test_layer_table_columns_and_total_row(full_tables):
    t = full_tables["D"]
    assert list(t.columns) == COLUMNS
    assert t.name.iloc[-1] == "total"
    assert t.params.iloc[-1] == t.params.iloc[:-1].sum()
    row = t.set_index("name").loc["conv1_2"]
    assert row.out_shape == (64, 224, 224)
    assert row.macs == 224 * 224 * 64 * 64 * 9
    assert row.activation_bytes == 4 * 64 * 224 * 224
    assert t.set_index("name").loc["fc6", "params"] == 25088 * 4096 + 4096


def test_receptive_fields_at_pool5_and_conv5_3():
    expected = {"A": 150, "A-LRN": 150, "B": 156, "C": 156, "D": 212, "E": 268}
    for name, size in expected.items():
        rf = receptive_field(vgg(name, width=1 / 64, init=None))
        assert rf.loc["pool5", "size"] == size, name
        assert rf.loc["pool5", "jump"] == 32
    rf = receptive_field(vgg("D", width=1 / 64, init=None))
    assert rf.loc["conv5_3", "size"] == 196
    assert rf.loc["conv1_1", "size"] == 3 and rf.loc["conv1_2", "size"] == 5


def test_receptive_field_start_and_jump_against_brute_force():
    # Which input pixels reach unit (2, 2)? (Average pooling: a max-pool passes gradient to one pixel.)
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(1, 1, 3, padding=1),
                        nn.AvgPool2d(2), nn.Conv2d(1, 1, 5, padding=0))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0)
                m.bias.fill_(1.0)
    rf = receptive_field(net, input_size=64)
    size, jump, start = rf.iloc[-1][["size", "jump", "start"]]
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    y = net(x)
    y[0, 0, 2, 2].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    lo, hi = rows.min().item(), rows.max().item()
    centre = start + 2 * jump
    assert (hi - lo + 1) == size and (lo + hi) / 2 == centre


def test_fully_convolutional_has_the_same_receptive_fields():
    m = vgg("D", width=1 / 64, init=None)
    a, b = receptive_field(m), receptive_field(fully_convolutional(m))
    assert a.loc["pool5"].tolist() == b.loc["pool5"].tolist()
    assert a.loc["fc8", "size"] == b.loc["fc8", "size"] == 212 + 6 * 32


def test_unsupported_module_is_named():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
    with pytest.raises(TypeError, match="layer 1 is a GELU, which the receptive-field and cost analysis "
                                        "does not support; supported: Conv2d, MaxPool2d"):
        receptive_field(net)
    with pytest.raises(TypeError, match="layer 1 is a GELU"):
        layer_table(net, input_size=8)
    with pytest.raises(TypeError, match="cannot walk a GRU"):
        layer_table(nn.GRU(3, 3), input_size=8)


def test_stack_vs_single_reproduces_sect_2_3():
    df = stack_vs_single(channels=64)
    per = df.set_index("layers").params_per_C2
    assert per.to_dict() == {"2 x 3x3": 18, "1 x 5x5": 25, "3 x 3x3": 27, "1 x 7x7": 49}
    assert df.set_index("layers").receptive_field.to_dict() == {"2 x 3x3": 5, "1 x 5x5": 5, "3 x 3x3": 7, "1 x 7x7": 7}
    assert df.set_index("layers").nonlinearities.to_dict() == {"2 x 3x3": 2, "1 x 5x5": 1, "3 x 3x3": 3, "1 x 7x7": 1}
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        stack_vs_single(channels=0)


def test_effective_receptive_field_lies_inside_the_theoretical_one():
    torch.manual_seed(0)
    m = vgg("D", width=1 / 16, input_size=64, init="kaiming")
    erf = effective_receptive_field(m, "conv3_3", input_size=64)
    assert erf.shape == (64, 64) and erf.max() == pytest.approx(1.0)
    rf = receptive_field(m, input_size=64).loc["conv3_3"]
    ys, xs = np.nonzero(erf > 0)
    assert ys.max() - ys.min() + 1 <= rf["size"] and xs.max() - xs.min() + 1 <= rf["size"]
    assert ys.max() - ys.min() + 1 >= rf["size"] - 2          # all of it can be reached
    # the gradient concentrates at the centre (Luo et al., 2016)
    c = erf.shape[0] // 2
    assert erf[c - 4:c + 4, c - 4:c + 4].mean() > 3 * erf[erf > 0].mean() / 2


def test_effective_receptive_field_bad_layer_and_unit():
    m = vgg("A", width=1 / 16, input_size=32)
    with pytest.raises(ValueError, match="layer 'conv9_9' is not in the model; layers: conv1_1"):
        effective_receptive_field(m, "conv9_9")
    with pytest.raises(ValueError, match="layer 'fc6' is fully connected"):
        effective_receptive_field(m, "fc6")
    with pytest.raises(ValueError, match=r"unit \(5, 0\) is outside layer pool5's 1x1 map"):
        effective_receptive_field(m, "pool5", unit=(5, 0))


def test_paper_tables():
    assert paper.table(3).shape[0] == 12
    assert paper.table(6).top5_val_error.min() == 6.8
    assert paper.table(8).top5_loc_error.tolist() == [36.4, 34.3, 33.1]
    with pytest.raises(ValueError, match=r"the paper has no table 9 here; available: \[1, 2"):
        paper.table(9)


@pytest.mark.parametrize("name, size", [("A", 64), ("D", 96)])
@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_training_memory_counts_what_autograd_keeps(name, size, amp):
    """The activation estimate walked from layer_table equals the bytes autograd really saves
    for the backward pass (measured on the CPU, where dropout masks are floats, not bools)."""
    import contextlib

    from vgg_lib.analysis import training_memory
    torch.manual_seed(0)
    net = vgg(name, num_classes=10, width=1 / 8, input_size=size).train()
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if amp == "bf16" else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        logits = net(torch.randn(4, 3, size, size))
        torch.nn.functional.cross_entropy(logits.float(), torch.zeros(4, dtype=torch.long))
    measured = sum(v for k, v in saved.items() if k not in params)
    est = training_memory(net, 4, amp, mask_bytes=2 if amp == "bf16" else 4)
    assert abs(est["activations"] + est["weight_copies"] - measured) <= 64  # the labels, the loss
    assert est["total"] == sum(v for k, v in est.items() if k != "total")
    assert training_memory(net, 8, amp)["activations"] > est["activations"]
    with pytest.raises(ValueError, match="amp='fp32' is not allowed: one of bf16, fp16, off"):
        training_memory(net, 4, "fp32")
