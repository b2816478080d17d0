"""The paper's pre-processing (Sect. 3.1) and test-time rescaling (Sect. 3.2).

Training: rescale the image isotropically so that its smallest side is S (fixed, or drawn per
image from [Smin, Smax]: *scale jittering*), take a random crop (224x224 in the paper), flip it
horizontally at random, shift its colours along the principal components of the training set's
RGB values (AlexNet's "fancy PCA", std 0.1), subtract the training set's mean RGB. That last
step is the paper's only normalisation: no division by a standard deviation.

Testing: rescale so the smallest side is Q, optionally take a centre crop, subtract the mean.

Inputs are uint8 tensors (3, H, W); outputs are float32 (3, h, w) in pixel units (0..255) minus
the mean RGB, times ``pixel_scale`` (1.0 by default, the paper's units).

Each transform also splits into a geometric part that stays uint8 and a per-image offset:
``split(img)`` returns ``(uint8 crop, offset)`` and ``normalise(crops, offsets, pixel_scale)``
finishes the job on any device, bit for bit what calling the transform gives. Training sends
uint8 batches to the GPU (4x fewer bytes through shared memory and PCIe than float32) and
normalises them there; the colour shift is part of the offset.

Speed: on large images the training transform does not rescale the whole image. It draws S
and the crop window in the rescaled image's coordinates, maps the window back to the original
image and resizes only that window to crop x crop (``resized_crop``): the same pixels up to a
sub-pixel rounding of the window (at most half an original pixel, so it is used only when the
window spans at least ``FUSED_MIN_WINDOW`` original pixels), and several times less work when
S is large. Small images (the built-in data) take the exact path: rescale, then crop.
"""

from __future__ import annotations

from numbers import Integral

import torch
import torchvision.transforms.v2.functional as F


PAPER_CROP = 224  # the ConvNet input size of the paper
FUSED_MIN_WINDOW = 128  # crop windows this large (in original pixels) are resized directly


def scaled_size(paper_size: int, crop: int) -> int:
    """Map one of the paper's sizes (S or Q, for 224 crops) to crops of ``crop`` pixels.

    Keeps the paper's ratios: ``scaled_size(256, 32) == round(256 * 32 / 224) == 37``.
    """
    _positive_int("paper_size", paper_size)
    _positive_int("crop", crop)
    return int(round(paper_size * crop / PAPER_CROP))


def jitter_middle(S) -> int:
    """The one test scale of a training scale ``S``: ``Q = 0.5 (Smin + Smax)`` for a jittered
    ``S = [Smin, Smax]`` (Sect. 4.1), rounded half up (``[255, 512]`` gives 384), and a fixed ``S``
    itself. A jittered net is validated at this scale during training and tested at it by
    single-scale evaluation."""
    if isinstance(S, (list, tuple)):
        smin, smax = S
        return (smin + smax + 1) // 2
    return S


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _rgb(name, value, shape):
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float64)
    if tuple(t.shape) != shape or not torch.isfinite(t).all():
        raise ValueError(f"{name} must be a finite array of shape {shape}, got {tuple(t.shape)}")
    return t


def rescaled_size(height: int, width: int, S: int) -> tuple[int, int]:
    """``(h, w)`` of an image rescaled isotropically so its smallest side is ``S`` (Sect. 3.1's
    S in training, Sect. 3.2's Q in testing): a 256x341 image at 384 is 384x512."""
    if height <= width:
        return S, max(S, int(round(width * S / height)))
    return max(S, int(round(height * S / width))), S


def rescale(img: torch.Tensor, S: int, antialias: bool = True) -> torch.Tensor:
    """Isotropic rescale so that the smallest side of ``img`` (…, H, W) becomes ``S``: bilinear,
    antialiased, unchanged if already that size.

    One function for both pipelines: uint8 images here (torchvision's native uint8 kernel on the
    CPU) and the normalised float batches of ``vgg_lib.evaluate`` (for float32/float64,
    torchvision's resize is exactly ``torch.nn.functional.interpolate``).
    """
    _positive_int("S", S)
    h, w = img.shape[-2:]
    return F.resize(img, list(rescaled_size(h, w, S)), antialias=antialias)


