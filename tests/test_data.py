"""vgg_lib.data: the shapes renderer, the data sets, and the Sect. 3.1 transforms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from PIL import Image

from vgg_lib.data import (DATASETS, build_dataset, cache_dir, collate, normalise, rescale, rescaled_size,
                          rgb_statistics, scaled_size, test_transform, train_transform)
from vgg_lib.data import shapes, stats
from vgg_lib.data.datasets import _decode

MEAN = [120.0, 110.0, 100.0]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VGG_LIB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def image(h=40, w=60, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


# ------------------------------------------------------------------------------ shapes


def _object_mask(scenes, size):
    """Where the object is: render with a white and a black object, same everything else."""
    white, black = dict(scenes), dict(scenes)
    white["fg"] = np.ones_like(scenes["fg"])
    black["fg"] = np.zeros_like(scenes["fg"])
    diff = shapes.render(white, size).astype(float) - shapes.render(black, size).astype(float)
    return torch.from_numpy(diff.mean(axis=1) > 100).float()


def _canonical(scenes, mask, n=48):
    """Resample each mask into its object's own frame (undo position, size and rotation)."""
    u = torch.linspace(-1.2, 1.2, n, dtype=torch.float64)
    v, u = torch.meshgrid(u, u, indexing="ij")
    out = []
    for i in range(len(mask)):
        cx, cy = scenes["centre"][i]
        r, a = scenes["radius"][i], scenes["angle"][i]
        x = cx + r * (u * np.cos(a) - v * np.sin(a))
        y = cy + r * (u * np.sin(a) + v * np.cos(a))
        grid = torch.stack([2 * x - 1, 2 * y - 1], -1)[None].float()
        out.append(TF.grid_sample(mask[i][None, None], grid, align_corners=False)[0, 0] > 0.5)
    return torch.stack(out)


def test_label_is_the_shape_only():
    """Same class under other colours, sizes, rotations, positions, backgrounds: the same
    object once pose is undone; different classes: clearly different objects."""
    k = len(shapes.CLASSES)
    sc = shapes.sample_scenes(3 * k, seed=7)  # random colours, backgrounds, clutter, angles
    sc["shape"] = np.repeat(np.arange(k), 3)
    sc["radius"] = np.tile([0.3, 0.36, 0.42], k)
    sc["centre"] = 0.5 + 0.05 * (np.random.default_rng(0).random((3 * k, 2)) - 0.5)
    masks = _canonical(sc, _object_mask(sc, 256), n=96)
    flat = masks.reshape(3 * k, -1).float()
    inter = flat @ flat.T
    iou = inter / (flat.sum(1)[:, None] + flat.sum(1)[None] - inter)
    same = sc["shape"][:, None] == sc["shape"][None]
    assert iou[torch.from_numpy(same)].min() > 0.96  # measured 0.98
    assert iou[torch.from_numpy(~same)].max() < 0.92  # closest pair: circle/pentagon, 0.90
    assert len(shapes.CLASSES) >= 10


def test_nuisance_parameters_are_independent_of_the_label():
    sc = shapes.sample_scenes(6000, seed=1)
    lab = sc["shape"]
    # every class present, and no class has its own size or colour range
    assert np.bincount(lab, minlength=10).min() > 500
    for s in range(10):
        r = sc["radius"][lab == s]
        assert r.min() < 0.11 and r.max() > 0.43
        assert abs(np.median(sc["fg"][lab == s]) - np.median(sc["fg"])) < 0.05
    assert sc["radius"].max() / sc["radius"].min() > 4  # a wide range of scales


