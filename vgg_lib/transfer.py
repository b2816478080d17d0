"""Very deep features on other data sets (Appendix B).

The paper's recipe for a data set the net never saw: drop the last (class-score) layer, apply
the fully-convolutional net (Sect. 3.2) densely to the whole image rescaled to Q, average the
penultimate (fc7, after ReLU) activation map over space, average it with the flipped image's,
average or stack the descriptors of several scales Q, L2-normalise, and train a one-vs-rest
linear SVM on the target data. Scored as the paper does: mean class recall (Caltech) and mean
average precision (VOC, several labels per image).

>>> source = load_source("runs/D-shapes-s0-...")                # or a torchvision state dict
>>> X = extract_features(source.model, train_set, scales=paper_scales(source.model), **source.preprocessing)
>>> result = linear_svm(X, y, X_test, y_test, C=1.0)
>>> result.mean_class_recall

``fine_tune`` is the alternative the paper did not take: train the whole net on the target data.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import scaled_size, train_transform
from .evaluate import TORCHVISION_PREPROCESSING, dense_features, fcn_of, preprocess, scales_list
from .models import VGG, load_torchvision_weights, vgg

AGGREGATES = ("average", "stack")
# Where the descriptor is read: after pool5, or after the ReLU of fc6 / fc7 (the paper's choice).
LAYERS = {"pool5": 0, "fc6": 2, "fc7": 5}  # number of classifier modules kept (fc6, relu6, drop6, fc7, relu7)
PAPER_Q = (256, 384, 512)  # the test scales of Appendix B, for 224-pixel crops


def paper_scales(model: VGG, multi: bool = True) -> list[int]:
    """Appendix B's scales Q = 256 (single) or {256, 384, 512} (multi), rescaled to the net's
    input size as ``vgg_lib.data.scaled_size`` does (37, 55, 73 for 32-pixel nets)."""
    qs = PAPER_Q if multi else PAPER_Q[:1]
    return [scaled_size(q, model.input_size) for q in qs]


# --- features -----------------------------------------------------------------------------------

def _truncated(model: VGG, layer: str) -> nn.Module:
    """The fully-convolutional net cut after ``layer`` (eval mode: dropout is off)."""
    if layer not in LAYERS:
        raise ValueError(f"layer={layer!r} is unknown; allowed: {', '.join(LAYERS)} "
                         "(fc7, after its ReLU, is the paper's penultimate layer)")
    fcn = fcn_of(model)
    return nn.Sequential(fcn.features, fcn.classifier[:LAYERS[layer]]).eval()


def _labels(dataset) -> np.ndarray:
    for name in ("labels", "targets"):
        if getattr(dataset, name, None) is not None:
            return np.asarray(getattr(dataset, name))
    if getattr(dataset, "samples", None) is not None:  # an ImageFolder
        return np.asarray([y for _, y in dataset.samples])
    return np.asarray([dataset[i][1] for i in range(len(dataset))])


def extract_features(model: VGG, dataset, scales=None, flip: bool = True, aggregate: str = "average",
                     layer: str = "fc7", *, mean=None, pixel_scale: float = 1.0, std=None,
                     batch_size: int = 64, progress: bool = True,
                     return_labels: bool = False) -> np.ndarray:
    """Appendix B's image descriptors, one L2-normalised row per image of ``dataset``.

    For each scale Q of ``scales`` (default: 256 scaled to the net's input size) the image is
    rescaled so its smallest side is Q and the fully-convolutional net, cut after ``layer``
    (``"fc7"`` after its ReLU; ``"fc6"``, ``"pool5"``), is applied densely; its activation map
    is averaged over space (global average pooling) and, with ``flip``, averaged with the one
    of the mirrored image. ``aggregate="average"`` averages the scales' descriptors (D values),
    ``"stack"`` concatenates them (len(scales) * D values). The result is L2-normalised.

    ``dataset`` yields ``(uint8 (3, H, W) image, label)`` (any sizes; normalised here with
    ``mean``, ``pixel_scale``, ``std`` as in ``vgg_lib.evaluate.preprocess``) or already
    normalised float images (leave ``mean=None``). Returns a float32 array ``(N, D)``, and the
    labels too with ``return_labels=True``.
    """
    net = _truncated(model, layer)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r} is unknown; allowed: {', '.join(AGGREGATES)}")
    qs = scales_list(paper_scales(model, multi=False) if scales is None else scales)
    for q in qs:
        if q < model.input_size:
            raise ValueError(f"scales: Q={q} is smaller than the net's input size {model.input_size}; "
                             f"allowed: Q >= {model.input_size}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")
    if len(dataset) == 0:
        raise ValueError("dataset is empty; nothing to extract")
    if not torch.is_floating_point(torch.as_tensor(dataset[0][0])) and mean is None:
        raise ValueError("dataset yields uint8 images: pass mean=... (the source run's mean RGB, "
                         "e.g. **load_source(run).preprocessing) or **TORCHVISION_PREPROCESSING")

    starts = range(0, len(dataset), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"{model.config} {layer} Q={qs}", unit="batch")
    rows, labels = [], []
    for i in starts:
        items = [dataset[j] for j in range(i, min(i + batch_size, len(dataset)))]
        images = [torch.as_tensor(x) for x, _ in items]
        labels += [y for _, y in items]
        if mean is not None:
            images = preprocess(images, mean, pixel_scale, std)
        per_scale = dense_features(net, images, qs, flip)  # (n, scales, D), spatially averaged
        rows.append(per_scale.mean(1) if aggregate == "average" else per_scale.flatten(1))
    features = F.normalize(torch.cat(rows), dim=1).numpy()
    return (features, np.asarray(labels)) if return_labels else features


def pixel_features(dataset) -> tuple[np.ndarray, np.ndarray]:
    """The raw-pixel baseline: every image's pixels (one size for all images) as a vector,
    centred and L2-normalised like the deep descriptors. Returns ``(features, labels)``."""
    x = np.stack([np.asarray(dataset[i][0], dtype=np.float32).ravel() for i in range(len(dataset))])
    x -= x.mean(1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x, _labels(dataset)


def per_class_subset(labels, n_per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n_per_class`` images of every class (all of a class if it has fewer),
    drawn with ``seed``: the labelled set of one point of a learning curve."""
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class={n_per_class!r} must be an int >= 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:n_per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


# --- the linear SVM -----------------------------------------------------------------------------

@dataclass
class SVMResult:
    """What ``linear_svm`` measured (percentages, as in Tables 11-12).

    ``mean_class_recall``: the mean over classes of the share of a class's test images
    predicted as that class (Caltech's measure). ``mAP``: the mean over classes of the average
    precision of the SVM scores (VOC's measure; for single-label targets the labels are taken
    one-hot). ``accuracy``: share of test images right (multi-label: of all image-class pairs).
    """

    predictions: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    mean_class_recall: float
    mAP: float
    accuracy: float
    per_class_recall: np.ndarray = field(repr=False)
    C: float
    multilabel: bool

    def summary(self) -> dict:
        """Flat, JSON-ready numbers (what the transfer job writes)."""
        return {"mean_class_recall": self.mean_class_recall, "mAP": self.mAP, "accuracy": self.accuracy,
                "C": self.C, "multilabel": self.multilabel, "test_images": len(self.predictions)}


def _check_pair(name: str, features, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"{name}_features must be a 2-D array (images, D); got shape {x.shape}")
    if y.ndim not in (1, 2) or len(y) != len(x):
        raise ValueError(f"{name}_labels must have one entry (or indicator row) per image: "
                         f"{name}_features has {len(x)} rows but {name}_labels has shape {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}_features contain NaN or infinite values")
    return x, y


def linear_svm(train_features, train_labels, test_features, test_labels, C: float = 1.0,
               max_iter: int = 10_000) -> SVMResult:
    """Train a one-vs-rest linear SVM (scikit-learn's ``LinearSVC``, hinge-squared loss,
    penalty ``C``) on ``train_features`` and score it on the test set.

    Labels are class indices ``(N,)`` (one label per image: Caltech) or a 0/1 indicator
    matrix ``(N, classes)`` (several labels per image: VOC); then one SVM per column.
    """
    from sklearn.metrics import average_precision_score, recall_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    if isinstance(C, bool) or not isinstance(C, (int, float)) or not math.isfinite(C) or C <= 0:
        raise ValueError(f"C={C!r} is not allowed: the SVM penalty must be a number > 0 (e.g. 1.0)")
    xtr, ytr = _check_pair("train", train_features, train_labels)
    xte, yte = _check_pair("test", test_features, test_labels)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"feature lengths differ: train_features have {xtr.shape[1]} values per image, "
                         f"test_features {xte.shape[1]}; extract both with the same layer, scales and aggregate")
    if ytr.ndim != yte.ndim or (ytr.ndim == 2 and ytr.shape[1] != yte.shape[1]):
        raise ValueError(f"train_labels {ytr.shape} and test_labels {yte.shape} must both be class "
                         "indices (N,) or indicator matrices (N, classes) with the same classes")
    multilabel = ytr.ndim == 2
    if multilabel:
        if not np.isin(ytr, (0, 1)).all() or not np.isin(yte, (0, 1)).all():
            raise ValueError("multi-label targets must be 0/1 indicator matrices (N, classes)")
        constant = [c for c in range(ytr.shape[1]) if ytr[:, c].min() == ytr[:, c].max()]
        if constant:
            raise ValueError(f"train_labels: class columns {constant} have a single value in every "
                             "training image; each class needs positive and negative examples")
        svm = OneVsRestClassifier(LinearSVC(C=C, max_iter=max_iter)).fit(xtr, ytr)
        scores = svm.decision_function(xte)
        pred = (scores > 0).astype(int)
        onehot = yte
        recall = recall_score(yte, pred, average=None, zero_division=0.0)
        accuracy = float((pred == yte).mean())
    else:
        classes = np.unique(ytr)
        if len(classes) < 2:
            raise ValueError(f"train_labels has a single class ({classes[0]!r}); a linear SVM needs "
                             "at least 2 classes")
        svm = LinearSVC(C=C, max_iter=max_iter).fit(xtr, ytr)   # one-vs-rest for > 2 classes
        scores = svm.decision_function(xte)
        if scores.ndim == 1:  # two classes: one score, positive for classes[1]
            scores = np.stack([-scores, scores], 1)
        pred = classes[scores.argmax(1)]
        onehot = (yte[:, None] == classes[None, :]).astype(int)
        present = np.unique(yte)  # recall is defined for the classes that occur in the test set
        recall = recall_score(yte, pred, labels=present, average=None, zero_division=0.0)
        accuracy = float((pred == yte).mean())
    has_pos = onehot.sum(0) > 0  # average precision needs a positive test image per class
    ap = average_precision_score(onehot[:, has_pos], scores[:, has_pos], average="macro")
    return SVMResult(pred, scores, 100 * float(np.mean(recall)), 100 * float(ap), 100 * accuracy,
                     100 * np.asarray(recall), float(C), multilabel)


