"""Command-line options of the example scripts.

* The data options that ``examples/train_ek100.py`` and ``examples/eval_ek100.py`` share: one definition, so that a
  model trained with some media layout, sampling or question source is evaluated with the same names and defaults.
* :class:`HelpFormatter`: ``--help`` keeps the script's docstring as written and shows every option's default.
* :func:`finish_parser`: the names Hugging Face users type (``--learning_rate``, ``--max_steps``, ``--save_steps``,
  ... as transformers' ``TrainingArguments`` spells them) accepted as aliases of the scripts' own options, a help text
  for every option, and ``--debug``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["HF_ALIASES", "MINIMUMS", "TRAINING_HELP", "HelpFormatter", "add_data_arguments", "add_run_arguments",
           "apply_warmup_ratio", "check_minimums", "finish_parser"]

# Script option (its dest) -> the transformers TrainingArguments names that mean the same thing. Names the scripts
# already use (--per_device_train_batch_size, --num_train_epochs, --weight_decay, --gradient_accumulation_steps,
# --seed, --output_dir, ...) need no alias. --warmup_ratio is an option of its own (see apply_warmup_ratio); warm-up
# in steps is not offered: the scripts schedule warm-up in epochs.
HF_ALIASES: dict[str, tuple[str, ...]] = {
    "lr": ("--learning_rate",),
    "max_train_steps": ("--max_steps",),
    "lr_schedule": ("--lr_scheduler_type",),
    "checkpointing_steps": ("--save_steps",),
    "checkpoints_total_limit": ("--save_total_limit",),
    "num_workers": ("--dataloader_num_workers",),
    "label_smoothing": ("--label_smoothing_factor",),
    "batch_size": ("--per_device_eval_batch_size",),
}

DEBUG_HELP = "on an error, show the full traceback instead of one line"

# Help of examples/train_ek100.py's own options that are defined without one (kept here, beside the aliases).
TRAINING_HELP: dict[str, str] = {
    "train_split": "annotation split to train on",
    "eval_split": "annotation split evaluated after each --eval_every_epochs epochs (labelled)",
    "max_train_samples": "train on the first N clips only (quick runs)",
    "flip_prob": "training: horizontal flip probability (default: the processor's, 0.5)",
    "fusion_type": "fusion of a new model (default: the preset's, ssm); none / mean_mlp / linear_probe are the "
                   "question-free controls",
    "max_question_length": "question tokens kept after tokenization (default: the tokenizer's limit)",
    "optimizer": "optimizer (the authors: sgd with Nesterov momentum for recognition, adamw for anticipation)",
    "lr_backbone": "learning rate of the backbone group (default: --lr)",
    "lr_mamba": "learning rate of the Mamba mixers group (default: --lr)",
    "weight_decay": "weight decay (AdamW: decoupled); biases, norms and state parameters are exempt unless "
                    "--decay_all_params / --decay_state_params",
    "state_params_group": "parameter group of the shared A_log and D (the authors: rest)",
    "momentum": "SGD momentum",
    "no_nesterov": "SGD without Nesterov momentum",
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "adam_epsilon": "AdamW epsilon",
    "lr_schedule": "learning-rate schedule after warm-up: cosine (to --min_lr_ratio), step (--lr_milestones, "
                   "--lr_factors) or constant",
    "warmup_epochs": "linear warm-up length in epochs (fractions allowed)",
    "min_lr_ratio": "cosine schedule: final learning rate as a fraction of the peak",
    "num_train_epochs": "epochs to train (--max_train_steps stops earlier)",
    "per_device_train_batch_size": "training clips per process and step (before gradient accumulation)",
    "per_device_eval_batch_size": "evaluation clips per process and step",
    "gradient_accumulation_steps": "micro-batches accumulated per optimizer step",
    "max_grad_norm": "clip the gradient norm to this value (default: no clipping)",
    "label_smoothing": "label smoothing of both cross-entropies (the paper: 0.1)",
    "cutmix_alpha": "CutMix Beta(alpha, alpha) (0: off; the authors: 1.0)",
    "mixup_prob": "probability that a batch is mixed when mixup / CutMix is on",
    "mixup_switch_prob": "probability of CutMix instead of mixup when both are on",
    "loss": "classification loss: cross-entropy, class-balanced (effective number) or logit-adjusted",
    "class_balanced_beta": "--loss class_balanced: beta of the effective number of samples",
    "logit_adjustment_tau": "--loss logit_adjusted: temperature tau of the log-prior adjustment",
    "seed": "seed of everything random (data order, frames, augmentation, dropout, initialisation)",
    "eval_every_epochs": "evaluate (and keep the best model) every N epochs, and after the last",
    "output_dir": "run folder: checkpoints, best_model/, final_model/, metrics, logs",
    "checkpoints_total_limit": "keep this many most recent checkpoints",
    "logging_steps": "log loss and learning rate every N optimizer steps",
    "lora_alpha": "LoRA scaling alpha",
    "lora_dropout": "LoRA dropout",
    "push_to_hub": "push best_model/ (weights, processor, metrics, model card) to --hub_model_id at the end",
    "hub_model_id": "Hub repository (org/name) for --push_to_hub",
    "warmup_ratio": "warm-up as a fraction of --num_train_epochs (transformers' name); sets --warmup_epochs",
    "debug": DEBUG_HELP,
}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (examples keep their line breaks), and ``(default: ...)`` after every option's help
    unless the help already speaks of its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is argparse.SUPPRESS or not action.option_strings
                or action.nargs == 0 and action.default in (False, None)):
            return text
        return f"{text} (default: %(default)s)"


def add_data_arguments(group: argparse._ActionsContainer) -> tuple[argparse.Action, ...]:
    """Add the shared EK100 data options (media, task, questions, caches, synthetic data, sampling) to ``group``;
    returns their actions (``dest``, ``option_strings``, ``default``, ``nargs``), for a script that passes the data
    options on to the runs it starts."""
    actions: list[argparse.Action] = []

    def add(*flags: str, **kwargs: Any) -> None:
        actions.append(group.add_argument(*flags, **kwargs))

    add("--annotations_dir", type=str, default=None,
        help="epic-kitchens-100-annotations folder; without it, synthetic EK100-format data is used")
    add("--media_root", type=str, default=None,
        help="folder holding rgb_frames/ or videos/ (EK100 layout), or a feature folder")
    add("--media", choices=("frames", "video", "features"), default="frames",
        help="what --media_root holds: JPEG frame folders, MP4 videos, or extracted features")
    add("--task", choices=("recognition", "anticipation"), default="recognition",
        help="recognise the action in the segment, or anticipate it from the video before it")
    add("--anticipation_time", type=float, default=1.0,
        help="anticipation: seconds between the end of the observed window and the action")
    add("--observation_time", type=float, default=2.133,
        help="anticipation: seconds of video observed")
    add("--max_eval_samples", type=int, default=None,
        help="evaluate on the first N clips of the split only (quick runs)")
    add("--question_source", choices=("generic", "file", "predicted", "oracle"), default="generic",
        help="where the questions come from: fixed templates, a question file, a first-stage model's "
             "predictions, or the ground truth (oracle: an upper bound, labelled as such)")
    add("--question_pool", type=str, default=None,
        help="--question_source predicted: phrase the questions from this question pool (JSON from "
             "examples/generate_questions.py --pool) instead of the templates; saved with the "
             "processor, so a model trained with it is evaluated with it")
    add("--data_cache_dir", type=str, default=None,
        help="synthetic data and decoded-clip caches (default $MAMBAVL_CACHE or ~/.cache/mambavl)")
    add("--cache_clips", action="store_true",
        help="decode every clip's window once into a uint8 cache (small data sets)")
    add("--synthetic_train_clips", type=int, default=400,
        help="synthetic data (no --annotations_dir): training clips")
    add("--synthetic_validation_clips", type=int, default=128,
        help="synthetic data: validation clips")
    add("--synthetic_size", type=int, default=112, help="synthetic data: frame size in pixels")
    add("--synthetic_variant", choices=("default", "hard"), default="default",
        help="synthetic data: 6 verbs / 9 nouns in independent clips (default), or 14 verbs / 25 nouns "
             "with near-twin classes, small objects, noise and videos of action sequences (hard)")
    add("--sampling", choices=("segment", "dense"), default=None,
        help="frame sampling (default: segment for recognition, dense end-anchored for anticipation)")
    add("--stride", type=int, default=4, help="dense sampling: every stride-th frame at --target_fps")
    add("--target_fps", type=float, default=30.0,
        help="dense sampling: the frame rate strides are counted at, whatever the source's")
    add("--skip_bad_clips", action="store_true",
        help="skip unreadable media (counted and listed at the end) instead of stopping")
    add("--num_workers", type=int, default=2, help="data-loader worker processes per process")
    return tuple(actions)


def apply_warmup_ratio(args: argparse.Namespace) -> argparse.Namespace:
    """``--warmup_ratio r`` (transformers' name) -> ``warmup_epochs = r * num_train_epochs``; refuses both at once."""
    ratio = getattr(args, "warmup_ratio", None)
    if ratio is None:
        return args
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"--warmup_ratio {ratio}: expected a fraction in [0, 1]")
    if getattr(args, "warmup_epochs", 0.0):
        raise ValueError(f"give --warmup_ratio ({ratio}) or --warmup_epochs ({args.warmup_epochs}), not both")
    args.warmup_epochs = ratio * args.num_train_epochs
    return args


