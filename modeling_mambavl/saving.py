"""Save and load a MambaVL model together with its processor.

A model answers the default questions without being given any (``config.default_question_input_ids``), so those ids
must be the ones the saved processor's tokenizer makes: ``save_model_and_processor`` writes
``processor.default_question_inputs()`` into the config before saving both, and ``load_model_and_processor`` refuses a
folder whose model and processor disagree (``processor.check_default_questions``).

PEFT (LoRA) models are saved as their adapters (``adapter_config.json`` + ``adapter_model.safetensors``, holding the
LoRA matrices and the ``modules_to_save`` copies) beside the processor; loading one needs its base model
(``base_model_name_or_path`` in the adapter config, or ``base_model=``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["load_model_and_processor", "save_model_and_processor"]


def _unwrap_peft(model: Any) -> tuple[Any, bool]:
    """(the transformers model inside, whether ``model`` is a PEFT model)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return model, False
    if isinstance(model, PeftModel):
        return model.get_base_model(), True
    return model, False


def save_model_and_processor(
    model: Any, processor: Any, save_directory: str | os.PathLike, *, safe_serialization: bool = True, **kwargs: Any
) -> Path:
    """Write the processor's default question ids into ``model.config``, then ``save_pretrained`` both.

    Args:
        model: a ``MambaVLForVideoClassification`` (or ``MambaVLModel``), or a PEFT model wrapping one (only its
            adapters and ``modules_to_save`` are written, as PEFT does).
        processor: the ``MambaVLProcessor`` whose tokenizer made (or will make) the model's questions.
        save_directory: the folder; created if needed.
        kwargs: passed to the model's ``save_pretrained`` (``max_shard_size``, ...).
    """
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    base, _ = _unwrap_peft(model)
    config = base.config
    types = list(getattr(config, "question_types", ()) or ())
    if types and list(processor.question_types) != types:
        raise ValueError(
            f"save_model_and_processor: the processor asks {list(processor.question_types)} questions but the model "
            f"expects {types}; build the processor with question_types={tuple(types)}"
        )
    defaults = processor.default_question_inputs()
    config.default_question_input_ids = defaults["default_question_input_ids"]
    config.default_question_attention_mask = defaults["default_question_attention_mask"]
    # A PEFT model writes its adapters only; its base model is saved (with these defaults) where
    # base_model_name_or_path points.
    model.save_pretrained(str(save_directory), safe_serialization=safe_serialization, **kwargs)
    processor.save_pretrained(str(save_directory))
    return save_directory


def load_model_and_processor(
    path: str | os.PathLike,
    *,
    model_class: Any = None,
    base_model: Any = None,
    merge_adapters: bool = False,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """Load a folder (or Hub repository) written by :func:`save_model_and_processor`.

    Args:
        path: the folder or repository id.
        model_class: default ``AutoModelForVideoClassification``.
        base_model: for an adapter folder, the base model (a loaded model or a path); default: the adapter config's
            ``base_model_name_or_path``.
        merge_adapters: return the adapters merged into the base weights (``merge_and_unload``).
        kwargs: passed to ``from_pretrained`` (``dtype``, ``revision``, ...).

    Raises:
        ValueError: the model's default question ids were not made by the processor saved with it.
    """
    from transformers import AutoModelForVideoClassification, AutoProcessor

    model_class = model_class or AutoModelForVideoClassification
    processor = AutoProcessor.from_pretrained(str(path), **{k: v for k, v in kwargs.items() if k == "revision"})
    local = Path(path)
    adapter_config = local / "adapter_config.json"
    if adapter_config.is_file():
        from peft import PeftModel

        if base_model is None:
            base_model = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
            if not base_model:
                raise ValueError(f"{adapter_config}: no base_model_name_or_path; pass base_model=")
        if not hasattr(base_model, "config"):
            base_model = model_class.from_pretrained(str(base_model), **kwargs)
        model = PeftModel.from_pretrained(base_model, str(path))
        if merge_adapters:
            model = model.merge_and_unload()
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    else:
        model = model_class.from_pretrained(str(path), **kwargs)
        config = model.config
    processor.check_default_questions(config)
    return model, processor
