"""The explore tab's ipywidgets (configuration, layer, unit sliders, image, toggles) and the
HTML panes they drive. Each control's value is linked to a trait of ``Controls``; showing a
state sets every control inside ``hold_trait_notifications``, so an observer of these traits
hears one change per trait, once every control agrees with the state (never the transient
values ipywidgets passes through, such as a dropdown's first option after new options)."""

from __future__ import annotations

import ipywidgets as w
import traitlets

WIDE = {"style": {"description_width": "7em"}}


class Controls(traitlets.HasTraits):
    """The explore tab: controls linked to these traits, and ``view_w``, ``numbers_w``,
    ``message_w`` (HTML panes the explorer fills). ``widget`` is the tab's content."""

    config = traitlets.Unicode()
    layer = traitlets.Unicode()
    row = traitlets.Int()
    col = traitlets.Int()
    image = traitlets.Unicode()
    show_erf = traitlets.Bool(True)
    show_grid = traitlets.Bool(True)

    def __init__(self, state):
        super().__init__()
        self.config_w = w.Dropdown(options=state.configs, value=state.config, description="configuration", **WIDE)
        self.layer_w = w.Dropdown(options=state.layers, value=state.layer, description="layer", **WIDE)
        self.row_w = w.IntSlider(0, 0, 0, description="unit row", continuous_update=False, **WIDE)
        self.col_w = w.IntSlider(0, 0, 0, description="unit column", continuous_update=False, **WIDE)
        self.image_w = w.Dropdown(options=state.images, value=state.image, description="image", **WIDE)
        self.erf_w = w.Checkbox(True, description="effective receptive field", indent=False)
        self.grid_w = w.Checkbox(True, description="grid of unit centres (jump)", indent=False)
        self.view_w, self.numbers_w, self.message_w = w.HTML(), w.HTML(), w.HTML()
        for name, widget in (("config", self.config_w), ("layer", self.layer_w), ("row", self.row_w),
                             ("col", self.col_w), ("image", self.image_w), ("show_erf", self.erf_w),
                             ("show_grid", self.grid_w)):
            traitlets.link((widget, "value"), (self, name))
        for widget, cls in ((self.config_w, "rfx-config"), (self.layer_w, "rfx-layer"), (self.row_w, "rfx-row"),
                            (self.col_w, "rfx-col"), (self.image_w, "rfx-image"), (self.view_w, "rfx-view-w"),
                            (self.numbers_w, "rfx-numbers-w"), (self.message_w, "rfx-message")):
            widget.add_class(cls)    # the browser tests and the CSS find the controls by class
        panel = w.VBox([self.config_w, self.layer_w, self.row_w, self.col_w, self.image_w,
                        w.HBox([self.erf_w, self.grid_w]), self.numbers_w])
        self.widget = w.VBox([self.message_w, w.HBox([self.view_w, panel])])
        self.show(state)

    def show(self, state) -> None:
        """Set every control to ``state`` (options, value, slider range)."""
        with self.hold_trait_notifications():
            _choose(self.config_w, state.configs, state.config)
            _choose(self.layer_w, state.layers, state.layer)
            _choose(self.image_w, state.images, state.image)
            top = state.row["map"] - 1
            for slider, value in ((self.row_w, state.unit[0]), (self.col_w, state.unit[1])):
                # max and value are validated together on leaving: either order is then valid
                with slider.hold_sync(), slider.hold_trait_notifications():
                    slider.max, slider.value = top, value
            self.erf_w.value, self.grid_w.value = state.show_erf, state.show_grid


def _choose(dropdown: w.Dropdown, options: list, value) -> None:
    with dropdown.hold_sync():                     # the page gets options and value in one message
        if tuple(dropdown.options) != tuple(options):
            dropdown.options = options             # (this selects the first option for a moment)
        dropdown.value = value
