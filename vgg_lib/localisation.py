"""Object localisation (Appendix A): a VGG net whose last layer predicts a box.

A localisation net is a trained classification net (config D in the paper) whose last FC
layer, fc8, predicts a bounding box instead of class scores: one box shared by all classes
(*single-class regression*, SCR, 4 outputs) or one box per class (*per-class regression*, PCR,
``4 * classes`` outputs). A box is encoded as its centre, width and height relative to the
crop the net sees, ``(cx, cy, w, h) / crop`` (``encode_boxes``). The loss is Euclidean
(``box_loss``); the net starts from the classification net, the new fc8 random, and is
fine-tuned at lr 1e-3, either all layers or only the FC layers (``fine_tune_parameters``).

Two test protocols (Appendix A.2):

* **protocol 1** (comparing variants, Table 8): one centre crop per image, the box predicted for
  the ground-truth class (classification factored out); ``protocol1`` gives the error in
  percent, a box being right when its IoU with the ground truth exceeds 0.5;
* **protocol 2** (the full system, Tables 9-10): the net applied densely to the whole image,
  one box per window (and per class for PCR), each rated by the classification net's score of
  its class at that window, merged greedily as in OverFeat (``merge_boxes``); the union of the
  boxes of several localisation nets is merged. ``protocol2`` gives top-1 and top-5 errors:
  a guess is right when its class is the image's and its box has IoU > 0.5 with a ground-truth
  box.

Training targets are ``(N, 5)`` float tensors: the encoded box then the class label (a float
holding an integer), so that any training loop moving ``(x, target)`` batches can carry them;
``LocalisationData`` makes them from a data set with boxes (``Shapes.boxes()``).

``train_localiser`` does all of it for one localiser from a finished classification run on
``shapes`` and writes a run folder; the papermill job ``book/jobs/localise.ipynb`` and the
reference grid (``vgg_lib.experiments.localise_run``) both call it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou

from .data.transforms import TestTransform, TrainTransform, check_boxes, normalise, rescale, transform_box
from .models import VGG, init_weights

HEAD = "fc8"  # the layer replaced by the box regressor
FINE_TUNED_LAYERS = {"all": None, "fc": ("fc6", "fc7", HEAD)}  # Table 8's two settings
IOU_THRESHOLD = 0.5  # a box is right when IoU > 0.5 (ILSVRC's criterion)
PAPER_LR = 1e-3  # Appendix A.1: fine-tuning learning rate


# --- the net -----------------------------------------------------------------------------------

def localisation_net(source, per_class: bool, *, data=None) -> VGG:
    """A copy of a trained classification net with fc8 replaced by a random box regressor:
    4 outputs (SCR) or ``4 * classes`` (PCR, ``per_class=True``), Appendix A.1.

    ``source``: a ``VGG``, or a ``vgg_lib.runs.Run`` (``load_run``), whose training data set is
    then checked against ``data`` (the localisation data set, with ``.name`` and
    ``.num_classes``): a net trained on other data cannot localise these classes. With PCR the
    number of box sets must be the classification net's class count, which ``data`` must have.
    The net records its kind as ``net.per_class`` and ``net.box_classes``.
    """
    model = getattr(source, "model", source)
    if not isinstance(model, VGG):
        raise ValueError(f"source must be a vgg_lib VGG or a training Run, got {type(source).__name__}")
    if not isinstance(per_class, bool):
        raise ValueError(f"per_class must be True (PCR) or False (SCR), got {per_class!r}")
    trained_on = getattr(source, "params", {}).get("dataset")
    if data is not None and trained_on is not None and trained_on != data.name:
        raise ValueError(f"the source run was trained on {trained_on!r} but the localisation data is "
                         f"{data.name!r}; allowed: a classification run of the same data set")
    classes = model.num_classes
    if per_class and data is not None and data.num_classes != classes:
        raise ValueError(f"per-class regression needs one box per class of the classification net "
                         f"({classes}) but the localisation data has {data.num_classes} classes; "
                         f"allowed: data with {classes} classes, or per_class=False")
    net = copy.deepcopy(model)
    old = net.classifier.fc8
    head = nn.Linear(old.in_features, 4 * classes if per_class else 4,
                     device=old.weight.device, dtype=old.weight.dtype)
    net.classifier.fc8 = init_weights(head, "normal")  # the paper: the new layer starts random
    net.per_class, net.box_classes = per_class, classes
    return net


def fine_tune_parameters(net: nn.Module, layers: str = "all") -> list[nn.Parameter]:
    """What fine-tuning updates (Table 8): ``"all"`` layers, or ``"fc"``: fc6, fc7 and the new
    box head (the conv layers frozen)."""
    if layers not in FINE_TUNED_LAYERS:
        raise ValueError(f"layers={layers!r}; allowed: {', '.join(map(repr, FINE_TUNED_LAYERS))}")
    names = FINE_TUNED_LAYERS[layers]
    if names is None:
        return list(net.parameters())
    return [p for name in names for p in getattr(net.classifier, name).parameters()]


# --- boxes and targets ---------------------------------------------------------------------------

def encode_boxes(boxes, size: int) -> torch.Tensor:
    """``(x0, y0, x1, y1)`` pixels of a ``size`` x ``size`` crop -> ``(cx, cy, w, h) / size``."""
    return box_convert(torch.as_tensor(boxes, dtype=torch.float32), "xyxy", "cxcywh") / size


def decode_boxes(encoded: torch.Tensor, size: int) -> torch.Tensor:
    """The inverse of ``encode_boxes``: ``(x0, y0, x1, y1)`` in pixels of the crop."""
    return box_convert(encoded * size, "cxcywh", "xyxy")


def select_boxes(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The box of each row's class: ``(N, 4)`` as is (SCR), or the ``labels[i]``-th of the
    ``(N, 4 * C)`` per-class boxes (PCR)."""
    labels = torch.as_tensor(labels, device=outputs.device).long()
    if outputs.dim() != 2 or outputs.shape[1] % 4:
        raise ValueError(f"box outputs must be (N, 4) or (N, 4 * classes), got {tuple(outputs.shape)}")
    if outputs.shape[1] == 4:
        return outputs
    classes = outputs.shape[1] // 4
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < classes):
        raise ValueError(f"labels must be in [0, {classes}) for {classes} per-class boxes, got "
                         f"{int(labels.min())}..{int(labels.max())}")
    return outputs.reshape(len(outputs), classes, 4)[torch.arange(len(outputs), device=outputs.device), labels]


