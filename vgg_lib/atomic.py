"""Atomic writes: a file is written beside its path, then renamed onto it.

A reader never sees half a file, two writers of the same file both leave a complete one, and a
killed process or a full disk leaves no temporary file behind. Run folders (``vgg_lib.runs``)
and the data cache (``vgg_lib.data.cache``) are written this way.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path


def write_atomic(path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then rename it onto
    ``path``: a reader never sees half a file, two writers of the same file both leave a
    complete one, and a failed write (disk full) removes its temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path, obj) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1, default=str).encode()))


def write_csv(path, rows: list[dict], fields) -> None:
    text = io.StringIO()
    w = csv.DictWriter(text, list(fields))
    w.writeheader()
    w.writerows(rows)
    write_atomic(path, lambda f: f.write(text.getvalue().encode()))