def test_shapes_deterministic_from_seed_and_prefix_stable():
    a, la = shapes.generate(24, 32, seed=3)
    b, lb = shapes.generate(24, 32, seed=3)
    c, _ = shapes.generate(24, 32, seed=4)
    d, ld = shapes.generate(10, 32, seed=3)
    assert a.dtype == np.uint8 and a.shape == (24, 3, 32, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert (a != c).mean() > 0.5
    np.testing.assert_array_equal(a[:10], d)  # image i depends only on (seed, split, i)
    np.testing.assert_array_equal(la[:10], ld)


def test_splits_use_disjoint_streams():
    tr, va, te = (shapes.sample_scenes(50, 0, s) for s in ("train", "val", "test"))
    for x, y in [(tr, va), (tr, te), (va, te)]:
        assert not np.isin(x["angle"], y["angle"]).any()
        assert not np.isin(x["radius"], y["radius"]).any()


def test_rendering_at_two_resolutions_is_drawn_not_upsampled():
    sc = shapes.sample_scenes(8, seed=2)
    small = torch.from_numpy(shapes.render(sc, 32)).float()
    big = torch.from_numpy(shapes.render(sc, 128)).float()
    # the same scene: averaging the big one down gives the small one back
    assert (TF.avg_pool2d(big, 4) - small).abs().mean() < 1.5  # measured 0.5
    # but not an upsample: sharper edges (more energy in neighbour differences)
    up = TF.interpolate(small, size=128, mode="bilinear", align_corners=False)

    def edge_energy(x):
        return (x[..., 1:] - x[..., :-1]).pow(2).sum() + (x[..., 1:, :] - x[..., :-1, :]).pow(2).sum()

    assert edge_energy(big) > 3 * edge_energy(up)  # measured 5.5x
    assert (big - up).abs().mean() > 2


def test_shapes_cache_hit_and_key(cache):
    a = build_dataset("shapes", "val", size=20, image_size=24, seed=5)
    files = sorted(cache.rglob("*.npy"))
    assert len(files) == 2 and all(f.parent == cache / "shapes" for f in files)
    assert not list(cache.rglob("*.tmp"))
    stamps = [f.stat().st_mtime_ns for f in files]
    b = build_dataset("shapes", "val", size=20, image_size=24, seed=5)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not redrawn
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    np.testing.assert_array_equal(a.images, shapes.generate(20, 24, 5, "val")[0])
    # every generation parameter is part of the key
    for kw in [dict(size=21), dict(image_size=25), dict(seed=6)]:
        build_dataset("shapes", "val", **{**dict(size=20, image_size=24, seed=5), **kw})
    build_dataset("shapes", "test", size=20, image_size=24, seed=5)
    assert len(list(cache.rglob("*-images.npy"))) == 5


def test_shapes_dataset_items(cache):
    ds = build_dataset("shapes", "train", size=12, image_size=40)
    x, y = ds[3]
    assert x.dtype == torch.uint8 and x.shape == (3, 40, 40)
    assert y == int(shapes.generate(12, 40)[1][3])
    assert ds.name == "shapes" and ds.num_classes == 10 and ds.classes == shapes.CLASSES
    assert len(ds) == 12 and len(build_dataset("shapes", "val", image_size=8)) == 2000


# ------------------------------------------------------------------------------ digits, cifar10


def test_digits_splits():
    splits = {s: build_dataset("digits", s) for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 1797
    assert all(d.num_classes == 10 and d.classes == [str(i) for i in range(10)] for d in splits.values())
    x, y = splits["train"][0]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2]) and x.max() > 200
    # disjoint and deterministic
    from sklearn.datasets import load_digits

    raw = load_digits().images
    from vgg_lib.data import split_indices

    idx = split_indices(len(raw), 0)
    assert len(set(idx["train"]) | set(idx["val"]) | set(idx["test"])) == 1797
    assert torch.equal(build_dataset("digits", "train")[5][0], splits["train"][5][0])
    assert not torch.equal(build_dataset("digits", "train", seed=1)[5][0], splits["train"][5][0])
    assert build_dataset("digits", "val", image_size=64)[0][0].shape == (3, 64, 64)
    assert build_dataset("digits", "train", size=100).__len__() == 100


def test_cifar10_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found under root=.*pass download=True"):
        build_dataset("cifar10", "train", root=tmp_path / "nothing")


# ------------------------------------------------------------------------------ imagefolder


def make_folder(root, n=3, classes=("cat", "dog"), split="train", size=(30, 20)):
    for c in classes:
        (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / split / c / f"{i}.jpg", quality=90)
    return root


def test_imagefolder_reads_the_imagenet_layout(tmp_path):
    make_folder(tmp_path)
    make_folder(tmp_path, n=2, split="val")
    ds = build_dataset("imagefolder", "train", tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    x, y = ds[4]
    assert x.dtype == torch.uint8 and x.shape == (3, 20, 30) and y == 1
    val = build_dataset("imagefolder", "val", tmp_path)
    assert len(val) == 4 and [s[1] for s in val.samples] == [0, 0, 1, 1]
    assert build_dataset("imagefolder", "train", tmp_path, image_size=10)[0][0].shape == (3, 10, 15)


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_dataset("imagefolder", "train", tmp_path / "missing")
    with pytest.raises(ValueError, match="needs root="):
        build_dataset("imagefolder", "train")
    with pytest.raises(ValueError, match="is empty"):
        build_dataset("imagefolder", "train", tmp_path)
    (tmp_path / "train").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="has no class folders"):
        build_dataset("imagefolder", "train", tmp_path)
    make_folder(tmp_path)
    with pytest.raises(ValueError, match=r"split='test'.*does not exist.*optional"):
        build_dataset("imagefolder", "test", tmp_path)


