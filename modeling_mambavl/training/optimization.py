"""Parameter groups, optimizers and learning-rate schedules of the MambaVL recipes.

The authors' recipes split the parameters in three groups with their own learning rates: the pretrained
``backbone`` (vision and text models), the ``mamba`` mixers, and ``rest`` (the shared ``A_log``, the video
projection, the text MLP and the heads). Mamba's state parameters (``A_log``, ``D``) are by convention not
weight-decayed; ``decay_state_params=True`` decays them like the authors' configs do (they sit in "rest" with WD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

GROUPS = ("backbone", "mamba", "rest")
STATE_PARAM_NAMES = ("A_log", "D")


@dataclass
class GroupSpec:
    """One optimizer group: its name, learning rate and weight decay, and the parameter names it holds."""

    name: str
    lr: float
    weight_decay: float
    params: list[str] = field(default_factory=list)


def _is_mixer(module: nn.Module) -> bool:
    return type(module).__name__.endswith("Mixer")


def classify_parameters(model: nn.Module, state_params_group: str = "rest") -> dict[str, str]:
    """Map each trainable parameter name to ``backbone``, ``mamba`` or ``rest``.

    Backbone: parameters under a nested transformers ``PreTrainedModel`` (the vision and text models).
    Mamba: parameters of the mixers (modules whose class name ends in ``Mixer``). The shared ``A_log`` lives on the
    fusion module, so it falls in ``rest`` unless ``state_params_group="mamba"``.
    """
    if state_params_group not in ("rest", "mamba"):
        raise ValueError(f"state_params_group must be 'rest' or 'mamba', got {state_params_group!r}")
    from transformers import PreTrainedModel

    from ..modeling import MambaVLPreTrainedModel

    owner: dict[str, str] = {}
    for module_name, module in model.named_modules():
        if module is model:
            continue
        if isinstance(module, PreTrainedModel) and not isinstance(module, MambaVLPreTrainedModel):
            kind = "backbone"
        elif _is_mixer(module):
            kind = "mamba"
        else:
            continue
        for pname, _ in module.named_parameters(prefix=module_name):
            owner.setdefault(pname, kind)  # the outermost owner wins
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        kind = owner.get(name, "rest")
        if name.rsplit(".", 1)[-1] == "A_log" and kind != "backbone":
            kind = state_params_group
        groups[name] = kind
    return groups


def _no_decay(name: str, param: nn.Parameter, decay_state_params: bool, decay_all: bool = False) -> bool:
    if decay_all:
        return False
    leaf = name.rsplit(".", 1)[-1]
    if leaf in STATE_PARAM_NAMES:
        return not decay_state_params
    # Biases and normalisation weights (1-D) are not decayed, as in transformers' and timm's recipes.
    return param.ndim <= 1


def build_param_groups(
    model: nn.Module,
    lr: float,
    lr_backbone: float | None = None,
    lr_mamba: float | None = None,
    weight_decay: float = 0.0,
    state_params_group: str = "rest",
    decay_state_params: bool = False,
    decay_all: bool = False,
) -> tuple[list[dict], list[GroupSpec]]:
    """Optimizer parameter groups (for ``torch.optim``) and a readable description of them.

    Each of backbone / mamba / rest is split into a decayed and a non-decayed group; empty groups are dropped.
    ``decay_all=True`` decays every parameter, biases and norm weights included (the authors' slowfast optimizer with
    ``SOLVER.ZERO_WD_1D_PARAM: False``).
    """
    lrs = {"backbone": lr if lr_backbone is None else lr_backbone, "mamba": lr if lr_mamba is None else lr_mamba,
           "rest": lr}
    kinds = classify_parameters(model, state_params_group)
    named = dict(model.named_parameters())
    buckets: dict[tuple[str, bool], list[str]] = {}
    for name, kind in kinds.items():
        buckets.setdefault((kind, _no_decay(name, named[name], decay_state_params, decay_all)), []).append(name)
    torch_groups, specs = [], []
    for kind in GROUPS:
        for no_decay in (False, True):
            names = buckets.get((kind, no_decay))
            if not names:
                continue
            wd = 0.0 if no_decay else weight_decay
            label = f"{kind}{'/no_decay' if no_decay else ''}"
            torch_groups.append({"params": [named[n] for n in names], "lr": lrs[kind], "weight_decay": wd,
                                 "name": label})
            specs.append(GroupSpec(label, lrs[kind], wd, names))
    return torch_groups, specs


def build_optimizer(groups: list[dict], name: str = "adamw", momentum: float = 0.9, nesterov: bool = True,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW, or SGD with (Nesterov) momentum, over prepared parameter groups."""
    if name == "adamw":
        return torch.optim.AdamW(groups, betas=betas, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, momentum=momentum, nesterov=nesterov and momentum > 0)
    raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {name!r}")


def lr_multiplier(
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    milestones: tuple[int, ...] = (),
    factors: tuple[float, ...] = (),
) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based).

    ``cosine``: linear warm-up over ``warmup_steps`` then a half cosine from 1 to ``min_lr_ratio`` at
    ``total_steps``. ``step``: ``factors[i]`` from epoch ``milestones[i]`` on (the authors' anticipation recipe:
    milestones (0, 19, 40), factors (1, 0.1, 0.01)), with the same optional warm-up. ``constant``: 1 after warm-up.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        if len(milestones) != len(factors) or not milestones:
            raise ValueError("the step schedule needs as many milestones (epochs) as factors, at least one")
        epoch = step // max(1, steps_per_epoch)
        factor = factors[0]
        for m, f in zip(milestones, factors):
            if epoch >= m:
                factor = f
        return factor
    if schedule == "constant":
        return 1.0
    raise ValueError(f"lr schedule must be 'cosine', 'step' or 'constant', got {schedule!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``lr_multiplier(step, **kwargs)`` to every group's base learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, **kwargs))
