"""One training step's arithmetic, shared by the training script and its tests: model inputs from a batch, mixup,
and the verb + noun loss over the clips that could be read."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .losses import VerbNounLoss
from .mixup import mix_batch, one_hot_smoothed

__all__ = ["compute_loss", "model_inputs", "step_seed"]

_INPUT_KEYS = ("pixel_values", "video_features", "question_input_ids", "question_attention_mask")


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, epoch, batch, rank, ...): the same parts give the same seed in every
    run, so dropout and mixup in a resumed run repeat the uninterrupted run's draws."""
    digest = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's keyword arguments in a collated batch."""
    return {k: batch[k] for k in _INPUT_KEYS if k in batch}


def compute_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    loss_fn: VerbNounLoss,
    *,
    num_verbs: int,
    num_nouns: int,
    label_smoothing: float = 0.0,
    mixup: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Forward a training batch and return (loss, number of clips in the loss).

    The model runs on the whole batch (every process runs the same steps, whatever it could read); the loss is
    CE(verb) + CE(noun) over the clips with ``valid`` True, with label smoothing, and with mixup / CutMix of the
    videos and both targets by one lambda when ``mixup`` (``mix_batch`` arguments) is given. Questions are not mixed.
    """
    inputs = model_inputs(batch)
    valid = batch["valid"].bool()
    keep = valid.nonzero().flatten()
    verb_t = one_hot_smoothed(batch["verb_labels"][keep], num_verbs, label_smoothing)
    noun_t = one_hot_smoothed(batch["noun_labels"][keep], num_nouns, label_smoothing)
    if mixup is not None and len(keep) >= 2:
        if generator is None:
            raise ValueError("compute_loss: mixup needs a seeded generator")
        key = "pixel_values" if "pixel_values" in inputs else "video_features"
        videos = inputs[key]
        mixed, (verb_t, noun_t), _ = mix_batch(videos[keep], [verb_t, noun_t], generator, **mixup)
        videos = videos.clone()
        videos[keep] = mixed.to(videos.dtype)
        inputs[key] = videos
    outputs = model(**inputs)
    verb_logits, noun_logits = outputs.verb_logits, outputs.noun_logits
    if len(keep) == 0:
        # Nothing readable here: a zero loss that still touches the outputs, so gradients (zeros) stay in sync.
        return (verb_logits.sum() + noun_logits.sum()) * 0.0, 0
    loss = loss_fn(verb_logits[keep], noun_logits[keep], verb_t.to(verb_logits.device),
                   noun_t.to(noun_logits.device))
    return loss, len(keep)
