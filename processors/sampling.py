"""Frame sampling: which frame indices a clip is made of.

Conventions (the same for every kind of source; ``fps`` is the source's own frame rate):

* A source is a sequence of frames ``0 .. N-1``; frame ``i`` is shown during ``[i / fps, (i + 1) / fps)`` seconds.
* A window ``(start_sec, end_sec)`` (half-open) covers the frames shown at any instant inside it:
  ``[floor(start_sec * fps), ceil(end_sec * fps))`` (:func:`window_to_frame_range`; products within 1e-6 of an
  integer count as that integer, so ``1.12 * 25`` is frame 28 whatever the float rounding). ``None`` is the whole
  source, ``[0, N)``.
* ``segment`` sampling cuts the window ``[s, e)`` at ``b = linspace(s, e, n + 1)``. Evaluation takes
  ``floor((b_i + b_{i+1}) / 2)``; training takes a uniform integer in ``[b_i, b_{i+1})`` (the evaluation frame when
  that interval holds no integer, which happens when the window has fewer than ``n`` frames). Computed in exact
  integer arithmetic.
* ``dense`` sampling takes ``n`` frames ``step = stride * fps / target_fps`` source frames apart, that is every
  ``stride``-th frame counted at ``target_fps`` whatever the source rate. Positions are
  ``p_k = p_0 + k * step`` and frames ``floor(p_k)`` (1e-6 tolerance), with

  - ``anchor="center"``: ``p_0 = s + ((e - s - 1) - (n - 1) * step) / 2``, so the clip is centred on the window's
    middle frame; in training mode ``p_0`` is instead a uniform integer in ``[s, floor(e - 1 - (n - 1) * step)]``;
  - ``anchor="end"`` (anticipation): ``p_0 = (e - 1) - (n - 1) * step``, so the last frame is the window's last
    frame ``e - 1`` and no frame comes after the window's end, in training as in evaluation.

  When the window holds fewer frames than the clip spans (``p_0 < s``), the clip starts at ``s`` and positions past
  ``e - 1`` repeat frame ``e - 1``.
* Indices past the source's last frame repeat the last frame (the decoders clamp them).
* Evaluation may read ``K`` temporal views of a window instead of one clip (:func:`view_indices`): view ``k`` takes
  the frame at offset ``(k + 1/2) / K`` inside each ``segment``, or spreads the ``dense`` clip starts evenly over the
  window; ``K = 1`` is the single evaluation clip above.
* Every random choice comes from :func:`clip_generator` ``(seed, epoch, index)``, never from global or worker state,
  so a clip is the same in every process, worker and rerun.

How these indices are read from each kind of source (MP4 time stamps, EK100 frame folders) is documented in
:mod:`.video_io`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

__all__ = [
    "SAMPLING_MODES",
    "ANCHORS",
    "clip_generator",
    "window_to_frame_range",
    "sample_frame_indices",
    "segment_indices",
    "dense_indices",
    "view_indices",
]

SAMPLING_MODES = ("segment", "dense")
ANCHORS = ("center", "end")

# Products of seconds and frame rates within this many frames of an integer are that integer: float seconds such
# as 1.12 s at 25 fps must give frame 28, not 27.
_FRAME_EPS = 1e-6


def clip_generator(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one clip: a PCG64 seeded by ``SeedSequence([seed, epoch, index])``.

    Every random choice for a clip is drawn from generators made here, so the clip depends only on
    ``(seed, epoch, index)``, not on the process, the data-loader worker or the order in which clips are made.
    ``stream`` separates independent uses of the same clip: 0 (the default) draws the training frame positions,
    1 the augmentation (crop, flip, RandAugment); stream ``k > 0`` is seeded by ``[seed, epoch, index, k]``.
    All must be non-negative integers.
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index), ("stream", stream)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"clip_generator: {name} must be a non-negative integer, got {value!r}")
    entropy = [int(seed), int(epoch), int(index)] + ([int(stream)] if stream else [])
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _floor(x: float | Fraction) -> int:
    r = round(x)
    return int(r) if abs(x - r) < _FRAME_EPS else math.floor(x)


def _ceil(x: float | Fraction) -> int:
    r = round(x)
    return int(r) if abs(x - r) < _FRAME_EPS else math.ceil(x)


def window_to_frame_range(
    window: Sequence[float] | None, fps: float | Fraction | None, num_frames: int | None = None
) -> tuple[int, int]:
    """Frame range ``[start, end)`` covered by a window ``(start_sec, end_sec)`` of a source at ``fps``.

    ``[floor(start_sec * fps), ceil(end_sec * fps))``; ``window=None`` is ``[0, num_frames)``. The range is not
    clipped to ``num_frames``: indices past the last frame repeat it when read.

    Raises:
        ValueError: the window is not two finite numbers with ``0 <= start < end``, or ``fps`` is missing.
    """
    if window is None:
        if num_frames is None:
            raise ValueError("window_to_frame_range: window=None needs num_frames (the whole source)")
        return 0, int(num_frames)
    start_sec, end_sec = _check_window(window)
    if fps is None or fps <= 0:
        raise ValueError(f"window_to_frame_range: a window in seconds needs the source's frame rate; got fps={fps!r}")
    fps = Fraction(fps) if isinstance(fps, Fraction) else float(fps)
    start = _floor(start_sec * fps)
    end = max(_ceil(end_sec * fps), start + 1)
    return start, end


def _check_window(window: Sequence[float]) -> tuple[float, float]:
    try:
        start_sec, end_sec = (float(x) for x in window)
    except (TypeError, ValueError):
        raise ValueError(f"a window must be (start_sec, end_sec); got {window!r}") from None
    if not (math.isfinite(start_sec) and math.isfinite(end_sec)) or start_sec < 0 or end_sec <= start_sec:
        raise ValueError(f"a window must satisfy 0 <= start_sec < end_sec; got {window!r}")
    return start_sec, end_sec


def segment_indices(
    start: int, end: int, num_frames: int, *, training: bool = False, generator: np.random.Generator | None = None
) -> np.ndarray:
    """``segment`` sampling of ``[start, end)`` (see the module docstring). Returns ``(num_frames,)`` int64."""
    start, end, n = int(start), int(end), int(num_frames)
    _check_range(start, end, n)
    length = end - start
    i = np.arange(n, dtype=np.int64)
    # floor((b_i + b_{i+1}) / 2) with b_i = start + i * length / n, exactly.
    eval_idx = start + ((2 * i + 1) * length) // (2 * n)
    if not training:
        return eval_idx
    if generator is None:
        raise ValueError("segment_indices(training=True) needs a generator: use clip_generator(seed, epoch, index)")
    lo = start + (-((-i * length) // n))  # ceil(b_i)
    hi = start + (-((-(i + 1) * length) // n))  # ceil(b_{i+1}): the first integer not in [b_i, b_{i+1})
    # One draw per segment in every case, so the stream of random numbers does not depend on the window length.
    u = generator.random(n)
    span = hi - lo
    drawn = lo + np.floor(u * np.maximum(span, 1)).astype(np.int64)
    return np.where(span > 0, drawn, eval_idx)


def dense_indices(
    start: int,
    end: int,
    num_frames: int,
    *,
    stride: int = 4,
    target_fps: float = 30.0,
    fps: float | Fraction | None = None,
    anchor: str = "center",
    training: bool = False,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """``dense`` sampling of ``[start, end)`` (see the module docstring). Returns ``(num_frames,)`` int64.

    ``fps`` is the source's frame rate; ``None`` means the source is already at ``target_fps``.
    """
    start, end, n = int(start), int(end), int(num_frames)
    _check_range(start, end, n)
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    if stride < 1 or target_fps <= 0:
        raise ValueError(f"dense sampling needs stride >= 1 and target_fps > 0; got stride={stride}, target_fps={target_fps}")
    step = stride * (float(fps) if fps is not None else float(target_fps)) / float(target_fps)
    span = (n - 1) * step
    last = end - 1
    if anchor == "end":
        p0 = last - span
    elif training:
        if generator is None:
            raise ValueError("dense_indices(training=True) needs a generator: use clip_generator(seed, epoch, index)")
        hi = _floor(last - span)
        u = generator.random()
        p0 = start + math.floor(u * (hi - start + 1)) if hi >= start else start
    else:
        p0 = start + ((end - start - 1) - span) / 2
    if p0 < start:
        p0 = start
    positions = p0 + step * np.arange(n, dtype=np.float64)
    idx = np.floor(positions + _FRAME_EPS).astype(np.int64)
    return np.minimum(idx, last)


def sample_frame_indices(
    start: int,
    end: int,
    num_frames: int,
    *,
    sampling: str = "segment",
    training: bool = False,
    stride: int = 4,
    target_fps: float = 30.0,
    fps: float | Fraction | None = None,
    anchor: str = "center",
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices of the ``num_frames`` frames of a clip taken from the frame range ``[start, end)``.

    Args:
        start, end: the window in frames (:func:`window_to_frame_range` turns seconds into frames).
        num_frames: clip length ``n``.
        sampling: ``"segment"`` (TSN-style, one frame per ``n``-th of the window) or ``"dense"`` (every ``stride``-th
            frame at ``target_fps``).
        training: draw the random variants (needs ``generator``).
        stride, target_fps, fps, anchor: dense sampling parameters; ``fps`` is the source's frame rate.
        generator: from :func:`clip_generator`.

    Returns:
        ``(num_frames,)`` int64 array, non-decreasing, every value in ``[start, end)``.
    """
    if sampling == "segment":
        return segment_indices(start, end, num_frames, training=training, generator=generator)
    if sampling == "dense":
        return dense_indices(
            start, end, num_frames, stride=stride, target_fps=target_fps, fps=fps, anchor=anchor,
            training=training, generator=generator,
        )
    raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")