def test_corrupt_jpeg_is_named_or_skipped_and_counted(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "train" / "cat" / "1.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    ds = build_dataset("imagefolder", "train", tmp_path)
    with pytest.raises(RuntimeError, match=f"cannot decode image file '{bad}'"):
        ds[1]
    ds = build_dataset("imagefolder", "train", tmp_path, skip_corrupt=True)
    items = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 1 and ds.skipped_files == [str(bad)]
    assert torch.equal(items[1][0], items[2][0]) and items[1][1] == 0  # the next readable one
    ds = build_dataset("imagefolder", "train", tmp_path, skip_corrupt=True)
    assert ds.scan() == 1 and len(ds) == 5 and ds.skipped == 1


def test_reduced_size_jpeg_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.asarray(image(400, 600).permute(1, 2, 0))).save(path, quality=90)
    full, small = _decode(path, None), _decode(path, 90)
    assert full.shape == (3, 400, 600)
    assert small.shape == (3, 100, 150)  # 1/4 scale: still >= 90 on the smallest side
    assert _decode(path, 250).shape == (3, 400, 600)  # 1/2 would be too small
    (tmp_path / "train" / "a").mkdir(parents=True)
    path.rename(tmp_path / "train" / "a" / "big.jpg")
    ds = build_dataset("imagefolder", "train", tmp_path)
    ds.decode_size = 90
    assert ds[0][0].shape == (3, 100, 150)
    from vgg_lib.data import datasets

    seen = []
    monkeypatch.setattr(datasets, "_decode", lambda p, m: seen.append(m) or _decode(p, m))
    ds = build_dataset("imagefolder", "train", tmp_path, transform=test_transform(90, MEAN))
    assert ds[0][0].shape == (3, 90, 135) and seen == [90]  # decoded at 100x150, then Q
    build_dataset("imagefolder", "train", tmp_path, transform=train_transform((64, 120), 64, MEAN))[0]
    assert seen == [90, 120]  # the largest S of the jitter range


# ------------------------------------------------------------------------------ transforms


@pytest.mark.parametrize("hw", [(40, 60), (75, 30), (33, 33)])
def test_rescale_smallest_side_is_S(hw):
    x = rescale(image(*hw), 50)
    assert min(x.shape[-2:]) == 50
    assert abs(x.shape[-1] / x.shape[-2] - hw[1] / hw[0]) < 0.05


def test_rescaled_size_is_the_papers_smallest_side_rule():
    assert rescaled_size(256, 341, 384) == (384, 512)  # a 3:4 image at Q = 384
    assert rescaled_size(341, 256, 384) == (512, 384)
    assert rescaled_size(33, 33, 50) == (50, 50)
    assert rescaled_size(40, 41, 50) == (50, 51)
    assert rescale(image(256, 341), 384).shape == (3, 384, 512)


