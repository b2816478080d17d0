"""The explorer without a kernel: a self-contained HTML/JavaScript version for the static book.

The layer lists of all configurations are embedded and the page's own JavaScript
(``vgg_lib/widgets_static/explorer.js``) computes the receptive fields, the box, the jump grid
and the parameter counts; effective receptive fields are precomputed here for every
convolution and pooling layer of a width-reduced copy of each configuration, for the centre
unit, on the embedded image (for another unit the page shows them shifted, exact away from the
border). No external script or asset: images are data URIs, CSS and script are inline.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..configs import CONFIGS
from .erf import compare_uris, erf_image, he_copy, one_thread
from .geometry import full_size_rows
from .images import image_tensor, load_image, photo_uri
from .page import tool_html
from .render import MARGIN

ERF_WIDTH = 1 / 8       # channel width of the nets whose ERFs the static book embeds


def static_payload(image="chelsea", input_size: int = 224, configs=tuple(CONFIGS),
                   erf_width: float = ERF_WIDTH, seed: int = 0) -> dict:
    """Everything the page's JavaScript needs: per configuration the raw layer list (the page
    computes the receptive fields from it) and the grey PNG of each layer's precomputed ERF
    (centre unit, width-reduced He-initialised copy, on ``image``); the image; the compare ERFs."""
    photo = image if isinstance(image, np.ndarray) and image.shape == (input_size, input_size, 3) \
        else load_image(image, input_size)
    x = image_tensor(photo)
    out = {"input_size": input_size, "image": photo_uri(photo), "erf_width": erf_width,
           "margin": round(MARGIN * input_size), "configs": {}, "compare": {}}
    with one_thread():
        for name in configs:
            out["configs"][name] = _config_payload(name, x, input_size, erf_width, seed)
        for n in range(1, 6):
            out["compare"][n] = compare_uris(n)
    return out


def _config_payload(name: str, x: torch.Tensor, input_size: int, erf_width: float, seed: int) -> dict:
    rows, spec = full_size_rows(name, input_size)
    net = he_copy(name, erf_width, input_size, seed)
    erfs = {}
    for row in rows:
        centre = (row["map"] // 2, row["map"] // 2)
        uri, box = erf_image(net, row, centre, x)
        erfs[row["name"]] = [uri, list(box)]
    return {"layers": list(spec), "erf": erfs}


def static_html(payload: dict, config: str = "D", layer: str = "conv5_3") -> str:
    """The self-contained explorer for a page without a kernel: markup, CSS, data and script
    inline, nothing fetched. ``config`` and ``layer`` are selected first."""
    return tool_html("rfx", "explorer.css", "explorer.js", "vggRfxMount", payload,
                     {"config": config, "layer": layer}, "vgg-rfx",
                     "The receptive-field explorer needs JavaScript.")


def cached_payload(image, input_size: int) -> dict:
    """``static_payload`` of every configuration; by sample name it is computed once per process."""
    if isinstance(image, str):
        return _payload_by_name(image, input_size)
    return static_payload(image, input_size)


@lru_cache(maxsize=4)
def _payload_by_name(image: str, input_size: int) -> dict:
    return static_payload(image, input_size)
