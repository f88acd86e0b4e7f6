"""How the cost of a training step grows with the number of frames and the question length: SSM fusion against one
layer of token-level attention over all video and question tokens.

    python benchmarks/bench_scaling.py                    # the full sweep (~40 min on 2 idle cores)
    python benchmarks/bench_scaling.py --quick            # 8 / 16 frames and 16 / 32 question tokens, to try it

Two scopes, each with both fusions:

- ``fusion``: the fusion block alone. SSM: ``MambaVLSSMFusion`` (the paper's block: a video and a text Mamba mixer
  sharing ``A``; pooled ``mean(video) + mean(question)`` per question). Attention: one pre-LayerNorm self-attention
  layer (LayerNorm, ``MambaVLFuserAttention``: 12 heads, ``F.scaled_dot_product_attention``, residual) over the
  concatenation of all video tokens and both questions' tokens, pooled the same way: what a user would otherwise write
  to let every video token see every question token. Like a Mamba mixer, it has no MLP after it. ``--methods
  transformer`` adds the whole pre-LN Transformer block (``MambaVLFuserBlock``: the same attention plus an MLP of ratio
  4, 7.1 M parameters against the SSM fusion's 7.5 M), whose linear layers dilute the quadratic term at these sizes.
- ``model``: ``MambaVLForVideoClassification`` (preset ``features-768``) on pre-extracted features, with the loss on
  verb and noun labels: LayerNorm + Linear + tanh on the video tokens, the question branch (frozen RoBERTa-base-shaped
  embeddings + the text MLP), the fusion, the heads. The attention variant swaps the fusion for the layer above.

Sizes: D = 768, batch 1 (one clip), two questions; ``frames`` x 196 tokens + 1 CLS (a ViT-B/16 at 224 px per frame);
frames 8, 16, 32, 64, 128 at 40 question tokens (the paper's length), and question lengths 16 to 256 at 16 frames.
A step is forward + loss + backward (float32, gradients into every trainable parameter; a sum of the pooled features
is the loss of the ``fusion`` scope). Each point runs in a fresh subprocess: one warm-up step, then the median of 5
timed steps, as wall time and as the process's CPU time (all threads; on shared cores it moves far less with other
jobs than the wall time does); peak memory is the ``ru_maxrss`` increase over the process after the model and
inputs exist.

SSM recompute levels (``mixer_recompute``): ``--mixer-recompute none,speed,memory`` runs every SSM point at each
level, the levels' fresh processes interleaved (trial 1 of each level, then trial 2 of each...), so that a slow period
of the shared machine hits all of them; each level's result also gives its time and CPU time relative to ``none``
from the same rounds (median of the per-round ratios). Without the option the SSM points run at the config's default.

Allocator: on Linux, glibc's malloc raises its mmap threshold to the size of each freed mmapped block (up to 32 MB),
after which freed blocks below it stay resident in the heap, fragmented; a fused block's pieces (a few MB each) then
raise ``ru_maxrss`` well above the live memory, where the attention layer's tensors (> 32 MB each) are mmapped and
returned. ``--malloc-mmap-threshold BYTES`` sets glibc's ``MALLOC_MMAP_THRESHOLD_`` (a fixed threshold) in every
worker, SSM and attention alike, so that the peak is that of the live tensors; the default leaves the environment as
it is.

Caps: a point whose step is predicted (from the previous, smaller point of its series at a log-log slope of 2)
or observed in the warm-up to take more than 120 s, or whose resident memory passes 20 GB, is reported as "not run".
Run it on an otherwise idle machine: on shared cores the wall times (and even the CPU times, which then include the
OpenMP threads' spinning) of the small points inflate most, which flattens every slope.
Fitted log-log slopes of time and memory against frames use the points from 16 to 128 frames that ran. Results:
``benchmarks/results/scaling.json`` and ``scaling.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import _machine as _machine_info  # benchmarks/ is on sys.path when a benchmark runs as a script

ROOT = Path(__file__).resolve().parents[1]
FRAMES = (8, 16, 32, 64, 128)
QUESTION_LENGTHS = (16, 32, 64, 128, 256)
DEFAULT_QUESTION_LENGTH = 40
DEFAULT_FRAMES = 16
TOKENS_PER_FRAME = 196
TIME_CAP_S = 120.0
MEMORY_CAP_MB = 20 * 1024
REPEATS = 5


# --- worker (one point, in its own process) -------------------------------------------------------------------------


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _cpu_s() -> float:
    """CPU time of this process, all threads (user + system): the work done, less sensitive than the wall time to
    other jobs on shared cores."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _attention_fusion(config, block: bool = False):
    """One self-attention layer (or, with ``block``, one whole Transformer block) over [video tokens; every question's
    tokens], pooled as the SSM fusion is."""
    import torch
    from torch import nn

    from modeling_mambavl.fusion import FusionOutput, MambaVLFuserAttention, MambaVLFuserBlock, masked_mean

    class PreNormSelfAttention(nn.Module):
        def __init__(self, dim: int, num_heads: int) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.attn = MambaVLFuserAttention(dim, num_heads, 0.0, 0.0)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return hidden_states + self.attn(self.norm(hidden_states))

    class TokenAttentionFusion(nn.Module):
        question_input = "tokens"

        def __init__(self) -> None:
            super().__init__()
            self.layer = (MambaVLFuserBlock(config.hidden_size, 12, 4.0, 0.0, 0.0) if block
                          else PreNormSelfAttention(config.hidden_size, 12))

        def forward(self, video, video_mask=None, questions=None, question_mask=None, output_hidden_states=False):
            batch, num_questions, length, dim = questions.shape
            tokens = torch.cat([video, questions.reshape(batch, num_questions * length, dim)], dim=1)
            # Padded question tokens would need an attention mask (and lose SDPA's fused kernels); the benchmark's
            # questions have none, and the masks only enter the pooling.
            out = self.layer(tokens)
            video_out = out[:, : video.shape[1]]
            question_out = out[:, video.shape[1]:].reshape(batch * num_questions, length, dim)
            mask = None if question_mask is None else question_mask.reshape(batch * num_questions, length)
            pooled = masked_mean(video_out, video_mask).unsqueeze(1) + masked_mean(question_out, mask).reshape(
                batch, num_questions, dim)
            return FusionOutput(pooled=pooled, video_states=video_out)

    return TokenAttentionFusion()


