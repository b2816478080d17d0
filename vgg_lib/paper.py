"""The paper's published numbers, for side-by-side display (copied into the package).

``table(2)`` is Table 2, ``table(11)`` Table 11, ... as pandas DataFrames, transcribed from
Simonyan & Zisserman (ICLR 2015). Errors are percentages, as printed in the paper.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

FILES = {
    1: "table1_configurations.csv",   # ConvNet configurations (Sect. 2.2)
    2: "table2_parameters.csv",       # number of parameters, millions (Sect. 2.2)
    3: "table3_single_scale.csv",     # single test scale (Sect. 4.1)
    4: "table4_multi_scale.csv",      # multiple test scales (Sect. 4.2)
    5: "table5_eval_methods.csv",     # dense vs multi-crop (Sect. 4.3)
    6: "table6_fusion.csv",           # multiple ConvNet fusion (Sect. 4.4)
    7: "table7_state_of_the_art.csv", # comparison with the state of the art (Sect. 4.5)
    8: "table8_localisation.csv",     # localisation variants, protocol 1, config D (Appendix A)
    10: "table10_localisation.csv",   # localisation (Appendix A)
    11: "table11_transfer.csv",       # VOC / Caltech image classification (Appendix B)
    12: "table12_action.csv",         # VOC-2012 action classification (Appendix B)
}

# Exact parameter counts behind Table 2's rounded millions (computed from Table 1; the
# paper prints 133, 133, 134, 138, 144).
PARAMS = {"A": 132_863_336, "A-LRN": 132_863_336, "B": 133_047_848, "C": 133_638_952,
          "D": 138_357_544, "E": 143_667_240}

# Multiply-adds per 224x224 image as torchvision publishes them (GFLOPS column of its docs).
TORCHVISION_GMACS = {"A": 7.61, "B": 11.31, "D": 15.47, "E": 19.63}


@lru_cache(maxsize=None)
def _read(n: int) -> pd.DataFrame:
    with resources.files("vgg_lib").joinpath("paper_tables", FILES[n]).open() as f:
        return pd.read_csv(f)


def table(n: int) -> pd.DataFrame:
    """Table ``n`` of the paper (1-8, 10-12) as a new DataFrame."""
    if n not in FILES:
        raise ValueError(f"the paper has no table {n!r} here; available: {sorted(FILES)}")
    return _read(n).copy()