# --- sources: a training run or torchvision weights --------------------------------------------

@dataclass
class Source:
    """A trained net and the preprocessing its inputs need (``**source.preprocessing``)."""

    model: VGG
    preprocessing: dict
    name: str


_TORCHVISION_DEPTH = {8: "A", 10: "B", 13: "D", 16: "E"}  # conv layers -> configuration


def load_source(source) -> Source:
    """``source`` is the folder of a finished training run (``vgg_lib.train``) or a file
    holding a VGG state dict in torchvision's layout (``vgg11/13/16/19``, with or without
    ``_bn``: the configuration, width and input size are read from the tensors' shapes; its
    inputs are preprocessed as torchvision's ImageNet weights expect). ``ValueError`` for
    anything else, and for a run that did not finish."""
    from . import runs

    path = Path(str(source)).expanduser()
    if path.is_dir():
        if not (path / "summary.json").is_file():
            raise ValueError(f"source={str(path)!r} is not a run folder (no summary.json); expected the "
                             "folder of a finished training run or a torchvision state-dict file")
        status = runs.status(path)
        if status != "finished":
            raise ValueError(f"source={str(path)!r} is a run that has not finished (status {status!r}); "
                             "allowed: a finished run -- train it to the end first")
        run = runs.load_run(path)
        return Source(run.model, run.preprocessing, path.name)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        n = sum(1 for k, v in state.items() if k.startswith("features.") and getattr(v, "ndim", 0) == 4)
        if n not in _TORCHVISION_DEPTH:
            raise ValueError(f"source={str(path)!r} holds {n} conv weights: not a torchvision VGG "
                             f"state dict; allowed: vgg11/13/16/19 (8, 10, 13 or 16 conv layers)")
        bn = any(k.endswith("running_mean") for k in state)
        convs = [v for k, v in state.items() if k.startswith("features.") and v.ndim == 4]
        fcs = [v for v in state.values() if getattr(v, "ndim", 0) == 2]
        # Width and input size follow from the shapes: 64 * width channels in conv1_1, and
        # fc6 reads a (channels, side, side) pool5 map with side = input_size / 32.
        width = convs[0].shape[0] / 64
        side = round(math.sqrt(fcs[0].shape[1] / convs[-1].shape[0]))
        model = vgg(_TORCHVISION_DEPTH[len(convs)], num_classes=fcs[-1].shape[0], width=width,
                    batch_norm=bn, input_size=32 * side, init=None)
        return Source(load_torchvision_weights(model, state).eval(), dict(TORCHVISION_PREPROCESSING), path.name)
    raise ValueError(f"source={str(path)!r} does not exist; allowed: the folder of a finished training "
                     "run or a torchvision VGG state-dict file (.pth)")