def test_rescale_of_a_float_batch_is_bilinear_antialiased_interpolation():
    """``vgg_lib.evaluate`` rescales normalised float batches with the same function."""
    x = torch.randn(2, 3, 40, 53, generator=torch.Generator().manual_seed(0))
    expected = TF.interpolate(x, size=(48, 64), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(rescale(x, 48), expected, rtol=0, atol=0)
    assert rescale(x, 40) is x  # already the size: unchanged
    assert rescale(image(40, 53), 48).shape[-2:] == rescale(x, 48).shape[-2:]


def test_train_transform_crop_size_and_S_range():
    t = train_transform((48, 64), 32, MEAN)
    g = torch.Generator().manual_seed(0)
    assert t(image(), g).shape == (3, 32, 32) and t(image(), g).dtype == torch.float32
    Ss = [t.sample(40, 60, g)["S"] for _ in range(600)]
    assert min(Ss) == 48 and max(Ss) == 64  # both ends reached, nothing outside
    p = [t.sample(40, 60, g) for _ in range(200)]
    assert all(0 <= q["top"] <= q["S"] - 32 for q in p)  # the crop fits the rescaled image
    assert all(0 <= q["left"] <= round(60 * q["S"] / 40) - 32 for q in p)
    assert {q["S"] for q in (train_transform(40, 32, MEAN).sample(40, 60, g) for _ in range(20))} == {40}


def test_fused_crop_equals_rescale_then_crop():
    """Large images: only the crop window is resized (fast), the same pixels up to rounding;
    small images take the exact path."""
    def pair(src, S, crop):
        t = train_transform(S, crop, MEAN, flip=False)
        exact = train_transform(S, crop, MEAN, flip=False)
        exact.fused = False
        img = torch.from_numpy(shapes.render(shapes.sample_scenes(1, 3), src)[0])
        for seed in range(4):
            p = t.sample(src, src, torch.Generator().manual_seed(seed))
            yield t.apply(img, p), exact.apply(img, p)

    for a, b in pair(320, (256, 384), 224):
        assert (a - b).abs().mean() < 1.0 and not torch.equal(a, b)
        assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.995
    for a, b in pair(64, (48, 96), 32):
        assert torch.equal(a, b)


def test_flip_really_flips():
    t = train_transform((40, 56), 32, MEAN)
    img = image()
    flips = 0
    for seed in range(20):
        p = t.sample(40, 60, torch.Generator().manual_seed(seed))
        a = t.apply(img, {**p, "flip": True})
        b = t.apply(img, {**p, "flip": False})
        assert torch.equal(a, torch.flip(b, dims=[-1])) and not torch.equal(a, b)
        flips += p["flip"]
        assert torch.equal(t(img, torch.Generator().manual_seed(seed)), a if p["flip"] else b)
    assert 4 <= flips <= 16
    no = train_transform(40, 32, MEAN, flip=False)
    assert not any(no.sample(40, 60)["flip"] for _ in range(20))


def test_mean_subtraction_uses_the_training_set_mean(cache):
    shp = build_dataset("shapes", "train", size=40, image_size=24)
    dig = build_dataset("digits", "train", image_size=16)
    s1, s2 = rgb_statistics(shp), rgb_statistics(dig)
    np.testing.assert_allclose(s1["mean"], np.asarray(shp.images, float).mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(s2["mean"], np.asarray(dig.images, float).mean(axis=(0, 2, 3)))
    assert (s1["mean"] - s2["mean"]).abs().min() > 20  # data dependent, not a constant
    img = shp[0][0]
    out = test_transform(24, s1["mean"])(img)
    np.testing.assert_allclose(out + s1["mean"].float().view(3, 1, 1), img.float(), atol=1e-4)
    t = train_transform(24, 24, s1["mean"], flip=False)
    np.testing.assert_allclose(t(img) + s1["mean"].float().view(3, 1, 1), img.float(), atol=1e-4)
    # pixel_scale multiplies after the subtraction
    scaled = test_transform(24, s1["mean"], pixel_scale=0.01)(img)
    np.testing.assert_allclose(scaled, out * 0.01, atol=1e-5)
    assert test_transform(32, MEAN, crop=20)(img).shape == (3, 20, 20)
    assert test_transform(32, MEAN)(image(40, 60)).shape == (3, 32, 48)


def test_pca_statistics_match_numpy_and_are_cached(cache, monkeypatch):
    ds = build_dataset("shapes", "train", size=30, image_size=16)
    st = rgb_statistics(ds)
    px = np.asarray(ds.images, float).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    ref = np.linalg.eigvalsh(np.cov(px, bias=True))[::-1]
    np.testing.assert_allclose(st["eigval"], ref, rtol=1e-8, atol=1e-12)
    V = st["eigvec"]
    np.testing.assert_allclose(V.T @ V, np.eye(3), atol=1e-10)  # orthonormal
    C = np.cov(px, bias=True)
    np.testing.assert_allclose(C @ V.numpy(), V.numpy() * st["eigval"].numpy(), atol=1e-10)
    assert len(list((cache / "stats").glob("shapes-*.json"))) == 1
    monkeypatch.setattr(stats, "compute_rgb_statistics", lambda *a, **k: pytest.fail("recomputed"))
    again = rgb_statistics(build_dataset("shapes", "train", size=30, image_size=16))
    assert all(torch.equal(st[k], again[k]) for k in st)
    with pytest.raises(pytest.fail.Exception):
        rgb_statistics(build_dataset("shapes", "train", size=31, image_size=16))
    assert cache_dir() == cache


def test_colour_shift_is_alexnet_pca_noise():
    eigval, eigvec = torch.tensor([0.2, 0.02, 0.004]), torch.linalg.qr(torch.randn(3, 3))[0]
    t = train_transform(32, 32, MEAN, eigval, eigvec, flip=False)
    img = image(32, 32)
    p = t.sample(32, 32, torch.Generator().manual_seed(1))
    shift = 255 * eigvec.double() @ (p["alpha"] * eigval.double())
    expect = img.float() - (torch.tensor(MEAN) - shift.float()).view(3, 1, 1)
    np.testing.assert_allclose(t.apply(img, p), expect, atol=1e-3)
    alphas = torch.stack([t.sample(32, 32)["alpha"] for _ in range(2000)])
    assert 0.09 < alphas.std().item() < 0.11  # N(0, 0.1)
    assert train_transform(32, 32, MEAN, eigval, eigvec, colour_std=0).colour_shift(p["alpha"]).abs().sum() == 0


def test_scaled_size():
    assert scaled_size(256, 32) == 37 and scaled_size(224, 32) == 32
    assert scaled_size(512, 56) == 128 and scaled_size(384, 224) == 384


def test_batching_fixed_crops(cache):
    ds = build_dataset("shapes", "train", size=10, image_size=32,
                       transform=train_transform((32, 48), 28, MEAN))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 28, 28) and y.dtype == torch.long
    x2, y2 = collate([ds[0], ds[1]])
    assert x2.shape == (2, 3, 28, 28) and y2.tolist() == [ds.label(0), ds.label(1)]
    t = test_transform(32, MEAN)
    with pytest.raises(ValueError, match="cannot batch images of different sizes.*batch_size=1"):
        collate([(t(image(40, 60)), 0), (t(image(40, 40)), 1)])


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("call, message", [
    (lambda: build_dataset("mnist"), r"dataset name='mnist' is not one of \('shapes', 'shapes_centred', 'digits'"),
    (lambda: build_dataset("shapes", "valid"), r"split='valid' is not one of \('train', 'val', 'test'\)"),
    (lambda: build_dataset("shapes", image_size=4), r"image_size=4 must be an integer >= 8"),
    (lambda: build_dataset("shapes", size=0), r"size=0 must be an integer >= 1"),
    (lambda: build_dataset("shapes", seed=-1), r"seed=-1 must be an integer >= 0"),
    (lambda: build_dataset("digits", transform=3), r"transform=3 must be callable"),
    (lambda: build_dataset("digits", size=5000), r"size=5000 is larger than the split"),
    (lambda: train_transform(24, 32, MEAN), r"S=24 is smaller than crop=32"),
    (lambda: train_transform((24, 64), 32, MEAN), r"S=\(24, 64\) is smaller than crop=32"),
    (lambda: train_transform((64, 48), 32, MEAN), r"Smin=64 is larger than Smax=48"),
    (lambda: train_transform(0, 32, MEAN), r"S=0 must be a positive integer"),
    (lambda: train_transform(-5, 32, MEAN), r"S=-5 must be a positive integer"),
    (lambda: train_transform((0, 48), 32, MEAN), r"Smin=0 must be a positive integer"),
    (lambda: train_transform(32.5, 32, MEAN), r"S=32.5 must be a positive integer"),
    (lambda: train_transform((32, 40, 48), 32, MEAN), r"must be an int or a \(Smin, Smax\) pair"),
    (lambda: train_transform(64, 0, MEAN), r"crop=0 must be a positive integer"),
    (lambda: train_transform(64, 32, [1, 2]), r"mean must be a finite array of shape \(3,\)"),
    (lambda: train_transform(64, 32, None), r"mean must be given"),
    (lambda: train_transform(64, 32, MEAN, eigval=[1, 1, 1]), r"eigval and eigvec must be given together"),
    (lambda: train_transform(64, 32, MEAN, colour_std=-0.1), r"colour_std=-0.1 must be a number >= 0"),
    (lambda: train_transform(64, 32, MEAN, pixel_scale=0), r"pixel_scale=0 must be a number > 0"),
    (lambda: test_transform(0, MEAN), r"Q=0 must be a positive integer"),
    (lambda: test_transform(32, MEAN, crop=40), r"crop=40 is larger than Q=32"),
    (lambda: test_transform(32, MEAN, pixel_scale=-1), r"pixel_scale=-1 must be a number > 0"),
    (lambda: train_transform(64, 32, MEAN)(image().float()), r"expected a uint8 tensor of shape \(3, H, W\)"),
    (lambda: scaled_size(0, 32), r"paper_size=0 must be a positive integer"),
    (lambda: scaled_size(256, -1), r"crop=-1 must be a positive integer"),
    (lambda: shapes.render(shapes.sample_scenes(1), 4), r"image_size=4 must be an integer >= 8"),
])
def test_bad_input_messages(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_dataset_names():
    assert DATASETS == ("shapes", "shapes_centred", "digits", "fashion_mnist", "cifar10", "imagefolder")


def test_centred_shapes_are_large_and_near_the_middle_with_the_same_labels():
    anywhere = shapes.sample_scenes(4000, seed=0, split="val")
    centred = shapes.sample_scenes(4000, seed=0, split="val", framing="centred")
    np.testing.assert_array_equal(anywhere["shape"], centred["shape"])
    np.testing.assert_array_equal(anywhere["bg"], centred["bg"])  # only size and place change
    assert centred["radius"].min() >= shapes.CENTRED_MIN_RADIUS
    assert centred["radius"].max() <= shapes.MAX_RADIUS
    assert np.abs(centred["centre"] - 0.5).max() <= shapes.CENTRED_OFFSET
    # what the framing is for: a 32-pixel crop of the 73-pixel image (S = 512) that holds the
    # object's centre, much more often than for objects anywhere
    def crops_holding_centre(sc, side=73, crop=32):
        c = sc["centre"] * side
        return np.mean([((c[:, 0] >= x) & (c[:, 0] < x + crop)).mean() for x in range(side - crop + 1)])
    assert crops_holding_centre(centred) > 0.75 > 0.6 > crops_holding_centre(anywhere)
    with pytest.raises(ValueError, match="framing='middle' is not one of"):
        shapes.sample_scenes(2, framing="middle")


def test_centred_shapes_data_set_has_its_own_cache_and_boxes(cache):
    a = build_dataset("shapes_centred", "val", size=6, image_size=24)
    b = build_dataset("shapes", "val", size=6, image_size=24)
    assert a.name == "shapes_centred" and a.identity["framing"] == "centred"
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.images, shapes.generate(6, 24, 0, "val", "centred")[0])
    scenes = shapes.sample_scenes(6, 0, "val", "centred")
    np.testing.assert_allclose(a.boxes(), shapes.boxes(scenes) * 24)


def test_statistics_of_an_image_folder_skip_corrupt_files(tmp_path, cache):
    make_folder(tmp_path, n=2, size=(8, 6))
    (tmp_path / "train" / "dog" / "9.jpg").write_bytes(b"garbage")
    pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB"), float).reshape(-1, 3)
                             for p in sorted((tmp_path / "train").rglob("[01].jpg"))])
    st = rgb_statistics(build_dataset("imagefolder", "train", tmp_path, skip_corrupt=True))
    np.testing.assert_allclose(st["mean"], pixels.mean(axis=0))
    with pytest.raises(RuntimeError, match="9.jpg"):
        rgb_statistics(build_dataset("imagefolder", "train", tmp_path), refresh=True)