def finish_parser(parser: argparse.ArgumentParser, help_texts: Mapping[str, str] | None = None,
                  aliases: Mapping[str, Sequence[str]] = HF_ALIASES) -> argparse.ArgumentParser:
    """Accept ``aliases`` (dest -> extra option strings, for the options ``parser`` has), add ``--debug``, fill
    missing help texts from ``help_texts`` (dest -> text), and refuse an option left without one.

    Raises ``RuntimeError`` naming the undocumented options (a defect of the script, caught by its tests)."""
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    for action in list(parser._actions):
        for alias in aliases.get(action.dest, ()):
            if action.option_strings and alias not in parser._option_string_actions:
                action.option_strings.append(alias)
                parser._option_string_actions[alias] = action
        if not action.help and help_texts and action.dest in help_texts:
            action.help = help_texts[action.dest]
    undocumented = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    if undocumented:
        raise RuntimeError(f"{parser.prog}: options without a help text: {undocumented}")
    return parser


# The smallest value each numeric option takes (options a parser lacks are skipped). Below it an option failed deep
# inside a run (a DataLoader's "batch_size should be a positive integer", a NaN loss at lr -1, numpy's seed range) or
# was taken silently (-3 epochs trained nothing and still wrote final_model/).
MINIMUMS: dict[str, float] = {
    "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1, "num_train_epochs": 1, "max_train_steps": 1,
    "gradient_accumulation_steps": 1, "eval_every_epochs": 1, "logging_steps": 1, "num_threads": 1,
    "max_train_samples": 1, "max_eval_samples": 1, "synthetic_train_clips": 1, "synthetic_validation_clips": 1,
    "synthetic_size": 1, "stride": 1, "num_workers": 0, "seed": 0, "lr": 0, "lr_backbone": 0, "lr_mamba": 0,
    "weight_decay": 0, "question_top_k": 1, "num_folds": 2, "jobs": 1,
}
SEED_MAX = 2**32 - 1  # numpy's and Accelerate's set_seed range


def check_minimums(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   minimums: Mapping[str, float] = MINIMUMS) -> None:
    """``parser.error`` naming the first option of ``minimums`` whose value is below its minimum (or ``--seed``
    above ``SEED_MAX``); options ``args`` lacks, or left at ``None``, are skipped."""
    for dest, minimum in minimums.items():
        value = getattr(args, dest, None)
        if value is not None and value < minimum:
            parser.error(f"--{dest} must be at least {minimum}, got {value}")
    if getattr(args, "seed", None) is not None and args.seed > SEED_MAX:
        parser.error(f"--seed must be at most {SEED_MAX}, got {args.seed}")


def add_run_arguments(group: argparse._ActionsContainer) -> None:
    """Add the options of resuming into, and locking, a training run's ``--output_dir``."""
    group.add_argument("--allow_changed_args", action="store_true",
                       help="resume although settings that change results (learning rate, batch, schedule, seed, "
                            "data, ...) differ from the checkpoint's; the changes are recorded in run_metadata.json")
    group.add_argument("--break_lock", action="store_true",
                       help="take over an --output_dir locked by a run on another host (only once that run has ended)")
