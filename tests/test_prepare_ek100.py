"""examples/prepare_ek100.py: output layout and size, key-frame spacing, frame timing kept (the same window gives the
same frames), resumability, and `load_ek100` reading the prepared folder."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from helpers.scripts import import_script

from modeling_mambavl.processors.video_io import load_clip_with_indices

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "prepare_ek100.py"
FPS = 30
FRAMES = 45  # 1.5 s


@pytest.fixture(scope="module")
def prepare():
    yield from import_script(SCRIPT, "prepare_ek100")


def _index_frame(k: int, width: int, height: int) -> np.ndarray:
    """Frame k shows its index as the grey level 20 + 5 k (readable after scaling and compression)."""
    return np.full((height, width, 3), 20 + 5 * k, dtype=np.uint8)


def _read_index(frame: np.ndarray) -> int:
    return int(round((float(frame.mean()) - 20) / 5))


def _write_source(path: Path, width: int = 192, height: int = 108, gop: int = 30) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "crf": "18", "preset": "ultrafast"}
        for k in range(FRAMES):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_index_frame(k, width, height), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, prepare):
    src = tmp_path_factory.mktemp("src")
    dst = tmp_path_factory.mktemp("dst")
    _write_source(src / "videos" / "P01" / "P01_01.MP4")
    _write_source(src / "videos" / "P02" / "P02_101.MP4", width=108, height=192)  # portrait
    records = prepare.prepare_ek100(src, dst, short_side=64, keyframe_interval=0.5, progress=False)
    return src, dst, records


def test_layout_size_and_manifest(prepared):
    src, dst, records = prepared
    assert [r.video_id for r in records] == ["P01_01", "P02_101"]
    out = dst / "videos" / "P01" / "P01_01.MP4"
    assert out.is_file() and not list(dst.rglob("*.partial"))
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (114, 64)  # 192x108 -> short side 64
        assert stream.average_rate == FPS and container.streams.audio == ()
    with av.open(str(dst / "videos" / "P02" / "P02_101.MP4")) as container:
        ctx = container.streams.video[0].codec_context
        assert (ctx.width, ctx.height) == (64, 114)
    manifest = json.loads((dst / "prepare_ek100.json").read_text())
    assert manifest["settings"]["short_side"] == 64
    assert manifest["videos"]["P01_01"]["frames"] == FRAMES and manifest["videos"]["P01_01"]["size"] == [114, 64]


def test_keyframes_at_most_half_a_second_apart(prepared):
    _, dst, _ = prepared
    with av.open(str(dst / "videos" / "P01" / "P01_01.MP4")) as container:
        stream = container.streams.video[0]
        keys = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.is_keyframe
                      and p.pts is not None)
    assert keys[0] == pytest.approx(0.0, abs=1e-6)
    gaps = np.diff(keys + [FRAMES / FPS])
    assert len(keys) >= 3 and gaps.max() <= 0.5 + 1e-6, keys


def test_the_same_window_reads_the_same_frames(prepared):
    src, dst, _ = prepared
    for window, sampling in (((0.2, 1.3), "segment"), ((0.0, 1.5), "dense"), ((0.9, 1.1), "segment")):
        clips = []
        for root in (src, dst):
            frames, indices, meta = load_clip_with_indices(str(root / "videos" / "P01" / "P01_01.MP4"),
                                                           window=window, num_frames=8, sampling=sampling, stride=2)
            assert Fraction(meta["fps"]).limit_denominator(1000) == FPS
            clips.append(([_read_index(f) for f in frames], list(indices)))
        assert clips[0] == clips[1], (window, clips)
        assert clips[0][0] == [min(i, FRAMES - 1) for i in clips[0][1]]


def test_resumable(prepared, prepare):
    src, dst, _ = prepared
    out = dst / "videos" / "P01" / "P01_01.MP4"
    before = out.stat().st_mtime_ns
    (dst / "videos" / "P02" / "P02_101.MP4").unlink()
    (dst / "videos" / "P02" / "P02_101.MP4.partial").write_bytes(b"interrupted")
    records = prepare.prepare_ek100(src, dst, short_side=64, keyframe_interval=0.5, progress=False)
    assert [r.skipped for r in records] == [True, False]
    assert out.stat().st_mtime_ns == before
    assert (dst / "videos" / "P02" / "P02_101.MP4").is_file() and not list(dst.rglob("*.partial"))
    assert records[0].frames == FRAMES  # the skipped video's record comes from the manifest
    with pytest.raises(ValueError, match="prepared with"):
        prepare.prepare_ek100(src, dst, short_side=32, progress=False)


def test_cli_and_errors(tmp_path, prepare):
    with pytest.raises(FileNotFoundError, match="videos folder"):
        prepare.main([str(tmp_path / "nothing"), str(tmp_path / "out")])
    src = tmp_path / "src"
    _write_source(src / "videos" / "P03" / "P03_01.MP4")
    with pytest.raises(FileNotFoundError, match="P03_02"):
        prepare.find_videos(src, ["P03_02"])
    with pytest.raises(ValueError, match="even"):
        prepare.transcode_video(src / "videos" / "P03" / "P03_01.MP4", tmp_path / "x.MP4", short_side=63)
    assert prepare.main([str(src), str(tmp_path / "out"), "--short-side", "32", "--videos", "P03_01"]) == 0
    assert (tmp_path / "out" / "videos" / "P03" / "P03_01.MP4").is_file()
    assert prepare.output_size(1920, 1080, 256) == (456, 256) and prepare.output_size(1920, 1080, 320) == (568, 320)
    assert prepare.output_size(320, 240, 256) == (320, 240)  # never upscaled


@pytest.mark.slow
def test_load_ek100_reads_the_prepared_layout(tmp_path, prepare):
    from modeling_mambavl.ek100 import load_ek100, make_synthetic_ek100

    data = make_synthetic_ek100(tmp_path / "ek", num_train=12, num_validation=12, num_test=12, clips_per_video=6,
                                size=64, frames=False, features=False)
    prepared = tmp_path / "prepared"
    prepare.prepare_ek100(data.media_root, prepared, short_side=32, progress=False)
    original = load_ek100(data.annotations_dir, "validation", media_root=data.media_root, media="video")
    small = load_ek100(data.annotations_dir, "validation", media_root=prepared, media="video")
    assert len(small) == len(original) >= 4
    for i in range(len(small)):
        a, b = np.asarray(original[i]["video"]), np.asarray(small[i]["video"])
        assert b.shape == (a.shape[0], 32, 32, 3)
        # The same frames, downscaled: compare 2x2 block means of the original with the prepared frames.
        pooled = a.reshape(a.shape[0], 32, 2, 32, 2, 3).mean(axis=(2, 4))
        assert np.abs(pooled - b.astype(np.float64)).mean() < 12, i
