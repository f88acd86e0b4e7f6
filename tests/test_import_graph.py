"""The package's import graph, read from the source files: no import cycle (neither among the imports that run when a
module is imported nor among every import statement, also one inside a function), and no private name imported
across modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the module name it installs as (setup.cfg's package_dir).
SOURCE_PACKAGES = {"modeling_mambavl": "modeling_mambavl", "configuration": "modeling_mambavl.configuration",
                   "processors": "modeling_mambavl.processors"}
# Folders whose Python files must not import a private name of another module (tests may, of the module they test).
CHECKED_FOLDERS = ("modeling_mambavl", "configuration", "processors", "examples", "benchmarks")


def _source_files(folders) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


def _module_name(path: Path) -> str:
    """The installed module name of a package source file (``processors/masking.py`` ->
    ``modeling_mambavl.processors.masking``)."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    parts[0] = SOURCE_PACKAGES[parts[0]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` in a package file."""
    if node.level == 0:
        return node.module or ""
    base = _module_name(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, top_level_only: bool):
    """Import nodes of a module: all of them, or those that run when it is imported (not inside a function body and
    not under ``if TYPE_CHECKING:``)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            elif top_level_only and (isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                                     or isinstance(child, ast.If) and _is_type_checking(child)):
                continue
            else:
                stack.append(child)


# ------------------------------------------------------------------------------------------------------ cycles
def _defining(files: dict[str, Path], package: str, attr: str) -> str:
    """The module whose ``attr`` the ``__init__`` of ``package`` re-exports (``from .x import attr``)."""
    path = files[package]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            if any((a.asname or a.name) == attr for a in node.names):
                target = f"{package}.{node.module}"
                if target in files and files[target].name == "__init__.py":
                    return _defining(files, target, attr)
                return target if target in files else package
    return package


def import_graph(*, every_import: bool) -> dict[str, set[str]]:
    """Package module -> the package modules it imports.

    ``every_import=False``: the imports that run when the module is imported (top level, not under
    ``TYPE_CHECKING``), a name imported from a package counting as imported from that package's ``__init__``.
    ``every_import=True``: every import statement, also one inside a function, and a name imported from a package's
    ``__init__`` counts as imported from the module that defines it (a lazy import is still a dependency).
    """
    files = {_module_name(p): p for p in _source_files(SOURCE_PACKAGES)}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=not every_import):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = _absolute(path, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in files:
                    targets.add(sub)
                elif every_import and base in files and files[base].name == "__init__.py":
                    targets.add(_defining(files, base, alias.name))
                else:
                    targets.add(base)
        for target in targets:
            while target not in files and "." in target:  # ``import a.b.name``: the nearest module
                target = target.rsplit(".", 1)[0]
            if target in files and target != module:
                graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """The first import cycle of a depth-first walk in sorted order, as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("every_import", [False, True], ids=["at-import-time", "every-import"])
def test_no_import_cycle(every_import):
    graph = import_graph(every_import=every_import)
    # The walk sees the package's imports: the Auto registration imports the processor; the annotation reader and
    # the media pipeline both use the EK100 layout module, and decode with video_io (imported on first use).
    assert "modeling_mambavl.processors.processing" in graph["modeling_mambavl.auto"]
    assert "modeling_mambavl.ek100.layout" in graph["modeling_mambavl.ek100.annotations"]
    assert "modeling_mambavl.ek100.layout" in graph["modeling_mambavl.ek100.media"]
    if every_import:
        assert "modeling_mambavl.processors.video_io" in graph["modeling_mambavl.ek100.media"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found_and_named():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


# ------------------------------------------------------------------------------------------------ private names
def _private_part(dotted: str) -> int | None:
    """Index of the first private component of a dotted name (``__future__``-style dunders are not private)."""
    for i, part in enumerate(dotted.split(".")):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return i
    return None


def _private_imports(path: Path, tree: ast.AST) -> list[str]:
    """Imports in ``path`` of a private name of another module. A private module (``ops/_kernels.py``,
    ``benchmarks/_machine.py``) belongs to its package or folder: files of that package may import from it."""
    in_package = path.parts[len(REPO.parts)] in SOURCE_PACKAGES
    own = _module_name(path) if in_package else None
    folder = path.parent
    found = []
    for node in _imports(tree, top_level_only=False):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(path, node) if in_package else ("." * node.level + (node.module or ""))
            targets = [(module, a.name) for a in node.names]
        else:
            targets = [(a.name, None) for a in node.names]
        for module, name in targets:
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name is not None and _private_part(name) is not None and name != "*":
                found.append(f"{where}: {name} from {module}")
                continue
            i = _private_part(module.lstrip("."))
            if i is None:
                continue
            owner = ".".join(module.lstrip(".").split(".")[:i])  # the package the private module belongs to
            if in_package:
                inside = own == owner or (own or "").startswith(owner + ".") if owner else False
            else:  # scripts: a private module of their own folder (benchmarks/_machine.py)
                inside = i == 0 and node.level == 0 if isinstance(node, ast.ImportFrom) else i == 0
                inside = inside and (folder / f"{module.split('.')[0]}.py").is_file()
            if not inside:
                found.append(f"{where}: private module {module}")
    return found


def test_no_private_name_imported_across_modules():
    found = []
    for path in _source_files(CHECKED_FOLDERS):
        found += _private_imports(path, ast.parse(path.read_text(encoding="utf-8")))
    assert not found, "private names imported across modules (make them public or keep them in one module):\n" + \
        "\n".join(found)


def test_private_import_check_catches_one():
    """The checker itself: a package file importing another module's private name, or a module under another
    package's private module, is reported; a package-internal private module is not."""
    path = REPO / "processors" / "tokenizer.py"
    tree = ast.parse("from .masking import _words\nfrom ..ops._kernels import load_library\nfrom . import masking\n")
    assert [f.split(": ", 1)[1] for f in _private_imports(path, tree)] == [
        "_words from modeling_mambavl.processors.masking", "private module modeling_mambavl.ops._kernels"]
    inside = REPO / "modeling_mambavl" / "ops" / "cpu.py"
    assert _private_imports(inside, ast.parse("from ._kernels import load_library\n")) == []
