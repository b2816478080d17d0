"""The testing explorer: Sect. 3.2 and Tables 4-5 (how a trained net is applied to a test image)
to look at.

Pick a reference net, a validation image, a method (centre crop, multi-crop, dense) and the test
scale Q; see the image rescaled to Q with the crops or the dense windows drawn on it, the
class-score map of the fully convolutional net for a class, the posteriors of each crop and
their average, and the prediction against the label. Live in JupyterLab when the nets'
checkpoints are under ``runs/`` (computed by ``vgg_lib.evaluate``); otherwise, and in the static
book, from views precomputed for six images, five Q and two nets (``results/explorer/``).

=================  ==================================================================
``views``          one net on one image at one Q (``compute_view``), checkpoints, live views
``precomputed``    the committed views: build, quantise, read back; the command writing them
``sources``        per net: live from its checkpoint or precomputed, and the line saying which
``state``          ``TestingState``: the selection and the numbers shown
``render``         the SVG and HTML, pure functions of a state
``widget``         ``TestingExplorer``: ipywidgets, and the static page in the same output
``static``         the page's self-contained HTML/JavaScript explorer
=================  ==================================================================

Only ``widget`` imports ipywidgets.
"""

from ..lazy import lazy_attributes
from .state import TestingState

__all__ = ["TestingExplorer", "TestingState"]

__getattr__ = lazy_attributes(__name__, {"TestingExplorer": "widget"})   # the widget needs ipywidgets
