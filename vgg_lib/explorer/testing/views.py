"""What the testing explorer shows of one net on one image at one test scale Q: a *view*, the
same plain dict whether it was computed now (``compute_view``, from a trained net) or read from
the committed precomputed views (``PrecomputedViews``). Every number comes from
``vgg_lib.evaluate``'s own functions; nothing here re-implements a test method.

A view (``C`` classes; ``Q`` the side of the rescaled square image):

=================  ===============================================================================
``Q``              the test scale: the image's smallest side rescaled to Q
``label``          the image's class
``centre``         (C,) posteriors of the centre crop (``evaluate.single_scale``)
``positions``      (25, 2) top-left corners of the multi-crop grid (``evaluate.crop_positions``)
``crops``          (50, C) posteriors of each grid crop, then of each flipped one (``grid_crops``)
``multi``          (C,) their average (``evaluate.multi_crop``)
``scores``         (h, w, C) the class-score map of the fully convolutional net (``score_map``)
``dense``          (C,) dense evaluation: the map averaged, soft-max, the flip averaged in (``dense``)
``stride``         input pixels between two windows of the score map (2 ** pools)
``crop``           the side of a crop, and of the window each score sees (the net's input size)
=================  ===============================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ... import evaluate as E
from ... import experiments as X
from ...runs import status
from ..images import png_uri

GRID = 5          # the paper's 5x5 grid of crops (Sect. 3.2), with flips 50 per scale


def compute_view(run, image: torch.Tensor, label: int, Q: int) -> dict:
    """The view of a trained run (``runs.load_run``) on one uint8 ``(3, H, W)`` image at ``Q``."""
    model, crop = run.model.eval(), run.crop
    x = E.preprocess(image[None], run.mean, run.pixel_scale)
    with torch.no_grad():
        big = E.rescale(x, Q)
        crops = E.grid_crops(big, crop, GRID, flip=True)[0]
        per_crop = F.softmax(model(crops), dim=1)
        scores = E.score_map(model, x, Q)[0]
    return {"Q": Q, "label": int(label), "crop": crop, "stride": crop // model.feature_size,
            "centre": E.single_scale(model, x, Q)[0].numpy(),
            "positions": np.array(E.crop_positions(big.shape[-2], big.shape[-1], crop, GRID)),
            "crops": per_crop.numpy(), "multi": E.multi_crop(model, x, Q, GRID)[0].numpy(),
            "scores": scores.permute(1, 2, 0).numpy(), "dense": E.dense(model, x, Q)[0].numpy()}


def checkpoint_dir(name: str, runs=None) -> Path | None:
    """The folder of reference run ``name`` (``"A-s0"``) with a finished checkpoint: the grid's
    (``runs/reference``) or the book build's re-trained one (``runs/verify/reference``)."""
    root = X.work_root(runs)
    for folder in (root / name, root.parent / "verify" / "reference" / name):
        if (folder / "checkpoint.pt").is_file() and status(folder) == "finished":
            return folder
    return None


class LiveViews:
    """Views computed now by a trained run on the validation images of its data set."""

    def __init__(self, run):
        from ...data import build_dataset

        self.run = run
        self.val = build_dataset(run.params["dataset"], "val", root=run.params.get("data_root"))
        self._cache: dict = {}

    def label(self, index: int) -> int:
        return int(self.val[index][1])

    def image_uri(self, index: int) -> str:
        """Validation image ``index`` as a PNG data URI (grey if its three channels are equal)."""
        x = np.asarray(self.val[index][0]).transpose(1, 2, 0)
        return png_uri(x[..., 0] if (x == x[..., :1]).all() else x)

    def view(self, index: int, Q: int) -> dict:
        if (index, Q) not in self._cache:
            x, y = self.val[index]
            self._cache[(index, Q)] = compute_view(self.run, torch.as_tensor(x), y, Q)
        return self._cache[(index, Q)]
