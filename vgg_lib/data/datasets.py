"""Data sets: the built-in ``shapes`` and ``digits``, CIFAR-10, and ImageNet-style folders.

Every data set returns ``(image, label)`` with ``image`` a uint8 tensor (3, H, W), RGB, at the
data set's own resolution (or ``transform(image)`` when a transform is given), and has
``.classes``, ``.num_classes``, ``.name`` and ``.identity`` (what its RGB statistics are cached
under). All arguments are checked before anything is loaded or generated.
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from . import shapes as _shapes
from .cache import cache_dir, key, save_npy

DATASETS = ("shapes", "shapes_centred", "digits", "fashion_mnist", "cifar10", "imagefolder")
# the data sets drawn by `shapes` (same ten classes, so weights move between them), by framing
SHAPES_FRAMING = {"shapes": "anywhere", "shapes_centred": "centred"}
SPLITS = ("train", "val", "test")
SHAPES_SIZES = {"train": 10_000, "val": 2_000, "test": 2_000}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class VisionDataset(Dataset):
    """Common part: label lists, an optional transform and a stable identity."""

    name = "?"

    def __init__(self, classes, transform=None, identity=None):
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.transform = transform
        self.identity = dict(identity or {}, name=self.name)

    def image(self, index: int) -> torch.Tensor:  # uint8 (3, H, W)
        raise NotImplementedError

    def label(self, index: int) -> int:
        raise NotImplementedError

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        img = self.image(index)
        return (img if self.transform is None else self.transform(img)), self.label(index)

    def __repr__(self):
        return (f"{type(self).__name__}(name={self.name!r}, split={self.identity.get('split')!r}, "
                f"images={len(self)}, classes={self.num_classes})")


class ArrayDataset(VisionDataset):
    """Images held in one uint8 array (N, 3, H, W) (possibly memory-mapped) with int labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes, transform=None,
                 identity=None):
        super().__init__(classes, transform, identity)
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def __len__(self):
        return len(self.labels)

    def image(self, index):
        return torch.from_numpy(np.array(self.images[index], dtype=np.uint8, copy=True))

    def label(self, index):
        return int(self.labels[index])


class Shapes(ArrayDataset):
    name = "shapes"

    def boxes(self) -> np.ndarray:
        """Appendix A's ground truth: each image's object box ``(x0, y0, x1, y1)`` in pixels of
        the stored images, float64 ``(N, 4)``, from the scene parameters (``shapes.boxes``).
        Scenes are drawn again from ``(seed, split)``, which costs milliseconds (no rendering)."""
        if getattr(self, "_boxes", None) is None:
            ident = self.identity
            scenes = _shapes.sample_scenes(len(self), ident["seed"], ident["split"],
                                           ident.get("framing", "anywhere"))
            if not np.array_equal(scenes["shape"], self.labels):
                raise ValueError("these shapes images were not drawn from their identity's (seed, split): "
                                 "their boxes cannot be recomputed")
            self._boxes = _shapes.boxes(scenes) * self.images.shape[-1]
        return self._boxes


class ShapesCentred(Shapes):
    name = "shapes_centred"


class Digits(ArrayDataset):
    name = "digits"


class CIFAR10(ArrayDataset):
    name = "cifar10"


class FashionMNIST(ArrayDataset):
    name = "fashion_mnist"


# ----------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------

def load_shapes(split="train", root=None, image_size=64, seed=0, size=None, framing="anywhere"):
    """Render (or read back from the cache) ``size`` images of ``split``: (images, labels).

    The cache file names carry every generation parameter and a hash of them; arrays are
    written atomically (temporary file + rename), so concurrent builds are safe.
    """
    size = SHAPES_SIZES[split] if size is None else size
    params = dict(version=_shapes.RENDER_VERSION, split=split, size=int(size),
                  image_size=int(image_size), seed=int(seed))
    if framing != "anywhere":  # the default framing keeps the keys it had before framings
        params["framing"] = framing
    folder = Path(root) if root is not None else cache_dir() / "shapes"
    name = "shapes" if framing == "anywhere" else f"shapes-{framing}"
    stem = f"{name}-{split}-{size}x{image_size}px-seed{seed}-{key(params)}"
    img_path, lbl_path = folder / f"{stem}-images.npy", folder / f"{stem}-labels.npy"
    if not (img_path.exists() and lbl_path.exists()):
        images, labels = _shapes.generate(size, image_size, seed, split, framing)
        save_npy(lbl_path, labels)
        save_npy(img_path, images)
    return np.load(img_path, mmap_mode="r"), np.load(lbl_path)


