"""The compare tab: n stacked 3x3 convolutions beside one (2n+1)x(2n+1) convolution with the
same receptive field (Sect. 2.3), their weights for C channels, non-linearities and ERFs."""

from __future__ import annotations

import ipywidgets as w

from ..analysis import stack_vs_single
from .erf import compare_uris
from .render import compare_html

DEPTHS = (1, 5)                      # n from 1 to 5: up to an 11x11 single layer
CHANNELS = (64, 128, 256, 512)       # the widths of VGG's blocks


class CompareTab:
    """``n_w`` (slider), ``c_w`` (channels), ``html_w`` (the drawing); ``widget`` is the tab."""

    def __init__(self, uid: str, n: int = 2, channels: int = 512):
        self.uid = uid
        self.n_w = w.IntSlider(n, *DEPTHS, description="n (3x3 layers)", style={"description_width": "initial"})
        # a margin, or the slider's readout ("4") runs into this label ("4 channels C")
        self.c_w = w.Dropdown(options=list(CHANNELS), value=channels, description="channels C (in and out)",
                              style={"description_width": "initial"}, layout=w.Layout(margin="0 0 0 2em"))
        self.html_w = w.HTML()
        self.n_w.add_class("rfx-n")
        self.html_w.add_class("rfx-compare-w")
        self.widget = w.VBox([w.HBox([self.n_w, self.c_w]), self.html_w])
        self.update()
        self.n_w.observe(lambda _: self.update(), "value")
        self.c_w.observe(lambda _: self.update(), "value")

    def update(self) -> None:
        n, c = self.n_w.value, self.c_w.value
        self.html_w.value = compare_html(n, c, stack_vs_single(channels=c, depths=(n,)), compare_uris(n),
                                         uid=self.uid)
