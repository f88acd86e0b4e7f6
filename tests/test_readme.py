"""Every ```python block of README.md runs, as written, in a sandbox folder holding what the README refers to.

- Blocks are found when the tests are collected, so a block added later is tested without touching this file. Each
  block runs on its own, in a fresh namespace (a reader may copy any one of them).
- A block whose first line is ``# README test: skipped, needs the network (...)`` (or ``needs a GPU``) is reported
  as skipped with that reason; no other block is skipped.
- The sandbox is the current folder of the blocks: ``outputs/demo/best_model`` (the folder ``make demo`` writes) is
  a tiny randomly initialised checkpoint saved with its processor; ``../shared/data/videos/...`` and ``clip.mp4`` are
  the shared Big Buck Bunny clip (a synthetic 6-s clip where the shared data is absent); ``P01_11.MP4`` and
  ``rgb_frames/P01/P01_11`` are a small video and a 60-fps frame folder; ``epic-kitchens-100-annotations`` and
  ``EPIC-KITCHENS`` a small synthetic EK100 data set. Placeholder Hub ids (``<your-org>/...``) stand for the tiny
  checkpoint.
- The ``mambavl`` commands of the README that use ``outputs/demo/best_model`` run too, through the CLI's ``main``.

All blocks run in one subprocess (one import of torch and transformers), whose Hugging Face caches are in the
sandbox, so nothing is written elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_checkpoint import BBB, tiny_checkpoint, write_test_video

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_MARKER = re.compile(r"^# README test: skipped, needs (the network|a GPU)\b(.*)$")
PLACEHOLDER_ID = re.compile(r"<your-org>/[\w.-]+")
DEMO_MODEL = "outputs/demo/best_model"
SHARED_CLIP = "../shared/data/videos/bigbuckbunny_720p_5s.mp4"


def _blocks(kind: str) -> list[tuple[int, str]]:
    """(first line number, source) of every ```kind block of the README."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if current is None and line.strip() == f"```{kind}":
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            blocks.append((start, "\n".join(current) + "\n"))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


PYTHON_BLOCKS = _blocks("python")
COMMANDS = [line.split("  #")[0].strip() for _, block in _blocks("bash") for line in block.splitlines()
            if line.startswith("mambavl ") and DEMO_MODEL in line]


def _skip_reason(source: str) -> str | None:
    match = SKIP_MARKER.match(source.splitlines()[0]) if source.strip() else None
    return f"needs {match.group(1)}{match.group(2)}" if match else None


_RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys, traceback

    import matplotlib
    matplotlib.use("Agg")

    jobs, results = json.load(open(sys.argv[1])), {}
    for key, kind, source in jobs:
        try:
            with contextlib.redirect_stdout(io.StringIO()) as out:
                if kind == "python":
                    exec(compile(source, f"README.md block {key}", "exec"), {"__name__": "__readme__"})
                else:
                    from modeling_mambavl.cli import main
                    code = main(source)
                    assert code in (0, None), f"exit status {code}"
            results[key] = {"ok": True, "stdout": out.getvalue()}
        except BaseException:
            results[key] = {"ok": False, "error": traceback.format_exc()[-4000:]}
    json.dump(results, open(sys.argv[2], "w"))
    """
)


def _frame_folder(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        pixels = np.full((32, 40, 3), (4 * i) % 256, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"frame_{i + 1:010d}.jpg")


def _sandbox(root: Path) -> tuple[Path, Path]:
    """The folder the blocks run in, with every file they name; returns (that folder, the tiny checkpoint)."""
    from modeling_mambavl.ek100 import make_synthetic_ek100

    work = root / "repo"
    checkpoint = work / DEMO_MODEL
    tiny_checkpoint(checkpoint)
    clip = work / SHARED_CLIP
    clip.parent.mkdir(parents=True)
    if BBB.is_file():
        clip.symlink_to(BBB)
    else:
        write_test_video(clip, num_frames=180)
    (work / "clip.mp4").symlink_to(clip.resolve())
    write_test_video(work / "P01_11.MP4", num_frames=180)  # 6 s at 30 fps
    _frame_folder(work / "rgb_frames" / "P01" / "P01_11", 120)  # 2 s at 60 fps
    data = make_synthetic_ek100(root / "synthetic", num_train=12, num_validation=12, num_test=12, clips_per_video=4,
                                size=32, video=False, features=False)
    (work / "epic-kitchens-100-annotations").symlink_to(data.annotations_dir)
    (work / "EPIC-KITCHENS").symlink_to(data.media_root)
    return work, checkpoint


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("readme")
    work, checkpoint = _sandbox(root)
    jobs = [(str(line), "python", PLACEHOLDER_ID.sub(str(checkpoint), source))
            for line, source in PYTHON_BLOCKS if _skip_reason(source) is None]
    jobs += [(command, "command", shlex.split(command)[1:]) for command in COMMANDS]
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = dict(os.environ, HF_HOME=str(root / "hf_home"), HF_MODULES_CACHE=str(root / "modules"),
               MPLCONFIGDIR=str(root / "mpl"))
    (root / "runner.py").write_text(_RUNNER)
    proc = subprocess.run([sys.executable, str(root / "runner.py"), str(root / "jobs.json"), str(root / "out.json")],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and (root / "out.json").is_file(), proc.stderr[-4000:]
    return json.loads((root / "out.json").read_text())


def test_the_readme_has_blocks_and_markers():
    assert len(PYTHON_BLOCKS) >= 6
    skipped = [line for line, source in PYTHON_BLOCKS if _skip_reason(source)]
    assert skipped and len(skipped) < len(PYTHON_BLOCKS) / 2, skipped
    # The quick tour's pipeline snippet and its command use the demo's model on the shared clip.
    assert any(DEMO_MODEL in source and SHARED_CLIP in source for _, source in PYTHON_BLOCKS)
    assert any(command.startswith("mambavl predict " + SHARED_CLIP) for command in COMMANDS), COMMANDS
    text = README.read_text(encoding="utf-8")
    assert not re.search(r"(?<![\w<>-])org/mambavl", text)  # every Hub id of ours is marked as a placeholder


@pytest.mark.parametrize("line, source", PYTHON_BLOCKS, ids=[f"line{line}" for line, _ in PYTHON_BLOCKS])
def test_readme_python_block_runs(results, line, source):
    reason = _skip_reason(source)
    if reason is not None:
        pytest.skip(f"README.md block at line {line} {reason}")
    result = results[str(line)]
    assert result["ok"], f"README.md block at line {line} failed:\n{result['error']}"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(results, command):
    result = results[command]
    assert result["ok"], f"README.md command {command!r} failed:\n{result['error']}"
    assert "verb" in result["stdout"].lower() and "noun" in result["stdout"].lower(), result["stdout"]
