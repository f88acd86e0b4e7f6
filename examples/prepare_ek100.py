"""Transcode EPIC-KITCHENS-100 videos into small, quickly seekable MP4s for training.

    python examples/prepare_ek100.py /data/EK100 /data/EK100-256                   # short side 256 (default)
    python examples/prepare_ek100.py /data/EK100 /data/EK100-320 --short-side 320 --workers 8
    python examples/prepare_ek100.py /data/EK100 /data/EK100-256 --videos P01_01 P01_02   # a subset

The originals (``SRC/videos/PXX/PXX_YY.MP4``: 1920x1080 H.264, 50 or 60 fps) cost far more to decode than a training
clip of 16 frames at 224 px needs. This script writes the same layout under ``DST``:

    DST/videos/PXX/PXX_YY.MP4        H.264 (libx264, yuv420p), short side --short-side (256 or 320; aspect kept,
                                     even sizes; never upscaled), a key frame every --keyframe-interval seconds
                                     (<= 0.5 s by default: a seek lands at most that far before a wanted frame),
                                     no B-frame reordering past a key frame, no audio
    DST/prepare_ek100.json           settings and, per video, source / output size, frame rate, frames, seconds

so that ``load_ek100(annotations, split, media_root=DST, media="video")`` (and ``MambaVLProcessor`` on the files)
reads it with no other change. Every frame keeps its time stamp and the stream its frame rate, so a window in seconds
selects the same frames as in the original (``processors`` section of the README: index ``i`` is the frame of time
``(i + 1/2) / fps``). Benchmarks of decoding speed per worker: ``BENCHMARKS.md`` ("Data throughput").

Resumable: each video is written to ``PXX_YY.MP4.partial`` and renamed when complete; a run skips videos whose
output exists (``--overwrite`` redoes them) and replaces leftover ``.partial`` files. Progress: a bar over videos
(and one over frames with ``--workers 1``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

MANIFEST = "prepare_ek100.json"


@dataclass
class PreparedVideo:
    """What was written for one video."""

    video_id: str
    source: str
    output: str
    source_size: tuple[int, int]  # (width, height)
    size: tuple[int, int]
    fps: float
    frames: int
    seconds: float
    transcode_s: float
    skipped: bool = False


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side ``short_side`` (never larger than the source), both even."""
    short = min(width, height)
    if short <= short_side:
        scale = 1.0
    else:
        scale = short_side / short

    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    return even(width * scale), even(height * scale)


def find_videos(src: str | os.PathLike, video_ids: list[str] | None = None) -> list[tuple[str, Path]]:
    """(video_id, path) of ``SRC/videos/PXX/PXX_YY.MP4`` (or ``.mp4``), sorted; ``video_ids`` selects some."""
    root = Path(src) / "videos"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no videos folder; expected the EK100 layout SRC/videos/PXX/PXX_YY.MP4")
    found = {}
    for path in sorted(root.glob("P*/*")):
        if path.suffix.lower() == ".mp4" and path.is_file():
            found[path.stem] = path
    if video_ids is not None:
        missing = [v for v in video_ids if v not in found]
        if missing:
            raise FileNotFoundError(f"{root}: no video file for {', '.join(missing)} (expected "
                                    f"{root}/{missing[0].split('_')[0]}/{missing[0]}.MP4)")
        return [(v, found[v]) for v in video_ids]
    return sorted(found.items())


def transcode_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    short_side: int = 256,
    keyframe_interval: float = 0.5,
    crf: int = 23,
    preset: str = "veryfast",
    threads: int = 0,
    progress: bool = False,
) -> PreparedVideo:
    """Transcode one video to ``dst`` (written as ``dst + '.partial'`` and renamed when complete).

    Args:
        short_side: output short side in pixels (even; the source is never upscaled).
        keyframe_interval: seconds between key frames (the GOP is ``floor(keyframe_interval * fps)`` frames).
        crf, preset: libx264 quality and speed.
        threads: encoder and decoder threads (0: FFmpeg's choice).
        progress: show a bar over the frames.
    """
    import av

    src, dst = Path(src), Path(dst)
    if short_side < 2 or short_side % 2:
        raise ValueError(f"short_side={short_side}: expected an even number of pixels (H.264 needs even sizes)")
    if keyframe_interval <= 0:
        raise ValueError(f"keyframe_interval={keyframe_interval}: expected a positive number of seconds")
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    start = time.perf_counter()
    try:
        source = av.open(str(src))
    except Exception as e:
        raise RuntimeError(f"{src}: cannot open the video ({type(e).__name__}: {e})") from e
    frames = 0
    try:
        if not source.streams.video:
            raise RuntimeError(f"{src}: no video stream")
        ist = source.streams.video[0]
        ist.thread_type = "AUTO"
        if threads:
            ist.codec_context.thread_count = threads
        rate = ist.average_rate or ist.guessed_rate or Fraction(30)
        width, height = ist.codec_context.width, ist.codec_context.height
        out_w, out_h = output_size(width, height, short_side)
        gop = max(1, math.floor(keyframe_interval * rate))
        duration = float(ist.duration * ist.time_base) if ist.duration else None
        total = ist.frames or (int(duration * rate) if duration else None)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="frame", desc=src.stem, leave=False)
        with av.open(str(partial), "w", format="mp4") as out:
            ost = out.add_stream("libx264", rate=rate)
            ost.width, ost.height, ost.pix_fmt = out_w, out_h, "yuv420p"
            ost.time_base = ist.time_base  # keep every frame's time stamp
            ost.codec_context.gop_size = gop
            ost.options = {"crf": str(crf), "preset": preset,
                           "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0",
                           **({"threads": str(threads)} if threads else {})}
            for frame in source.decode(ist):
                small = frame.reformat(width=out_w, height=out_h, format="yuv420p",
                                       interpolation="AREA" if (out_w, out_h) != (width, height) else None)
                small.pts, small.time_base = frame.pts, frame.time_base
                for packet in ost.encode(small):
                    out.mux(packet)
                frames += 1
                if bar is not None:
                    bar.update(1)
            for packet in ost.encode():
                out.mux(packet)
        if bar is not None:
            bar.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    if frames == 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"{src}: no decodable video frames")
    os.replace(partial, dst)
    return PreparedVideo(video_id=src.stem, source=str(src), output=str(dst), source_size=(width, height),
                         size=(out_w, out_h), fps=float(rate), frames=frames, seconds=frames / float(rate),
                         transcode_s=time.perf_counter() - start)


