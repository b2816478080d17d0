"""What the receptive-field explorer shows, as plain Python: no ipywidgets, no drawing.

``ExplorerState`` holds the configuration (or your model), the layer, the unit (row, column),
the image and what is highlighted (effective receptive field, grid of unit centres), and
reports the numbers shown (``state.numbers``, or ``state["size"]``). Every change goes through
a method that checks its input first: bad input raises ``ValueError`` with one line saying
what was wrong and what is allowed, and leaves the state as it was.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from ..configs import CONFIGS
from ..models import VGG
from .geometry import check_unit, clamp_unit, follow_unit, full_size_rows, spatial_layers, unit_centre
from .images import MIN_IMAGE, SAMPLE_IMAGES, load_image, photo_uri

DEFAULT_LAYER = "conv5_3"       # where the paper's argument is made: D's last convolution
YOUR_IMAGE = "your image"       # the image choice that stands for an array you passed


def user_label(model: nn.Module) -> str:
    """How your model is listed beside the configurations of Table 1."""
    if isinstance(model, VGG):
        return f"your model ({model.config}, width {model.width:g})"
    return f"your model ({type(model).__name__})"


class ExplorerState:
    """The explorer's state: ``config``, ``layer``, ``unit``, ``image``, ``show_erf``,
    ``show_grid``; ``row``, ``pixel`` and ``numbers`` are computed from them.

    ``model``: a configuration name of Table 1 (its full-size net's numbers), or any ``VGG`` /
    ``nn.Sequential`` (listed as ``user_label(model)``). ``image``: a name of ``SAMPLE_IMAGES``
    or an array. ``layer``: a convolution or pooling layer (default conv5_3 when the net has
    one, else its last). The unit starts at the centre of the layer's feature map.
    """

    def __init__(self, model="D", image="chelsea", input_size: int = 224, layer: str | None = None):
        if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < MIN_IMAGE:
            raise ValueError(f"input_size must be an integer >= {MIN_IMAGE}, got {input_size!r}")
        self.input_size = input_size
        self.user_model: nn.Module | None = None
        self._rows: dict[str, tuple] = {}
        self.config = self._first_config(model)
        self.layer = self._default_layer(self.config)
        self.unit = (self.row["map"] // 2, self.row["map"] // 2)
        self.show_erf = self.show_grid = True
        self.user_photo: np.ndarray | None = None
        self.set_image(image)
        if layer is not None:
            self.select(layer=layer)

    def _first_config(self, model) -> str:
        if isinstance(model, str):
            if model not in CONFIGS:
                raise ValueError(f"model {model!r} is not a configuration; allowed: {', '.join(CONFIGS)}, "
                                 "or a VGG / nn.Sequential model")
            return model
        label = user_label(model)
        try:
            rows = spatial_layers(model, getattr(model, "input_size", self.input_size))
        except (TypeError, ValueError) as e:
            raise ValueError(f"this model cannot be explored: {e}") from None
        self._rows[label], self.user_model = tuple(rows), model
        return label

    # -- what there is to choose from ----------------------------------------------------------
    @property
    def configs(self) -> list[str]:
        """The configurations of Table 1, then your model if one was given."""
        return list(CONFIGS) + [k for k in self._rows if k not in CONFIGS]

    def rows_for(self, config: str) -> tuple:
        """The convolution and pooling layers of ``config`` (see ``geometry.spatial_layers``)."""
        if config not in self._rows:
            self._rows[config] = full_size_rows(config, self.input_size)[0]
        return self._rows[config]

    @property
    def layers(self) -> list[str]:
        return [r["name"] for r in self.rows_for(self.config)]

    @property
    def images(self) -> list[str]:
        return list(SAMPLE_IMAGES) + ([YOUR_IMAGE] if self.user_photo is not None else [])

    @property
    def is_user_model(self) -> bool:
        return self.config not in CONFIGS

    def _default_layer(self, config: str) -> str:
        names = [r["name"] for r in self.rows_for(config)]
        return DEFAULT_LAYER if DEFAULT_LAYER in names else names[-1]

    # -- what is shown -------------------------------------------------------------------------
    @property
    def row(self) -> dict:
        """The numbers of the selected layer: ``name, kind, size, jump, start, map, params``."""
        return next(r for r in self.rows_for(self.config) if r["name"] == self.layer)

    @property
    def pixel(self) -> tuple[float, float]:
        """Input pixel ``(row, column)`` on which the selected unit is centred."""
        return unit_centre(self.row, self.unit)

    @property
    def numbers(self) -> dict:
        """Everything the numbers table shows: the selection, the layer's row and the pixel."""
        return dict(config=self.config, layer=self.layer, unit=self.unit, pixel=self.pixel, **self.row)

    def __getitem__(self, key: str):
        return self.numbers[key]

    # -- changes -------------------------------------------------------------------------------
    def select(self, config: str | None = None, layer: str | None = None, unit=None) -> None:
        """Select a configuration, layer and/or unit ``(row, col)``, all checked before any is
        applied. A new configuration keeps the layer if it has one of that name (else conv5_3
        or its last); without ``unit`` the unit nearest to the old unit's centre is kept."""
        config = self.config if config is None else self._check_config(config)
        names = [r["name"] for r in self.rows_for(config)]
        if layer is None:
            layer = self.layer if self.layer in names else self._default_layer(config)
        elif layer not in names:
            raise ValueError(f"layer {layer!r} is not a convolution or pooling layer of {config}; "
                             f"allowed: {', '.join(names)}")
        new = self.rows_for(config)[names.index(layer)]
        unit = follow_unit(self.row, new, self.unit) if unit is None else check_unit(new, unit)
        self.config, self.layer, self.unit = config, layer, unit

    def _check_config(self, config) -> str:
        if config not in self.configs:
            raise ValueError(f"configuration {config!r} is unknown; allowed: {', '.join(self.configs)}")
        return config

    def move(self, rows: int = 0, cols: int = 0) -> tuple[int, int]:
        """Step the unit by ``rows`` and ``cols``; it stops at the edges of the feature map."""
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (rows, cols)):
            raise ValueError(f"move takes integer steps (rows, cols), got ({rows!r}, {cols!r})")
        self.unit = clamp_unit(self.row, (self.unit[0] + rows, self.unit[1] + cols))
        return self.unit

    def set_image(self, image) -> None:
        """Show a bundled sample (by name), your own array, or ``"your image"`` (the last array
        given). Too small, malformed or unknown: ``ValueError``, and the image stays."""
        if isinstance(image, str) and image == YOUR_IMAGE:
            if self.user_photo is None:
                raise ValueError(f"no image of yours was given; allowed: {', '.join(SAMPLE_IMAGES)} "
                                 "or an (H, W[, 3]) array")
            photo = self.user_photo
        else:
            photo = load_image(image, self.input_size)
            if not isinstance(image, str):
                self.user_photo, image = photo, YOUR_IMAGE
        self.image, self.photo, self.photo_uri = image, photo, photo_uri(photo)
