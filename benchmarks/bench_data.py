"""Data throughput per DataLoader worker: training clips of 16 frames at 224 px from JPEG frame folders, original
1080p MP4s and MP4s prepared by ``examples/prepare_ek100.py``.

    python benchmarks/bench_data.py                     # ~10 min on 2 shared cores, most of it making the 1080p video
    python benchmarks/bench_data.py --clips 10 --seconds 8

Nothing is downloaded. The script generates:

- **original**: a 1920x1080, 60 fps H.264 MP4 like the EK100 head-camera videos: a detailed scene (smooth blobs, edges
  and fine texture) under a moving, shaking camera with sensor noise; libx264 ``medium``, CRF 20, a key frame every
  1 s (``keyint=60``), 3 B-frames;
- **prepared 256 / 320**: that video through ``prepare_ek100.transcode_video`` (short side 256 / 320, key frame every
  0.5 s);
- **JPEG frames**: the EK100 ``rgb_frames`` layout (``frame_%010d.jpg``, 456x256 as in EK100, quality 90) of the same
  video.

Each case reads ``--clips`` clips as a training worker does: ``load_clip`` (segment sampling, ``training=True``,
16 frames from a random 2-s window, seeded per clip) then ``MambaVLVideoProcessor.process_frames(training=True)``
(RandomResizedCrop to 224, flip, normalise) -> (16, 3, 224, 224) float32. One clip of warm-up; clips/s is the number
of clips over the wall time; CPU-seconds per clip (user + system, all threads, FFmpeg's included) is what sizes the
number of workers. ``torch`` runs on one thread, as in a DataLoader worker. Results:
``benchmarks/results/data.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _machine as _machine_info  # benchmarks/ is on sys.path when a benchmark runs as a script

ROOT = Path(__file__).resolve().parents[1]
FPS = 60
NUM_FRAMES = 16
WINDOW_S = 2.0
# Sizing the workers: a ViT-B/16 video model (16 x 224) costs about 180 GFLOPs per clip forward (VideoMAE-B's
# figure), so a training step about 3x that; at batch 64 that is ~34.6 TFLOP per step. Throughputs below assume a
# model FLOP utilisation of 40 % in bf16 (dense peaks: A100 312 TFLOPS, H100 SXM 989 TFLOPS). These are estimates,
# not measurements: replace them with your measured step time.
VIT_B_TRAIN_GFLOP_PER_CLIP = 3 * 180
GPUS = {"A100 (bf16, 40% MFU)": 312e12 * 0.4, "H100 SXM (bf16, 40% MFU)": 989e12 * 0.4}
BATCH = 64


def _load_prepare():
    spec = importlib.util.spec_from_file_location("prepare_ek100", ROOT / "examples" / "prepare_ek100.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_original(path: Path, seconds: float, fps: int = FPS, size=(1920, 1080)) -> dict:
    """A head-camera-like 1080p H.264 video (see the module docstring)."""
    import av
    import numpy as np
    from PIL import Image, ImageFilter

    width, height = size
    rng = np.random.default_rng(0)
    margin = 160
    canvas_w, canvas_h = width + 2 * margin, height + 2 * margin
    # Smooth blobs at several scales, hard-edged rectangles (furniture, boards), fine texture.
    scene = np.zeros((canvas_h, canvas_w, 3), dtype=np.float32)
    for cells, weight in ((6, 90.0), (24, 50.0), (96, 25.0)):
        small = rng.uniform(0, 255, (cells * canvas_h // canvas_w + 1, cells, 3)).astype(np.uint8)
        scene += weight / 165.0 * np.asarray(Image.fromarray(small).resize((canvas_w, canvas_h), Image.BICUBIC),
                                             dtype=np.float32)
    for _ in range(60):
        x0, y0 = rng.integers(0, canvas_w - 50), rng.integers(0, canvas_h - 50)
        x1, y1 = x0 + rng.integers(20, 400), y0 + rng.integers(20, 300)
        scene[y0:y1, x0:x1] = scene[y0:y1, x0:x1] * 0.3 + rng.uniform(0, 255, 3) * 0.7
    scene = np.asarray(Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8)).filter(ImageFilter.DETAIL))
    start = time.perf_counter()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "medium", "crf": "20", "x264-params": f"keyint={fps}:min-keyint={fps}:bframes=3"}
        for i in range(int(seconds * fps)):
            t = i / fps
            # A slow pan plus head shake.
            dx = int(margin + 0.8 * margin * math.sin(0.4 * t) + 12 * math.sin(7.0 * t))
            dy = int(margin + 0.5 * margin * math.sin(0.3 * t + 1.0) + 9 * math.sin(5.3 * t))
            frame = scene[dy:dy + height, dx:dx + width].astype(np.int16)
            frame = frame + rng.integers(-4, 5, (height // 4, width // 4, 1), dtype=np.int16).repeat(4, 0).repeat(4, 1)
            video_frame = av.VideoFrame.from_ndarray(np.clip(frame, 0, 255).astype(np.uint8), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return {"seconds": seconds, "fps": fps, "size": list(size), "bytes": path.stat().st_size,
            "mbit_per_s": round(path.stat().st_size * 8 / seconds / 1e6, 1),
            "encode_s": round(time.perf_counter() - start, 1),
            "encoder": f"libx264 medium, CRF 20, keyint {fps}, 3 B-frames"}


def make_frames(video: Path, folder: Path, size=(456, 256), quality: int = 90) -> dict:
    """EK100 ``rgb_frames`` layout of a video: frame_%010d.jpg, 1-based."""
    import av
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(video)) as container:
        for count, frame in enumerate(container.decode(video=0), start=1):
            image = frame.to_image().resize(size, Image.BILINEAR)
            image.save(folder / f"frame_{count:010d}.jpg", quality=quality)
    total = sum(p.stat().st_size for p in folder.iterdir())
    return {"frames": count, "size": list(size), "quality": quality, "bytes": total}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(source: str, clips: int, seconds: float, video_processor, fps: float | None) -> dict:
    """Read ``clips`` training clips from ``source`` as a DataLoader worker would."""
    import numpy as np

    from modeling_mambavl.processors.video_io import load_clip

    rng = np.random.default_rng(1)
    starts = rng.uniform(0, seconds - WINDOW_S, clips + 1)

    def one(i):
        t0 = time.perf_counter()
        clip = load_clip(source, window=(float(starts[i]), float(starts[i]) + WINDOW_S), num_frames=NUM_FRAMES,
                         sampling="segment", training=True, seed=0, epoch=0, index=i, fps=fps)
        t1 = time.perf_counter()
        out = video_processor.process_frames([clip], training=True, seed=0, epoch=0, indices=[i])
        t2 = time.perf_counter()
        assert tuple(out["pixel_values"].shape) == (1, NUM_FRAMES, 3, 224, 224), out["pixel_values"].shape
        return t1 - t0, t2 - t1

    one(clips)  # warm-up (a window not timed)
    cpu0, wall0 = _cpu_s(), time.perf_counter()
    parts = [one(i) for i in range(clips)]
    wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
    return {
        "clips": clips,
        "clips_per_s": clips / wall,
        "cpu_s_per_clip": cpu / clips,
        "decode_ms_median": 1e3 * statistics.median(p[0] for p in parts),
        "transform_ms_median": 1e3 * statistics.median(p[1] for p in parts),
        "wall_s": wall,
    }


def _machine() -> dict:
    import av
    import torch

    cpu_model = _machine_info.cpu_model()
    return {"cpu": cpu_model, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "pyav": av.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def recommend(results: dict) -> dict:
    """Workers each GPU needs per case: clips/s the GPU consumes x CPU-seconds per clip (a worker is a core), +25 %."""
    out = {}
    for gpu, flops in GPUS.items():
        step_s = BATCH * VIT_B_TRAIN_GFLOP_PER_CLIP * 1e9 / flops
        need = BATCH / step_s
        out[gpu] = {"estimated_step_s": round(step_s, 3), "clips_per_s": round(need, 1),
                    "workers": {case: math.ceil(1.25 * need * r["cpu_s_per_clip"]) for case, r in results.items()}}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=20, help="clips per case (original 1080p: half as many)")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of the generated video")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "data.json"))
    parser.add_argument("--workdir", help="keep the generated media here (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from modeling_mambavl import MambaVLVideoProcessor

    torch.set_num_threads(1)  # as in a DataLoader worker
    prepare = _load_prepare()
    machine = _machine()
    load = [os.getloadavg()]
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        original = work / "videos" / "P01" / "P01_01.MP4"
        original.parent.mkdir(parents=True, exist_ok=True)
        media = {"original_1080p": make_original(original, args.seconds)}
        print(f"original: {media['original_1080p']}", flush=True)
        sources = {"original_1080p": (str(original), None)}
        for side in (256, 320):
            out = work / f"prepared_{side}" / "videos" / "P01" / "P01_01.MP4"
            record = prepare.transcode_video(original, out, short_side=side, keyframe_interval=0.5)
            media[f"prepared_{side}"] = {"size": list(record.size), "bytes": out.stat().st_size,
                                         "transcode_s": round(record.transcode_s, 1),
                                         "transcode_x_realtime": round(record.seconds / record.transcode_s, 2)}
            sources[f"prepared_{side}"] = (str(out), None)
            print(f"prepared {side}: {media[f'prepared_{side}']}", flush=True)
        frames = work / "rgb_frames" / "P01" / "P01_01"
        media["jpeg_frames"] = make_frames(original, frames)
        sources["jpeg_frames"] = (str(frames), float(FPS))
        print(f"jpeg frames: {media['jpeg_frames']}", flush=True)
        load.append(os.getloadavg())

        video_processor = MambaVLVideoProcessor(num_frames=NUM_FRAMES)
        results = {}
        for case, (source, fps) in sources.items():
            clips = max(args.clips // 2, 3) if case == "original_1080p" else args.clips
            results[case] = measure(source, clips, args.seconds, video_processor, fps)
            load.append(os.getloadavg())
            r = results[case]
            print(f"{case:15s}: {r['clips_per_s']:6.2f} clips/s per worker, {r['cpu_s_per_clip']:.3f} CPU-s/clip "
                  f"(decode {r['decode_ms_median']:.0f} ms, transform {r['transform_ms_median']:.0f} ms)", flush=True)

    base = results["original_1080p"]
    speedups = {case: {"clips_per_s": r["clips_per_s"] / base["clips_per_s"],
                       "cpu_s_per_clip": base["cpu_s_per_clip"] / r["cpu_s_per_clip"]} for case, r in results.items()}
    recommendation = recommend(results)
    for gpu, rec in recommendation.items():
        print(f"{gpu}: ~{rec['clips_per_s']} clips/s -> workers {rec['workers']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "bench_data",
        "command": "python benchmarks/bench_data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "load_average_1_5_15": {"start": load[0], "end": load[-1], "max_1min": max(x[0] for x in load)},
        "settings": {"num_frames": NUM_FRAMES, "size": 224, "window_s": WINDOW_S, "sampling": "segment, training",
                     "transform": "process_frames(training=True): RandomResizedCrop 224, flip, normalise",
                     "torch_threads": 1, "ffmpeg_threads": "auto (decode_video_frames sets thread_type AUTO)"},
        "media": media,
        "results": results,
        "speedup_vs_original": speedups,
        "recommendation": {"assumptions": {"model": "ViT-B/16 video model, 16 x 224, ~180 GFLOPs forward per clip, "
                                                    "training step = 3x forward", "batch": BATCH,
                                           "gpus": {k: f"{v / 1e12:.0f} TFLOPS effective" for k, v in GPUS.items()},
                                           "workers": "ceil(1.25 x clips/s x CPU-s per clip)"},
                           **recommendation},
        "wall_time_s": round(time.time() - started, 1),
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
