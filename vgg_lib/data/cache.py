"""Where the data module keeps what it computes once: rendered datasets and RGB statistics."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..atomic import write_atomic, write_json


def cache_dir() -> Path:
    """``$VGG_LIB_CACHE`` if set, else ``~/.cache/vgg_lib`` (created on first use by writers)."""
    env = os.environ.get("VGG_LIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vgg_lib"


def key(params: dict) -> str:
    """A short stable hash of JSON-able parameters: the cache key of what they generate."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_npy(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda f: np.save(f, array, allow_pickle=False))


def save_json(path: Path, obj) -> None:
    write_json(path, obj)
