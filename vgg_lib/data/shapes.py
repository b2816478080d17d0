"""``shapes``: the book's built-in offline data set, drawn procedurally.

Each image shows one object on a textured, cluttered background. The label is the object's
*shape* only: its colour, size, position and rotation, and the background, are drawn
independently of the label. Objects span a wide range of scales (radius from 10% to 45% of
the image side), which is what makes scale jittering (Sect. 3.1) and multi-scale testing
(Sect. 4.2) matter on this data as they do on ImageNet.

A scene is a table of continuous parameters (coordinates in units of the image side), so the
same scene can be *drawn* at any resolution: every pixel evaluates signed distance functions
at its centre, and a one-pixel-wide ramp on the distance gives anti-aliased edges. A 256-pixel
rendering is therefore sharper than a 64-pixel one upsampled. Everything is vectorised over a
chunk of images with numpy; 10,000 images of 64x64 take a few seconds on one core.

Image ``i`` of a split depends only on ``(seed, split, i)``: each scene parameter has its own
random stream (drawn once per data set, row by row), so a smaller ``size`` gives a prefix of a
larger one.
"""

from __future__ import annotations

import numpy as np

CLASSES = ["circle", "ring", "crescent", "triangle", "square", "pentagon", "hexagon",
           "star", "cross", "arrow"]
SPLITS = ("train", "val", "test")
RENDER_VERSION = 2  # bump when the drawing changes: it is part of the cache key
MIN_RADIUS, MAX_RADIUS = 0.10, 0.45  # object radius, as a fraction of the image side
# Where the object is. "anywhere": any size in the range above, anywhere in the image (the
# default). "centred": framed as in most ImageNet photographs, large (radius 25% to 45% of the
# side) and near the middle (centre within 10% of the side of it). The Training chapter's
# control for scale jittering: at S = 512 a random crop of "anywhere" images often misses the
# object, of "centred" ones seldom.
FRAMINGS = ("anywhere", "centred")
CENTRED_MIN_RADIUS, CENTRED_OFFSET = 0.25, 0.10
N_CLUTTER = 4  # at most this many line segments behind the object


# ----------------------------------------------------------------------------------------
# Scene parameters
# ----------------------------------------------------------------------------------------

def _streams(seed: int, split: str):
    """One independent generator per parameter, all derived from (seed, split)."""
    root = np.random.SeedSequence(entropy=int(seed), spawn_key=(SPLITS.index(split),))
    names = ["shape", "radius", "centre", "angle", "fg", "fg_value", "fg_dark", "shade",
             "polarity", "bg",
             "grating", "clutter", "clutter_colour", "n_clutter"]
    seeds = root.spawn(len(names))
    return {n: np.random.Generator(np.random.PCG64(s)) for n, s in zip(names, seeds)}


def _bright(hue, value):
    # any hue, at least one channel bright: stands out on a dark background
    c = hue + 1e-3
    return c / c.max(axis=1, keepdims=True) * (0.65 + 0.35 * value)