# ----------------------------------------------------------------------------------------
# digits (scikit-learn's bundled copy of the UCI handwritten digits: no download)
# ----------------------------------------------------------------------------------------

def split_indices(n: int, seed: int, fractions=(0.7, 0.15, 0.15)) -> dict[str, np.ndarray]:
    """A seeded, disjoint train/val/test partition of ``range(n)`` (sorted within each split)."""
    perm = np.random.default_rng(seed).permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return {"train": np.sort(perm[:a]), "val": np.sort(perm[a:b]), "test": np.sort(perm[b:])}


@functools.lru_cache(maxsize=1)
def _sklearn_digits():
    from sklearn.datasets import load_digits as sk_digits  # imported lazily: it is slow

    return sk_digits()


def load_digits(split="train", image_size=32, seed=0):
    d = _sklearn_digits()
    idx = split_indices(len(d.target), seed)[split]
    x = torch.from_numpy(d.images[idx]).float()[:, None] * (255.0 / 16.0)  # 0..16 -> 0..255
    # bilinear upsampling of the 8x8 originals (anti-aliased only if asked to shrink them)
    x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear",
                                        align_corners=False, antialias=image_size < 8)
    x = x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return x.numpy(), d.target[idx], [str(c) for c in d.target_names]


# ----------------------------------------------------------------------------------------
# Fashion-MNIST (Xiao et al., 2017), read from Debian's dataset-fashion-mnist package
# ----------------------------------------------------------------------------------------

# Where `apt-get install dataset-fashion-mnist` puts the four IDX files (`make setup` does it).
FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_VAL = 10_000  # held out of the 60,000 training images for the lr schedule


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped or not, as a numpy array."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {body.size} values for a {shape} array")
    return body.reshape(shape)


def load_fashion_mnist(split="train", root=None, seed=0):
    """Fashion-MNIST as (N, 3, 28, 28) uint8 arrays (grey replicated to RGB).

    ``train``/``val`` are a seeded 50,000/10,000 partition of the official training set (``val``
    drives the learning-rate schedule); ``test`` is the official 10,000-image test set, on which
    the book reports errors. Nothing is downloaded: the files come from Debian's
    ``dataset-fashion-mnist`` package or from ``root`` (a folder with the same four IDX files).
    """
    folder = Path(root).expanduser() if root is not None else FASHION_MNIST_ROOT
    stem = "t10k" if split == "test" else "train"
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [folder / f"{stem}-{kind}{ext}" for ext in (".gz", "")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem}-{kind}[.gz] not found in {str(folder)!r}: install "
                f"Debian's package (apt-get install dataset-fashion-mnist, which `make setup` "
                f"runs) or pass root= a folder holding the four IDX files")
        files.append(found[0])
    images, labels = _read_idx(files[0]), _read_idx(files[1]).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(f"{files[0]} and {files[1]} do not hold matching images and labels")
    if split != "test":
        perm = np.random.default_rng(seed).permutation(len(labels))
        idx = np.sort(perm[FASHION_MNIST_VAL:] if split == "train" else perm[:FASHION_MNIST_VAL])
        images, labels = images[idx], labels[idx]
    rgb = np.ascontiguousarray(np.broadcast_to(images[:, None], (len(images), 3) + images.shape[1:]))
    return rgb, labels, list(FASHION_MNIST_CLASSES)


