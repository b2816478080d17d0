"""The testing explorer's SVG and HTML: pure functions of a ``TestingState`` (its view and
numbers); nothing here reads a widget or runs a net. The page's JavaScript
(``vgg_lib/widgets_static/testing.js``) draws the same markup from the precomputed views."""

from __future__ import annotations

import html

import numpy as np

VIEW_PX = 300          # on-screen side of the rescaled image, CSS pixels


def image_svg(state) -> str:
    """The image rescaled to Q, with the crops (or the dense windows) drawn on it, faint, each
    with its centre; the one most confident of the shown class stands out."""
    n, q = state.numbers, state.Q
    rects = "".join(f'<rect x="{left}" y="{top}" width="{side}" height="{side}"/>' for top, left, side in n["boxes"])
    dots = "".join(f'<circle cx="{left + side / 2}" cy="{top + side / 2}" r="{q / 100:.2f}"/>'
                   for top, left, side in n["boxes"])
    top, left, side = n["boxes"][n["best"]]
    width = f"{max(0.3, q / 150):.2f}"
    return (f'<svg class="tex-image" xmlns="http://www.w3.org/2000/svg" width="{VIEW_PX}" height="{VIEW_PX}" '
            f'viewBox="-1 -1 {q + 2} {q + 2}" data-boxes="{len(n["boxes"])}">'
            f'<image href="{state.image_uri}" x="0" y="0" width="{q}" height="{q}" preserveAspectRatio="none" '
            f'style="image-rendering:pixelated"/><g class="tex-boxes" fill="none" stroke="#00e5ff" '
            f'stroke-width="{width}" '
            f'stroke-opacity="0.35">{rects}</g><g fill="#00e5ff">{dots}</g><rect class="tex-best" x="{left}" '
            f'y="{top}" width="{side}" height="{side}" fill="none" stroke="#ffd600" stroke-width="{width}"/></svg>')


def _heat(value: float, low: float, high: float) -> str:
    t = 0.0 if high <= low else (value - low) / (high - low)
    return f"hsl({round(220 - 220 * t)}, 80%, {round(85 - 35 * t)}%)"


def grid_html(values: np.ndarray, cls: str, fmt: str = "{:.2f}") -> str:
    """A table of numbers, one cell per crop or window, coloured from low (blue) to high (red)."""
    low, high = float(values.min()), float(values.max())
    rows = "".join("<tr>" + "".join(f'<td style="background:{_heat(float(x), low, high)}">{fmt.format(x)}</td>'
                                    for x in row) + "</tr>" for row in values)
    return f'<table class="tex-grid {cls}">{rows}</table>'


def crops_html(state) -> str:
    """Each crop's (or window's) posterior of the shown class; for dense also the score map."""
    n, v, name = state.numbers, state.view, html.escape(state.classes[state.numbers["shown"]])
    per = n["per_crop"]
    if state.method == "centre":
        return f'<p>Centre crop: P({name}) = <span class="tex-per-crop">{per[0]:.2f}</span></p>'
    if state.method == "multi":
        g = int(round(np.sqrt(len(per) // 2)))
        both = np.stack([per[:g * g].reshape(g, g), per[g * g:].reshape(g, g)])
        return (f'<p>P({name}) of each crop (left) and of its mirror image (right), in the grid\'s layout:</p>'
                f'<div class="tex-pair">{grid_html(both[0], "tex-per-crop")}{grid_html(both[1], "tex-per-flip")}</div>')
    h, w = v["scores"].shape[:2]
    scores = v["scores"][..., n["shown"]]
    return (f'<p>The class-score map ({h}x{w} windows), raw scores of {name}:</p>'
            f'{grid_html(scores, "tex-scores", "{:.1f}")}'
            f'<p>P({name}) of each window alone (its soft-max):</p>{grid_html(per.reshape(h, w), "tex-per-crop")}')


def posteriors_html(state) -> str:
    """The method's posteriors of every class as bars, and its prediction against the label."""
    n = state.numbers
    rows = "".join(f'<tr class="{"tex-label" if c == n["label"] else ""}"><td>{html.escape(name)}</td>'
                   f'<td class="tex-p">{p:.3f}</td>'
                   f'<td><span class="tex-bar" style="width:{100 * p:.1f}px"></span></td></tr>'
                   for c, (name, p) in enumerate(zip(state.classes, n["posteriors"])))
    verdict = "right" if n["right"] else "wrong"
    name = html.escape(state.classes[n["prediction"]])
    return (f'<p class="tex-note">Yellow: the {"crop" if state.method != "dense" else "window"} most confident '
            f'of {html.escape(state.classes[n["shown"]])}.</p><p>Prediction: <b class="tex-prediction">{name}</b>, label '
            f'<b class="tex-label-name">{html.escape(state.classes[n["label"]])}</b>: '
            f'<span class="tex-verdict tex-verdict-{verdict}">{verdict}</span></p>'
            f'<table class="tex-table tex-posteriors">{rows}</table>')


def message_html(text: str) -> str:
    return f'<div class="tex-message" role="status">{html.escape(text)}</div>'
