"""``MambaVLProcessor``: videos and questions in, ``pixel_values`` and question tokens out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from ..configuration.configuration_mambavl import save_code_bundle
from .video_processing import MambaVLVideoProcessor

try:  # the question templates and the shipped question tokenizer are package data
    from .questions import check_question_pool, check_question_types, default_questions
    from .tokenizer import default_question_tokenizer
except ImportError:
    # This file also runs as a checkpoint's code bundle, where the package is absent: a saved processor passes its
    # tokenizer, question types and questions to __init__, so only building one from nothing needs the package.
    check_question_types = tuple
    default_questions = default_question_tokenizer = check_question_pool = None

__all__ = ["MambaVLProcessor", "register_auto_classes"]

logger = logging.get_logger(__name__)
# What save_pretrained writes for a fast tokenizer (every tokenizer transformers 5 builds by default).
_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


class MambaVLProcessor(ProcessorMixin):
    r"""Processor of MambaVL: a :class:`MambaVLVideoProcessor` for the clips and a tokenizer for the questions.

    Works with any transformers tokenizer (the authors used RoBERTa-base's); without one it uses the package's
    default question tokenizer (``default_question_tokenizer()``), so it can be built offline.

    Args:
        video_processor: default ``MambaVLVideoProcessor()``.
        tokenizer: default: the shipped question tokenizer.
        question_types: one question per type per clip, in this order (``config.question_types``).
        questions: the default question of each type (default: the generic questions,
            ``GENERIC_TEMPLATES[type][0]``), used when a call gives none.
        max_length: pad (and truncate) every question to this many tokens; ``None`` pads to the batch's longest.
        question_pool: the question pool (the JSON object ``examples/generate_questions.py --pool`` writes) that
            phrases ``question_source="predicted"`` questions, or ``None`` (templates). Saved in
            ``processor_config.json``, so that a checkpoint trained with a pool builds the same questions when it is
            evaluated; the call itself never reads it.

    Call: ``processor(videos=..., questions=None, return_tensors="pt", **video_kwargs)`` returns ``pixel_values``
    ``(B, T, C, H, W)``, ``question_input_ids`` and ``question_attention_mask`` ``(B, Q, L)``, padded on the right
    whatever the tokenizer's own padding side.
    """

    model_input_names = ["pixel_values", "question_input_ids", "question_attention_mask"]

    def __init__(
        self,
        video_processor: MambaVLVideoProcessor | None = None,
        tokenizer: Any = None,
        question_types: Sequence[str] = ("verb", "noun"),
        questions: Sequence[str] | None = None,
        max_length: int | None = None,
        question_pool: dict | None = None,
        **kwargs: Any,
    ) -> None:
        video_processor = video_processor if video_processor is not None else MambaVLVideoProcessor()
        if (tokenizer is None or questions is None) and default_question_tokenizer is None:
            raise ValueError(
                "MambaVLProcessor: give `tokenizer` and `questions`, or install the mambavl package (it ships the "
                "default question tokenizer and questions); to use a checkpoint's processor, load it with "
                "AutoProcessor.from_pretrained(<checkpoint>, trust_remote_code=True)"
            )
        tokenizer = tokenizer if tokenizer is not None else default_question_tokenizer()
        self.question_types = list(check_question_types(question_types))
        self.questions = list(questions) if questions is not None else default_questions(self.question_types)
        if len(self.questions) != len(self.question_types):
            raise ValueError(
                f"questions has {len(self.questions)} entries for question_types {self.question_types}; give one each"
            )
        if max_length is not None and int(max_length) < 1:
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        self.max_length = int(max_length) if max_length is not None else None
        if question_pool is not None and check_question_pool is not None:
            question_pool = check_question_pool(question_pool, "MambaVLProcessor(question_pool=...)")
        self.question_pool = question_pool
        super().__init__(video_processor, tokenizer, **kwargs)
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                f"the tokenizer {type(self.tokenizer).__name__} has no pad token; set one (e.g. tokenizer.pad_token = "
                "tokenizer.eos_token) before building the processor"
            )
        self._share_default_questions()

    @classmethod
    def from_config(cls, config: Any, *, tokenizer: Any = None, max_length: int | None = None,
                    **video_kwargs: Any) -> MambaVLProcessor:
        """The processor that fits a model config: its video processor makes the clips ``config`` takes
        (``num_frames`` frames, crops of ``image_size``, ``image_mean`` / ``image_std``) and it asks
        ``config.question_types`` questions.

        Args:
            config: a ``MambaVLConfig`` (or a model's ``config``).
            tokenizer: a tokenizer object, or a name / folder for ``AutoTokenizer``; default: the package's question
                tokenizer (the authors used RoBERTa-base's: ``tokenizer="FacebookAI/roberta-base"``).
            max_length: pad / truncate questions to this many tokens (default: the batch's longest).
            video_kwargs: more ``MambaVLVideoProcessor`` settings (``sampling="dense"``, ``rand_augment``, ...),
                overriding those taken from ``config``.
        """
        settings: dict[str, Any] = {"num_frames": config.num_frames}
        if getattr(config, "image_size", None):
            settings["size"] = {"shortest_edge": int(config.image_size)}
            settings["crop_size"] = {"height": int(config.image_size), "width": int(config.image_size)}
        for key in ("image_mean", "image_std"):
            if getattr(config, key, None):
                settings[key] = list(getattr(config, key))
        settings.update({k: v for k, v in video_kwargs.items() if v is not None})
        if isinstance(tokenizer, (str, os.PathLike)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
        return cls(MambaVLVideoProcessor(**settings), tokenizer, question_types=tuple(config.question_types),
                   max_length=max_length)

    def _share_default_questions(self) -> None:
        # pipeline("video-classification") loads only the video processor and passes its whole output to the model:
        # the video processor carries the default questions as this processor's tokenizer makes them.
        defaults = self.default_question_inputs()
        self.video_processor.default_question_input_ids = defaults["default_question_input_ids"]
        self.video_processor.default_question_attention_mask = defaults["default_question_attention_mask"]

    @property
    def mask_token(self) -> str:
        """The tokenizer's mask token (what ``mask_answer`` should insert), ``"[MASK]"`` if it has none."""
        return getattr(self.tokenizer, "mask_token", None) or "[MASK]"

    # --------------------------------------------------------------------------------------------------- questions
    def _question_rows(self, questions: Any, batch: int) -> list[list[str]]:
        q = len(self.question_types)
        if questions is None:
            return [list(self.questions) for _ in range(batch)]
        if isinstance(questions, str):
            raise ValueError(f"questions must be {q} strings (one per question type {self.question_types}) or one such list per video")
        questions = list(questions)
        if questions and all(isinstance(x, str) for x in questions):
            if len(questions) != q:
                raise ValueError(f"got {len(questions)} questions; give {q}, one per question type {self.question_types}")
            return [list(questions) for _ in range(batch)]
        if len(questions) != batch:
            raise ValueError(f"got questions for {len(questions)} videos and {batch} videos; give one list each")
        rows = []
        for b, row in enumerate(questions):
            if isinstance(row, str) or len(row) != q or not all(isinstance(x, str) for x in row):
                raise ValueError(f"questions[{b}] must be {q} strings, one per question type {self.question_types}")
            rows.append(list(row))
        return rows

    @staticmethod
    def _check_not_empty(rows: list[list[str]]) -> None:
        # An empty question has no tokens with some tokenizers (no special tokens), and never says anything.
        for b, row in enumerate(rows):
            for i, text in enumerate(row):
                if not text.strip():
                    raise ValueError(f"questions[{b}][{i}]: empty question {text!r}; give text, or questions=None for "
                                     "the default questions")

    def _length_limit(self) -> int | None:
        """The tokenizer's ``model_max_length`` (the text model's positions), unless it is transformers' "no limit"."""
        limit = getattr(self.tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else None

    def tokenize_questions(
        self, questions: Sequence[Sequence[str]], max_length: int | None = None, return_tensors: str | None = "pt"
    ) -> dict[str, Any]:
        """Tokenize ``B`` rows of ``Q`` questions into ``question_input_ids`` / ``question_attention_mask`` (B, Q, L).

        Right padding to the longest question of the batch, or to ``max_length`` (truncating) if given. Without
        ``max_length``, questions longer than the tokenizer's ``model_max_length`` (the text model's positions) are
        truncated to it, with one warning. Empty questions raise ``ValueError``.
        """
        rows = [list(r) for r in questions]
        if not rows:
            raise ValueError("questions: no rows to tokenize (an empty batch); give one row of questions per video")
        self._check_not_empty(rows)
        q = len(rows[0]) if rows else 0
        flat = [text for row in rows for text in row]
        max_length = max_length if max_length is not None else self.max_length
        limit = self._length_limit() if max_length is None else None
        encoded = self.tokenizer(
            flat,
            padding="max_length" if max_length is not None else "longest",
            truncation=max_length is not None or limit is not None,
            max_length=max_length if max_length is not None else limit,
            padding_side="right",
            return_attention_mask=True,
            return_token_type_ids=False,
        )
        if limit is not None and any(e.overflowing for e in (getattr(encoded, "encodings", None) or ())):
            logger.warning_once(
                f"MambaVLProcessor: questions longer than the tokenizer's model_max_length ({limit} tokens, the text "
                "model's positions) were truncated to it; pass max_length= to choose the length"
            )
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        ids = [ids[i * q : (i + 1) * q] for i in range(len(rows))]
        mask = [mask[i * q : (i + 1) * q] for i in range(len(rows))]
        if return_tensors == "pt":
            return {"question_input_ids": torch.tensor(ids, dtype=torch.long),
                    "question_attention_mask": torch.tensor(mask, dtype=torch.long)}
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        return {"question_input_ids": ids, "question_attention_mask": mask}

    def default_question_inputs(self, max_length: int | None = None) -> dict[str, list[list[int]]]:
        """The default questions tokenized, one row per question type, as lists (for ``MambaVLConfig``).

        Returns ``{"default_question_input_ids": [[...], ...], "default_question_attention_mask": [[...], ...]}``,
        right-padded to the longest default question (or ``max_length``): ``config.update(...)`` writes them when a
        model and its processor are saved together.
        """
        out = self.tokenize_questions([self.questions], max_length=max_length, return_tensors=None)
        return {
            "default_question_input_ids": [list(map(int, r)) for r in out["question_input_ids"][0]],
            "default_question_attention_mask": [list(map(int, r)) for r in out["question_attention_mask"][0]],
        }

    def check_model_config(self, config: Any, source: str | os.PathLike | None = None, *, questions: bool = True,
                           video: bool = True) -> None:
        """Raise ``ValueError`` where this processor does not make the inputs ``config``'s model takes: the one check
        of a model against its processor (the loader, the Hub helpers and the training and evaluation scripts call
        it), so that a mismatch is named at load time instead of surfacing as a shape error or wrong questions.

        Args:
            config: the model's config.
            source: where this processor was saved, named in the error.
            questions: check ``config.question_types`` and, when the config holds them, its
                ``default_question_input_ids`` (this processor's default questions tokenized by its tokenizer).
            video: check the frames per clip (``config.num_frames``) and the crop size (``config.image_size``); off
                for pre-extracted features, which the video processor never sees.
        """
        if questions:
            self._check_questions_fit(config)
        if video and getattr(self, "video_processor", None) is not None:
            self._check_video_fits(config, source)

    def sync_model_config(self, config: Any) -> None:
        """``check_model_config(config, video=False)``, then write this processor's default question ids into
        ``config`` when it has none (a model saved without its processor), so that ``model(pixel_values=...)`` and
        ``pipeline("video-classification")`` ask this processor's default questions."""
        self.check_model_config(config, video=False)
        if getattr(config, "default_question_input_ids", None) is None:
            config.update(self.default_question_inputs())

    def _check_questions_fit(self, config: Any) -> None:
        types = getattr(config, "question_types", None)
        if types is not None and list(types) != self.question_types:
            raise ValueError(
                f"the config's question_types {list(types)} differ from the processor's {self.question_types}"
            )
        saved = getattr(config, "default_question_input_ids", None)
        if not saved:
            return
        saved = [list(map(int, r)) for r in saved]
        length = max(len(r) for r in saved)
        ours = self.default_question_inputs(max_length=length if self.max_length is None else None)
        if ours["default_question_input_ids"] != saved:
            raise ValueError(
                "the config's default_question_input_ids do not match the processor's default questions "
                f"{self.questions} tokenized by {type(self.tokenizer).__name__}: the checkpoint was saved with another "
                "tokenizer or other default questions; load the processor saved with the model"
            )

    def _check_video_fits(self, config: Any, source: str | os.PathLike | None) -> None:
        video = self.video_processor
        where = f"the processor saved with {source} (processor_config.json)" if source is not None else "the processor"
        frames = getattr(config, "num_frames", None)
        if frames and getattr(video, "num_frames", frames) != frames:
            raise ValueError(
                f"{where} samples num_frames={video.num_frames} frames per clip but the model's config has "
                f"num_frames={frames}: save the processor made for this model (MambaVLProcessor.from_config(config)"
                ".save_pretrained(folder)), or set the same num_frames in both files"
            )
        size = getattr(config, "image_size", None)
        crop = getattr(video, "crop_size", None) or {}
        if size and crop and (crop.get("height"), crop.get("width")) != (size, size):
            raise ValueError(
                f"{where} crops frames to {crop.get('height')}x{crop.get('width')} but the model's config has "
                f"image_size={size}: save the processor made for this model (MambaVLProcessor.from_config(config)"
                f".save_pretrained(folder)), or set crop_size to {{'height': {size}, 'width': {size}}}"
            )

    # ------------------------------------------------------------------------------------------------------ saving
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any):
        """Save the processor (``processor_config.json`` with the video processor's settings, the tokenizer files)
        together with the checkpoint's flat code bundle, and point ``auto_map`` at it: ``AutoProcessor`` in the
        processor's config, ``AutoVideoProcessor`` in the video processor's, so both load with
        ``trust_remote_code=True`` where only transformers is installed."""
        os.makedirs(save_directory, exist_ok=True)
        self._share_default_questions()  # questions, tokenizer or max_length may have changed since __init__
        auto_map = save_code_bundle(save_directory)
        for owner, auto_class in ((self, "AutoProcessor"), (self.video_processor, "AutoVideoProcessor")):
            if auto_class in auto_map:
                owner.auto_map = {auto_class: auto_map[auto_class]}
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """``ProcessorMixin.from_pretrained``; a local folder whose tokenizer cannot be loaded because its files are
        missing gets an error naming them (transformers' own names a slow-tokenizer conversion instead)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (OSError, ValueError) as e:
            folder = os.fspath(pretrained_model_name_or_path)
            folder = os.path.join(folder, kwargs["subfolder"]) if kwargs.get("subfolder") else folder
            if not os.path.isdir(folder):
                raise
            missing = [name for name in _TOKENIZER_FILES if not os.path.isfile(os.path.join(folder, name))]
            if not missing:
                raise
            raise OSError(
                f"{folder}: the processor's tokenizer files are missing ({', '.join(missing)}); save the processor "
                "with its tokenizer (processor.save_pretrained(folder)) or copy the tokenizer's files there "
                "(tokenizer.save_pretrained(folder))"
            ) from e

    # -------------------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        videos: Any = None,
        questions: Any = None,
        *,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **video_kwargs: Any,
    ) -> BatchFeature:
        """Process a batch of clips and their questions.

        Args:
            videos: anything ``MambaVLVideoProcessor`` takes (paths, frame folders, arrays, lists of images; one or
                a list), or ``None`` for questions only.
            questions: ``None`` (the default questions), ``Q`` strings for every video, or one list of ``Q``
                strings per video.
            max_length: pad / truncate questions to this length (default: the processor's ``max_length``, else the
                batch's longest question).
            return_tensors: ``"pt"`` (default) or ``None`` (nested lists).
            **video_kwargs: passed to the video processor (``windows``, ``num_frames``, ``training``, ``seed``,
                ``epoch``, ``indices``, ``sampling``, ...).

        Returns:
            ``BatchFeature`` with ``pixel_values`` (B, T, C, H, W) when videos are given, ``question_input_ids`` and
            ``question_attention_mask`` (B, Q, L).
        """
        data: dict[str, Any] = {}
        batch = None
        if videos is not None:
            video_out = self.video_processor(videos, return_tensors=return_tensors, **video_kwargs)
            data.update(video_out)
            pixel_values = video_out["pixel_values"]
            batch = len(pixel_values)
        elif video_kwargs:
            raise ValueError(f"video arguments {sorted(video_kwargs)} given without videos")
        if batch is None:
            batch = 1 if questions is None or all(isinstance(x, str) for x in questions) else len(questions)
        rows = self._question_rows(questions, batch)
        data.update(self.tokenize_questions(rows, max_length=max_length, return_tensors=return_tensors))
        return BatchFeature(data=data, skip_tensor_conversion=["video_metadata"])


def register_auto_classes(config_class: type) -> None:
    """Register ``MambaVLVideoProcessor`` with ``AutoVideoProcessor`` and ``MambaVLProcessor`` with ``AutoProcessor``
    for ``config_class`` (``MambaVLConfig``), so that ``AutoProcessor.from_pretrained(folder)`` finds them."""
    from transformers import AutoProcessor, AutoVideoProcessor

    AutoVideoProcessor.register(config_class, MambaVLVideoProcessor, exist_ok=True)
    AutoProcessor.register(config_class, MambaVLProcessor, exist_ok=True)