def output_path(dst_root: str | os.PathLike, video_id: str) -> Path:
    """``DST/videos/PXX/PXX_YY.MP4``: the layout ``load_ek100(media="video")`` reads."""
    return Path(dst_root) / "videos" / video_id.split("_")[0] / f"{video_id}.MP4"


def _prepare_one(args: tuple) -> PreparedVideo:
    video_id, path, dst_root, settings, progress = args
    return transcode_video(path, output_path(dst_root, video_id), progress=progress, **settings)


def prepare_ek100(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    short_side: int = 256,
    keyframe_interval: float = 0.5,
    crf: int = 23,
    preset: str = "veryfast",
    workers: int = 1,
    video_ids: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[PreparedVideo]:
    """Transcode every video of ``src`` (EK100 layout) into ``dst``; see the module docstring. Returns one record per
    video (``skipped=True`` for outputs that already existed) and writes ``dst/prepare_ek100.json``."""
    from tqdm.auto import tqdm

    videos = find_videos(src, video_ids)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    manifest_path = dst / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"videos": {}}
    settings = {"short_side": short_side, "keyframe_interval": keyframe_interval, "crf": crf, "preset": preset}
    if manifest.get("settings") not in (None, settings) and not overwrite:
        raise ValueError(f"{manifest_path}: this folder was prepared with {manifest['settings']}, not {settings}; "
                         "choose another DST or pass overwrite=True (--overwrite)")
    manifest["settings"] = settings
    todo, records = [], []
    for video_id, path in videos:
        out = output_path(dst, video_id)
        if out.is_file() and not overwrite:
            known = manifest["videos"].get(video_id)
            records.append(PreparedVideo(**{**known, "skipped": True}) if known else PreparedVideo(
                video_id, str(path), str(out), (0, 0), (0, 0), 0.0, 0, 0.0, 0.0, skipped=True))
        else:
            todo.append((video_id, path))
    threads = 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)
    jobs = [(video_id, path, dst, {**settings, "threads": threads}, progress and workers <= 1)
            for video_id, path in todo]

    def done(record: PreparedVideo) -> None:
        records.append(record)
        manifest["videos"][record.video_id] = {k: v for k, v in asdict(record).items() if k != "skipped"}
        tmp = manifest_path.with_name(MANIFEST + ".partial")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, manifest_path)

    bar = tqdm(total=len(videos), initial=len(videos) - len(todo), unit="video", disable=not progress)
    if workers <= 1:
        for job in jobs:
            done(_prepare_one(job))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(_prepare_one, job) for job in jobs]):
                done(future.result())
                bar.update(1)
    bar.close()
    return sorted(records, key=lambda r: r.video_id)


def main(argv: list[str] | None = None) -> int:
    from modeling_mambavl.training.arguments import HelpFormatter, finish_parser  # (the transcoding needs only av)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("src", help="EK100 media root holding videos/PXX/PXX_YY.MP4")
    parser.add_argument("dst", help="output media root (videos/PXX/PXX_YY.MP4 + prepare_ek100.json)")
    parser.add_argument("--short-side", type=int, default=256, help="output short side in pixels (256 or 320)")
    parser.add_argument("--keyframe-interval", type=float, default=0.5, help="seconds between key frames")
    parser.add_argument("--crf", type=int, default=23, help="libx264 constant rate factor (lower: better, larger)")
    parser.add_argument("--preset", default="veryfast", help="libx264 preset")
    parser.add_argument("--workers", type=int, default=1, help="videos transcoded in parallel")
    parser.add_argument("--videos", nargs="+", help="only these video ids (PXX_YY)")
    parser.add_argument("--overwrite", action="store_true", help="redo videos whose output exists")
    finish_parser(parser)  # --debug; refuses an option without help
    args = parser.parse_args(argv)
    records = prepare_ek100(args.src, args.dst, short_side=args.short_side, keyframe_interval=args.keyframe_interval,
                            crf=args.crf, preset=args.preset, workers=args.workers, video_ids=args.videos,
                            overwrite=args.overwrite)
    new = [r for r in records if not r.skipped]
    print(f"{len(new)} video(s) transcoded, {len(records) - len(new)} already done; "
          f"load with load_ek100(..., media_root={str(args.dst)!r}, media='video')")
    return 0


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "prepare_ek100.py"))
