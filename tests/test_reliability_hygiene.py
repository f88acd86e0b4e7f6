"""Nothing the package or its scripts do by default writes into the repository or outside the user's redirected
home and caches: with ``HOME``, ``XDG_CACHE_HOME``, ``HF_HOME`` and ``TMPDIR`` pointed into a temporary folder, a
training run started from the repository root (synthetic data, clip cache, training curves plot) leaves ``git status``
(ignored files included) as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "examples" / "train_ek100.py"


def _redirected(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("MAMBAVL_CACHE", "MAMBAVL_KERNEL_CACHE", "MAMBAVL_FAULT", "MPLCONFIGDIR", "XDG_CONFIG_HOME"):
        env.pop(name, None)
    home = tmp_path / "home"
    for sub in ("", "cache", "hf", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), HF_HOME=str(home / "hf"), TMPDIR=str(home / "tmp"),
               OMP_NUM_THREADS="1")
    return env


def _repo_state() -> set[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    # Byte-code caches are Python's own, next to every imported module; the virtual environment is the installed
    # libraries' (a test running alongside, e.g. the Space's gradio, writes its own files into site-packages).
    return {line for line in out.splitlines()
            if "__pycache__" not in line and not line.endswith(".pyc") and not line.lstrip('!? "').startswith(".venv/")}


def test_caches_follow_the_environment(tmp_path, monkeypatch):
    from modeling_mambavl.ops import build
    from modeling_mambavl.training.builders import default_cache_dir

    env = _redirected(tmp_path)
    for name in ("MAMBAVL_CACHE", "MAMBAVL_KERNEL_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, env[name])
    assert default_cache_dir().is_relative_to(tmp_path)
    assert build.cache_dir().is_relative_to(Path(env["XDG_CACHE_HOME"]))


@pytest.mark.slow
def test_training_from_the_repo_root_writes_only_where_told(tmp_path):
    before = _repo_state()
    env = _redirected(tmp_path)
    out = tmp_path / "run"
    args = ["--synthetic_train_clips", "12", "--synthetic_validation_clips", "12", "--synthetic_size", "32",
            "--config_overrides", '{"image_size": 32, "vision_config": {"image_size": 32}}', "--output_dir", str(out),
            "--num_workers", "0", "--num_threads", "1", "--cache_clips", "--max_train_steps", "1",
            "--per_device_train_batch_size", "6"]
    proc = subprocess.run([sys.executable, str(TRAIN), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The default data cache went into the redirected home, the plot was drawn, the repository is unchanged.
    assert any((tmp_path / "home" / ".cache" / "mambavl").glob("synthetic-*"))
    assert (out / "training_curves.png").is_file()
    assert _repo_state() == before
