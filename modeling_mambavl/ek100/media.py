"""Lazy EK100 media for `load_ek100`: a dataset transform that decodes frames, videos or features on access.

Decoding and frame sampling live in ``processors/`` (``load_clip``); this module only maps an annotation row to
its media source and time window, and hands the clips (and questions) to the processor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .annotations import VIDEO_ID_PATTERN, frames_fps
from .features import EK100FeatureReader
from .vocabulary import EK100Vocabulary

__all__ = ["EK100Transform", "frame_folder", "set_ek100_epoch", "video_file"]


def _inside(media_root: str | Path, video_id: str, path: Path) -> Path:
    """``path`` if ``video_id`` is an EK100 id and ``path`` resolves inside ``media_root``; else ``ValueError``.

    A video id comes from an annotation file; one holding separators or ``..`` must never read media elsewhere
    (a symbolic link inside the root pointing out of it is refused as well)."""
    if not isinstance(video_id, str) or not VIDEO_ID_PATTERN.match(video_id):
        raise ValueError(f"video_id {video_id!r}: not an EK100 video id like 'P01_01' or 'P01_101'; media paths are "
                         f"built from it under {media_root}")
    root = Path(media_root).resolve()
    if not path.resolve().is_relative_to(root):
        raise ValueError(f"video_id {video_id!r}: its media path {path} resolves to {path.resolve()}, outside the "
                         f"media root {root}")
    return path


def frame_folder(media_root: str | Path, video_id: str) -> Path:
    """``<media_root>/rgb_frames/PXX/PXX_YY`` (the EK100 frame layout); ``ValueError`` for a video id that is not
    ``PXX_YY`` or a path outside ``media_root``."""
    path = Path(media_root) / "rgb_frames" / str(video_id).split("_")[0] / str(video_id)
    return _inside(media_root, video_id, path)


def video_file(media_root: str | Path, video_id: str) -> Path:
    """``<media_root>/videos/PXX/PXX_YY.MP4`` (a lower-case ``.mp4`` is accepted too); ``ValueError`` for a video id
    that is not ``PXX_YY`` or a path outside ``media_root``."""
    folder = Path(media_root) / "videos" / str(video_id).split("_")[0]
    path = folder / f"{video_id}.MP4"
    if not path.exists() and (folder / f"{video_id}.mp4").exists():
        path = folder / f"{video_id}.mp4"
    return _inside(media_root, video_id, path)


def set_ek100_epoch(dataset: Any, epoch: int) -> None:
    """Set the epoch that seeds random frame sampling of a dataset returned by `load_ek100` (training mode).

    With a DataLoader, call it before each epoch; workers must not be persistent (``persistent_workers=False``)
    so that they receive the updated transform.
    """
    transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
    if not isinstance(transform, EK100Transform):
        raise ValueError("set_ek100_epoch: the dataset has no EK100 media transform (load it with media_root=...)")
    transform.set_epoch(epoch)


class EK100Transform:
    """Batch transform (for ``Dataset.with_transform``) adding media and questions to EK100 rows.

    Output per batch: every input column, plus
      - frames / video without a processor: ``video`` (list of (T, H, W, 3) uint8 arrays);
      - features: ``video_features`` (B, F, D) float32 tensor;
      - with a ``MambaVLVideoProcessor`` (or the one inside a ``MambaVLProcessor``): ``pixel_values``
        (B, T, C, H, W) float32 instead of ``video``;
      - with ``question_source``: ``question_input_ids`` / ``question_attention_mask`` (B, Q, L) when the processor
        has a tokenizer (a ``MambaVLProcessor``), else ``questions`` (list of Q strings per row).
    """

    def __init__(
        self,
        *,
        media_root: str | Path,
        media: str,
        task: str,
        split: str,
        processor: Any = None,
        num_frames: int | None = None,
        sampling: str | None = None,
        stride: int = 4,
        target_fps: float = 30.0,
        training: bool = False,
        seed: int = 0,
        question_source: str | Callable[[dict], list[str]] | None = None,
        questions_path: str | Path | None = None,
        question_types: Sequence[str] = ("verb", "noun"),
        vocab: EK100Vocabulary | None = None,
    ) -> None:
        if sampling is None:
            sampling = "dense" if task == "anticipation" else "segment"
        if sampling not in ("segment", "dense"):
            raise ValueError(f"sampling={sampling!r}: expected 'segment' or 'dense'")
        if num_frames is None:
            video_processor = getattr(processor, "video_processor", processor)
            num_frames = getattr(video_processor, "num_frames", None) or 16
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames}: expected >= 1")
        self.media_root = Path(media_root)
        self.media = media
        self.task = task
        self.split = split
        self.processor = processor
        self.num_frames = int(num_frames)
        self.sampling = sampling
        # Anticipation never looks past the end of its observed window: dense sampling is anchored there.
        self.anchor = "end" if task == "anticipation" else "center"
        self.stride = int(stride)
        self.target_fps = float(target_fps)
        self.training = bool(training)
        self.seed = int(seed)
        self.epoch = 0
        self.question_source = question_source
        self.questions_path = questions_path
        self.question_types = tuple(question_types)
        self.vocab = vocab
        self._questions: Callable[[dict], list[str]] | None = None
        self._features: EK100FeatureReader | None = None
        if media == "features":
            self._features = EK100FeatureReader(self.media_root)
            stored = self._features.task
            if stored is not None and stored != task:
                raise ValueError(
                    f"{self.media_root}: the features were extracted for task {stored!r}, not {task!r}; "
                    "recognition features see the action itself and must not be used for anticipation"
                )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    # ------------------------------------------------------------------ media sources
    def source(self, video_id: str) -> Path:
        """The frame folder or MP4 file of a video."""
        if self.media == "frames":
            return frame_folder(self.media_root, video_id)
        return video_file(self.media_root, video_id)

    def check(self, dataset: Any) -> None:
        """Raise ``FileNotFoundError`` / ``KeyError`` naming the path and a narration id for missing media."""
        if self.media == "features":
            missing = [n for n in dataset["narration_id"] if n not in self._features]
            if missing:
                raise KeyError(
                    f"{self.media_root / 'index.json'}: no features for {len(missing)} narration(s), "
                    f"e.g. narration {missing[0]!r}"
                )
            return
        first: dict[str, str] = {}
        for narration_id, video_id in zip(dataset["narration_id"], dataset["video_id"]):
            first.setdefault(video_id, narration_id)
        for video_id, narration_id in first.items():
            path = self.source(video_id)
            ok = path.is_dir() if self.media == "frames" else path.is_file()
            if not ok:
                kind = "frame folder" if self.media == "frames" else "video file"
                raise FileNotFoundError(
                    f"{path}: {kind} of video {video_id} not found (needed by narration {narration_id} and the "
                    f"other rows of that video); expected the EK100 layout under {self.media_root}"
                )

    def window(self, row: dict) -> tuple[float, float]:
        """The (start_sec, end_sec) window decoded for a row."""
        if self.task != "anticipation":
            # A zero-length segment (stop == start) still has the frame at its start.
            return (row["start_sec"], max(row["stop_sec"], row["start_sec"] + 1e-3))
        start, end = row["observation_start"], row["observation_end"]
        if self.media == "frames" and end > 0:
            # EK100 numbers frames as int(t * fps) (start_frame of the CSVs), one more than the JPEG that a
            # presentation-time reading gives (file k is shown from (k - 1) / fps). Ending the window on a frame
            # boundary makes the last file read int(observation_end * fps), so the gap holds in both numberings.
            fps = frames_fps(row["video_id"])
            end = math.floor(end * fps + 1e-6) / fps
        return (start, end)

    # ------------------------------------------------------------------ decoding
    def load(self, row: dict) -> np.ndarray:
        """The (num_frames, H, W, 3) uint8 clip of one row."""
        from ..processors.video_io import MediaError, load_clip

        narration_id, video_id = row["narration_id"], row["video_id"]
        path = self.source(video_id)
        start, end = self.window(row)
        if self.media == "frames" and not path.is_dir():
            raise FileNotFoundError(f"{path}: frame folder of narration {narration_id} not found")
        if self.media == "video" and not path.is_file():
            raise FileNotFoundError(f"{path}: video file of narration {narration_id} not found")
        if end <= start:
            # Nothing is observable before the anticipation gap: a black clip, never a frame of the gap.
            return np.zeros((self.num_frames, *_frame_size(path, self.media), 3), dtype=np.uint8)
        try:
            clip = load_clip(
                str(path),
                window=(start, end),
                num_frames=self.num_frames,
                sampling=self.sampling,
                training=self.training,
                stride=self.stride,
                target_fps=self.target_fps,
                anchor=self.anchor,
                fps=frames_fps(video_id) if self.media == "frames" else None,
                seed=self.seed,
                epoch=self.epoch,
                index=int(row["sample_index"]),
            )
        except MediaError as e:
            raise MediaError(e.path, e.window, f"narration {narration_id}: {e.reason}") from e
        except Exception as e:
            e.add_note(f"while loading narration {narration_id} from {path}, window ({start:.3f}, {end:.3f}) s")
            raise
        return np.asarray(clip)

    @property
    def oracle(self) -> bool:
        """True when the questions come from the ground truth: results must be labelled ``ORACLE QUESTIONS``."""
        return isinstance(self.question_source, str) and self.question_source == "oracle"

    def check_questions(self, narration_ids: Sequence[str]) -> None:
        """Raise ``ValueError`` naming the file if a question / predictions file lacks narrations of the split."""
        if self.question_source is not None:
            check = getattr(self._question_source(), "check_ids", None)
            if check is not None:
                check(list(narration_ids), self.split)

    def _question_source(self) -> Callable[[dict], list[str]]:
        if self._questions is None:
            if callable(self.question_source):
                self._questions = self.question_source
            else:
                from ..processors.questions import make_question_source

                kwargs = {}
                mask_token = getattr(getattr(self.processor, "tokenizer", None), "mask_token", None)
                if mask_token:
                    kwargs["mask_token"] = mask_token
                if self.question_source == "predicted":  # a checkpoint's pool phrases its predicted questions
                    kwargs["pool"] = getattr(self.processor, "question_pool", None)
                self._questions = make_question_source(
                    self.question_source,
                    split=self.split,
                    path=self.questions_path,
                    question_types=self.question_types,
                    vocab=self.vocab,
                    **kwargs,
                )
        return self._questions

    def questions(self, row: dict) -> list[str]:
        questions = list(self._question_source()(row))
        if len(questions) != len(self.question_types):
            raise ValueError(
                f"narration {row['narration_id']}: the question source gave {len(questions)} questions for "
                f"question_types {self.question_types}"
            )
        return questions

    def __call__(self, batch: dict[str, list]) -> dict[str, Any]:
        import torch

        out = dict(batch)
        names = list(batch)
        rows = [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]
        questions = [self.questions(row) for row in rows] if self.question_source is not None else None
        if questions is not None:
            if getattr(self.processor, "tokenize_questions", None) is not None:
                out.update(self.processor.tokenize_questions(questions, return_tensors="pt"))
            else:
                out["questions"] = questions
        if self.media == "features":
            out["video_features"] = torch.stack([self._features[row["narration_id"]].float() for row in rows])
            return out
        clips = [self.load(row) for row in rows]
        video_processor = getattr(self.processor, "video_processor", self.processor)
        if video_processor is None:
            out["video"] = clips
            return out
        # The clips are decoded here with the exact sampling (end-anchored for anticipation); the processor only
        # augments (training, from the clip's own generator) or resizes, then normalises.
        out.update(
            video_processor.process_frames(
                clips,
                training=self.training,
                seed=self.seed,
                epoch=self.epoch,
                indices=[int(row["sample_index"]) for row in rows],
                return_tensors="pt",
            )
        )
        return out


def _frame_size(path: Path, media: str) -> tuple[int, int]:
    """(H, W) of a video's frames, read from its first frame / stream header."""
    if media == "frames":
        from PIL import Image

        first = path / "frame_0000000001.jpg"
        if not first.is_file():
            candidates = sorted(path.glob("frame_*.jpg"))
            if not candidates:
                raise FileNotFoundError(f"{path}: no frame_*.jpg files")
            first = candidates[0]
        with Image.open(first) as image:
            return (image.height, image.width)
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return (stream.codec_context.height, stream.codec_context.width)
