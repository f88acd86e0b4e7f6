"""Speed and memory of the selective-scan backends beside transformers' torch fallback and mambapy's parallel scan.

    python benchmarks/bench_scan.py                       # all sizes, all implementations (~15-25 min on 2 cores)
    python benchmarks/bench_scan.py --sizes question      # one size
    python benchmarks/bench_scan.py --impls cpu,portable --sizes question --out /tmp/scan.json

Every measured point (size x implementation x {forward, forward+backward}) runs in a fresh subprocess: it warms the
implementation up on tiny inputs, creates the full-size inputs, reads ``ru_maxrss``, runs, and reports the
``ru_maxrss`` increase (peak memory above the inputs) and the best time of ``--repeats`` runs after one full-size
warm-up run. When that warm-up run alone takes longer than ``--slow-seconds`` (transformers' fallback and the
reference loop at the video size take minutes), it is the only run: timed once, no warm-up, recorded as such.
The ``torch.exp(x, out=y)`` floor over B*D*L*N elements is measured the same way in the same run.
Forward runs under ``torch.no_grad()``; forward+backward runs ``out.backward(dout)`` with every input requiring grad.

Results: a table on stdout and JSON in ``benchmarks/results/scan.json`` (machine, settings, every point).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {
    # name: (batch, d_inner, L, N)
    "video": (2, 1536, 1569, 16),     # 1 CLS + 8 x 14 x 14 video tokens, d_inner = 2 x 768
    "question": (4, 1536, 40, 16),    # a batch of tokenized questions
    "long": (2, 1536, 8192, 16),
}
IMPLS = ("floor", "cpu", "portable", "reference", "cuda", "mambapy_pscan", "transformers_fallback")
DESCRIPTIONS = {
    "floor": "torch.exp(x, out=y) over B*D*L*N float32 elements (time floor of a fused kernel)",
    "cpu": "modeling_mambavl.ops.selective_scan(backend='cpu'): fused C++ kernel",
    "portable": "modeling_mambavl.ops.selective_scan(backend='portable'): chunked parallel scan in PyTorch",
    "reference": "modeling_mambavl.ops.selective_scan(backend='reference'): sequential PyTorch loop",
    "cuda": "modeling_mambavl.ops.selective_scan(backend='cuda'): mamba-ssm's CUDA kernel",
    "mambapy_pscan": "transformers.models.mamba.modeling_mamba.mamba_selective_scan(use_mambapy=True): "
                     "mambapy.pscan (Blelloch scan over (B, L, D, N) tensors)",
    "transformers_fallback": "transformers.models.mamba.modeling_mamba.mamba_selective_scan(use_mambapy=False): "
                             "the sequential torch fallback",
}
# Points not run, and why.
SKIPS = {
    ("long", "transformers_fallback"): "skipped at L 8192: the sequential fallback takes many minutes per call "
                                       "(and about 5x its video-size time)",
    ("long", "reference"): "skipped at L 8192: the sequential reference loop keeps several (B, D, N) autograd "
                           "tensors per step (about 8 GB at this length)",
    ("long", "mambapy_pscan"): "skipped at L 8192: pscan materialises several (B, npo2(L), D, N) float32 tensors "
                               "(1.6 GB each, about 5x4.5 GB in all), beyond this machine's memory",
}
ROOT = Path(__file__).resolve().parents[1]


# --- worker (one point, in its own process) -------------------------------------------------------------------------


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


def _make_inputs(batch, d_inner, length, n, requires_grad):
    import torch

    g = torch.Generator().manual_seed(0)
    inputs = {
        "u": torch.randn(batch, d_inner, length, generator=g),
        "delta": torch.randn(batch, d_inner, length, generator=g).mul_(0.5),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(d_inner, 1),  # -exp(A_log), S4D-real init
        "B": torch.randn(batch, n, length, generator=g),
        "C": torch.randn(batch, n, length, generator=g),
        "D": torch.ones(d_inner),
        "z": torch.randn(batch, d_inner, length, generator=g),
        # softplus^-1 of time steps in [1e-3, 1e-1], as Mamba initialises dt_proj.bias
        "delta_bias": torch.expm1(torch.exp(torch.rand(d_inner, generator=g) * (math.log(0.1) - math.log(1e-3))
                                            + math.log(1e-3))).log(),
    }
    if requires_grad:
        for t in inputs.values():
            t.requires_grad_()
    return inputs


def _scan_fn(impl):
    from modeling_mambavl.ops import selective_scan

    if impl in ("cpu", "portable", "reference", "cuda"):
        return lambda x: selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                        delta_softplus=True, backend=impl)
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    use_mambapy = impl == "mambapy_pscan"
    if use_mambapy:
        import mambapy.pscan  # noqa: F401  (fail loudly rather than fall back to the loop)
    return lambda x: mamba_selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                          x["delta_bias"], delta_softplus=True, use_mambapy=use_mambapy)


def _worker(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    batch, d_inner, length, n = spec["shape"]
    impl, mode = spec["impl"], spec["mode"]
    backward = mode == "fwd+bwd"

    if impl == "floor":
        x = torch.randn(batch * d_inner * length * n)
        y = torch.zeros_like(x)  # resident before the baseline, like the inputs of the other points
        base = _maxrss_mb()

        def step():
            torch.exp(x, out=y)
    else:
        fn = _scan_fn(impl)
        if impl == "cuda":
            from modeling_mambavl.ops import available_backends

            if "cuda" not in available_backends("cpu"):
                try:  # selective_scan's own refusal says why
                    fn(_make_inputs(1, 4, 8, n, False))
                except RuntimeError as e:
                    return {"status": "unavailable", "note": f"on CPU tensors: {e}"}
        # Warm-up on tiny inputs: builds / loads kernels and libraries outside the measurement.
        tiny = _make_inputs(1, 4, 8, n, backward)
        out = fn(tiny)
        if backward:
            out.backward(torch.ones_like(out))
        del tiny, out
        inputs = _make_inputs(batch, d_inner, length, n, backward)
        dout = torch.randn(batch, d_inner, length) if backward else None
        gc.collect()
        base = _maxrss_mb()

        def step():
            if backward:
                for t in inputs.values():
                    t.grad = None
                fn(inputs).backward(dout)
            else:
                with torch.no_grad():
                    fn(inputs)

    rss_at_base = _rss_mb()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times, warmup = [], True
    if first > spec["slow_seconds"]:
        times, warmup = [first], False
    else:
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return {
        "status": "ok",
        "time_s": min(times),
        "times_s": times,
        "repeats": len(times),
        "warmup": warmup,
        "peak_mb": _maxrss_mb() - base,
        "maxrss_at_baseline_mb": base,
        "rss_at_baseline_mb": rss_at_base,
        "threads": torch.get_num_threads(),
    }


# --- driver ---------------------------------------------------------------------------------------------------------


def _machine() -> dict:
    import torch

    cpu_model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for module in ("transformers", "mambapy"):
        try:
            from importlib.metadata import version

            versions[module] = version(module)
        except Exception:
            versions[module] = None
    compiler = None
    try:
        from modeling_mambavl.ops.build import find_compiler

        cxx = find_compiler()
        if cxx:
            compiler = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except Exception:
        pass
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "compiler": compiler,
        **versions,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _run_point(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"timed out after {timeout:.0f} s"}
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        note = " | ".join(tail) if tail else f"exit code {res.returncode}"
        if res.returncode < 0:
            note = f"killed by signal {-res.returncode} (out of memory?) {note}"
        return {"status": "error", "note": note}
    return json.loads(res.stdout.strip().splitlines()[-1])


def _fmt_time(r):
    if r is None or r.get("status") != "ok":
        return "-"
    t = r["time_s"]
    s = f"{t * 1e3:.1f} ms" if t < 10 else f"{t:.1f} s"
    return s + ("" if r["warmup"] else " (1 run)")


def _fmt_mem(r):
    return "-" if r is None or r.get("status") != "ok" else f"{r['peak_mb']:.0f} MB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {', '.join(IMPLS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per point after one warm-up (best kept)")
    parser.add_argument("--slow-seconds", type=float, default=20.0,
                        help="a point whose warm-up run takes longer is timed by that single run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per point")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scan.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    sizes = [s for s in args.sizes.split(",") if s]
    impls = [i for i in args.impls.split(",") if i]
    for name in sizes:
        if name not in SIZES:
            parser.error(f"--sizes: unknown size {name!r}; choose from {', '.join(SIZES)}")
    for name in impls:
        if name not in IMPLS:
            parser.error(f"--impls: unknown implementation {name!r}; choose from {', '.join(IMPLS)}")

    machine = _machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
          f"{machine['torch_threads']} threads, {machine['date']}", flush=True)
    results = []
    for size in sizes:
        shape = SIZES[size]
        for impl in impls:
            entry = {"size": size, "shape": dict(zip(("batch", "d_inner", "L", "N"), shape)), "impl": impl,
                     "description": DESCRIPTIONS[impl]}
            for mode in (("fwd",) if impl == "floor" else ("fwd", "fwd+bwd")):
                if (size, impl) in SKIPS:
                    r = {"status": "skipped", "note": SKIPS[(size, impl)]}
                else:
                    spec = {"shape": shape, "impl": impl, "mode": mode, "repeats": args.repeats,
                            "slow_seconds": args.slow_seconds, "threads": args.threads}
                    r = _run_point(spec, args.timeout)
                entry[mode] = r
                status = _fmt_time(r) if r["status"] == "ok" else f"{r['status']}: {r.get('note', '')}"
                print(f"  {size:8s} {impl:22s} {mode:8s} {status}  {_fmt_mem(r)}", flush=True)
            results.append(entry)

    def get(size, impl, mode):
        for e in results:
            if e["size"] == size and e["impl"] == impl:
                r = e.get(mode)
                return r if r and r.get("status") == "ok" else None
        return None

    print()
    header = "| size | implementation | forward | peak (fwd) | forward+backward | peak (fwd+bwd) |"
    print(header)
    print("|" + "---|" * 6)
    for e in results:
        print(f"| {e['size']} | {e['impl']} | {_fmt_time(e.get('fwd'))} | {_fmt_mem(e.get('fwd'))} | "
              f"{_fmt_time(e.get('fwd+bwd'))} | {_fmt_mem(e.get('fwd+bwd'))} |")

    ratios = {}
    cpu_f, cpu_fb, floor = get("video", "cpu", "fwd"), get("video", "cpu", "fwd+bwd"), get("video", "floor", "fwd")
    pscan, fallback = get("video", "mambapy_pscan", "fwd+bwd"), get("video", "transformers_fallback", "fwd+bwd")
    if cpu_f and floor:
        ratios["video_cpu_forward_over_exp_floor"] = cpu_f["time_s"] / floor["time_s"]
    if cpu_fb and pscan:
        ratios["video_fwd_bwd_speedup_vs_mambapy_pscan"] = pscan["time_s"] / cpu_fb["time_s"]
    if cpu_fb and fallback:
        ratios["video_fwd_bwd_speedup_vs_transformers_fallback"] = fallback["time_s"] / cpu_fb["time_s"]
    if cpu_fb:
        ratios["video_cpu_fwd_bwd_peak_mb"] = cpu_fb["peak_mb"]
    if cpu_f:
        ratios["video_cpu_fwd_peak_mb"] = cpu_f["peak_mb"]
    targets = {"video_cpu_forward_over_exp_floor": ("<=", 3.0),
               "video_fwd_bwd_speedup_vs_mambapy_pscan": (">=", 20.0),
               "video_fwd_bwd_speedup_vs_transformers_fallback": (">=", 300.0),
               "video_cpu_fwd_bwd_peak_mb": ("<", 150.0),
               "video_cpu_fwd_peak_mb": ("<", 150.0)}
    checks = {}
    print()
    for key, value in ratios.items():
        op, bound = targets[key]
        ok = value <= bound if op == "<=" else value >= bound if op == ">=" else value < bound
        checks[key] = {"value": value, "target": f"{op} {bound:g}", "met": ok}
        print(f"{key}: {value:.2f} (target {op} {bound:g}: {'met' if ok else 'NOT met'})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": "python benchmarks/bench_scan.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine,
        "settings": {"repeats": args.repeats, "slow_seconds": args.slow_seconds, "threads": args.threads or None,
                     "delta_softplus": True, "with_D": True, "with_z": True, "with_delta_bias": True,
                     "dtype": "float32", "memory": "ru_maxrss increase after the inputs exist, fresh process per point",
                     "time": "best of `repeats` runs after one warm-up run; a point whose warm-up run exceeds "
                             "`slow_seconds` is timed by that single run (warmup false)"},
        "sizes": {k: dict(zip(("batch", "d_inner", "L", "N"), v)) for k, v in SIZES.items() if k in sizes},
        "results": results,
        "targets": checks,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
