"""The fusion calculator: Sect. 4.4 (Table 6) to play with.

Pick any set of reference nets, evaluation methods and a seed; see the top-1 and top-5 errors of
their fused (averaged) posteriors, recomputed from the committed ``results/`` posteriors. Live
in JupyterLab (every image); in the static book, the page's JavaScript fuses the first images
of each evaluation, quantised to 8 bits, to the same numbers as Python on those images.

=================  ==================================================================
``evaluations``    what can be fused (found by name in results/), posteriors, quantisation
``state``          ``FusionState``: the selection and its fused errors or a message
``render``         the result's HTML, a pure function of ``FusionState.result``
``widget``         ``FusionCalculator``: ipywidgets, and the static page in the same output
``static``         the page's self-contained HTML/JavaScript calculator and its data
=================  ==================================================================

Only ``widget`` imports ipywidgets.
"""

from ..lazy import lazy_attributes
from .state import FusionState

__all__ = ["FusionCalculator", "FusionState"]

__getattr__ = lazy_attributes(__name__, {"FusionCalculator": "widget"})   # the widget needs ipywidgets
