"""Verb + noun training losses: cross-entropy with soft targets, and two long-tail options.

- ``class_balanced``: per-class weights from the effective number of samples, (1 - beta) / (1 - beta^n_c)
  (Cui et al., CVPR 2019), normalised to mean 1 over the classes seen in training.
- ``logit_adjusted``: tau * log(prior) added to the logits during training only (Menon et al., ICLR 2021), so the
  model learns calibrated class-balanced scores; evaluation uses the raw logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def log_prior(counts: torch.Tensor) -> torch.Tensor:
    """(C,) class counts -> (C,) log frequencies (unseen classes get the log of half a sample)."""
    counts = counts.float().clamp_min(0.5)
    return torch.log(counts / counts.sum())


class VerbNounLoss(torch.nn.Module):
    """CE(verb) + CE(noun) over soft targets, optionally class-balanced or logit-adjusted.

    Args:
        kind: ``"ce"``, ``"class_balanced"`` or ``"logit_adjusted"``.
        verb_counts / noun_counts: (C,) training class counts (needed by the two long-tail kinds).
    """

    def __init__(self, kind: str = "ce", verb_counts: torch.Tensor | None = None,
                 noun_counts: torch.Tensor | None = None, beta: float = 0.999, tau: float = 1.0) -> None:
        super().__init__()
        if kind not in ("ce", "class_balanced", "logit_adjusted"):
            raise ValueError(f"loss must be 'ce', 'class_balanced' or 'logit_adjusted', got {kind!r}")
        if kind != "ce" and (verb_counts is None or noun_counts is None):
            raise ValueError(f"loss {kind!r} needs the training class counts")
        self.kind, self.tau = kind, tau
        for name, counts in (("verb", verb_counts), ("noun", noun_counts)):
            weight = class_balanced_weights(counts, beta) if kind == "class_balanced" else None
            prior = log_prior(counts) if kind == "logit_adjusted" else None
            self.register_buffer(f"{name}_weight", weight, persistent=False)
            self.register_buffer(f"{name}_log_prior", prior, persistent=False)

    def forward(self, verb_logits: torch.Tensor, noun_logits: torch.Tensor, verb_targets: torch.Tensor,
                noun_targets: torch.Tensor) -> torch.Tensor:
        """Logits (B, C); targets (B, C) soft."""
        if self.kind == "logit_adjusted":
            verb_logits = verb_logits.float() + self.tau * self.verb_log_prior
            noun_logits = noun_logits.float() + self.tau * self.noun_log_prior
        return (soft_cross_entropy(verb_logits, verb_targets, self.verb_weight)
                + soft_cross_entropy(noun_logits, noun_targets, self.noun_weight))
