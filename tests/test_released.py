"""The released-weights cell of the Architecture chapter: it finds torchvision's VGG weights only
where torchvision caches them (nothing is downloaded), says in one line what it would run when
they or the ImageNet folder are missing, and evaluates with vgg_lib.evaluate when they are not."""
import numpy as np
import pytest
import torch
from PIL import Image

from vgg_lib import released


def test_cached_weights_are_found_by_torchvisions_file_names(tmp_path):
    assert released.cached_weights(tmp_path) == {}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")
    (tmp_path / "checkpoints" / "vgg16_bn-6c64b313.pth").write_bytes(b"")   # BN: not the paper's
    assert released.cached_weights(tmp_path) == {"D": tmp_path / "checkpoints" / "vgg16-397923af.pth"}


def test_without_weights_or_folder_one_line_says_what_and_how(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(released.VAL_ENV, raising=False)
    assert released.run(hub_dir=tmp_path) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "no torchvision VGG weights on disk" in out and "VGG_IMAGENET_VAL is not set" in out
    for protocol, _, _ in released.PROTOCOLS:
        assert protocol in out
    assert "vgg19-dcbb9e9d.pth" in out and "IMAGENET1K_V1" in out
    assert str(tmp_path / "checkpoints") in out                 # where to put them
    # weights present, folder missing: only the folder is named as missing
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg11-8a719046.pth").write_bytes(b"")
    assert released.run(hub_dir=tmp_path) is None
    out = capsys.readouterr().out
    assert "no torchvision VGG weights" not in out and "VGG_IMAGENET_VAL is not set" in out


def test_images_from_env(monkeypatch):
    monkeypatch.delenv(released.IMAGES_ENV, raising=False)
    assert released.images_from_env() == released.DEFAULT_IMAGES
    monkeypatch.setenv(released.IMAGES_ENV, "all")
    assert released.images_from_env() is None
    monkeypatch.setenv(released.IMAGES_ENV, "-3")
    with pytest.raises(ValueError, match="'all'"):
        released.images_from_env()


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory):
    """1000 class folders (sorted WordNet-like ids), one small JPEG each, of two sizes."""
    root = tmp_path_factory.mktemp("val")
    rng = np.random.default_rng(0)
    for c in range(1000):
        d = root / f"n{c:08d}"
        d.mkdir()
        size = (40, 36) if c % 2 else (36, 48)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / "0.JPEG")
    return root


def test_imagenet_val_takes_evenly_spaced_images(val_folder, tmp_path):
    data = released.imagenet_val(val_folder, n_images=10)
    assert len(data) == 10
    labels = [data[i][1] for i in range(10)]
    assert labels == [100 * i for i in range(10)]         # one image every 100 classes
    x = data[3][0]
    assert x.dtype == torch.uint8 and x.shape[0] == 3
    assert len(released.imagenet_val(val_folder)) == 1000
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="1000"):
        released.imagenet_val(tmp_path)


def test_evaluate_released_runs_every_protocol(small):
    """The protocols run through vgg_lib.evaluate (here a 32-pixel net: scales >= 32)."""
    rng = np.random.default_rng(1)
    data = [(torch.from_numpy(rng.integers(0, 256, (3, h, 40), dtype=np.uint8)), i % 10)
            for i, h in enumerate((36, 48, 40, 36, 52, 40))]
    protocols = (("centre crop", "single_scale", (32,)), ("dense", "dense", (32,)),
                 ("multi-crop", "multi_crop", (40,)), ("dense, 3 scales", "dense", (32, 40, 48)))
    table = released.evaluate_released(small, data, protocols, published={"acc@1": 70.0, "acc@5": 90.0})
    assert list(table.index) == [p[0] for p in protocols]
    assert table["images"].tolist() == [6] * 4
    assert ((table["top-1 error"] >= 0) & (table["top-1 error"] <= 100)).all()
    assert (table["top-5 error"] <= table["top-1 error"]).all()
    assert table.loc["centre crop", "torchvision's top-1 / top-5"] == "30.00 / 10.00"
    assert table.loc["dense", "torchvision's top-1 / top-5"] == ""            # its number is a centre crop
    # the same numbers as calling evaluate directly
    from vgg_lib.evaluate import TORCHVISION_PREPROCESSING, evaluate
    direct = evaluate(small, data, "multi_crop", (40,), **TORCHVISION_PREPROCESSING)
    assert table.loc["multi-crop", "top-1 error"] == round(direct.top1, 2)
