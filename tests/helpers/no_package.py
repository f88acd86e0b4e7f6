"""Running a script where the mambavl package is not installed: only transformers, torch, torchvision and av, as a
user who loads a checkpoint with ``trust_remote_code=True`` has them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Prepended to every script: the package becomes unimportable (an import raises ModuleNotFoundError), as in an
# environment where it was never installed.
PRELUDE = textwrap.dedent(
    """
    import importlib.abc, sys

    class _NotInstalled(importlib.abc.MetaPathFinder):
        # Behave as if the mambavl package were not installed at all.
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_mambavl" or name.startswith("modeling_mambavl."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, _NotInstalled())
    """
)


def run_without_package(script: str, *args: str | os.PathLike, workdir: Path, timeout: float = 300) -> str:
    """Run ``script`` (Python source) in a fresh interpreter without the package; return its stdout.

    ``workdir`` holds the script and transformers' remote-code module cache (``HF_MODULES_CACHE``), so nothing is
    written elsewhere. Fails (AssertionError with the stderr tail) on a non-zero exit or when the script does not
    print ``ISOLATED-OK`` at its end.
    """
    path = workdir / "isolated_script.py"
    path.write_text(PRELUDE + textwrap.dedent(script) + '\nassert "modeling_mambavl" not in sys.modules\n'
                    'print("ISOLATED-OK")\n', encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"))
    result = subprocess.run([sys.executable, str(path), *map(str, args)], env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0 and "ISOLATED-OK" in result.stdout, result.stderr[-3000:]
    return result.stdout
