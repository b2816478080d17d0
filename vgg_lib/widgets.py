"""The receptive-field explorer under the name the book and the README import it by
(``from vgg_lib.widgets import ReceptiveFieldExplorer``); it lives in ``vgg_lib.explorer``."""

from .explorer.state import ExplorerState
from .explorer.widget import ReceptiveFieldExplorer

__all__ = ["ExplorerState", "ReceptiveFieldExplorer"]