def sample_scenes(n: int, seed: int = 0, split: str = "train",
                  framing: str = "anywhere") -> dict[str, np.ndarray]:
    """Draw ``n`` scenes (a dict of arrays, one row per image) for ``split`` of ``seed``.
    ``framing`` (one of ``FRAMINGS``) sets the object's size range and position; the other
    parameters (shape, colours, background) are the same for both framings."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    if framing not in FRAMINGS:
        raise ValueError(f"framing={framing!r} is not one of {FRAMINGS}")
    r = _streams(seed, split)
    smallest = MIN_RADIUS if framing == "anywhere" else CENTRED_MIN_RADIUS
    radius = smallest * (MAX_RADIUS / smallest) ** r["radius"].random(n)  # log-uniform
    if framing == "anywhere":
        margin = radius * 0.8  # objects may touch the border but stay mostly inside
        centre = margin[:, None] + r["centre"].random((n, 2)) * (1 - 2 * margin[:, None])
    else:
        centre = 0.5 + CENTRED_OFFSET * (2 * r["centre"].random((n, 2)) - 1)
    dark_bg = r["polarity"].random(n) < 0.5
    fg_bright = _bright(r["fg"].random((n, 3)), r["fg_value"].random((n, 1)))
    fg_dark = r["fg_dark"].random((n, 3)) * 0.35
    bg = r["bg"].random((n, 2, 3))
    bg = np.where(dark_bg[:, None, None], bg * 0.4, 0.6 + 0.4 * bg)  # two background colours
    g = r["grating"].random((n, 2, 3))  # two gratings: frequency, orientation, phase
    clutter = r["clutter"].random((n, N_CLUTTER, 5))  # x, y, length, angle, thickness
    cc = r["clutter_colour"].random((n, N_CLUTTER, 3))
    return {
        "shape": r["shape"].integers(0, len(CLASSES), n),
        "radius": radius,
        "centre": centre,
        "angle": r["angle"].random(n) * 2 * np.pi,
        "fg": np.where(dark_bg[:, None], fg_bright, fg_dark),
        "shade": r["shade"].random((n, 2)),  # shading direction and strength
        "bg": bg,
        "grating": g,
        "clutter": clutter,
        "clutter_colour": np.where(dark_bg[:, None, None], 0.15 + 0.5 * cc, 0.35 + 0.5 * cc),
        "n_clutter": r["n_clutter"].integers(1, N_CLUTTER + 1, n),
    }


def take(scenes: dict, index) -> dict:
    """Rows ``index`` of a scene table (also handy to edit one parameter in a test)."""
    return {k: v[index] for k, v in scenes.items()}


# ----------------------------------------------------------------------------------------
# Signed distance functions, in the object's frame (circumradius about 1; negative inside)
# ----------------------------------------------------------------------------------------

def _length(x, y):
    return np.sqrt(x * x + y * y)


def _star(x, y, n, m, r=1.0):
    """Exact SDF of a regular star (m=2: a regular n-gon), after Inigo Quilez's sdStar."""
    an, en = np.pi / n, np.pi / m
    acs, ecs = (np.cos(an), np.sin(an)), (np.cos(en), np.sin(en))
    bn = np.mod(np.arctan2(x, y), 2 * an) - an  # fold into the first sector
    ln = _length(x, y)
    px, py = ln * np.cos(bn) - r * acs[0], ln * np.abs(np.sin(bn)) - r * acs[1]
    h = np.clip(-(px * ecs[0] + py * ecs[1]), 0.0, r * acs[1] / ecs[1])
    px, py = px + ecs[0] * h, py + ecs[1] * h
    return _length(px, py) * np.sign(px)


def _box(x, y, bx, by):
    dx, dy = np.abs(x) - bx, np.abs(y) - by
    return _length(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)


def _sdf(shape: str, x, y):
    if shape == "circle":
        return _length(x, y) - 0.85
    if shape == "ring":
        return np.abs(_length(x, y) - 0.68) - 0.24
    if shape == "crescent":
        return np.maximum(_length(x, y) - 0.9, -(_length(x - 0.5, y) - 0.72))
    if shape in ("triangle", "square", "pentagon", "hexagon"):
        n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
        return _star(x, y, n, 2)
    if shape == "star":
        return _star(x, y, 5, 3.2)
    if shape == "cross":
        return np.minimum(_box(x, y, 0.9, 0.28), _box(x, y, 0.28, 0.9))
    if shape == "arrow":  # shaft along -x, head pointing to +x
        head = _star(-(y), x - 0.2, 3, 2, r=0.8)  # triangle pointing along +x
        return np.minimum(_box(x + 0.35, y, 0.55, 0.17), head)
    raise ValueError(f"unknown shape {shape!r}")


# ----------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------

def _coverage(sd_pixels):
    # box-filter anti-aliasing: a pixel whose centre is on the edge is half covered
    return np.clip(0.5 - sd_pixels, 0.0, 1.0)