# ----------------------------------------------------------------------------------------
# CIFAR-10 (torchvision; downloads only when asked)
# ----------------------------------------------------------------------------------------

def load_cifar10(split="train", root=None, download=False, seed=0, val_size=5000):
    """CIFAR-10 as arrays. ``train``/``val`` are a seeded 45,000/5,000 split of the official
    training set; ``test`` is the official test set."""
    from torchvision.datasets import CIFAR10 as TV

    root = Path(root) if root is not None else cache_dir() / "cifar10"
    try:
        ds = TV(str(root), train=split != "test", download=download)
    except RuntimeError as e:
        if download:
            raise
        raise FileNotFoundError(
            f"CIFAR-10 not found under root={str(root)!r}: pass download=True to fetch it, or "
            f"point root at a folder containing 'cifar-10-batches-py'") from e
    images, labels = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)
    if split != "test":
        perm = np.random.default_rng(seed).permutation(len(labels))
        idx = np.sort(perm[val_size:] if split == "train" else perm[:val_size])
        images, labels = images[idx], labels[idx]
    return np.ascontiguousarray(images), labels, list(ds.classes)


# ----------------------------------------------------------------------------------------
# ImageNet layout: root/{train,val,test}/<class>/<image>
# ----------------------------------------------------------------------------------------

def find_classes(root) -> list[str]:
    """Class folder names under ``root/train``, after checking the layout (ValueError if bad)."""
    if root is None:
        raise ValueError("imagefolder needs root= (a folder with train/<class>/ images)")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data root {str(root)!r} does not exist or is not a directory")
    if not any(root.iterdir()):
        raise ValueError(f"data root {str(root)!r} is empty: expected train/<class>/ images")
    train = root / "train"
    classes = sorted(p.name for p in train.iterdir() if p.is_dir()) if train.is_dir() else []
    if not classes:
        raise ValueError(f"data root {str(root)!r} has no class folders: expected "
                         f"{str(train)!r}/<class>/<image> (the ImageNet layout)")
    return classes


def check_training_classes(root) -> list[str]:
    """``find_classes``, plus what training needs: at least 2 classes, each with an image."""
    classes, train = find_classes(root), Path(root) / "train"
    if len(classes) < 2:
        raise ValueError(f"data root {str(root)!r} has a single class folder ({classes[0]}) in train/: "
                         "a classifier needs at least 2 classes")
    for c in classes:  # stops at each folder's first image: cheap even for ImageNet
        if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in (train / c).iterdir()):
            raise ValueError(f"class folder {str(train / c)!r} has no image files "
                             f"({', '.join(IMAGE_EXTENSIONS)}): add images or remove the folder")
    return classes


def _decode(path: Path, min_side: int | None) -> torch.Tensor:
    """Decode an image file to uint8 (3, H, W) RGB.

    When the caller needs a smallest side of only ``min_side`` pixels, JPEGs are decoded at a
    reduced scale (1/2, 1/4 or 1/8, done inside libjpeg's inverse DCT, PIL's ``draft``):
    several times faster on ImageNet-sized images, and the later resize is cheaper too.
    """
    data = path.read_bytes()
    if min_side is not None and data[:2] == b"\xff\xd8":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            scale = min(w, h) / min_side
            if scale >= 2:
                im.draft("RGB", (int(np.ceil(w / scale)), int(np.ceil(h / scale))))
                return torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())
    try:  # libjpeg-turbo/libpng straight into a tensor: about 2x faster than through PIL
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:  # torchvision plans to move decoding to torchcodec
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the same move, announced
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return decode_image(raw, mode=ImageReadMode.RGB)


