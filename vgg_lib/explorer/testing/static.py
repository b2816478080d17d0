"""The testing explorer without a kernel: the page embeds the committed precomputed views
(``results/explorer/testing_views.json``, packed as committed) and its own JavaScript
(``vgg_lib/widgets_static/testing.js``) unpacks them and draws what ``render`` draws."""

from __future__ import annotations

from ..page import tool_html


def static_html(payload: dict, net: str | None = None, image: int | None = None, method: str = "dense",
                Q: int | None = None) -> str:
    """The self-contained explorer: markup, CSS, data and script inline, nothing fetched."""
    nets, qs = list(payload["nets"]), payload["qs"]
    start = {"net": net if net in nets else nets[0],
             "image": image if image in [e["index"] for e in payload["images"]] else payload["images"][0]["index"],
             "method": method, "Q": Q if Q in qs else qs[len(qs) // 2]}
    return tool_html("tex", "tools.css", "testing.js", "vggTestingMount", payload, start, "vgg-tex",
                     "The testing explorer needs JavaScript.")
