"""The package's imports: what ``import modeling_mambavl`` loads, that every public name still resolves where it is
exported, no private name imported across modules, no import cycle."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import modeling_mambavl

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the module name it installs as (setup.cfg's package_dir).
SOURCE_PACKAGES = {"modeling_mambavl": "modeling_mambavl", "configuration": "modeling_mambavl.configuration",
                   "processors": "modeling_mambavl.processors"}
# Folders whose Python files must not import a private name of another module (tests may, of the module they test).
CHECKED_FOLDERS = ("modeling_mambavl", "configuration", "processors", "examples", "benchmarks")

# Loaded on first use only: the EK100 and training tools with their dependencies, the Hub helpers, the CLI.
PACKAGE_LAZY = ("modeling_mambavl.ek100", "modeling_mambavl.ek100.synthetic", "modeling_mambavl.training",
                "modeling_mambavl.hub", "modeling_mambavl.model_card", "modeling_mambavl.cli")
HEAVY = ("datasets", "evaluate", "pandas", "scipy", "accelerate", "peft", "matplotlib")


def _loaded_modules(code: str) -> set[str]:
    """``sys.modules`` of a fresh interpreter after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=300)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _all_modules() -> list[str]:
    return ["modeling_mambavl"] + sorted(m.name for m in pkgutil.walk_packages(modeling_mambavl.__path__,
                                                                                 "modeling_mambavl."))


def test_import_loads_no_heavy_module():
    """A fresh ``import modeling_mambavl`` registers the model but loads none of the EK100 / training tools, and of
    the heavy libraries only those transformers' own model classes load (it imports scipy and Accelerate when they
    are installed)."""
    loaded = _loaded_modules(
        "import modeling_mambavl\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "from transformers.models.auto.modeling_auto import MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING\n"
        "from transformers.models.auto.processing_auto import PROCESSOR_MAPPING\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "config = CONFIG_MAPPING['mambavl']\n"
        "assert MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING[config].__name__ == 'MambaVLForVideoClassification'\n"
        "assert PROCESSOR_MAPPING[config].__name__ == 'MambaVLProcessor'\n"
        "assert 'video-question-classification' in PIPELINE_REGISTRY.get_supported_tasks()"
    )
    assert not [m for m in PACKAGE_LAZY if m in loaded]
    by_transformers = _loaded_modules(
        "import transformers\nfrom transformers import PreTrainedModel, AutoModelForVideoClassification, AutoProcessor")
    extra = sorted(m for m in HEAVY if m in loaded and m not in by_transformers)
    assert not extra, f"import modeling_mambavl loads {extra}, which transformers' own model classes do not"
    assert "datasets" not in loaded and "pandas" not in loaded and "evaluate" not in loaded
    # Building and running a model reads the shipped class names (ek100/vocabulary.py, the standard library only),
    # nothing more of the EK100 tools.
    used = _loaded_modules(
        "import torch, modeling_mambavl\n"
        "config = modeling_mambavl.MambaVLConfig.from_preset('tiny')\n"
        "model = modeling_mambavl.MambaVLForVideoClassification(config).eval()\n"
        "model(pixel_values=torch.zeros(1, config.num_frames, 3, config.image_size, config.image_size),\n"
        "      question_input_ids=torch.ones(1, 2, 4, dtype=torch.long))"
    )
    ours = sorted(m for m in used - loaded if m.startswith("modeling_mambavl"))
    assert set(ours) <= {"modeling_mambavl.ek100", "modeling_mambavl.ek100.vocabulary"}, ours
    assert not [m for m in HEAVY if m in used and m not in loaded]


