"""benchmarks/gpu_check.sh and its driver, on the CPU: argument errors, the scan-timing stage in Triton's interpreter
(the path the GPU runs natively) and, slow, the whole dry run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "benchmarks" / "gpu_check.py"


def _run(args, tmp_path, timeout=600, **env):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--repeats", "0", "--dry-run"], "--repeats: at least 1, got 0"),
    (["--stage", "everything"], "invalid choice: 'everything'"),
])
def test_argument_errors_are_one_line(args, message, tmp_path):
    result = _run(args, tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_without_a_gpu_it_points_to_the_dry_run(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run")
    result = _run(["--out", str(tmp_path / "r.json")], tmp_path)
    assert result.returncode == 2 and "run with --dry-run" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_scan_timing_stage_in_the_interpreter(tmp_path):
    """The timing stage on CPU tensors with the Triton kernels interpreted: every backend available here is timed and
    agrees with the reference."""
    pytest.importorskip("triton")
    result = _run(["--stage", "scan_timing", "--dry-run", "--repeats", "1"], tmp_path, TRITON_INTERPRET="1")
    assert result.returncode == 0, result.stderr[-3000:]
    timing = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"triton", "portable", "reference"} <= set(timing["backends"])
    rows = timing["rows"]
    assert len(rows) == 2 * len(timing["backends"])  # float32 and bf16, one size
    for row in rows:
        assert row["status"] == "ok", row
        assert row["forward_s"] > 0 and row["forward_backward_s"] > 0
        limit = 1e-4 if row["dtype"] == "float32" else 1e-2
        assert row["max_rel_diff_to_reference"] < limit, row


@pytest.mark.slow
def test_dry_run_of_the_whole_check(tmp_path):
    """gpu_check.sh --dry-run: every stage runs on the CPU and the JSON records each."""
    pytest.importorskip("triton")
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["dry_run"] and payload["ok"] and set(payload["stages"]) == {"triton_tests", "scan_timing",
                                                                              "train_step", "train_step_recompute"}
    assert " passed" in payload["stages"]["triton_tests"]["summary"]
    assert payload["stages"]["scan_timing"]["result"]["rows"]
    for stage, expected in (("train_step", {"tiny", "features-768"}),
                            ("train_step_recompute", {"features-768-speed", "features-768-memory"})):
        rows = payload["stages"][stage]["result"]["results"]
        assert {row["case"] for row in rows} == expected
        assert all(row["dtype"] == "bf16" for row in rows)
    assert not (tmp_path / "gpu_check_train.json").exists()
