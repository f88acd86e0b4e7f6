"""Clips for training and evaluation: a decoded-clip cache, the clip dataset and its sampler.

Clips go through the same pipeline as ``load_ek100(media_root=..., processor=...)``: ``ek100/media.py``'s
``WindowReader`` (a row's window in its media) and ``EK100Clips`` (frame sampling from ``processors/sampling``, in
training from ``clip_generator(seed, epoch, sample_index)``, then the video processor), so a clip is the same whether
it comes through ``load_ek100`` or here, decoded on the fly or read from the cache, in any process or worker, and in a
resumed run.

- :class:`ClipCache` decodes every frame of every window once into one uint8 file (optionally resized), for small data
  sets (the synthetic data, a debugging subset): training then only augments. It is written atomically and reused,
  and reads like a ``WindowReader``.
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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..ek100.media import ClipWindow, EK100Clips, WindowReader
from ..processors.video_io import MediaError

__all__ = [
    "BAD_CLIP_ERRORS",
    "ClipCache",
    "EK100ClipDataset",
    "EpochSampler",
]

# What a broken clip raises: missing / corrupt / truncated media. Anything else is a bug and is never skipped.
BAD_CLIP_ERRORS = (MediaError, FileNotFoundError, OSError)
_CACHE_VERSION = 1


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

    def window(self, row: dict) -> ClipWindow:
        """The cached window of a row (``WindowReader.window``'s, as decoded: its frames are ``0 .. length - 1``)."""
        narration_id = row["narration_id"]
        if narration_id in self.bad:
            raise MediaError(None, None, f"narration {narration_id}: {self.bad[narration_id]} (cached)")
        e = self.entries[narration_id]
        return ClipWindow(str(self.folder / "frames.u8"), 0, int(e["length"]), float(e["fps"]))

    def read(self, row: dict, window: ClipWindow, indices: np.ndarray) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8 frames of a row's cached window (as ``WindowReader.read``)."""
        frames, _ = self.frames(row["narration_id"])
        return np.asarray(frames[np.minimum(np.asarray(indices, dtype=np.int64), window.length - 1)])

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
            "media_root": str(Path(reader.media_root).resolve()),
            "media": reader.media,
            "task": reader.task,
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
        clips: the clip pipeline, an ``ek100.media.EK100Clips`` (the pipeline of ``load_ek100`` too): its source (a
            ``WindowReader``, a :class:`ClipCache` or an ``EK100FeatureReader``), video processor, frame sampling,
            training augmentation and evaluation views (``pixel_values`` ``(K*M, T, C, H, W)`` then; the model's
            logits are averaged over them) are documented there.
        question_input_ids / question_attention_mask: ``(N, Q, L)`` tokenized questions, one per row (or ``None``
            for the model's default questions).
        skip_bad_clips: an unreadable clip gives zeros and ``valid=False`` instead of raising.
        question_order: row ``i`` takes the questions of row ``question_order[i]`` (a control: shuffled questions).

    Items: ``index`` (row position), ``valid``, ``pixel_values`` ``(T, C, H, W)`` (or views first) or
    ``video_features`` ``(F, D)``, ``question_input_ids`` / ``question_attention_mask`` ``(Q, L)``, ``verb_labels`` /
    ``noun_labels`` / ``action_labels`` (-100 without labels).
    """

    def __init__(
        self,
        rows: Sequence[dict],
        clips: EK100Clips,
        *,
        question_input_ids: torch.Tensor | None = None,
        question_attention_mask: torch.Tensor | None = None,
        skip_bad_clips: bool = False,
        question_order: Sequence[int] | None = None,
    ) -> None:
        if not isinstance(clips, EK100Clips):
            raise TypeError(f"EK100ClipDataset: clips is a {type(clips).__name__}; expected an ek100.media.EK100Clips "
                            "(EK100Clips(source, video_processor, num_frames=..., ...))")
        self.rows, self.clips, self.skip_bad_clips = list(rows), clips, bool(skip_bad_clips)
        if question_input_ids is not None and len(question_input_ids) != len(self.rows):
            raise ValueError(f"question_input_ids has {len(question_input_ids)} rows for {len(self.rows)} clips")
        self.question_input_ids, self.question_attention_mask = question_input_ids, question_attention_mask
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
        self.clips.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item: dict[str, Any] = {"index": i, "valid": True}
        try:
            item.update(self.clips.inputs(row))
        except BAD_CLIP_ERRORS:
            if not self.skip_bad_clips:
                raise
            item["valid"] = False
            item.update(self.clips.blank(row))
        if self.question_input_ids is not None:
            q = self.question_order[i] if self.question_order is not None else i
            item["question_input_ids"] = self.question_input_ids[q]
            item["question_attention_mask"] = self.question_attention_mask[q]
        for name in ("verb", "noun", "action"):
            value = row.get(f"{name}_class")
            item[f"{name}_labels"] = -100 if value is None else int(value)
        return item


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
