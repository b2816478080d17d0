"""The explorer's images: the bundled photographs, the network input made from them, and the
small data URIs (JPEG photo, grey PNG heat maps) that keep the book free of external files."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch

MIN_IMAGE = 32          # five 2x2 poolings need at least 32 input pixels to leave a 1x1 map
SAMPLE_IMAGES = ("chelsea", "astronaut", "coffee", "rocket", "camera")   # bundled with skimage


def load_image(image="chelsea", size: int = 224) -> np.ndarray:
    """A square ``(size, size, 3)`` float image in [0, 1]: the centre square of ``image``, resized.

    ``image`` is a name of ``SAMPLE_IMAGES`` (photographs bundled with scikit-image, no
    download) or an array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``, uint8 or float in [0, 1].
    Raises ``ValueError`` for anything smaller than ``MIN_IMAGE`` pixels or of another shape.
    """
    from skimage.transform import resize

    arr = _as_rgb_array(image)
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


def _as_rgb_array(image) -> np.ndarray:
    """``image`` (a sample name, an array or a tensor) as an ``(H, W, 3 or 4)`` array."""
    from skimage import data as skdata

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
    return arr


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


def png_uri(arr: np.ndarray) -> str:
    """A uint8 ``(H, W)`` or ``(H, W, 3)`` array as a lossless PNG data URI (small images)."""
    return _data_uri(np.ascontiguousarray(arr, np.uint8))
