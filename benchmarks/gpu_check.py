"""The GPU check: the Triton scan tests on the GPU, Triton timed against ``reference`` / ``portable`` (and mamba-ssm's
``cuda`` kernel when it is installed), one bf16 training step of the ``tiny`` and ``features-768`` models (the latter
also at ``mixer_recompute="speed"`` and ``"memory"``); one JSON.

    bash benchmarks/gpu_check.sh                      # on a CUDA machine (installs from carried wheels, then this)
    python benchmarks/gpu_check.py --out results.json # this driver alone, the package already importable
    python benchmarks/gpu_check.py --dry-run          # the whole driver on the CPU: CPU tensors, tiny sizes, the
                                                      # Triton stages in Triton's interpreter

Every stage runs in its own subprocess with its own time limit, so one that fails or hangs is recorded (status, the
tail of its output) and the others still run; the stage limits add up to less than 10 minutes. Stages:

- ``triton_tests``: ``pytest tests/test_triton.py`` (natively on CUDA tensors; on the CPU under ``TRITON_INTERPRET=1``,
  a short selection in a dry run).
- ``scan_timing``: forward and forward + backward of ``selective_scan`` per backend at the "video" (2 x 1536 x 1569,
  N 16) and "long" (2 x 1536 x 8192) sizes of BENCHMARKS.md, float32 and bf16, the median of ``--repeats`` runs after a
  warm-up (``torch.cuda.synchronize`` around each; ``reference``, a Python loop over the steps, once and only at the
  video size), with the relative difference of each output to ``reference``'s.
- ``train_step``: ``benchmarks/bench_train.py --dtype bf16`` for ``tiny`` and ``features-768`` (batch 2).
- ``train_step_recompute``: the same for ``features-768-speed`` / ``-memory``, the fusion mixers recomputing in the
  backward (a stage of its own, so that a slow one cannot cost the others' results): whether the recomputing levels
  cost time on a GPU decides the config's ``mixer_recompute`` default.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Per-stage limits (seconds); their sum stays under the 10 minutes the whole check may take on a GPU. A dry run
# interprets the Triton kernels and trains on the CPU, often on shared cores: it gets DRY_RUN_SLACK times as long.
STAGE_LIMITS = {"triton_tests": 240, "scan_timing": 150, "train_step": 120, "train_step_recompute": 80}
DRY_RUN_SLACK = 4
SIZES = {"video": (2, 1536, 1569, 16), "long": (2, 1536, 8192, 16)}
DRY_SIZES = {"tiny": (1, 4, 24, 4)}
# The interpreter runs a Python loop per element: a few of the kernel tests are enough to exercise the stage.
DRY_TEST_SELECTION = "initial_state and 19"


def _versions() -> dict:
    """Versions of what the stages import, read without failing when one is missing."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "triton", "transformers", "mamba_ssm", "pytest", "modeling_mambavl"):
        try:
            module = __import__(name)
            versions[name] = getattr(module, "__version__", "installed")
        except Exception as e:  # noqa: BLE001 (any import failure is reported, not raised)
            versions[name] = f"unavailable: {type(e).__name__}: {e}"[:200]
    try:
        import torch

        versions["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            versions["gpu"] = torch.cuda.get_device_name()
            versions["cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    return versions


# --- stage: scan timing (runs in its own process) -------------------------------------------------------------------


def _time_scan(dry_run: bool, repeats: int) -> dict:
    import torch

    from modeling_mambavl.ops import available_backends, selective_scan

    device = "cpu" if dry_run else "cuda"
    backends = [b for b in ("triton", "cuda", "portable", "reference") if b in available_backends(device)]
    rows = []

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for size_name, (b, d, length, n) in (DRY_SIZES if dry_run else SIZES).items():
        g = torch.Generator().manual_seed(0)
        base = {
            "u": torch.randn(b, d, length, generator=g), "delta": 0.5 * torch.randn(b, d, length, generator=g),
            "A": -torch.rand(d, n, generator=g) - 0.5, "B": torch.randn(b, n, length, generator=g),
            "C": torch.randn(b, n, length, generator=g), "D": torch.randn(d, generator=g),
            "z": torch.randn(b, d, length, generator=g), "delta_bias": torch.randn(d, generator=g),
        }
        dout = torch.randn(b, d, length, generator=g).to(device)
        for dtype in (torch.float32, torch.bfloat16):
            inputs = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v).to(device)
                      for k, v in base.items()}
            reference_out = None
            for backend in backends:
                if backend == "reference" and size_name == "long":
                    continue  # a Python loop over 8,192 steps, and its autograd graph: minutes, not a comparison
                row = {"size": size_name, "shape": [b, d, length, n], "dtype": str(dtype).replace("torch.", ""),
                       "backend": backend, "device": device}
                try:
                    # The reference loop is the accuracy oracle here; one timed run of it is enough.
                    runs = 1 if backend == "reference" else repeats
                    row.update(_time_backend(selective_scan, backend, inputs, dout, runs, sync))
                    out = row.pop("out")
                    if backend == "reference":
                        reference_out = out
                    row["out"] = out
                except Exception as e:  # noqa: BLE001 (a backend that fails is a result)
                    row.update(status="error", error=f"{type(e).__name__}: {e}"[:500])
                rows.append(row)
            for row in rows:
                out = row.pop("out", None)
                if out is not None and reference_out is not None:
                    ref = reference_out.float()
                    row["max_rel_diff_to_reference"] = ((out.float() - ref).norm() / ref.norm()).item()
    return {"backends": backends, "repeats": repeats, "rows": rows}


