"""Shared test set-up: keep every tool's state inside the repository's ignored folders."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".state"

for var, sub in {"MPLCONFIGDIR": "matplotlib", "IPYTHONDIR": "ipython",
                 "JUPYTER_CONFIG_DIR": "jupyter/config", "JUPYTER_DATA_DIR": "jupyter/data",
                 "JUPYTER_RUNTIME_DIR": "jupyter/runtime"}.items():
    os.environ.setdefault(var, str(STATE / sub))
os.environ.setdefault("VGG_LIB_CACHE", str(REPO / ".cache" / "vgg_lib"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def without_ipywidgets(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter in which importing ipywidgets or traitlets fails; the
    words it prints."""
    import subprocess
    import sys

    code = "import sys; sys.modules['ipywidgets'] = sys.modules['traitlets'] = None\n" + code
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where browser tests keep screenshots (ignored by git, kept as build artifacts)."""
    path = REPO / "artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def small():
    """Net A in the book's small-data geometry: 32x32 crops (pool5 is 1x1), width 1/16, 10 classes."""
    import torch

    from vgg_lib.models import vgg

    torch.manual_seed(0)
    return vgg("A", num_classes=10, width=1 / 16, input_size=32, init="kaiming").eval()
