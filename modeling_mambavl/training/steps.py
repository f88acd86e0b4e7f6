"""One training step's arithmetic, shared by the training script and its tests: model inputs from a batch, mixup,
and the verb + noun loss over the clips that could be read."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .losses import VerbNounLoss
from .mixup import mix_batch, one_hot_smoothed

__all__ = ["compute_loss", "mix_videos_and_targets", "model_inputs", "step_seed"]

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
    loss_fn: VerbNounLoss | None = None,
    *,
    num_verbs: int,
    num_nouns: int,
    mixup: dict[str, float] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """Forward a training batch and return (loss, number of clips in the loss).

    The loss is the model's own ``outputs.loss``, CE(verb) + CE(noun) with ``config.label_smoothing``, or, given a
    long-tail ``loss_fn``, that loss of the logits; either smooths the targets once. Unreadable clips (``valid``
    False) leave the forward: the loss is the mean over the others. A batch with none still runs the model (every
    process runs the same steps, whatever it could read) and returns a zero that touches every output. With ``mixup``
    (``mix_batch`` arguments), the videos and both targets (one-hot, then soft) are mixed by one lambda drawn from
    ``generator``; questions are not mixed.

    Args:
        batch: collated clips: ``pixel_values`` (B, T, C, H, W) or ``video_features`` (B, F, D), questions (B, Q, L),
            ``verb_labels`` / ``noun_labels`` (B,) class ids, ``valid`` (B,).
    """
    inputs = model_inputs(batch)
    valid = batch["valid"].bool()
    count = int(valid.sum())
    if count == 0:
        outputs = model(**inputs)
        return (outputs.verb_logits.sum() + outputs.noun_logits.sum()) * 0.0, 0
    inputs = {k: v[valid] for k, v in inputs.items()}
    verbs, nouns = batch["verb_labels"][valid], batch["noun_labels"][valid]
    if mixup is not None and count >= 2:
        verbs, nouns = mix_videos_and_targets(inputs, one_hot_smoothed(verbs, num_verbs),
                                              one_hot_smoothed(nouns, num_nouns), mixup, generator)
    if loss_fn is None:
        return model(**inputs, verb_labels=verbs, noun_labels=nouns).loss, count
    outputs = model(**inputs)
    return loss_fn(outputs.verb_logits, outputs.noun_logits, verbs, nouns), count


def mix_videos_and_targets(inputs: dict[str, torch.Tensor], verb_targets: torch.Tensor, noun_targets: torch.Tensor,
        mixup: dict[str, float], generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix the videos of ``inputs`` (in place of the dict's entry) and both (B, C) targets by one lambda; returns the
    mixed targets."""
    if generator is None:
        raise ValueError("mixup needs a seeded generator (torch.Generator().manual_seed(...))")
    key = "pixel_values" if "pixel_values" in inputs else "video_features"
    targets = [verb_targets, noun_targets]
    inputs[key], (verb_targets, noun_targets), _ = mix_batch(inputs[key], targets, generator, **mixup)
    return verb_targets, noun_targets
