"""The receptive-field explorer: Sect. 2.3 ("two 3x3 layers see what one 5x5 sees") to play with.

Pick a configuration of Table 1, a layer and a unit; see the unit's theoretical receptive field
(the box), the grid of unit centres at that layer (spaced by the *jump*), the numbers (size,
jump, start, parameters up to that layer) and the effective receptive field (Luo et al., 2016:
the gradient of the unit with respect to the image, ``analysis.effective_receptive_field``).
A compare tab puts a stack of n 3x3 convolutions beside one (2n+1)x(2n+1) convolution.

One object, two lives (``ReceptiveFieldExplorer``):

* **with a kernel** (JupyterLab) it is an ipywidgets panel: every control is live and the
  effective receptive field is computed for the chosen model, layer, unit and image;
* **without a kernel** (the static HTML book) the same cell output also carries a
  self-contained HTML/JavaScript version (``text/html``; the book prefers it over the widget
  view): the layer lists of all configurations are embedded and the page's own JavaScript
  computes the receptive fields, the box, the jump grid and the parameter counts; effective
  receptive fields are precomputed at build time for every convolution and pooling layer of a
  width-reduced copy of each configuration, for the centre unit, on the embedded image (for
  another unit they are shown shifted, exact away from the border). No external script or asset.

Receptive-field conventions are those of ``vgg_lib.analysis`` (Araujo et al., 2019): unit ``u``
of a layer is centred on input pixel ``start + u * jump`` and sees ``size`` pixels around it.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import uuid
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
from torch import nn

from .analysis import effective_receptive_field, layer_table, layers, stack_vs_single
from .configs import CONFIGS
from .models import VGG, vgg

MIN_IMAGE = 32          # five 2x2 poolings need at least 32 input pixels to leave a 1x1 map
SAMPLE_IMAGES = ("chelsea", "astronaut", "coffee", "rocket", "camera")   # bundled with skimage
ERF_WIDTH = 1 / 8       # channel width of the nets whose ERFs the static book embeds
MARGIN = 0.2            # the view shows this fraction of the image around it (the zero padding)
VIEW_PX = 360           # on-screen side of the view, CSS pixels
_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


# ---------------------------------------------------------------------------------------------
# images

def load_image(image="chelsea", size: int = 224) -> np.ndarray:
    """A square ``(size, size, 3)`` float image in [0, 1]: the centre square of ``image``, resized.

    ``image`` is a name of ``SAMPLE_IMAGES`` (photographs bundled with scikit-image, no
    download) or an array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, uint8 or float in [0, 1].
    Raises ``ValueError`` for anything smaller than ``MIN_IMAGE`` pixels or of another shape.
    """
    from skimage import data as skdata
    from skimage.transform import resize

    if isinstance(image, str):
        if image not in SAMPLE_IMAGES:
            raise ValueError(f"image {image!r} is not a bundled sample; allowed: "
                             f"{', '.join(SAMPLE_IMAGES)} or an (H, W[, 3]) array")
        arr = getattr(skdata, image)()
    else:
        arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)              # a (3, H, W) tensor layout
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"image must be an (H, W), (H, W, 3) or (H, W, 4) array, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if min(h, w) < MIN_IMAGE:
        raise ValueError(f"image is {h}x{w} pixels; the explorer needs at least {MIN_IMAGE}x{MIN_IMAGE} "
                         f"(VGG's five 2x2 poolings halve it five times)")
    arr = arr[..., :3].astype(np.float64)
    if arr.max() > 1.0:
        arr = arr / 255.0
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    arr = arr[top:top + side, left:left + side]
    return np.clip(resize(arr, (size, size), anti_aliasing=True), 0, 1)


def image_tensor(photo: np.ndarray) -> torch.Tensor:
    """The network input for a [0, 1] photo: 0..255 scale, mean RGB subtracted (Sect. 2.1)."""
    x = torch.tensor(photo, dtype=torch.float32).permute(2, 0, 1) * 255
    return x - x.mean(dim=(1, 2), keepdim=True)


def _data_uri(arr: np.ndarray, fmt: str = "PNG") -> str:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(arr)
    img.save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode()


def photo_uri(photo: np.ndarray) -> str:
    return _data_uri((photo * 255).round().astype(np.uint8), "JPEG")


def erf_uri(erf: np.ndarray, max_side: int = 112, levels: int = 32, gamma: float = 0.5) -> str:
    """An ERF crop as a small grey PNG (an SVG filter colours it): on a ``gamma`` (square-root)
    scale so that the tails show, halved while larger than ``max_side`` and quantised to
    ``levels`` grey levels, which keeps the book light."""
    from PIL import Image

    g = np.clip(erf / erf.max() if erf.max() > 0 else erf, 0, 1) ** gamma
    g = (np.round(g * (levels - 1)) * (255 / (levels - 1))).astype(np.uint8)
    img = Image.fromarray(g)
    while max(img.size) > max_side:
        img = img.resize((max(1, img.size[0] // 2), max(1, img.size[1] // 2)), Image.BILINEAR)
    return _data_uri(np.asarray(img))


# ---------------------------------------------------------------------------------------------
# the layer list and the geometry of one unit

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


def follow_unit(old: dict, new: dict, unit: tuple[int, int]) -> tuple[int, int]:
    """The unit of layer ``new`` whose centre is nearest to ``unit``'s centre in layer ``old``."""
    def one(c):
        return int(min(max(round((c - new["start"]) / new["jump"]), 0), new["map"] - 1))
    cy, cx = unit_centre(old, unit)
    return one(cy), one(cx)


