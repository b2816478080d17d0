"""``ReceptiveFieldExplorer``: the state, the controls, the compare tab and the rendering put
together as one object with two lives (see the package's docstring)."""

from __future__ import annotations

import uuid

import ipywidgets as w

from ..configs import CONFIGS
from . import static as page
from .compare import CompareTab
from .controls import Controls
from .erf import ErfSource
from .render import erf_note, message_html, numbers_html, view_svg
from .state import YOUR_IMAGE, ExplorerState


class ReceptiveFieldExplorer:
    """The receptive-field explorer (Sect. 2.3). Display it as the last expression of a cell.

    ``model``: a configuration name of Table 1 (``"D"``), or any ``VGG`` / ``nn.Sequential``
    (offered as "your model" beside the configurations). ``image``: a name of ``SAMPLE_IMAGES``
    or an array. For a configuration name, the numbers are those of the full-size net and the
    effective receptive field comes from a He-initialised copy of width ``erf_width`` (random
    weights: the ERF shows the architecture, not what a trained net learnt); a model passed in
    is used as it is for both. Bad input (unsupported layers, a unit outside the map, an image
    smaller than 32 px) shows a message in the widget (``.message``), never a traceback.

    ``state`` is the ``ExplorerState`` shown (``explorer.state["size"]``: the receptive field);
    ``controls`` and ``compare`` hold the two tabs' ipywidgets. With a kernel the object
    displays as ipywidgets; its output also carries the static HTML/JavaScript explorer
    (``static=True``), which the book shows when there is no kernel.
    """

    def __init__(self, model="D", image="chelsea", input_size: int = 224, layer: str | None = None,
                 erf_width: float = 0.25, seed: int = 0, static: bool = True):
        self.state, errors = _first_state(model, image, input_size, layer)
        self.erfs = ErfSource(erf_width, seed)
        self.static, self.uid, self.message = static, "rfx-" + uuid.uuid4().hex[:8], ""
        self.controls = Controls(self.state)
        self.compare = CompareTab(self.uid)
        self.widget = w.Tab(children=[self.controls.widget, self.compare.widget],
                            titles=("Explore a layer", "Compare 3x3 stacks"))
        self.widget.add_class("vgg-rfx-widget")
        self._say(" ".join(errors))
        self._show()
        self.controls.observe(self._on_control, names=["config", "layer", "row", "col", "image",
                                                       "show_erf", "show_grid"])

    # -- public API ---------------------------------------------------------------------------
    def select(self, config: str | None = None, layer: str | None = None, unit=None) -> None:
        """Select a configuration, layer and/or unit ``(row, col)``; bad values show a message."""
        self._apply(self.state.select, config=config, layer=layer, unit=unit)

    def move(self, rows: int = 0, cols: int = 0) -> None:
        """Step the unit by ``rows`` and ``cols``, stopping at the edges of the feature map."""
        self._apply(self.state.move, rows, cols)

    def set_image(self, image) -> None:
        """Use a bundled sample (by name) or your own array; too small or malformed: a message."""
        self._apply(self.state.set_image, image)

    @property
    def row(self) -> dict:
        return self.state.row

    @property
    def unit(self) -> tuple[int, int]:
        return self.state.unit

    # -- from the controls to the state, from the state to the page --------------------------------
    def _on_control(self, change) -> None:
        c, s = self.controls, self.state
        if change.name in ("show_erf", "show_grid"):
            setattr(s, change.name, change.new)
            self._show()
        elif change.name == "image" and c.image != s.image:
            self.set_image(c.image)
        elif change.name == "config" and c.config != s.config:
            self.select(config=c.config)
        elif change.name == "layer" and c.layer != s.layer:
            self.select(layer=c.layer)
        elif change.name in ("row", "col") and (c.row, c.col) != s.unit:
            self.select(unit=(c.row, c.col))
        # anything else is the controls catching up with the state: nothing to do

    def _apply(self, change, *args, **kwargs) -> None:
        """Apply one change to the state and show it; a bad one only shows its message."""
        try:
            change(*args, **kwargs)
        except ValueError as e:
            self._say(str(e))
        else:
            self._say("")
        self._show()

    def _say(self, text: str) -> None:
        self.message = text
        self.controls.message_w.value = message_html(text)

    def _show(self) -> None:
        s = self.state
        self.controls.show(s)
        erf, note = None, ""
        if s.show_erf:
            try:
                erf, note = self.erfs.for_state(s), erf_note(s, self.erfs.width)
            except (TypeError, ValueError, RuntimeError) as e:
                self._say(f"effective receptive field unavailable: {e}")
        self.controls.view_w.value = view_svg(s, erf, uid=self.uid)
        self.controls.numbers_w.value = numbers_html(s, note)

    # -- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude, **kwargs) or {}
        if self.static:
            s = self.state
            image = s.user_photo if s.image == YOUR_IMAGE else s.image
            config = s.config if s.config in CONFIGS else "D"      # the page knows Table 1 only
            layer = s.layer if config == s.config else "conv5_3"
            bundle["text/html"] = page.static_html(page.cached_payload(image, s.input_size), config, layer)
        return bundle


def _first_state(model, image, input_size: int, layer) -> tuple[ExplorerState, list[str]]:
    """The state to start from, and what could not be shown: an unknown or unexplorable model
    falls back to D, a bad image to chelsea, a bad layer to the default one."""
    errors = []
    try:
        state = ExplorerState(model, input_size=input_size)
    except ValueError as e:
        errors.append(str(e))
        state = ExplorerState("D", input_size=input_size)
    if not (isinstance(image, str) and image == "chelsea"):      # chelsea is shown already
        try:
            state.set_image(image)
        except ValueError as e:
            errors.append(f"{e}; showing chelsea")
    if layer is not None:
        try:
            state.select(layer=layer)
        except ValueError as e:
            errors.append(str(e))
    return state, errors
