"""EK100 clips: the one pipeline from an annotation row to model inputs.

``load_ek100(media_root=..., processor=...)`` (a ``datasets`` transform, :class:`EK100Transform`) and training and
evaluation (``modeling_mambavl.training.data.EK100ClipDataset``) both go through it, so a clip gives the same tensors
whichever way it is loaded:

- :class:`WindowReader` maps a row to its window (the recognition segment, or the anticipation observation window
  ending ``anticipation_time`` before the action) in its source's frames, and reads given frames of it from a frame
  folder or an MP4 (decoding with ``processors/video_io``);
- :class:`EK100Clips` samples the clip's frames in that window (``processors/sampling``: one clip, or ``K``
  temporal views, random in training from ``clip_generator(seed, epoch, sample_index)``), then augments or
  resizes and normalises them with the video processor's ``process_frames`` (``M`` spatial crops in evaluation), or
  reads pre-extracted features;
- :class:`EK100Transform` applies :class:`EK100Clips` and the question source to batches of ``load_ek100`` rows.

Decoded clips can also come from ``training.data.ClipCache`` (every window decoded once), which reads like a
:class:`WindowReader`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .features import EK100FeatureReader
from .layout import frame_folder, frames_fps, video_file
from .vocabulary import EK100Vocabulary

__all__ = [
    "ClipWindow",
    "EK100Clips",
    "EK100Transform",
    "WindowReader",
    "open_features",
    "set_ek100_epoch",
]


def set_ek100_epoch(dataset: Any, epoch: int) -> None:
    """Set the epoch that seeds random frame sampling of a dataset returned by `load_ek100` (training mode).

    With a DataLoader, call it before each epoch; workers must not be persistent (``persistent_workers=False``)
    so that they receive the updated transform.
    """
    transform = (getattr(dataset, "format", None) or {}).get("format_kwargs", {}).get("transform")
    if not isinstance(transform, EK100Transform):
        raise ValueError("set_ek100_epoch: the dataset has no EK100 media transform (load it with media_root=...)")
    transform.set_epoch(epoch)


def open_features(media_root: str | Path, task: str) -> EK100FeatureReader:
    """The feature folder ``media_root`` for ``task``; ``ValueError`` when its features were extracted for the other
    task (recognition features see the action itself and must not be used for anticipation)."""
    reader = EK100FeatureReader(media_root)
    if reader.task is not None and reader.task != task:
        raise ValueError(
            f"{media_root}: the features were extracted for task {reader.task!r}, not {task!r}; recognition features "
            "see the action itself and must not be used for anticipation (extract features for this task)"
        )
    return reader


# ------------------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ClipWindow:
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
    """Reads the frames of EK100 rows' windows from frame folders or video files (the EK100 media layout).

    ``window(row)`` gives the row's :class:`ClipWindow` (``None`` when nothing is observable: an anticipation window
    before 0 s); ``read(row, window, indices)`` returns ``(n, H, W, 3)`` uint8 for indices relative to the window
    start (an empty window reads as black frames).
    """

    def __init__(self, media_root: str | Path, media: str, task: str, split: str) -> None:
        if media not in ("frames", "video"):
            raise ValueError(f"WindowReader: media={media!r}; expected 'frames' or 'video' (features are read by "
                             "EK100FeatureReader)")
        self.media_root = Path(media_root)
        self.media = media
        self.task = task
        self.split = split

    def source(self, video_id: str) -> Path:
        """The frame folder or MP4 file of a video."""
        if self.media == "frames":
            return frame_folder(self.media_root, video_id)
        return video_file(self.media_root, video_id)

    def check(self, rows: Sequence[dict]) -> None:
        """Raise ``FileNotFoundError`` naming the first missing frame folder / video and a narration id."""
        first: dict[str, str] = {}
        for row in rows:
            first.setdefault(row["video_id"], row["narration_id"])
        for video_id, narration_id in first.items():
            path = self.source(video_id)
            if not (path.is_dir() if self.media == "frames" else path.is_file()):
                kind = "frame folder" if self.media == "frames" else "video file"
                raise FileNotFoundError(
                    f"{path}: {kind} of video {video_id} not found (needed by narration {narration_id} and the "
                    f"other rows of that video); expected the EK100 layout under {self.media_root}"
                )

    def seconds(self, row: dict) -> tuple[float, float]:
        """The (start_sec, end_sec) window read for a row."""
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

    def window(self, row: dict) -> ClipWindow | None:
        """The frame range of a row, or ``None`` when nothing is observable (an empty anticipation window)."""
        from ..processors.video_io import MediaError

        try:
            return self._window(row)
        except MediaError as e:
            raise MediaError(e.path, e.window, f"narration {row['narration_id']}: {e.reason}") from e

    def _window(self, row: dict) -> ClipWindow | None:
        from ..processors.video_io import clip_indices, frame_folder_length, probe_video

        path = self.source(row["video_id"])
        seconds = self.seconds(row)
        if seconds[1] <= seconds[0]:
            return None
        if self.media == "frames":
            if not path.is_dir():
                raise FileNotFoundError(f"{path}: frame folder of narration {row['narration_id']} not found")
            total = frame_folder_length(path)
            fps = float(frames_fps(row["video_id"]))
            rng = clip_indices(total, fps, window=seconds, num_frames=None, path=str(path))
            return ClipWindow(str(path), int(rng[0]), int(rng[-1]) + 1, fps)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: video file of narration {row['narration_id']} not found")
        info = probe_video(path, seconds)
        rng = clip_indices(info.num_frames, info.fps, window=seconds, num_frames=None, duration=info.duration,
                           path=str(path))
        return ClipWindow(str(path), int(rng[0]), int(rng[-1]) + 1, float(info.fps), info)

    def read(self, row: dict, window: ClipWindow | None, indices: np.ndarray) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8: the frames ``indices`` (relative to the window start; past its end
        they repeat its last frame) of a row's window; black frames for an empty window."""
        from ..processors.video_io import MediaError, decode_video_frames, read_frame_folder

        if window is None:
            # Nothing is observable before the anticipation gap: a black clip, never a frame of the gap.
            return np.zeros((len(indices), *self.frame_size(row), 3), dtype=np.uint8)
        absolute = window.start + np.minimum(np.asarray(indices, dtype=np.int64), window.length - 1)
        seconds = self.seconds(row)
        try:
            if self.media == "frames":
                return read_frame_folder(window.path, absolute, window=seconds, num_frames=window.end)
            return decode_video_frames(window.path, absolute, window=seconds, info=window.info)
        except MediaError as e:
            raise MediaError(e.path, e.window, f"narration {row['narration_id']}: {e.reason}") from e

    def frame_size(self, row: dict) -> tuple[int, int]:
        """(H, W) of a row's video, read from its first frame / stream header."""
        path = self.source(row["video_id"])
        if self.media == "frames":
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