def erf_crop(erf: np.ndarray, row: dict, unit: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    """The part of an ERF inside the unit's theoretical box: ``(crop, (x0, y0, w, h))`` in pixels."""
    h, w = erf.shape
    cy, cx = unit_centre(row, unit)
    half = (row["size"] - 1) / 2
    y0, y1 = max(int(np.ceil(cy - half)), 0), min(int(np.floor(cy + half)), h - 1)
    x0, x1 = max(int(np.ceil(cx - half)), 0), min(int(np.floor(cx + half)), w - 1)
    return erf[y0:y1 + 1, x0:x1 + 1], (x0, y0, x1 - x0 + 1, y1 - y0 + 1)


# ---------------------------------------------------------------------------------------------
# drawing (the page's JavaScript draws the same SVG; see widgets_static/explorer.js)

def _filter(fid: str) -> str:
    # grey level -> "hot" colour, and alpha growing with the gradient magnitude
    return (f'<filter id="{fid}" color-interpolation-filters="sRGB">'
            '<feColorMatrix type="matrix" values="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0"/>'
            '<feComponentTransfer><feFuncR type="table" tableValues="0.3 1 1 1"/>'
            '<feFuncG type="table" tableValues="0 0.1 0.8 1"/><feFuncB type="table" tableValues="0 0 0.1 1"/>'
            '<feFuncA type="table" tableValues="0 0.55 0.8 0.9"/></feComponentTransfer></filter>')


def render_view(row: dict, unit: tuple[int, int], input_size: int, photo: str,
                erf: tuple[str, tuple] | None = None, grid: bool = True, uid: str = "rfx") -> str:
    """The SVG of one unit: image, effective field (``(data uri, (x, y, w, h))``), jump grid, box."""
    s, m = input_size, round(MARGIN * input_size)
    cy, cx = unit_centre(row, unit)
    size = row["size"]
    parts = [f'<svg class="rfx-view" xmlns="http://www.w3.org/2000/svg" width="{VIEW_PX}" height="{VIEW_PX}" '
             f'viewBox="{-m - 0.5} {-m - 0.5} {s + 2 * m} {s + 2 * m}" data-size="{size}">',
             f'<defs>{_filter(uid + "-heat")}<clipPath id="{uid}-clip"><rect x="{-m - 0.5}" y="{-m - 0.5}" '
             f'width="{s + 2 * m}" height="{s + 2 * m}"/></clipPath></defs>',
             f'<rect x="{-m - 0.5}" y="{-m - 0.5}" width="{s + 2 * m}" height="{s + 2 * m}" fill="#e6e6e6"/>',
             f'<image href="{photo}" x="-0.5" y="-0.5" width="{s}" height="{s}" preserveAspectRatio="none"/>',
             _axes_svg(s, m)]
    if erf is not None:
        uri, (x, y, w, h) = erf
        parts.append(f'<image class="rfx-erf" href="{uri}" x="{x - 0.5}" y="{y - 0.5}" width="{w}" '
                     f'height="{h}" preserveAspectRatio="none" filter="url(#{uid}-heat)"/>')
    if grid:
        parts.append(_grid_svg(row))
    parts.append(f'<g clip-path="url(#{uid}-clip)"><rect class="rfx-box" x="{cx - (size - 1) / 2 - 0.5}" '
                 f'y="{cy - (size - 1) / 2 - 0.5}" width="{size}" height="{size}" fill="none" '
                 f'stroke="#00e5ff" stroke-width="{max(0.8, s / 160):.2f}"/></g>')
    parts.append(f'<circle class="rfx-unit" cx="{cx}" cy="{cy}" r="{max(1.5, s / 90):.2f}" fill="#00e5ff" '
                 'stroke="black" stroke-width="0.4"/></svg>')
    return "".join(parts)


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


def render_numbers(row: dict, unit: tuple[int, int], note: str = "") -> str:
    cy, cx = unit_centre(row, unit)
    n = row["map"]
    cells = [("layer", f'<span class="rfx-layer-name">{html.escape(row["name"])}</span> ({row["kind"]})'),
             ("receptive field", f'<span class="rfx-size">{row["size"]}</span> x {row["size"]} pixels'),
             ("jump", f'<span class="rfx-jump">{row["jump"]}</span> pixels between unit centres'),
             ("start", f'<span class="rfx-start">{row["start"]:g}</span> (pixel row and column of unit (0, 0)\'s centre)'),
             ("feature map", f"{n} x {n} units"),
             ("unit (row, column)", f'<span class="rfx-unit-rc">({unit[0]}, {unit[1]})</span>, centred on input '
                                    f'pixel <span class="rfx-pixel">(row {cy:g}, column {cx:g})</span>'),
             ("parameters up to here", f'<span class="rfx-params">{row["params"]:,}</span>')]
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in cells)
    return f'<table class="rfx-numbers">{body}</table>' + (f'<p class="rfx-note">{note}</p>' if note else "")