def _grating(xs, ys, g):
    """sin(2 pi f (x cos a + y sin a) + phase), separably: sin(A + B) = sinA cosB + cosA sinB."""
    g = g.astype(np.float32)
    f = (1.0 + 5.0 * g[:, 0])[:, None, None]
    a = (2 * np.pi * g[:, 1])[:, None, None]
    ph = (2 * np.pi * g[:, 2])[:, None, None]
    A = 2 * np.pi * f * np.cos(a) * xs[None, None, :] + ph  # (n, 1, W)
    B = 2 * np.pi * f * np.sin(a) * ys[None, :, None]  # (n, H, 1)
    return np.sin(A) * np.cos(B) + np.cos(A) * np.sin(B)  # only this line is (n, H, W)


def render(scenes: dict, image_size: int = 64) -> np.ndarray:
    """Draw scenes at ``image_size`` x ``image_size``: uint8 array (n, 3, H, W), RGB."""
    if int(image_size) != image_size or image_size < 8:
        raise ValueError(f"image_size={image_size!r} must be an integer >= 8")
    n, S = len(scenes["shape"]), int(image_size)
    out = np.empty((n, 3, S, S), np.uint8)
    chunk = max(1, 2**16 // (S * S))  # 65k pixels per step: the temporaries stay in cache
    for i in range(0, n, chunk):
        out[i:i + chunk] = _render_chunk(take(scenes, slice(i, i + chunk)), S)
    return out


def _render_chunk(sc: dict, S: int) -> np.ndarray:
    f32 = np.float32
    n = len(sc["shape"])
    c = ((np.arange(S, dtype=f32) + 0.5) / S)  # pixel centres in units of the image side
    xs, ys = c, c
    X, Y = xs[None, None, :], ys[None, :, None]

    # background: blend of two colours driven by two gratings, then clutter strokes
    t = 0.5 + 0.25 * _grating(xs, ys, sc["grating"][:, 0]) \
        + 0.25 * _grating(xs, ys, sc["grating"][:, 1])
    t = t.astype(f32)[:, None]  # (n, 1, S, S)
    bg0, bg1 = (sc["bg"][:, k, :, None, None].astype(f32) for k in (0, 1))
    img = bg0 + (bg1 - bg0) * t

    cl = sc["clutter"].astype(f32)
    for k in range(N_CLUTTER):
        x0, y0 = cl[:, k, 0, None, None], cl[:, k, 1, None, None]
        length = 0.15 + 0.45 * cl[:, k, 2, None, None]
        a = 2 * np.pi * cl[:, k, 3, None, None]
        half = 0.5 * (0.01 + 0.015 * cl[:, k, 4, None, None])  # stroke half-width
        dx, dy = X - x0, Y - y0
        ux, uy = np.cos(a), np.sin(a)
        h = np.clip(dx * ux + dy * uy, 0, length)
        d = _length(dx - h * ux, dy - h * uy) - half
        alpha = _coverage(d * S) * (k < sc["n_clutter"])[:, None, None]
        col = sc["clutter_colour"][:, k, :, None, None].astype(f32)
        img += (col - img) * alpha[:, None]

    # the object: rotate pixel coordinates into its frame, scale by its radius
    r = sc["radius"].astype(f32)[:, None, None]
    cx, cy = (sc["centre"][:, j].astype(f32)[:, None, None] for j in (0, 1))
    ca, sa = (fn(sc["angle"]).astype(f32)[:, None, None] for fn in (np.cos, np.sin))
    dx, dy = X - cx, Y - cy
    u, v = (dx * ca + dy * sa) / r, (-dx * sa + dy * ca) / r
    sd = np.empty((n, S, S), f32)
    for s, name in enumerate(CLASSES):
        m = sc["shape"] == s
        if m.any():
            sd[m] = _sdf(name, u[m], v[m])
    alpha = _coverage(sd * r * S)[:, None]

    # gentle shading across the object so it is not a flat colour
    sh = sc["shade"].astype(f32)
    direction = 2 * np.pi * sh[:, 0, None, None]
    ramp = u * np.cos(direction) + v * np.sin(direction)
    shade = 1 + 0.25 * sh[:, 1, None, None] * ramp
    fg = sc["fg"].astype(f32)[:, :, None, None] * shade[:, None]
    img += (fg - img) * alpha
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def generate(size: int, image_size: int = 64, seed: int = 0, split: str = "train",
             framing: str = "anywhere"):
    """Draw a whole split: (images uint8 (size, 3, S, S), labels int64 (size,))."""
    if int(size) != size or size < 1:
        raise ValueError(f"size={size!r} must be a positive integer")
    scenes = sample_scenes(int(size), seed, split, framing)
    return render(scenes, image_size), scenes["shape"].astype(np.int64)


# ----------------------------------------------------------------------------------------
# Ground-truth boxes (Appendix A: localisation)
# ----------------------------------------------------------------------------------------

OUTLINE_RAYS = 2048  # directions in which each shape's outermost point is found


def _outline(shape: str, rays: int = OUTLINE_RAYS) -> np.ndarray:
    """The outermost point of ``shape`` along ``rays`` directions from its centre: (rays, 2)
    in the object's frame.

    Found by sphere tracing the very distance function that draws the shape, inwards from
    outside: every step moves by the distance to the surface, so the first point reached is the
    outermost one along the ray (the SDFs are exact, or lower bounds for the unions and the
    crescent's cut, which only makes steps shorter). The shape's bounding box in any rotation
    is that of these points: the support of a set is reached on its outermost points, and the
    centre is in every shape's convex hull. Angular sampling misses a vertex by at most
    ``pi / rays`` of the radius (0.07 pixel for a 0.45-radius object at 256 pixels).
    """
    t = (np.arange(rays) + 0.5) * (2 * np.pi / rays)
    d = np.stack([np.cos(t), np.sin(t)], axis=1)
    rho = np.full(rays, 2.0)  # every shape lies within 1.3 of its centre
    for _ in range(500):
        step = _sdf(shape, rho * d[:, 0], rho * d[:, 1])
        if (step < 1e-7).all():
            break
        rho = rho - np.maximum(step, 0.0)
    return rho[:, None] * d


_OUTLINES: dict[str, np.ndarray] = {}


def boxes(scenes: dict) -> np.ndarray:
    """Each object's bounding box ``(x0, y0, x1, y1)`` in units of the image side: (n, 4).

    The tight box of the region the distance function puts inside the object (``sd <= 0``),
    after the scene's rotation, scale and position, clipped to the image (objects may cross
    the border; ImageNet's boxes are clipped the same way). Multiply by the rendering size for
    pixels (pixel ``i`` spans ``[i, i + 1]``).
    """
    n = len(scenes["shape"])
    out = np.empty((n, 4))
    ca, sa = np.cos(scenes["angle"]), np.sin(scenes["angle"])
    for s, name in enumerate(CLASSES):
        m = np.flatnonzero(scenes["shape"] == s)
        if not len(m):
            continue
        if name not in _OUTLINES:
            _OUTLINES[name] = _outline(name)
        u, v = _OUTLINES[name][:, 0], _OUTLINES[name][:, 1]
        # the renderer maps image to object frame by u = (dx c + dy s)/r, v = (-dx s + dy c)/r;
        # its inverse: dx = r (u c - v s), dy = r (u s + v c)
        r = scenes["radius"][m, None]
        dx = r * (u[None] * ca[m, None] - v[None] * sa[m, None])
        dy = r * (u[None] * sa[m, None] + v[None] * ca[m, None])
        cx, cy = scenes["centre"][m, 0, None], scenes["centre"][m, 1, None]
        out[m] = np.stack([(cx + dx).min(1), (cy + dy).min(1), (cx + dx).max(1), (cy + dy).max(1)], 1)
    return np.clip(out, 0.0, 1.0)
