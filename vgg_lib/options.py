"""The options of a training run: ``TrainConfig``, one field per knob of the recipe (Sect. 3.1),
with its help text and its checks.

A ``TrainConfig`` is checked when it is made: numbers given as strings (papermill, YAML, the
command line) become numbers, and a value that is not allowed raises a one-line ``ConfigError``
naming the field and what it may be, before any data are loaded. ``vgg_lib.train`` trains one,
its command line has one option per field, and ``book/jobs/train.ipynb``'s parameters cell is
generated from it (``jobs.parameters_cell``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checks import ConfigError, boolean, numeric, read_json
from .configs import resolve
from .data.transforms import jitter_middle
from .runs import RUNTIME_FIELDS, run_name, runs_root, status

INIT_CHOICES = ("normal", "glorot", "from_run")
DEVICE_CHOICES = ("cpu", "cuda", "auto")
AMP_CHOICES = ("bf16", "fp16", "off")
PAPER_S = 256  # the paper's smallest fixed training scale (Sect. 3.1), rescaled with the crop


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Every knob of a training run; the defaults are the paper's recipe (Sect. 3.1), with the
    geometry scaled down to 32-pixel crops for the small built-in data."""

    config: str = _f("A", "network configuration of Table 1: A, A-LRN, B, C, D, E, B-5x5 (or vgg11/13/16/19)")
    dataset: str = _f("shapes", "shapes | shapes_centred | digits | fashion_mnist | cifar10 | imagefolder")
    data_root: str | None = _f(None, "folder of the data (imagefolder: root/train/<class>/*, root/val/<class>/*)")
    download: bool = _f(False, "let torchvision download cifar10 into data_root")
    image_size: int | None = _f(None, "shapes: side at which images are drawn (None: 64)")
    train_size: int | None = _f(None, "number of training images (None: all of the data set)")
    val_size: int | None = _f(None, "number of validation images (None: all of the data set)")
    skip_corrupt: bool = _f(False, "imagefolder: skip unreadable images (counted) instead of failing")
    epochs: int = _f(74, "maximum number of epochs (the paper stopped after 370K iterations, 74 epochs); a run stopped by this cap goes on when started again with a larger one")
    batch_size: int = _f(256, "global mini-batch size (Sect. 3.1: 256)")
    micro_batch: int | None = _f(None, "images per forward pass; gradients are accumulated up to batch_size")
    lr: float = _f(1e-2, "initial learning rate (Sect. 3.1: 1e-2; 1e-3 when starting from a trained run)")
    momentum: float = _f(0.9, "SGD momentum (Sect. 3.1: 0.9)")
    weight_decay: float = _f(5e-4, "L2 penalty multiplier (Sect. 3.1: 5e-4)")
    dropout: float = _f(0.5, "dropout ratio of fc6 and fc7 (Sect. 3.1: 0.5)")
    patience: int = _f(2, "epochs without a better val accuracy before lr is divided by 10 (not given in the paper)")
    lr_factor: float = _f(0.1, "lr multiplier at each plateau (Sect. 3.1: 0.1)")
    max_decreases: int = _f(3, "lr decreases before training stops at the next plateau (Sect. 3.1: 3)")
    S: int | list | None = _f(None, "training scale: int (fixed S) or [Smin, Smax] (jittering); None: 256 scaled to the crop")
    crop: int = _f(32, "training crop side, the network input size (paper: 224)")
    flip: bool = _f(True, "random horizontal flips (Sect. 3.1)")
    colour_std: float = _f(0.1, "std of the random RGB colour shift (the PCA lighting of AlexNet; 0 turns it off)")
    pixel_scale: float = _f(1.0, "pixels are (0..255 - mean RGB) * pixel_scale (paper: 1)")
    width: float = _f(1.0, "channel multiplier of every layer (1: the paper; 1/8 trains on a CPU)")
    pools: int = _f(5, "max-poolings kept, from the first (5: the paper; 3: the miniature of the book, a 4x4 pool5 at crop 32)")
    batch_norm: bool = _f(False, "add batch normalisation after every conv (not in the paper)")
    init: str = _f("normal", "normal | glorot | from_run (first four convs and the FC layers of init_source)")
    init_std: float = _f(0.01, "std of the normal initialisation")
    init_source: str | None = _f(None, "run folder of a trained net A, for init from_run")
    init_run: str | None = _f(None, "run folder of a trained net of the same config: copy all its weights")
    seed: int = _f(0, "seed of the initialisation, the data order and the augmentation")
    device: str = _f("auto", "cpu | cuda | auto")
    workers: int | None = _f(None, "data-loader worker processes per process (0: load in the main process); "
                                   "None: 0 on cpu, min(8, CPUs per GPU) on cuda")
    compile: bool = _f(False, "torch.compile the network")
    amp: str | None = _f(None, "mixed precision: bf16 | fp16 (with a gradient scaler) | off; "
                               "None: bf16 on cuda and on a CPU with native bf16 (AVX512-BF16 or AMX), "
                               "off on other CPUs")
    progress: bool = _f(True, "show tqdm progress bars")
    max_steps: int | None = _f(None, "stop after this many SGD steps in total (for tests)")
    run_dir: str | None = _f(None, "run folder (None: ROOT/<config>-<dataset>-<hash of the parameters>)")
    root: str | None = _f(None, "parent of the run folder when run_dir is None ($VGG_LIB_RUNS or ./runs)")

    def __post_init__(self):
        for f in dataclasses.fields(self):  # "false" from papermill must not switch a flag on
            if f.type == "bool":
                setattr(self, f.name, boolean(f.name, getattr(self, f.name)))
        try:
            self.config = resolve(self.config)
        except ValueError as e:
            raise ConfigError(f"config: {e}") from None
        from .data import DATASETS
        if self.dataset not in DATASETS:
            self._bad("dataset", f"one of {', '.join(DATASETS)}")
        self._check_numbers()
        if self.run_dir is not None:
            path = Path(self.run_dir).expanduser()
            if path.exists() and not path.is_dir():
                self._bad("run_dir", "a folder (new, or holding a run of these parameters); that path is a file")
        self.S = self._check_scale()
        for name, choices in (("init", INIT_CHOICES), ("device", DEVICE_CHOICES)):
            if getattr(self, name) not in choices:
                self._bad(name, f"one of {', '.join(choices)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            self._bad("device", "cpu or auto: no CUDA GPU is available on this machine")
        if self.amp is not None and self.amp not in AMP_CHOICES:
            self._bad("amp", f"one of {', '.join(AMP_CHOICES)} or None (bf16 on cuda and on a CPU with "
                                 "native bf16, off on other CPUs)")
        self._check_data_root()
        if self.init == "from_run":
            if self.init_source is None:
                self._bad("init_source", "the run folder of a trained net A when init='from_run'")
            self._check_source("init_source", same_config=False)
        elif self.init_source is not None:
            self._bad("init_source", "None unless init='from_run'")
        if self.init_run is not None:
            self._check_source("init_run", same_config=True)

    def _bad(self, name, allowed):
        raise ConfigError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

    def _integer(self, name, low, none_ok=False):
        v = numeric(getattr(self, name))
        if v is None and none_ok:
            return
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            self._bad(name, f"an integer >= {low}" + (" or None" if none_ok else ""))
        setattr(self, name, v)

    def _number(self, name, ok, allowed):
        v = numeric(getattr(self, name))
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(float(v)):
            self._bad(name, allowed)
        setattr(self, name, float(v))

    def _check_numbers(self):
        """Every numeric field with its type and range; strings like "8" or "1e-3" (papermill,
        YAML) become numbers."""
        for name in ("epochs", "batch_size", "crop"):
            self._integer(name, 32 if name == "crop" else 1)
        for name in ("micro_batch", "train_size", "val_size", "max_steps"):
            self._integer(name, 1, none_ok=True)
        self._integer("image_size", 8, none_ok=True)
        for name in ("patience", "max_decreases", "seed"):
            self._integer(name, 0)
        self._integer("workers", 0, none_ok=True)
        self._integer("pools", 0)
        if self.pools > 5:
            self._bad("pools", "an integer in [0, 5] (the paper: 5)")
        for name, ok, allowed in (
                ("lr", lambda v: v > 0, "a number > 0 (the paper: 1e-2)"),
                ("momentum", lambda v: 0 <= v < 1, "a number in [0, 1) (the paper: 0.9)"),
                ("weight_decay", lambda v: v >= 0, "a number >= 0 (the paper: 5e-4)"),
                ("dropout", lambda v: 0 <= v < 1, "a number in [0, 1) (the paper: 0.5)"),
                ("lr_factor", lambda v: 0 < v < 1, "a number in (0, 1) (the paper: 0.1)"),
                ("colour_std", lambda v: v >= 0, "a number >= 0"),
                ("pixel_scale", lambda v: v > 0, "a number > 0"),
                ("width", lambda v: v > 0, "a number > 0 (1 for the paper, 0.125 for a CPU)"),
                ("init_std", lambda v: v > 0, "a number > 0")):
            self._number(name, ok, allowed)
        if self.micro_batch is not None and self.micro_batch > self.batch_size:
            self._bad("micro_batch", f"an integer in [1, batch_size={self.batch_size}] or None")
        if self.train_size is not None and self.train_size < self.batch_size:
            self._bad("train_size", f"an integer >= batch_size={self.batch_size} (every step takes one full "
                                    "batch) or None")

    def _check_scale(self):
        from .data import scaled_size
        s = self.S
        if s is None:
            return scaled_size(PAPER_S, self.crop)
        if isinstance(s, str):  # from a command line or papermill: "256" or "256,512" or "[256, 512]"
            try:
                s = [int(p) for p in s.strip("[]() ").replace(",", " ").split()]
            except ValueError:
                s = None
        if isinstance(s, (list, tuple)) and len(s) == 1:
            s = s[0]
        allowed = f"an integer >= crop={self.crop} or [Smin, Smax] with crop <= Smin <= Smax"
        if isinstance(s, (list, tuple)):
            if len(s) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in s):
                raise ConfigError(f"S={self.S!r} is not allowed: {allowed}")
            if s[0] > s[1]:
                raise ConfigError(f"S={self.S!r} has Smin > Smax: {allowed}")
            if s[0] < self.crop:
                raise ConfigError(f"S={self.S!r}: Smin is smaller than the crop; {allowed}")
            return list(s) if s[0] < s[1] else s[0]
        if not isinstance(s, int) or isinstance(s, bool) or s < self.crop:
            raise ConfigError(f"S={self.S!r} is not allowed: {allowed}")
        return s

    def _check_data_root(self):
        if self.dataset == "imagefolder":
            from .data.datasets import check_training_classes, find_classes
            try:
                find_classes(self.data_root)
            except ValueError as e:
                raise ConfigError(f"data_root={self.data_root!r} is not allowed: {e}") from None
            val = Path(self.data_root) / "val"
            if not val.is_dir() or not any(p.is_dir() for p in val.iterdir()):
                raise ConfigError(f"data_root={self.data_root!r} has no class folders in val/: "
                                  "imagefolder needs root/train/<class>/* and root/val/<class>/*")
            try:
                check_training_classes(self.data_root)
            except ValueError as e:
                raise ConfigError(f"data_root={self.data_root!r} is not allowed: {e}") from None
        elif self.data_root is not None and not self.download and not Path(self.data_root).expanduser().is_dir():
            raise ConfigError(f"data_root={self.data_root!r} does not exist: give an existing folder or None")

    def _check_source(self, name, same_config):
        path = Path(getattr(self, name)).expanduser()
        what = "the run folder of a finished training run" + (f" of config {self.config}" if same_config else "")
        if not (path / "checkpoint.pt").is_file() or not (path / "params.json").is_file():
            raise ConfigError(f"{name}={str(path)!r} is not allowed: no checkpoint.pt/params.json there; "
                              f"expected {what}")
        p = read_json(path / "params.json")
        state = status(path)
        if state != "finished":
            raise ConfigError(f"{name}={str(path)!r} is not allowed: that run is {state or 'not started'}, "
                              f"not finished; expected {what}")
        if same_config and p.get("config") != self.config:
            raise ConfigError(f"{name}={str(path)!r} is a run of config {p.get('config')}, but config="
                              f"{self.config!r}: expected {what}")
        from .data.datasets import SHAPES_FRAMING as shapes_framings
        for key in ("dataset", "crop", "width", "batch_norm", "pools"):
            theirs = p.get(key, 5) if key == "pools" else p.get(key)  # runs before `pools` had 5
            if key == "dataset" and {theirs, self.dataset} <= set(shapes_framings):
                continue  # both framings of shapes have the same ten classes
            if theirs != getattr(self, key):
                raise ConfigError(f"{name}={str(path)!r} was trained with {key}={theirs!r} but this run "
                                  f"has {key}={getattr(self, key)!r}: the weights would not fit")

    # -- derived values ----------------------------------------------------------------------
    @property
    def test_scale(self) -> int:
        """Q used for validation during training: S, or (Smin + Smax) / 2 when jittering (Sect. 4.1)."""
        return jitter_middle(self.S)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields that decide what a run computes (not how fast)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def resolved_run_dir(self) -> Path:
        if self.run_dir is not None:
            return Path(self.run_dir).expanduser()
        return runs_root(self.root) / run_name(self.identity(), (self.config, self.dataset, f"s{self.seed}"))