def render_compare(n: int, channels: int, table=None, erfs: dict | None = None, uid: str = "rfx") -> str:
    """n x 3x3 versus one (2n+1)x(2n+1): the growing squares, parameters, non-linearities, ERFs."""
    k = 2 * n + 1
    if table is None:
        stack, single = n * 9 * channels ** 2, k * k * channels ** 2
        rf = (k, k)
    else:
        t = table.set_index("layers")
        stack, single = int(t.loc[f"{n} x 3x3", "params"]), int(t.loc[f"1 x {k}x{k}", "params"])
        rf = (int(t.loc[f"{n} x 3x3", "receptive_field"]), int(t.loc[f"1 x {k}x{k}", "receptive_field"]))
    cols = []
    for label, sizes, params, relus, key, rfv in ((f"{n} x 3x3 (stack)", list(range(3, k + 1, 2)), stack, n,
                                                   "stack", rf[0]),
                                                  (f"1 x {k}x{k} (single)", [k], single, 1, "single", rf[1])):
        sq = "".join(f'<rect x="{(k - q) / 2}" y="{(k - q) / 2}" width="{q}" height="{q}" fill="none" '
                     f'stroke="hsl({200 - 40 * i}, 90%, 40%)" stroke-width="0.12"/>'
                     for i, q in enumerate(sizes))
        grid = "".join(f'<rect x="{x}" y="{y}" width="1" height="1" fill="none" stroke="#bbb" '
                       'stroke-width="0.03"/>' for y in range(k) for x in range(k))
        heat = ""
        if erfs and key in erfs:
            heat = (f'<image href="{erfs[key]}" x="0" y="0" width="{k}" height="{k}" '
                    f'preserveAspectRatio="none" filter="url(#{uid}-cheat)" style="image-rendering:pixelated"/>')
        cols.append(f'<div class="rfx-cmp-col"><b>{label}</b><br><svg width="170" height="170" '
                    f'viewBox="-0.2 -0.2 {k + 0.4} {k + 0.4}"><defs>{_filter(uid + "-cheat")}</defs>'
                    f'<rect x="0" y="0" width="{k}" height="{k}" fill="#222"/>{heat}{grid}{sq}</svg>'
                    f'<table class="rfx-numbers"><tr><th>receptive field</th><td class="rfx-cmp-rf-{key}">'
                    f'{rfv} x {rfv}</td></tr><tr><th>weights ({channels} channels in and out)</th>'
                    f'<td class="rfx-cmp-params-{key}">{params:,} = {params // channels ** 2} C&sup2;</td></tr>'
                    f'<tr><th>non-linearities</th><td>{relus}</td></tr></table></div>')
    ratio = single / stack
    return (f'<div class="rfx-cmp">{"".join(cols)}</div><p class="rfx-note">The single layer has '
            f'<span class="rfx-cmp-ratio">{ratio:.2f}</span>x the weights of the stack for the same '
            f'{k}x{k} view. Heat: effective receptive field of the centre unit (random weights, noise '
            f'input): the stack concentrates on the centre, the single layer spreads evenly.</p>')


