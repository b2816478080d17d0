"""Attributes of a package imported on first use: the tools' widgets need ipywidgets, their
states and pages do not, and a package must import without it."""

from __future__ import annotations

import importlib


def lazy_attributes(package: str, where: dict[str, str]):
    """A module ``__getattr__`` that imports ``where[name]`` (a submodule of ``package``) when
    ``name`` is first asked for."""

    def __getattr__(name):
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
