"""The explorer's SVG and HTML: pure functions of an ``ExplorerState`` (or of the compare
tab's n and C) and of precomputed ERF images; nothing here reads a widget or runs a net.

The page's JavaScript (``vgg_lib/widgets_static/explorer.js``) draws the same markup for the
book without a kernel; the browser tests check both against ``analysis.receptive_field``.
"""

from __future__ import annotations

import html

import numpy as np

MARGIN = 0.2            # the view shows this fraction of the image around it (the zero padding)
VIEW_PX = 360           # on-screen side of the view, CSS pixels


def heat_filter(fid: str) -> str:
    # grey level -> "hot" colour, and alpha growing with the gradient magnitude
    return (f'<filter id="{fid}" color-interpolation-filters="sRGB">'
            '<feColorMatrix type="matrix" values="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0"/>'
            '<feComponentTransfer><feFuncR type="table" tableValues="0.3 1 1 1"/>'
            '<feFuncG type="table" tableValues="0 0.1 0.8 1"/><feFuncB type="table" tableValues="0 0 0.1 1"/>'
            '<feFuncA type="table" tableValues="0 0.55 0.8 0.9"/></feComponentTransfer></filter>')


def view_svg(state, erf: tuple[str, tuple] | None = None, uid: str = "rfx") -> str:
    """The image with the selected unit: its effective field (``erf``: ``(data uri, (x, y, w,
    h))``, if shown), the grid of unit centres (if ``state.show_grid``), its box and centre."""
    s, m = state.input_size, round(MARGIN * state.input_size)
    o, side = -m - 0.5, s + 2 * m
    parts = [f'<svg class="rfx-view" xmlns="http://www.w3.org/2000/svg" width="{VIEW_PX}" height="{VIEW_PX}" '
             f'viewBox="{o} {o} {side} {side}" data-size="{state.row["size"]}">',
             f'<defs>{heat_filter(uid + "-heat")}<clipPath id="{uid}-clip"><rect x="{o}" y="{o}" '
             f'width="{side}" height="{side}"/></clipPath></defs>',
             f'<rect x="{o}" y="{o}" width="{side}" height="{side}" fill="#e6e6e6"/>',
             f'<image href="{state.photo_uri}" x="-0.5" y="-0.5" width="{s}" height="{s}" '
             'preserveAspectRatio="none"/>', _axes_svg(s, m)]
    if erf is not None:
        uri, (x, y, w, h) = erf
        parts.append(f'<image class="rfx-erf" href="{uri}" x="{x - 0.5}" y="{y - 0.5}" width="{w}" '
                     f'height="{h}" preserveAspectRatio="none" filter="url(#{uid}-heat)"/>')
    if state.show_grid:
        parts.append(_grid_svg(state.row))
    parts.append(_unit_svg(state.row["size"], state.pixel, s, uid))
    return "".join(parts) + "</svg>"


def _axes_svg(s: int, m: int) -> str:
    """Which way rows and columns of pixels count, in the view's grey margin (image units)."""
    f = m / 3.6
    return (f'<g class="rfx-axes" font-size="{f:.1f}" fill="#444" pointer-events="none">'
            f'<text x="-0.5" y="{-m / 4:.1f}">column 0 \u2192 {s - 1}</text>'
            f'<text transform="translate({-m / 4 - f:.1f} -0.5) rotate(90)">row 0 \u2192 {s - 1}</text></g>')


def _grid_svg(row: dict) -> str:
    n, j, st = row["map"], row["jump"], row["start"]
    step = max(1, int(np.ceil(n / 56)))                 # never more than 56 x 56 dots
    r = min(2.0, max(0.5, j * step / 6))
    pts = [st + u * j for u in range(0, n, step)]
    dots = "".join(f'<circle cx="{x}" cy="{y}" r="{r}"/>' for y in pts for x in pts)
    return f'<g class="rfx-grid" fill="white" fill-opacity="0.75" data-step="{step}">{dots}</g>'


def _unit_svg(size: int, pixel: tuple[float, float], s: int, uid: str) -> str:
    """The theoretical receptive field (a box, clipped to the view) and the unit's centre."""
    cy, cx = pixel
    return (f'<g clip-path="url(#{uid}-clip)"><rect class="rfx-box" x="{cx - (size - 1) / 2 - 0.5}" '
            f'y="{cy - (size - 1) / 2 - 0.5}" width="{size}" height="{size}" fill="none" '
            f'stroke="#00e5ff" stroke-width="{max(0.8, s / 160):.2f}"/></g>'
            f'<circle class="rfx-unit" cx="{cx}" cy="{cy}" r="{max(1.5, s / 90):.2f}" fill="#00e5ff" '
            'stroke="black" stroke-width="0.4"/>')