def test_cli_help_imports_nothing_beyond_the_package():
    """``mambavl --help`` (and each command's ``--help``) parses arguments only: no module of the package but the CLI
    and no heavy library is imported on top of ``import modeling_mambavl``."""
    code = (
        "import sys, json, contextlib, io\n"
        "import modeling_mambavl\n"
        "before = set(sys.modules)\n"
        "from modeling_mambavl.cli import main\n"
        "for argv in (['--help'], ['predict', '--help'], ['eval', '--help'], ['card', '--help']):\n"
        "    try:\n"
        "        with contextlib.redirect_stdout(io.StringIO()):\n"
        "            main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    added = json.loads(out.stdout.strip().splitlines()[-1])
    ours = [m for m in added if m.startswith("modeling_mambavl") and m != "modeling_mambavl.cli"]
    assert not ours, f"--help imported {ours}"
    assert not [m for m in added if m.split(".")[0] in HEAVY + ("torch", "transformers")]


def test_inference_install_imports_and_names_the_missing_extra():
    """Where the ``ek100`` / ``train`` extras are not installed (their libraries blocked here), the package still
    imports and registers the model, and using an EK100 tool names the extra that installs what it lacks."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys\n"
         "for name in ('datasets', 'evaluate', 'pandas', 'peft', 'matplotlib'):\n"
         "    sys.modules[name] = None  # an import of it fails as if it were not installed\n"
         "import modeling_mambavl\n"
         "from transformers import AutoConfig\n"
         "print(type(AutoConfig.for_model('mambavl')).__name__)\n"
         "try:\n"
         "    modeling_mambavl.ek100.load_ek100\n"
         "except ModuleNotFoundError as e:\n"
         "    print(e)\n"],
        capture_output=True, text=True, check=True, timeout=300)
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "MambaVLConfig"
    assert lines[1].startswith("modeling_mambavl.ek100.load_ek100 needs datasets") and "pip install -e '.[ek100]'" in \
        lines[1], lines


BLOCK_EXTRAS = ("import sys\n"
                "for name in ('datasets', 'evaluate', 'pandas', 'accelerate', 'peft', 'matplotlib'):\n"
                "    sys.modules[name] = None  # an import of it fails as if it were not installed\n")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import modeling_mambavl.training.evaluation",
         "ModuleNotFoundError: modeling_mambavl.ek100.annotations needs datasets, which this install lacks: install "
         "the package's 'ek100' extra (in its checkout: pip install -e '.[ek100]')"),
        ("from modeling_mambavl.cli import main\n"
         "sys.exit(main(['eval', '--model', 'm', '--annotations', 'a', '--media-root', 'r']))",
         "mambavl eval: this command needs datasets, which this install lacks: install the package's 'ek100' extra "
         "(in its checkout: pip install -e '.[ek100]')"),
        *[(f"import runpy\nsys.argv = ['{name}', '--help']\nrunpy.run_path('{REPO / 'examples' / name}', "
           "run_name='__main__')",
           f"{name} needs {needs}, which this install lacks: install the package's '{extra}' extra (in its "
           f"checkout: pip install -e '.[{extra}]')")
          for name, needs, extra in [("eval_ek100.py", "accelerate", "train"), ("train_ek100.py", "accelerate", "train"),
                                     ("demo.py", "accelerate", "train"), ("extract_features.py", "datasets", "ek100")]],
    ],
    ids=["module", "mambavl-eval", "eval_ek100", "train_ek100", "demo", "extract_features"],
)
def test_what_needs_an_extra_says_which_in_one_line(code, expected):
    """Where the ``ek100`` / ``train`` extras are not installed: importing a module that needs one names the extra,
    and ``mambavl eval`` and the example scripts end with that one line and status 2 instead of a traceback (they
    ended with "No module named 'accelerate'" / "'datasets'" before)."""
    out = subprocess.run([sys.executable, "-c", BLOCK_EXTRAS + code], capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert lines and lines[-1] == expected, out.stderr[-2000:]
    if not code.startswith("import modeling_mambavl"):  # the command and the scripts: a user error
        assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]


def test_lazy_subpackages_are_attributes():
    """``modeling_mambavl.ek100`` and the other lazily loaded modules work as attributes without an import
    statement, as they did when the package imported them eagerly."""
    out = subprocess.run(
        [sys.executable, "-c", "import modeling_mambavl as m\n"
         "print(m.ek100.load_ek100.__module__, m.ek100.metric.EK100Metric.__name__, m.training.__name__, "
         "m.cli.main.__name__, m.hub.__name__, 'ek100' in dir(m), 'EK100Metric' in dir(m.ek100))"],
        capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["modeling_mambavl.ek100.annotations", "EK100Metric", "modeling_mambavl.training",
                                  "main", "modeling_mambavl.hub", "True", "True"]
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        modeling_mambavl.not_a_name  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        modeling_mambavl.ek100.not_a_name  # noqa: B018


@pytest.mark.parametrize("module", _all_modules())
def test_every_exported_name_resolves(module):
    """Every name in a module's ``__all__`` is importable from it (``from module import name``)."""
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", [])
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names {missing}, which do not resolve"
    for name in names:
        exec(f"from {module} import {name}", {})


def test_design_public_api_imports():
    from modeling_mambavl import (  # noqa: F401
        MambaVLConfig,
        MambaVLForVideoClassification,
        MambaVLModel,
        MambaVLProcessor,
        MambaVLVideoProcessor,
    )
    from modeling_mambavl.ek100 import (  # noqa: F401
        EK100Metric,
        EK100Vocabulary,
        load_ek100,
        make_synthetic_ek100,
        write_submission,
    )
    from modeling_mambavl.ops import selective_scan  # noqa: F401

    assert EK100Vocabulary.default().num_verbs == 97


# --------------------------------------------------------------------------------------------------- static checks
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


def _source_files(folders) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


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


def _import_graph() -> dict[str, set[str]]:
    """Package module -> package modules it imports when it is imported (top-level imports only)."""
    files = {_module_name(p): p for p in _source_files(SOURCE_PACKAGES)}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=True):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _absolute(path, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[module] |= {t for t in targets if t in files and t != module}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
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


def test_no_import_cycle():
    graph = _import_graph()
    assert "modeling_mambavl.processors.processing" in graph["modeling_mambavl.auto"]  # the graph sees imports
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_one():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
