"""Mixup and CutMix for clips with two targets (verb and noun).

One lambda per batch mixes the videos (pixels or features) and BOTH targets; the questions are not mixed (each clip
keeps its own questions: mixing token ids has no meaning, and the authors' recipe mixes frames and targets only).
CutMix cuts the same box out of every frame of a clip, so motion inside the box stays coherent.
"""

from __future__ import annotations

import math

import torch


def one_hot_smoothed(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) class ids -> (B, C) float targets with label smoothing spread over all classes."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long()[:, None], 1.0 - smoothing + off)


def _cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    return y0, y1, x0, x1


def mix_batch(
    videos: torch.Tensor,
    targets: list[torch.Tensor],
    generator: torch.Generator,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
) -> tuple[torch.Tensor, list[torch.Tensor], float]:
    """Mix a batch with its reverse (timm's batch mode), with one lambda for videos and every target.

    Args:
        videos: (B, T, C, H, W) pixels, or (B, F, D) features (mixup only: CutMix needs a spatial grid).
        targets: soft targets, each (B, num_classes) (e.g. from ``one_hot_smoothed``).
        generator: the source of every random choice (seed it from the run seed, epoch and step).

    Returns:
        mixed videos, mixed targets, and the lambda used (1.0 when the batch was left alone).
    """
    if videos.shape[0] < 2 or float(torch.rand((), generator=generator)) >= prob:
        return videos, targets, 1.0
    spatial = videos.ndim == 5
    use_cutmix = spatial and cutmix_alpha > 0 and (
        mixup_alpha <= 0 or float(torch.rand((), generator=generator)) < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    if alpha <= 0:
        return videos, targets, 1.0
    lam = _beta(alpha, generator)
    flipped = videos.flip(0)
    if use_cutmix:
        height, width = videos.shape[-2:]
        y0, y1, x0, x1 = _cutmix_box(height, width, lam, generator)
        videos = videos.clone()
        videos[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)  # the area actually pasted
    else:
        videos = videos * lam + flipped * (1.0 - lam)
    targets = [t * lam + t.flip(0) * (1.0 - lam) for t in targets]
    return videos, targets, lam


def _beta(alpha: float, generator: torch.Generator) -> float:
    """Beta(alpha, alpha) from two Gamma draws, using ``generator`` (torch.distributions ignores generators)."""
    x = torch._standard_gamma(torch.tensor([alpha, alpha], dtype=torch.float64), generator=generator)
    return float(x[0] / x.sum())
