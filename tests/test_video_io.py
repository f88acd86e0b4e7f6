"""Clip decoding (processors/video_io.py): generated videos whose pixels encode each frame's index prove that the
decoded frames are exactly the frames of the sampling formulas (DESIGN.md §3), for whole videos and windows, at
25 and 29.97 fps, in MP4 and in a container that reports no frame count; broken media raise MediaError."""

import math
import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from modeling_mambavl import MediaError
from modeling_mambavl.processors.sampling import clip_generator, sample_frame_indices
from modeling_mambavl.processors.video_io import (
    clip_indices,
    decode_video_frames,
    frame_folder_fps,
    load_clip,
    load_clip_with_indices,
    probe_video,
)

BLOCK, GRID = 16, 4  # 16 bits as a 4x4 grid of 16 px black/white blocks: robust to H.264 at any quality
NUM_FRAMES = 160


def _index_image(i: int) -> np.ndarray:
    img = np.zeros((BLOCK * GRID, BLOCK * GRID, 3), np.uint8)
    for bit in range(GRID * GRID):
        if (i >> bit) & 1:
            r, c = divmod(bit, GRID)
            img[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK] = 255
    return img


def _read_index(img: np.ndarray) -> int:
    value = 0
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        if img[r * BLOCK : (r + 1) * BLOCK, c * BLOCK : (c + 1) * BLOCK].mean() > 128:
            value |= 1 << bit
    return value


