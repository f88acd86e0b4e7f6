"""Module ``__getattr__`` (PEP 562) for names and subpackages that load on first use.

``import modeling_mambavl`` must stay as cheap as the transformers classes it builds on: the EK100 tools pull in
``datasets``, ``evaluate`` and ``pandas``, the training tools Accelerate; a user who only loads a model and runs it
should not wait for them. A package lists what it exports lazily, and the first attribute access imports the module
that defines it (then the name is cached in the package namespace, so later accesses are plain lookups).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str] | None = None,
                 submodules: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the package ``package``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> submodule (relative to ``package``) that defines it.
        submodules: submodules reachable as attributes (``package.ek100``) before anything imported them.
    """
    exports = dict(exports or {})
    submodules = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        namespace = importlib.import_module(package).__dict__
        if name in exports:
            value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        elif name in submodules:
            value = importlib.import_module(f".{name}", package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        namespace = importlib.import_module(package).__dict__
        return sorted(set(namespace) | set(exports) | submodules)

    return __getattr__, __dir__