class ImageFolder(VisionDataset):
    """The ImageNet layout: ``root/train/<class>/*``, ``root/val/<class>/*``, ``root/test/...``.

    Images keep their own size unless ``image_size`` is given (then the smallest side is
    rescaled to it at load time); set ``decode_size`` (or give a transform with ``max_size``)
    to let large JPEGs be decoded at reduced scale. ``skip_corrupt=True`` replaces an unreadable file by the next
    readable one and counts it in ``.skipped`` (per process: each DataLoader worker counts its
    own); ``scan()`` decodes every file once and drops the unreadable ones up front.
    """

    name = "imagefolder"

    def __init__(self, root, split="train", image_size=None, skip_corrupt=False, transform=None,
                 classes=None, samples=None, identity=None):
        super().__init__(classes, transform, identity)
        self.root, self.split, self.image_size = Path(root), split, image_size
        self.samples: list[tuple[Path, int]] = samples
        self.skip_corrupt = skip_corrupt
        self.skipped_files: list[str] = []
        # smallest side the caller needs: JPEGs may be decoded at 1/2, 1/4, 1/8 scale down to it
        # (default: ``transform.max_size``, i.e. Smax or Q, when a transform is set)
        self.decode_size: int | None = None

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def __len__(self):
        return len(self.samples)

    def label(self, index):
        return self.samples[index][1]

    def _min_side(self):
        if self.image_size is not None:
            return self.image_size
        if self.decode_size is not None:
            return self.decode_size
        return getattr(self.transform, "max_size", None)  # the largest S the transform may use

    def image(self, index) -> torch.Tensor:
        """Decode file ``index`` (uint8 (3, H, W)); a RuntimeError naming the file if it cannot."""
        path = self.samples[index][0]
        try:
            img = _decode(path, self._min_side())
        except Exception as e:  # noqa: BLE001 - any decoder failure means a corrupt file
            raise RuntimeError(f"cannot decode image file {str(path)!r}: {e}") from e
        if self.image_size is not None:
            from .transforms import rescale

            img = rescale(img, self.image_size)
        return img

    def __getitem__(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                img = self.image(i)
            except RuntimeError:
                if not self.skip_corrupt:
                    raise
                if str(self.samples[i][0]) not in self.skipped_files:
                    self.skipped_files.append(str(self.samples[i][0]))
                continue  # use the next readable image (and its label) instead
            return (img if self.transform is None else self.transform(img)), self.label(i)
        raise RuntimeError(f"no readable image under {str(self.root / self.split)!r}")

    def check_headers(self) -> None:
        """Read every file's header (not its pixels): a file that is not an image at all fails
        here, before training, with one line naming it -- not after an epoch."""
        from PIL import Image

        for path, _ in self.samples:
            try:
                with Image.open(path) as im:
                    im.size  # noqa: B018 - the header is parsed on open
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"image file {str(path)!r} cannot be read ({type(e).__name__}); remove or "
                                 "replace it, or set skip_corrupt=True to skip unreadable images") from None

    def scan(self) -> int:
        """Decode every file once; drop the unreadable ones (counted in ``.skipped``).

        Returns the number skipped; raises on the first one unless ``skip_corrupt``.
        """
        good = []
        for path, label in self.samples:
            try:
                _decode(path, None)
                good.append((path, label))
            except Exception:  # noqa: BLE001
                if not self.skip_corrupt:
                    raise RuntimeError(f"cannot decode image file {str(path)!r}") from None
                self.skipped_files.append(str(path))
        self.samples = good
        return self.skipped


def make_imagefolder(root, split="train", image_size=None, skip_corrupt=False, transform=None):
    classes = find_classes(root)
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        hint = (" (the test split is optional: add root/test/<class>/ to use it)"
                if split == "test" else "")
        raise ValueError(f"split={split!r}: folder {str(folder)!r} does not exist{hint}")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        if c not in index:
            raise ValueError(f"class folder {str(folder / c)!r} is not among the "
                             f"{len(classes)} training classes")
        samples += [(p, index[c]) for p in sorted((folder / c).iterdir())
                    if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not samples:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}")
    identity = dict(root=str(root.resolve()), split=split, image_size=image_size)
    return ImageFolder(root, split, image_size, skip_corrupt, transform, classes, samples, identity)


