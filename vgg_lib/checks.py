"""Parameter checks shared by ``TrainConfig``, the job notebooks and the command lines.

Values may arrive as Python objects (the API), as strings (papermill ``-p batch_norm false``,
``-r``, YAML) or as numbers; each helper returns the value with its real type or raises
``ConfigError`` with one line saying what was wrong and what is allowed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


class ConfigError(ValueError):
    """A bad parameter or input file. In a notebook it prints as one line, without a traceback."""

    def _render_traceback_(self):  # IPython hook: what a failing cell shows
        return [f"{type(self).__name__}: {self}"]


def boolean(name: str, value) -> bool:
    """``True``/``False``, 1/0, or the strings true/false, yes/no, on/off, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise ConfigError(f"{name}={value!r} is not allowed: a boolean (True/False, true/false, yes/no, 1/0)")


def numeric(value):
    """A number written as a string (``"1e-3"``, ``"8"``) as an int or float; anything else as is."""
    if isinstance(value, str):
        s = value.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return value
    return value


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_json(path, what: str = "") -> dict:
    """A JSON file's object, or a one-line ``ConfigError`` naming the file when it is damaged."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is damaged (not valid JSON: {str(e).splitlines()[0]}); "
                          f"{what or 'restore or delete it'}") from None
    except OSError as e:
        raise ConfigError(f"{path} cannot be read ({e.strerror or e}); {what or 'check the file'}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is damaged (a JSON {type(data).__name__}, not an object); "
                          f"{what or 'restore or delete it'}")
    return data


def unknown_parameters(namespace: dict, before, notebook: str) -> None:
    """In a job notebook: refuse names that papermill injected but the ``parameters`` cell does
    not declare (a typo like ``learning_rate`` would otherwise be ignored). ``before`` is the set
    of global names taken just before the parameters cell; declared parameters are the names
    annotated in that cell (``lr: float = 0.01``)."""
    declared = set(namespace.get("__annotations__", {}))
    unknown = sorted(n for n in set(namespace) - set(before) - declared
                     if not n.startswith("_") and n not in ("In", "Out"))
    if unknown:
        verb = "is not a parameter" if len(unknown) == 1 else "are not parameters"
        raise ConfigError(f"{', '.join(unknown)} {verb} of {notebook}; allowed: "
                          f"{', '.join(namespace.get('__annotations__', {}))}")


def fail(name: str, value, allowed: str):
    """Raise the one-line ``ConfigError`` of a bad parameter: its value and what is allowed."""
    raise ConfigError(f"{name}={value!r} is not allowed: {allowed}")


def load_source(value, load, allowed: str):
    """``load(value)`` for a job's required ``source`` parameter (a run folder or a weights
    file): an empty value, or the ``ValueError`` of ``load`` (no such path, an unfinished run, a
    damaged file), becomes one ``ConfigError`` line before any work starts."""
    if not value:
        fail("source", value, allowed)
    try:
        return load(value)
    except ValueError as e:
        raise ConfigError(str(e)) from None
