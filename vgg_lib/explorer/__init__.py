"""The receptive-field explorer: Sect. 2.3 ("two 3x3 layers see what one 5x5 sees") to play with.

Pick a configuration of Table 1, a layer and a unit; see the unit's theoretical receptive field
(the box), the grid of unit centres at that layer (spaced by the *jump*), the numbers (size,
jump, start, parameters up to that layer) and the effective receptive field (Luo et al., 2016:
the gradient of the unit with respect to the image). A compare tab puts a stack of n 3x3
convolutions beside one (2n+1)x(2n+1) convolution.

One object, two lives (``ReceptiveFieldExplorer``): with a kernel (JupyterLab) an ipywidgets
panel whose every control is live; without one (the static HTML book) the same cell output
also carries a self-contained HTML/JavaScript version (``static``).

=================  ==================================================================
``state``          ``ExplorerState``: what is selected and shown, the numbers; no widgets
``geometry``       the layer rows of a net, a unit's centre, following and clamping units
``images``         the bundled photographs, the network input, small data URIs
``erf``            effective receptive fields: the selected unit, centre units, compare tab
``render``         the SVG and HTML, pure functions of a state
``controls``       the explore tab's ipywidgets, linked to traits, set from a state
``compare``        the compare tab (ipywidgets)
``widget``         ``ReceptiveFieldExplorer``: the above put together
``static``         the page's self-contained HTML/JavaScript explorer and its data
=================  ==================================================================

``state``, ``geometry``, ``images``, ``erf``, ``render`` and ``static`` import no ipywidgets.
"""

from .state import ExplorerState

__all__ = ["ExplorerState", "ReceptiveFieldExplorer"]


def __getattr__(name):
    # imported on first use, so that the state and the rendering work without ipywidgets
    if name == "ReceptiveFieldExplorer":
        from .widget import ReceptiveFieldExplorer
        return ReceptiveFieldExplorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