# ------------------------------------------------------------------------------------------- sampling, processing
class EK100Clips:
    """Rows -> clips: sampling from a row's window, then the video processor (or pre-extracted features).

    Args:
        source: where clips come from: a :class:`WindowReader` (decodes the sampled frames on access), a
            ``training.data.ClipCache`` (every window decoded once; read the same way), or an
            ``EK100FeatureReader`` (pre-extracted ``video_features``).
        video_processor: a ``MambaVLVideoProcessor`` (its ``process_frames`` augments in training, resizes and
            crops in evaluation, then normalises), or ``None``: clips stay decoded uint8 frames.
        num_frames, sampling, stride, target_fps, anchor: frame sampling (``processors/sampling``, as ``load_clip``).
        training, seed: random frame positions and augmentation from ``clip_generator(seed, epoch, sample_index)``
            (the epoch set with :meth:`set_epoch`).
        temporal_views, spatial_crops: evaluation views, ``K`` temporal x ``M`` spatial per clip.
        reverse_frames: play every clip backwards (a control: motion verbs must stop being recognised).
    """

    def __init__(
        self,
        source: Any,
        video_processor: Any = None,
        *,
        num_frames: int = 16,
        sampling: str = "segment",
        stride: int = 4,
        target_fps: float = 30.0,
        anchor: str = "center",
        training: bool = False,
        seed: int = 0,
        temporal_views: int = 1,
        spatial_crops: int = 1,
        reverse_frames: bool = False,
    ) -> None:
        if sampling not in ("segment", "dense"):
            raise ValueError(f"sampling={sampling!r}: expected 'segment' or 'dense'")
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames}: expected >= 1")
        if training and (temporal_views != 1 or spatial_crops != 1):
            raise ValueError("temporal_views / spatial_crops are evaluation views; training takes one random clip")
        if temporal_views < 1 or spatial_crops < 1:
            raise ValueError(f"temporal_views={temporal_views}, spatial_crops={spatial_crops}: expected >= 1")
        if anchor == "end" and temporal_views != 1:
            raise ValueError("anticipation clips are end-anchored: temporal_views must be 1")
        if spatial_crops != 1 and video_processor is None:
            raise ValueError(f"spatial_crops={spatial_crops} needs a video processor (crops are cut after resizing)")
        self.source = source
        self.video_processor = video_processor
        self.num_frames, self.sampling, self.stride = int(num_frames), sampling, int(stride)
        self.target_fps, self.anchor = float(target_fps), anchor
        self.training, self.seed, self.epoch = bool(training), int(seed), 0
        self.temporal_views, self.spatial_crops = int(temporal_views), int(spatial_crops)
        self.reverse_frames = bool(reverse_frames)

    def set_epoch(self, epoch: int) -> None:
        """Seeds random frame positions and augmentation."""
        self.epoch = int(epoch)

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_crops

    @property
    def features(self) -> bool:
        """True when the source holds pre-extracted features rather than frames."""
        return isinstance(self.source, EK100FeatureReader)

    def frames(self, row: dict, view: int = 0) -> np.ndarray:
        """The ``(num_frames, H, W, 3)`` uint8 frames of temporal view ``view`` of a row's clip."""
        from ..processors.sampling import clip_generator, view_indices
        from ..processors.video_io import MediaError

        generator = clip_generator(self.seed, self.epoch, int(row["sample_index"])) if self.training else None
        try:
            window = self.source.window(row)
            length, fps = (window.length, window.fps) if window is not None else (1, None)
            idx = view_indices(
                length, self.num_frames, sampling=self.sampling, training=self.training, generator=generator,
                stride=self.stride, target_fps=self.target_fps, fps=fps, anchor=self.anchor, view=view,
                num_views=self.temporal_views,
            )
            if self.reverse_frames:
                idx = idx[::-1].copy()
            return self.source.read(row, window, idx)
        except (MediaError, FileNotFoundError):
            raise  # these already name the path and the narration
        except Exception as e:
            e.add_note(f"while loading narration {row['narration_id']} of video {row['video_id']}")
            raise

    def inputs(self, row: dict) -> dict[str, Any]:
        """A row's clip as model inputs: ``video_features`` ``(F, D)`` float32 (features), else ``pixel_values``
        ``(T, C, H, W)`` float32 (``(K*M, T, C, H, W)`` with evaluation views), or ``video`` ``(T, H, W, 3)`` uint8
        without a video processor (``(K, T, H, W, 3)`` with temporal views)."""
        import torch

        if self.features:
            return {"video_features": self.source[row["narration_id"]].float()}
        vp = self.video_processor
        if vp is None:
            views = [self.frames(row, k) for k in range(self.temporal_views)]
            return {"video": views[0] if len(views) == 1 else np.stack(views)}
        if self.training:
            clip = self.frames(row)
            pixels = vp.process_frames([clip], training=True, seed=self.seed, epoch=self.epoch,
                                       indices=[int(row["sample_index"])])["pixel_values"][0]
            return {"pixel_values": pixels}
        views = []
        for k in range(self.temporal_views):
            clip = self.frames(row, k)
            if self.spatial_crops == 1:
                views.append(vp.process_frames([clip], training=False)["pixel_values"][0])
                continue
            resized = vp.process_frames([clip], training=False, do_center_crop=False)["pixel_values"][0]
            views.extend(_spatial_crops(resized, _crop_size(vp, resized), self.spatial_crops))
        return {"pixel_values": views[0] if len(views) == 1 else torch.stack(views)}

    def blank(self, row: dict) -> dict[str, Any]:
        """Zeros shaped like :meth:`inputs` of a row (the stand-in of an unreadable clip that is skipped)."""
        import torch

        if self.features:
            return {"video_features": torch.zeros(self.source.shape, dtype=torch.float32)}
        if self.video_processor is None:
            h, w = self.source.frame_size(row)
            shape = (self.num_frames, h, w, 3)
            return {"video": np.zeros((self.temporal_views, *shape) if self.temporal_views > 1 else shape, np.uint8)}
        h, w = _crop_size(self.video_processor, None)
        shape = (self.num_frames, 3, h, w)
        return {"pixel_values": torch.zeros((self.num_views, *shape) if self.num_views > 1 else shape)}


