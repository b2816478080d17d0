"""Testing as the paper did it (Sect. 3.2 and 4.1-4.4).

Every method maps a batch of *preprocessed* images to soft-max class posteriors, one row per
image, shape ``(N, num_classes)``:

=====================  =====================================================================
``single_scale``       rescale the smallest side to Q, one centre crop (Sect. 4.1's "centre crop")
``dense``              the fully-convolutional net on the whole rescaled image, class-score map
                       averaged, flipped image averaged in (Sect. 3.2)
``multi_crop``         a 5x5 grid of crops and their flips: 50 crops per scale (Sect. 3.2, 4.3)
``dense_multi_crop``   the mean of the two (Sect. 4.3, Table 5)
=====================  =====================================================================

``Q`` may be one test scale or several: posteriors are then averaged over scales (Sect. 4.2);
``paper_test_scales`` gives the paper's three scales for a training scale S. ``fuse`` averages
the posteriors of several models (Sect. 4.4), ``topk_error`` scores them, and ``evaluate`` runs
a method over a whole dataset. ``dense_features`` (any fully-convolutional net applied densely,
before the averaging over scales) and ``scales_list`` (Q checked) are what ``vgg_lib.transfer``
shares with ``dense``.

Images are float tensors ``(N, 3, H, W)`` (one size) or a list of ``(3, H, W)`` tensors (any
sizes, e.g. an ImageFolder), already normalised by ``preprocess``: ``(pixels - mean) *
pixel_scale / std`` with pixels in 0..255. For a model trained by ``vgg_lib.train`` use the
run's ``mean`` and ``pixel_scale``; for torchvision's ImageNet weights (loaded with
``models.load_torchvision_weights``) use ``**TORCHVISION_PREPROCESSING``.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.transforms import jitter_middle, rescale, rescaled_size  # noqa: F401  (rescaled_size: re-exported)
from .models import TORCHVISION_MEAN, TORCHVISION_STD, VGG, fully_convolutional

METHODS = ("single_scale", "dense", "dense_posteriors", "multi_crop", "dense_multi_crop")

# torchvision's normalisation written in our units: (p/255 - m)/s == (p - 255 m) * (1/255) / s.
TORCHVISION_PREPROCESSING = dict(mean=tuple(255 * m for m in TORCHVISION_MEAN),
                                 pixel_scale=1 / 255, std=TORCHVISION_STD)

# Images per forward pass are capped by pixels, not by count: 16 crops of 224x224, 784 crops of
# 32x32 on the book's small data, two 512x683 images. Bigger batches do not run faster on a CPU:
# their activations spill out of the caches (50 crops per pass cost 1.6x more per crop).
PIXEL_BUDGET = 16 * 224 * 224
# On a GPU, big batches of crops are what keeps it busy: 256 crops of 224x224 per pass.
GPU_PIXEL_BUDGET = 256 * 224 * 224
AMP_CHOICES = ("bf16", "fp16", "off")
# The autocast dtype of the forward passes, set by evaluate(amp=...) for the methods it calls.
_AMP: contextvars.ContextVar = contextvars.ContextVar("vgg_lib_eval_amp", default="off")


# --- preprocessing and geometry ----------------------------------------------------------------

def preprocess(images, mean, pixel_scale: float = 1.0, std=None):
    """uint8 RGB image(s) (0..255) -> float ``(pixels - mean) * pixel_scale / std``.

    ``mean`` is in pixel units (the training set's mean RGB, Sect. 2.1); ``std`` (default 1)
    in the units after scaling. Accepts a ``(3, H, W)`` or ``(N, 3, H, W)`` tensor, or a list.
    """
    if isinstance(images, (list, tuple)):
        return [preprocess(x, mean, pixel_scale, std) for x in images]
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).reshape(3, 1, 1)
    x = (images.float() - mean) * float(pixel_scale)
    if std is not None:
        x = x / torch.as_tensor(std, dtype=torch.float32, device=images.device).reshape(3, 1, 1)
    return x


# ``rescale`` and ``rescaled_size`` are the data pipeline's (``vgg_lib.data``): one size rule.
# The training pipeline rescales uint8 images before the mean is removed; here the normalised
# float batch is rescaled (on the model's device): up to one grey level, the uint8 rounding.


def crop_positions(height: int, width: int, crop: int, grid: int = 5) -> list[tuple[int, int]]:
    """Top-left corners ``(top, left)`` of a ``grid`` x ``grid`` regular grid of crops, row major.

    Offsets are evenly spaced from 0 to ``side - crop``, so the four corners are included and,
    for odd ``grid``, the middle one is exactly the centre crop (Sect. 3.2: a 5x5 grid).
    """
    if crop > min(height, width):
        raise ValueError(f"crop {crop} does not fit in a {height}x{width} image; allowed: "
                         f"crop <= {min(height, width)}")
    return [(t, l) for t in _offsets(height, crop, grid) for l in _offsets(width, crop, grid)]


def _offsets(side: int, crop: int, grid: int) -> list[int]:
    if grid == 1:
        return [int(round((side - crop) / 2.0))]
    return [int(round(i * (side - crop) / (grid - 1))) for i in range(grid)]


def grid_crops(images: torch.Tensor, crop: int, grid: int = 5, flip: bool = True) -> torch.Tensor:
    """All grid crops of a ``(N, 3, H, W)`` batch in one tensor (one indexing op, no loop):
    ``(N, K, 3, crop, crop)`` with ``K = grid**2`` crops in ``crop_positions`` order, followed by
    their horizontal flips when ``flip`` (``K = 2 grid**2``, 50 for the paper)."""
    n, c, h, w = images.shape
    tops = torch.tensor(_offsets(h, crop, grid), device=images.device)
    lefts = torch.tensor(_offsets(w, crop, grid), device=images.device)
    ar = torch.arange(crop, device=images.device)
    rows = (tops[:, None] + ar)[:, None, :, None]    # (g, 1, crop, 1)
    cols = (lefts[:, None] + ar)[None, :, None, :]   # (1, g, 1, crop)
    crops = images[:, :, rows, cols]                 # (N, 3, g, g, crop, crop)
    crops = crops.permute(0, 2, 3, 1, 4, 5).reshape(n, grid * grid, c, crop, crop)
    if flip:
        crops = torch.cat([crops, crops.flip(-1)], dim=1)
    return crops


def centre_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return images[..., top:top + crop, left:left + crop]


def paper_test_scales(S, crop: int | None = None) -> tuple[int, ...]:
    """The three test scales of Sect. 4.2 for a training scale S.

    * fixed ``S`` (an int): ``(S - 32, S, S + 32)``;
    * jittered ``S = (Smin, Smax)``: ``(Smin, (Smin + Smax) / 2, Smax)``.

    The paper's 32 is for 224 crops. For other crops (``crop=32`` on the book's small images)
    the step is scaled proportionally, ``round(32 * crop / 224)`` (5 for crop 32), so the
    scales span the same fraction of the image. Every scale must be at least ``crop``.
    """
    c = 224 if crop is None else crop
    if not isinstance(c, int) or isinstance(c, bool) or c < 1:
        raise ValueError(f"crop must be a positive int (the training crop, 224 in the paper), "
                         f"got {crop!r}")
    if isinstance(S, (list, tuple)):
        if len(S) != 2 or not all(_is_int(s) for s in S) or not S[0] < S[1]:
            raise ValueError(f"a jittered training scale must be (Smin, Smax) ints with "
                             f"Smin < Smax, got {S!r}")
        scales = (S[0], jitter_middle(S), S[1])
    elif _is_int(S):
        step = int(round(32 * c / 224))
        scales = (S - step, S, S + step)
    else:
        raise ValueError(f"S must be an int (fixed scale) or (Smin, Smax) (jittered), got {S!r}")
    if scales[0] < c:
        raise ValueError(f"S={S!r} gives test scale {scales[0]} below the crop {c}; allowed: "
                         f"S >= {c + (scales[1] - scales[0]) if _is_int(S) else c}")
    return scales


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# --- the methods --------------------------------------------------------------------------------

_FCN_CACHE: "weakref.WeakKeyDictionary[VGG, tuple]" = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    # A tensor's _version grows with every in-place update (an optimiser step), so a model
    # trained further after conversion gets a fresh fully-convolutional copy.
    tensors = list(model.parameters()) + list(model.buffers())
    return tuple((id(t), t._version, t.device, t.dtype) for t in tensors)


def fcn_of(model: VGG) -> nn.Module:
    """``fully_convolutional(model)`` in eval mode, converted once per model and cached."""
    key = _fingerprint(model)
    hit = _FCN_CACHE.get(model)
    if hit is None or hit[0] != key:
        hit = (key, fully_convolutional(model).eval())
        _FCN_CACHE[model] = hit
    return hit[1]


class _eval_mode:
    """Dropout off for the duration, the caller's mode restored after."""

    def __init__(self, model: nn.Module):
        self.model, self.was = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _autocast(device: torch.device):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(_AMP.get())
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


