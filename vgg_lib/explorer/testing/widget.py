"""``TestingExplorer``: ``TestingState`` behind ipywidgets and, in the same cell output, the static
page's explorer (``static``) for the book without a kernel."""

from __future__ import annotations

import ipywidgets as w

from . import precomputed as P
from . import static as page
from ..page import asset
from .render import crops_html, image_svg, message_html, posteriors_html
from .sources import sources_for
from .state import METHODS, TestingState

WIDE = {"style": {"description_width": "5em"}}


class TestingExplorer:
    """How a trained net is applied to a test image (Sect. 3.2): pick a reference net, an image,
    a method and Q; see the crops or dense windows on the rescaled image, the class-score map,
    each crop's posterior, their average and the prediction against the label.

    Live (computed by ``vgg_lib.evaluate``) for every net whose checkpoint is under ``runs/``,
    else from the committed precomputed views (``results/explorer/testing_views.json``); the
    first line of the explorer says which. ``state`` is the ``TestingState`` shown; ``select``
    changes it as the controls do; bad values show a message, never a traceback."""

    def __init__(self, net: str | None = None, method: str = "dense", Q: int | None = None, runs=None,
                 results=None, static: bool = True):
        self.payload = P.load(results)
        sources, self.note = sources_for(self.payload, runs)
        self.static, self.message, self._syncing = static, "", False
        self.state = TestingState(sources, [e["index"] for e in self.payload["images"]], self.payload["qs"],
                                  self.payload["classes"], net=net, method=method, Q=Q)
        s = self.state
        self.net_w = w.Dropdown(options=list(s.sources), value=s.net, description="net", **WIDE)
        self.image_w = w.Dropdown(options=[(f"#{e['index']} ({s.classes[e['label']]})", e["index"])
                                           for e in self.payload["images"]], value=s.image, description="image", **WIDE)
        self.method_w = w.Dropdown(options=[(label, key) for key, label in METHODS.items()], value=s.method,
                                   description="method", **WIDE)
        self.q_w = w.SelectionSlider(options=s.qs, value=s.Q, description="Q", **WIDE)
        self.cls_w = w.Dropdown(options=[("the label", "label"), *[(c, c) for c in s.classes]], value="label",
                                description="class", **WIDE)
        self.note_w, self.message_w, self.image_html, self.right_html = w.HTML(), w.HTML(), w.HTML(), w.HTML()
        for widget, cls in ((self.net_w, "tex-net"), (self.image_w, "tex-image-choice"), (self.method_w, "tex-method"),
                            (self.q_w, "tex-q"), (self.cls_w, "tex-class"), (self.image_html, "tex-image-w"),
                            (self.right_html, "tex-right-w")):
            widget.add_class(cls)        # the JupyterLab test finds the controls by class
        self.widget = w.VBox([self.note_w, self.message_w,
                              w.HBox([self.net_w, self.image_w, self.method_w]), w.HBox([self.q_w, self.cls_w]),
                              w.HBox([self.image_html, self.right_html])])
        self.widget.add_class("vgg-tex-widget")
        self.widget.add_class("vgg-tex")                  # the page's CSS (tools.css) applies too
        self.widget.children = (w.HTML(f"<style>{asset('tools.css')}</style>"), *self.widget.children)
        self.note_w.value = f'<p class="tex-note tex-source">{self.note}</p>'
        for c in (self.net_w, self.image_w, self.method_w, self.q_w, self.cls_w):
            c.observe(self._on_control, "value")
        self._show()

    def select(self, net=None, image=None, method=None, Q=None, cls=None) -> None:
        """Select a net, an image (validation index), a method (``centre``, ``multi``, ``dense``),
        Q and/or the class shown; bad values show a message and change nothing."""
        try:
            self.state.select(net=net, image=image, method=method, Q=Q, cls=cls)
        except ValueError as e:
            self.message = str(e)
        else:
            self.message = ""
        s = self.state
        self._syncing = True                 # the controls follow the state: no change to hear back
        try:
            for c, value in ((self.net_w, s.net), (self.image_w, s.image), (self.method_w, s.method),
                             (self.q_w, s.Q), (self.cls_w, s.cls or "label")):
                c.value = value
        finally:
            self._syncing = False
        self._show()

    def _on_control(self, _change) -> None:
        if self._syncing:
            return
        self.select(net=self.net_w.value, image=self.image_w.value, method=self.method_w.value, Q=self.q_w.value,
                    cls=self.cls_w.value)

    def _show(self) -> None:
        self.message_w.value = message_html(self.message)
        self.image_html.value = image_svg(self.state)
        self.right_html.value = posteriors_html(self.state) + crops_html(self.state)

    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs) or {}
        if self.static:
            s = self.state
            bundle["text/html"] = page.static_html(self.payload, s.net, s.image, s.method, s.Q)
        return bundle
