"""Pushing MambaVL checkpoints to the Hugging Face Hub and loading them back.

``push_to_hub(model, processor, repo_id, metrics=..., example_video=...)`` uploads the weights and config (with the
flat code bundle and ``auto_map``), then the processor, then the example clip and ``metrics.json``, and last the model
card (``upload_file`` after the weights, so transformers' default card never replaces it). Loading is transformers'
own: ``AutoModelForVideoClassification.from_pretrained(repo_id, revision=..., trust_remote_code=True)`` and
``AutoProcessor.from_pretrained(...)``, also from the local cache with ``HF_HUB_OFFLINE=1``;
:func:`modeling_mambavl.saving.load_model_and_processor` does both.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, constants

from .model_card import DEFAULT_SPACE, load_metrics, make_model_card
from .pipelines import top_k_labels
from .saving import load_model_and_processor

__all__ = ["push_to_hub", "write_model_card", "example_predictions", "sync_default_questions"]

EXAMPLES_DIR = "examples"


def sync_default_questions(config: Any, processor: Any) -> None:
    """Make ``config``'s default question ids the processor's default questions (writing them if absent).

    The ``video-classification`` pipeline gives the model no questions, so the model falls back to
    ``config.default_question_input_ids``; they must be the processor's defaults tokenized by its tokenizer.
    Raises ``ValueError`` (from ``check_default_questions``) when the config holds other ids.
    """
    if getattr(config, "question_types", None) is None or not hasattr(processor, "default_question_inputs"):
        return
    if getattr(config, "default_question_input_ids", None) is None:
        config.update(processor.default_question_inputs())
    else:
        processor.check_default_questions(config)


@torch.no_grad()
def example_predictions(model: Any, processor: Any, video: str | os.PathLike, top_k: int = 5) -> list[dict[str, Any]]:
    """The model's top-k actions on a clip with the default questions, as ``pipeline("video-classification")``
    returns them (softmax of ``logits``): the static ``output`` of a card's widget."""
    inputs = processor(videos=[os.fspath(video)], return_tensors="pt")
    device = next(model.parameters()).device
    outputs = model(**{k: v.to(device) for k, v in inputs.items()})
    return top_k_labels(outputs.logits[0], model.config.id2label, top_k)


def _widget_url(repo_id: str, revision: str | None, filename: str) -> str:
    return f"{constants.ENDPOINT}/{repo_id}/resolve/{revision or constants.DEFAULT_REVISION}/{EXAMPLES_DIR}/{filename}"


def write_model_card(
    checkpoint_dir: str | os.PathLike,
    *,
    repo_id: str | None = None,
    metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    example_video: str | os.PathLike | None = None,
    space_id: str | None = DEFAULT_SPACE,
    **card_kwargs: Any,
) -> Path:
    """Write (or refresh) ``README.md`` of a saved checkpoint folder; return its path.

    ``metrics`` defaults to the folder's ``metrics.json`` when there is one. With ``example_video`` the clip is copied
    to ``examples/`` in the folder and the widget shows the model's top-5 on it (the model is loaded to compute them).
    ``repo_id`` (default: the folder's name) is what the usage code loads.
    """
    folder = Path(checkpoint_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json; give a folder written by save_pretrained")
    if metrics is None and (folder / "metrics.json").is_file():
        metrics = folder / "metrics.json"
    repo_id = repo_id or f"<namespace>/{folder.resolve().name}"
    model, processor = load_model_and_processor(folder) if example_video is not None else (None, None)
    if model is None:
        from transformers import AutoConfig

        model_or_config = AutoConfig.from_pretrained(folder)
    else:
        model_or_config = model
    widget: dict[str, Any] = {}
    if example_video is not None:
        video = Path(example_video)
        (folder / EXAMPLES_DIR).mkdir(exist_ok=True)
        if video.resolve() != (folder / EXAMPLES_DIR / video.name).resolve():
            shutil.copyfile(video, folder / EXAMPLES_DIR / video.name)
        widget = {"example_video_url": _widget_url(repo_id, None, video.name),
                  "example_output": example_predictions(model, processor, video)}
    card = make_model_card(model_or_config, metrics, repo_id=repo_id, space_id=space_id, **widget, **card_kwargs)
    path = folder / "README.md"
    card.save(path)
    return path


def push_to_hub(
    model: Any,
    processor: Any,
    repo_id: str,
    *,
    metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    example_video: str | os.PathLike | None = None,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    space_id: str | None = DEFAULT_SPACE,
    tags: Sequence[str] | None = None,
    **card_kwargs: Any,
) -> CommitInfo:
    """Push a model, its processor and its model card to ``repo_id`` (created if needed); return the card's commit.

    Order: (1) ``model.push_to_hub`` — weights, ``config.json`` with the default question ids and ``auto_map``, the
    code bundle; (2) ``processor.push_to_hub``; (3) ``metrics.json`` and the example clip (``examples/<name>``);
    (4) ``README.md`` from :func:`~modeling_mambavl.model_card.make_model_card` with ``upload_file``, last, so that the
    default cards transformers writes in (1) and (2) are replaced. ``revision`` pushes to that branch (created from
    ``main`` if missing). ``card_kwargs`` go to ``make_model_card`` (``license``, ``model_name``, ``base_models``, ...).
    """
    sync_default_questions(model.config, processor)
    metrics = load_metrics(metrics)
    message = commit_message or "Upload MambaVL model"
    model.push_to_hub(repo_id, revision=revision, private=private, token=token, commit_message=message,
                      **({"tags": list(tags)} if tags else {}))
    processor.push_to_hub(repo_id, revision=revision, token=token, commit_message=f"{message}: processor")

    api = HfApi(token=token)
    operations = []
    widget: dict[str, Any] = {}
    if metrics is not None:
        operations.append(CommitOperationAdd("metrics.json", (json.dumps(metrics, indent=2) + "\n").encode()))
    if example_video is not None:
        video = Path(example_video)
        operations.append(CommitOperationAdd(f"{EXAMPLES_DIR}/{video.name}", str(video)))
        widget = {"example_video_url": _widget_url(repo_id, revision, video.name),
                  "example_output": example_predictions(model, processor, video)}
    if operations:
        api.create_commit(repo_id, operations, commit_message=f"{message}: evaluation and example clip",
                          revision=revision)
    card: ModelCard = make_model_card(model, metrics, repo_id=repo_id, space_id=space_id, **widget, **card_kwargs)
    return api.upload_file(path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                           revision=revision, commit_message=f"{message}: model card")
