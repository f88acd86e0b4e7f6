"""The ``video-question-classification`` pipeline task: a clip and the user's questions in, the top-k verbs, nouns and
actions out.

``pipeline("video-classification", model=...)`` already works with MambaVL checkpoints: it loads only the video
processor, which also returns the default questions as the tokenizer saved with the model makes them. This task loads
the whole processor (``_load_processor = True``), so the questions can be given per call. Importing
``modeling_mambavl`` registers it; without the package, a saved checkpoint names this file (``pipeline_mambavl.py`` of
its code bundle) in ``config.json``'s ``custom_pipelines``, so ``pipeline(TASK, model=..., trust_remote_code=True)``
finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForVideoClassification
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

from .configuration.configuration_mambavl import PIPELINE_TASK

__all__ = ["VideoQuestionClassificationPipeline", "register_pipeline", "TASK", "top_k_labels"]

TASK = PIPELINE_TASK


def top_k_labels(logits: torch.Tensor, id2label: dict[int, str], top_k: int) -> list[dict[str, Any]]:
    """``[{"label", "score"}]`` of the ``top_k`` classes of one row of logits (scores: softmax probabilities)."""
    probs = logits.float().softmax(-1)
    scores, ids = probs.topk(min(top_k, probs.shape[-1]))
    return [{"label": id2label[int(i)], "score": float(s)} for s, i in zip(scores.tolist(), ids.tolist())]


class VideoQuestionClassificationPipeline(Pipeline):
    """Verb, noun and action top-k of a MambaVL model for a video and optional questions.

    Call: ``pipe(video, questions=None, top_k=5, window=None, num_frames=None)``

    - ``video``: a video file path, an EK100 frame folder, an array ``(T, H, W, 3)`` or a list of PIL images (with
      ``video_fps=`` for arrays and image lists); a list of these gives a list of results.
    - ``questions``: one string per question type of the model (``model.config.question_types``, e.g.
      ``["What is the person doing?", "Which object is used?"]``); ``None`` uses the processor's default questions.
    - ``window``: ``(start_sec, end_sec)`` of the clip inside the video; ``num_frames`` defaults to
      ``model.config.num_frames``.

    Returns ``{"verbs": [...], "nouns": [...], "actions": [...], "questions": [...]}`` (each list ``top_k`` dicts
    ``{"label", "score"}``, softmax scores; actions are ranked by the model's ``logits``, as the
    ``video-classification`` pipeline does). A single-head model (``question_types=("action",)``) returns
    ``"labels"`` instead of verbs / nouns / actions.
    """

    _load_processor = True
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(f"the {TASK} pipeline needs the model's MambaVLProcessor (processor_config.json)")

    def _sanitize_parameters(self, questions=None, top_k=None, window=None, num_frames=None, video_fps=None):
        preprocess = {k: v for k, v in (("questions", questions), ("window", window), ("num_frames", num_frames),
                                        ("video_fps", video_fps)) if v is not None}
        return preprocess, {}, ({"top_k": int(top_k)} if top_k is not None else {})

    def preprocess(self, video: Any, questions: Sequence[str] | None = None, window=None, num_frames=None,
                   video_fps=None) -> dict[str, Any]:
        if questions is not None:
            if isinstance(questions, str):
                questions = [questions]
            questions = [str(q) for q in questions]
            expected = list(getattr(self.model.config, "question_types", []))
            if expected and len(questions) != len(expected):
                raise ValueError(f"questions: give {len(expected)} strings, one per question type {expected}; "
                                 f"got {len(questions)}")
        video_kwargs: dict[str, Any] = {"num_frames": num_frames or self.model.config.num_frames}
        if window is not None:
            video_kwargs["windows"] = [tuple(window)]
        if video_fps is not None:
            video_kwargs["video_fps"] = video_fps
        inputs = self.processor(videos=[video], questions=questions, return_tensors="pt", **video_kwargs)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        used = questions if questions is not None else list(self.processor.questions)
        return {"model_inputs": dict(inputs), "questions": used}

    def _forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        outputs = self.model(**inputs["model_inputs"])
        return {"outputs": outputs, "questions": inputs["questions"]}

    def postprocess(self, forwarded: dict[str, Any], top_k: int = 5) -> dict[str, Any]:
        outputs, config = forwarded["outputs"], self.model.config
        result: dict[str, Any] = {}
        if getattr(outputs, "verb_logits", None) is not None:
            result["verbs"] = top_k_labels(outputs.verb_logits[0], config.verb_id2label, top_k)
            result["nouns"] = top_k_labels(outputs.noun_logits[0], config.noun_id2label, top_k)
            result["actions"] = top_k_labels(outputs.logits[0], config.id2label, top_k)
        else:
            result["labels"] = top_k_labels(outputs.logits[0], config.id2label, top_k)
        result["questions"] = list(forwarded["questions"])
        return result


def register_pipeline() -> None:
    """Register the ``video-question-classification`` task with transformers' pipeline registry (idempotent)."""
    if TASK in PIPELINE_REGISTRY.get_supported_tasks():
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=VideoQuestionClassificationPipeline, pt_model=AutoModelForVideoClassification,
        type="multimodal",
    )