def _build(spec: dict):
    """(model, step function) for one point."""
    import torch

    from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
    from modeling_mambavl.fusion import MambaVLSSMFusion

    torch.manual_seed(0)
    config = MambaVLConfig.from_preset(
        "features-768", **{k: spec[k] for k in ("mixer_chunk_size", "mixer_recompute", "mixer_recompute_chunk_size") if k in spec})
    frames, qlen = spec["frames"], spec["question_length"]
    n_video = 1 + frames * TOKENS_PER_FRAME
    dim = config.hidden_size
    if spec["scope"] == "fusion":
        if spec["method"] == "ssm":
            module = MambaVLSSMFusion(config)
            for layer in module.layers:  # as the model's _init_weights: S4D-real A
                layer.A_log.data.copy_(torch.log(torch.arange(1, config.state_size + 1.0)).expand_as(layer.A_log))
        else:
            module = _attention_fusion(config, block=spec["method"] == "transformer")
        video = torch.randn(1, n_video, dim)
        questions = torch.randn(1, 2, qlen, dim)
        qmask = torch.ones(1, 2, qlen, dtype=torch.long)

        def step():
            module.zero_grad(set_to_none=True)
            out = module(video, None, questions, qmask)
            out.pooled.sum().backward()

        return module, step

    model = MambaVLForVideoClassification(config)
    if spec["method"] != "ssm":
        model.mambavl.fusion = _attention_fusion(config, block=spec["method"] == "transformer")
    model.train()
    features = torch.randn(1, n_video, config.vision_feature_dim)
    ids = torch.randint(3, config.text_config.vocab_size, (1, 2, qlen))
    mask = torch.ones_like(ids)
    verb, noun = torch.tensor([3]), torch.tensor([7])

    def step():
        model.zero_grad(set_to_none=True)
        out = model(video_features=features, question_input_ids=ids, question_attention_mask=mask,
                    verb_labels=verb, noun_labels=noun)
        out.loss.backward()

    return model, step


