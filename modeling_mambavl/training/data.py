"""Clips for training and evaluation: window readers, a decoded-clip cache, the clip dataset and its sampler.

Every clip is read as the frame range of its EK100 window (the recognition segment, or the anticipation observation
window ending ``anticipation_time`` before the action: the window logic is ``EK100Transform``'s), then sampled
exactly as ``load_clip`` samples it (``modeling_mambavl.processors.sampling``; in training from
``clip_generator(seed, epoch, sample_index)``), so a clip is the same whether it is decoded on the fly or read from the
cache, in any process or worker, and in a resumed run.

- :class:`WindowReader` decodes only the sampled frames of a row's window from frame folders or video files.
- :class:`ClipCache` decodes every frame of every window once into one uint8 file (optionally resized), for small data
  sets (the synthetic data, a debugging subset): training then only augments. It is written atomically and reused.
- :class:`EK100ClipDataset` turns rows into model inputs: training clips (augmented by the processor's
  ``process_frames``), or evaluation clips with K temporal x M spatial views; tokenized questions; labels; and a
  ``valid`` flag: with ``skip_bad_clips`` an unreadable clip gives zeros and ``valid=False`` (the batch keeps its
  shape, so every process runs the same steps; the loss and the metrics leave it out and the run lists it).
- :class:`EpochSampler` orders the data by a permutation of (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ek100.annotations import frames_fps
from ..ek100.media import EK100Transform
from ..processors.sampling import _FRAME_EPS, clip_generator, sample_frame_indices
from ..processors.video_io import (
    MediaError,
    clip_indices,
    decode_video_frames,
    frame_folder_length,
    probe_video,
    read_frame_folder,
)

__all__ = [
    "BAD_CLIP_ERRORS",
    "ClipCache",
    "EK100ClipDataset",
    "EpochSampler",
    "WindowReader",
    "view_indices",
]

# What a broken clip raises: missing / corrupt / truncated media. Anything else is a bug and is never skipped.
BAD_CLIP_ERRORS = (MediaError, FileNotFoundError, OSError)
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------------- sampling
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
    """Frame indices, relative to the window ``[0, length)``, of one clip.

    Training (and ``num_views == 1``) is exactly ``sample_frame_indices`` (so exactly ``load_clip``). Evaluation with
    ``num_views = K`` temporal views takes view ``k`` at offset ``(k + 1/2) / K`` inside each segment (``segment``:
    ``floor(b_i + (k + 1/2) (b_{i+1} - b_i) / K)``), or spreads the ``dense`` clip starts evenly over the window
    (``p_0 = (k + 1/2) / K * (length - 1 - (n - 1) step)``); ``K = 1`` is the single centred evaluation clip.
    End-anchored (anticipation) clips have one view.
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


# ------------------------------------------------------------------------------------------------------ readers
@dataclass(frozen=True)
class _Window:
    """A row's frame range ``[start, end)`` in its source's frames, the source's rate, and where it is."""

    path: str
    start: int
    end: int
    fps: float
    info: Any = None  # the probed VideoInfo of a video file

    @property
    def length(self) -> int:
        return self.end - self.start


