"""Reading clips: video files (PyAV, seeking), EK100 frame folders, arrays, tensors and lists of PIL images.

Frame conventions (see :mod:`.sampling` for how a window and a sampling mode become frame indices):

* **Video files** (MP4 and anything else FFmpeg demuxes) are decoded with PyAV only. The frame rate is the video
  stream's own (``average_rate``, e.g. 30000/1001), never a rate from an annotation file. Times are measured from
  the stream's first time stamp (``stream.start_time``). Frame index ``i`` is read as *the frame of time*
  ``t_i = (i + 1/2) / fps``, the last frame whose pts is ``<= t_i`` (taking the middle of the frame's display slot
  keeps time stamps that a container rounded, e.g. Matroska's milliseconds, on the right frame). The decoder seeks
  by time to the key frame before the first wanted frame and decodes forward only as far as the wanted frames need,
  seeking again across gaps longer than ``seek_threshold`` seconds; it never needs the container's frame count
  (Matroska and streamed MP4s report none: the count then comes from the duration, or from reading packet headers).
* **EK100 frame folders** hold ``frame_%010d.jpg`` files, 1-based: index ``i`` is file ``frame_{i+1:010d}.jpg``.
  Their rate is ``fps`` if given, else 60 for ``PXX_YY`` folders and 50 for ``PXX_1YY`` folders (the rates at which
  EPIC-KITCHENS extracted them), so a window ``(start_sec, end_sec)`` covers files
  ``floor(start_sec * fps) + 1 .. ceil(end_sec * fps)``.
* **Arrays / tensors** ``(T, H, W, C)`` (``(T, C, H, W)`` is recognised too) and **lists of PIL images** are indexed
  directly; a window in seconds needs ``fps``; dense sampling without ``fps`` assumes the frames are at
  ``target_fps``.

Indices past the last frame repeat the last frame. Unreadable, corrupt, truncated or empty media, and windows that
start past the end, raise :class:`MediaError`, which names the file and the window.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .sampling import clip_generator, sample_frame_indices, window_to_frame_range

__all__ = [
    "MediaError",
    "VideoInfo",
    "FRAME_FOLDER_PATTERN",
    "image_to_rgb",
    "probe_video",
    "decode_video_frames",
    "frame_folder_fps",
    "frame_folder_length",
    "read_frame_folder",
    "is_frame_folder",
    "load_clip",
    "load_clip_with_indices",
    "clip_indices",
]

FRAME_FOLDER_PATTERN = "frame_{:010d}.jpg"
_FRAME_FILE_RE = re.compile(r"^frame_(\d{10})\.jpg$")
_EK100_VIDEO_RE = re.compile(r"^P\d{2,}_(\d{2,3})$")


def _format_window(window: Sequence[float] | None) -> str:
    if window is None:
        return "whole video"
    try:
        s, e = window
        return f"window {float(s):.3f}-{float(e):.3f} s"
    except (TypeError, ValueError):
        return f"window {window!r}"


class MediaError(RuntimeError):
    """Unreadable, corrupt, truncated or empty media, or a window outside the media.

    Attributes:
        path: the file or folder (``"<array>"`` for in-memory frames).
        window: the ``(start_sec, end_sec)`` window asked for, or ``None`` for the whole video.
        reason: what went wrong.
    """

    def __init__(self, path: str | os.PathLike | None, window: Sequence[float] | None = None, reason: str = ""):
        self.path = str(path) if path is not None else "<array>"
        self.window = tuple(window) if window is not None else None
        self.reason = reason
        super().__init__(f"{self.path} ({_format_window(window)}): {reason}")

    def __reduce__(self):  # keep the attributes when a data-loader worker pickles the error
        return (type(self), (self.path, self.window, self.reason))


# ----------------------------------------------------------------------------------------------------- video files
@dataclass(frozen=True)
class VideoInfo:
    """What a video file's header says about its video stream.

    ``fps`` is the stream's true rate (a ``Fraction`` such as 30000/1001); ``num_frames`` comes from the container's
    frame count when it reports one, else from the duration, else from counting packets; ``frame_count_reported``
    says which. ``duration`` is in seconds (``None`` if neither the stream nor the container gives one).
    """

    path: str
    fps: Fraction
    num_frames: int
    duration: float | None
    width: int
    height: int
    time_base: Fraction
    start_pts: int
    frame_count_reported: bool


def _open(path: str, window=None):
    import av

    if not os.path.exists(path):
        raise MediaError(path, window, "file not found")
    if os.path.isdir(path):
        raise MediaError(path, window, "is a folder, not a video file (frame folders hold frame_%010d.jpg files)")
    if os.path.getsize(path) == 0:
        raise MediaError(path, window, "empty file (0 bytes)")
    try:
        container = av.open(path)
    except Exception as e:  # PyAV raises many FFmpeg error types; all mean the same to a caller
        raise MediaError(path, window, f"cannot open as a video ({type(e).__name__}: {e}); corrupt, truncated or not a video") from e
    if not container.streams.video:
        container.close()
        raise MediaError(path, window, "no video stream in the file")
    return container


def _probe_container(path: str, container, window=None) -> VideoInfo:
    stream = container.streams.video[0]
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not fps or fps <= 0:
        raise MediaError(path, window, "the video stream declares no frame rate")
    fps = Fraction(fps)
    time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 1_000_000)
    start_pts = int(stream.start_time) if stream.start_time is not None else 0
    duration = None
    if stream.duration:
        duration = float(stream.duration * time_base)
    elif container.duration:
        import av

        duration = container.duration / av.time_base - float(start_pts * time_base)
    frames = int(stream.frames or 0)
    reported = frames > 0
    if not reported:
        if duration is not None:
            frames = max(int(round(duration * fps)), 1)
        else:
            frames = _count_packets(path, container, stream, window)
    width, height = stream.codec_context.width, stream.codec_context.height
    return VideoInfo(path, fps, frames, duration, int(width), int(height), time_base, start_pts, reported)


def _count_packets(path, container, stream, window) -> int:
    # Reads packet headers only (no decoding); for containers that report neither frame count nor duration.
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                count += 1
        container.seek(0)
    except Exception as e:
        raise MediaError(path, window, f"cannot read the stream's packets ({type(e).__name__}: {e})") from e
    if count == 0:
        raise MediaError(path, window, "the video stream holds no frames")
    return count


def probe_video(path: str | os.PathLike, window: Sequence[float] | None = None) -> VideoInfo:
    """Read a video file's header (frame rate, frame count, duration, size) without decoding frames.

    ``window`` only appears in the message of a :class:`MediaError`.
    """
    path = str(path)
    container = _open(path, window)
    try:
        return _probe_container(path, container, window)
    finally:
        container.close()


class _ForwardDecoder:
    """Decodes one stream forward from a seek point, keeping one frame of look-ahead."""

    def __init__(self, container, stream, path, window):
        self.container, self.stream, self.path, self.window = container, stream, path, window
        self.iterator = None
        self.current = None  # last frame with pts <= the last target
        self.pending = None  # first decoded frame with pts > the last target
        self.eof = False

    def _next(self):
        try:
            while True:
                frame = next(self.iterator)
                if frame.pts is not None:
                    return frame
        except StopIteration:
            self.eof = True
            return None
        except Exception as e:
            raise MediaError(self.path, self.window, f"decoding failed ({type(e).__name__}: {e}); corrupt file") from e

    def seek(self, target_pts: int, floor_pts: int) -> None:
        """Position the decoder so that the first decoded frame has pts <= target (or is the stream's first)."""
        back = 0
        one_second = max(int(1 / self.stream.time_base), 1)
        while True:
            pts = max(target_pts - back, floor_pts)
            try:
                self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
            except Exception as e:
                raise MediaError(self.path, self.window, f"seek failed ({type(e).__name__}: {e})") from e
            self.iterator = self.container.decode(self.stream)
            self.eof = False
            self.current = None
            first = self._next()
            # Some demuxers seek by decode time stamps and may land after the target: step further back.
            if first is None or first.pts <= target_pts or pts == floor_pts:
                self.pending = first
                return
            back = max(2 * back, one_second)

    def frame_at(self, target_pts: int):
        """The last frame with pts <= target_pts (the first frame if the target precedes it); None at EOF."""
        while True:
            if self.pending is None:
                if self.eof:
                    break
                self.pending = self._next()
                if self.pending is None:
                    break
            if self.pending.pts > target_pts and self.current is not None:
                break
            if self.pending.pts > target_pts:  # target before the first frame: show the first frame
                self.current = self.pending
                self.pending = None
                break
            self.current = self.pending
            self.pending = None
        return self.current


def decode_video_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    window: Sequence[float] | None = None,
    info: VideoInfo | None = None,
    seek_threshold: float = 1.0,
) -> np.ndarray:
    """Decode the frames of the given indices from a video file with PyAV, seeking.

    Index ``i`` is the frame of time ``(i + 1/2) / fps`` (see the module docstring); indices past the end repeat the
    last frame. ``window`` is only used in error messages.

    Returns:
        ``(len(indices), H, W, 3)`` uint8 RGB.
    """
    path = str(path)
    container = _open(path, window)
    try:
        if info is None:
            info = _probe_container(path, container, window)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            raise ValueError("decode_video_frames: no indices")
        if indices.min() < 0:
            raise ValueError(f"decode_video_frames: negative frame index {int(indices.min())}")
        wanted = np.unique(indices)
        tb = info.time_base
        fps = info.fps
        # pts of the frame of time (i + 1/2) / fps, exact in rational arithmetic
        targets = [info.start_pts + math.floor(Fraction(2 * int(i) + 1, 2) / fps / tb) for i in wanted]
        gap = max(int(seek_threshold / tb), 1)
        decoder = _ForwardDecoder(container, stream, path, window)
        arrays: dict[int, np.ndarray] = {}
        converted: dict[int, np.ndarray] = {}  # by frame pts: several indices may share a frame
        last_target = None
        for i, target in zip(wanted, targets):
            # Seek for the first frame and across long gaps; past the end of the stream every later target is
            # the last frame, so there is nothing to seek for.
            if last_target is None or (target - last_target > gap and not decoder.eof):
                decoder.seek(target, info.start_pts)
            frame = decoder.frame_at(target)
            if frame is None:
                raise MediaError(path, window, "no decodable video frames")
            if decoder.eof and decoder.pending is None and info.duration is not None:
                # EOF before the wanted time although the stream claims to last longer: data is missing.
                frame_end = float((frame.pts - info.start_pts) * tb + 1 / fps)
                wanted_time = float((target - info.start_pts) * tb)
                if wanted_time < info.duration - 1.5 / float(fps) and wanted_time > frame_end + 0.5 / float(fps):
                    raise MediaError(
                        path, window,
                        f"the video stops at {frame_end:.3f} s but declares {info.duration:.3f} s: truncated or corrupt",
                    )
            # convert now, while the frame's planes are still in cache
            if frame.pts not in converted:
                converted[frame.pts] = frame.to_ndarray(format="rgb24")
            arrays[int(i)] = converted[frame.pts]
            last_target = target
    finally:
        container.close()
    return np.stack([arrays[int(i)] for i in indices])