def box_loss(outputs: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Appendix A.1's Euclidean loss: the squared distance between the predicted box of the
    ground-truth class and the ground truth (encoded), averaged (or summed: ``reduction="sum"``,
    what ``loop.fit`` takes) over the batch. ``target``: ``(N, 5)``, the encoded box then the label."""
    diff = select_boxes(outputs, target[:, 4]) - target[:, :4].to(outputs.dtype)
    per_box = diff.pow(2).sum(1)
    return per_box.sum() if reduction == "sum" else per_box.mean()


def box_loss_sum(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``box_loss`` summed over the batch: the ``loss_fn`` of ``loop.fit``."""
    return box_loss(outputs, target, reduction="sum")


def matched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[i]`` with ``b[i]`` (boxes ``(N, 4)`` as ``x0, y0, x1, y1``): ``box_iou``'s
    diagonal (N x N values for N wanted: nothing for a batch of a few hundred)."""
    return box_iou(a, b).diagonal()


def box_errors(outputs: torch.Tensor, target: torch.Tensor) -> int:
    """How many boxes of the ground-truth class have IoU <= 0.5 with the ground truth (the
    ``error_fn`` of the training loop, and protocol 1's count). IoU does not change with
    scale, so the encoded boxes are compared directly."""
    pred = decode_boxes(select_boxes(outputs.detach().float(), target[:, 4]), 1)
    return int((matched_iou(pred, decode_boxes(target[:, :4].float(), 1)) <= IOU_THRESHOLD).sum())


def box_correct(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[boxes with IoU > 0.5]`` of a batch, on the device: the ``correct_fn`` of ``loop.fit``,
    whose ``*_top1_err`` columns are then localisation errors in percent."""
    pred = decode_boxes(select_boxes(outputs.detach().float(), target[:, 4]), 1)
    return (matched_iou(pred, decode_boxes(target[:, :4].float(), 1)) > IOU_THRESHOLD).sum().reshape(1)


class LocalisationData(torch.utils.data.Dataset):
    """``(x, target)`` items for a localisation net: ``x`` the transformed, normalised image,
    ``target`` float32 ``(5,)``: its box mapped through the same geometry and encoded
    (``encode_boxes``), then its label.

    ``dataset`` yields ``(uint8 (3, H, W), label)`` with its own transform unset; ``boxes``
    (default ``dataset.boxes()``) holds one ``(x0, y0, x1, y1)`` per image in its pixels.
    ``transform``: a ``TrainTransform`` (random crop and flip: training) or a ``TestTransform``
    with a crop (protocol 1's centre crop).
    """

    def __init__(self, dataset, transform, boxes=None, pixel_scale: float | None = None):
        if not isinstance(transform, (TrainTransform, TestTransform)) or getattr(transform, "crop", None) is None:
            raise ValueError("transform must be a TrainTransform or a TestTransform with a crop: the "
                             "box is encoded relative to a fixed-size crop")
        self.dataset, self.transform = dataset, transform
        self.boxes = torch.as_tensor(dataset.boxes() if boxes is None else boxes, dtype=torch.float64)
        if self.boxes.shape != (len(dataset), 4):
            raise ValueError(f"boxes must be (N, 4) with one box per image ({len(dataset)}), got "
                             f"{tuple(self.boxes.shape)}")
        images = getattr(dataset, "images", None)  # an ArrayDataset: one image size, checked now
        if images is not None:
            check_boxes(self.boxes, *images.shape[-2:])
        self.pixel_scale = transform.pixel_scale if pixel_scale is None else pixel_scale
        self.name, self.num_classes = getattr(dataset, "name", "?"), getattr(dataset, "num_classes", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        img = self.dataset.image(index) if hasattr(self.dataset, "image") else self.dataset[index][0]
        label = self.dataset.label(index) if hasattr(self.dataset, "label") else self.dataset[index][1]
        H, W = img.shape[-2:]
        t = self.transform
        if isinstance(t, TrainTransform):
            p = t.sample(H, W)
            crop, offset = t.apply_split(img, p)
            geometry = t.geometry(H, W, p)
        else:
            crop, offset = t.split(img)
            geometry = t.geometry(H, W)
        box = transform_box(self.boxes[index], geometry)
        target = torch.cat([encode_boxes(box, t.crop), torch.tensor([float(label)])])
        return normalise(crop, offset, self.pixel_scale), target


# --- protocol 1: centre crop, ground-truth class -------------------------------------------------

@torch.no_grad()
def protocol1(net: nn.Module, batches) -> float:
    """Appendix A.2's first protocol: localisation error in percent of the box predicted for
    the ground-truth class on one centre crop per image (``batches`` of ``(x, target)``, e.g. a
    ``DataLoader`` over ``LocalisationData(dataset, test_transform(Q, mean, crop=...))``)."""
    was = net.training
    net.eval()
    try:
        wrong = total = 0
        device = next(net.parameters()).device
        for x, target in batches:
            wrong += box_errors(net(x.to(device)).cpu(), target)
            total += len(target)
    finally:
        net.train(was)
    if not total:
        raise ValueError("protocol1: no images in batches")
    return 100.0 * wrong / total


# --- training ------------------------------------------------------------------------------------

def fine_tune_localiser(net: VGG, train_loader, val_loader=None, *, layers: str = "all", epochs: int,
                        lr: float = PAPER_LR, **fit_kwargs) -> list[dict]:
    """Fine-tune a ``localisation_net`` with the project's training loop (``loop.fit``): the
    Euclidean ``box_loss``, IoU > 0.5 as a correct box, and only the layers chosen (``"all"``
    or ``"fc"``, Table 8); the paper's lr is 1e-3. Loaders yield ``(x, target)`` as
    ``LocalisationData`` makes them. Returns ``fit``'s per-epoch history (``val_top1_err``: the
    localisation error in percent, protocol 1)."""
    if not hasattr(net, "per_class"):
        raise ValueError("net must come from localisation_net(...): a VGG with a box head")
    parameters = fine_tune_parameters(net, layers)
    from .loop import Recipe, TrainState, fit  # the shared loop; imported here so this module loads without it

    fitted = fit(net, train_loader, val_loader, epochs=epochs, state=TrainState.start(parameters, Recipe(lr=lr)),
                 loss_fn=box_loss_sum, correct_fn=box_correct, **fit_kwargs)
    if fitted.stop_reason == "diverged":  # a localiser that blew up has no box to test
        f = fitted.failure or {}
        raise RuntimeError(f"fine-tuning the localiser diverged (non-finite loss at epoch {f.get('epoch', '?')}, "
                           f"step {f.get('step', '?')}) at lr {lr:g}; allowed: a lower learning rate")
    return fitted.history


# --- protocol 2: dense boxes, greedy merging -----------------------------------------------------

def merge_boxes(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                threshold: float = IOU_THRESHOLD) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy merging after OverFeat (Sermanet et al., 2014, Sect. 4.3), as Appendix A.2 uses it.

    The rule implemented: every box starts as its own group. Repeatedly, among pairs of groups
    *of the same label*, take the pair whose boxes overlap most (highest IoU); if that IoU
    exceeds ``threshold``, merge them: the group's box is the mean of the coordinates of all the
    boxes it holds, its score the sum of their scores (OverFeat adds up the class scores of the
    windows behind a merged box). Stop when no pair of the same label passes the threshold.
    (OverFeat's own match score mixes centre distance and intersection area; IoU is the
    scale-free version of the same "spatially close" test.)

    ``boxes``: ``(K, 4)`` as ``x0, y0, x1, y1``; ``scores``, ``labels``: ``(K,)``. Returns the
    merged ``(boxes, scores, labels)``, highest score first (ties in input order).
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    scores = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    labels = torch.as_tensor(labels).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"boxes, scores and labels must have one row per box, got {len(boxes)}, "
                         f"{len(scores)}, {len(labels)}")
    sums, counts = boxes.clone(), torch.ones(len(boxes), dtype=torch.float64)
    score, label = scores.clone(), labels.clone()
    while len(sums) > 1:
        iou = box_iou(sums / counts[:, None], sums / counts[:, None])
        iou[label[:, None] != label[None, :]] = -1.0  # boxes of different classes never merge
        iou.fill_diagonal_(-1.0)
        best = int(iou.argmax())
        i, j = divmod(best, len(sums))
        if not iou[i, j] > threshold:
            break
        keep = torch.arange(len(sums)) != j
        sums[i], counts[i], score[i] = sums[i] + sums[j], counts[i] + counts[j], score[i] + score[j]
        sums, counts, score, label = sums[keep], counts[keep], score[keep], label[keep]
    order = score.argsort(descending=True, stable=True)  # ties keep the input order
    return (sums / counts[:, None])[order], score[order], label[order]


def _fcn(net: VGG) -> nn.Module:
    from .evaluate import fcn_of  # the cached fully-convolutional copy (Sect. 3.2)

    return fcn_of(net)


@torch.no_grad()
def dense_boxes(localiser: VGG, classifier: VGG, image: torch.Tensor, Q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The localisation net applied densely (fully convolutionally) to ``image`` rescaled so
    its smallest side is ``Q``: one box per window and class, ``(K, C, 4)`` in the pixels of
    ``image`` (SCR's single box repeated for every class), and each window's class posteriors
    from the classification net at the same scale, ``(K, C)``.

    ``image``: a normalised float ``(3, H, W)``. Window ``(i, j)`` of the score maps is the
    ``input_size`` crop at ``(i, j) * 2**pools`` of the rescaled image: the net's own crop, in
    which its boxes are encoded.
    """
    _check_nets([localiser], classifier)
    if localiser.input_size != classifier.input_size or localiser.pools != classifier.pools:
        raise ValueError("the localisation and classification nets must share input_size and pools "
                         "(their dense maps must cover the same windows)")
    H, W = image.shape[-2:]
    x = rescale(image[None].to(next(localiser.parameters()).device), Q)
    h, w = x.shape[-2:]
    loc = _fcn(localiser).eval()(x)[0].float().cpu()  # (4 or 4C, m, n)
    cls = F.softmax(_fcn(classifier).eval()(x.to(next(classifier.parameters()).device))[0].float().cpu(), dim=0)
    if loc.shape[-2:] != cls.shape[-2:]:
        raise ValueError(f"dense maps differ: {tuple(loc.shape[-2:])} boxes, {tuple(cls.shape[-2:])} scores")
    C, (m, n) = cls.shape[0], loc.shape[-2:]
    per_window = loc.permute(1, 2, 0).reshape(m * n, -1, 4)  # (K, 1 or C, 4)
    stride, crop = 2 ** localiser.pools, localiser.input_size
    rows, cols = torch.meshgrid(torch.arange(m), torch.arange(n), indexing="ij")
    shift = torch.stack([cols, rows, cols, rows], -1).reshape(m * n, 1, 4).float() * stride
    boxes = decode_boxes(per_window, crop) + shift  # pixels of the rescaled image
    boxes = boxes * torch.tensor([W / w, H / h, W / w, H / h])  # pixels of the image
    boxes = torch.stack([boxes[..., 0].clamp(0, W), boxes[..., 1].clamp(0, H),
                         boxes[..., 2].clamp(0, W), boxes[..., 3].clamp(0, H)], -1)
    return boxes.expand(m * n, C, 4), cls.permute(1, 2, 0).reshape(m * n, C)


def _check_nets(localisers: Sequence[VGG], classifier: VGG) -> None:
    for net in localisers:
        if not hasattr(net, "per_class"):
            raise ValueError("localisers must come from localisation_net(...): VGGs with a box head")
        if net.box_classes != classifier.num_classes:
            raise ValueError(f"a localisation net was made for {net.box_classes} classes but the "
                             f"classification net has {classifier.num_classes}; allowed: nets of the same data")


def localise(localisers: Sequence[VGG], classifier: VGG, image: torch.Tensor, scales=(256,), k: int = 5,
             threshold: float = IOU_THRESHOLD) -> list[tuple[int, torch.Tensor, float]]:
    """Protocol 2 on one image: the ``k`` guesses ``(class, box, score)``, best first.

    The boxes of every localisation net at every scale are pooled (their union), the classes
    are the classification net's top ``k`` by the mean posterior over all windows, and for each
    of those classes its boxes are merged (``merge_boxes``); the class's box is the merged box
    with the highest summed score.
    """
    _check_nets(localisers, classifier)
    return merged_guesses(*pooled_boxes(localisers, classifier, image, scales), k, threshold)


def pooled_boxes(localisers: Sequence[VGG], classifier: VGG, image: torch.Tensor, scales) -> tuple[torch.Tensor, torch.Tensor]:
    """The union of ``dense_boxes`` of every localisation net at every scale: boxes ``(K, C, 4)``
    and their windows' class posteriors ``(K, C)`` -- what protocol 2 merges."""
    boxes, scores = zip(*[dense_boxes(net, classifier, image, q) for net in localisers for q in scales])
    return torch.cat(boxes), torch.cat(scores)


def merged_guesses(boxes: torch.Tensor, scores: torch.Tensor, k: int = 5,
                   threshold: float = IOU_THRESHOLD) -> list[tuple[int, torch.Tensor, float]]:
    """Protocol 2's guesses from pooled boxes: the top ``k`` classes by mean posterior, each
    with the best of its merged boxes (``localise``)."""
    top = scores.mean(0).argsort(descending=True)[:k]
    guesses = []
    for c in top.tolist():
        merged, total, _ = merge_boxes(boxes[:, c], scores[:, c], torch.zeros(len(boxes)), threshold)
        guesses.append((c, merged[0], float(total[0])))
    return guesses


def protocol2(localisers: Sequence[VGG], classifier: VGG, images, gt_boxes, labels, scales=(256,),
              threshold: float = IOU_THRESHOLD) -> dict[str, float]:
    """Appendix A.2's full system: top-1 and top-5 localisation errors in percent.

    ``images``: normalised float ``(3, H, W)`` tensors (any sizes); ``gt_boxes``: per image an
    ``(m, 4)`` array of its ground-truth boxes in its pixels (ILSVRC lists every instance);
    ``labels``: its class. A guess is right when its class is the label and its box has
    IoU > 0.5 with one of the ground-truth boxes.
    """
    localisers = list(localisers)
    _check_nets(localisers, classifier)
    if not (len(images) == len(gt_boxes) == len(labels)) or not len(images):
        raise ValueError(f"images, gt_boxes and labels must be as many and not empty, got "
                         f"{len(images)}, {len(gt_boxes)}, {len(labels)}")
    gts = []
    for img, gt in zip(images, gt_boxes):
        gt = torch.as_tensor(gt, dtype=torch.float64).reshape(-1, 4)
        check_boxes(gt, *img.shape[-2:])
        gts.append(gt)
    wrong = {1: 0, 5: 0}
    for img, gt, label in zip(images, gts, labels):
        guesses = localise(localisers, classifier, img, scales, 5, threshold)
        right = [c == int(label) and bool((box_iou(box[None], gt) > IOU_THRESHOLD).any()) for c, box, _ in guesses]
        wrong[1] += not any(right[:1])
        wrong[5] += not any(right[:5])
    return {"top1_loc_error": 100.0 * wrong[1] / len(images), "top5_loc_error": 100.0 * wrong[5] / len(images)}


# --- one localiser end to end: the papermill job (book/jobs/localise.ipynb) and the reference
# grid (vgg_lib.experiments) both call these, so a localiser is trained and tested one way ---------

PARAMS = ("per_class", "layers", "S", "epochs", "lr", "batch_size", "train_size", "val_size",
          "protocol2_size", "protocol2_scales", "examples", "seed")
EXAMPLE_GUESSES = 5  # protocol 2's top-5


def source_problem(run) -> str | None:
    """Why a finished classification run cannot be a localiser's source, or None: its data set
    must be ``shapes``, the one with ground-truth boxes."""
    trained_on = run.params.get("dataset")
    if trained_on != "shapes":
        return (f"a classification run on shapes (the data with ground-truth boxes); this one was "
                f"trained on {trained_on!r}")
    return None


def _data_kwargs(run) -> dict:
    return dict(root=run.params.get("data_root"), image_size=run.params.get("image_size"))


def validation_images(run, size: int):
    """The first ``size`` images of the ``shapes`` validation split at the source run's image size
    (deterministic: the same images for every localiser and for the book's figures)."""
    from .data import build_dataset

    return build_dataset("shapes", "val", size=size, **_data_kwargs(run))


def protocol2_inputs(run, val_set, S: int, n: int):
    """Protocol 2's inputs for the first ``n`` images of ``val_set``: each image rescaled to
    smallest side ``S`` and normalised as the source net's inputs, its box in those pixels
    ``(n, 1, 4)``, its label."""
    from .data import test_transform

    rescale_to_S = test_transform(S, mean=run.mean, pixel_scale=run.pixel_scale)
    images = [rescale_to_S(val_set[i][0]) for i in range(n)]
    boxes = torch.as_tensor(val_set.boxes()[:n], dtype=torch.float64) * S / val_set.images.shape[-1]
    return images, boxes[:, None], torch.as_tensor(val_set.labels[:n])


def dense_examples(localisers: Sequence[VGG], classifier: VGG, images, gt_boxes, labels, scales,
                   threshold: float = IOU_THRESHOLD) -> dict:
    """Protocol 2 on a few images, kept whole for figures: every pooled box and score before
    merging (``raw_boxes`` ``(n, K, C, 4)``, ``raw_scores`` ``(n, K, C)``) and the top-5 guesses
    after it (``guess_classes``, ``guess_boxes``, ``guess_scores``), in the pixels of ``images``."""
    out = {k: [] for k in ("raw_boxes", "raw_scores", "guess_classes", "guess_boxes", "guess_scores")}
    for image in images:
        boxes, scores = pooled_boxes(localisers, classifier, image, scales)
        guesses = merged_guesses(boxes, scores, EXAMPLE_GUESSES, threshold)
        out["raw_boxes"].append(boxes.numpy().astype("float32"))
        out["raw_scores"].append(scores.numpy().astype("float32"))
        out["guess_classes"].append([c for c, _, _ in guesses])
        out["guess_boxes"].append(torch.stack([b for _, b, _ in guesses]).numpy().astype("float32"))
        out["guess_scores"].append([s for _, _, s in guesses])
    out = {k: np.asarray(v) for k, v in out.items()}
    out["gt_boxes"] = torch.as_tensor(gt_boxes, dtype=torch.float64).reshape(len(images), 4).numpy()
    out["labels"] = np.asarray(labels, dtype=np.int64)
    return out


def evaluate_localisers(localisers: Sequence[VGG], run, params: dict, out=None) -> dict:
    """Protocol 2 (top-1 and top-5 errors, %) of ``localisers`` (their boxes pooled) with the
    source run's net as the classifier, on the first ``params["protocol2_size"]`` validation
    images at ``params["protocol2_scales"]`` (None: ``S``); with ``params["examples"]`` and
    ``out``, also ``out/examples.npz`` (``dense_examples`` of the first images, with what
    rebuilds them: ``val_size``, ``image_size`` and ``pixels_per_image_pixel``)."""
    from .atomic import write_atomic

    S, n = params["S"], params["protocol2_size"]
    scales = tuple(params.get("protocol2_scales") or (S,))
    val_set = validation_images(run, params["val_size"])
    m = params.get("examples") if out is not None else 0
    # one rescaled set for both: the examples are the first images of protocol 2's
    images, boxes, labels = protocol2_inputs(run, val_set, S, min(max(n, m or 0), len(val_set)))
    results = {}
    if n:
        t0 = time.perf_counter()
        results = protocol2(localisers, run.model, images[:n], boxes[:n], labels[:n], scales=scales)
        results.update(protocol2_images=len(images[:n]), protocol2_scales=list(scales),
                       protocol2_seconds=round(time.perf_counter() - t0, 1))
    if m:
        images, boxes, labels = images[:m], boxes[:m], labels[:m]
        record = dense_examples(localisers, run.model, images, boxes, labels, scales)
        record.update(indices=np.arange(len(images)), val_size=np.int64(len(val_set)),
                      image_size=np.int64(val_set.images.shape[-1]),
                      pixels_per_image_pixel=np.float64(S / val_set.images.shape[-1]),
                      classes=np.asarray(run.classes), scales=np.asarray(scales))
        write_atomic(Path(out) / "examples.npz", lambda f: np.savez_compressed(f, **record))
    return results


def train_localiser(run, params: dict, out, *, device="cpu", max_steps: int | None = None) -> dict:
    """Fine-tune and test ONE localiser from the finished classification run ``run``
    (``runs.load_run``) and write its run folder ``out``: ``params.json`` (``params``),
    ``metrics.csv`` (per epoch), ``checkpoint.pt``, ``results_localisation.json``, ``examples.npz``
    (``params["examples"]`` images, see ``evaluate_localisers``) and last ``summary.json``
    (status finished). Returns the results: protocol 1's error on the ``val_size`` validation
    images, protocol 2's top-1/top-5 errors (``evaluate_localisers``), all in percent.

    ``params`` holds at least ``PARAMS``: SCR or PCR (``per_class``), the fine-tuned ``layers``,
    the scale ``S`` of training and testing, the plateau schedule's epoch cap and its ``lr``,
    batch size, image counts and ``seed``. ``max_steps`` cuts training short (tests).
    """
    from .data import build_dataset, test_transform, train_transform
    from .loop import Loop
    from .runs import RunFolder

    missing = [k for k in PARAMS if k not in params]
    if missing:
        raise ValueError(f"localiser parameters miss {', '.join(missing)}; needed: {', '.join(PARAMS)}")
    problem = source_problem(run)
    if problem:
        raise ValueError(f"source={str(run.path)!r} is not allowed: {problem}")
    p, dev = params, torch.device(device)
    S, seed = p["S"], p["seed"]
    train_set = build_dataset("shapes", "train", size=p["train_size"], **_data_kwargs(run))
    val_set = validation_images(run, p["val_size"])
    pre = dict(mean=run.mean, pixel_scale=run.pixel_scale)
    # random crops and flips as in Sect. 3.1; no colour shift (it does not move a box)
    train_data = LocalisationData(train_set, train_transform(S, run.crop, colour_std=0.0, **pre))
    val_data = LocalisationData(val_set, test_transform(S, crop=run.crop, **pre))  # protocol 1's centre crop
    loader = torch.utils.data.DataLoader(train_data, batch_size=p["batch_size"], shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed))
    val_loader = torch.utils.data.DataLoader(val_data, batch_size=p["batch_size"])
    torch.manual_seed(seed)
    net = localisation_net(run, p["per_class"], data=train_set).to(dev)
    t0 = time.perf_counter()
    history = fine_tune_localiser(net, loader, val_loader, layers=p["layers"], epochs=p["epochs"], lr=p["lr"],
                                  loop=Loop(device=dev, seed=seed, max_steps=max_steps))
    seconds = time.perf_counter() - t0
    net = net.cpu().eval()
    results = {"protocol1_error": protocol1(net, val_loader), "protocol1_images": len(val_data)}
    results.update(evaluate_localisers([net], run, p, out))
    results.update(seconds=round(seconds, 1), epochs_done=len(history),
                   lr_decreases=sum(a["lr"] > b["lr"] for a, b in zip(history, history[1:])))
    folder = RunFolder(out)
    folder.write_params(p)
    folder.write_metrics(history)
    folder.write_checkpoint({"model": net.state_dict(), "per_class": p["per_class"], "layers": p["layers"],
                             "source": str(run.path)})
    folder.write_results("localisation", {**results, "unit": "percent"})
    folder.write_summary("finished", **results)  # last: a folder with a summary is complete
    return results


def load_localiser(run_dir, source) -> VGG:
    """The fine-tuned localiser of a finished ``train_localiser`` folder, rebuilt on the
    classification net ``source`` (a ``Run`` or ``VGG``) it was made from, in eval mode."""
    from .runs import load_checkpoint, status

    run_dir = Path(run_dir)
    if status(run_dir) != "finished" or not (run_dir / "checkpoint.pt").is_file():
        raise ValueError(f"{run_dir.name} is not a finished localiser (no checkpoint.pt or summary.json)")
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    net = localisation_net(source, bool(ckpt["per_class"]))
    net.load_state_dict(ckpt["model"])
    return net.eval()
