"""Importing the example and benchmark scripts (files, not package modules) from tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def import_script(path: Path, name: str) -> Iterator[ModuleType]:
    """The script at ``path`` imported as module ``name``, for a fixture: ``yield from import_script(path, name)``.

    The module is in ``sys.modules`` while the fixture lives (dataclasses resolve their annotations through it) and
    removed afterwards, so that every test module that asks for a script gets its own fresh import."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import {path} as a module: is the path right?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