class WindowReader:
    """Reads the frames of EK100 rows' windows from frame folders or video files (any EK100 media layout).

    ``read(row, relative_indices)`` returns ``(n, H, W, 3)`` uint8 for indices relative to the window start; an empty
    anticipation window (the action starts within ``anticipation_time`` of the video start) reads as black frames.
    """

    def __init__(self, media_root: str | Path, media: str, task: str, split: str) -> None:
        if media not in ("frames", "video"):
            raise ValueError(f"WindowReader: media={media!r}; expected 'frames' or 'video' (features are read by "
                             "EK100FeatureReader)")
        self.media = media
        self.transform = EK100Transform(media_root=media_root, media=media, task=task, split=split)

    def check(self, rows: Sequence[dict]) -> None:
        """Raise ``FileNotFoundError`` naming the first missing frame folder / video and a narration id."""
        self.transform.check({"narration_id": [r["narration_id"] for r in rows],
                              "video_id": [r["video_id"] for r in rows]})

    def window(self, row: dict) -> _Window | None:
        """The frame range of a row, or ``None`` when nothing is observable (an empty anticipation window)."""
        try:
            return self._window(row)
        except MediaError as e:
            raise MediaError(e.path, e.window, f"narration {row['narration_id']}: {e.reason}") from e

    def _window(self, row: dict) -> _Window | None:
        path = self.transform.source(row["video_id"])
        start_sec, end_sec = self.transform.window(row)
        if end_sec <= start_sec:
            return None
        seconds = (start_sec, end_sec)
        if self.media == "frames":
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: frame folder of narration {row['narration_id']} not found")
            total = frame_folder_length(path)
            fps = float(frames_fps(row["video_id"]))
            rng = clip_indices(total, fps, window=seconds, num_frames=None, path=str(path))
            return _Window(str(path), int(rng[0]), int(rng[-1]) + 1, fps)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: video file of narration {row['narration_id']} not found")
        info = probe_video(path, seconds)
        rng = clip_indices(info.num_frames, info.fps, window=seconds, num_frames=None, duration=info.duration,
                           path=str(path))
        return _Window(str(path), int(rng[0]), int(rng[-1]) + 1, float(info.fps), info)

    def read(self, row: dict, window: _Window | None, indices: np.ndarray) -> np.ndarray:
        if window is None:
            return np.zeros((len(indices), *self.frame_size(row), 3), dtype=np.uint8)
        absolute = window.start + np.minimum(np.asarray(indices, dtype=np.int64), window.length - 1)
        seconds = self.transform.window(row)
        try:
            if self.media == "frames":
                return read_frame_folder(window.path, absolute, window=seconds, num_frames=window.end)
            return decode_video_frames(window.path, absolute, window=seconds, info=window.info)
        except MediaError as e:
            raise MediaError(e.path, e.window, f"narration {row['narration_id']}: {e.reason}") from e

    def frame_size(self, row: dict) -> tuple[int, int]:
        from ..ek100.media import _frame_size

        return _frame_size(self.transform.source(row["video_id"]), self.media)


# -------------------------------------------------------------------------------------------------------- cache
class ClipCache:
    """Every frame of every row's window, decoded once, as uint8 in one file (``frames.u8``) with ``index.json``.

    Frames can be resized on the way in (``short_side``: the shorter side in pixels, never enlarged), which is what
    the evaluation transform does first anyway; training augmentation then crops from the cached frames. Rows whose
    media cannot be read are recorded as bad (with the reason) when ``skip_bad_clips`` is set, else raise.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        self.settings = index["settings"]
        self.entries: dict[str, dict] = index["entries"]
        self.bad: dict[str, str] = index["bad"]
        size = (self.folder / "frames.u8").stat().st_size
        self._frames = np.memmap(self.folder / "frames.u8", dtype=np.uint8, mode="r", shape=(max(size, 1),))

    def __contains__(self, narration_id: str) -> bool:
        return narration_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def frames(self, narration_id: str) -> tuple[np.ndarray, float]:
        """``(L, H, W, 3)`` uint8 frames of the window and the source's frame rate."""
        if narration_id in self.bad:
            raise MediaError(None, None, f"narration {narration_id}: {self.bad[narration_id]} (cached)")
        e = self.entries[narration_id]
        count = e["length"] * e["height"] * e["width"] * 3
        array = self._frames[e["offset"]: e["offset"] + count]
        return array.reshape(e["length"], e["height"], e["width"], 3), float(e["fps"])

    @staticmethod
    def key(rows: Sequence[dict], settings: dict) -> str:
        """A digest of the rows (ids and windows) and the settings: the cache folder's name."""
        h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for row in rows:
            h.update(json.dumps([row["narration_id"], row["video_id"], row["start_sec"], row["stop_sec"],
                                 row.get("observation_start"), row.get("observation_end")]).encode())
        return h.hexdigest()[:16]

    @classmethod
    def build(
        cls,
        root: str | Path,
        rows: Sequence[dict],
        reader: WindowReader,
        *,
        short_side: int | None = None,
        skip_bad_clips: bool = False,
        progress: Callable[[Any], Any] | None = None,
    ) -> ClipCache:
        """Decode (or reuse) the cache of ``rows`` under ``root``; returns it.

        The folder name is a digest of the rows, the media and ``short_side``; a complete folder (with
        ``index.json``, written last, after an atomic rename) is reused as is.
        """
        settings = {
            "version": _CACHE_VERSION,
            "media_root": str(Path(reader.transform.media_root).resolve()),
            "media": reader.media,
            "task": reader.transform.task,
            "short_side": short_side,
        }
        folder = Path(root) / f"clips-{cls.key(rows, settings)}"
        if (folder / "index.json").is_file():
            return cls(folder)
        tmp = Path(root) / f".tmp-{folder.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        entries: dict[str, dict] = {}
        bad: dict[str, str] = {}
        offset = 0
        iterator = progress(rows) if progress is not None else rows
        with open(tmp / "frames.u8", "wb") as f:
            for row in iterator:
                nid = row["narration_id"]
                try:
                    window = reader.window(row)
                    length = window.length if window is not None else 1
                    frames = reader.read(row, window, np.arange(length))
                except BAD_CLIP_ERRORS as e:
                    if not skip_bad_clips:
                        raise
                    bad[nid] = f"{type(e).__name__}: {e}"
                    continue
                frames = _resize_short_side(frames, short_side)
                f.write(np.ascontiguousarray(frames).tobytes())
                entries[nid] = {"offset": offset, "length": int(frames.shape[0]), "height": int(frames.shape[1]),
                                "width": int(frames.shape[2]), "fps": window.fps if window is not None else 30.0}
                offset += frames.nbytes
            f.flush()
            os.fsync(f.fileno())
        (tmp / "index.json").write_text(json.dumps({"settings": settings, "entries": entries, "bad": bad}))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
        return cls(folder)


