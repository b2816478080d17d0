"""Table 1 of the paper as data.

A configuration is a short list, read left to right (Sect. 2.2):

* an ``int`` ``c``      -- a 3x3 convolution with ``c`` output channels (stride 1, padding 1),
  followed by a ReLU ("conv3-c" in Table 1);
* a tuple ``(k, c)``    -- a ``k`` x ``k`` convolution with ``c`` channels; ``(1, c)`` is the
  "conv1-c" of configuration C, ``(5, c)`` the 5x5 filters of the shallow net of Sect. 4.1.
  Padding is ``(k - 1) // 2`` so the spatial size is preserved;
* ``"LRN"``             -- local response normalisation (A-LRN only, Sect. 2.2 / 4.1);
* ``"M"``               -- 2x2 max-pooling with stride 2, the end of a block.

After the five blocks come FC-4096, FC-4096, FC-1000 and the soft-max (built in ``models``).
"""

from __future__ import annotations

CONFIGS: dict[str, list] = {
    # 11 weight layers
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    # 13 weight layers
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    # 16 weight layers, the third conv of blocks 3-5 is a 1x1 convolution
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (1, 256), "M",
          512, 512, (1, 512), "M", 512, 512, (1, 512), "M"],
    # 16 weight layers
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
          512, 512, 512, "M", 512, 512, 512, "M"],
    # 19 weight layers
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    # Sect. 4.1: B with each pair of 3x3 convolutions replaced by a single 5x5 one (8 weight layers)
    "B-5x5": [(5, 64), "M", (5, 128), "M", (5, 256), "M", (5, 512), "M", (5, 512), "M"],
}

# torchvision's names for the same networks.
ALIASES: dict[str, str] = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}

# The widths of the three fully-connected layers (the last one is the number of classes).
FC_WIDTH = 4096


def resolve(name: str) -> str:
    """The canonical config name (``"vgg16"`` -> ``"D"``); a clear error for anything else."""
    if isinstance(name, str):
        key = ALIASES.get(name.lower(), name)
        if key in CONFIGS:
            return key
        upper = name.upper()
        if upper in CONFIGS:
            return upper
    allowed = ", ".join(list(CONFIGS) + list(ALIASES))
    raise ValueError(f"config name {name!r} is unknown; allowed: {allowed}")


def conv_spec(item) -> tuple[int, int] | None:
    """``(kernel_size, channels)`` for a convolution entry, ``None`` for anything else."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return 3, item
    if isinstance(item, tuple):
        return item
    return None


def weight_layers(name: str) -> int:
    """Number of weight layers (convolutions + the three FC layers), as in Table 1's header."""
    return sum(conv_spec(x) is not None for x in CONFIGS[resolve(name)]) + 3


def describe(name: str) -> list[list[str]]:
    """Table 1's notation for one configuration: one list of layer names per block."""
    blocks, block = [], []
    for item in CONFIGS[resolve(name)]:
        if item == "M":
            blocks.append(block)
            block = []
        elif item == "LRN":
            block.append("LRN")
        else:
            k, c = conv_spec(item)
            block.append(f"conv{k}-{c}")
    return blocks