def _check_image(img):
    is_tensor = isinstance(img, torch.Tensor)
    if not is_tensor or img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] != 3:
        got = f"{img.dtype} {tuple(img.shape)}" if is_tensor else type(img).__name__
        raise ValueError(f"expected a uint8 tensor of shape (3, H, W), got {got}")


class TrainTransform:
    """Sect. 3.1 training pre-processing; build it with :func:`train_transform`.

    ``sample(h, w, generator)`` draws one image's random parameters (S, crop position, flip,
    colour coefficients) and ``apply(img, params)`` uses them, so tests and figures can replay
    or inspect a draw; calling the transform does both. Random numbers come from ``torch``'s
    global generator unless one is passed (DataLoader workers seed it differently per worker).
    """

    def __init__(self, S, crop, mean, eigval=None, eigvec=None, flip=True, colour_std=0.1,
                 pixel_scale=1.0, fused=True):
        if isinstance(S, (tuple, list)):
            if len(S) != 2:
                raise ValueError(f"S={S!r} must be an int or a (Smin, Smax) pair")
            smin, smax = S
            _positive_int("Smin", smin)
            _positive_int("Smax", smax)
            if smin > smax:
                raise ValueError(f"S={tuple(S)!r}: Smin={smin} is larger than Smax={smax}")
        else:
            _positive_int("S", S)
            smin = smax = S
        _positive_int("crop", crop)
        if smin < crop:
            raise ValueError(f"S={S!r} is smaller than crop={crop}: the crop must fit in the "
                             f"rescaled image (need S >= crop, or Smin >= crop)")
        if not (isinstance(colour_std, (int, float)) and colour_std >= 0):
            raise ValueError(f"colour_std={colour_std!r} must be a number >= 0")
        if not (isinstance(pixel_scale, (int, float)) and pixel_scale > 0):
            raise ValueError(f"pixel_scale={pixel_scale!r} must be a number > 0")
        if (eigval is None) != (eigvec is None):
            raise ValueError("eigval and eigvec must be given together "
                             "(or both None: no colour shift)")
        self.smin, self.smax, self.crop = int(smin), int(smax), int(crop)
        self.mean = _rgb("mean", mean, (3,))
        if self.mean is None:
            raise ValueError("mean must be given: the training set's mean RGB (see rgb_statistics)")
        self.eigval, self.eigvec = _rgb("eigval", eigval, (3,)), _rgb("eigvec", eigvec, (3, 3))
        self.flip, self.colour_std = bool(flip), float(colour_std)
        self.pixel_scale, self.fused = float(pixel_scale), fused

    @property
    def max_size(self) -> int:
        """The largest S used: a data set may decode images at a reduced size down to this."""
        return self.smax

    def sample(self, height: int, width: int, generator=None) -> dict:
        g = generator
        S = int(torch.randint(self.smin, self.smax + 1, (1,), generator=g))
        h, w = rescaled_size(height, width, S)
        top = int(torch.randint(0, h - self.crop + 1, (1,), generator=g))
        left = int(torch.randint(0, w - self.crop + 1, (1,), generator=g))
        flip = bool(torch.rand((), generator=g) < 0.5) if self.flip else False
        alpha = torch.randn(3, generator=g, dtype=torch.float64) * self.colour_std
        return dict(S=S, top=top, left=left, flip=flip, alpha=alpha)

    def colour_shift(self, alpha: torch.Tensor) -> torch.Tensor:
        """AlexNet's RGB shift ``[p1 p2 p3][a1 l1, a2 l2, a3 l3]^T``, in pixel units.

        Eigenvalues are those of the covariance of RGB values scaled to [0, 1] (as in the
        AlexNet-style reference code, e.g. ImageNet's ``[0.2175, 0.0188, 0.0045]``), hence the
        factor 255 to come back to pixel units.
        """
        return self._shifts(alpha[None])[0]

    def _shifts(self, alphas: torch.Tensor) -> torch.Tensor:
        # (N, 3) draws -> (N, 3) shifts, written element by element so that a row's value does
        # not depend on how many rows are computed together (one image or a batch)
        if self.eigval is None or self.colour_std == 0:
            return torch.zeros(len(alphas), 3, dtype=torch.float64)
        v = alphas * self.eigval
        p = self.eigvec
        return 255.0 * (v[:, 0:1] * p[:, 0] + v[:, 1:2] * p[:, 1] + v[:, 2:3] * p[:, 2])

    def apply(self, img: torch.Tensor, p: dict) -> torch.Tensor:
        return normalise(*self.apply_split(img, p), self.pixel_scale)

    def offset(self, p: dict) -> torch.Tensor:
        """What is subtracted from every pixel of this draw: the mean minus the colour shift."""
        return self._offsets([p])[0]

    def _offsets(self, ps: list[dict]) -> torch.Tensor:
        return (self.mean - self._shifts(torch.stack([p["alpha"] for p in ps]))).to(torch.float32)

    def apply_split(self, img: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``apply`` before normalisation: the uint8 crop (3, crop, crop) and its offset (3,)."""
        _check_image(img)
        return self._crop(img, p, None), self.offset(p)

    def _fused(self, H, W, S) -> bool:
        h, w = rescaled_size(H, W, S)
        return self.fused and min(self.crop * H / h, self.crop * W / w) >= FUSED_MIN_WINDOW

    def _crop(self, img, p, rescaled):
        H, W = img.shape[-2:]
        c = self.crop
        if self._fused(H, W, p["S"]):
            # the crop window in original pixels, resized straight to crop x crop
            h, w = rescaled_size(H, W, p["S"])
            sy, sx = H / h, W / w
            top, left = int(round(p["top"] * sy)), int(round(p["left"] * sx))
            ch, cw = max(1, int(round(c * sy))), max(1, int(round(c * sx)))
            top, left = min(top, H - ch), min(left, W - cw)
            x = F.resized_crop(img, top, left, ch, cw, [c, c], antialias=True)
        else:
            x = (rescale(img, p["S"]) if rescaled is None else rescaled)
            x = x[:, p["top"]:p["top"] + c, p["left"]:p["left"] + c]
        if p["flip"]:
            x = x.flip(-1)
        return x.contiguous()

    def split_many(self, images, generators) -> tuple[torch.Tensor, torch.Tensor]:
        """``split`` of many images at once, one generator each: ``(uint8 (N, 3, crop, crop),
        offsets (N, 3))``, the same values as ``split`` image by image. Small images of one size
        and one S are rescaled in one call, which saves most of the per-image overhead."""
        ps = []
        for img, g in zip(images, generators):
            _check_image(img)
            ps.append(self.sample(img.shape[-2], img.shape[-1], g))
        groups: dict[tuple, list[int]] = {}
        for k, (img, p) in enumerate(zip(images, ps)):
            H, W = img.shape[-2:]
            if not self._fused(H, W, p["S"]):
                groups.setdefault((H, W, p["S"]), []).append(k)
        rescaled = {}
        for (_, _, S), idx in groups.items():
            for k, x in zip(idx, rescale(torch.stack([images[k] for k in idx]), S)):
                rescaled[k] = x
        crops = torch.stack([self._crop(img, p, rescaled.get(k)) for k, (img, p) in enumerate(zip(images, ps))])
        return crops, self._offsets(ps)

    def __call__(self, img: torch.Tensor, generator=None) -> torch.Tensor:
        _check_image(img)
        return self.apply(img, self.sample(img.shape[-2], img.shape[-1], generator))

    def split(self, img: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One random draw as ``(uint8 crop, offset)``; ``normalise`` turns it into what
        ``__call__`` returns for the same generator state."""
        _check_image(img)
        return self.apply_split(img, self.sample(img.shape[-2], img.shape[-1], generator))

    def geometry(self, height: int, width: int, p: dict) -> list[tuple]:
        """The geometric steps ``apply(img, p)`` takes on a ``height`` x ``width`` image."""
        c, steps = self.crop, [("image", (int(height), int(width)))]
        if self._fused(height, width, p["S"]):
            # the window _crop reads in original pixels, rounded as it rounds it
            h, w = rescaled_size(height, width, p["S"])
            sy, sx = height / h, width / w
            ch, cw = max(1, int(round(c * sy))), max(1, int(round(c * sx)))
            top, left = min(int(round(p["top"] * sy)), height - ch), min(int(round(p["left"] * sx)), width - cw)
            steps.append(("resized_crop", (top, left, ch, cw, c)))
        else:
            steps += [("resize", rescaled_size(height, width, p["S"])), ("crop", (p["top"], p["left"], c, c))]
        return steps + ([("flip",)] if p["flip"] else [])

    def __repr__(self):
        S = self.smin if self.smin == self.smax else (self.smin, self.smax)
        return (f"TrainTransform(S={S}, crop={self.crop}, flip={self.flip}, "
                f"colour_std={self.colour_std if self.eigval is not None else 0}, "
                f"pixel_scale={self.pixel_scale})")


class TestTransform:
    """Sect. 3.2 test pre-processing: smallest side to Q, optional centre crop, minus the mean."""

    __test__ = False  # not a pytest test class

    def __init__(self, Q, mean, crop=None, pixel_scale=1.0):
        _positive_int("Q", Q)
        if crop is not None:
            _positive_int("crop", crop)
            if crop > Q:
                raise ValueError(f"crop={crop} is larger than Q={Q}: the crop must fit in the "
                                 f"rescaled image (need Q >= crop)")
        if not (isinstance(pixel_scale, (int, float)) and pixel_scale > 0):
            raise ValueError(f"pixel_scale={pixel_scale!r} must be a number > 0")
        self.Q, self.crop, self.pixel_scale = int(Q), crop, float(pixel_scale)
        self.mean = _rgb("mean", mean, (3,))
        if self.mean is None:
            raise ValueError("mean must be given: the training set's mean RGB (see rgb_statistics)")

    @property
    def max_size(self) -> int:
        return self.Q

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return normalise(*self.split(img), self.pixel_scale)

    def split(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(uint8 rescaled image or crop, mean as float32 (3,))``: see ``normalise``."""
        _check_image(img)
        x = rescale(img, self.Q)
        if self.crop is not None:
            x = F.center_crop(x, [self.crop, self.crop])
        return x.contiguous(), self.mean.to(torch.float32)

    def geometry(self, height: int, width: int) -> list[tuple]:
        """The geometric steps of this test transform on a ``height`` x ``width`` image."""
        steps = [("image", (int(height), int(width))), ("resize", rescaled_size(height, width, self.Q))]
        if self.crop is not None:
            h, w = steps[-1][1]
            # F.center_crop's anchor: round half the margin
            steps.append(("crop", (int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0)),
                                   self.crop, self.crop)))
        return steps

    def __repr__(self):
        return f"TestTransform(Q={self.Q}, crop={self.crop}, pixel_scale={self.pixel_scale})"


def normalise(images: torch.Tensor, offsets: torch.Tensor, pixel_scale: float = 1.0) -> torch.Tensor:
    """uint8 ``(3, h, w)`` or ``(N, 3, h, w)`` -> float32 ``(images - offsets) * pixel_scale``.

    ``offsets`` is ``(3,)`` or one row per image ``(N, 3)`` (the ``split`` of a transform), on
    the images' device. The same float32 operations as the transforms, so the same bits."""
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"normalise expects uint8 images (3, h, w) or (N, 3, h, w), got "
                         f"{images.dtype} {tuple(images.shape)}")
    shape = (-1, 3, 1, 1) if offsets.dim() == 2 else (3, 1, 1)
    x = images.to(torch.float32).sub_(offsets.to(images.device, torch.float32).view(shape))
    return x.mul_(float(pixel_scale)) if pixel_scale != 1.0 else x


def train_transform(S, crop, mean, eigval=None, eigvec=None, flip=True, colour_std=0.1,
                    pixel_scale=1.0) -> TrainTransform:
    """The training transform of Sect. 3.1: uint8 (3, H, W) -> float32 (3, crop, crop).

    ``S``: an int (single-scale training) or ``(Smin, Smax)`` (scale jittering, S drawn
    uniformly per image). ``mean``/``eigval``/``eigvec``: the training set's RGB statistics,
    e.g. ``train_transform(S, crop, **rgb_statistics(train_set))``; without ``eigval``/
    ``eigvec`` there is no colour shift.
    """
    return TrainTransform(S, crop, mean, eigval, eigvec, flip, colour_std, pixel_scale)


def test_transform(Q, mean, crop=None, pixel_scale=1.0) -> TestTransform:
    """The test transform (Sect. 3.2): smallest side to ``Q``, optional centre ``crop``."""
    return TestTransform(Q, mean, crop, pixel_scale)


test_transform.__test__ = False  # not a pytest test function


def collate(batch):
    """Stack ``(image, label)`` items into ``(images (N, 3, h, w), labels (N,))``.

    Training crops all have the same size, so PyTorch's default collate would do; this one
    also says what to do when test images of different sizes meet in one batch.
    """
    images, labels = zip(*batch)
    sizes = {tuple(x.shape) for x in images}
    if len(sizes) > 1:
        raise ValueError(f"cannot batch images of different sizes {sorted(sizes)[:3]}...: use a "
                         f"crop in test_transform, or batch_size=1 for full-image (dense) testing")
    return torch.stack(images), torch.as_tensor(labels, dtype=torch.long)


# --- Appendix A: the geometry of a transform, for ground-truth boxes -------------------------
# A transform's geometric part is a list of steps replayed on boxes by torchvision's own box
# kernels (the same resize/crop/flip calls as on the pixels, so the same rounding of sizes and
# offsets): ``[("resize", (h, w)), ("crop", (top, left, h, w)), ("flip",)]`` or, for the fused
# path, ``("resized_crop", (top, left, h, w, crop))``. The first entry is ``("image", (H, W))``,
# the size of the image the boxes are given in.


def transform_box(boxes, geometry: list[tuple]) -> torch.Tensor:
    """Map boxes ``(x0, y0, x1, y1)`` (pixels of the original image; pixel ``i`` spans
    ``[i, i + 1]``) through a transform's ``geometry(...)``: float64 ``(n, 4)`` (or ``(4,)``)
    in the output's pixels, clipped to it (a crop that cuts a box keeps the part inside).

    ``ValueError`` if a box is not inside the original image or has ``x1 < x0`` or ``y1 < y0``.
    """
    from torchvision import tv_tensors

    if not geometry or geometry[0][0] != "image":
        raise ValueError("geometry must come from a transform's geometry(...): a list starting "
                         "with ('image', (height, width))")
    H, W = geometry[0][1]
    b = torch.as_tensor(boxes, dtype=torch.float64)
    single = b.dim() == 1
    if b.dim() not in (1, 2) or b.shape[-1] != 4:
        raise ValueError(f"boxes must have shape (4,) or (n, 4) as (x0, y0, x1, y1), got {tuple(b.shape)}")
    b = b.reshape(-1, 4)
    check_boxes(b, H, W)
    x = tv_tensors.BoundingBoxes(b, format="XYXY", canvas_size=(H, W))
    for step in geometry[1:]:
        if step[0] == "resize":
            x = F.resize(x, list(step[1]))
        elif step[0] == "crop":
            x = F.crop(x, *step[1])
        elif step[0] == "resized_crop":
            top, left, h, w, c = step[1]
            x = F.resized_crop(x, top, left, h, w, [c, c])
        elif step[0] == "flip":
            x = F.horizontal_flip(x)
        else:
            raise ValueError(f"unknown geometry step {step[0]!r}; allowed: resize, crop, resized_crop, flip")
    out = x.as_subclass(torch.Tensor).clone()
    return out[0] if single else out


def check_boxes(boxes: torch.Tensor, height: int, width: int) -> None:
    """``ValueError`` unless every ``(x0, y0, x1, y1)`` row lies in a ``height`` x ``width``
    image with ``x0 <= x1`` and ``y0 <= y1``."""
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    bad = ~torch.isfinite(b).all(1) | (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | \
        (b[:, 3] > height) | (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"box {[round(float(v), 3) for v in b[i]]} is not inside the {height}x{width} "
                         f"image; allowed: 0 <= x0 <= x1 <= {width}, 0 <= y0 <= y1 <= {height}")
