"""The layer list the explorer walks and the geometry of one unit.

Receptive-field conventions are those of ``vgg_lib.analysis`` (Araujo et al., 2019): unit ``u``
of a layer is centred on input pixel ``start + u * jump`` and sees ``size`` pixels around it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import nn

from ..analysis import layer_table, layers
from ..models import vgg

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def spatial_layers(model: nn.Module, input_size: int) -> list[dict]:
    """One dict per convolution / pooling layer: ``name, kind, size, jump, start, map, params``
    (``params``: weights and biases of every layer up to and including this one).

    Raises ``TypeError`` for layers the analysis does not support, ``ValueError`` if the input
    is too small for the model.
    """
    t = layer_table(model, input_size=input_size, total=False)
    t["cum_params"] = t["params"].cumsum()
    kinds = dict(layers(model))
    rows = []
    for _, r in t.iterrows():
        if isinstance(kinds[r["name"]], _SPATIAL):
            rows.append(dict(name=r["name"], kind=r["kind"], size=int(r["rf_size"]),
                             jump=int(r["rf_jump"]), start=float(r["rf_start"]),
                             map=int(r["out_shape"][1]), params=int(r["cum_params"])))
    if not rows:
        raise ValueError("the model has no convolution or pooling layer to explore")
    return rows


def layer_spec(model: nn.Module) -> list[dict]:
    """The raw layer list the page's JavaScript walks: kernel, stride, padding, channels."""
    out = []
    for name, m in layers(model):
        if isinstance(m, _SPATIAL):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
            conv = isinstance(m, nn.Conv2d)
            out.append(dict(name=name, kind="conv" if conv else "pool", k=k, s=s, p=p,
                            cin=m.in_channels if conv else 0, cout=m.out_channels if conv else 0,
                            bias=conv and m.bias is not None))
        elif isinstance(m, (nn.Flatten, nn.Linear)):
            break
    return out


@lru_cache(maxsize=8)
def full_size_rows(config: str, input_size: int) -> tuple[tuple, tuple]:
    """``(spatial_layers, layer_spec)`` of the full-size net of ``config``, built on the meta
    device: its parameter counts without its memory."""
    model = vgg(config, input_size=input_size, init=None, device="meta")
    return tuple(spatial_layers(model, input_size)), tuple(layer_spec(model))


def unit_centre(row: dict, unit: tuple[int, int]) -> tuple[float, float]:
    """Input-pixel coordinates ``(y, x)`` of the centre of ``unit`` = ``(row, col)``."""
    return row["start"] + unit[0] * row["jump"], row["start"] + unit[1] * row["jump"]


def check_unit(row: dict, unit) -> tuple[int, int]:
    """``unit`` as a pair of ints, or ``ValueError`` if it is outside the layer's map."""
    try:
        u = (int(unit[0]), int(unit[1]))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"unit must be a (row, col) pair of integers, got {unit!r}") from None
    n = row["map"]
    if not (0 <= u[0] < n and 0 <= u[1] < n):
        raise ValueError(f"unit {u} is outside layer {row['name']}'s {n}x{n} feature map; "
                         f"rows and columns go from 0 to {n - 1}")
    return u


def clamp_unit(row: dict, unit: tuple[int, int]) -> tuple[int, int]:
    """The unit of ``row``'s map nearest to ``unit``: rows and columns held to 0 .. map - 1."""
    return tuple(int(min(max(v, 0), row["map"] - 1)) for v in unit)


def follow_unit(old: dict, new: dict, unit: tuple[int, int]) -> tuple[int, int]:
    """The unit of layer ``new`` whose centre is nearest to ``unit``'s centre in layer ``old``."""
    cy, cx = unit_centre(old, unit)
    return clamp_unit(new, (round((cy - new["start"]) / new["jump"]), round((cx - new["start"]) / new["jump"])))


def erf_crop(erf: np.ndarray, row: dict, unit: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """The part of an ERF inside the unit's theoretical box: ``(crop, (x0, y0, w, h))`` in pixels."""
    h, w = erf.shape
    cy, cx = unit_centre(row, unit)
    half = (row["size"] - 1) / 2
    y0, y1 = max(int(np.ceil(cy - half)), 0), min(int(np.floor(cy + half)), h - 1)
    x0, x1 = max(int(np.ceil(cx - half)), 0), min(int(np.floor(cx + half)), w - 1)
    return erf[y0:y1 + 1, x0:x1 + 1], (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
