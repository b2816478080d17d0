"""Table 2 and Sect. 2.3 by computation: parameters, multiply-adds, memory, receptive fields.

Receptive-field conventions follow Araujo, Norris & Sim, "Computing Receptive Fields of
Convolutional Neural Networks" (Distill, 2019), walking the layers from the input:

* ``rf_size``  r_l = r_{l-1} + (k_l - 1) * j_{l-1}       (pixels of the input one unit sees)
* ``rf_jump``  j_l = j_{l-1} * s_l                       (input pixels between adjacent units)
* ``rf_start`` c_l = c_{l-1} + ((k_l - 1) / 2 - p_l) * j_{l-1}
  the centre of the receptive field of unit (0, 0), in input pixel coordinates where pixel
  ``i`` has its centre at ``i``; unit ``u`` is centred at ``rf_start + u * rf_jump``.

The input layer has r = 1, j = 1, c = 0. A fully-connected layer after a ``h x w`` map is a
``h x w`` convolution (Sect. 3.2), so its units see ``r + (h - 1) * j`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .models import VGG, FullyConvolutionalVGG

# Modules that change neither the receptive field nor the shape.
_POINTWISE = (nn.ReLU, nn.LocalResponseNorm, nn.Dropout, nn.BatchNorm2d, nn.Identity)
SUPPORTED = "Conv2d, MaxPool2d, AvgPool2d, ReLU, LocalResponseNorm, Dropout, BatchNorm2d, Flatten, Linear"

_KIND = {nn.Conv2d: "conv", nn.MaxPool2d: "pool", nn.AvgPool2d: "pool", nn.ReLU: "relu",
         nn.LocalResponseNorm: "lrn", nn.Dropout: "dropout", nn.BatchNorm2d: "batchnorm",
         nn.Flatten: "flatten", nn.Linear: "fc", nn.Identity: "identity"}


def layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The flat, ordered list of ``(name, module)`` a network applies to its input.

    A ``VGG`` is ``features`` + flatten + ``classifier``; any ``nn.Sequential`` (nested ones
    are flattened) works too. Anything else raises ``TypeError`` naming the module.
    """
    if isinstance(model, VGG):
        return (_flatten_sequential(model.features)
                + [("flatten", nn.Flatten())] + _flatten_sequential(model.classifier))
    if isinstance(model, FullyConvolutionalVGG):
        return _flatten_sequential(model.features) + _flatten_sequential(model.classifier)
    if isinstance(model, nn.Sequential):
        return _flatten_sequential(model)
    if isinstance(model, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Flatten) + _POINTWISE):
        return [(type(model).__name__.lower(), model)]
    raise TypeError(f"cannot walk a {type(model).__name__}: pass a VGG or an nn.Sequential "
                    f"of {SUPPORTED}")


