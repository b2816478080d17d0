"""Where the data module keeps what it computes once: rendered datasets and RGB statistics."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """``$VGG_LIB_CACHE`` if set, else ``~/.cache/vgg_lib`` (created on first use by writers)."""
    env = os.environ.get("VGG_LIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vgg_lib"


def key(params: dict) -> str:
    """A short stable hash of JSON-able parameters: the cache key of what they generate."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _atomic(path: Path, write) -> None:
    # Write next to the target then rename: a reader never sees a half-written file, and two
    # processes writing the same key at once both leave a complete file behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    _atomic(Path(path), lambda f: np.save(f, array, allow_pickle=False))


def save_json(path: Path, obj) -> None:
    _atomic(Path(path), lambda f: f.write(json.dumps(obj, indent=1).encode()))
