"""Atomic checkpoints: complete or absent, never half; resuming after a kill equals an uninterrupted run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_mambavl.training import checkpointing

TOY = Path(__file__).parent / "helpers" / "toy_train.py"


def _run(out: Path, steps: int, fault: str | None = None, resume: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("MAMBAVL_FAULT", None)
    if fault:
        env["MAMBAVL_FAULT"] = fault
    cmd = [sys.executable, str(TOY), str(out), str(steps)] + (["--resume"] if resume else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _final(out: Path) -> dict:
    return torch.load(out / "final_state.pt", weights_only=True)


def _assert_same_state(a: dict, b: dict) -> None:
    assert all(torch.equal(x, y) for x, y in zip(a["params"], b["params"], strict=True))
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][name], sb[k][name]), (k, name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = _run(out, 5)
    assert proc.returncode == 0, proc.stderr
    checkpoints = checkpointing.list_checkpoints(out)
    assert [p.name for p in checkpoints] == ["checkpoint-00000004", "checkpoint-00000005"]  # total_limit=2
    return _final(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault, last_complete",
    [
        ("after_step:3", 2),
        ("during_save:model", 0),
        ("during_save:optimizer", 0),
        ("before_rename", 0),
        ("after_rename", 1),
    ],
)
def test_kill_then_resume_equals_uninterrupted(tmp_path, uninterrupted, fault, last_complete):
    proc = _run(tmp_path, 5, fault=fault)
    assert proc.returncode == -9, proc.stderr  # SIGKILL, by the process itself
    complete = checkpointing.list_checkpoints(tmp_path)
    assert (int(complete[-1].name.split("-")[1]) if complete else 0) == last_complete
    # Whatever the kill left behind (a half-written or not-yet-renamed folder) is never taken for a checkpoint.
    leftovers = [p for p in tmp_path.iterdir() if p.is_dir() and p not in complete]
    assert all(p.name.startswith(".tmp-") or not checkpointing.is_complete(p) for p in leftovers)
    assert checkpointing.resolve_resume_checkpoint(tmp_path, "latest") == (complete[-1] if complete else None)
    proc = _run(tmp_path, 5, resume=True)
    assert proc.returncode == 0, proc.stderr
    _assert_same_state(_final(tmp_path), uninterrupted)


@pytest.mark.slow
def test_full_disk_keeps_previous_checkpoint(tmp_path):
    assert _run(tmp_path, 2).returncode == 0
    before = checkpointing.list_checkpoints(tmp_path)
    proc = _run(tmp_path, 3, fault="enospc:optimizer", resume=True)
    assert proc.returncode != 0 and "No space left on device" in proc.stderr
    assert checkpointing.list_checkpoints(tmp_path) == before
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_tampered_checkpoint_is_refused(tmp_path):
    assert _run(tmp_path, 1).returncode == 0
    folder = checkpointing.list_checkpoints(tmp_path)[-1]
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"\0")
    assert not checkpointing.is_complete(folder)
    with pytest.raises(checkpointing.CheckpointError, match="incomplete"):
        checkpointing.resolve_resume_checkpoint(tmp_path, str(folder))
    assert checkpointing.resolve_resume_checkpoint(tmp_path, "latest") is None


def test_marker_lists_every_file(tmp_path):
    assert _run(tmp_path, 1).returncode == 0
    folder = checkpointing.list_checkpoints(tmp_path)[-1]
    files = json.loads((folder / checkpointing.COMPLETE_MARKER).read_text())["files"]
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "trainer_state.json"} <= set(files)
