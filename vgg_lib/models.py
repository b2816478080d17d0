"""The VGG network (Sect. 2), its fully-convolutional form (Sect. 3.2) and initialisation (Sect. 3.1).

Layers are named as in the paper's figures and in Caffe's release: ``conv3_2`` is the second
convolution of block 3, ``pool5`` the last max-pool, ``fc6``/``fc7``/``fc8`` the three
fully-connected layers. ``model.features.conv5_3`` reads like the paper.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections import OrderedDict

import torch
from torch import nn

from .configs import CONFIGS, FC_WIDTH, conv_spec, resolve

# AlexNet's local response normalisation (Krizhevsky et al., 2012, Sect. 3.3).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def local_response_norm() -> nn.LocalResponseNorm:
    """AlexNet's LRN as used by A-LRN (Sect. 2.2): n=5, alpha=1e-4, beta=0.75, k=2.

    AlexNet writes ``b = a / (k + alpha * sum_{n neighbours} a^2) ** beta``.
    PyTorch's ``nn.LocalResponseNorm(size, alpha, beta, k)`` divides alpha by the window:
    ``b = a / (k + alpha / size * sum a^2) ** beta``. To reproduce AlexNet's formula one
    must therefore pass ``alpha = 1e-4 * 5 = 5e-4``. (Caffe's LRN layer, which the paper's
    authors used, also divides by the window size, so Caffe's ``alpha: 0.0001`` equals
    PyTorch's ``alpha=1e-4``.) We follow AlexNet's paper, the source A-LRN cites:
    ``alpha = LRN_ALPHA * LRN_SIZE``.
    """
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def make_features(config: list, width: float = 1.0, batch_norm: bool = False,
                  pools: int = 5) -> nn.Sequential:
    """One function turns a Table 1 column into layers (cf. torchvision's ``make_layers``).

    ``pools < 5`` keeps only the first ``pools`` max-poolings (the book's miniature geometry);
    blocks keep their numbers, so ``conv4_1`` is ``conv4_1`` whatever the pooling."""
    layers: list[tuple[str, nn.Module]] = []
    in_channels, block, index = 3, 1, 0
    for item in config:
        if item == "M":
            if block <= pools:
                layers.append((f"pool{block}", nn.MaxPool2d(kernel_size=2, stride=2)))
            block, index = block + 1, 0
        elif item == "LRN":
            layers.append((f"norm{block}", local_response_norm()))
        else:
            k, c = conv_spec(item)
            c = _scaled(c, width)
            index += 1
            tag = f"{block}_{index}"
            layers.append((f"conv{tag}", nn.Conv2d(in_channels, c, kernel_size=k, padding=(k - 1) // 2)))
            if batch_norm:
                layers.append((f"bn{tag}", nn.BatchNorm2d(c)))
            layers.append((f"relu{tag}", nn.ReLU(inplace=True)))
            in_channels = c
    return nn.Sequential(OrderedDict(layers))


def make_classifier(in_features: int, fc_width: int, num_classes: int, dropout: float) -> nn.Sequential:
    """FC-4096, FC-4096, FC-num_classes; dropout after the first two (Sect. 3.1)."""
    return nn.Sequential(OrderedDict([
        ("fc6", nn.Linear(in_features, fc_width)),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(dropout)),
        ("fc7", nn.Linear(fc_width, fc_width)),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(dropout)),
        ("fc8", nn.Linear(fc_width, num_classes)),
    ]))


class VGG(nn.Module):
    """A VGG network: ``features`` (the conv stack) then ``classifier`` (the FC layers).

    The forward pass returns class scores (logits); the soft-max lives in the loss or in
    ``vgg_lib.evaluate``. The first FC layer expects the feature map of an
    ``input_size`` x ``input_size`` image (7x7 at 224); for other sizes use
    ``fully_convolutional(model)``, which is how the paper tests (Sect. 3.2).
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, *, config: str,
                 input_size: int = 224, width: float = 1.0, batch_norm: bool = False,
                 pools: int = 5):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.config = config
        self.input_size = input_size
        self.width = width
        self.batch_norm = batch_norm
        self.pools = pools

    @property
    def feature_size(self) -> int:
        """Side of the last feature map for an ``input_size`` image (``pools`` 2x2 poolings)."""
        return self.input_size // 2 ** self.pools

    @property
    def num_classes(self) -> int:
        return self.classifier.fc8.out_features

    @property
    def args(self) -> dict:
        """The arguments of ``vgg`` that build this network again (a checkpoint's ``model_args``,
        which ``runs.load_run`` passes back to ``vgg``)."""
        return dict(name=self.config, num_classes=self.num_classes, width=self.width, batch_norm=self.batch_norm,
                    dropout=self.classifier.drop6.p, input_size=self.input_size, pools=self.pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        s = self.feature_size
        if x.shape[-2:] != (s, s):
            raise ValueError(
                f"VGG({self.config}) was built for {self.input_size}x{self.input_size} inputs "
                f"({s}x{s} after pool5) but got a {tuple(x.shape[-2:])} feature map; "
                f"crop the image to {self.input_size} or use fully_convolutional(model)")
        return self.classifier(torch.flatten(x, 1))

    def extra_repr(self) -> str:
        return (f"config={self.config!r}, input_size={self.input_size}, width={self.width}, "
                f"batch_norm={self.batch_norm}" + (f", pools={self.pools}" if self.pools != 5 else ""))


def vgg(name: str = "D", num_classes: int = 1000, width: float = 1.0, batch_norm: bool = False,
        dropout: float = 0.5, input_size: int = 224, init: str | None = "normal",
        pools: int = 5, device: str | torch.device | None = None) -> VGG:
    """Build configuration ``name`` of Table 1 (``"A"``, ``"A-LRN"``, ``"B"``, ``"C"``, ``"D"``,
    ``"E"``, ``"B-5x5"`` or torchvision's ``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``).

    ``width`` scales every conv layer's channels and the FC width (``width=1/8`` gives a net
    with the paper's depth and geometry that trains on a laptop CPU); ``input_size`` is the
    training crop (224 in the paper; 32 for small images, where pool5 is 1x1).
    ``batch_norm`` is *not* in the paper (it came a year later); it is offered because deep
    nets train from scratch with it. ``init`` is a scheme of ``init_weights`` or ``None``.

    ``pools`` (not in the paper): how many of the five max-poolings to keep, from the first.
    The book's miniature uses ``pools=3`` at a 32-pixel crop: pool5 is then 4x4 instead of 1x1,
    so the fully-convolutional net's fc6 window spans 4 output strides (7 in the paper) and
    dense evaluation (Sect. 3.2) slides overlapping windows as it does at full scale.

    ``device``: where the parameters are created (default: torch's default device). On
    ``"meta"`` they have shapes but no storage (and ``init`` is skipped): a full-size net to
    count or tabulate (``analysis.count_params``, ``analysis.layer_table``) costs nothing
    instead of 500 MB.
    """
    config = resolve(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"width must be a number > 0 (e.g. 1.0 for the paper, 0.125 for CPU), got {width!r}")
    if not isinstance(pools, int) or isinstance(pools, bool) or not 0 <= pools <= 5:
        raise ValueError(f"pools must be an integer in [0, 5] (the paper: 5), got {pools!r}")
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 2 ** pools:
        raise ValueError(f"input_size must be an integer >= {2 ** pools} ({pools} 2x2 poolings), "
                         f"got {input_size!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if init is not None and init not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)} or None, got {init!r}")
    try:
        place = torch.device(device) if device is not None else contextlib.nullcontext()
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'meta'): {e}") from None

    with place:
        features = make_features(CONFIGS[config], width, batch_norm, pools)
        channels = [m.out_channels for m in features if isinstance(m, nn.Conv2d)][-1]
        side = input_size // 2 ** pools
        classifier = make_classifier(channels * side * side, _scaled(FC_WIDTH, width), num_classes, dropout)
    model = VGG(features, classifier, config=config, input_size=input_size, width=width,
                batch_norm=batch_norm, pools=pools)
    # meta tensors hold no values: initialising them only costs time (2 s on first use)
    if init is not None and not next(model.parameters()).is_meta:
        init_weights(model, init)
    return model


# --- Sect. 3.2: the fully-convolutional net used at test time -------------------------------

class FullyConvolutionalVGG(nn.Module):
    """A ``VGG`` whose FC layers became convolutions: fc6 -> 7x7 conv, fc7/fc8 -> 1x1 convs.

    Applied to an image of any size (at least ``input_size``) it returns a class-score map
    of shape ``(N, num_classes, h, w)``; the paper averages it spatially (Sect. 3.2).
    """

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, *, config: str,
                 input_size: int):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.config = config
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def fully_convolutional(model: VGG) -> FullyConvolutionalVGG:
    """The same weights with the FC layers as convolutions (a copy; ``model`` is untouched)."""
    if not isinstance(model, VGG):
        raise TypeError(f"fully_convolutional expects a vgg_lib VGG, got {type(model).__name__}")
    side = model.feature_size
    layers = []
    for name, module in model.classifier.named_children():
        if isinstance(module, nn.Linear):
            k = side if name == "fc6" else 1
            # On the layer's own device and dtype: a CUDA or bf16 model stays one.
            conv = nn.Conv2d(module.in_features // (k * k), module.out_features, kernel_size=k,
                             device=module.weight.device, dtype=module.weight.dtype)
            with torch.no_grad():
                # torch.flatten orders features as (channel, row, column): a plain reshape.
                conv.weight.copy_(module.weight.reshape(conv.weight.shape))
                conv.bias.copy_(module.bias)
            layers.append((name, conv))
        else:
            layers.append((name, copy.deepcopy(module)))
    fcn = FullyConvolutionalVGG(copy.deepcopy(model.features), nn.Sequential(OrderedDict(layers)),
                                config=model.config, input_size=model.input_size)
    return fcn.train(model.training)


# --- Sect. 3.1: initialisation ----------------------------------------------------------------

INIT_SCHEMES = ("normal", "glorot", "kaiming")


def init_weights(model: nn.Module, scheme: str = "normal", std: float = 0.01) -> nn.Module:
    """Initialise every conv and FC layer in place; biases are zero (Sect. 3.1).

    * ``"normal"``: weights from N(0, std^2). The paper says "zero mean and 10^-2 variance",
      which read literally is std = 0.1; the released Caffe models and most
      re-implementations use std = 0.01 (variance 10^-4). We default to 0.01 and let
      ``std`` choose; the Training chapter tries both.
    * ``"glorot"``: Glorot & Bengio (2010) uniform, which the paper notes (Sect. 3.1) made
      pre-training unnecessary.
    * ``"kaiming"``: He et al. (2015) normal, fan-out, for ReLU (what torchvision uses).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"init scheme must be one of {', '.join(INIT_SCHEMES)}, got {scheme!r}")
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "normal":
                nn.init.normal_(m.weight, 0.0, std)
            elif scheme == "glorot":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def init_from(model: VGG, source: VGG, n_conv: int = 4) -> VGG:
    """The paper's pre-initialisation (Sect. 3.1): copy the first ``n_conv`` conv layers and the
    three FC layers of a trained net A (``source``) into ``model``; the rest stays random.

    Layers are matched by name, as Caffe does: A's first four convolutions are conv1_1,
    conv2_1, conv3_1 and conv3_2, and B, C, D, E have layers of those names and shapes (by
    position they would not match: D's second convolution is conv1_2). Batch-norm layers of
    the copied convolutions are copied too. A missing layer or a shape mismatch raises
    ``ValueError`` naming the layer and both shapes; nothing is copied in that case.
    """
    src = [n for n, m in source.features.named_children() if isinstance(m, nn.Conv2d)][:n_conv]
    src += [n for n, m in source.classifier.named_children() if isinstance(m, nn.Linear)]
    ours = dict(model.named_modules())
    theirs = dict(source.named_modules())
    pairs = []
    for name in src:
        key = ("features." if name.startswith("conv") else "classifier.") + name
        dst = ours.get(key)
        if dst is None:
            raise ValueError(f"init_from: the model has no layer {key} to receive the source's")
        for p in ("weight", "bias"):
            a, b = getattr(dst, p), getattr(theirs[key], p)
            if a.shape != b.shape:
                raise ValueError(f"init_from: layer {key} has {p} shape {tuple(a.shape)} but the "
                                 f"source's has {tuple(b.shape)}")
        pairs.append((dst, theirs[key]))
        bn = key.replace("conv", "bn")
        if isinstance(ours.get(bn), nn.BatchNorm2d) and isinstance(theirs.get(bn), nn.BatchNorm2d):
            pairs.append((ours[bn], theirs[bn]))
    with torch.no_grad():
        for dst, s in pairs:
            dst.load_state_dict(s.state_dict())
    return model


# --- torchvision weights ---------------------------------------------------------------------

def load_torchvision_weights(model: VGG, state_dict: dict) -> VGG:
    """Load a torchvision ``vgg11/13/16/19`` (or ``*_bn``) state dict into a ``vgg_lib`` A/B/D/E.

    Layers are matched in order (torchvision numbers them ``features.0``, ``features.3``, ...;
    we name them ``conv1_1``, ...). Nothing is downloaded: pass a state dict you have, e.g.
    ``torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()`` if you chose to fetch it.

    Preprocessing each source expects:

    * torchvision's ImageNet weights: RGB in [0, 1], normalised with mean
      (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225);
    * the original Caffe release by the paper's authors: BGR in [0, 255] minus the mean
      pixel (103.939, 116.779, 123.68) in B, G, R order, no division.

    A state dict of the wrong architecture raises ``ValueError`` naming the first mismatching
    key and both shapes.
    """
    ours = list(model.state_dict().items())
    theirs = list(state_dict.items())
    new = OrderedDict()
    for (k1, v1), (k2, v2) in itertools.zip_longest(ours, theirs, fillvalue=(None, None)):
        same = (k1 is not None and k2 is not None and v1.shape == v2.shape
                and k1.rsplit(".", 1)[-1] == k2.rsplit(".", 1)[-1])
        if not same:
            raise ValueError(
                f"state dict does not match VGG({model.config}, batch_norm={model.batch_norm}) "
                f"({len(theirs)} tensors vs the model's {len(ours)}): model key {k1} has shape "
                f"{_shape(v1)} but state-dict key {k2} has shape {_shape(v2)}")
        new[k1] = v2
    model.load_state_dict(new)
    return model


def _shape(v) -> str:
    return "(missing)" if v is None else str(tuple(v.shape))


# torchvision's preprocessing of its ImageNet weights (RGB in [0, 1]).
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
# The Caffe release: BGR pixels in [0, 255] minus this mean (B, G, R).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