def _resize_short_side(frames: np.ndarray, short_side: int | None) -> np.ndarray:
    """(T, H, W, 3) uint8 -> the same with the shorter side ``short_side`` (never enlarged), antialiased."""
    if short_side is None or min(frames.shape[1:3]) <= short_side:
        return frames
    import torchvision.transforms.functional as TF

    h, w = frames.shape[1:3]
    scale = short_side / min(h, w)
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    video = TF.resize(video, size, antialias=True)
    return video.permute(0, 2, 3, 1).contiguous().numpy()


# ------------------------------------------------------------------------------------------------------ dataset
class EK100ClipDataset(torch.utils.data.Dataset):
    """EK100 rows -> model inputs, one example per row.

    Args:
        rows: annotation rows (``load_ek100(...)`` without media, as dicts), each with ``sample_index``.
        processor: a ``MambaVLProcessor`` (its video processor transforms the clips).
        question_input_ids / question_attention_mask: ``(N, Q, L)`` tokenized questions, one per row (or ``None``
            for the model's default questions).
        reader / cache / features: where clips come from: a :class:`WindowReader` (decode on access), a
            :class:`ClipCache`, or an ``EK100FeatureReader`` (pre-extracted ``video_features``).
        num_frames, sampling, stride, target_fps, anchor: frame sampling (as ``load_clip``).
        training: random frame positions and augmentation from ``clip_generator(seed, epoch, sample_index)``.
        temporal_views, spatial_crops: evaluation views, K x M per clip (``pixel_values`` ``(K*M, T, C, H, W)``
            then; the model's logits are averaged over them).
        skip_bad_clips: an unreadable clip gives zeros and ``valid=False`` instead of raising.
        reverse_frames: play every clip backwards (a control: motion verbs must stop being recognised).
        question_order: row ``i`` takes the questions of row ``question_order[i]`` (a control: shuffled questions).

    Items: ``index`` (row position), ``valid``, ``pixel_values`` ``(T, C, H, W)`` (or views first) or
    ``video_features`` ``(F, D)``, ``question_input_ids`` / ``question_attention_mask`` ``(Q, L)``, ``verb_labels`` /
    ``noun_labels`` / ``action_labels`` (-100 without labels).
    """

    def __init__(
        self,
        rows: Sequence[dict],
        processor: Any,
        *,
        question_input_ids: torch.Tensor | None = None,
        question_attention_mask: torch.Tensor | None = None,
        reader: WindowReader | None = None,
        cache: ClipCache | None = None,
        features: Any = None,
        num_frames: int = 16,
        sampling: str = "segment",
        stride: int = 4,
        target_fps: float = 30.0,
        anchor: str = "center",
        training: bool = False,
        seed: int = 0,
        temporal_views: int = 1,
        spatial_crops: int = 1,
        skip_bad_clips: bool = False,
        reverse_frames: bool = False,
        question_order: Sequence[int] | None = None,
    ) -> None:
        if sum(x is not None for x in (reader, cache, features)) != 1:
            raise ValueError("EK100ClipDataset: give exactly one of reader, cache or features")
        if training and (temporal_views != 1 or spatial_crops != 1):
            raise ValueError("temporal_views / spatial_crops are evaluation views; training takes one random clip")
        if temporal_views < 1 or spatial_crops < 1:
            raise ValueError(f"temporal_views={temporal_views}, spatial_crops={spatial_crops}: expected >= 1")
        if anchor == "end" and temporal_views != 1:
            raise ValueError("anticipation clips are end-anchored: temporal_views must be 1")
        self.rows = list(rows)
        self.processor = processor
        self.video_processor = getattr(processor, "video_processor", processor)
        self.question_input_ids = question_input_ids
        self.question_attention_mask = question_attention_mask
        if question_input_ids is not None and len(question_input_ids) != len(self.rows):
            raise ValueError(f"question_input_ids has {len(question_input_ids)} rows for {len(self.rows)} clips")
        self.reader, self.cache, self.features = reader, cache, features
        self.num_frames, self.sampling, self.stride = int(num_frames), sampling, int(stride)
        self.target_fps, self.anchor = float(target_fps), anchor
        self.training, self.seed, self.epoch = bool(training), int(seed), 0
        self.temporal_views, self.spatial_crops = int(temporal_views), int(spatial_crops)
        self.skip_bad_clips = bool(skip_bad_clips)
        self.reverse_frames = bool(reverse_frames)
        if question_order is not None and sorted(question_order) != list(range(len(self.rows))):
            raise ValueError("question_order must be a permutation of the rows")
        self.question_order = None if question_order is None else list(question_order)

    def check_labels(self, num_verb_classes: int, num_noun_classes: int) -> None:
        """Raise ``ValueError`` naming the narration, the field and the value when a row's verb / noun class is
        outside the model's heads (a vocabulary larger than the config's). Checked once, here on the CPU: inside
        the training step an out-of-range id would fail on the device, far from its cause."""
        for field, size in (("verb_class", num_verb_classes), ("noun_class", num_noun_classes)):
            for row in self.rows:
                value = row.get(field)
                if value is not None and not 0 <= int(value) < size:
                    raise ValueError(f"narration {row['narration_id']}: {field} {value} is outside the model's "
                                     f"{size} classes (ids 0..{size - 1}); the annotations' vocabulary does not "
                                     "match the model config")

    def set_epoch(self, epoch: int) -> None:
        """Seeds random frame positions and augmentation (with ``persistent_workers=False`` workers see it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_crops

    def _clip_frames(self, row: dict, view: int) -> np.ndarray:
        index = int(row["sample_index"])
        generator = clip_generator(self.seed, self.epoch, index) if self.training else None
        if self.cache is not None:
            frames, fps = self.cache.frames(row["narration_id"])
            length, window = frames.shape[0], None
        else:
            window = self.reader.window(row)
            length, fps = (window.length, window.fps) if window is not None else (1, None)
        idx = view_indices(
            length, self.num_frames, sampling=self.sampling, training=self.training, generator=generator,
            stride=self.stride, target_fps=self.target_fps, fps=fps, anchor=self.anchor, view=view,
            num_views=self.temporal_views,
        )
        if self.reverse_frames:
            idx = idx[::-1].copy()
        if self.cache is not None:
            return np.asarray(frames[np.minimum(idx, length - 1)])
        return self.reader.read(row, window, idx)

    def _pixels(self, row: dict) -> torch.Tensor:
        vp = self.video_processor
        index = int(row["sample_index"])
        if self.training:
            clip = self._clip_frames(row, 0)
            return vp.process_frames([clip], training=True, seed=self.seed, epoch=self.epoch,
                                     indices=[index])["pixel_values"][0]
        views = []
        for k in range(self.temporal_views):
            clip = self._clip_frames(row, k)
            if self.spatial_crops == 1:
                views.append(vp.process_frames([clip], training=False)["pixel_values"][0])
                continue
            resized = vp.process_frames([clip], training=False, do_center_crop=False)["pixel_values"][0]
            views.extend(_spatial_crops(resized, _crop_hw(vp, resized), self.spatial_crops))
        return views[0] if len(views) == 1 else torch.stack(views)

    def _zeros(self, row: dict) -> torch.Tensor:
        if self.features is not None:
            return torch.zeros(self.features.shape, dtype=torch.float32)
        vp = self.video_processor
        h, w = _crop_hw(vp, None)
        shape = (self.num_frames, 3, h, w)
        return torch.zeros((self.num_views, *shape) if self.num_views > 1 else shape)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item: dict[str, Any] = {"index": i, "valid": True}
        try:
            if self.features is not None:
                item["video_features"] = self.features[row["narration_id"]].float()
            else:
                item["pixel_values"] = self._pixels(row)
        except BAD_CLIP_ERRORS:
            if not self.skip_bad_clips:
                raise
            item["valid"] = False
            item["video_features" if self.features is not None else "pixel_values"] = self._zeros(row)
        if self.question_input_ids is not None:
            q = self.question_order[i] if self.question_order is not None else i
            item["question_input_ids"] = self.question_input_ids[q]
            item["question_attention_mask"] = self.question_attention_mask[q]
        for name in ("verb", "noun", "action"):
            value = row.get(f"{name}_class")
            item[f"{name}_labels"] = -100 if value is None else int(value)
        return item


def _crop_hw(video_processor: Any, resized: torch.Tensor | None) -> tuple[int, int]:
    crop = getattr(video_processor, "crop_size", None)
    height = crop.get("height") if isinstance(crop, dict) else getattr(crop, "height", None)
    width = crop.get("width") if isinstance(crop, dict) else getattr(crop, "width", None)
    if height and width:
        return int(height), int(width)
    if resized is not None:
        return int(resized.shape[-2]), int(resized.shape[-1])
    size = getattr(video_processor, "size", None)
    edge = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    return int(edge), int(edge)


def _spatial_crops(video: torch.Tensor, crop: tuple[int, int], num: int) -> list[torch.Tensor]:
    """``num`` crops of ``crop`` (h, w) spread evenly along the longer side of ``video`` (T, C, H, W), centred on the
    shorter one (the usual 3-crop test: left / centre / right of a landscape frame)."""
    h, w = video.shape[-2:]
    ch, cw = min(crop[0], h), min(crop[1], w)
    out = []
    for k in range(num):
        frac = 0.5 if num == 1 else k / (num - 1)
        if w - cw >= h - ch:
            top, left = (h - ch) // 2, round(frac * (w - cw))
        else:
            top, left = round(frac * (h - ch)), (w - cw) // 2
        out.append(video[..., top: top + ch, left: left + cw])
    return out


class EpochSampler(torch.utils.data.Sampler[int]):
    """Row order of one epoch: a permutation drawn from (seed, epoch) (or ``0..N-1`` without ``shuffle``).

    Call :meth:`set_epoch` before each epoch; a resumed run rebuilds the same order and skips the batches it
    already consumed.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True) -> None:
        self.num_samples, self.seed, self.shuffle, self.epoch = int(num_samples), int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_samples))
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples


def steps_per_epoch(num_samples: int, batch_size: int, num_processes: int, accumulation: int,
                    drop_last: bool = False) -> int:
    """Optimizer steps in one epoch when the batches are split over ``num_processes`` (as Accelerate shards them)."""
    batches = num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)
    per_process = math.ceil(batches / num_processes)
    return math.ceil(per_process / accumulation)