# --- the alternative: fine-tune the whole net ---------------------------------------------------

def fine_tune(model: VGG, dataset, num_classes: int | None = None, *, mean, pixel_scale: float = 1.0,
              S=None, epochs: int = 3, lr: float = 1e-3, batch_size: int = 64,
              momentum: float = 0.9, weight_decay: float = 5e-4, seed: int = 0,
              progress: bool = True) -> VGG:
    """A copy of ``model`` with a fresh last layer for ``num_classes`` (default: the data set's)
    and *every* layer trained on ``dataset`` by the project's training loop (``loop.fit``: SGD
    with momentum and weight decay; the paper's training transform, Sect. 3.1: rescale to
    ``S``, random crop of the net's input size, flip; no colour shift). Not the paper's
    Appendix B, which keeps the net fixed; here for comparison."""
    from .data.loaders import augmented_loader
    from .loop import Loop, Recipe, TrainState, fit

    for name, v, ok in (("epochs", epochs, isinstance(epochs, int) and epochs >= 1),
                        ("lr", lr, isinstance(lr, (int, float)) and lr > 0),
                        ("batch_size", batch_size, isinstance(batch_size, int) and 1 <= batch_size <= len(dataset))):
        if not ok:
            allowed = {"lr": "a positive number", "batch_size": f"an int in [1, {len(dataset)}] (the data set's size)"}
            raise ValueError(f"{name}={v!r} is not allowed: {allowed.get(name, 'a positive int')}")
    num_classes = num_classes or getattr(dataset, "num_classes", None) or int(_labels(dataset).max()) + 1
    torch.manual_seed(seed)
    net = copy.deepcopy(model)
    old = net.classifier.fc8.weight
    net.classifier.fc8 = nn.Linear(old.shape[1], num_classes, device=old.device, dtype=old.dtype)
    nn.init.normal_(net.classifier.fc8.weight, std=0.01)
    nn.init.zeros_(net.classifier.fc8.bias)
    transform = train_transform(S or paper_scales(net, multi=False)[0], net.input_size, mean, colour_std=0.0,
                                pixel_scale=pixel_scale)
    loader = augmented_loader(dataset, transform, batch_size, seed)
    recipe = Recipe(lr=lr, momentum=momentum, weight_decay=weight_decay)
    fit(net, loader, epochs=epochs, state=TrainState.start(net.parameters(), recipe),
        loop=Loop(device=old.device, dtype=old.dtype, seed=seed, pixel_scale=pixel_scale, progress=progress))
    return net.eval()
