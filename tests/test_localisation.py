"""Appendix A (localisation): ground-truth boxes, the box head, its loss and the two test protocols."""

import numpy as np
import pytest
import torch

from vgg_lib.data import shapes, test_transform, train_transform
from vgg_lib.data.transforms import transform_box

MEAN = [120.0, 110.0, 100.0]


# ------------------------------------------------------------------------------ boxes of shapes

def _object_only(scenes):
    """The same scenes with a white, unshaded object on black: pixel value = coverage * 255."""
    s = {k: v.copy() for k, v in scenes.items()}
    s["fg"][:] = 1.0
    s["bg"][:] = 0.0
    s["clutter_colour"][:] = 0.0
    s["shade"][:, 1] = 0.0
    return s


def _assert_box_fits(box, coverage, tol=0.05):
    """The box holds every pixel centre inside the object (coverage >= 1/2) and lies within
    the pixels the object touches (coverage > 0), give or take 3/4 pixel: a sharp tip between
    two pixel centres may reach up to sqrt(2)/2 pixel past the centres it leaves untouched."""
    ys, xs = np.nonzero(coverage >= 128)
    inner = np.array([xs.min() + 0.5, ys.min() + 0.5, xs.max() + 0.5, ys.max() + 0.5])
    ys, xs = np.nonzero(coverage > 0)
    outer = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    box = np.asarray(box, dtype=float)
    assert (box[:2] <= inner[:2] + tol).all() and (box[2:] >= inner[2:] - tol).all(), (box, inner)
    assert (box[:2] >= outer[:2] - 0.75 - tol).all() and (box[2:] <= outer[2:] + 0.75 + tol).all(), (box, outer)


@pytest.mark.parametrize("size", [64, 200])
def test_shapes_boxes_match_the_rendered_objects(size):
    scenes = shapes.sample_scenes(60, seed=3, split="val")
    boxes = shapes.boxes(scenes) * size
    drawn = shapes.render(_object_only(scenes), size)[:, 0]
    for box, cov in zip(boxes, drawn):
        _assert_box_fits(box, cov)
    # and tight: within a pixel of the inside pixels' extent on average (sharp tips cover no centre)
    assert np.mean([abs(b[2] - b[0] - (np.ptp(np.nonzero(c.max(0) >= 128)[0]) + 1))
                    for b, c in zip(boxes, drawn)]) < 1.0


def test_shapes_dataset_gives_its_boxes(tmp_path):
    from vgg_lib.data import build_dataset

    ds = build_dataset("shapes", "val", root=tmp_path, size=8, image_size=48)
    assert np.allclose(ds.boxes(), shapes.boxes(shapes.sample_scenes(8, 0, "val")) * 48)
    assert ds.boxes().shape == (8, 4) and (ds.boxes() >= 0).all() and (ds.boxes() <= 48).all()


def _through_transform(scenes, base, S, params, crop):
    """Box of the ``base``-pixel image mapped by the training transform's geometry, and the
    object drawn directly at the rescaled size ``S``, cropped and flipped as the draw says."""
    t = train_transform(S, crop, MEAN)
    box = shapes.boxes(scenes)[0] * base
    mapped = transform_box(box, t.geometry(base, base, params))
    cov = shapes.render(_object_only(scenes), S)[0, 0]
    cov = cov[params["top"]:params["top"] + crop, params["left"]:params["left"] + crop]
    return mapped, (cov[:, ::-1] if params["flip"] else cov)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("index", range(6))
def test_box_follows_rescale_crop_and_flip(index, flip):
    """Crops placed anywhere that keeps the whole object (a cut box is clipped: next test)."""
    scenes = shapes.take(shapes.sample_scenes(6, seed=1, split="train"), [index])
    scenes["radius"][:] = np.minimum(scenes["radius"], 0.2)  # fits in the crop: 0.2 * 1.3 * 2 * 96 < 64
    S, crop = 96, 64
    x0, y0, x1, y1 = shapes.boxes(scenes)[0] * S
    lo_x, hi_x = max(0, int(np.ceil(x1)) - crop), min(S - crop, int(x0))
    lo_y, hi_y = max(0, int(np.ceil(y1)) - crop), min(S - crop, int(y0))
    p = dict(S=S, top=lo_y + index * (hi_y - lo_y) // 5, left=hi_x - index * (hi_x - lo_x) // 5, flip=flip,
             alpha=torch.zeros(3, dtype=torch.float64))
    mapped, cov = _through_transform(scenes, 64, S, p, crop)
    _assert_box_fits(mapped, cov)


def test_box_through_a_crop_that_cuts_it():
    scenes = shapes.take(shapes.sample_scenes(1, seed=0, split="train"), [0])
    scenes["shape"][:], scenes["centre"][:], scenes["radius"][:] = 0, 0.5, 0.3  # a circle: the crop
    # cuts it through its centre, where its visible quarter reaches as far left and up as it does
    S, crop = 128, 64
    p = dict(S=S, top=0, left=0, flip=False, alpha=torch.zeros(3, dtype=torch.float64))
    mapped, cov = _through_transform(scenes, 64, S, p, crop)
    assert mapped[2] == crop and mapped[3] == crop  # cut at the crop's right and bottom edges
    _assert_box_fits(mapped, cov)


def test_box_follows_the_fused_path_of_large_images():
    """Large images take the fused resized crop (one window of the original resized): the
    geometry replays that window, rounding included."""
    scenes = shapes.take(shapes.sample_scenes(3, seed=2, split="train"), [2])
    base, S, crop = 512, 160, 128
    t = train_transform(S, crop, MEAN)
    assert t._fused(base, base, S)
    p = dict(S=S, top=13, left=29, flip=True, alpha=torch.zeros(3, dtype=torch.float64))
    mapped, cov = _through_transform(scenes, base, S, p, crop)
    _assert_box_fits(mapped, cov, tol=0.6)  # the fused window rounds to half an original pixel


def test_box_through_the_test_transform_and_a_random_draw():
    scenes = shapes.take(shapes.sample_scenes(4, seed=5, split="test"), [3])
    img = torch.from_numpy(shapes.render(_object_only(scenes), 64)[0])
    box = shapes.boxes(scenes)[0] * 64
    for t in (test_transform(80, MEAN, crop=56), train_transform((64, 96), 56, MEAN)):
        params = t.sample(64, 64, torch.Generator().manual_seed(4)) if hasattr(t, "sample") else None
        geometry = t.geometry(64, 64, params) if params else t.geometry(64, 64)
        crop = t.apply_split(img, params)[0] if params else t.split(img)[0]
        # the uint8 crop of a rescaled rendering: blurred by the resize, so a looser bracket
        _assert_box_fits(transform_box(box, geometry), crop[0].numpy(), tol=1.0)


def test_transform_box_rejects_a_box_outside_the_image():
    g = test_transform(64, MEAN).geometry(64, 64)
    with pytest.raises(ValueError, match=r"is not inside the 64x64 image; allowed: 0 <= x0 <= x1 <= 64"):
        transform_box([10, 10, 70, 20], g)
    with pytest.raises(ValueError, match="is not inside"):
        transform_box([[30, 10, 20, 20]], g)  # x1 < x0
