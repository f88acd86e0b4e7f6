"""Pushing MambaVL checkpoints to the Hugging Face Hub and loading them back.

``push_to_hub(model, processor, repo_id, metrics=..., example_video=...)`` uploads the weights and config (with the
flat code bundle and ``auto_map``), ``metrics.json``, the example clip and the model card, then the processor, and last
the card again (transformers' processor push re-writes the remote README). A model's own ``model.push_to_hub(repo_id)``
uploads the same card (:func:`push_model_with_card`, shared by both), so the Hub never shows transformers' empty
template. Loading is transformers'
own: ``AutoModelForVideoClassification.from_pretrained(repo_id, revision=..., trust_remote_code=True)`` and
``AutoProcessor.from_pretrained(...)``, also from the local cache with ``HF_HUB_OFFLINE=1``;
:func:`modeling_mambavl.saving.load_model_and_processor` does both.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitInfo, HfApi, ModelCard, constants

from .model_card import DEFAULT_SPACE, load_metrics, make_model_card, metrics_json_text
from .pipelines import top_k_labels
from .saving import load_model_and_processor

__all__ = ["push_to_hub", "push_model_with_card", "hub_card", "write_model_card", "example_predictions"]

EXAMPLES_DIR = "examples"


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


def _source_folder(model: Any) -> Path | None:
    """The local checkpoint folder the model was loaded from, if any (where its metrics.json and example clip live)."""
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return Path(name) if name and Path(name).is_dir() else None


def _saved_example(folder: Path | None) -> Path | None:
    """The example clip saved with a checkpoint (``examples/<clip>``, the first video file by name), or ``None``."""
    if folder is None or not (folder / EXAMPLES_DIR).is_dir():
        return None
    clips = sorted(p for p in (folder / EXAMPLES_DIR).iterdir()
                   if p.is_file() and p.suffix.lower() in (".mp4", ".webm", ".mkv", ".mov", ".avi"))
    return clips[0] if clips else None


def hub_card(
    model: Any,
    repo_id: str,
    *,
    processor: Any = None,
    metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    example_video: str | os.PathLike | None = None,
    revision: str | None = None,
    space_id: str | None = DEFAULT_SPACE,
    tags: Sequence[str] | None = None,
    **card_kwargs: Any,
) -> tuple[ModelCard, dict[str, str | bytes]]:
    """The model card a push uploads and the files it refers to (``metrics.json``, ``examples/<clip>``).

    ``metrics`` and ``example_video`` default to what the folder the model was loaded from records (its
    ``metrics.json`` and ``examples/`` clip). The widget's output is the model's top-5 on the clip; it needs the
    processor (default: the one saved in that folder). Returns ``(card, {path in repo: local path or bytes})``.
    """
    source = _source_folder(model)
    if metrics is None and source is not None and (source / "metrics.json").is_file():
        metrics = source / "metrics.json"
    if example_video is None:
        example_video = _saved_example(source)
    metrics = load_metrics(metrics)
    files: dict[str, str | bytes] = {}
    widget: dict[str, Any] = {}
    if metrics is not None:
        files["metrics.json"] = metrics_json_text(metrics).encode()
    if example_video is not None:
        video = Path(example_video)
        if processor is None:
            from transformers import AutoProcessor

            if source is None:
                raise ValueError(f"example_video={video}: give the processor too (the model was not loaded from a "
                                 "folder holding one)")
            processor = AutoProcessor.from_pretrained(source)
        files[f"{EXAMPLES_DIR}/{video.name}"] = str(video)
        widget = {"example_video_url": _widget_url(repo_id, revision, video.name),
                  "example_output": example_predictions(model, processor, video)}
    card = make_model_card(model, metrics, repo_id=repo_id, space_id=space_id, **widget, **card_kwargs)
    for tag in tags or ():
        if tag not in card.data.tags:
            card.data.tags.append(tag)
    return card, files


def push_model_with_card(
    model: Any,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str | None = "50GB",
    card: ModelCard | None = None,
    card_files: Mapping[str, str | bytes] | None = None,
    **card_options: Any,
) -> CommitInfo:
    """What a MambaVL model's ``push_to_hub()`` does: transformers' push (``save_pretrained`` into a temporary
    folder, one commit), with the package's model card as ``README.md`` instead of the remote card or transformers'
    empty template, and the files the card refers to (``metrics.json``, the example clip).

    ``card_options`` go to :func:`hub_card` (``processor``, ``metrics``, ``example_video``, ``space_id``, ``tags``,
    ``license``, ...) unless ``card`` and ``card_files`` are given. Returns the commit.
    """
    import tempfile

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if card is None:
        card, card_files = hub_card(model, repo_id, revision=revision, **card_options)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, max_shard_size=max_shard_size)
        for path_in_repo, content in (card_files or {}).items():
            target = Path(tmp, path_in_repo)
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                shutil.copyfile(content, target)
        card.save(Path(tmp, "README.md"))
        if revision is not None and not revision.startswith("refs/pr"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, create_pr=create_pr,
                                 commit_message=commit_message or "Upload model",
                                 commit_description=commit_description)


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

    Order: (1) the model's own ``push_to_hub`` (:func:`push_model_with_card`) — weights, ``config.json`` with the
    default question ids and ``auto_map``, the code bundle, ``metrics.json``, the example clip (``examples/<name>``) and
    the card; (2) ``processor.push_to_hub``; (3) the same card again with ``upload_file``, last, because transformers'
    processor push re-writes the remote README through ``ModelCardData``. ``metrics`` and ``example_video`` default to
    those of the folder the model was loaded from. ``revision`` pushes to that branch (created from ``main`` if
    missing). ``card_kwargs`` go to ``make_model_card`` (``license``, ``model_name``, ``base_models``, ...).
    """
    processor.sync_model_config(model.config)
    message = commit_message or "Upload MambaVL model"
    repo_id = HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id
    card, files = hub_card(model, repo_id, processor=processor, metrics=metrics, example_video=example_video,
                           revision=revision, space_id=space_id, tags=tags, **card_kwargs)
    model.push_to_hub(repo_id, revision=revision, private=private, token=token, commit_message=message, card=card,
                      card_files=files)
    processor.push_to_hub(repo_id, revision=revision, token=token, commit_message=f"{message}: processor")
    return HfApi(token=token).upload_file(path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md",
                                          repo_id=repo_id, revision=revision, commit_message=f"{message}: model card")