def _time_backend(selective_scan, backend: str, inputs: dict, dout, repeats: int, sync) -> dict:
    """Median forward and forward + backward seconds of one backend, and its forward output."""
    import torch

    def forward(grad: bool):
        leaves = {k: v.detach().requires_grad_(grad) for k, v in inputs.items()}
        return leaves, selective_scan(**leaves, delta_softplus=True, backend=backend)

    timings = {}
    for name, grad in (("forward_s", False), ("forward_backward_s", True)):
        times = []
        for i in range(repeats + 1):  # the first run warms up (compiles the kernels)
            sync()
            start = time.perf_counter()
            with torch.set_grad_enabled(grad):
                _, out = forward(grad)
                if grad:
                    out.backward(dout.to(out.dtype))
            sync()
            if i:
                times.append(time.perf_counter() - start)
        timings[name] = statistics.median(times)
    with torch.no_grad():
        timings["out"] = forward(False)[1].detach().cpu()
    return {"status": "ok", **timings}


# --- driver ----------------------------------------------------------------------------------------------------------


def _run_stage(name: str, cmd: list[str], env: dict, limit: int) -> dict:
    """Run one stage's command with a time limit; its status, wall time and output tail (never raises)."""
    start = time.perf_counter()
    try:
        # Its own process group: on a timeout the stage's children (bench_train.py runs one per case) go too.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                                start_new_session=True)
    except OSError as e:
        return {"status": "failed", "command": " ".join(cmd), "output_tail": f"{type(e).__name__}: {e}"}
    try:
        output, _ = proc.communicate(timeout=limit)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status = "timed out"
    wall = time.perf_counter() - start
    print(f"[gpu_check] {name}: {status} in {wall:.0f} s", flush=True)
    return {"status": status, "command": " ".join(cmd), "wall_s": round(wall, 1), "limit_s": limit,
            "output_tail": output[-4000:]}


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def run_check(dry_run: bool, out: Path, repeats: int) -> dict:
    """All stages; writes and returns the results."""
    started = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONDONTWRITEBYTECODE": "1"}
    interpreted = {**env, "TRITON_INTERPRET": "1"} if dry_run else env
    py = sys.executable
    stages = {}
    limits = {name: limit * (DRY_RUN_SLACK if dry_run else 1) for name, limit in STAGE_LIMITS.items()}

    tests = [py, "-m", "pytest", "tests/test_triton.py", "-q", "-p", "no:cacheprovider", "--noconftest",
             "-o", "addopts="]
    if dry_run:
        tests += ["-k", DRY_TEST_SELECTION]
    stages["triton_tests"] = _run_stage("triton_tests", tests, interpreted, limits["triton_tests"])
    summary = stages["triton_tests"]["output_tail"].strip().splitlines()
    stages["triton_tests"]["summary"] = summary[-1] if summary else ""

    timing = [py, str(Path(__file__).resolve()), "--stage", "scan_timing", "--repeats", str(repeats)]
    stages["scan_timing"] = _run_stage("scan_timing", timing + (["--dry-run"] if dry_run else []), interpreted,
                                       limits["scan_timing"])
    stages["scan_timing"]["result"] = _last_json(stages["scan_timing"]["output_tail"])

    for stage, cases in (("train_step", ["tiny", "features-768"]),
                         ("train_step_recompute", ["features-768-speed", "features-768-memory"])):
        train_out = out.with_name(out.stem + "_train.json")
        train = [py, str(ROOT / "benchmarks" / "bench_train.py"), "--cases", *cases, "--batches",
                 "1" if dry_run else "2", "--repeats", "1" if dry_run else str(repeats), "--dtype", "bf16",
                 "--device", "cpu" if dry_run else "cuda", "--output", str(train_out)]
        stages[stage] = _run_stage(stage, train, env, limits[stage])
        if train_out.exists():
            stages[stage]["result"] = json.loads(train_out.read_text())
            train_out.unlink()

    payload = {
        "benchmark": "gpu_check",
        "dry_run": dry_run,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "stages": stages,
        "ok": all(stage["status"] == "ok" for stage in stages.values()),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"[gpu_check] wrote {out} (all stages ok: {payload['ok']}, {payload['wall_s']:.0f} s)", flush=True)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU tensors, tiny sizes, the Triton stages in Triton's interpreter (no GPU needed)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point after a warm-up (default 5)")
    parser.add_argument("--stage", choices=("scan_timing",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: at least 1, got {args.repeats}")
    if args.stage == "scan_timing":
        print(json.dumps(_time_scan(args.dry_run, args.repeats)))
        return 0
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device here (torch.cuda.is_available() is False); run with --dry-run to exercise "
                         "the driver on the CPU")
    payload = run_check(args.dry_run, Path(args.out), 1 if args.dry_run else args.repeats)
    return 0 if payload["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
