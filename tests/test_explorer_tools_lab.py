"""The fusion calculator and the testing explorer live in JupyterLab: a notebook of the two
chapters' last cells (not the chapters: the Testing chapter trains a net first) runs in the
server of ``test_explorer_lab``; changing a control makes the kernel answer with new numbers."""
import json
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS
from test_explorer_lab import RUN_TIMEOUT_MS, lab, run_all_cells  # noqa: F401  (lab: the server fixture)
from vgg_lib.explorer.fusion.state import FusionState
from vgg_lib.explorer.testing.state import METHODS

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CELLS = ["from vgg_lib.explorer.testing import TestingExplorer\n\nTestingExplorer()",
         "from vgg_lib.explorer.fusion import FusionCalculator\n\nFusionCalculator()"]


def _notebook(path: Path) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
              "source": src} for i, src in enumerate(CELLS)]
    path.write_text(json.dumps({"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                             "language": "python"}},
                                "nbformat": 4, "nbformat_minor": 5}))


def test_tools_are_live_in_jupyterlab(lab, tmp_path, artifacts):  # noqa: F811
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    _notebook(tmp_path / "tools.ipynb")                 # tmp_path is the folder the server serves
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        run_all_cells(page, lab, "tools.ipynb", playwright)
        tex, fus = page.locator(".vgg-tex-widget"), page.locator(".vgg-fus-widget")
        try:
            tex.wait_for(timeout=RUN_TIMEOUT_MS)
            fus.wait_for(timeout=RUN_TIMEOUT_MS)
        except Exception:
            page.screenshot(path=str(artifacts / "tools_lab_failure.png"))
            raise
        note = tex.locator(".tex-source").inner_text()
        assert note.startswith(("Live", "No checkpoint")) and "\n" not in note.strip()
        tex.locator(".tex-method select").select_option(label=METHODS["multi"])   # the kernel draws 25 crops
        page.wait_for_function("() => document.querySelector('.vgg-tex-widget svg.tex-image')"
                               ".getAttribute('data-boxes') === '25'", timeout=60_000)
        tex.screenshot(path=str(artifacts / "testing_lab_multi.png"))

        top1 = fus.locator(".fus-top1")
        first = top1.get_attribute("data-value")
        fus.locator(".widget-checkbox", has_text="A-full").locator("input").check()
        page.wait_for_function(f"() => document.querySelector('.vgg-fus-widget .fus-top1')"
                               f".getAttribute('data-value') !== '{first}'", timeout=60_000)
        state = FusionState(nets=["A-full", "E-full", "D-S256-512"])
        assert float(top1.get_attribute("data-value")) == state.result["top1"]
        fus.screenshot(path=str(artifacts / "fusion_lab.png"))
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                            has_text="Traceback").count() == 0
        assert not errors, errors
        browser.close()
