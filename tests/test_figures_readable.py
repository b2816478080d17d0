"""Figures of the chapters listed here are readable in the book: no text below 9 pt, and no
figure wider than the text column (7.2 in at 100 dpi), which the page would scale down, its
labels with it (the architecture stack plot had 6-pt ticks in an 11-inch figure)."""
import json
import re

import pytest

from conftest import REPO

CHAPTERS = ["architecture", "small_filters", "training", "testing", "fusion", "transfer", "localisation"]
COLUMN_INCHES = 7.2
SMALL_NAMES = ("xx-small", "x-small", "small")     # below 9 pt at matplotlib's 10-pt default


def code(chapter: str) -> str:
    nb = json.loads((REPO / "book" / f"{chapter}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_text_is_at_least_9_points_and_figures_fit_the_column(chapter):
    src = code(chapter)
    sizes = [float(v) for v in re.findall(r"(?:fontsize|labelsize|title_fontsize)\s*=\s*([\d.]+)", src)]
    assert all(s >= 9 for s in sizes), (chapter, sizes)
    named = re.findall(r"(?:fontsize|labelsize)\s*=\s*[\"']([a-z-]+)[\"']", src)
    assert not set(named) & set(SMALL_NAMES), (chapter, named)
    widths = [float(w) for w in re.findall(r"figsize\s*=\s*\(\s*([\d.]+)", src)]
    assert widths and all(w <= COLUMN_INCHES for w in widths), (chapter, widths)
    assert "rcParams" not in src or "font.size" not in src     # no global shrinking either