# ---------------------------------------------------------------------------------------------
# computations shared by both lives

@contextlib.contextmanager
def _one_thread():
    # small nets on a shared CPU: one thread is faster than contending for two
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


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


@lru_cache(maxsize=8)
def _full_size_rows(config: str, input_size: int) -> tuple:
    with torch.device("meta"):        # parameter counts of the full-size net without its memory
        model = vgg(config, input_size=input_size, init=None)
    return tuple(spatial_layers(model, input_size)), tuple(layer_spec(model))


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
    with _one_thread():
        for name in configs:
            rows, spec = _full_size_rows(name, input_size)
            torch.manual_seed(seed)
            net = vgg(name, width=erf_width, input_size=input_size, init="kaiming").eval()
            erfs = {}
            for row in rows:
                centre = (row["map"] // 2, row["map"] // 2)
                e = effective_receptive_field(net, row["name"], image=x, unit=centre)
                crop, box = erf_crop(e, row, centre)
                erfs[row["name"]] = [erf_uri(crop), list(box)]
            out["configs"][name] = {"layers": list(spec), "erf": erfs}
        for n in range(1, 6):
            out["compare"][n] = {k: erf_uri(v, max_side=64, gamma=1.0) for k, v in compare_erfs(n).items()}
    return out


def _asset(name: str) -> str:
    return resources.files("vgg_lib").joinpath("widgets_static", name).read_text(encoding="utf-8")


def static_html(payload: dict, config: str = "D", layer: str = "conv5_3") -> str:
    """The self-contained explorer for a page without a kernel: markup, CSS, data and script
    inline, nothing fetched. ``config`` and ``layer`` are selected first."""
    uid = "rfx-" + uuid.uuid4().hex[:8]
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    start = json.dumps({"config": config, "layer": layer})
    return (f'<style>{_asset("explorer.css")}</style>'
            f'<div class="vgg-rfx" id="{uid}"><p class="rfx-nojs">The receptive-field explorer needs '
            'JavaScript.</p></div>'
            f'<script type="application/json" id="{uid}-data">{data}</script>'
            f'<script>{_asset("explorer.js")}\nvggRfxMount(document.getElementById("{uid}"), '
            f'JSON.parse(document.getElementById("{uid}-data").textContent), {start});</script>')


# ---------------------------------------------------------------------------------------------
# the live explorer

class ReceptiveFieldExplorer:
    """The receptive-field explorer (Sect. 2.3). Display it as the last expression of a cell.

    ``model``: a configuration name of Table 1 (``"D"``), or any ``VGG`` / ``nn.Sequential``
    (offered as "your model" beside the configurations). ``image``: a name of ``SAMPLE_IMAGES``
    or an array. For a configuration name, the numbers are those of the full-size net and the
    effective receptive field comes from a He-initialised copy of width ``erf_width`` (random
    weights: the ERF shows the architecture, not what a trained net learnt); a model passed in
    is used as it is for both. Bad input (unsupported layers, a unit outside the map, an image
    smaller than 32 px) shows a message in the widget (``.message``), never a traceback.

    With a kernel the object displays as ipywidgets; its output also carries the static
    HTML/JavaScript explorer (``static=True``), which the book shows when there is no kernel.
    """

    def __init__(self, model="D", image="chelsea", input_size: int = 224, layer: str | None = None,
                 erf_width: float = 0.25, seed: int = 0, static: bool = True):
        import ipywidgets as w

        self.input_size, self.erf_width, self.seed, self.static = input_size, erf_width, seed, static
        self.uid = "rfx-" + uuid.uuid4().hex[:8]
        self.message = ""
        self._models: dict[str, nn.Module] = {}      # label -> model for the ERF
        self._rows: dict[str, list] = {}             # label -> spatial layer rows
        self._erf_cache: dict = {}
        self._user_image = None
        self._busy = False

        options = list(CONFIGS)
        user_error = None
        if isinstance(model, str) and model in CONFIGS:
            start_config = model
        elif isinstance(model, str):
            start_config, user_error = "D", f"model {model!r} is not a configuration; allowed: {', '.join(CONFIGS)}"
        else:
            label = self._user_label(model)
            try:
                self._rows[label] = spatial_layers(model, getattr(model, "input_size", input_size))
                self._models[label] = model
                options.append(label)
                start_config = label
            except (TypeError, ValueError) as e:
                start_config, user_error = "D", f"this model cannot be explored: {e}"
        images = list(SAMPLE_IMAGES)
        if not isinstance(image, str):
            images.append("your image")
        wide = {"style": {"description_width": "7em"}}
        self.config_w = w.Dropdown(options=options, value=start_config, description="configuration", **wide)
        self.layer_w = w.Dropdown(options=[], description="layer", **wide)
        self.row_w = w.IntSlider(0, 0, 0, description="unit row", continuous_update=False, **wide)
        self.col_w = w.IntSlider(0, 0, 0, description="unit column", continuous_update=False, **wide)
        self.image_w = w.Dropdown(options=images, value=image if isinstance(image, str) and image in images
                                  else images[-1], description="image", **wide)
        self.erf_w = w.Checkbox(True, description="effective receptive field", indent=False)
        self.grid_w = w.Checkbox(True, description="grid of unit centres (jump)", indent=False)
        self.view_w, self.numbers_w, self.message_w = w.HTML(), w.HTML(), w.HTML()
        self.n_w = w.IntSlider(2, 1, 5, description="n (3x3 layers)", style={"description_width": "initial"})
        # a margin, or the slider's readout ("4") runs into this label ("4 channels C")
        self.c_w = w.Dropdown(options=[64, 128, 256, 512], value=512, description="channels C (in and out)",
                              style={"description_width": "initial"}, layout=w.Layout(margin="0 0 0 2em"))
        self.compare_w = w.HTML()
        for widget, cls in ((self.config_w, "rfx-config"), (self.layer_w, "rfx-layer"), (self.row_w, "rfx-row"),
                            (self.col_w, "rfx-col"), (self.image_w, "rfx-image"), (self.view_w, "rfx-view-w"),
                            (self.numbers_w, "rfx-numbers-w"), (self.message_w, "rfx-message"),
                            (self.n_w, "rfx-n"), (self.compare_w, "rfx-compare-w")):
            widget.add_class(cls)
        controls = w.VBox([self.config_w, self.layer_w, self.row_w, self.col_w, self.image_w,
                           w.HBox([self.erf_w, self.grid_w]), self.numbers_w])
        explore = w.VBox([self.message_w, w.HBox([self.view_w, controls])])
        compare = w.VBox([w.HBox([self.n_w, self.c_w]), self.compare_w])
        self.widget = w.Tab(children=[explore, compare])
        self.widget.set_title(0, "Explore a layer")
        self.widget.set_title(1, "Compare 3x3 stacks")
        self.widget.add_class("vgg-rfx-widget")

        self._photo = None
        self.set_image(image)
        image_error = self.message
        if self._photo is None:             # a bad image: say why, and show a bundled one
            self.image_w.options = list(SAMPLE_IMAGES)
            self.image_w.value = "chelsea"
            self.set_image("chelsea")
        self._on_config(None)
        if layer is not None:
            self.select(layer=layer)
        self.config_w.observe(self._on_config, "value")
        self.layer_w.observe(self._on_layer, "value")
        for widget in (self.row_w, self.col_w, self.erf_w, self.grid_w):
            widget.observe(lambda _: self._update(), "value")
        self.image_w.observe(self._on_image, "value")
        self.n_w.observe(lambda _: self._update_compare(), "value")
        self.c_w.observe(lambda _: self._update_compare(), "value")
        self._update_compare()
        errors = [e for e in (user_error, image_error and f"{image_error}; showing chelsea") if e]
        if errors:
            self._say(" ".join(errors))

    # -- public API ---------------------------------------------------------------------------
    def select(self, config: str | None = None, layer: str | None = None, unit=None) -> None:
        """Select a configuration, layer and/or unit ``(row, col)``; bad values show a message."""
        if config is not None:
            if config not in self.config_w.options:
                return self._say(f"configuration {config!r} is unknown; allowed: "
                                 f"{', '.join(self.config_w.options)}")
            self.config_w.value = config
        if layer is not None:
            if layer not in self.layer_w.options:
                return self._say(f"layer {layer!r} is not a convolution or pooling layer of "
                                 f"{self.config_w.value}; allowed: {', '.join(self.layer_w.options)}")
            self.layer_w.value = layer
        if unit is not None:
            try:
                u = check_unit(self.row, unit)
            except ValueError as e:
                return self._say(str(e))
            self._busy = True
            self.row_w.value, self.col_w.value = u
            self._busy = False
            self._update()

    def set_image(self, image) -> None:
        """Use a bundled sample (by name) or your own array; too small or malformed: a message."""
        try:
            photo = load_image(image, self.input_size)
        except ValueError as e:
            return self._say(str(e))
        self._photo, self._photo_uri = photo, photo_uri(photo)
        self._x = image_tensor(photo)
        self._erf_cache.clear()
        if not isinstance(image, str):
            self._user_image = photo
            if "your image" not in self.image_w.options:
                self.image_w.options = list(self.image_w.options) + ["your image"]
            self._busy = True
            self.image_w.value = "your image"
            self._busy = False
        if self.layer_w.options:
            self._update()

    @property
    def row(self) -> dict:
        return next(r for r in self._rows_for(self.config_w.value) if r["name"] == self.layer_w.value)

    @property
    def unit(self) -> tuple[int, int]:
        return self.row_w.value, self.col_w.value

    @property
    def state(self) -> dict:
        """What the widget shows: configuration, layer, unit and the row of numbers."""
        return dict(config=self.config_w.value, layer=self.layer_w.value, unit=self.unit, **self.row)

    # -- callbacks ----------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.message = text
        self.message_w.value = (f'<div class="rfx-error" style="color:#a00;font-weight:bold">{html.escape(text)}'
                                "</div>" if text else "")

    def _user_label(self, model) -> str:
        if isinstance(model, VGG):
            return f"your model ({model.config}, width {model.width:g})"
        return f"your model ({type(model).__name__})"

    def _rows_for(self, label: str) -> list:
        if label not in self._rows:
            self._rows[label] = list(_full_size_rows(label, self.input_size)[0])
        return self._rows[label]

    def _model_for(self, label: str) -> nn.Module:
        if label not in self._models:
            torch.manual_seed(self.seed)
            self._models[label] = vgg(label, width=self.erf_width, input_size=self.input_size,
                                      init="kaiming").eval()
        return self._models[label]

    def _on_config(self, change) -> None:
        old_row = self.row if change is not None and self.layer_w.value else None
        old_unit = self.unit
        rows = self._rows_for(self.config_w.value)
        names = [r["name"] for r in rows]
        keep = self.layer_w.value if self.layer_w.value in names else (
            "conv5_3" if "conv5_3" in names else names[-1])
        self._busy = True
        self.layer_w.options = names
        self.layer_w.value = keep
        self._busy = False
        self._set_unit_range(old_row, old_unit)
        self._update()

    def _on_layer(self, change) -> None:
        if self._busy:
            return
        old = next((r for r in self._rows_for(self.config_w.value) if r["name"] == change["old"]), None)
        self._set_unit_range(old, self.unit)
        self._update()

    def _set_unit_range(self, old_row, old_unit) -> None:
        row = self.row
        u = follow_unit(old_row, row, old_unit) if old_row else (row["map"] // 2, row["map"] // 2)
        self._busy = True
        for slider, v in ((self.row_w, u[0]), (self.col_w, u[1])):
            slider.max = max(slider.max, row["map"] - 1)
            slider.value = v
            slider.max = row["map"] - 1
        self._busy = False

    def _on_image(self, change) -> None:
        if self._busy:
            return
        if change["new"] == "your image":
            self.set_image(self._user_image)
        else:
            self.set_image(change["new"])

    def _erf(self, row: dict, unit: tuple[int, int]):
        label = self.config_w.value
        key = (label, row["name"], unit)
        if key not in self._erf_cache:
            model = self._model_for(label)
            with _one_thread():
                e = effective_receptive_field(model, row["name"], image=self._x, unit=unit)
            crop, box = erf_crop(e, row, unit)
            self._erf_cache[key] = (erf_uri(crop, max_side=self.input_size), box)
        return self._erf_cache[key]

    def _update(self) -> None:
        if self._busy or not self.layer_w.options or self._photo is None:
            return
        row, unit = self.row, self.unit
        try:
            unit = check_unit(row, unit)
        except ValueError as e:
            return self._say(str(e))
        self._say("")
        erf, note = None, ""
        if self.erf_w.value:
            try:
                erf = self._erf(row, unit)
                note = ("Heat: effective receptive field of this unit (square root of the gradient magnitude), "
                        + ("your model." if self.config_w.value.startswith("your model") else
                           f"He-initialised copy at width {self.erf_width:g}."))
            except (TypeError, ValueError, RuntimeError) as e:
                self._say(f"effective receptive field unavailable: {e}")
        self.view_w.value = render_view(row, unit, self.input_size, self._photo_uri, erf,
                                        self.grid_w.value, uid=self.uid)
        self.numbers_w.value = render_numbers(row, unit, note)

    def _update_compare(self) -> None:
        n, c = self.n_w.value, self.c_w.value
        erfs = {k: erf_uri(v, max_side=64, gamma=1.0) for k, v in compare_erfs(n).items()}
        self.compare_w.value = render_compare(n, c, stack_vs_single(channels=c, depths=(n,)), erfs,
                                              uid=self.uid)

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs) or {}
        if self.static:
            image = self._user_image if self.image_w.value == "your image" else self.image_w.value
            config = self.config_w.value if self.config_w.value in CONFIGS else "D"
            layer = self.layer_w.value if config == self.config_w.value else "conv5_3"
            bundle["text/html"] = static_html(_cached_payload(image, self.input_size), config, layer)
        return bundle


def _cached_payload(image, input_size: int) -> dict:
    if isinstance(image, str):
        return _payload_by_name(image, input_size)
    return static_payload(image, input_size)


@lru_cache(maxsize=4)
def _payload_by_name(image: str, input_size: int) -> dict:
    return static_payload(image, input_size)