def test_split_many_equals_split_image_by_image():
    """The batched training transform (what the DataLoader calls) gives the same uint8 crops
    and offsets as one image at a time, for small images (rescaled together) and large ones
    (the fused resized crop), sizes mixed; and normalise(split) is the transform's output."""
    eigval, eigvec = torch.tensor([0.2, 0.02, 0.004]), torch.linalg.qr(torch.randn(3, 3))[0]
    t = train_transform((32, 40), 32, MEAN, eigval, eigvec, pixel_scale=0.5)
    sizes = [(40, 50), (40, 50), (50, 40), (180, 240), (40, 50), (200, 160)] * 3
    imgs = [image(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    gens = lambda: [torch.Generator().manual_seed(k) for k in range(len(imgs))]  # noqa: E731
    crops, offsets = t.split_many(imgs, gens())
    assert crops.dtype == torch.uint8 and crops.shape == (18, 3, 32, 32) and offsets.shape == (18, 3)
    for k, (img, g) in enumerate(zip(imgs, gens())):
        c, o = t.split(img, g)
        assert torch.equal(crops[k], c) and torch.equal(offsets[k], o), k
        assert torch.equal(normalise(c, o, 0.5), t(img, torch.Generator().manual_seed(k)))
    assert torch.equal(normalise(crops, offsets, 0.5)[3], t(imgs[3], torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match=r"normalise expects uint8 images"):
        normalise(crops.float(), offsets)