def numbers_html(state, note: str = "") -> str:
    """The table of numbers of the selected layer and unit, and an optional note under it."""
    row, (u0, u1), (cy, cx) = state.row, state.unit, state.pixel
    n = row["map"]
    cells = [("layer", f'<span class="rfx-layer-name">{html.escape(row["name"])}</span> ({row["kind"]})'),
             ("receptive field", f'<span class="rfx-size">{row["size"]}</span> x {row["size"]} pixels'),
             ("jump", f'<span class="rfx-jump">{row["jump"]}</span> pixels between unit centres'),
             ("start", f'<span class="rfx-start">{row["start"]:g}</span> (pixel row and column of unit (0, 0)\'s centre)'),
             ("feature map", f"{n} x {n} units"),
             ("unit (row, column)", f'<span class="rfx-unit-rc">({u0}, {u1})</span>, centred on input '
                                    f'pixel <span class="rfx-pixel">(row {cy:g}, column {cx:g})</span>'),
             ("parameters up to here", f'<span class="rfx-params">{row["params"]:,}</span>')]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)
    return f'<table class="rfx-numbers">{body}</table>' + (f'<p class="rfx-note">{note}</p>' if note else "")


def erf_note(state, erf_width: float) -> str:
    """What the heat map is, for the note under the numbers."""
    whose = "your model." if state.is_user_model else f"He-initialised copy at width {erf_width:g}."
    return "Heat: effective receptive field of this unit (square root of the gradient magnitude), " + whose


def message_html(text: str) -> str:
    return (f'<div class="rfx-error" style="color:#a00;font-weight:bold">{html.escape(text)}</div>'
            if text else "")


def compare_html(n: int, channels: int, table=None, erfs: dict | None = None, uid: str = "rfx") -> str:
    """n x 3x3 versus one (2n+1)x(2n+1): the growing squares, parameters, non-linearities, ERFs.
    ``table``: ``analysis.stack_vs_single(channels, (n,))`` (else the paper's formulas)."""
    k = 2 * n + 1
    if table is None:
        params, rf = (n * 9 * channels ** 2, k * k * channels ** 2), (k, k)
    else:
        # by position, stack then single: for n = 1 both are labelled "1 x 3x3"
        t = table[table["n"] == n]
        params, rf = tuple(int(v) for v in t["params"]), tuple(int(v) for v in t["receptive_field"])
    sides = (dict(label=f"{n} x 3x3 (stack)", key="stack", sizes=list(range(3, k + 1, 2)), relus=n),
             dict(label=f"1 x {k}x{k} (single)", key="single", sizes=[k], relus=1))
    cols = [_compare_column(side, k, p, r, channels, (erfs or {}).get(side["key"]), uid)
            for side, p, r in zip(sides, params, rf)]
    return (f'<div class="rfx-cmp">{"".join(cols)}</div><p class="rfx-note">The single layer has '
            f'<span class="rfx-cmp-ratio">{params[1] / params[0]:.2f}</span>x the weights of the stack for '
            f'the same {k}x{k} view. Heat: effective receptive field of the centre unit (random weights, '
            'noise input): the stack concentrates on the centre, the single layer spreads evenly.</p>')


def _compare_column(side: dict, k: int, params: int, rf: int, channels: int, erf: str | None,
                    uid: str) -> str:
    """One side of the comparison (``side``: label, key, sizes of the field after each layer,
    non-linearities) on k x k pixels, with its numbers."""
    label, key, sizes, relus = side["label"], side["key"], side["sizes"], side["relus"]
    sq = "".join(f'<rect x="{(k - q) / 2}" y="{(k - q) / 2}" width="{q}" height="{q}" fill="none" '
                 f'stroke="hsl({200 - 40 * i}, 90%, 40%)" stroke-width="0.12"/>' for i, q in enumerate(sizes))
    grid = "".join(f'<rect x="{x}" y="{y}" width="1" height="1" fill="none" stroke="#bbb" '
                   'stroke-width="0.03"/>' for y in range(k) for x in range(k))
    heat = (f'<image href="{erf}" x="0" y="0" width="{k}" height="{k}" preserveAspectRatio="none" '
            f'filter="url(#{uid}-cheat)" style="image-rendering:pixelated"/>' if erf else "")
    return (f'<div class="rfx-cmp-col"><b>{label}</b><br><svg width="170" height="170" '
            f'viewBox="-0.2 -0.2 {k + 0.4} {k + 0.4}"><defs>{heat_filter(uid + "-cheat")}</defs>'
            f'<rect x="0" y="0" width="{k}" height="{k}" fill="#222"/>{heat}{grid}{sq}</svg>'
            f'<table class="rfx-numbers"><tr><th>receptive field</th><td class="rfx-cmp-rf-{key}">'
            f'{rf} x {rf}</td></tr><tr><th>weights ({channels} channels in and out)</th>'
            f'<td class="rfx-cmp-params-{key}">{params:,} = {params // channels ** 2} C&sup2;</td></tr>'
            f'<tr><th>non-linearities</th><td>{relus}</td></tr></table></div>')
