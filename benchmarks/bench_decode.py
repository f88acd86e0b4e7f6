"""Clip decoding speed: 16-frame clips from a long MP4 at several window positions (PyAV seeking, as
``load_clip`` does) versus decoding the file from its start (what a decoder without seeking must do), and from an
EK100-style JPEG frame folder.

Generates its own data (nothing is downloaded): a 10-minute 640x360 30 fps H.264 MP4 with a 2-second GOP
(key frame every 60 frames, B-frames on), and a frame folder of its first minute. Every clip read is checked against
the frame index encoded in the frames' pixels, so the timings are of correct reads.

    python benchmarks/bench_decode.py                       # full run -> benchmarks/results/decode.json
    python benchmarks/bench_decode.py --minutes 1 --output /tmp/decode_quick.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from modeling_mambavl.processors.sampling import sample_frame_indices, window_to_frame_range
from modeling_mambavl.processors.video_io import load_clip_with_indices, probe_video

WIDTH, HEIGHT, FPS, GOP = 640, 360, 30, 60
NUM_FRAMES = 16
WINDOW_SECONDS = 2.0  # a typical EK100 action segment
BITS = 16  # frame index as 16 black / white blocks in the top-left corner
BLOCK = 16


def _frame(i: int) -> np.ndarray:
    # a moving gradient (something for the encoder to predict) plus the frame index in blocks
    x = np.arange(WIDTH, dtype=np.uint16)[None, :]
    y = np.arange(HEIGHT, dtype=np.uint16)[:, None]
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[..., 0] = (x + 3 * i) % 256
    img[..., 1] = (y + 2 * i) % 256
    img[..., 2] = ((x + y) // 2 + i) % 256
    for bit in range(BITS):
        r, c = divmod(bit, 8)
        img[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = 255 if (i >> bit) & 1 else 0
    return img


def _index(img: np.ndarray) -> int:
    value = 0
    for bit in range(BITS):
        r, c = divmod(bit, 8)
        if img[r * BLOCK + 4 : (r + 1) * BLOCK - 4, c * BLOCK + 4 : (c + 1) * BLOCK - 4].mean() > 128:
            value |= 1 << bit
    return value


def make_video(path: Path, minutes: float) -> Path:
    n = int(round(minutes * 60 * FPS))
    if path.is_file():
        try:
            if probe_video(path).num_frames == n:
                return path
        except Exception:
            pass
    tmp = path.with_suffix(".part.mp4")
    container = av.open(str(tmp), "w")
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.codec_context.gop_size = GOP
    stream.options = {"preset": "veryfast", "crf": "23", "keyint_min": str(GOP), "sc_threshold": "0"}
    for i in range(n):
        for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    tmp.replace(path)
    return path


def make_frame_folder(video: Path, folder: Path, seconds: float) -> Path:
    n = int(seconds * FPS)
    if folder.is_dir() and (folder / f"frame_{n:010d}.jpg").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    container = av.open(str(video))
    for i, frame in enumerate(container.decode(video=0)):
        if i >= n:
            break
        frame.to_image().save(folder / f"frame_{i + 1:010d}.jpg", quality=90)
    container.close()
    return folder


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def decode_from_start(path: Path, indices: np.ndarray) -> np.ndarray:
    """The no-seek baseline: decode every frame from the start until the last wanted one (as
    transformers' ``read_video_pyav`` does), converting only the wanted frames."""
    wanted = set(int(i) for i in indices)
    last = int(indices.max())
    kept = {}
    container = av.open(str(path))
    for i, frame in enumerate(container.decode(video=0)):
        if i in wanted:
            kept[i] = frame.to_ndarray(format="rgb24")
        if i >= last:
            break
    container.close()
    return np.stack([kept[int(i)] for i in indices])


def run(minutes: float, workdir: Path, repeats: int, folder_seconds: float) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    video = make_video(workdir / f"bench_{minutes:g}min_{WIDTH}x{HEIGHT}_{FPS}fps.mp4", minutes)
    folder = make_frame_folder(video, workdir / f"frames_{minutes:g}min", folder_seconds)
    setup_s = time.perf_counter() - t0
    info = probe_video(video)
    duration = info.num_frames / FPS
    results = {"seek": [], "from_start": [], "frame_folder": []}

    positions = [0.0, 0.25, 0.5, 0.75, 0.98]
    for pos in positions:
        start = round(pos * (duration - WINDOW_SECONDS), 3)
        window = (start, start + WINDOW_SECONDS)
        for sampling, anchor in (("segment", "center"), ("dense", "end")):
            seconds, (frames, idx, _) = _time(
                lambda window=window, sampling=sampling, anchor=anchor: load_clip_with_indices(
                    str(video), window=window, num_frames=NUM_FRAMES, sampling=sampling, anchor=anchor),
                repeats,
            )
            assert [_index(f) for f in frames] == idx.tolist(), "decoded frames are not the sampled ones"
            results["seek"].append({"position": pos, "window": list(window), "sampling": sampling, "anchor": anchor,
                                    "seconds_per_clip": seconds, "clips_per_second": 1 / seconds})
            print(f"seek       pos {pos:4.2f} {sampling:7s}: {seconds * 1000:8.1f} ms/clip", flush=True)

    # whole video, 16 frames spread over 10 minutes: one seek per frame
    seconds, (frames, idx, _) = _time(lambda: load_clip_with_indices(str(video), num_frames=NUM_FRAMES), repeats)
    assert [_index(f) for f in frames] == idx.tolist()
    results["seek"].append({"position": "whole video", "window": None, "sampling": "segment", "anchor": "center",
                            "seconds_per_clip": seconds, "clips_per_second": 1 / seconds})
    print(f"seek       whole video      : {seconds * 1000:8.1f} ms/clip", flush=True)

    for pos in (0.0, 0.5, 0.98):
        start = round(pos * (duration - WINDOW_SECONDS), 3)
        window = (start, start + WINDOW_SECONDS)
        s, e = window_to_frame_range(window, Fraction(FPS))
        idx = sample_frame_indices(s, e, NUM_FRAMES)
        seconds, frames = _time(lambda idx=idx: decode_from_start(video, idx), 1)
        assert [_index(f) for f in frames] == idx.tolist()
        results["from_start"].append({"position": pos, "window": list(window), "sampling": "segment",
                                      "seconds_per_clip": seconds, "clips_per_second": 1 / seconds})
        print(f"from start pos {pos:4.2f} segment: {seconds * 1000:8.1f} ms/clip", flush=True)

    for pos in (0.0, 0.5, 0.95):
        start = round(pos * (folder_seconds - WINDOW_SECONDS), 3)
        window = (start, start + WINDOW_SECONDS)
        seconds, (frames, idx, _) = _time(
            lambda window=window: load_clip_with_indices(str(folder), window=window, num_frames=NUM_FRAMES, fps=FPS),
            repeats,
        )
        assert [_index(f) for f in frames] == idx.tolist()
        results["frame_folder"].append({"position": pos, "window": list(window), "sampling": "segment",
                                        "seconds_per_clip": seconds, "clips_per_second": 1 / seconds})
        print(f"folder     pos {pos:4.2f} segment: {seconds * 1000:8.1f} ms/clip", flush=True)

    seek_segment = [r["seconds_per_clip"] for r in results["seek"] if r["sampling"] == "segment"
                    and r["position"] != "whole video"]
    return {
        "benchmark": "bench_decode",
        "command": "python benchmarks/bench_decode.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "pyav": av.__version__,
                    "note": "shared machine: other jobs ran on the same cores"},
        "video": {"minutes": minutes, "frames": info.num_frames, "width": WIDTH, "height": HEIGHT, "fps": FPS,
                  "gop": GOP, "codec": "h264 (libx264 veryfast, crf 23, B-frames)",
                  "size_mb": round(video.stat().st_size / 2**20, 1)},
        "clip": {"num_frames": NUM_FRAMES, "window_seconds": WINDOW_SECONDS},
        "repeats": repeats,
        "setup_seconds": round(setup_s, 1),
        "results": results,
        "summary": {
            "seek_segment_ms_min": 1000 * min(seek_segment),
            "seek_segment_ms_max": 1000 * max(seek_segment),
            "seek_max_over_min": max(seek_segment) / min(seek_segment),
            "from_start_ms_at_98pct": 1000 * results["from_start"][-1]["seconds_per_clip"],
            "speedup_at_98pct": results["from_start"][-1]["seconds_per_clip"] / seek_segment[-1],
        },
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the generated video")
    parser.add_argument("--folder-seconds", type=float, default=60.0, help="length of the frame folder")
    parser.add_argument("--repeats", type=int, default=5, help="timed reads per seeking measurement (median)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mambavl_bench_decode",
                        help="where the generated video and frames are kept (reused between runs)")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "results" / "decode.json")
    args = parser.parse_args(argv)
    result = run(args.minutes, args.workdir, args.repeats, min(args.folder_seconds, args.minutes * 60))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
