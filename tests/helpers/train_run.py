"""Shared by the training / evaluation tests: one small synthetic data set per test session, and running the example
scripts as real subprocesses (offline, one thread, no data-loader workers)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from helpers.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "examples" / "train_ek100.py"
EVAL = REPO / "examples" / "eval_ek100.py"

# The smallest synthetic set the generator makes (12 clips a split), at 32 px; the tiny preset at 32 px
# (VideoMAE patch 16: 2 x 2 x 4 = 16 video tokens).
SYNTHETIC = {"num_train": 12, "num_validation": 12, "size": 32}
SMALL_MODEL = {"image_size": 32, "vision_config": {"image_size": 32}}


def synthetic_cache(tmp_path_factory) -> Path:
    """The session's cache folder holding the synthetic data (built on first use, reused after)."""
    from modeling_mambavl.training.builders import resolve_data

    cache = tmp_path_factory.getbasetemp() / "mambavl-train-cache"
    resolve_data(None, None, "frames", cache_dir=cache, synthetic=SYNTHETIC)
    return cache


def synthetic_root(cache: Path) -> Path:
    """The synthetic data set's folder (annotations/, rgb_frames/) inside the session's cache."""
    (root,) = [p for p in cache.iterdir() if p.name.startswith("synthetic-")]
    return root


def copy_dataset(cache: Path, dest: Path) -> tuple[Path, Path]:
    """(annotations folder, media root) of a private copy of the session's synthetic data (annotations, frames)
    that a test may break."""
    shutil.copytree(synthetic_root(cache), dest)
    return dest / "annotations", dest


def break_clip(media: Path, annotations: Path, split: str, index: int) -> str:
    """Replace every frame of clip ``index`` of ``split`` by a non-image file; returns its narration id."""
    with open(annotations / f"EPIC_100_{split}.csv", newline="", encoding="utf-8") as f:
        row = list(csv.DictReader(f))[index]
    folder = media / "rgb_frames" / row["participant_id"] / row["video_id"]
    for frame in range(int(row["start_frame"]), int(row["stop_frame"]) + 2):
        path = folder / f"frame_{frame:010d}.jpg"
        if path.exists():
            path.write_bytes(b"this is not a jpeg")
    return row["narration_id"]


def data_args(cache: Path) -> list[str]:
    """The data options (shared by train_ek100.py and eval_ek100.py) that select the session's synthetic data."""
    return [
        "--data_cache_dir", str(cache),
        "--synthetic_train_clips", str(SYNTHETIC["num_train"]),
        "--synthetic_validation_clips", str(SYNTHETIC["num_validation"]),
        "--synthetic_size", str(SYNTHETIC["size"]),
        "--num_workers", "0",
        "--cache_clips",
    ]


def script_args(cache: Path, output_dir: Path, *extra: str) -> list[str]:
    """Arguments of a small training run on the session's data."""
    return [
        *data_args(cache),
        "--config_overrides", json.dumps(SMALL_MODEL),
        "--output_dir", str(output_dir),
        "--num_threads", "1",
        "--no_plot",
        *extra,
    ]


def environment(fault: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MAMBAVL_FAULT", None)
    env.update(OMP_NUM_THREADS="1")
    if fault:
        env["MAMBAVL_FAULT"] = fault
    env.update(extra or {})
    return env


def two_cpu_processes() -> list[str]:
    """The `accelerate launch` command of two real processes on a CPU machine: `--cpu --num_processes 2` starts only
    one; `--multi_gpu` with no visible GPU starts two on gloo. Each launch gets its own free rendezvous port, so that
    two launches at once (pytest-xdist workers) do not meet on accelerate's default 29500."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
            "--dynamo_backend", "no"]


TWO_CPU_PROCESSES_ENV = {"CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true"}


def run(script: Path, args: list[str], fault: str | None = None, launcher: list[str] | None = None,
        timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + [str(script)] + args
    return subprocess.run(cmd, env=environment(fault, env), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def checkpoint_state(folder: Path) -> tuple[dict, dict]:
    """(weights, optimizer state dict) of a training checkpoint folder."""
    from safetensors.torch import load_file

    weights = load_file(str(folder / "model.safetensors"))
    optimizer = torch.load(folder / "optimizer.bin", weights_only=False)
    return weights, optimizer


def assert_same_state(a: Path, b: Path) -> None:
    wa, oa = checkpoint_state(a)
    wb, ob = checkpoint_state(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ: {different[:5]}"
    assert oa["state"].keys() == ob["state"].keys()
    for key, state in oa["state"].items():
        for name, value in state.items():
            other = ob["state"][key][name]
            assert torch.equal(value, other) if torch.is_tensor(value) else value == other, (key, name)
    assert [g["lr"] for g in oa["param_groups"]] == [g["lr"] for g in ob["param_groups"]]
