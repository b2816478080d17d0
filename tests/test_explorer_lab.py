"""The receptive-field explorer live in JupyterLab: start `jupyter lab` on 127.0.0.1 (token off),
open a copy of the Small filters chapter in headless chromium, run all cells, change the layer
in the widget and read the size the kernel computed; then stop the server by its process id."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, REPO, STATE

pytestmark = [pytest.mark.slow, pytest.mark.browser]
CHAPTER = REPO / "book" / "small_filters.ipynb"
RUN_TIMEOUT_MS = int(os.environ.get("VGG_LAB_TIMEOUT_MS", 600_000))         # the chapter runs in about one to two minutes on 2 busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a free port serving tmp_path (a copy of the chapter), state in .state."""
    shutil.copy(CHAPTER, tmp_path / CHAPTER.name)      # Lab autosaves: never touch the repo's copy
    port = _free_port()
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)                        # the kernel draws inline, as for a reader
    for var, sub in {"JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
                     "JUPYTER_RUNTIME_DIR": "jupyter/runtime", "IPYTHONDIR": "ipython",
                     "JUPYTERLAB_SETTINGS_DIR": "jupyter/lab/user-settings"}.items():
        env[var] = str(STATE / sub)
    # a workspace of its own: Lab restores the last one's open notebooks, and a second notebook
    # panel (another test's) would hide the one this test drives
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "workspaces")
    news = STATE / "jupyter/lab/user-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false"}')          # no "official Jupyter news?" toast, no fetch
    cmd = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("jupyter lab did not answer within 60 s")
        yield url
    finally:
        proc.send_signal(signal.SIGINT)                # stops the server and its kernels
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)                # (the second ^C skips the confirmation)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_all_cells(page, lab: str, notebook: str, playwright) -> None:
    """Open ``notebook`` of the server ``lab`` in ``page``, pick the kernel, run all cells."""
    page.goto(f"{lab}/lab/tree/{notebook}", wait_until="domcontentloaded")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")   # a fresh copy asks once
    try:
        dialog.wait_for(timeout=20_000)
        dialog.get_by_role("button", name="Select").click()
    except playwright.TimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']:visible", timeout=120_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def test_explorer_is_live_in_jupyterlab(lab, artifacts):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        run_all_cells(page, lab, CHAPTER.name, playwright)
        widget = page.locator(".vgg-rfx-widget")
        try:
            widget.wait_for(timeout=RUN_TIMEOUT_MS)
        except Exception:
            page.screenshot(path=str(artifacts / "explorer_lab_failure.png"))
            raise
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                            has_text="Traceback").count() == 0
        size = widget.locator(".rfx-size")
        size.wait_for(timeout=60_000)
        assert size.inner_text() == "196"
        assert widget.locator(".rfx-box").get_attribute("width") == "196"
        assert widget.locator(".rfx-layer select").input_value() == "conv5_3"
        widget.scroll_into_view_if_needed()
        widget.screenshot(path=str(artifacts / "explorer_lab_conv5_3.png"))

        widget.locator(".rfx-layer select").select_option("pool5")       # the kernel answers
        page.wait_for_function("""() => {
            const w = document.querySelector('.vgg-rfx-widget');
            return w.querySelector('.rfx-size').textContent === '212'
                && w.querySelector('.rfx-box').getAttribute('width') === '212'
                && w.querySelector('.rfx-erf') !== null; }""", timeout=60_000)
        assert widget.locator(".rfx-jump").inner_text() == "32"
        widget.screenshot(path=str(artifacts / "explorer_lab_pool5.png"))

        widget.locator(".rfx-config select").select_option("E")
        page.wait_for_function("""() => document.querySelector('.vgg-rfx-widget .rfx-size')
                                  .textContent === '268'""", timeout=60_000)
        assert not errors, errors
        browser.close()