def _flatten_sequential(seq: nn.Sequential, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in seq.named_children():
        if isinstance(m, nn.Sequential):
            out += _flatten_sequential(m, f"{prefix}{name}.")
        else:
            out.append((prefix + name, m))
    return out


def _pair(v) -> int:
    v = v if isinstance(v, int) else v[0]
    return int(v)


@dataclass
class _State:
    shape: tuple            # (C, H, W) or (F,)
    size: float = 1.0
    jump: float = 1.0
    start: float = 0.0
    grid: int = 1           # side of the spatial map a flatten folded into features


def _step(name: str, m: nn.Module, st: _State) -> tuple[_State, int, int]:
    """Apply one layer to the walking state; return (new state, params, multiply-adds)."""
    params = sum(p.numel() for p in m.parameters())
    if isinstance(m, _POINTWISE):
        return _State(st.shape, st.size, st.jump, st.start), params, 0
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if len(st.shape) != 3:
            raise ValueError(f"layer {name} ({type(m).__name__}) needs a (C, H, W) input, got {st.shape}")
        k, s, p = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
        d = _pair(getattr(m, "dilation", 1))
        c, h, w = st.shape
        k_eff = d * (k - 1) + 1
        ho, wo = (h + 2 * p - k_eff) // s + 1, (w + 2 * p - k_eff) // s + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"layer {name} ({type(m).__name__}, kernel {k}) gets a {h}x{w} map: too small")
        if isinstance(m, nn.Conv2d):
            if m.in_channels != c:
                raise ValueError(f"layer {name} expects {m.in_channels} channels, gets {c}")
            cout = m.out_channels
            macs = ho * wo * cout * (c // m.groups) * k * k
        else:
            cout, macs = c, 0
        new = _State((cout, ho, wo), st.size + (k_eff - 1) * st.jump, st.jump * s,
                     st.start + ((k_eff - 1) / 2 - p) * st.jump)
        return new, params, macs
    if isinstance(m, nn.Flatten):
        side = st.shape[1] if len(st.shape) == 3 else 1
        return _State((int(np.prod(st.shape)),), st.size, st.jump, st.start, grid=side), 0, 0
    if isinstance(m, nn.Linear):
        n_in = int(np.prod(st.shape))
        if m.in_features != n_in:
            raise ValueError(f"layer {name} expects {m.in_features} inputs, gets {n_in} {st.shape}")
        # The first FC after a flatten sees the whole (grid x grid) map: a grid x grid convolution.
        g = st.grid
        new = _State((m.out_features,), st.size + (g - 1) * st.jump, st.jump,
                     st.start + (g - 1) / 2 * st.jump)
        return new, params, m.in_features * m.out_features
    raise TypeError(f"layer {name} is a {type(m).__name__}, which the receptive-field and cost "
                    f"analysis does not support; supported: {SUPPORTED}")


def layer_table(model: nn.Module, input_size: int | None = None, total: bool = True) -> pd.DataFrame:
    """One row per layer: ``name, kind, out_shape, params, macs, activation_bytes, rf_size,
    rf_jump, rf_start`` for a single ``input_size`` x ``input_size`` RGB image (float32).

    With ``total=True`` a last row ``total`` sums ``params``, ``macs`` and ``activation_bytes``.
    Table 2 of the paper is ``layer_table(vgg(name)).params.iloc[-1]``.
    """
    if input_size is None:
        input_size = getattr(model, "input_size", 224)
    if not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
    seq = layers(model)
    # RGB for a VGG; for a bare stack (e.g. stack_vs_single) the first conv says how many.
    in_channels = next((m.in_channels for _, m in seq if isinstance(m, nn.Conv2d)), 3)
    st = _State((in_channels, input_size, input_size))
    rows = []
    for name, m in seq:
        st, params, macs = _step(name, m, st)
        rows.append(dict(name=name, kind=_KIND.get(type(m), type(m).__name__), out_shape=st.shape,
                         params=params, macs=macs, activation_bytes=4 * int(np.prod(st.shape)),
                         rf_size=int(st.size), rf_jump=int(st.jump), rf_start=float(st.start)))
    df = pd.DataFrame(rows)
    if total:
        df = pd.concat([df, pd.DataFrame([dict(
            name="total", kind="", out_shape=None, params=int(df.params.sum()), macs=int(df.macs.sum()),
            activation_bytes=int(df.activation_bytes.sum()), rf_size=None, rf_jump=None,
            rf_start=None)])], ignore_index=True)
    return df


def receptive_field(model: nn.Module, input_size: int | None = None) -> pd.DataFrame:
    """Receptive field ``size``, ``jump`` and ``start`` of every layer, indexed by layer name.

    Works on any sequential stack of conv / pool / ReLU / LRN / dropout / batch-norm /
    flatten / linear layers; anything else raises ``TypeError`` naming the module.
    """
    t = layer_table(model, input_size=input_size, total=False)
    return (t[["name", "kind", "rf_size", "rf_jump", "rf_start"]]
            .rename(columns={"rf_size": "size", "rf_jump": "jump", "rf_start": "start"})
            .set_index("name"))


def count_params(model: nn.Module) -> int:
    """Number of weights and biases of ``model`` (shared parameters counted once).

    Only shapes are read, so a model on the ``meta`` device counts the same as on the CPU:
    ``count_params(vgg("D", device="meta"))`` is Table 2's 138,357,544 without allocating the
    net's 553 MB of float32 weights.
    """
    return sum(p.numel() for p in model.parameters())


def effective_receptive_field(model: nn.Module, layer: str | int, input_size: int | None = None,
                              image: torch.Tensor | None = None, unit: tuple[int, int] | None = None,
                              n_samples: int = 1, seed: int = 0) -> np.ndarray:
    """The effective receptive field of Luo et al. (NIPS 2016): |d y / d x| for one unit.

    ``y`` is the sum over channels of ``layer``'s output at ``unit`` (default: the centre unit),
    ``x`` the input image (``image``, a (3, H, W) tensor; default ``n_samples`` Gaussian noise
    images averaged, as in the paper). Returns an ``(H, W)`` array summed over colour channels
    and normalised to a maximum of 1. ``layer`` is a layer name (``"conv4_3"``) or an index into
    ``layers(model)``. The model runs in eval mode (no dropout); its weights are left unchanged.
    """
    seq = layers(model)
    names = [n for n, _ in seq]
    if isinstance(layer, str):
        if layer not in names:
            raise ValueError(f"layer {layer!r} is not in the model; layers: {', '.join(names)}")
        stop = names.index(layer)
    else:
        if not -len(seq) <= layer < len(seq):
            raise ValueError(f"layer index {layer} out of range 0..{len(seq) - 1}")
        stop = layer % len(seq)
    if any(isinstance(m, (nn.Flatten, nn.Linear)) for _, m in seq[: stop + 1]):
        raise ValueError(f"layer {names[stop]!r} is fully connected: every unit sees the whole "
                         f"image; pick a convolutional or pooling layer")
    size = input_size or (image.shape[-1] if image is not None else getattr(model, "input_size", 224))
    net = nn.Sequential(*[m for _, m in seq[: stop + 1]])
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(seed)
        total = None
        for i in range(1 if image is not None else n_samples):
            x = (image.detach().clone().float().unsqueeze(0) if image is not None
                 else torch.randn(1, 3, size, size, generator=gen))
            x.requires_grad_(True)
            y = _forward_no_inplace(net, x)
            h, w = y.shape[-2:]
            u = unit if unit is not None else (h // 2, w // 2)
            if not (0 <= u[0] < h and 0 <= u[1] < w):
                raise ValueError(f"unit {tuple(u)} is outside layer {names[stop]}'s {h}x{w} map")
            y[0, :, u[0], u[1]].sum().backward()
            g = x.grad[0].abs().sum(0)
            total = g if total is None else total + g
    finally:
        model.train(was_training)
    out = total.numpy()
    return out / out.max() if out.max() > 0 else out


def _forward_no_inplace(net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    # In-place ReLUs would overwrite tensors autograd needs when x is the first input.
    for m in net:
        x = torch.relu(x) if isinstance(m, nn.ReLU) else m(x)
    return x


def stack_vs_single(channels: int = 512, depths: tuple[int, ...] = (2, 3)) -> pd.DataFrame:
    """Sect. 2.3: a stack of n 3x3 convolutions vs one (2n+1)x(2n+1) convolution, C channels.

    Both are built as real layers (no biases, as the paper's C^2 counts) and measured: the
    parameters (n * 9C^2 vs (2n+1)^2 C^2, i.e. 18C^2 vs 25C^2 and 27C^2 vs 49C^2), the receptive
    field (identical), and the number of non-linearities (n vs 1).
    """
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")
    rows = []
    for n in depths:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"depths must be positive integers, got {n!r}")
        k = 2 * n + 1
        stack = nn.Sequential(*[m for _ in range(n) for m in
                                (nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU())])
        single = nn.Sequential(nn.Conv2d(channels, channels, k, padding=n, bias=False), nn.ReLU())
        for label, net in ((f"{n} x 3x3", stack), (f"1 x {k}x{k}", single)):
            rf = receptive_field(net, input_size=k)
            p = count_params(net)
            rows.append(dict(layers=label, n=n, receptive_field=int(rf["size"].iloc[-1]), params=p,
                             params_per_C2=p / channels**2,
                             nonlinearities=sum(isinstance(m, nn.ReLU) for m in net)))
    df = pd.DataFrame(rows)
    single_params = df.groupby("n")["params"].transform("max")
    df["relative_to_single"] = df["params"] / single_params
    return df


# --- memory of a training step (for sizing GPU runs) ----------------------------------------------

AMP_BYTES = {"bf16": 2, "fp16": 2, "off": 4}


def training_memory(model: nn.Module, batch: int, amp: str = "bf16", input_size: int | None = None,
                    ddp: bool = False, mask_bytes: int = 1) -> dict:
    """Bytes one device holds to train ``model`` on ``batch`` images per forward pass with SGD
    and momentum: an estimate walked from ``layer_table``, not a measurement.

    * ``weights``, ``gradients``, ``momentum``: 4 bytes per parameter each (float32 masters);
    * ``weight_copies``: autocast's bf16/fp16 copy of every conv and FC weight (amp only);
    * ``ddp_buckets``: DistributedDataParallel's gradient buckets, 4 bytes per parameter;
    * ``activations``: what autograd keeps from the forward pass for the backward pass, per
      layer kind: the input; a conv's or FC's output (its in-place ReLU reuses it); a max-pool's
      output and int64 argmax indices; a dropout's output and mask (``mask_bytes``: 1 on CUDA,
      a float on the CPU); in ``amp``'s dtype (2 bytes) or float32. LRN and batch norm are
      counted as two more copies of their input (approximate);
    * ``backward_peak``: two of the largest layer outputs (a gradient and its input's gradient
      live at once in the backward pass).

    ``total`` sums them. Not included: the CUDA context and cuDNN workspaces (about 1-2 GB).
    """
    if amp not in AMP_BYTES:
        raise ValueError(f"amp={amp!r} is not allowed: one of {', '.join(AMP_BYTES)}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    a = AMP_BYTES[amp]
    t = layer_table(model, input_size=input_size, total=False)
    size = input_size or getattr(model, "input_size", 224)
    rows = list(t.itertuples())
    per_image = 3 * size * size * a  # the input (its amp copy, which the first conv keeps)
    largest = 0
    for k, r in enumerate(rows):
        n = int(np.prod(r.out_shape))
        largest = max(largest, n * a)
        if r.kind in ("conv", "fc"):
            # fc8's output is not kept by fc8, but the loss keeps its float32 copy
            per_image += n * (4 if k == len(rows) - 1 else a)
        elif r.kind == "pool":
            per_image += n * (a + 8)
        elif r.kind == "dropout":
            per_image += n * (a + mask_bytes)
        elif r.kind in ("lrn", "batchnorm"):
            per_image += 2 * n * a
    params = count_params(model)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    out = dict(weights=4 * params, gradients=4 * params, momentum=4 * params,
               weight_copies=(2 * weights if a == 2 else 0), ddp_buckets=(4 * params if ddp else 0),
               activations=batch * per_image, backward_peak=2 * batch * largest)
    out["total"] = sum(out.values())
    return out
