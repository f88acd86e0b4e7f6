"""End-to-end CPU inference latency and throughput of ``MambaVLForVideoClassification``, with decoding timed apart
and the model's parts timed by ``torch.profiler`` ranges in the same runs.

    python benchmarks/bench_latency.py                          # tiny and timesformer-base, batch 1 and 8
    python benchmarks/bench_latency.py --presets tiny --batches 1 --repeats 3

For each preset and batch size: a model built from the preset (random weights; timings do not depend on them),
in eval mode under ``torch.inference_mode()``, float32, on all of ``torch.get_num_threads()`` threads. Inputs come
from a real pipeline: a generated 10 s, 640x360, 30 fps H.264 MP4 decoded by ``MambaVLProcessor`` (PyAV, 2-s windows,
``num_frames`` frames, resize + centre crop to the preset's size, normalise) with the default (generic) questions.

- decode: the processor call for the whole batch (median of ``--repeats`` after one warm-up call);
- model: ``model(**inputs)``, one warm-up call, then ``--repeats`` calls, each inside its own ``torch.profiler.profile``
  (CPU activities only), timed by ``time.perf_counter`` around the call; the median is reported. From each call's
  profile the ranges the model code opens are summed (``mambavl.backbone``, ``mambavl.video_adapter``,
  ``mambavl.questions``, ``mambavl.fusion`` (which holds ``mambavl.selective_scan``), ``mambavl.heads``) and their
  medians are reported. Calls whose warm-up takes longer than ``--slow-seconds`` are repeated ``--slow-repeats`` times.

The acceptance figure is (fusion + heads + question branch) / backbone for ``timesformer-base`` at batch 1. Results:
``benchmarks/results/latency.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _machine as _machine_info  # benchmarks/ is on sys.path when a benchmark runs as a script

ROOT = Path(__file__).resolve().parents[1]
RANGES = ("mambavl.backbone", "mambavl.video_adapter", "mambavl.questions", "mambavl.fusion",
          "mambavl.selective_scan", "mambavl.heads")


def _make_video(path: Path, seconds: float = 10.0, fps: int = 30, size: tuple[int, int] = (640, 360)) -> None:
    """A textured, moving H.264 clip (so that decoding does real work)."""
    import av
    import numpy as np

    width, height = size
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": "60"}
        for i in range(int(seconds * fps)):
            y, x = (3 * i) % height, (5 * i) % width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(texture[y:y + height, x:x + width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _range_totals(prof) -> dict[str, float]:
    """Total wall time (s) of each ``mambavl.*`` range in one profile."""
    totals = dict.fromkeys(RANGES, 0.0)
    for event in prof.events():
        if event.name in totals:
            totals[event.name] += event.time_range.elapsed_us() / 1e6
    return totals


def _measure(preset: str, batch: int, video: Path, repeats: int, slow_seconds: float, slow_repeats: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor, MambaVLVideoProcessor

    torch.manual_seed(0)
    config = MambaVLConfig.from_preset(preset)
    video_processor = MambaVLVideoProcessor(num_frames=config.num_frames, size={"shortest_edge": config.image_size},
                                            crop_size={"height": config.image_size, "width": config.image_size},
                                            image_mean=config.image_mean, image_std=config.image_std)
    processor = MambaVLProcessor(video_processor)
    defaults = processor.default_question_inputs()
    config.default_question_input_ids = defaults["default_question_input_ids"]
    config.default_question_attention_mask = defaults["default_question_attention_mask"]
    model = MambaVLForVideoClassification(config).eval()
    windows = [(0.5 + 1.1 * i, 2.5 + 1.1 * i) for i in range(batch)]

    def decode():
        return processor(videos=[str(video)] * batch, windows=windows, return_tensors="pt")

    decode()
    decode_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        inputs = decode()
        decode_times.append(time.perf_counter() - start)
    inputs = {k: v for k, v in inputs.items() if k in ("pixel_values", "question_input_ids", "question_attention_mask")}

    with torch.inference_mode():
        start = time.perf_counter()
        model(**inputs)
        warmup = time.perf_counter() - start
        runs = slow_repeats if warmup > slow_seconds else repeats
        totals, ranges = [], []
        for _ in range(runs):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                model(**inputs)
                totals.append(time.perf_counter() - start)
            ranges.append(_range_totals(prof))
    median_ranges = {name: statistics.median(r[name] for r in ranges) for name in RANGES}
    backbone = median_ranges["mambavl.backbone"]
    besides = median_ranges["mambavl.fusion"] + median_ranges["mambavl.heads"] + median_ranges["mambavl.questions"]
    model_s = statistics.median(totals)
    decode_s = statistics.median(decode_times)
    return {
        "preset": preset,
        "batch": batch,
        "num_frames": config.num_frames,
        "image_size": config.image_size,
        "video_tokens": None,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "runs": runs,
        "decode_s": decode_s,
        "decode_times_s": decode_times,
        "model_s": model_s,
        "model_times_s": totals,
        "model_warmup_s": warmup,
        "end_to_end_s": decode_s + model_s,
        "clips_per_s_model": batch / model_s,
        "clips_per_s_end_to_end": batch / (decode_s + model_s),
        "ranges_s": median_ranges,
        "ranges_per_run_s": ranges,
        "fusion_heads_questions_over_backbone": besides / backbone if backbone else None,
        "with_video_adapter_over_backbone": (besides + median_ranges["mambavl.video_adapter"]) / backbone
        if backbone else None,
    }


def _machine() -> dict:
    import torch

    cpu_model = _machine_info.cpu_model()
    return {"cpu": cpu_model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,timesformer-base")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slow-seconds", type=float, default=60.0,
                        help="a model call whose warm-up takes longer is repeated --slow-repeats times")
    parser.add_argument("--slow-repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "latency.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    machine = _machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, "
          f"{machine['torch_threads']} threads", flush=True)
    load = [os.getloadavg()]
    started = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "clip.mp4"
        _make_video(video)
        for preset in args.presets.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                r = _measure(preset, batch, video, args.repeats, args.slow_seconds, args.slow_repeats)
                load.append(os.getloadavg())
                results.append(r)
                rng = r["ranges_s"]
                print(f"{preset:17s} batch {batch}: decode {r['decode_s'] * 1e3:7.0f} ms, model "
                      f"{r['model_s'] * 1e3:8.0f} ms ({r['clips_per_s_model']:.2f} clips/s, {r['runs']} runs) | "
                      + ", ".join(f"{k.split('.')[1]} {v * 1e3:.1f} ms" for k, v in rng.items())
                      + f" | (fusion+heads+questions)/backbone {100 * r['fusion_heads_questions_over_backbone']:.2f} %",
                      flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_latency",
        "command": "python benchmarks/bench_latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "load_average_1_5_15": {"start": load[0], "end": load[-1], "max_1min": max(x[0] for x in load)},
        "settings": {"repeats": args.repeats, "slow_seconds": args.slow_seconds, "slow_repeats": args.slow_repeats,
                     "video": "generated 10 s 640x360 30 fps H.264 (libx264 veryfast, CRF 23, GOP 60)",
                     "questions": "the processor's default (generic) questions", "dtype": "float32",
                     "mode": "eval, torch.inference_mode()"},
        "wall_time_s": round(time.time() - started, 1),
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