def _crop_size(video_processor: Any, resized: Any = None) -> tuple[int, int]:
    """(height, width) of the processor's crops: its ``crop_size``, else the resized clip's ``(…, H, W)``, else its
    ``size["shortest_edge"]`` squared."""
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


def _spatial_crops(video: Any, crop: tuple[int, int], num: int) -> list:
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


# ------------------------------------------------------------------------------------------------ datasets transform
class EK100Transform:
    """Batch transform (for ``Dataset.with_transform``) adding media and questions to EK100 rows.

    The clips come from :class:`EK100Clips` (the pipeline of training and evaluation too). Output per batch: every
    input column, plus
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
        video_processor = getattr(processor, "video_processor", processor)
        if num_frames is None:
            num_frames = getattr(video_processor, "num_frames", None) or 16
        if media == "features":
            source: Any = open_features(media_root, task)
        else:
            source = WindowReader(media_root, media, task, split)
        self.media_root = Path(media_root)
        self.media = media
        self.split = split
        self.processor = processor
        # Anticipation never looks past the end of its observed window: dense sampling is anchored there.
        self.clips = EK100Clips(
            source, video_processor, num_frames=int(num_frames),
            sampling=sampling or ("dense" if task == "anticipation" else "segment"), stride=stride,
            target_fps=target_fps, anchor="end" if task == "anticipation" else "center", training=training, seed=seed,
        )
        self.question_source = question_source
        self.questions_path = questions_path
        self.question_types = tuple(question_types)
        self.vocab = vocab
        self._questions: Callable[[dict], list[str]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.clips.set_epoch(epoch)

    def check(self, dataset: Any) -> None:
        """Raise ``FileNotFoundError`` / ``KeyError`` naming the path and a narration id for missing media."""
        if self.clips.features:
            missing = [n for n in dataset["narration_id"] if n not in self.clips.source]
            if missing:
                raise KeyError(
                    f"{self.media_root / 'index.json'}: no features for {len(missing)} narration(s), "
                    f"e.g. narration {missing[0]!r}"
                )
            return
        self.clips.source.check([{"narration_id": n, "video_id": v}
                                 for n, v in zip(dataset["narration_id"], dataset["video_id"])])

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
        if self.question_source is not None:
            questions = [self.questions(row) for row in rows]
            if getattr(self.processor, "tokenize_questions", None) is not None:
                out.update(self.processor.tokenize_questions(questions, return_tensors="pt"))
            else:
                out["questions"] = questions
        inputs = [self.clips.inputs(row) for row in rows]
        for name in inputs[0] if inputs else ():
            values = [item[name] for item in inputs]
            out[name] = values if name == "video" else torch.stack(values)
        return out
