"""Frame-index formulas of processors/sampling.py (DESIGN.md §3), checked against direct computations."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_mambavl.processors.sampling import (
    clip_generator,
    dense_indices,
    sample_frame_indices,
    segment_indices,
    window_to_frame_range,
)


def _segment_eval_reference(s, e, n):
    b = [Fraction(s) + Fraction(e - s) * i / n for i in range(n + 1)]
    return [math.floor((b[i] + b[i + 1]) / 2) for i in range(n)]


def _segment_bounds_reference(s, e, n):
    b = [Fraction(s) + Fraction(e - s) * i / n for i in range(n + 1)]
    return b


def test_clip_generator_depends_only_on_seed_epoch_index():
    a = clip_generator(1, 2, 3).random(5)
    np.random.seed(123)  # global state must not matter
    b = clip_generator(1, 2, 3).random(5)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, clip_generator(1, 3, 3).random(5))
    assert not np.array_equal(a, clip_generator(1, 2, 4).random(5))
    assert not np.array_equal(a, clip_generator(2, 2, 3).random(5))
    # stream 0 is the plain (seed, epoch, index) generator; other streams are independent of it
    assert np.array_equal(a, clip_generator(1, 2, 3, stream=0).random(5))
    assert not np.array_equal(a, clip_generator(1, 2, 3, stream=1).random(5))


@pytest.mark.parametrize("bad", [(-1, 0, 0), (0, -1, 0), (0, 0, 1.5), (True, 0, 0)])
def test_clip_generator_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        clip_generator(*bad)


def test_window_to_frame_range_convention():
    # [floor(start * fps), ceil(end * fps))
    assert window_to_frame_range((1.0, 2.0), 25) == (25, 50)
    assert window_to_frame_range((1.01, 2.01), 25) == (25, 51)
    # float seconds that are exact frame times land on that frame whatever the rounding of the product
    assert window_to_frame_range((1.12, 2.36), 25) == (28, 59)
    assert window_to_frame_range((0.0, 1.0), Fraction(30000, 1001)) == (0, 30)
    assert window_to_frame_range(None, 30, 77) == (0, 77)
    # a window shorter than a frame still holds one frame
    assert window_to_frame_range((1.0, 1.001), 25) == (25, 26)


@pytest.mark.parametrize("window", [(1.0, 1.0), (2.0, 1.0), (-1.0, 1.0), (0.0, float("nan")), (1.0,)])
def test_window_to_frame_range_rejects_bad_windows(window):
    with pytest.raises(ValueError, match="window"):
        window_to_frame_range(window, 25)


@pytest.mark.parametrize("s,e,n", [(0, 150, 16), (17, 93, 8), (5, 12, 16), (0, 1, 4), (100, 3600, 32), (3, 10, 7)])
def test_segment_eval_matches_formula(s, e, n):
    assert segment_indices(s, e, n).tolist() == _segment_eval_reference(s, e, n)


@pytest.mark.parametrize("s,e,n", [(0, 150, 16), (17, 93, 8), (5, 12, 16), (0, 1, 4)])
def test_segment_train_draws_inside_each_segment(s, e, n):
    b = _segment_bounds_reference(s, e, n)
    evals = _segment_eval_reference(s, e, n)
    seen = set()
    for epoch in range(20):
        idx = segment_indices(s, e, n, training=True, generator=clip_generator(0, epoch, 7)).tolist()
        for i, k in enumerate(idx):
            has_integer = math.ceil(b[i]) < b[i + 1]
            if has_integer:
                assert b[i] <= k < b[i + 1]
            else:  # no integer in [b_i, b_{i+1}): the evaluation frame
                assert k == evals[i]
        seen.add(tuple(idx))
    if e - s >= 2 * n:
        assert len(seen) > 1  # it is random


def test_segment_train_is_uniform_inside_a_segment():
    counts = np.zeros(10, dtype=int)
    for epoch in range(2000):
        (k,) = segment_indices(0, 10, 1, training=True, generator=clip_generator(3, epoch, 0))
        counts[k] += 1
    assert counts.min() > 150 and counts.max() < 250


def _dense_reference(s, e, n, stride, target_fps, fps, anchor):
    step = stride * fps / target_fps
    span = (n - 1) * step
    p0 = s + ((e - s - 1) - span) / 2 if anchor == "center" else (e - 1) - span
    p0 = max(p0, s)
    return [min(math.floor(p0 + k * step + 1e-6), e - 1) for k in range(n)]


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 50.0, 60.0, 90.0])
@pytest.mark.parametrize("anchor", ["center", "end"])
@pytest.mark.parametrize("s,e", [(0, 1000), (120, 260), (10, 20)])
def test_dense_matches_formula(fps, anchor, s, e):
    got = dense_indices(s, e, 16, stride=4, target_fps=30.0, fps=fps, anchor=anchor)
    assert got.tolist() == _dense_reference(s, e, 16, 4, 30.0, fps, anchor)


def test_dense_counts_stride_at_target_fps():
    # 60 fps source, stride 4 at 30 fps: 8 source frames apart
    idx = dense_indices(0, 600, 16, stride=4, target_fps=30, fps=60, anchor="center")
    assert set(np.diff(idx).tolist()) == {8}
    # without a source rate the frames are taken to be at target_fps
    idx = dense_indices(0, 600, 16, stride=4, target_fps=30, fps=None)
    assert set(np.diff(idx).tolist()) == {4}


def test_dense_end_anchor_last_frame_is_window_end():
    idx = dense_indices(100, 300, 16, stride=4, target_fps=30, fps=60, anchor="end")
    assert idx[-1] == 299 and idx[0] == 299 - 15 * 8


def test_dense_short_window_starts_at_window_and_repeats_last_frame():
    for anchor in ("center", "end"):
        idx = dense_indices(10, 20, 8, stride=4, target_fps=30, fps=30, anchor=anchor).tolist()
        assert idx == [10, 14, 18, 19, 19, 19, 19, 19]


def test_dense_training_centre_draws_a_start():
    starts = set()
    for epoch in range(30):
        idx = dense_indices(0, 200, 4, stride=4, target_fps=30, fps=30, training=True,
                            generator=clip_generator(0, epoch, 0))
        assert set(np.diff(idx).tolist()) == {4} and 0 <= idx[0] and idx[-1] <= 199
        starts.add(int(idx[0]))
    assert len(starts) > 5
    # end-anchored stays end-anchored in training
    idx = dense_indices(0, 200, 4, stride=4, target_fps=30, fps=30, anchor="end", training=True,
                        generator=clip_generator(0, 0, 0))
    assert idx.tolist() == [187, 191, 195, 199]


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(0, 500, allow_nan=False),
    length=st.floats(0.01, 60, allow_nan=False),
    fps=st.sampled_from([25.0, 30000 / 1001, 50.0, 60.0, 90.0, 48000 / 1001]),
    n=st.integers(1, 32),
    stride=st.integers(1, 8),
    training=st.booleans(),
    sampling=st.sampled_from(["segment", "dense-center", "dense-end"]),
    seed=st.integers(0, 10),
)
def test_indices_stay_inside_the_window(start, length, fps, n, stride, training, sampling, seed):
    s, e = window_to_frame_range((start, start + length), fps)
    mode, _, anchor = sampling.partition("-")
    idx = sample_frame_indices(s, e, n, sampling=mode, training=training, stride=stride, fps=fps,
                               anchor=anchor or "center", generator=clip_generator(seed, 0, 0))
    assert idx.shape == (n,) and idx.dtype == np.int64
    assert (np.diff(idx) >= 0).all()
    assert idx.min() >= s and idx.max() <= e - 1
    # frame k is shown from k / fps: nothing starts at or after the window's end
    assert idx.max() / fps < start + length + 1e-9


def test_sample_frame_indices_validates():
    with pytest.raises(ValueError, match="sampling"):
        sample_frame_indices(0, 10, 4, sampling="uniform")
    with pytest.raises(ValueError, match="anchor"):
        sample_frame_indices(0, 10, 4, sampling="dense", anchor="start")
    with pytest.raises(ValueError, match="generator"):
        sample_frame_indices(0, 10, 4, training=True)
    with pytest.raises(ValueError, match="start < end"):
        sample_frame_indices(5, 5, 4)
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(0, 5, 0)


# ----------------------------------------------------------------------- random sampling requests (hypothesis)
@settings(max_examples=200, deadline=None, database=None)
@given(first=st.integers(-3, 300), count=st.integers(-3, 300), num_frames=st.integers(-2, 40),
       training=st.booleans(), sampling=st.sampled_from(["segment", "dense", "uniform"]))
def test_random_sampling_requests_give_indices_in_range_or_a_clear_error(first, count, num_frames, training,
                                                                        sampling):
    try:
        idx = sample_frame_indices(first, first + count, num_frames, sampling=sampling, training=training,
                                   generator=np.random.default_rng(0))
    except ValueError as e:
        assert any(w in str(e) for w in ("num_frames", "sampling", "start", "end", "frames", "range")), str(e)
        return
    idx = np.asarray(idx)
    assert idx.shape == (num_frames,) and (idx >= first).all() and (idx < max(first + count, first + 1)).all()
