"""``MambaVLVideoProcessor``: clips (files, frame folders, arrays, images) in, ``pixel_values`` (B, T, C, H, W) out."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
    validate_kwargs,
)
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .sampling import ANCHORS, SAMPLING_MODES, clip_generator
from .video_io import MediaError, clip_indices, decode_video_frames, load_clip_with_indices, probe_video

__all__ = ["MambaVLVideoProcessor", "MambaVLVideosKwargs", "parse_rand_augment"]

# clip_generator stream of the augmentation (stream 0 draws the training frame positions)
_AUGMENT_STREAM = 1
_RAND_AUGMENT_RE = re.compile(r"^rand-m(\d+)-n(\d+)$")
_Number = int | float


class MambaVLVideosKwargs(VideosKwargs, total=False):
    """Arguments of :class:`MambaVLVideoProcessor` beyond transformers' ``VideosKwargs``.

    sampling (`str`): ``"segment"`` or ``"dense"`` (see ``modeling_mambavl.processors.sampling``).
    stride (`int`), target_fps (`float`), anchor (`str`): dense sampling; ``anchor="end"`` for anticipation.
    video_fps (`float`): frame rate of frame folders (default from the EK100 folder name) and of arrays.
    windows: ``(start_sec, end_sec)`` for every video, or one window (or ``None``) per video.
    training (`bool`): random frame positions and augmentation, from ``clip_generator(seed, epoch, index)``.
    seed, epoch (`int`), indices (`list[int]`): identify each clip's generator (``indices`` default: 0..B-1).
    crop_scale, crop_ratio: RandomResizedCrop area fraction and aspect-ratio ranges (training).
    flip_prob (`float`): horizontal-flip probability (training).
    allow_non_finite (`bool`): float arrays with NaN / inf read NaN as 0 and inf as the end of the range instead of
        raising ``ValueError`` (the default: a NaN pixel would otherwise give NaN logits, or silently change how the
        clip's range is read).
    rand_augment (`str`): e.g. ``"rand-m7-n4"`` (magnitude 7 of 10, 4 ops; torchvision's RandAugment); ``None``: off.
    augment_per_frame (`bool`): draw crop / flip / RandAugment per frame instead of once per clip.
    default_question_input_ids, default_question_attention_mask (`list[list[int]]`): the default questions of the
        ``MambaVLProcessor`` this video processor belongs to, tokenized (one row per question type; the processor
        writes them). When set, every call also returns them as ``question_input_ids`` / ``question_attention_mask``
        ``(B, Q, L)``, so ``pipeline("video-classification")``, which loads only the video processor and passes its
        whole output to the model, asks the questions of the tokenizer saved with the model.
    """

    sampling: str | None
    stride: int | None
    target_fps: _Number | None
    anchor: str | None
    video_fps: _Number | None
    windows: list | tuple | None
    training: bool | None
    seed: int | None
    epoch: int | None
    indices: list[int] | tuple[int, ...] | None
    crop_scale: tuple[_Number, _Number] | list[_Number] | None
    crop_ratio: tuple[_Number, _Number] | list[_Number] | None
    flip_prob: _Number | None
    allow_non_finite: bool | None
    rand_augment: str | None
    augment_per_frame: bool | None
    default_question_input_ids: list[list[int]] | None
    default_question_attention_mask: list[list[int]] | None


def parse_rand_augment(spec: str | None) -> tuple[int, int] | None:
    """``"rand-m7-n4"`` -> ``(magnitude, num_ops) = (7, 4)``; ``None`` -> ``None``. Magnitudes are out of 10."""
    if spec is None or spec == "":
        return None
    m = _RAND_AUGMENT_RE.match(spec)
    if m is None or int(m.group(1)) > 10:
        raise ValueError(f"rand_augment must look like 'rand-m<0..10>-n<ops>' (e.g. 'rand-m7-n4'); got {spec!r}")
    return int(m.group(1)), int(m.group(2))


class MambaVLVideoProcessor(BaseVideoProcessor):
    r"""Video processor of MambaVL: decodes and samples clips, then resizes, crops and normalises them.

    Inputs (``videos``): one video or a list of videos, each a video file path (decoded with PyAV, seeking to the
    sampled frames only), an EK100 frame folder (``frame_%010d.jpg``), an array / tensor ``(T, H, W, C)`` or a list of
    PIL images; ``windows=`` gives ``(start_sec, end_sec)`` per video. Frames are sampled as documented in
    ``modeling_mambavl.processors.sampling`` (``num_frames`` frames, ``segment`` or ``dense``); with
    ``do_sample_frames=False`` every frame of the window is kept.

    Evaluation: resize the shorter side to ``size["shortest_edge"]``, centre-crop ``crop_size``, rescale to [0, 1],
    normalise with ``image_mean`` / ``image_std``. Training (only with ``training=True``): RandomResizedCrop to
    ``crop_size`` (``crop_scale`` 0.5-1 of the area), horizontal flip (``flip_prob``), optional RandAugment
    (``rand_augment``), the same for every frame of a clip unless ``augment_per_frame=True``, all drawn from
    ``clip_generator(seed, epoch, index, stream=1)`` (stream 0 draws the training frame positions); then rescale
    and normalise.

    Returns a ``BatchFeature`` with ``pixel_values`` of shape ``(B, T, C, H, W)`` (float32).
    :meth:`process_frames` runs the same transforms on already-decoded uint8 clips, so a training loop can decode
    once into a cache and augment every epoch.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = MambaVLVideosKwargs

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 16
    sampling = "segment"
    stride = 4
    target_fps = 30.0
    anchor = "center"
    training = False
    seed = 0
    epoch = 0
    crop_scale = (0.5, 1.0)
    crop_ratio = (3.0 / 4.0, 4.0 / 3.0)
    flip_prob = 0.5
    allow_non_finite = False
    rand_augment = None
    augment_per_frame = False
    default_question_input_ids = None
    default_question_attention_mask = None

    def __init__(self, **kwargs: Unpack[MambaVLVideosKwargs]) -> None:
        super().__init__(**kwargs)
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, tuple(float(v) for v in value))
        self._check_settings(
            sampling=self.sampling, anchor=self.anchor, rand_augment=self.rand_augment, crop_scale=self.crop_scale,
            crop_ratio=self.crop_ratio, flip_prob=self.flip_prob, num_frames=self.num_frames,
        )

    @staticmethod
    def _check_settings(**values: Any) -> None:
        sampling, anchor = values.get("sampling"), values.get("anchor")
        if sampling is not None and sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        if anchor is not None and anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        parse_rand_augment(values.get("rand_augment"))
        scale = values.get("crop_scale")
        if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
        ratio = values.get("crop_ratio")
        if ratio is not None and not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"crop_ratio must be (low, high) with 0 < low <= high, got {ratio!r}")
        flip = values.get("flip_prob")
        if flip is not None and not (0 <= flip <= 1):
            raise ValueError(f"flip_prob must be in [0, 1], got {flip!r}")
        n = values.get("num_frames")
        if n is not None and n < 1:
            raise ValueError(f"num_frames must be >= 1, got {n!r}")

    # ------------------------------------------------------------------------------------------ transformers hooks
    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: float | None = None,
        *,
        window: Sequence[float] | None = None,
        index: int = 0,
        sampling: str | None = None,
        training: bool | None = None,
        stride: int | None = None,
        target_fps: float | None = None,
        anchor: str | None = None,
        seed: int | None = None,
        epoch: int | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Indices of the frames to keep from a video described by ``metadata`` (its ``fps`` and frame count).

        Follows ``modeling_mambavl.processors.sampling``; arguments left as ``None`` take the processor's values.
        ``fps`` (transformers' "frames per second to sample") is not supported: clips have ``num_frames`` frames.
        """
        if fps is not None:
            raise ValueError(
                "MambaVLVideoProcessor samples num_frames frames per clip; fps= (frames per second to sample) is not "
                "supported. The frame rate of frame folders and arrays is video_fps="
            )
        pick = lambda value, default: default if value is None else value  # noqa: E731
        return clip_indices(
            int(metadata.total_num_frames),
            metadata.fps,
            window=window,
            num_frames=pick(num_frames, self.num_frames),
            sampling=pick(sampling, self.sampling),
            training=bool(pick(training, self.training)),
            stride=pick(stride, self.stride),
            target_fps=pick(target_fps, self.target_fps),
            anchor=pick(anchor, self.anchor),
            seed=pick(seed, self.seed),
            epoch=pick(epoch, self.epoch),
            index=index,
            duration=metadata.duration,
            path=getattr(metadata, "path", None),
        )

    def fetch_videos(
        self, video_url_or_urls: str | list[str] | list[list[str]], sample_indices_fn: Callable | None = None
    ):
        """Decode video files with PyAV (transformers' default needs torchcodec or a removed torchvision API).

        ``sample_indices_fn(metadata=VideoMetadata)`` gives the frame indices to decode; the decoder seeks to them
        instead of decoding the whole file. Without it every frame is decoded. Returns ``(videos, metadata)``:
        for one path one ``(T, H, W, 3)`` uint8 array and its ``VideoMetadata``, for a list of paths two lists.
        """
        if isinstance(video_url_or_urls, (list, tuple)):
            pairs = [self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        path = os.fspath(video_url_or_urls)
        if path.startswith(("http://", "https://")):
            raise ValueError(f"{path}: MambaVLVideoProcessor reads local files only; download the video first")
        info = probe_video(path)
        metadata = VideoMetadata(
            total_num_frames=info.num_frames, fps=float(info.fps), width=info.width, height=info.height,
            duration=info.duration, video_backend="pyav",
        )
        metadata.path = path  # lets sample_frames name the file in its errors
        if sample_indices_fn is not None:
            indices = np.asarray(sample_indices_fn(metadata=metadata), dtype=np.int64)
        else:
            indices = np.arange(info.num_frames, dtype=np.int64)
        frames = decode_video_frames(path, indices, info=info)
        metadata.frames_indices = indices.tolist()
        del metadata.path
        return frames, metadata

    # ------------------------------------------------------------------------------------------------ entry point
    def preprocess(self, videos: Any, **kwargs: Unpack[MambaVLVideosKwargs]) -> BatchFeature:
        """Decode, sample and transform ``videos`` into ``pixel_values`` (B, T, C, H, W); see the class docstring."""
        validate_kwargs(
            captured_kwargs=kwargs.keys(),
            valid_processor_keys=list(self.valid_kwargs.__annotations__.keys()) + ["return_tensors"],
        )
        validate_typed_dict(self.valid_kwargs, kwargs)
        for name in self.valid_kwargs.__annotations__:
            kwargs.setdefault(name, getattr(self, name, None))
        self._check_settings(**kwargs)
        if kwargs.get("fps") is not None:
            raise ValueError(
                "MambaVLVideoProcessor samples num_frames frames per clip; fps= is not supported. The frame rate "
                "of frame folders and arrays is video_fps="
            )

        video_list = _as_video_list(videos)
        batch = len(video_list)
        windows = _per_video_windows(kwargs.pop("windows"), batch)
        indices = kwargs.pop("indices")
        indices = list(range(batch)) if indices is None else [int(i) for i in indices]
        if len(indices) != batch:
            raise ValueError(f"indices has {len(indices)} entries for {batch} videos; give one per video")

        do_sample = bool(kwargs.pop("do_sample_frames"))
        sampling_kwargs = {
            "num_frames": kwargs["num_frames"] if do_sample else None,
            "sampling": kwargs["sampling"],
            "training": bool(kwargs["training"]),
            "stride": kwargs["stride"],
            "target_fps": kwargs["target_fps"],
            "anchor": kwargs["anchor"],
            "seed": kwargs["seed"],
            "epoch": kwargs["epoch"],
        }
        clips, metadata = [], []
        for video, window, index in zip(video_list, windows, indices):
            if isinstance(video, (str, os.PathLike)) and os.path.isfile(video):
                fn = partial(self.sample_frames, window=window, index=index, **sampling_kwargs)
                if sampling_kwargs["num_frames"] is None:
                    fn = partial(_all_frames_of_window, window=window, path=os.fspath(video))
                try:
                    frames, meta = self.fetch_videos(os.fspath(video), sample_indices_fn=fn)
                except MediaError as e:
                    if e.window is None and window is not None:  # fetch_videos knows the file, not the window
                        raise MediaError(e.path, window, e.reason) from e
                    raise
            else:
                frames, idx, info = load_clip_with_indices(
                    video, window=window, fps=kwargs["video_fps"], index=index,
                    allow_non_finite=bool(kwargs["allow_non_finite"]), **sampling_kwargs
                )
                meta = VideoMetadata(**info, frames_indices=idx.tolist())
            clips.append(frames)
            metadata.append(meta)

        output = self.process_frames(
            clips,
            indices=indices,
            training=kwargs["training"],
            seed=kwargs["seed"],
            epoch=kwargs["epoch"],
            return_tensors=kwargs["return_tensors"],
            device=kwargs.get("device"),
            **{k: v for k, v in kwargs.items() if k in _TRANSFORM_KEYS},
        )
        if kwargs.get("return_metadata"):
            output["video_metadata"] = metadata
        if kwargs.get("default_question_input_ids"):
            output.update(_default_question_batch(kwargs["default_question_input_ids"],
                                                  kwargs.get("default_question_attention_mask"), batch,
                                                  kwargs["return_tensors"]))
        return output

    # ---------------------------------------------------------------------------------------------- transforms
    def process_frames(
        self,
        clips: Sequence[Any] | np.ndarray | torch.Tensor,
        *,
        training: bool | None = None,
        seed: int | None = None,
        epoch: int | None = None,
        indices: Sequence[int] | None = None,
        return_tensors: str | None = "pt",
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Augment (training) or resize/crop (evaluation), then rescale and normalise already-decoded clips.

        Args:
            clips: uint8 clips, each ``(T, H, W, 3)`` (array or tensor; ``(T, 3, H, W)`` tensors are accepted), as a
                list or a ``(B, T, H, W, 3)`` array / tensor.
            training: augment (RandomResizedCrop, flip, optional RandAugment), drawing every random choice from
                ``clip_generator(seed, epoch, indices[b], stream=1)``; default: the processor's ``training``.
            seed, epoch, indices: identify each clip's generator; ``indices`` default ``0..B-1``.
            return_tensors: ``"pt"`` stacks to a tensor; ``None`` keeps a list of ``(T, C, H, W)`` tensors.
            device: run the transforms there (e.g. ``"cuda"``); default: where the frames are (the CPU).
            **kwargs: overrides of the processor's settings (``size``, ``crop_size``, ``do_resize``,
                ``do_center_crop``, ``do_rescale``, ``rescale_factor``, ``do_normalize``, ``image_mean``,
                ``image_std``, ``resample``, ``crop_scale``, ``crop_ratio``, ``flip_prob``, ``rand_augment``,
                ``augment_per_frame``).

        Returns:
            ``BatchFeature`` with ``pixel_values`` ``(B, T, C, H, W)`` float32.
        """
        unknown = set(kwargs) - set(_TRANSFORM_KEYS)
        if unknown:
            raise TypeError(f"process_frames got unexpected argument(s) {sorted(unknown)}; allowed: {_TRANSFORM_KEYS}")
        settings = {k: (kwargs[k] if kwargs.get(k) is not None else getattr(self, k, None)) for k in _TRANSFORM_KEYS}
        settings = self._standardize_kwargs(**settings)
        training = bool(self.training if training is None else training)
        seed = self.seed if seed is None else seed
        epoch = self.epoch if epoch is None else epoch
        if isinstance(clips, (np.ndarray, torch.Tensor)) and clips.ndim == 5:
            clips = list(clips)
        elif isinstance(clips, (np.ndarray, torch.Tensor)) and clips.ndim == 4:
            clips = [clips]
        indices = list(range(len(clips))) if indices is None else list(indices)
        if len(indices) != len(clips):
            raise ValueError(f"indices has {len(indices)} entries for {len(clips)} clips")

        out = []
        for clip, index in zip(clips, indices):
            video = _to_uint8_tchw(clip)
            if device is not None:
                video = video.to(device)
            if training:
                video = self._augment(video, clip_generator(seed, epoch, int(index), stream=_AUGMENT_STREAM), settings)
            else:
                if settings["do_resize"]:
                    video = self.resize(video, size=settings["size"], resample=settings["resample"])
                if settings["do_center_crop"]:
                    video = self.center_crop(video, settings["crop_size"])
            video = self.rescale_and_normalize(
                video, settings["do_rescale"], settings["rescale_factor"], settings["do_normalize"],
                settings["image_mean"], settings["image_std"],
            )
            out.append(video.float() if video.dtype != torch.float32 else video)

        if return_tensors is not None:
            shapes = {tuple(v.shape) for v in out}
            if len(shapes) > 1:
                raise ValueError(
                    f"clips of different shapes {sorted(shapes)} cannot be stacked; keep do_resize/do_center_crop on "
                    "or give the same num_frames"
                )
            return BatchFeature({"pixel_values": torch.stack(out)}, tensor_type=return_tensors)
        return BatchFeature({"pixel_values": out})

    def _augment(self, video: torch.Tensor, rng: np.random.Generator, settings: dict) -> torch.Tensor:
        """Training transforms of one uint8 clip ``(T, C, H, W)``; all randomness from ``rng``."""
        crop = settings["crop_size"]
        out_size = [crop.height, crop.width] if crop is not None and crop.height else [video.shape[-2], video.shape[-1]]
        interpolation = _interpolation(settings["resample"])
        rand_aug = parse_rand_augment(settings["rand_augment"])
        scale = tuple(settings["crop_scale"] or (1.0, 1.0))
        ratio = tuple(settings["crop_ratio"] or (1.0, 1.0))
        flip_prob = float(settings["flip_prob"] or 0.0)
        groups = [video[t : t + 1] for t in range(video.shape[0])] if settings["augment_per_frame"] else [video]
        done = []
        for group in groups:
            top, left, h, w = _random_resized_crop_params(group.shape[-2], group.shape[-1], scale, ratio, rng)
            group = TF.resized_crop(group, top, left, h, w, out_size, interpolation=interpolation, antialias=True)
            if rng.random() < flip_prob:
                group = TF.horizontal_flip(group)
            if rand_aug is not None:
                magnitude, num_ops = rand_aug
                torch_seed = int(rng.integers(0, 2**63 - 1))
                # torchvision draws its op choices from torch's global generator: run it under a forked, seeded one
                # so that the result depends on the clip generator alone and the caller's RNG state is untouched.
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(torch_seed)
                    group = T.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=11)(group)
            done.append(group)
        return torch.cat(done) if len(done) > 1 else done[0]


# Settings process_frames reads from the processor unless overridden (training / seed / epoch / return_tensors are
# its named arguments).
def _default_question_batch(ids: list[list[int]], mask: list[list[int]] | None, batch: int,
                            return_tensors: str | None) -> dict[str, Any]:
    """The default question rows (Q, L) repeated for ``batch`` clips: ``question_input_ids`` /
    ``question_attention_mask`` (B, Q, L)."""
    ids = [list(map(int, row)) for row in ids]
    mask = [list(map(int, row)) for row in mask] if mask else [[1] * len(row) for row in ids]
    if len({len(row) for row in ids + mask}) != 1:
        raise ValueError(
            f"default_question_input_ids / default_question_attention_mask: rows of one length expected (the "
            f"processor pads them), got lengths {[len(r) for r in ids]} / {[len(r) for r in mask]}; save the "
            "MambaVLProcessor again (processor.save_pretrained) to rewrite them"
        )
    if return_tensors == "pt":
        return {"question_input_ids": torch.tensor([ids] * batch, dtype=torch.long),
                "question_attention_mask": torch.tensor([mask] * batch, dtype=torch.long)}
    return {"question_input_ids": [ids] * batch, "question_attention_mask": [mask] * batch}


_TRANSFORM_KEYS = (
    "do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor", "do_normalize",
    "image_mean", "image_std", "crop_scale", "crop_ratio", "flip_prob", "rand_augment", "augment_per_frame",
)


def _all_frames_of_window(metadata: VideoMetadata, *, window, path) -> np.ndarray:
    return clip_indices(int(metadata.total_num_frames), metadata.fps, window=window, num_frames=None,
                        duration=metadata.duration, path=path)


def _interpolation(resample) -> TF.InterpolationMode:
    if resample is None:
        return TF.InterpolationMode.BILINEAR
    if isinstance(resample, TF.InterpolationMode):
        return resample
    from transformers.image_utils import pil_torch_interpolation_mapping

    return pil_torch_interpolation_mapping[resample]


def _random_resized_crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from ``rng`` (10 tries, then a centre crop)."""
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_ratio[0], log_ratio[1])))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _to_uint8_tchw(clip: Any) -> torch.Tensor:
    if isinstance(clip, np.ndarray):
        clip = torch.from_numpy(np.ascontiguousarray(clip))
    if not isinstance(clip, torch.Tensor) or clip.ndim != 4:
        raise ValueError(f"a decoded clip must be a 4-D (T, H, W, 3) array or tensor; got {type(clip).__name__}")
    if clip.shape[-1] in (1, 3):  # (T, H, W, C), the documented layout
        clip = clip.permute(0, 3, 1, 2)
    if clip.shape[1] == 1:
        clip = clip.expand(-1, 3, -1, -1)
    if clip.shape[1] != 3:
        raise ValueError(f"a decoded clip needs 3 channels; got shape {tuple(clip.shape)}")
    if clip.dtype != torch.uint8:
        raise ValueError(f"process_frames expects uint8 frames (0-255); got {clip.dtype}")
    return clip.contiguous()


def _is_frame(x: Any) -> bool:
    if hasattr(x, "convert") and hasattr(x, "size") and not isinstance(x, (np.ndarray, torch.Tensor)):
        return True  # PIL image
    return isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 3


def _as_video_list(videos: Any) -> list:
    """One video or a batch -> a list of videos (paths, folders, 4-D arrays/tensors or lists of frames)."""
    if isinstance(videos, (str, os.PathLike)):
        return [videos]
    if isinstance(videos, (np.ndarray, torch.Tensor)):
        if videos.ndim == 4:
            return [videos]
        if videos.ndim == 5:
            return list(videos)
        raise ValueError(f"a video array must be 4-D (T, H, W, C) or a 5-D batch; got shape {tuple(videos.shape)}")
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise ValueError("no videos given")
        if _is_frame(videos[0]):
            return [list(videos)]
        return list(videos)
    raise ValueError(
        f"unsupported video input {type(videos).__name__}: give a path, a frame folder, an array / tensor "
        "(T, H, W, C), a list of PIL images, or a list of these"
    )


def _per_video_windows(windows: Any, batch: int) -> list:
    if windows is None:
        return [None] * batch
    if isinstance(windows, (list, tuple)) and len(windows) == 2 and all(
        isinstance(w, (int, float, np.integer, np.floating)) for w in windows
    ):
        return [tuple(float(w) for w in windows)] * batch
    windows = list(windows)
    if len(windows) != batch:
        raise ValueError(f"windows has {len(windows)} entries for {batch} videos; give one (start, end) or None each")
    return [None if w is None else tuple(float(x) for x in w) for w in windows]