def _check_range(start: int, end: int, n: int) -> None:
    if n < 1:
        raise ValueError(f"num_frames must be >= 1, got {n}")
    if start < 0 or end <= start:
        raise ValueError(f"the frame range must satisfy 0 <= start < end; got [{start}, {end})")


def view_indices(
    length: int,
    num_frames: int,
    *,
    sampling: str = "segment",
    training: bool = False,
    generator: np.random.Generator | None = None,
    stride: int = 4,
    target_fps: float = 30.0,
    fps: float | None = None,
    anchor: str = "center",
    view: int = 0,
    num_views: int = 1,
) -> np.ndarray:
    """Frame indices, relative to the window ``[0, length)``, of view ``view`` of ``num_views`` of one clip.

    Training (and ``num_views == 1``) is exactly :func:`sample_frame_indices` (so exactly ``load_clip``). Evaluation
    with ``num_views = K`` temporal views takes view ``k`` at offset ``(k + 1/2) / K`` inside each segment
    (``segment``: ``floor(b_i + (k + 1/2) (b_{i+1} - b_i) / K)``), or spreads the ``dense`` clip starts evenly over
    the window (``p_0 = (k + 1/2) / K * (length - 1 - (n - 1) step)``). End-anchored (anticipation) clips have one
    view. Returns ``(num_frames,)`` int64.
    """
    if training or num_views == 1:
        return sample_frame_indices(
            0, length, num_frames, sampling=sampling, training=training, stride=stride, target_fps=target_fps,
            fps=fps, anchor=anchor, generator=generator,
        )
    if not 0 <= view < num_views:
        raise ValueError(f"view {view} out of range for {num_views} views")
    if sampling == "segment":
        i = np.arange(num_frames, dtype=np.int64)
        # floor(L (2 K i + 2 k + 1) / (2 K n)), exact in integers
        return (length * (2 * num_views * i + 2 * view + 1)) // (2 * num_views * num_frames)
    if anchor == "end":
        raise ValueError("end-anchored (anticipation) clips have a single temporal view; use temporal_views=1")
    step = stride * (float(fps) if fps is not None else float(target_fps)) / float(target_fps)
    room = (length - 1) - (num_frames - 1) * step
    p0 = max(0.0, room * (view + 0.5) / num_views)
    idx = np.floor(p0 + step * np.arange(num_frames) + _FRAME_EPS).astype(np.int64)
    return np.minimum(idx, length - 1)
