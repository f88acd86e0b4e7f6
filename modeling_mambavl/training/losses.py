"""The class prior of a training split, and the two long-tail losses (the plain cross-entropy is the model's own
``outputs.loss``).

- ``class_balanced``: per-class weights from the effective number of samples, (1 - beta) / (1 - beta^n_c)
  (Cui et al., CVPR 2019), normalised to mean 1 over the classes seen in training.
- ``logit_adjusted``: tau * log(prior) added to the logits during training only (Menon et al., ICLR 2021), so the
  model learns calibrated class-balanced scores; evaluation uses the raw logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["LONG_TAIL_LOSSES", "VerbNounLoss", "class_balanced_weights", "class_counts", "log_prior",
           "soft_cross_entropy"]

LONG_TAIL_LOSSES = ("class_balanced", "logit_adjusted")


def class_counts(rows: Sequence[dict], column: str, num_classes: int) -> torch.Tensor:
    """(num_classes,) float64 counts of ``row[column]`` over ``rows`` (rows without a label are skipped).

    Raises:
        ValueError: a class id outside [0, num_classes).
    """
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for row in rows:
        value = row.get(column)
        if value is None:
            continue
        if not 0 <= int(value) < num_classes:
            raise ValueError(f"{column} {value} of {row.get('narration_id', 'a row')} is outside [0, {num_classes}): "
                             "the model's head has fewer classes than the annotations use")
        counts[int(value)] += 1
    return counts


def log_prior(counts: torch.Tensor, floor: float = 0.5) -> torch.Tensor:
    """(C,) class counts -> (C,) float64 log frequencies; classes never seen count as ``floor`` samples."""
    counts = counts.double().clamp_min(floor)
    return torch.log(counts / counts.sum())


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of -sum_c targets_c * log_softmax(logits)_c (times the target class weights)."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    per_sample = -(targets * log_probs).sum(-1)
    if weight is not None:
        per_sample = per_sample * (targets * weight).sum(-1)
    return per_sample.mean()


def class_balanced_weights(counts: torch.Tensor, beta: float = 0.999) -> torch.Tensor:
    """(C,) class counts -> (C,) weights; classes never seen get weight 0."""
    counts = counts.float()
    effective = 1.0 - torch.pow(torch.tensor(beta), counts)
    weights = torch.where(counts > 0, (1.0 - beta) / effective.clamp_min(1e-12), torch.zeros_like(counts))
    seen = counts > 0
    return weights / weights[seen].mean() if seen.any() else weights


class VerbNounLoss(torch.nn.Module):
    """A long-tail CE(verb) + CE(noun) over soft targets, which it smooths once with ``label_smoothing`` (as the
    model's own loss does with ``config.label_smoothing``).

    Args:
        kind: ``"class_balanced"`` or ``"logit_adjusted"``.
        verb_counts / noun_counts: (C,) training class counts (``class_counts``).
        label_smoothing: pass the model's ``config.label_smoothing``.
    """

    def __init__(self, kind: str, verb_counts: torch.Tensor | None = None, noun_counts: torch.Tensor | None = None,
                 beta: float = 0.999, tau: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if kind not in LONG_TAIL_LOSSES:
            raise ValueError(f"loss must be one of {LONG_TAIL_LOSSES}, got {kind!r} (the plain cross-entropy is the "
                             "model's own outputs.loss)")
        if verb_counts is None or noun_counts is None:
            raise ValueError(f"loss {kind!r} needs the training class counts")
        self.kind, self.tau, self.label_smoothing = kind, tau, label_smoothing
        for name, counts in (("verb", verb_counts), ("noun", noun_counts)):
            weight = class_balanced_weights(counts, beta) if kind == "class_balanced" else None
            prior = log_prior(counts).float() if kind == "logit_adjusted" else None
            self.register_buffer(f"{name}_weight", weight, persistent=False)
            self.register_buffer(f"{name}_log_prior", prior, persistent=False)

    def forward(self, verb_logits: torch.Tensor, noun_logits: torch.Tensor, verb_targets: torch.Tensor,
                noun_targets: torch.Tensor) -> torch.Tensor:
        """Logits (B, C); targets (B,) class ids or (B, C) soft targets, not smoothed (e.g. mixed one-hots)."""
        if self.kind == "logit_adjusted":
            verb_logits = verb_logits.float() + self.tau * self.verb_log_prior
            noun_logits = noun_logits.float() + self.tau * self.noun_log_prior
        return (soft_cross_entropy(verb_logits, self.smoothed(verb_targets, verb_logits), self.verb_weight)
                + soft_cross_entropy(noun_logits, self.smoothed(noun_targets, noun_logits), self.noun_weight))

    def smoothed(self, targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(B, C) float targets on the logits' device, smoothed once: ``(1 - s) * targets + s / C``."""
        classes = logits.shape[-1]
        if not targets.is_floating_point():
            targets = F.one_hot(targets.long(), classes).float()
        s = self.label_smoothing
        return targets.to(logits.device) * (1.0 - s) + s / classes