def _write_index_video(path: Path, rate, n: int = NUM_FRAMES, gop: int = 12) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=rate)
    stream.width = stream.height = BLOCK * GRID
    stream.pix_fmt = "yuv420p"
    stream.codec_context.gop_size = gop  # several key frames, B-frames on (x264 default): seeking is exercised
    for i in range(n):
        for packet in stream.encode(av.VideoFrame.from_ndarray(_index_image(i), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


RATES = {"25": Fraction(25), "29.97": Fraction(30000, 1001)}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("index_videos")
    out = {}
    for name, rate in RATES.items():
        out[(name, "mp4")] = _write_index_video(root / f"index_{name}.mp4", rate)
        out[(name, "mkv")] = _write_index_video(root / f"index_{name}.mkv", rate)
    return out


def _decoded(frames):
    return [_read_index(f) for f in frames]


def _window_range(window, fps):
    # the convention: [floor(start * fps), ceil(end * fps))
    s = math.floor(Fraction(window[0]).limit_denominator(10**6) * fps)
    e = math.ceil(Fraction(window[1]).limit_denominator(10**6) * fps)
    return s, min(e, NUM_FRAMES)


def _segment_eval(s, e, n):
    b = [Fraction(s) + Fraction(e - s) * i / n for i in range(n + 1)]
    return [math.floor((b[i] + b[i + 1]) / 2) for i in range(n)]


def _dense(s, e, n, stride, fps, anchor, target_fps=30):
    step = Fraction(stride) * fps / target_fps
    span = (n - 1) * step
    p0 = s + ((e - s - 1) - span) / 2 if anchor == "center" else (e - 1) - span
    p0 = max(p0, s)
    return [min(math.floor(p0 + k * step), e - 1) for k in range(n)]


WINDOWS = [None, (0.0, 2.0), (1.3, 2.9), (2.52, 5.0), (4.0, 6.4)]


def test_index_video_round_trip(videos):
    for (rate, ext), path in videos.items():
        container = av.open(str(path))
        decoded = [_read_index(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
        container.close()
        assert decoded == list(range(NUM_FRAMES)), (rate, ext)


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_probe_reports_true_rate_and_frames(videos, rate, ext):
    info = probe_video(videos[(rate, ext)])
    assert info.fps == RATES[rate]
    assert info.num_frames == NUM_FRAMES
    assert info.frame_count_reported is (ext == "mp4")  # Matroska has no frame count


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("n", [16, 5])
def test_segment_eval_frames_are_the_formula(videos, rate, ext, window, n):
    fps = RATES[rate]
    s, e = (0, NUM_FRAMES) if window is None else _window_range(window, fps)
    frames = load_clip(videos[(rate, ext)], window=window, num_frames=n, sampling="segment")
    assert frames.shape == (n, 64, 64, 3) and frames.dtype == np.uint8
    assert _decoded(frames) == _segment_eval(s, e, n)


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("window", WINDOWS)
def test_segment_train_frames_are_the_formula(videos, rate, window):
    fps = RATES[rate]
    s, e = (0, NUM_FRAMES) if window is None else _window_range(window, fps)
    b = [Fraction(s) + Fraction(e - s) * i / 16 for i in range(17)]
    clips = set()
    for epoch in range(3):
        frames, idx, _ = load_clip_with_indices(videos[(rate, "mp4")], window=window, num_frames=16, training=True,
                                                seed=5, epoch=epoch, index=11)
        got = _decoded(frames)
        assert got == idx.tolist()
        for i, k in enumerate(got):
            assert b[i] <= k < b[i + 1]  # a uniform integer of [b_i, b_{i+1})
        # exactly the draw of the clip's generator
        expected = sample_frame_indices(s, e, 16, training=True, generator=clip_generator(5, epoch, 11))
        assert got == expected.tolist()
        clips.add(tuple(got))
    assert len(clips) > 1


@pytest.mark.parametrize("rate", list(RATES))
@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("anchor", ["center", "end"])
@pytest.mark.parametrize("window", WINDOWS)
def test_dense_frames_are_the_formula(videos, rate, ext, anchor, window):
    fps = RATES[rate]
    s, e = (0, NUM_FRAMES) if window is None else _window_range(window, fps)
    frames = load_clip(videos[(rate, ext)], window=window, num_frames=8, sampling="dense", stride=4, anchor=anchor)
    assert _decoded(frames) == _dense(s, e, 8, 4, fps, anchor)


@pytest.mark.parametrize("rate", list(RATES))
def test_end_anchored_never_returns_a_frame_after_the_window(videos, rate):
    fps = RATES[rate]
    rng = np.random.default_rng(0)
    for _ in range(25):
        start = float(rng.uniform(0, NUM_FRAMES / fps - 0.1))
        end = float(start + rng.uniform(0.05, 3.0))
        for training in (False, True):
            frames = load_clip(videos[(rate, "mp4")], window=(start, end), num_frames=16, sampling="dense",
                               anchor="end", training=training, index=3)
            got = _decoded(frames)
            # frame k is shown from k / fps: every frame starts before the window's end
            assert max(got) / fps < end, (start, end, got)
            assert max(got) == min(_window_range((start, end), fps)[1], NUM_FRAMES) - 1


def test_short_video_repeats_the_last_frame(tmp_path):
    path = _write_index_video(tmp_path / "short.mp4", Fraction(25), n=6, gop=3)
    frames = load_clip(path, num_frames=16, sampling="dense", stride=2, anchor="center")
    got = _decoded(frames)
    assert got[0] == 0 and got[-1] == 5 and got.count(5) > 1
    # indices past the end read the last frame
    assert _decoded(decode_video_frames(path, [0, 5, 9, 40])) == [0, 5, 5, 5]


def test_decoding_seeks_instead_of_decoding_everything(videos, monkeypatch):
    # With frames far apart the decoder must seek: count the frames it decodes.
    decoded = []
    real_decode = av.container.InputContainer.decode

    def counting_decode(self, *args, **kwargs):
        for frame in real_decode(self, *args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(av.container.InputContainer, "decode", counting_decode)
    frames = decode_video_frames(videos[("25", "mp4")], [5, 80, 150], seek_threshold=0.5)
    assert _decoded(frames) == [5, 80, 150]
    assert len(decoded) < 60, len(decoded)  # three GOPs of 12 frames at most, plus look-ahead


def test_arrays_tensors_and_pil_lists():
    video = np.stack([_index_image(i) for i in range(40)])
    for source in (video, torch.from_numpy(video), torch.from_numpy(video).permute(0, 3, 1, 2),
                   [Image.fromarray(f) for f in video]):
        got = _decoded(load_clip(source, num_frames=8))
        assert got == _segment_eval(0, 40, 8)
    got = _decoded(load_clip(video, window=(0.4, 1.2), fps=25, num_frames=4))
    assert got == _segment_eval(10, 30, 4)
    with pytest.raises(ValueError, match="fps"):
        load_clip(video, window=(0.4, 1.2), num_frames=4)
    # float frames in [0, 1] are scaled to 0-255
    as_float = load_clip(video.astype(np.float32) / 255.0, num_frames=8)
    assert as_float.dtype == np.uint8 and _decoded(as_float) == _segment_eval(0, 40, 8)


def _write_frame_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_index_image(i)).save(folder / f"frame_{i + 1:010d}.jpg", quality=95)
    return folder


def test_frame_folder_conventions(tmp_path):
    assert frame_folder_fps("rgb_frames/P01/P01_11") == 60.0
    assert frame_folder_fps("P22_107") == 50.0
    assert frame_folder_fps("my_clip") is None
    folder = _write_frame_folder(tmp_path / "P01_11", 130)
    # 60 fps from the name; window (1.0, 2.0) s = frames [60, 120) = files 61..120
    got = _decoded(load_clip(folder, window=(1.0, 2.0), num_frames=6))
    assert got == _segment_eval(60, 120, 6)
    got = _decoded(load_clip(folder, window=(1.0, 2.0), num_frames=4, sampling="dense", anchor="end"))
    assert got == _dense(60, 120, 4, 4, 60, "end")  # stride 4 at 30 fps = 8 frames at 60 fps
    got = _decoded(load_clip(folder, window=(1.0, 2.0), num_frames=6, fps=50))
    assert got == _segment_eval(50, 100, 6)
    with pytest.raises(MediaError, match="P01_11"):
        load_clip(folder, window=(3.0, 4.0), num_frames=4)  # starts past 130 / 60 s
    other = _write_frame_folder(tmp_path / "clip", 10)
    assert _decoded(load_clip(other, num_frames=4)) == _segment_eval(0, 10, 4)
    with pytest.raises(ValueError, match="fps="):
        load_clip(other, window=(0.0, 0.1), num_frames=4)


def test_frame_folder_missing_or_broken_frames(tmp_path):
    folder = _write_frame_folder(tmp_path / "P02_101", 12)
    (folder / "frame_0000000005.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MediaError, match="frame_0000000005.jpg") as err:
        load_clip(folder, num_frames=12)
    assert err.value.path.endswith("frame_0000000005.jpg")
    empty = tmp_path / "P03_01"
    empty.mkdir()
    with pytest.raises(MediaError, match="P03_01"):
        load_clip(empty, num_frames=4)


def test_broken_files_raise_media_error_naming_the_file(videos, tmp_path):
    data = Path(videos[("25", "mp4")]).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    random_bytes = tmp_path / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(50_000))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.mp4"
    for path in (truncated, random_bytes, empty, missing):
        for window in (None, (0.5, 1.0)):
            with pytest.raises(MediaError) as err:
                load_clip(path, window=window, num_frames=8)
            assert str(path) in str(err.value) and err.value.path == str(path)
            assert err.value.window == window
            if window is not None:
                assert "0.500-1.000 s" in str(err.value)


def test_truncated_stream_with_header_raises(videos, tmp_path):
    # Matroska keeps its header at the front: a cut file opens, but the frames after the cut are missing.
    data = Path(videos[("25", "mkv")]).read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    assert _decoded(load_clip(cut, window=(0.0, 0.5), num_frames=4)) == _segment_eval(0, 13, 4)
    with pytest.raises(MediaError, match="truncated") as err:
        load_clip(cut, window=(5.0, 6.0), num_frames=4)
    assert "cut.mkv" in str(err.value) and "5.000-6.000 s" in str(err.value)


def test_bad_windows(videos):
    path = videos[("25", "mp4")]
    with pytest.raises(MediaError, match="past the end") as err:
        load_clip(path, window=(6.5, 7.0), num_frames=4)  # the video lasts 6.4 s
    assert err.value.window == (6.5, 7.0)
    with pytest.raises(MediaError, match="start_sec < end_sec"):
        load_clip(path, window=(2.0, 1.0), num_frames=4)
    # a window running past the end is cut at the last frame
    assert _decoded(load_clip(path, window=(6.0, 9.0), num_frames=4)) == _segment_eval(150, 160, 4)


def test_media_error_pickles_with_its_attributes():
    err = pickle.loads(pickle.dumps(MediaError("a.mp4", (1.0, 2.0), "broken")))
    assert (err.path, err.window, err.reason) == ("a.mp4", (1.0, 2.0), "broken")
    assert str(err) == "a.mp4 (window 1.000-2.000 s): broken"


# ------------------------------------------------------------------------------------ bit depth and non-finite values
def _grey16(value: int, size: int = 8) -> Image.Image:
    return Image.fromarray(np.full((size, size), value, dtype=np.uint16))


@pytest.mark.parametrize("value", [0, 257 * 10, 32768, 65535])
def test_16_bit_images_and_arrays_are_scaled_not_saturated(tmp_path, value):
    expected = round(value / 257)
    path = tmp_path / "grey16.png"
    _grey16(value).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # a real 16-bit PNG
        frames = load_clip([image, image], num_frames=2)
    assert frames.dtype == np.uint8 and frames.shape == (2, 8, 8, 3) and (frames == expected).all()
    array = np.full((2, 8, 8, 3), value, dtype=np.uint16)
    assert (load_clip(array, num_frames=2) == expected).all()
    folder = tmp_path / "P01_01"  # the same PNG bytes in a frame folder: read by content, not by name
    folder.mkdir()
    for i in (1, 2):
        (folder / f"frame_{i:010d}.jpg").write_bytes(path.read_bytes())
    assert (load_clip(str(folder), num_frames=2) == expected).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_are_refused_unless_allowed(bad):
    clip = np.random.default_rng(0).random((3, 8, 8, 3)).astype(np.float32)  # 0-1 floats
    clip[1, 2, 3, 0] = bad
    with pytest.raises(ValueError, match=r"video array holds 1 NaN / inf value\(s\), the first at frame 1 \(pixel "
                                         r"\(2, 3, 0\)\); pass allow_non_finite=True"):
        load_clip(clip, num_frames=3)
    allowed = load_clip(clip, num_frames=3, allow_non_finite=True)
    # read as 0-1 like the same clip without the bad value (a NaN used to make the whole clip read as 0-255)
    clean = clip.copy()
    clean[1, 2, 3, 0] = {True: 0.0, False: 1.0 if bad > 0 else 0.0}[bool(np.isnan(bad))]
    assert np.array_equal(allowed, load_clip(clean, num_frames=3))


# --------------------------------------------------------------------- frame folders with gaps, zero-frame videos
def _frames(folder: Path, count: int, skip: tuple[int, ...] = ()) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(1, count + 1):
        if i not in skip:
            Image.fromarray(np.full((16, 16, 3), i * 10, np.uint8)).save(folder / f"frame_{i:010d}.jpg")
    return folder


def test_frame_folder_with_a_gap_names_the_missing_frame_and_window(tmp_path):
    folder = _frames(tmp_path / "P01_01", 20, skip=(9,))
    with pytest.raises(MediaError) as err:
        load_clip(folder, window=(0.0, 20 / 60), num_frames=20)  # P01_01: an EK55 video, 60 fps
    assert "frame_0000000009.jpg" in str(err.value) and err.value.window == (0.0, 20 / 60)
    assert "0.000-0.333 s" in str(err.value) and "missing" in str(err.value)
    # Windows that do not touch the gap read normally, also those after it.
    assert len(load_clip(folder, window=(0.0, 0.1), num_frames=4)) == 4
    assert len(load_clip(folder, window=(0.2, 0.3), num_frames=4)) == 4


def test_non_image_file_in_a_frame_folder(tmp_path):
    folder = _frames(tmp_path / "P01_02", 8)
    (folder / "frame_0000000004.jpg").write_text("a text file, not an image")
    with pytest.raises(MediaError, match="frame_0000000004.jpg") as err:
        load_clip(folder, window=(0.0, 8 / 60), num_frames=8)
    assert err.value.window == (0.0, 8 / 60)


def test_zero_frame_video_names_file_and_window(tmp_path):
    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:  # a valid MP4 with a video stream and no frame in it
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for window in (None, (0.0, 1.0)):
        with pytest.raises(MediaError) as err:
            load_clip(path, window=window, num_frames=4)
        assert str(path) in str(err.value) and err.value.window == window


# ------------------------------------------------------------------------------- random windows (hypothesis)
NAN = float("nan")


@settings(max_examples=300, deadline=None, database=None)
@given(total=st.integers(-3, 400), fps=st.one_of(st.floats(-5, 120), st.just(NAN)),
       start=st.one_of(st.floats(-10, 30), st.sampled_from([NAN, math.inf, -math.inf])),
       length=st.one_of(st.floats(-5, 20), st.sampled_from([NAN, math.inf])), num_frames=st.integers(-2, 24),
       sampling=st.sampled_from(["segment", "dense"]), training=st.booleans())
def test_random_windows_give_frames_in_range_or_a_clear_error(total, fps, start, length, num_frames, sampling,
                                                              training):
    window = (start, start + length)
    try:
        idx = clip_indices(total, fps, window=window, num_frames=num_frames, sampling=sampling, training=training,
                           path="clip.mp4")
    except MediaError as e:
        assert e.path == "clip.mp4" and e.window == window, str(e)
        return
    except ValueError as e:  # arguments that are not about a file: fps, num_frames
        assert any(w in str(e) for w in ("fps", "num_frames", "frames", "sampling")), str(e)
        return
    idx = np.asarray(idx)
    # Indices past the last frame are allowed (they repeat it when read), none before the first.
    assert idx.shape == (num_frames,) and (idx >= 0).all() and total > 0 and fps > 0