# ----------------------------------------------------------------------------------------
# the one entry point
# ----------------------------------------------------------------------------------------

def _check_int(name, value, minimum=1):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or value < minimum):
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum} (or None)")


def build_dataset(name, split="train", root=None, *, image_size=None, download=False, seed=0,
                  size=None, skip_corrupt=False, transform=None) -> Dataset:
    """Build data set ``name`` (one of ``DATASETS``), split ``train``/``val``/``test``.

    Items are ``(image, label)``: a uint8 tensor (3, H, W) RGB at the native resolution
    (``shapes``: ``image_size``, default 64; ``digits``: default 32; ``cifar10``: 32 unless
    ``image_size`` rescales it; ``imagefolder``: each file's own size unless ``image_size``
    rescales its smallest side), or ``transform(image)`` if a transform is given.

    ``shapes_centred`` is ``shapes`` with every object large and near the middle (see
    ``shapes.FRAMINGS``).

    ``size``: number of images. For ``shapes`` it sets how many are drawn (default
    10,000/2,000/2,000); for the others it takes a seeded random subset of the split.
    ``seed``: the shapes scenes, and the train/val partition of digits and CIFAR-10.
    ``root``: where the data are (``cifar10``: default ``cache_dir()/cifar10``; ``imagefolder``:
    required); for ``shapes``, where the rendered arrays are cached (default
    ``cache_dir()/shapes``). ``download``: ``cifar10`` only. ``skip_corrupt``: ``imagefolder``.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset name={name!r} is not one of {DATASETS}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    _check_int("image_size", image_size, 8 if name in SHAPES_FRAMING else 1)
    _check_int("size", size)
    _check_int("seed", seed, 0)
    if transform is not None and not callable(transform):
        raise ValueError(f"transform={transform!r} must be callable (or None)")
    if name == "imagefolder":
        ds = make_imagefolder(root, split, image_size, skip_corrupt, transform)
        return _subset(ds, size, seed)
    identity = dict(root=None if root is None else str(Path(root).resolve()), split=split,
                    image_size=image_size, seed=seed, size=size)
    if name in SHAPES_FRAMING:
        image_size = image_size or 64
        identity["image_size"] = image_size
        framing = SHAPES_FRAMING[name]
        if framing != "anywhere":  # Shapes.boxes draws the scenes again from it
            identity["framing"] = framing
        images, labels = load_shapes(split, root, image_size, seed, size, framing)
        cls = Shapes if framing == "anywhere" else ShapesCentred
        return cls(images, labels, _shapes.CLASSES, transform, identity)
    if name == "digits":
        image_size = image_size or 32
        identity["image_size"] = image_size
        images, labels, classes = load_digits(split, image_size, seed)
        cls = Digits
    elif name == "fashion_mnist":
        images, labels, classes = load_fashion_mnist(split, root, seed)
        if image_size not in (None, 28):
            images = _resize_all(images, image_size)
        cls = FashionMNIST
    else:
        images, labels, classes = load_cifar10(split, root, download, seed)
        if image_size not in (None, 32):
            images = _resize_all(images, image_size)
        cls = CIFAR10
    if size is not None:
        idx = _subset_indices(len(labels), size, seed)
        images, labels = images[idx], labels[idx]
    return cls(images, labels, classes, transform, identity)


def _resize_all(images: np.ndarray, image_size: int) -> np.ndarray:
    from torchvision.transforms.v2.functional import resize

    x = resize(torch.from_numpy(images), [image_size, image_size], antialias=True)
    return x.numpy()


def _subset_indices(n, size, seed):
    if size > n:
        raise ValueError(f"size={size} is larger than the split ({n} images)")
    return np.sort(np.random.default_rng(seed + 1).permutation(n)[:size])


def _subset(ds: ImageFolder, size, seed):
    if size is not None:
        idx = _subset_indices(len(ds), size, seed)
        ds.samples = [ds.samples[i] for i in idx]
        ds.identity.update(size=size, seed=seed)
    return ds