def _worker(spec: dict) -> dict:
    import torch

    model, step = _build(spec)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    base = _maxrss_mb()
    cpu, start = _cpu_s(), time.perf_counter()
    step()  # warm-up
    warmup, warmup_cpu = time.perf_counter() - start, _cpu_s() - cpu
    times, cpu_times = [], []
    if warmup <= TIME_CAP_S:
        for _ in range(spec.get("repeats", REPEATS)):
            cpu, start = _cpu_s(), time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            cpu_times.append(_cpu_s() - cpu)
    return {
        "status": "ok" if times else "not run",
        "note": None if times else f"warm-up step took {warmup:.0f} s > {TIME_CAP_S:.0f} s",
        "time_s": statistics.median(times) if times else None,
        "times_s": times,
        "cpu_time_s": statistics.median(cpu_times) if cpu_times else None,
        "cpu_times_s": cpu_times,
        "warmup_s": warmup,
        "warmup_cpu_s": warmup_cpu,
        "peak_mb": _maxrss_mb() - base,
        "trainable_params": params,
        "tokens": 1 + spec["frames"] * TOKENS_PER_FRAME + 2 * spec["question_length"],
        "torch_threads": torch.get_num_threads(),
    }


# --- driver ---------------------------------------------------------------------------------------------------------


def _default_config_value(name: str):
    from modeling_mambavl import MambaVLConfig

    return getattr(MambaVLConfig.from_preset("features-768"), name)