@torch.no_grad()
def _forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``net`` on ``x`` in chunks of at most ``PIXEL_BUDGET`` input pixels per pass
    (``GPU_PIXEL_BUDGET`` on a GPU); inputs go to the net's device and dtype (channels-last on a
    GPU), outputs come back as float32 on the CPU."""
    device, dtype = _device(net), _dtype(net)
    budget = GPU_PIXEL_BUDGET if device.type == "cuda" else PIXEL_BUDGET
    chunk = max(1, budget // (x.shape[-2] * x.shape[-1]))
    out = []
    for i in range(0, len(x), chunk):
        xc = x[i:i + chunk].to(device, dtype)
        if device.type == "cuda":
            xc = xc.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            out.append(net(xc).float())
    return torch.cat(out).cpu()


def _groups(images) -> list[tuple[list[int], torch.Tensor]]:
    """Batch images of equal size together: ``[(indices, (n, 3, H, W) tensor), ...]``."""
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            images = images[None]
        _check_images(images)
        return [(list(range(len(images))), images)]
    by_size: dict[tuple, list[int]] = defaultdict(list)
    for i, x in enumerate(images):
        _check_images(x)
        by_size[tuple(x.shape[-2:])].append(i)
    return [(idx, torch.stack([images[i] for i in idx])) for idx in by_size.values()]


def _check_images(x: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise ValueError(f"images must be float tensors normalised by preprocess(images, mean, "
                         f"pixel_scale); got dtype {x.dtype}")
    if x.shape[-3] != 3:
        raise ValueError(f"images must be RGB (3, H, W); got shape {tuple(x.shape)}")


def _num_images(images) -> int:
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        return 1
    return len(images)


def scales_list(Q) -> list[int]:
    """The test scale(s) ``Q`` (an int or a list of ints) as a checked list of ints."""
    qs = [Q] if _is_int(Q) else list(Q) if isinstance(Q, (list, tuple, range)) else None
    if qs is None:
        raise ValueError(f"Q (the test scales) must be an int or a list of ints, got {Q!r}")
    if not qs:
        raise ValueError("scales is empty; give at least one test scale Q "
                         "(an int, e.g. 256 or [256, 384, 512])")
    for q in qs:
        if not _is_int(q) or q < 1:
            raise ValueError(f"test scale Q must be a positive int, got {q!r} in {Q!r}")
    return [int(q) for q in qs]


def _check_scales(qs: list[int], crop: int, what: str) -> None:
    for q in qs:
        if q < crop:
            raise ValueError(f"{what}: test scale Q={q} is smaller than the crop {crop}; "
                             f"allowed: Q >= {crop}")


def _per_scale(fn: Callable, images, qs: list[int], device: torch.device) -> torch.Tensor:
    """Run ``fn(batch, Q) -> (n, D)`` on every size group and scale: ``(N, len(qs), D)``, rows
    in the order of ``images``. Each group goes to the model's ``device`` first: rescaling and
    crops happen there."""
    out = None
    for idx, batch in _groups(images):
        batch = batch.to(device)
        p = torch.stack([fn(batch, q) for q in qs], 1)
        if out is None:
            out = torch.empty(_num_images(images), *p.shape[1:])
        out[idx] = p
    return out


def dense_features(net: nn.Module, images, Q, flip: bool = True,
                   head: Callable | None = None) -> torch.Tensor:
    """A fully-convolutional ``net`` applied densely (Sect. 3.2): ``(N, len(Q), D)``, one row
    per image and scale.

    At each scale Q the image is rescaled so its smallest side is Q; ``net``'s output map is
    averaged over space (raw values), then ``head`` is applied (``dense`` passes the soft-max)
    and, with ``flip``, the result is averaged with the mirrored image's. ``images`` as for the
    methods; they go to ``net``'s device. ``vgg_lib.transfer`` reads its descriptors this way.
    """
    qs = scales_list(Q)

    def one(batch, q):
        x = rescale(batch, q)
        if flip:
            x = torch.cat([x, x.flip(-1)])
        f = _forward(net, x).mean((2, 3))
        if head is not None:
            f = head(f)
        return f.view(2, len(batch), -1).mean(0) if flip else f

    return _per_scale(one, images, qs, _device(net))


def single_scale(model: VGG, images, Q, crop: int | None = None) -> torch.Tensor:
    """Rescale the smallest side to Q, take the centre ``crop`` (default ``model.input_size``),
    return the soft-max posteriors of the plain net (Sect. 4.1). No flip, one crop.

    A ``crop`` other than ``model.input_size`` (say 256 for a 224 net) goes through the
    fully-convolutional net, its score map averaged as in ``dense``.
    """
    qs = scales_list(Q)
    crop = model.input_size if crop is None else crop
    if not _is_int(crop) or crop < model.input_size:
        raise ValueError(f"single_scale: crop must be an int >= model.input_size "
                         f"({model.input_size}), got {crop!r}")
    _check_scales(qs, crop, "single_scale")

    def one(batch, q):
        x = centre_crop(rescale(batch, q), crop)
        if crop == model.input_size:
            return F.softmax(_forward(model, x), dim=1)
        return F.softmax(_forward(fcn_of(model), x).mean((2, 3)), dim=1)

    with _eval_mode(model):
        return _per_scale(one, images, qs, _device(model)).mean(1)


def score_map(model: VGG, images, Q: int) -> torch.Tensor:
    """The class-score map of the fully-convolutional net (Sect. 3.2): ``(N, classes, h, w)``
    raw scores for images of one size rescaled to Q. With 224 crops, ``h = H'/32 - 6``:
    6x6 at Q = 384 for a square image, 1x1 at Q = 224."""
    batch = images[None] if images.dim() == 3 else images
    _check_images(batch)
    _check_scales(scales_list(Q), model.input_size, "score_map")
    return _forward(fcn_of(model), rescale(batch.to(_device(model)), Q))


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    return F.softmax(scores, dim=1)


def dense(model: VGG, images, Q, flip: bool = True) -> torch.Tensor:
    """Dense evaluation (Sect. 3.2): the fully-convolutional net on the whole image rescaled to Q.

    What is averaged where, as in the paper: the class-score map is *spatially averaged as raw
    scores* (the paper's "sum-pooled"), then the soft-max is taken; the *soft-max posteriors* of
    the image and of its horizontal flip are averaged. Over several Q, posteriors are averaged.
    The fully-convolutional copy is made once per model (cached until its weights change).
    """
    qs = scales_list(Q)
    _check_scales(qs, model.input_size, "dense")
    return dense_features(fcn_of(model), images, qs, flip, head=_softmax).mean(1)


def dense_posteriors(model: VGG, images, Q, flip: bool = True) -> torch.Tensor:
    """``dense`` with one change, not in the paper: each window's soft-max posteriors are
    averaged over the score map, as ``multi_crop`` averages its crops', instead of its raw
    scores. The soft-max of the mean score is a normalised geometric mean of the windows'
    posteriors, so windows that see only background can outvote the few that see a small
    object; the Testing chapter measures how much of dense's gap to multi-crop that explains."""
    qs = scales_list(Q)
    _check_scales(qs, model.input_size, "dense_posteriors")
    windows = nn.Sequential(fcn_of(model), nn.Softmax(dim=1))  # each window's posteriors, then averaged
    return dense_features(windows, images, qs, flip).mean(1)


def multi_crop(model: VGG, images, Q, grid: int = 5, flip: bool = True) -> torch.Tensor:
    """Multi-crop evaluation (Sect. 3.2, 4.3): per scale a ``grid`` x ``grid`` regular grid of
    ``model.input_size`` crops (corners and centre included) and their flips -- 50 crops per
    scale, 150 over three -- batched through the plain net; soft-max posteriors averaged."""
    qs = scales_list(Q)
    if not _is_int(grid) or grid < 1:
        raise ValueError(f"multi_crop: grid must be an int >= 1 (5 in the paper), got {grid!r}")
    crop = model.input_size
    _check_scales(qs, crop, "multi_crop")

    def one(batch, q):
        crops = grid_crops(rescale(batch, q), crop, grid, flip)     # (n, K, 3, crop, crop)
        n, k = crops.shape[:2]
        p = F.softmax(_forward(model, crops.reshape(n * k, 3, crop, crop)), dim=1)
        return p.view(n, k, -1).mean(1)

    with _eval_mode(model):
        return _per_scale(one, images, qs, _device(model)).mean(1)


def dense_multi_crop(model: VGG, images, Q, grid: int = 5, flip: bool = True) -> torch.Tensor:
    """Dense and multi-crop combined by averaging their posteriors (Sect. 4.3, Table 5)."""
    return (dense(model, images, Q, flip) + multi_crop(model, images, Q, grid, flip)) / 2


def multi_scale(method, model: VGG, images, scales, **kwargs) -> torch.Tensor:
    """Any method over several test scales, posteriors averaged (Sect. 4.2). Same as passing
    the list of scales as ``Q``; spelled out for readers."""
    return _method(method)(model, images, scales_list(scales), **kwargs)


def _method(method) -> Callable:
    name = method.replace("-", "_").replace("+", "_") if isinstance(method, str) else method
    if name not in METHODS:
        raise ValueError(f"method {method!r} is unknown; allowed: {', '.join(METHODS)}")
    return globals()[name]


# --- scoring and fusion -------------------------------------------------------------------------

def fuse(posteriors: Sequence) -> torch.Tensor:
    """Model fusion (Sect. 4.4): the mean of several models' soft-max posteriors."""
    if not isinstance(posteriors, (list, tuple)) or not posteriors:
        raise ValueError("fuse expects a non-empty list of (N, classes) posteriors, one per model; "
                         f"got {type(posteriors).__name__}")
    ps = [torch.as_tensor(p, dtype=torch.float32) for p in posteriors]
    for i, p in enumerate(ps):
        if p.shape != ps[0].shape or p.dim() != 2:
            raise ValueError(f"fuse: posteriors must all have the same shape (N, classes); got "
                             f"{tuple(ps[0].shape)} at index 0 and {tuple(p.shape)} at index {i}")
    return torch.stack(ps).mean(0)


def topk_error(posteriors, labels, k: int = 1) -> float:
    """Top-k error in **percent**, as in the paper's tables: the share of images whose true
    class is not among the k highest posteriors (Sect. 4: "top-5 error")."""
    p = torch.as_tensor(posteriors)
    y = torch.as_tensor(labels).long()
    if p.dim() != 2 or y.shape != (p.shape[0],):
        raise ValueError(f"topk_error: posteriors must be (N, classes) and labels (N,); got "
                         f"{tuple(p.shape)} and {tuple(y.shape)}")
    if not _is_int(k) or not 1 <= k <= p.shape[1]:
        raise ValueError(f"k={k!r} is not valid for {p.shape[1]} classes; "
                         f"allowed: 1 <= k <= {p.shape[1]}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= p.shape[1]):
        raise ValueError(f"topk_error: labels must be class indices in [0, {p.shape[1] - 1}] for "
                         f"{p.shape[1]} classes; got labels from {int(y.min())} to {int(y.max())}")
    hit = (p.topk(k, dim=1).indices == y[:, None]).any(1)
    return 100.0 * (1.0 - hit.double().mean().item())


def per_class_error(posteriors, labels, num_classes: int | None = None) -> np.ndarray:
    """Top-1 error in percent for each class (NaN for a class with no test image)."""
    p, y = torch.as_tensor(posteriors), torch.as_tensor(labels).long()
    c = p.shape[1] if num_classes is None else num_classes
    wrong = (p.argmax(1) != y).double()
    n = torch.bincount(y, minlength=c).double()
    e = torch.bincount(y, weights=wrong, minlength=c)
    return (100.0 * e / n).numpy()


@dataclass
class Evaluation:
    """What ``evaluate`` measured. ``posteriors`` are kept so ``fuse`` can reuse them."""

    method: str
    scales: tuple[int, ...]
    top1: float
    top5: float | None
    per_class: np.ndarray
    posteriors: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    seconds: float = 0.0

    @classmethod
    def of(cls, posteriors, labels, method: str, scales, seconds: float = 0.0) -> "Evaluation":
        """Score posteriors (e.g. ``fuse([...])``) the same way ``evaluate`` does."""
        p, y = torch.as_tensor(posteriors), torch.as_tensor(labels).long()
        return cls(method, tuple(scales), topk_error(p, y, 1),
                   topk_error(p, y, 5) if p.shape[1] >= 5 else None,
                   per_class_error(p, y), p, y, seconds)

    def summary(self) -> dict:
        """Flat, JSON-ready numbers (what the evaluate job writes as ``results_*.json``)."""
        return {"method": self.method, "scales": ";".join(map(str, self.scales)),
                "top1_error": self.top1, "top5_error": self.top5, "error_unit": "percent",
                "images": len(self.labels),
                "seconds": round(self.seconds, 3)}


def _items(batch):
    return batch  # a DataLoader batch stays a list: images have different sizes


def evaluate(model: VGG, dataset, method: str = "dense", scales=(256,), *, mean=None,
             pixel_scale: float = 1.0, std=None, batch_size: int = 32, grid: int = 5,
             flip: bool = True, progress: bool = False, workers: int = 0,
             amp: str | None = None) -> Evaluation:
    """Evaluate ``model`` on every ``(image, label)`` of ``dataset`` by ``method`` over ``scales``.

    ``dataset`` items are uint8 ``(3, H, W)`` RGB images (any sizes) and int labels, normalised
    here with ``mean`` (pixel units), ``pixel_scale`` and ``std`` (see ``preprocess``); a dataset
    yielding float images is taken as already normalised (leave ``mean=None``). For torchvision's
    ImageNet weights pass ``**TORCHVISION_PREPROCESSING``. ``batch_size`` images go through a
    method at a time (crops are further batched by pixel count). Returns an ``Evaluation``:
    top-1 / top-5 error in percent, per-class top-1 error and the posteriors.

    At scale: the images are read by a DataLoader with ``workers`` processes (JPEG decoding
    in parallel), cross to the model's device as uint8 and are normalised, rescaled and
    cropped there; ``amp`` (``"bf16"`` or ``"fp16"``; default ``"off"``) runs the forward
    passes under autocast. Put the model on the GPU first (``model.cuda()``). On the CPU with
    ``amp`` off the posteriors are the same whatever ``workers`` is.

    A model trained by ``vgg_lib.train``, and torchvision's ImageNet weights (what dense
    multi-scale testing adds over a centre crop)::

        run = load_run("runs/D-...")
        evaluate(run.model, test_set, "dense", paper_test_scales(run.S, crop=run.crop),
                 mean=run.mean, pixel_scale=run.pixel_scale)

        weights = torchvision.models.vgg16(weights="DEFAULT").state_dict()
        model = load_torchvision_weights(vgg("D"), weights)
        evaluate(model, imagenet_val, "single_scale", [256], **TORCHVISION_PREPROCESSING)
        evaluate(model, imagenet_val, "dense", [256, 384, 512], **TORCHVISION_PREPROCESSING)
    """
    fn = _method(method)
    qs = scales_list(scales)
    crop = model.input_size
    _check_scales(qs, crop, method)
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not _is_int(workers) or workers < 0:
        raise ValueError(f"workers must be an int >= 0, got {workers!r}")
    if amp is not None and amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r} is not allowed: one of {', '.join(AMP_CHOICES)} or None (off)")
    accepted = inspect.signature(fn).parameters  # single_scale takes neither, the dense methods no grid
    kwargs = {k: v for k, v in dict(grid=grid, flip=flip).items() if k in accepted}
    if len(dataset) == 0:
        raise ValueError("dataset is empty; nothing to evaluate")
    classes = getattr(dataset, "classes", None)
    if classes is not None and len(classes) != model.num_classes:
        raise ValueError(f"the model has {model.num_classes} classes but the dataset has {len(classes)}; "
                         "evaluate a model on data with the classes it was trained on")
    bad = [n for n, t in model.state_dict().items() if torch.is_floating_point(t) and not torch.isfinite(t).all()]
    if bad:
        raise ValueError(f"the model has non-finite weights (NaN or inf in {', '.join(bad[:3])}); "
                         "its checkpoint is damaged or its training diverged")
    first = dataset[0][0]
    if not torch.is_floating_point(torch.as_tensor(first)) and mean is None:
        raise ValueError("dataset yields uint8 images: pass mean=... (the training set's mean RGB "
                         "in pixel units, e.g. run.mean) or **TORCHVISION_PREPROCESSING")

    start = time.perf_counter()
    device = _device(model)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=_items, pin_memory=device.type == "cuda")
    if progress:
        from tqdm.auto import tqdm
        loader = tqdm(loader, desc=f"{fn.__name__} Q={qs}")
    posteriors, labels = [], []
    token = _AMP.set(amp or "off")
    try:
        for items in loader:
            # uint8 crosses to the device (4x fewer bytes than float32) and is normalised there
            images = [torch.as_tensor(x).to(device, non_blocking=True) for x, _ in items]
            if mean is not None:
                images = preprocess(images, mean, pixel_scale, std)
            posteriors.append(fn(model, images, qs, **kwargs))
            labels += [int(y) for _, y in items]
    finally:
        _AMP.reset(token)
    return Evaluation.of(torch.cat(posteriors), torch.tensor(labels), fn.__name__, qs,
                         time.perf_counter() - start)
