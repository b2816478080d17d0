"""The fusion calculator without a kernel: the page carries the first ``PAGE_IMAGES`` images of
each evaluation, quantised to 8 bits and gzipped (``evaluations.subset_payload``), and its own
JavaScript (``vgg_lib/widgets_static/fusion.js``) fuses them as ``FusionState`` does with
``QuantisedPosteriors``: the same numbers, to the last bit. Built from the committed posteriors
when the chapter runs; nothing else is committed for it."""

from __future__ import annotations

from ... import experiments as X
from ..page import tool_html
from .evaluations import NETS, available, subset_payload
from .state import DEFAULT_METHODS, DEFAULT_NETS

PAGE_IMAGES = 500       # rows per evaluation on the page: about 4 kB each (8 bits, gzip, base64)


def page_evaluations(results=None) -> dict:
    """Every committed evaluation of the chapter's nets, and of the nets scored on other images
    only the dense three-scale one: the page's example of evaluations that cannot be fused."""
    found = available(NETS, X.SEEDS, results)
    return {key: s for key, s in found.items() if key[0] in X.FUSION_MEMBERS or key[1] == "dense_paper"}


def static_payload(images: int = PAGE_IMAGES, results=None) -> dict:
    return subset_payload(images, evaluations=page_evaluations(results), results=results)


def static_html(payload: dict, nets=DEFAULT_NETS, methods=DEFAULT_METHODS, seed: int = X.SEEDS[0]) -> str:
    """The self-contained calculator: markup, CSS, data and script inline, nothing fetched."""
    return tool_html("fus", "tools.css", "fusion.js", "vggFusionMount", payload,
                     {"nets": list(nets), "methods": list(methods), "seed": seed}, "vgg-fus",
                     "The fusion calculator needs JavaScript.")