# --------------------------------------------------------------------------------------------------- frame folders
def is_frame_folder(path: str | os.PathLike) -> bool:
    """A folder holding ``frame_0000000001.jpg`` (EK100 ``rgb_frames`` layout)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, FRAME_FOLDER_PATTERN.format(1)))


def frame_folder_fps(folder: str | os.PathLike) -> float | None:
    """The EK100 extraction rate of a frame folder from its name: 60 for ``PXX_YY``, 50 for ``PXX_1YY``; else None."""
    m = _EK100_VIDEO_RE.match(Path(folder).name)
    if m is None:
        return None
    return 50.0 if len(m.group(1)) == 3 else 60.0


@lru_cache(maxsize=256)
def _folder_length(folder: str, mtime_ns: int) -> int:
    # The highest frame number, not the file count: a frame missing inside the range (a gap) must be reported as
    # missing by `read_frame_folder` when a window touches it, never hidden by repeating the frame before the gap.
    top = 0
    with os.scandir(folder) as it:
        for entry in it:
            m = _FRAME_FILE_RE.match(entry.name)
            if m:
                top = max(top, int(m.group(1)))
    return top


def frame_folder_length(folder: str | os.PathLike) -> int:
    """``N`` of the last file ``frame_N.jpg`` in a folder (cached until the folder changes); frames missing below it
    raise ``MediaError`` when read."""
    folder = str(folder)
    return _folder_length(folder, os.stat(folder).st_mtime_ns)


def read_frame_folder(
    folder: str | os.PathLike,
    indices: Sequence[int],
    *,
    window: Sequence[float] | None = None,
    num_frames: int | None = None,
) -> np.ndarray:
    """Read frames (0-based indices; file ``frame_{i+1:010d}.jpg``) from a frame folder as ``(T, H, W, 3)`` uint8.

    Indices past the last frame repeat the last frame. ``window`` is only used in error messages.
    """
    from PIL import Image

    folder = str(folder)
    total = num_frames if num_frames is not None else frame_folder_length(folder)
    if total == 0:
        raise MediaError(folder, window, "no frame_%010d.jpg files in the folder")
    indices = np.minimum(np.asarray(indices, dtype=np.int64), total - 1)
    cache: dict[int, np.ndarray] = {}
    for i in np.unique(indices):
        file = os.path.join(folder, FRAME_FOLDER_PATTERN.format(int(i) + 1))
        try:
            with Image.open(file) as im:
                cache[int(i)] = image_to_rgb(im)
        except FileNotFoundError:
            raise MediaError(file, window, "frame file missing") from None
        except Exception as e:
            raise MediaError(file, window, f"unreadable JPEG ({type(e).__name__}: {e})") from e
    shapes = {a.shape for a in cache.values()}
    if len(shapes) > 1:
        raise MediaError(folder, window, f"frames of different sizes {sorted(shapes)}")
    return np.stack([cache[int(i)] for i in indices])


# ------------------------------------------------------------------------------------------------- in-memory frames
# PIL modes of 16-bit single-channel images (16-bit grey PNGs open as "I;16", or "I" in older Pillow):
# PIL's own convert("RGB") clips them at 255, which turns every pixel above 1/256 of the range white.
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def image_to_rgb(image: Any) -> np.ndarray:
    """A PIL image -> ``(H, W, 3)`` uint8 RGB; 16-bit images are scaled from 0-65535, not clipped at 255."""
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        grey = _uint16_to_uint8(np.clip(np.asarray(image, dtype=np.float64), 0, 65535))
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(values, dtype=np.float64) / 257.0).astype(np.uint8)  # 65535 / 255 = 257 exactly


def _frames_to_array(source: Any, allow_non_finite: bool = False) -> np.ndarray:
    """(T, H, W, 3) uint8 from an array / tensor (T, H, W, C) or (T, C, H, W), or a list of PIL images / arrays.

    uint8 is taken as is and uint16 scaled from 0-65535; other numbers are 0-1 when the finite values are all <= 1,
    else 0-255 (clipped). NaN / inf raise ``ValueError`` unless ``allow_non_finite`` (then NaN reads as 0 and
    +-inf as the ends of the range).
    """
    if isinstance(source, (list, tuple)):
        if len(source) == 0:
            raise MediaError(None, None, "empty list of frames")
        frames = [image_to_rgb(f) if hasattr(f, "convert") else _as_numpy(f) for f in source]
        try:
            arr = np.stack(frames)
        except ValueError as e:
            raise MediaError(None, None, f"frames of different shapes: {e}") from None
    else:
        arr = _as_numpy(source)
    if arr.ndim != 4:
        raise ValueError(f"a video array must be 4-D (T, H, W, C); got shape {tuple(arr.shape)}")
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[1] in (1, 3, 4):
        arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"a video array needs 1, 3 or 4 channels (T, H, W, C); got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise MediaError(None, None, "video array with 0 frames")
    if arr.dtype == np.uint16:
        arr = _uint16_to_uint8(arr)
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        finite = np.isfinite(arr)
        if not finite.all():
            if not allow_non_finite:
                bad = np.argwhere(~finite)[0]
                raise ValueError(
                    f"the video array holds {int((~finite).sum())} NaN / inf value(s), the first at frame {bad[0]} "
                    f"(pixel {tuple(int(x) for x in bad[1:])}); pass allow_non_finite=True to read NaN as 0 and "
                    "inf as the end of the range"
                )
            arr = np.where(np.isnan(arr), 0.0, arr)
        if finite.any() and float(arr[finite].max()) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ------------------------------------------------------------------------------------------------------- load_clip
def load_clip_with_indices(
    source: Any,
    *,
    window: Sequence[float] | None = None,
    num_frames: int | None,
    sampling: str = "segment",
    training: bool = False,
    stride: int = 4,
    target_fps: float = 30.0,
    anchor: str = "center",
    fps: float | None = None,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    seek_threshold: float = 1.0,
    allow_non_finite: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """:func:`load_clip`, also returning the sampled frame indices and a metadata dict
    (``total_num_frames``, ``fps``, ``duration``, ``width``, ``height``, ``video_backend``)."""
    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        if os.path.isdir(path):
            return _load_from_folder(path, window, num_frames, sampling, training, stride, target_fps, anchor, fps,
                                     seed, epoch, index)
        return _load_from_file(path, window, num_frames, sampling, training, stride, target_fps, anchor, seed, epoch,
                               index, seek_threshold)
    frames = _frames_to_array(source, allow_non_finite=allow_non_finite)
    total = frames.shape[0]
    if window is not None and fps is None:
        raise ValueError("load_clip: a window in seconds on an array or a list of images needs fps= (its frame rate)")
    idx = clip_indices(
        total, fps, window=window, num_frames=num_frames, sampling=sampling, training=training, stride=stride,
        target_fps=target_fps, anchor=anchor, seed=seed, epoch=epoch, index=index,
    )
    out = frames[np.minimum(idx, total - 1)]
    meta = {"total_num_frames": total, "fps": float(fps) if fps else None,
            "duration": total / float(fps) if fps else None, "height": int(frames.shape[1]),
            "width": int(frames.shape[2]), "video_backend": "array"}
    return out, idx, meta


def load_clip(
    source: Any,
    *,
    window: Sequence[float] | None = None,
    num_frames: int | None,
    sampling: str = "segment",
    training: bool = False,
    stride: int = 4,
    target_fps: float = 30.0,
    anchor: str = "center",
    fps: float | None = None,
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    allow_non_finite: bool = False,
) -> np.ndarray:
    """Read one clip of ``num_frames`` frames from a video file, a frame folder, an array/tensor or a list of images.

    Args:
        source: a video file path (decoded with PyAV, seeking), an EK100 frame folder (``frame_%010d.jpg``,
            1-based), an array / tensor ``(T, H, W, C)`` or a list of PIL images.
        window: ``(start_sec, end_sec)``, or ``None`` for the whole source.
        num_frames: frames per clip; ``None`` returns every frame of the window.
        sampling: ``"segment"`` or ``"dense"`` (see :mod:`.sampling`).
        training: random frame positions (from ``clip_generator(seed, epoch, index)``) instead of the fixed ones.
        stride, target_fps, anchor: dense sampling (``anchor="end"`` for anticipation: nothing after the window).
        fps: the frame rate of a frame folder (default from its name: 60 for ``PXX_YY``, 50 for ``PXX_1YY``) or of an
            array; ignored for video files, whose own stream rate is used.
        seed, epoch, index: identify the clip's random generator.
        allow_non_finite: arrays with NaN / inf read NaN as 0 and inf as the end of the range instead of raising
            ``ValueError``. uint16 arrays and 16-bit images are scaled from 0-65535.

    Returns:
        ``(num_frames, H, W, 3)`` uint8 RGB.

    Raises:
        MediaError: unreadable / corrupt / truncated / empty media, or a window starting past the end.
    """
    frames, _, _ = load_clip_with_indices(
        source, window=window, num_frames=num_frames, sampling=sampling, training=training, stride=stride,
        target_fps=target_fps, anchor=anchor, fps=fps, seed=seed, epoch=epoch, index=index,
        allow_non_finite=allow_non_finite,
    )
    return frames


def _frame_range(path, window, fps, total, duration) -> tuple[int, int]:
    try:
        start, end = window_to_frame_range(window, fps, total)
    except ValueError as e:
        raise MediaError(path, window, str(e)) from None
    if window is not None:
        length = duration if duration is not None else (total / float(fps) if fps else None)
        if start >= total or (length is not None and float(window[0]) >= length):
            where = f"{length:.3f} s" if length is not None else f"{total} frames"
            raise MediaError(path, window, f"the window starts past the end of the media ({where})")
        end = min(end, total)  # a window running past the end is cut at the last frame
    return start, end


def clip_indices(
    total_frames: int,
    fps: float | Fraction | None,
    *,
    window: Sequence[float] | None = None,
    num_frames: int | None,
    sampling: str = "segment",
    training: bool = False,
    stride: int = 4,
    target_fps: float = 30.0,
    anchor: str = "center",
    seed: int = 0,
    epoch: int = 0,
    index: int = 0,
    duration: float | None = None,
    path: str | None = None,
) -> np.ndarray:
    """Frame indices of a clip from a source of ``total_frames`` frames at ``fps`` (window -> frames -> sampling).

    The window's end is cut at the source's last frame; a window starting past the end raises :class:`MediaError`
    (naming ``path``). ``num_frames=None`` gives every frame of the window.
    """
    start, end = _frame_range(path, window, fps, total_frames, duration)
    return _sample(start, end, num_frames, sampling, training, stride, target_fps, anchor, fps, seed, epoch, index)


def _sample(start, end, num_frames, sampling, training, stride, target_fps, anchor, fps, seed, epoch, index):
    if num_frames is None:
        return np.arange(start, end, dtype=np.int64)
    generator = clip_generator(seed, epoch, index) if training else None
    return sample_frame_indices(
        start, end, num_frames, sampling=sampling, training=training, stride=stride, target_fps=target_fps,
        fps=fps, anchor=anchor, generator=generator,
    )


def _load_from_file(path, window, num_frames, sampling, training, stride, target_fps, anchor, seed, epoch, index,
                    seek_threshold):
    info = probe_video(path, window)
    idx = clip_indices(
        info.num_frames, info.fps, window=window, num_frames=num_frames, sampling=sampling, training=training,
        stride=stride, target_fps=target_fps, anchor=anchor, seed=seed, epoch=epoch, index=index,
        duration=info.duration, path=path,
    )
    frames = decode_video_frames(path, idx, window=window, info=info, seek_threshold=seek_threshold)
    meta = {"total_num_frames": info.num_frames, "fps": float(info.fps), "duration": info.duration,
            "height": info.height, "width": info.width, "video_backend": "pyav"}
    return frames, idx, meta


def _load_from_folder(folder, window, num_frames, sampling, training, stride, target_fps, anchor, fps, seed, epoch,
                      index):
    if not is_frame_folder(folder):
        raise MediaError(folder, window, "not a frame folder: no frame_0000000001.jpg inside")
    total = frame_folder_length(folder)
    rate = fps if fps is not None else frame_folder_fps(folder)
    if rate is None and (window is not None):
        raise ValueError(
            f"load_clip: {folder} is not named like an EK100 video (PXX_YY / PXX_1YY); pass fps= for a window in seconds"
        )
    idx = clip_indices(
        total, rate, window=window, num_frames=num_frames, sampling=sampling, training=training, stride=stride,
        target_fps=target_fps, anchor=anchor, seed=seed, epoch=epoch, index=index, path=folder,
    )
    frames = read_frame_folder(folder, idx, window=window, num_frames=total)
    meta = {"total_num_frames": total, "fps": float(rate) if rate else None,
            "duration": total / float(rate) if rate else None, "height": int(frames.shape[1]),
            "width": int(frames.shape[2]), "video_backend": "frames"}
    return frames, idx, meta
