"""Saving and loading a MambaVL model together with its processor.

Saving is transformers' own: ``model.save_pretrained(folder)`` and ``processor.save_pretrained(folder)``, in either
order, make a complete checkpoint (weights, config, code bundle; the processor's tokenizer and its default question
ids, which its video processor hands to ``pipeline("video-classification")``). :func:`save_model_and_processor`
only calls those two.

Loading is :func:`load_model_and_processor`, the one loader of the CLI, the scripts and the Hub helpers: the model
(or a PEFT adapter folder on its base model) and the processor saved with it, with ``revision=`` and ``device=``.
It refuses a checkpoint whose weights file lacks any of the model's persistent ``state_dict()`` tensors, naming them
(transformers would initialise them at random and only log it); non-persistent buffers, which the model derives from
its config, are never in a weights file and are not asked for.

PEFT (LoRA) models are saved as their adapters (``adapter_config.json`` + ``adapter_model.safetensors``, holding the
LoRA matrices and the ``modules_to_save`` copies) beside the processor; loading one needs its base model
(``base_model_name_or_path`` in the adapter config, or ``base_model=``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["IncompleteCheckpointError", "load_model_and_processor", "save_model_and_processor"]

# from_pretrained arguments that say where to find files: they go to the processor too.
_HUB_KWARGS = ("token", "cache_dir", "local_files_only", "force_download", "proxies", "subfolder")


class IncompleteCheckpointError(ValueError):
    """A checkpoint's weights lack tensors of the model: ``.missing_keys`` lists them."""

    def __init__(self, path: str, missing_keys: list[str]) -> None:
        self.path, self.missing_keys = path, sorted(missing_keys)
        shown = ", ".join(self.missing_keys[:10]) + (f" and {len(self.missing_keys) - 10} more"
                                                      if len(self.missing_keys) > 10 else "")
        super().__init__(
            f"{path}: the weights lack {len(self.missing_keys)} tensor(s) of the model: {shown}. The checkpoint is "
            "incomplete (a truncated or edited weights file, or weights saved from another model); save the model "
            "again with model.save_pretrained(folder). To fine-tune from a partial checkpoint on purpose, load it "
            "with from_pretrained, which initialises the missing tensors."
        )


def save_model_and_processor(model: Any, processor: Any, save_directory: str | os.PathLike, **kwargs: Any) -> Path:
    """``model.save_pretrained(save_directory, **kwargs)`` then ``processor.save_pretrained(save_directory)``.

    Nothing else: the two ``save_pretrained`` calls alone, in either order, make a complete checkpoint. A PEFT model
    writes only its adapters and ``modules_to_save`` copies, as PEFT does.
    """
    save_directory = Path(save_directory)
    model.save_pretrained(str(save_directory), **kwargs)
    processor.save_pretrained(str(save_directory))
    return save_directory


def _adapter_config(path: str, revision: str | None, hub_kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """The PEFT ``adapter_config.json`` of a folder or Hub repo, or ``None``."""
    from transformers.utils import find_adapter_config_file

    found = find_adapter_config_file(path, revision=revision, **hub_kwargs)
    if found is None:
        return None
    return json.loads(Path(found).read_text(encoding="utf-8"))


def _load_complete(model_class: Any, path: str, **kwargs: Any) -> Any:
    """``model_class.from_pretrained(path)``, refusing weights that lack any persistent tensor of the model."""
    model, info = model_class.from_pretrained(path, output_loading_info=True, **kwargs)
    if info["missing_keys"]:
        raise IncompleteCheckpointError(path, list(info["missing_keys"]))
    return model


def load_model_and_processor(
    model_id_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    device: str | torch.device | None = None,
    base_model: Any = None,
    merge_adapters: bool = False,
    model_class: Any = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """The model (in eval mode) and the processor saved with it, from a folder or a Hub repository.

    Args:
        model_id_or_path: a folder written by ``save_pretrained`` (model and processor) or a repo id.
        revision: a tag, branch or commit of a Hub repository (used for the model, the processor and adapters).
        device: move the model there (``"cuda"``, ``"cpu"``, a ``torch.device``); default: where it loads.
        base_model: for an adapter folder, the base model (a loaded model, a folder or a repo id); default: the
            adapter config's ``base_model_name_or_path``.
        merge_adapters: return the adapters merged into the base weights (``merge_and_unload``).
        model_class: default ``AutoModelForVideoClassification``.
        kwargs: passed to the model's ``from_pretrained`` (``dtype``, ``use_safetensors``, ...); ``token``,
            ``cache_dir``, ``local_files_only``, ``force_download``, ``proxies`` and ``subfolder`` to the processor's
            too. The package is imported, so no remote code runs.

    Returns:
        ``(model, processor)``. When the config holds no default question ids (a plain ``save_pretrained``), they
        are set from the processor, so ``model(pixel_values=...)`` asks the processor's default questions.

    Raises:
        IncompleteCheckpointError: the weights lack tensors of the model (named).
        ValueError: the config's default question ids or question types were not made by the saved processor.
    """
    from transformers import AutoModelForVideoClassification, AutoProcessor

    path = os.fspath(model_id_or_path)
    model_class = model_class or AutoModelForVideoClassification
    hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    processor = AutoProcessor.from_pretrained(path, revision=revision, **hub_kwargs)
    adapter = _adapter_config(path, revision, {k: v for k, v in hub_kwargs.items() if k != "proxies"})
    if adapter is not None:
        try:
            from peft import PeftModel
        except ModuleNotFoundError as e:
            from .lazy_imports import missing_extra

            raise missing_extra(e, f"{path} (a PEFT adapter folder)") from e

        if base_model is None:
            base_model = adapter.get("base_model_name_or_path")
            if not base_model:
                raise ValueError(f"{path}/adapter_config.json: no base_model_name_or_path; pass base_model=")
        if not hasattr(base_model, "config"):
            base_model = _load_complete(model_class, os.fspath(base_model), **kwargs)
        model = PeftModel.from_pretrained(base_model, path, revision=revision, **hub_kwargs)
        if merge_adapters:
            model = model.merge_and_unload()
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    else:
        model = _load_complete(model_class, path, revision=revision, **kwargs)
        config = model.config
    processor.sync_model_config(config)
    if device is not None:
        model = model.to(device)
    return model.eval(), processor
