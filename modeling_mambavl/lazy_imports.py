"""Module ``__getattr__`` (PEP 562) for names and subpackages that load on first use.

``import modeling_mambavl`` must stay as cheap as the transformers classes it builds on: the EK100 tools pull in
``datasets``, ``evaluate`` and ``pandas``, the training tools Accelerate; a user who only loads a model and runs it
should not wait for them. A package lists what it exports lazily, and the first attribute access imports the module
that defines it (then the name is cached in the package namespace, so later accesses are plain lookups).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

__all__ = ["exit_for_missing_extra", "lazy_getattr", "missing_extra", "require_modules"]

# Libraries that come with an extra of setup.cfg rather than with `pip install mambavl` (an inference install).
EXTRAS = {"datasets": "ek100", "evaluate": "ek100", "accelerate": "train", "peft": "train", "matplotlib": "train",
          "yaml": "train"}


def missing_extra(error: ModuleNotFoundError, what: str) -> ModuleNotFoundError:
    """``error`` itself, or, when the missing module comes with an extra, an error saying which one installs it."""
    extra = EXTRAS.get((error.name or "").split(".")[0])
    if extra is None:
        return error
    return ModuleNotFoundError(f"{what} needs {error.name}, which this install lacks: install the package's "
                               f"'{extra}' extra (in its checkout: pip install -e '.[{extra}]')", name=error.name)


def exit_for_missing_extra(error: ModuleNotFoundError, prog: str) -> NoReturn:
    """For a script's imports: a module that an extra brings ends the script with one line, ``<prog> needs <module>,
    ... install the package's '<extra>' extra ...``, and exit status 2 (a user error); any other missing module is
    re-raised."""
    converted = missing_extra(error, prog)
    if converted is error:
        raise error
    print(converted, file=sys.stderr)
    raise SystemExit(2)


def require_modules(prog: str, *modules: str) -> None:
    """For a script, before its imports: the first of ``modules`` that this install lacks ends the script with the
    one line of :func:`exit_for_missing_extra` (the extra that installs it; status 2) instead of a traceback."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            exit_for_missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module), prog)


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
        if name not in exports and name not in submodules:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            if name in exports:
                value = getattr(importlib.import_module(f".{exports[name]}", package), name)
            else:
                value = importlib.import_module(f".{name}", package)
        except ModuleNotFoundError as e:
            raise missing_extra(e, f"{package}.{name}") from e
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        namespace = importlib.import_module(package).__dict__
        return sorted(set(namespace) | set(exports) | submodules)

    return __getattr__, __dir__
