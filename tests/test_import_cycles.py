"""The package's modules import each other without a cycle (every import statement counts, also one inside a
function; a name imported from a package's ``__init__`` counts as imported from the module that defines it)."""

import ast
from pathlib import Path

import modeling_mambavl
import modeling_mambavl.configuration
import modeling_mambavl.processors


def _modules() -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is a package __init__)}`` of the installed package (its subpackages
    ``configuration`` and ``processors`` live in sibling folders of the source tree)."""
    roots = {name: Path(module.__file__).parent for name, module in (
        ("modeling_mambavl", modeling_mambavl),
        ("modeling_mambavl.configuration", modeling_mambavl.configuration),
        ("modeling_mambavl.processors", modeling_mambavl.processors),
    )}
    out = {}
    for prefix, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out.setdefault(".".join([prefix, *parts]), (path, path.name == "__init__.py"))
    return out


def _defining(modules: dict, package: str, attr: str) -> str:
    """The module whose ``attr`` the ``__init__`` of ``package`` re-exports (``from .x import attr``)."""
    for node in ast.parse(modules[package][0].read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            if any((a.asname or a.name) == attr for a in node.names):
                target = f"{package}.{node.module}"
                if target in modules and modules[target][1]:
                    return _defining(modules, target, attr)
                return target if target in modules else package
    return package


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        base, targets = (name if is_package else name.rsplit(".", 1)[0]).split("."), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                module = ".".join([*base[: len(base) - node.level + 1], node.module or ""]).strip(".") \
                    if node.level else node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    if sub in modules:
                        targets.add(sub)
                    elif module in modules and modules[module][1]:
                        targets.add(_defining(modules, module, alias.name))
                    else:
                        targets.add(module)
        graph[name] = set()
        for target in targets:
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_is_read_and_has_no_cycle():
    graph = _graph()
    # The walk sees the package: the annotation reader and the media pipeline both use the EK100 layout module.
    assert "modeling_mambavl.ek100.layout" in graph["modeling_mambavl.ek100.annotations"]
    assert "modeling_mambavl.ek100.layout" in graph["modeling_mambavl.ek100.media"]
    assert "modeling_mambavl.processors.video_io" in graph["modeling_mambavl.ek100.media"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_is_found_and_named():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
