"""Building blocks shared by the training and evaluation scripts: the data set (real EK100 or synthetic), its rows,
the processor matching a model config, tokenized questions, clip datasets and data loaders, and the model itself."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..ek100.annotations import load_ek100
from ..ek100.media import EK100Clips, WindowReader, open_features
from .data import ClipCache, EK100ClipDataset, EpochSampler
from .losses import class_counts, log_prior

logger = logging.getLogger(__name__)

__all__ = [
    "DataSpec",
    "apply_question_pool",
    "build_clip_dataset",
    "build_model",
    "default_cache_dir",
    "init_head_bias_from_prior",
    "load_rows",
    "resolve_data",
    "synthetic_settings",
    "tokenize_questions",
]


def default_cache_dir() -> Path:
    """``$MAMBAVL_CACHE``, else ``~/.cache/mambavl``."""
    return Path(os.environ.get("MAMBAVL_CACHE") or Path.home() / ".cache" / "mambavl")


@dataclass(frozen=True)
class DataSpec:
    """Where a run's data lives: the annotation folder, the media (``frames`` / ``video`` folder or a feature folder)
    and the data set's name (``epic-kitchens-100`` or ``synthetic-ek100``)."""

    annotations_dir: Path
    media_root: Path | None
    media: str
    dataset: str


def synthetic_settings(args: Any) -> dict[str, Any]:
    """The synthetic data set's settings from the parsed ``add_data_arguments`` options (``--synthetic_*``), as
    `resolve_data` takes them; the default variant is left out, so its cache folder keeps the name it always had."""
    settings = {"num_train": args.synthetic_train_clips, "num_validation": args.synthetic_validation_clips,
                "size": args.synthetic_size}
    variant = getattr(args, "synthetic_variant", "default")
    if variant != "default":
        settings["variant"] = variant
    return settings


def resolve_data(
    annotations_dir: str | os.PathLike | None,
    media_root: str | os.PathLike | None,
    media: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    synthetic: dict[str, Any] | None = None,
    accelerator: Any = None,
) -> DataSpec:
    """The real data set when ``annotations_dir`` is given, else the synthetic one (``synthetic``: arguments of
    `make_synthetic_ek100`, e.g. from `synthetic_settings`), built once under ``cache_dir`` (by the main process
    first; the others then find it complete and reuse it)."""
    if annotations_dir is not None:
        annotations_dir = Path(annotations_dir)
        if not annotations_dir.is_dir():
            raise FileNotFoundError(f"--annotations_dir {annotations_dir}: no such folder (an "
                                    "epic-kitchens-100-annotations checkout)")
        return DataSpec(annotations_dir, Path(media_root) if media_root else None, media, "epic-kitchens-100")
    from ..ek100 import make_synthetic_ek100
    from ..ek100.synthetic import SYNTHETIC_VARIANT_VERSIONS

    settings = dict(synthetic or {})
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    # The variant and the version of its generator are part of the folder's name (a folder an older generator made
    # is left alone, neither reused nor refused), except the default's, whose folders predate variants.
    named = {k: v for k, v in settings.items() if not (k == "variant" and v == "default")}
    if named.get("variant") in SYNTHETIC_VARIANT_VERSIONS:
        named["variant_version"] = SYNTHETIC_VARIANT_VERSIONS[named["variant"]]
    name = "synthetic-" + "-".join(f"{k}{v}" for k, v in sorted(named.items()))
    root = cache_dir / name
    kwargs = dict(settings, frames=media == "frames", video=media == "video", features=media == "features")

    def build():
        return make_synthetic_ek100(root, **kwargs)

    if accelerator is not None:
        with accelerator.main_process_first():
            synthetic_data = build()
    else:
        synthetic_data = build()
    media_path = synthetic_data.features_dir if media == "features" else synthetic_data.media_root
    return DataSpec(synthetic_data.annotations_dir, media_path, media, "synthetic-ek100")


