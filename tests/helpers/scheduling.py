"""How `make test` shares the suite between pytest-xdist workers (``--dist loadscope``, made by conftest.py).

The tests of a module that ask (directly or through another fixture) for a fixture set up once per module or class
(a trained run, a server, a data set) are one unit of work, so that one worker builds it once; every other test is a
unit of its own, so that the short tests fill the gaps. A module marked ``pytestmark = pytest.mark.xdist_group(...)``
(state kept another way, e.g. a module-level memo of slow reference results) is one unit. Session-scoped fixtures
are built once per worker. The workers collect the ``slow`` tests first (conftest.py) and the units go out in
collection order: the long runs start at once, and the last minutes are not one worker running a long test alone.

xdist's own ``--dist loadgroup`` would say this with ``xdist_group`` marks on each test, but pytest-xdist 3.8 tags the
node ids through an attribute that pytest 9 no longer reads, so the marks group nothing. The controller process that
schedules has collected nothing, so the scheduler reads the test file's source.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from xdist.scheduler import LoadScopeScheduling

_SHARED_SCOPES = {"module", "class", "package"}


def _fixture_scope(node: ast.FunctionDef) -> tuple[str, bool] | None:
    """(scope, autouse) when ``node`` is a ``@pytest.fixture``, else None."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        if not (isinstance(target, ast.Attribute) and target.attr == "fixture") and not (
                isinstance(target, ast.Name) and target.id == "fixture"):
            continue
        keywords = {k.arg: k.value for k in call.keywords} if call else {}
        scope = keywords.get("scope")
        autouse = keywords.get("autouse")
        return (scope.value if isinstance(scope, ast.Constant) else "function",
                isinstance(autouse, ast.Constant) and autouse.value is True)
    return None


def _arguments(node: ast.FunctionDef) -> set[str]:
    return {a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs}


@cache
def shared_state_tests(test_file: str) -> frozenset[str] | None:
    """The names of the test functions (and classes) of ``test_file`` that share module state; None when the whole
    module does (or the file cannot be read)."""
    try:
        tree = ast.parse(Path(test_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    fixtures: dict[str, tuple[str, bool, set[str]]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark"
                                                for t in node.targets) and "xdist_group" in ast.unparse(node.value):
            return None
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (found := _fixture_scope(node)):
            fixtures[node.name] = (*found, _arguments(node))
        if isinstance(node, ast.ClassDef) and any(isinstance(n, ast.FunctionDef) and _fixture_scope(n)
                                                  for n in node.body):
            return None  # fixtures inside a test class: keep it simple, one unit
    if any(scope in _SHARED_SCOPES and autouse for scope, autouse, _ in fixtures.values()):
        return None

    @cache
    def shares(name: str) -> bool:
        scope, _, needs = fixtures[name]
        return scope in _SHARED_SCOPES or any(shares(n) for n in needs if n in fixtures and n != name)

    shared = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            if any(shares(n) for n in _arguments(node) if n in fixtures):
                shared.add(node.name)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            shared.add(node.name)  # a test class is one unit, as loadscope makes it
    return frozenset(shared)


class ModuleStateScheduling(LoadScopeScheduling):
    """``loadscope`` with a finer split: the tests of a module travel together only when they share module state."""

    def _split_scope(self, nodeid: str) -> str:
        test_file, _, rest = nodeid.partition("::")
        shared = shared_state_tests(str(Path(str(self.config.rootpath)) / test_file))
        name = rest.split("::", 1)[0].split("[", 1)[0]
        return test_file if shared is None or name in shared else nodeid
