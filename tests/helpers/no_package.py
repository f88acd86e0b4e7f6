"""Running a script in a virtual environment without the mambavl package: only transformers, torch, torchvision and
av (and what they import), as a user who loads a checkpoint with ``trust_remote_code=True`` has them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import torch
import torchvision
import transformers

# The venv's sitecustomize: the package becomes unimportable (an import raises ModuleNotFoundError), even where
# a folder on the path would hold it, as in an environment where it was never installed.
BLOCKER = textwrap.dedent(
    '''
    """Refuse to import the mambavl package: this environment stands for one where it is not installed."""
    import importlib.abc
    import sys


    class _NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_mambavl" or name.startswith("modeling_mambavl."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None


    sys.meta_path.insert(0, _NotInstalled())
    '''
)


def isolated_python(root: Path) -> str:
    """A fresh venv under ``root`` that sees the current environment's torch, torchvision, transformers and av (its
    site-packages folder, without running that folder's ``.pth`` files, so the editable install of the package is not
    seen) but not the package; returns its python."""
    venv = root / "venv-without-mambavl"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
        site = next((venv / "lib").glob("python*/site-packages"))
        deps = sorted({str(Path(m.__file__).resolve().parents[1]) for m in (torch, torchvision, transformers, av)})
        (site / "environment.pth").write_text("\n".join(deps) + "\n")
        (site / "sitecustomize.py").write_text(BLOCKER)
    return str(venv / "bin" / "python")


def run_without_package(script: str, *args: str | os.PathLike, workdir: Path, timeout: float = 300) -> str:
    """Run ``script`` (Python source) with the python of :func:`isolated_python`; return its stdout.

    ``workdir`` holds the venv, the script and transformers' remote-code module cache (``HF_MODULES_CACHE``), so
    nothing is written elsewhere. Fails (AssertionError with the stderr tail) on a non-zero exit or when the script
    does not reach its end (it is followed by a check that the package was never imported).
    """
    path = workdir / "isolated_script.py"
    path.write_text("import sys\n" + textwrap.dedent(script) + '\nassert "modeling_mambavl" not in sys.modules\n'
                    'print("ISOLATED-OK")\n', encoding="utf-8")
    env = dict(os.environ, HF_MODULES_CACHE=str(workdir / "modules"))
    result = subprocess.run([isolated_python(workdir), str(path), *map(str, args)], env=env, capture_output=True,
                            text=True, timeout=timeout, cwd=workdir)
    assert result.returncode == 0 and "ISOLATED-OK" in result.stdout, result.stderr[-3000:]
    return result.stdout