def _machine() -> dict:
    import torch

    cpu_model = _machine_info.cpu_model()
    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _rss_of(pid: int) -> float:
    """Resident memory (MB) of a process and its children's threads, from /proc (0 where unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _run_point(spec: dict, mmap_threshold: int | None = None) -> dict:
    """Run one point in a fresh process, killing it past the memory cap or after the warm-up plus 5 capped steps;
    with ``mmap_threshold``, glibc's fixed mmap threshold in that process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    peak = {"mb": 0.0, "killed": None}

    def watch():
        # The time cap is checked by the worker after its warm-up step; this only stops a runaway point.
        deadline = time.monotonic() + 4 * TIME_CAP_S * (REPEATS + 1) + 300
        while proc.poll() is None:
            rss = _rss_of(proc.pid)
            peak["mb"] = max(peak["mb"], rss)
            if rss > MEMORY_CAP_MB:
                peak["killed"] = f"resident memory passed {MEMORY_CAP_MB / 1024:.0f} GB"
                proc.kill()
            elif time.monotonic() > deadline:
                peak["killed"] = "took longer than the time cap"
                proc.kill()
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if peak["killed"]:
        return {"status": "not run", "note": peak["killed"]}
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-3:]
        return {"status": "error", "note": " | ".join(tail) or f"exit code {proc.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


def _run_trials(spec: dict, trials: int, mmap_threshold: int | None = None) -> dict:
    """``_run_point`` ``trials`` times (fresh processes); time, CPU time and memory are the medians over the trials,
    which the result lists. On a shared virtual machine a whole process can land on a slow period (memory bandwidth
    taken by neighbours), so one process per point makes slopes move by +-0.1 between runs."""
    results = [_run_point(spec, mmap_threshold) for _ in range(trials)]
    if trials == 1 or any(r.get("status") != "ok" for r in results):
        return next((r for r in results if r.get("status") != "ok"), results[0])
    merged = dict(results[0])
    for key in ("time_s", "cpu_time_s", "peak_mb"):
        merged[key] = statistics.median(r[key] for r in results)
    merged["trials"] = [{k: r[k] for k in ("time_s", "cpu_time_s", "peak_mb")} for r in results]
    return merged


def _run_levels(spec: dict, levels: list[str], trials: int, mmap_threshold: int | None = None) -> dict[str, dict]:
    """``_run_trials`` of ``spec`` at each recompute level, the levels' processes interleaved round by round; with a
    ``"none"`` level, the others get ``time_ratio_to_none`` / ``cpu_time_ratio_to_none`` / ``peak_ratio_to_none``
    (medians of the per-round ratios)."""
    rounds = [{level: _run_point({**spec, "mixer_recompute": level}, mmap_threshold) for level in levels}
              for _ in range(trials)]
    merged = {}
    for level in levels:
        results = [r[level] for r in rounds]
        if trials == 1 or any(r.get("status") != "ok" for r in results):
            merged[level] = next((r for r in results if r.get("status") != "ok"), results[0])
            continue
        merged[level] = dict(results[0])
        for key in ("time_s", "cpu_time_s", "peak_mb"):
            merged[level][key] = statistics.median(r[key] for r in results)
        merged[level]["trials"] = [{k: r[k] for k in ("time_s", "cpu_time_s", "peak_mb")} for r in results]
    if "none" in levels and all(r[level].get("status") == "ok" for r in rounds for level in levels):
        for level in levels:
            for key, name in (("time_s", "time"), ("cpu_time_s", "cpu_time"), ("peak_mb", "peak")):
                merged[level][f"{name}_ratio_to_none"] = statistics.median(
                    r[level][key] / r["none"][key] for r in rounds)
    return merged


def _fit_slope(xs, ys) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _fmt(r: dict) -> tuple[str, str, str]:
    if r.get("status") != "ok":
        return ("not run", "", "") if r.get("status") == "not run" else ("error", "", "")

    def t(x):
        return f"{x * 1e3:.0f} ms" if x < 10 else f"{x:.1f} s"

    return t(r["time_s"]), t(r["cpu_time_s"]) + " CPU", f"{r['peak_mb']:.0f} MB"


def _series(row: dict) -> str:
    """The series a row belongs to: its method, with the SSM recompute level when one was set ("ssm[memory]") and
    the piece size when it was not the default ("ssm[memory]/512")."""
    level = row.get("mixer_recompute")
    name = row["method"] if level is None else f"{row['method']}[{level}]"
    return name if "mixer_chunk_size" not in row else f"{name}/{row['mixer_chunk_size']}"


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"ssm": "C0", "ssm[none]": "C0", "ssm[speed]": "C2", "ssm[memory]": "C4", "attention": "C3",
              "transformer": "C1"}
    kinds = {"ssm": "SSM fusion", "ssm[none]": "SSM fusion, keeps all", "ssm[speed]": "SSM fusion, recompute: speed",
             "ssm[memory]": "SSM fusion, recompute: memory", "attention": "attention layer",
             "transformer": "Transformer block"}
    markers = {"ssm[speed]": "v", "ssm[memory]": "D", "transformer": "^"}
    for scope, method in sorted({(r["scope"], _series(r)) for r in results["frames"]}):
        # Sorted: merged runs list their points in the order the runs measured them.
        rows = sorted((r for r in results["frames"] if r["scope"] == scope and _series(r) == method),
                      key=lambda r: r["frames"])
        # A point stopped by the time cap after its warm-up step still measured that step's memory.
        timed = [r for r in rows if r["result"].get("status") == "ok"]
        measured = [r for r in rows if r["result"].get("peak_mb") is not None]
        if not measured:
            continue
        color = colors.get(method, "C7")
        fmt = ("-" if scope == "fusion" else "--") + markers.get(method, "o" if scope == "fusion" else "s")
        label = f"{kinds.get(method, method)} ({'block' if scope == 'fusion' else 'model'})"
        if timed:
            axes[0].plot([r["frames"] for r in timed], [r["result"]["time_s"] for r in timed], fmt, color=color,
                         label=label)
        axes[1].plot([r["frames"] for r in measured], [max(r["result"]["peak_mb"], 1.0) for r in measured], fmt,
                     color=color, label=label)
    for ax, ylabel in zip(axes, ("training step time (s)", "peak memory above inputs (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames (196 tokens each)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(FRAMES, [str(f) for f in FRAMES])
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("MambaVL: forward + backward of one clip (D = 768, 2 questions of 40 tokens), CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _slopes(results: dict, quiet: bool = False) -> dict:
    """Fitted log-log slopes against frames (16 to 128) of wall time, CPU time and memory, per scope and fusion."""
    slopes = {}
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for scope, method in sorted({(r["scope"], _series(r)) for r in results["frames"]}):
        rows = sorted((r for r in results["frames"] if r["scope"] == scope and _series(r) == method
                       and r["frames"] >= 16 and r["result"].get("status") == "ok"), key=lambda r: r["frames"])
        frames = [r["frames"] for r in rows]
        s = slopes[f"{scope}/{method}"] = {
            "frames_fitted": frames,
            "time": _fit_slope(frames, [r["result"]["time_s"] for r in rows]),
            "cpu_time": _fit_slope(frames, [r["result"]["cpu_time_s"] for r in rows]),
            "memory": _fit_slope(frames, [r["result"]["peak_mb"] for r in rows]),
        }
        if not quiet:
            print(f"slope {scope}/{method} over frames {frames}: time {fmt(s['time'])}, "
                  f"CPU time {fmt(s['cpu_time'])}, memory {fmt(s['memory'])}")
    return slopes


def _combine(paths: list[str], out: Path) -> int:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    payload = {**runs[0], "command": [run["command"] for run in runs], "runs": [
        {k: run[k] for k in ("command", "machine", "load_average_1_5_15", "wall_time_s")} for run in runs]}
    for sweep in ("frames", "question_length"):
        # A point measured again by a later run (e.g. with --trials) replaces the earlier measurement.
        rows = {}
        for run in runs:
            for row in run[sweep]:
                rows[(row["scope"], _series(row), row["frames"], row["question_length"])] = row
        payload[sweep] = list(rows.values())
    payload["slopes_16_to_128_frames"] = _slopes(payload)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    _plot(payload, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="8 / 16 frames and 16 / 32 question tokens only")
    parser.add_argument("--scopes", default="fusion,model")
    parser.add_argument("--frames", help=f"comma-separated frame counts of the frames sweep (default {FRAMES})")
    parser.add_argument("--mixer-recompute", metavar="LEVELS",
                        help="comma-separated SSM recompute levels of none,speed,memory, run interleaved "
                             "(default: the config's mixer_recompute only)")
    parser.add_argument("--mixer-chunk-size", metavar="N|none",
                        help="the SSM mixers' mixer_chunk_size (default: the config's; 'none': one pass)")
    parser.add_argument("--no-question-sweep", action="store_true", help="only the frames sweep")
    parser.add_argument("--methods", default="ssm,attention", help="fusions to run, of ssm,attention,transformer")
    parser.add_argument("--no-frames-sweep", action="store_true", help="only the question-length sweep")
    parser.add_argument("--repeats", type=int, default=REPEATS,
                        help=f"timed steps per process after the warm-up, their median reported (default {REPEATS})")
    parser.add_argument("--trials", type=int, default=1,
                        help="fresh processes per point; the medians over them are reported (default 1)")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="merge the results of several runs into --out (+ the figure); a point that a later "
                             "run measured again takes that run's result")
    parser.add_argument("--malloc-mmap-threshold", type=int, metavar="BYTES",
                        help="glibc's MALLOC_MMAP_THRESHOLD_ in every worker, both fusions (default: unset)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.json"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    if args.combine:
        return _combine(args.combine, Path(args.out))

    frames_sweep = FRAMES[:2] if args.quick else FRAMES
    if args.frames:
        if not all(f.isdigit() and int(f) > 0 for f in args.frames.split(",")):
            parser.error(f"--frames: comma-separated positive integers, got {args.frames!r}")
        frames_sweep = tuple(int(f) for f in args.frames.split(","))
    levels = [_default_config_value("mixer_recompute")]
    if args.mixer_recompute:
        levels = args.mixer_recompute.split(",")
        if not set(levels) <= {"none", "speed", "memory"}:
            parser.error(f"--mixer-recompute: comma-separated levels of none,speed,memory, got {args.mixer_recompute!r}")
    qlen_sweep = QUESTION_LENGTHS[:2] if args.quick else QUESTION_LENGTHS
    chunk_spec = {}
    if args.mixer_chunk_size is not None:
        if args.mixer_chunk_size != "none" and not args.mixer_chunk_size.isdigit():
            parser.error(f"--mixer-chunk-size: a positive integer or 'none', got {args.mixer_chunk_size!r}")
        chunk_spec["mixer_chunk_size"] = None if args.mixer_chunk_size == "none" else int(args.mixer_chunk_size)
    chunk_size = chunk_spec["mixer_chunk_size"] if chunk_spec else _default_config_value("mixer_chunk_size")
    machine = _machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
          f"{machine['torch_threads']} threads", flush=True)
    results = {"frames": [], "question_length": []}
    load = [os.getloadavg()]
    started = time.time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(complete: bool) -> None:
        # Rewritten after every point, so that a run stopped early keeps what it measured ("complete": false).
        payload = {
            "benchmark": "bench_scaling",
            "command": "python benchmarks/bench_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "complete": complete,
            "machine": machine,
            "load_average_1_5_15": {"start": load[0], "end": load[-1],
                                    "max_1min": max(entry[0] for entry in load)},
            "settings": {"hidden_size": 768, "batch": 1, "questions": 2, "tokens_per_frame": TOKENS_PER_FRAME,
                         "default_question_length": DEFAULT_QUESTION_LENGTH, "default_frames": DEFAULT_FRAMES,
                         "repeats": args.repeats, "trials": args.trials, "time_cap_s": TIME_CAP_S, "memory_cap_mb": MEMORY_CAP_MB,
                         "mixer_chunk_size": chunk_size,
                         "mixer_recompute_chunk_size": _default_config_value("mixer_recompute_chunk_size"),
                         "malloc_mmap_threshold": args.malloc_mmap_threshold, "mixer_recompute_levels": levels,
                         "attention": "one pre-LN self-attention layer (12 heads, "
                                      "F.scaled_dot_product_attention, residual; no MLP)",
                         "transformer": "one MambaVLFuserBlock (pre-LN, 12 heads, MLP 4x, "
                                        "F.scaled_dot_product_attention)"},
            "wall_time_s": round(time.time() - started, 1),
            "slopes_16_to_128_frames": _slopes(results, quiet=not complete),
            **results,
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")

    for scope in args.scopes.split(","):
        for method in args.methods.split(","):
            sweeps = (([] if args.no_frames_sweep else [("frames", frames_sweep)])
                      + ([] if args.no_question_sweep else [("question_length", qlen_sweep)]))
            for sweep, values in sweeps:
                previous = None
                for value in values:
                    spec = {"scope": scope, "method": method,
                            "frames": value if sweep == "frames" else DEFAULT_FRAMES,
                            "question_length": value if sweep == "question_length" else DEFAULT_QUESTION_LENGTH,
                            **chunk_spec, **({} if args.repeats == REPEATS else {"repeats": args.repeats})}
                    method_levels = levels if method == "ssm" else [None]
                    if previous and previous[1].get("status") == "ok" and (
                            previous[1]["time_s"] * (value / previous[0]) ** 2 > TIME_CAP_S):
                        predicted = previous[1]["time_s"] * (value / previous[0]) ** 2
                        result = {"status": "not run",
                                  "note": f"predicted {predicted:.0f} s per step (slope 2 from {previous[0]}) "
                                          f"> {TIME_CAP_S:.0f} s"}
                        by_level = {level: result for level in method_levels}
                    elif previous and previous[1].get("status") == "not run":
                        result = {"status": "not run", "note": f"the smaller point ({previous[0]}) was not run"}
                        by_level = {level: result for level in method_levels}
                    elif method_levels == [None]:
                        by_level = {None: _run_trials(spec, args.trials, args.malloc_mmap_threshold)}
                    else:
                        by_level = _run_levels(spec, method_levels, args.trials, args.malloc_mmap_threshold)
                    load.append(os.getloadavg())
                    previous = (value, by_level[method_levels[0]])
                    for level, result in by_level.items():
                        row = {**spec, **({} if level is None else {"mixer_recompute": level}), "result": result}
                        results[sweep].append(row)
                        time_s, cpu_s, mem = _fmt(result)
                        ratio = (f" ({result['time_ratio_to_none']:.2f}x time, {result['cpu_time_ratio_to_none']:.2f}x "
                                 f"CPU of none)" if "time_ratio_to_none" in result else "")
                        print(f"{scope:6s} {_series(row):12s} frames {spec['frames']:3d} qlen "
                              f"{spec['question_length']:3d}: {time_s:>9s} {cpu_s:>13s} {mem:>9s}{ratio} "
                              f"{result.get('note') or ''}", flush=True)
                    write(complete=False)

    write(complete=True)
    _plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
