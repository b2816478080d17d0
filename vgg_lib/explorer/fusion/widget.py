"""``FusionCalculator``: ``FusionState`` behind ipywidgets (live, on every committed image) and,
in the same cell output, the static page's calculator (``static``) for the book without a kernel."""

from __future__ import annotations

from functools import lru_cache

import ipywidgets as w

from .evaluations import ResultsPosteriors, available, method_label
from .render import result_html
from .state import FusionState
from . import static as page
from ..page import asset


class FusionCalculator:
    """Pick reference nets, evaluation methods and a seed; see the fused top-1 and top-5 errors
    (Sect. 4.4) recomputed from the committed posteriors. Display it as a cell's last expression.

    ``state`` is the ``FusionState`` shown (``calculator.state.result``); ``select(...)`` changes
    it as the checkboxes do. A selection that cannot be fused shows a message, never a traceback.
    """

    def __init__(self, nets=None, methods=None, seed: int | None = None, results=None, static: bool = True):
        kwargs = {k: v for k, v in dict(nets=nets, methods=methods, seed=seed).items() if v is not None}
        self.state = FusionState(available(results=results), ResultsPosteriors(results), **kwargs)
        self.results, self.static = results, static
        s, self._syncing = self.state, False
        self.net_boxes = {n: w.Checkbox(n in s.nets, description=n, indent=False) for n in s.all_nets}
        self.method_boxes = {t: w.Checkbox(t in s.methods, description=method_label(t), indent=False,
                                           layout=w.Layout(width="auto")) for t in s.all_methods}
        self.seed_w = w.Dropdown(options=list(s.seeds), value=s.seed, description="seed",
                                 layout=w.Layout(width="10em"))
        self.result_w = w.HTML()
        self.result_w.add_class("fus-result-w")
        for box in (*self.net_boxes.values(), *self.method_boxes.values(), self.seed_w):
            box.observe(self._on_control, "value")
        self.widget = w.VBox([w.HBox([w.VBox([w.HTML("<b>nets</b>"), *self.net_boxes.values()]),
                                      w.VBox([w.HTML("<b>evaluation methods</b>"), *self.method_boxes.values(),
                                              self.seed_w])]), self.result_w])
        self.widget.add_class("vgg-fus-widget")
        self.widget.add_class("vgg-fus")                  # the page's CSS (tools.css) applies too
        self.widget.children = (w.HTML(f"<style>{asset('tools.css')}</style>"), *self.widget.children)
        self._show()

    def select(self, nets=None, methods=None, seed=None) -> None:
        """Select nets, methods (tags such as ``"dense_paper"``) and/or a seed; unknown names
        show a message."""
        try:
            self.state.select(nets=nets, methods=methods, seed=seed)
        except ValueError as e:
            self.result_w.value = f'<div class="fus-message" style="color:#a00">{e}</div>'
            return
        self._syncing = True                 # the boxes follow the state: no change to hear back
        try:
            for names, boxes in ((self.state.nets, self.net_boxes), (self.state.methods, self.method_boxes)):
                for name, box in boxes.items():
                    box.value = name in names
            self.seed_w.value = self.state.seed
        finally:
            self._syncing = False
        self._show()

    @property
    def result(self) -> dict:
        return self.state.result

    def _on_control(self, _change) -> None:
        if self._syncing:
            return
        self.state.select(nets=[n for n, b in self.net_boxes.items() if b.value],
                          methods=[t for t, b in self.method_boxes.items() if b.value], seed=self.seed_w.value)
        self._show()

    def _show(self) -> None:
        self.result_w.value = ('<p style="font-size:0.8rem;color:#555">Live: every committed image, the '
                               'float16 posteriors.</p>' + result_html(self.state.result))

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs) or {}
        if self.static:
            s = self.state
            bundle["text/html"] = page.static_html(_payload(None if self.results is None else str(self.results)),
                                                   s.nets, s.methods, s.seed)
        return bundle


@lru_cache(maxsize=2)
def _payload(results) -> dict:
    return page.static_payload(results=results)
