"""Effective receptive fields (Luo et al., 2016) for the explorer: of the selected unit (live),
of each layer's centre unit (the static book), and of the compare tab's two small stacks.

Configurations are explored through He-initialised copies of reduced width (random weights:
the ERF shows the architecture, not what a trained net learnt); your own model as it is.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from ..analysis import effective_receptive_field
from ..models import VGG, vgg
from .geometry import erf_crop
from .images import erf_uri, image_tensor


@contextlib.contextmanager
def one_thread():
    # small nets on a shared CPU: one thread is faster than contending for two
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def he_copy(config: str, width: float, input_size: int, seed: int) -> VGG:
    """``config`` at ``width``, He-initialised from ``seed``: the net whose ERFs are shown."""
    torch.manual_seed(seed)
    return vgg(config, width=width, input_size=input_size, init="kaiming").eval()


def erf_image(model: nn.Module, row: dict, unit: tuple[int, int], x: torch.Tensor,
              max_side: int = 112) -> tuple[str, tuple]:
    """The ERF of ``unit`` of layer ``row`` on image tensor ``x``, cropped to the unit's
    theoretical box: ``(grey PNG data URI, (x, y, w, h))`` in input pixels."""
    e = effective_receptive_field(model, row["name"], image=x, unit=unit)
    crop, box = erf_crop(e, row, unit)
    return erf_uri(crop, max_side=max_side), box


class ErfSource:
    """The live explorer's ERFs, computed when first shown and kept until the image changes."""

    def __init__(self, width: float = 0.25, seed: int = 0):
        self.width, self.seed = width, seed
        self._models: dict[str, nn.Module] = {}
        self._cache: dict = {}
        self._photo = self._x = None

    def for_state(self, state) -> tuple[str, tuple]:
        """``erf_image`` of the state's unit on the state's image."""
        if state.photo is not self._photo:      # a reference, not an id: ids of freed arrays recur
            self._photo, self._x, self._cache = state.photo, image_tensor(state.photo), {}
        key = (state.config, state.layer, state.unit)
        if key not in self._cache:
            with one_thread():
                self._cache[key] = erf_image(self._model(state), state.row, state.unit, self._x,
                                             max_side=state.input_size)
        return self._cache[key]

    def _model(self, state) -> nn.Module:
        if state.is_user_model:
            return state.user_model
        if state.config not in self._models:
            self._models[state.config] = he_copy(state.config, self.width, state.input_size, self.seed)
        return self._models[state.config]


def compare_erfs(n: int, channels: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """ERFs (noise input, random He weights) of n x 3x3 and one (2n+1)x(2n+1), cropped to the
    (2n+1)x(2n+1) view, for the compare tab."""
    k = 2 * n + 1
    torch.manual_seed(seed)
    stack = nn.Sequential(*[m for i in range(n) for m in
                            (nn.Conv2d(3 if i == 0 else channels, channels, 3, padding=1), nn.ReLU())])
    single = nn.Sequential(nn.Conv2d(3, channels, k, padding=n), nn.ReLU())
    out = {}
    for key, net in (("stack", stack), ("single", single)):
        for mod in net:
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        size = 2 * k + 1
        e = effective_receptive_field(net, len(net) - 1, input_size=size, n_samples=16, seed=seed)
        c = size // 2
        out[key] = e[c - n:c + n + 1, c - n:c + n + 1]
    return out


def compare_uris(n: int) -> dict[str, str]:
    """``compare_erfs(n)`` as grey PNG data URIs (linear scale: the contrast is the point)."""
    return dict(_compare_uris(n))


@lru_cache(maxsize=8)
def _compare_uris(n: int) -> tuple:
    # a tuple, so that no caller can change what the next one gets
    return tuple((k, erf_uri(v, max_side=64, gamma=1.0)) for k, v in compare_erfs(n).items())
