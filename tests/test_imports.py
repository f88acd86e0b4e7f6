"""The cost of importing the package: what ``import modeling_mambavl`` and ``mambavl --help`` load (the EK100 and
training tools and their heavy libraries only on first use), and that every public name still resolves where it is
exported. The import graph itself (cycles, private names) is checked in test_import_graph.py."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import modeling_mambavl

REPO = Path(__file__).resolve().parents[1]

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
                                     ("demo.py", "accelerate", "train"), ("extract_features.py", "datasets", "ek100"),
                                     ("cascade_ek100.py", "datasets", "ek100")]],
    ],
    ids=["module", "mambavl-eval", "eval_ek100", "train_ek100", "demo", "extract_features", "cascade_ek100"],
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