def load_rows(data: DataSpec, split: str, task: str, *, anticipation_time: float = 1.0,
              observation_time: float = 2.133, limit: int | None = None) -> list[dict]:
    """The annotation rows of a split as dicts (no media), optionally the first ``limit``."""
    dataset = load_ek100(data.annotations_dir, split, task=task, anticipation_time=anticipation_time,
                         observation_time=observation_time)
    if limit is not None and limit < len(dataset):
        dataset = dataset.select(range(limit))
    return dataset.to_list()


def apply_question_pool(processor: Any, path: str | os.PathLike | None, question_source: str) -> None:
    """``--question_pool PATH``: keep the pool on ``processor`` (saved with it, so a checkpoint's predicted questions
    are phrased the same when it is evaluated). ``None`` leaves the processor's own pool (a checkpoint's) as it is.

    Raises ``ValueError`` if ``question_source`` is not ``"predicted"`` (the only source a pool phrases)."""
    if path is None:
        return
    if question_source != "predicted":
        raise ValueError(f"--question_pool {path}: a question pool phrases the questions of --question_source "
                         f"predicted, not {question_source}; add --question_source predicted or drop --question_pool")
    from ..processors.questions import read_question_pool

    processor.question_pool = read_question_pool(path)


def tokenize_questions(rows: Sequence[dict], processor: Any, source: str, split: str, *,
                       path: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, Q, L)`` question ids and mask for every row, from ``make_question_source(source, split=...)``, padded
    to the longest question of the split (or the processor's ``max_length``). ``"predicted"`` questions are phrased
    from the processor's ``question_pool`` when it has one."""
    from ..processors import make_question_source

    pool = getattr(processor, "question_pool", None) if source == "predicted" else None
    make = make_question_source(source, split=split, path=path, question_types=processor.question_types,
                                mask_token=processor.mask_token, pool=pool)
    make.check_ids([row["narration_id"] for row in rows], split)
    questions = [make(row) for row in rows]
    if make.pool_fallbacks:
        logger.warning(f"{split}: the question pool lacks the predicted class of {make.pool_fallbacks} of the "
                       f"{len(questions) * len(make.question_types)} questions; those are phrased from the templates")
    encoded = processor.tokenize_questions(questions, return_tensors="pt")
    return encoded["question_input_ids"], encoded["question_attention_mask"]


def build_clip_dataset(
    rows: Sequence[dict],
    data: DataSpec,
    processor: Any,
    *,
    split: str,
    task: str,
    training: bool,
    seed: int,
    question_source: str = "generic",
    questions_path: str | os.PathLike | None = None,
    sampling: str | None = None,
    stride: int = 4,
    target_fps: float = 30.0,
    cache_dir: str | os.PathLike | None = None,
    cache_short_side: int | None = None,
    skip_bad_clips: bool = False,
    temporal_views: int = 1,
    spatial_crops: int = 1,
    reverse_frames: bool = False,
    question_order: Sequence[int] | None = None,
    accelerator: Any = None,
    progress: bool = False,
) -> EK100ClipDataset:
    """An :class:`EK100ClipDataset` over ``rows``: clips from the media (decoded on access, or once into a
    :class:`ClipCache` under ``cache_dir`` when it is given), questions from ``question_source``."""
    ids, mask = tokenize_questions(rows, processor, question_source, split, path=questions_path)
    sampling = sampling or ("dense" if task == "anticipation" else "segment")
    anchor = "end" if task == "anticipation" else "center"
    if data.media == "features":
        source: Any = open_features(data.media_root, task)
    else:
        if data.media_root is None:
            raise ValueError("--media_root is needed with --annotations_dir (the folder holding rgb_frames/ or "
                             "videos/), or give --media features with a feature folder")
        reader = WindowReader(data.media_root, data.media, task, split)
        if not skip_bad_clips:
            reader.check(rows)
        if cache_dir is not None:
            def build() -> ClipCache:
                from tqdm.auto import tqdm

                bar = (lambda it: tqdm(it, desc=f"decoding {split} clips", leave=False)) if progress else None
                return ClipCache.build(cache_dir, rows, reader, short_side=cache_short_side,
                                       skip_bad_clips=skip_bad_clips, progress=bar)

            if accelerator is not None:
                with accelerator.main_process_first():
                    source = build()
            else:
                source = build()
        else:
            source = reader
    vp = processor.video_processor
    clips = EK100Clips(source, vp, num_frames=vp.num_frames, sampling=sampling, stride=stride, target_fps=target_fps,
                       anchor=anchor, training=training, seed=seed, temporal_views=temporal_views,
                       spatial_crops=spatial_crops, reverse_frames=reverse_frames)
    return EK100ClipDataset(rows, clips, question_input_ids=ids, question_attention_mask=mask,
                            skip_bad_clips=skip_bad_clips, question_order=question_order)


def build_dataloader(dataset: EK100ClipDataset, batch_size: int, *, shuffle: bool, seed: int,
                     num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A DataLoader ordered by an :class:`EpochSampler` (non-persistent workers, so ``set_epoch`` reaches them)."""
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, persistent_workers=False,
        drop_last=False,
    )


def build_model(
    *,
    preset: str | None = "tiny",
    config_name: str | os.PathLike | None = None,
    model_name_or_path: str | os.PathLike | None = None,
    vision_backbone: str | None = None,
    text_backbone: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    meta: bool = False,
) -> tuple[Any, str]:
    """A new model to train and a description of where it came from.

    In order of precedence: ``model_name_or_path`` (with ``meta=True`` only: a checkpoint's config), ``vision_backbone``
    / ``text_backbone`` (``from_backbones``: pretrained backbones, new fusion and heads), ``config_name`` (a config
    JSON: new weights), ``preset`` (new weights). ``config_overrides`` (config fields) apply to each. ``meta=True``
    builds on the meta device (shapes and names only, for ``--dry_run``). A checkpoint's weights load through
    ``modeling_mambavl.saving.load_model_and_processor`` (which refuses incomplete weights and checks the processor).
    """
    from ..configuration import MambaVLConfig
    from ..modeling import MambaVLForVideoClassification

    overrides = dict(config_overrides or {})
    if model_name_or_path is not None:
        if not meta:
            raise ValueError(f"build_model(model_name_or_path={str(model_name_or_path)!r}) builds a checkpoint's "
                             "config on the meta device only (meta=True); load its weights with "
                             "modeling_mambavl.load_model_and_processor(path), which refuses incomplete weights")
        config = MambaVLConfig.from_pretrained(str(model_name_or_path), **overrides)
        with torch.device("meta"):
            return MambaVLForVideoClassification(config), f"checkpoint {model_name_or_path}"
    if vision_backbone is not None or text_backbone is not None:
        if meta:
            raise ValueError("--dry_run with --vision_backbone / --text_backbone would download the backbones; use "
                             "a preset or a config")
        model = MambaVLForVideoClassification.from_backbones(vision=vision_backbone, text=text_backbone, **overrides)
        return model, f"from_backbones(vision={vision_backbone}, text={text_backbone})"
    if config_name is not None:
        text = Path(config_name).read_text(encoding="utf-8")
        kwargs = json.loads(text)
        kwargs.pop("model_type", None)
        kwargs.update(overrides)
        config = MambaVLConfig(**kwargs)
        source = f"config {config_name}"
    else:
        config = MambaVLConfig.from_preset(preset or "tiny", **overrides)
        source = f"preset {preset or 'tiny'}"
    if meta:
        with torch.device("meta"):
            return MambaVLForVideoClassification(config), source
    return MambaVLForVideoClassification(config), source


@torch.no_grad()
def init_head_bias_from_prior(model: Any, rows: Sequence[dict], floor: float = 0.5) -> None:
    """Set the verb and noun heads' biases to the log class prior of ``rows`` (``losses.log_prior``: classes never
    seen count as ``floor`` samples), so that a new model starts from the class prior instead of spending its first
    steps learning it (Lin et al., "Focal loss", ICCV 2017, section 3.3)."""
    for name, column in (("verb_head", "verb_class"), ("noun_head", "noun_class")):
        head = getattr(model, name, None)
        if head is None or head.bias is None:
            continue
        prior = log_prior(class_counts(rows, column, head.out_features), floor=floor)
        head.bias.copy_(prior.to(head.bias.dtype))
