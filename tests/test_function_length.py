"""A standing rule of the code base: no function in the package (``modeling_mambavl/``, ``configuration/``,
``processors/``) or in ``examples/`` is longer than 150 lines, GPU kernels (``@triton.jit``) excepted."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("modeling_mambavl", "configuration", "processors", "examples")
LIMIT = 150


def _is_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any("jit" in ast.unparse(d) for d in node.decorator_list)


def test_no_function_is_longer_than_150_lines():
    files = [p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]
    assert len(files) > 40
    too_long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_kernel(node):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, "split these functions into named steps:\n" + "\n".join(too_long)
