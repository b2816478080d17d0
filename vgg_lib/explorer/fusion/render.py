"""The fusion calculator's HTML: a pure function of a ``FusionState.result`` (the page's
JavaScript, ``vgg_lib/widgets_static/fusion.js``, draws the same markup from its own numbers)."""

from __future__ import annotations

import html

from .evaluations import method_label


def result_html(result: dict) -> str:
    """The fused top-1 and top-5 errors (``.fus-top1``, ``.fus-top5``, the exact value in
    ``data-value``), each member's own top-1 error, or the message of a bad selection."""
    skipped = (f'<p class="fus-note">Not evaluated, left out: {html.escape(", ".join(result["skipped"]))}.</p>'
               if result["skipped"] else "")
    if result["message"]:
        return f'<div class="fus-message" role="status">{html.escape(result["message"])}</div>{skipped}'
    rows = "".join(f'<tr><td>{html.escape(n)}</td><td>{html.escape(method_label(t))}</td>'
                   f'<td class="fus-num">{result["singles"][f"{n}|{t}"]:.2f}</td></tr>'
                   for n, t in result["members"])
    top5 = "" if result["top5"] is None else (
        f', top-5 <b class="fus-top5" data-value="{result["top5"]!r}">{result["top5"]:.2f}%</b>')
    return (f'<div class="fus-message" role="status"></div><p class="fus-fused">Fused ({len(result["members"])} '
            f'evaluation{"s" if len(result["members"]) != 1 else ""}, {result["images"]:,} images): top-1 error '
            f'<b class="fus-top1" data-value="{result["top1"]!r}">{result["top1"]:.2f}%</b>{top5}</p>'
            f'<table class="fus-members"><tr><th>net</th><th>evaluation</th><th>top-1 error alone (%)</th></tr>'
            f'{rows}</table>{skipped}')
