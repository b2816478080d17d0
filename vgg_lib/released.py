"""torchvision's ImageNet VGG weights, evaluated the paper's ways when the user already has them.

Nothing here downloads anything: ``cached_weights`` only looks for the files torchvision's own
loader leaves in the torch hub cache (``torch.hub.get_dir()/checkpoints``), and ``imagenet_val``
reads an ImageNet validation folder the user names. ``evaluate_released`` then runs
``vgg_lib.evaluate`` with torchvision's preprocessing: the centre crop torchvision reports its
accuracy with (our ``single_scale`` at Q = 256), dense evaluation, multi-crop evaluation and
multi-scale dense evaluation (Sect. 3.2, 4.2-4.3).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import torch

from .evaluate import TORCHVISION_PREPROCESSING, evaluate
from .models import load_torchvision_weights, vgg

# The paper's configurations torchvision ships ImageNet weights for (no batch normalisation).
TORCHVISION_WEIGHTS = {"A": "VGG11_Weights", "B": "VGG13_Weights", "D": "VGG16_Weights",
                       "E": "VGG19_Weights"}
# (label, method, scales): torchvision's own protocol first, so its published number checks ours
PROTOCOLS = (("centre crop, Q = 256", "single_scale", (256,)),
             ("dense, Q = 256", "dense", (256,)),
             ("multi-crop, Q = 256", "multi_crop", (256,)),
             ("dense, Q = 256, 384, 512", "dense", (256, 384, 512)))
VAL_ENV, IMAGES_ENV = "VGG_IMAGENET_VAL", "VGG_IMAGENET_VAL_IMAGES"
DEFAULT_IMAGES = 100


def weights_enum(config: str):
    import torchvision

    return getattr(torchvision.models, TORCHVISION_WEIGHTS[config]).IMAGENET1K_V1


def hub_checkpoints(hub_dir=None) -> Path:
    return Path(hub_dir if hub_dir is not None else torch.hub.get_dir()) / "checkpoints"


def cached_weights(hub_dir=None) -> dict[str, Path]:
    """``{config: checkpoint file}`` for every torchvision VGG weight file already on disk.

    torchvision caches a download under the last part of its URL (``vgg16-397923af.pth``), so
    the name is known without asking the network."""
    folder = hub_checkpoints(hub_dir)
    found = {}
    for config in TORCHVISION_WEIGHTS:
        path = folder / Path(weights_enum(config).url).name
        if path.is_file():
            found[config] = path
    return found


def load_released(config: str, path) -> torch.nn.Module:
    """A ``vgg_lib`` net ``config`` holding torchvision's ImageNet weights from ``path``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return load_torchvision_weights(vgg(config, init=None), state).eval()


def imagenet_val(root, n_images: int | None = None):
    """The ImageNet validation images under ``root`` (one folder per class, named by WordNet
    id: sorted, they are torchvision's class indices), as uint8 ``(3, H, W)`` tensors with
    labels; ``n_images`` evenly spaced ones (every class folder is visited in turn)."""
    from torchvision import datasets, transforms

    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{VAL_ENV}={str(root)!r} is not a folder")
    classes = [d for d in root.iterdir() if d.is_dir()]      # checked before 50,000 files are listed
    if len(classes) != 1000:
        raise ValueError(f"{str(root)!r} has {len(classes)} class folders; the ImageNet "
                         "validation set has 1000 (one per WordNet id, e.g. n01440764)")
    data = datasets.ImageFolder(root, transform=transforms.PILToTensor())
    if n_images is not None and n_images < len(data):
        step = len(data) / n_images
        data = torch.utils.data.Subset(data, [int(i * step) for i in range(n_images)])
    return data


def images_from_env(default: int = DEFAULT_IMAGES) -> int | None:
    """``$VGG_IMAGENET_VAL_IMAGES``: a number of images, or ``all`` (None)."""
    value = os.environ.get(IMAGES_ENV, str(default)).strip().lower()
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{IMAGES_ENV}={value!r}: give a number of images >= 1 or 'all'")
    return int(value)


def evaluate_released(model, dataset, protocols=PROTOCOLS, published: dict | None = None,
                      **kwargs) -> pd.DataFrame:
    """One row per protocol: top-1 / top-5 error (%) of ``model`` on ``dataset``, with
    torchvision's preprocessing; ``published`` (torchvision's ``acc@1``/``acc@5``) is shown as
    errors beside the centre-crop row. ``kwargs`` go to ``vgg_lib.evaluate.evaluate``."""
    rows = []
    for label, method, scales in protocols:
        e = evaluate(model, dataset, method, scales, **TORCHVISION_PREPROCESSING, **kwargs)
        row = {"protocol": label, "top-1 error": round(e.top1, 2),
               "top-5 error": None if e.top5 is None else round(e.top5, 2),
               "images": len(e.labels), "seconds": round(e.seconds, 1)}
        if published:
            row["torchvision's top-1 / top-5"] = (f"{100 - published['acc@1']:.2f} / "
                                                  f"{100 - published['acc@5']:.2f}"
                                                  if method == "single_scale" else "")
        rows.append(row)
    return pd.DataFrame(rows).set_index("protocol")


def plan(hub_dir=None, val_dir=None) -> str:
    """One line: what ``run`` would evaluate, and what is missing for it to do so."""
    folder = str(hub_checkpoints(hub_dir)).replace(str(Path.home()), "~", 1)
    missing = []
    if not cached_weights(hub_dir):
        missing.append("no torchvision VGG weights on disk")
    if not val_dir:
        missing.append(f"{VAL_ENV} is not set")
    protocols = "; ".join(label for label, _, _ in PROTOCOLS)
    return (f"Released weights not evaluated ({', '.join(missing)}). With any of "
            f"{', '.join(Path(weights_enum(c).url).name for c in TORCHVISION_WEIGHTS)} in "
            f"{folder} (torchvision.models.vgg16(weights='IMAGENET1K_V1') fetches D's once, outside "
            f"the book) and {VAL_ENV}=/path/to/imagenet/val (one folder per class), this cell "
            f"evaluates each on ${IMAGES_ENV} (default {DEFAULT_IMAGES}, or 'all') validation "
            f"images: {protocols}.")


def run(hub_dir=None, val_dir=None, n_images: int | None = None, device=None) -> pd.DataFrame | None:
    """Evaluate every cached torchvision VGG on the validation folder; ``None`` (after printing
    ``plan``) when the weights or the folder are missing."""
    val_dir = val_dir if val_dir is not None else os.environ.get(VAL_ENV)
    found = cached_weights(hub_dir)
    if not found or not val_dir:
        print(plan(hub_dir, val_dir))
        return None
    data = imagenet_val(val_dir, n_images)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tables = {}
    for config, path in found.items():
        model = load_released(config, path).to(device)
        published = weights_enum(config).meta["_metrics"]["ImageNet-1K"]
        tables[f"{config} ({path.name})"] = evaluate_released(model, data, published=published)
        del model
    return pd.concat(tables, names=["net", "protocol"])
