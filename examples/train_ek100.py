#!/usr/bin/env python
"""Train MambaVL on EPIC-KITCHENS-100 with Accelerate (one CPU, one or many GPUs, many nodes, FSDP, DeepSpeed).

With no ``--annotations_dir`` it builds the synthetic EK100-format data set once (under ``--data_cache_dir``) and trains
on it, so ``python examples/train_ek100.py`` runs anywhere. The CPU demonstration behind ``make demo`` is
``examples/demo.py`` (this script with ``examples/recipes/demo.yaml``, controls and a summary).

    accelerate launch examples/train_ek100.py \\
        --annotations_dir epic-kitchens-100-annotations --media_root /data/EK100 --media frames \\
        --preset videomae-base --recipe examples/recipes/<recipe>.yaml --output_dir runs/mambavl

    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/train_ek100.py ...
    python examples/train_ek100.py --recipe my.yaml --dry_run     # resolved optimizer groups and schedule, as JSON

Every random choice is a function of (seed, epoch, step or clip index): the data order is a permutation of (seed,
epoch), frame positions and augmentation come from each clip's generator, dropout and mixup are re-seeded from (seed,
epoch, batch, rank) at every step. A run resumed from a checkpoint (``--resume_from_checkpoint latest``) therefore ends
with the same weights and optimizer state as an uninterrupted one.

``main`` parses the arguments and ``train`` reads top to bottom: model, data, optimiser, the loop (training steps,
evaluation, checkpoints), the final save. ``run_training(args, recipe, after_training=...)`` lets another script (``examples/demo.py``) run
more evaluations on the trained model before the run ends.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_mambavl.lazy_imports import require_modules

# an inference install (no extras): one line naming the extra, not a traceback
require_modules("train_ek100.py", "accelerate")

from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm

from modeling_mambavl import MambaVLForVideoClassification, MambaVLProcessor, atomic
from modeling_mambavl.atomic import DiskFullError, atomic_write
from modeling_mambavl.configuration import FUSION_TYPES
from modeling_mambavl.saving import load_model_and_processor, save_model_and_processor
from modeling_mambavl.training import checkpointing, faults, runs
from modeling_mambavl.training.arguments import (
    TRAINING_HELP,
    HelpFormatter,
    add_data_arguments,
    add_run_arguments,
    apply_warmup_ratio,
    check_minimums,
    finish_parser,
)
from modeling_mambavl.training.builders import (
    DataSpec,
    apply_question_pool,
    build_clip_dataset,
    build_dataloader,
    build_model,
    default_cache_dir,
    init_head_bias_from_prior,
    load_rows,
    resolve_data,
    synthetic_settings,
)
from modeling_mambavl.training.data import steps_per_epoch
from modeling_mambavl.training.evaluation import (
    default_metric_for_best_model,
    format_metric_table,
    metrics_payload,
    predict,
    score,
    write_metrics_json,
    write_predictions,
)
from modeling_mambavl.training.losses import LONG_TAIL_LOSSES, VerbNounLoss, class_counts
from modeling_mambavl.training.optimization import build_optimizer, build_param_groups, build_scheduler
from modeling_mambavl.training.recipe import parse_args_with_recipe, resolved_arguments
from modeling_mambavl.training.steps import compute_loss, step_seed

logger = get_logger(__name__)


# ------------------------------------------------------------------------------------------------------- arguments
def add_training_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The data options: media, task and questions (shared with eval_ek100.py), splits, caching and augmentation."""
    data = parser.add_argument_group("data")
    add_data_arguments(data)
    data.add_argument("--train_split", type=str, default="train")
    data.add_argument("--eval_split", type=str, default="validation")
    data.add_argument("--max_train_samples", type=int, default=None)
    data.add_argument("--train_questions_file", type=str, default=None, help="questions / predictions for training")
    data.add_argument("--eval_questions_file", type=str, default=None, help="questions / predictions for evaluation")
    data.add_argument("--cache_short_side", type=int, default=None,
                      help="resize cached frames to this shorter side (default: the model's image size)")
    data.add_argument("--crop_scale", type=float, nargs=2, default=None, help="RandomResizedCrop area range")
    data.add_argument("--flip_prob", type=float, default=None)
    data.add_argument("--rand_augment", type=str, default=None, help='e.g. "rand-m7-n4" (the authors\')')


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the model comes from (preset, config, checkpoint, backbones), its config overrides and tokenizer."""
    model = parser.add_argument_group("model")
    model.add_argument("--preset", type=str, default="tiny", help="MambaVLConfig preset for a new model")
    model.add_argument("--config_name", type=str, default=None, help="a config.json for a new model")
    model.add_argument("--model_name_or_path", type=str, default=None, help="a checkpoint folder or Hub id")
    model.add_argument("--init_from", type=str, default=None,
                       help="start from these weights (e.g. a recognition checkpoint for --task anticipation)")
    model.add_argument("--vision_backbone", type=str, default=None, help="pretrained video backbone (from_backbones)")
    model.add_argument("--text_backbone", type=str, default=None, help="pretrained text model (from_backbones)")
    model.add_argument("--fusion_type", choices=FUSION_TYPES,
                       default=None)
    model.add_argument("--config_overrides", type=str, default=None,
                       help='JSON of config fields, e.g. \'{"hidden_size": 128, "num_fusion_layers": 2}\'')
    model.add_argument("--tokenizer_name", type=str, default=None,
                       help="question tokenizer (default: the package's; the authors used FacebookAI/roberta-base)")
    model.add_argument("--max_question_length", type=int, default=None)
    model.add_argument("--init_head_bias", choices=("auto", "prior", "none"), default="auto",
                       help="set new heads' biases to the log class prior of the training split (auto: for new models)")


def add_optimisation_arguments(parser: argparse.ArgumentParser) -> None:
    """Optimizer, parameter groups, schedule, batch, regularisation, loss, precision and seed."""
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    optim.add_argument("--lr", type=float, default=1e-3, help="learning rate of the 'rest' group")
    optim.add_argument("--lr_backbone", type=float, default=None)
    optim.add_argument("--lr_mamba", type=float, default=None)
    optim.add_argument("--weight_decay", type=float, default=0.05)
    optim.add_argument("--state_params_group", choices=("rest", "mamba"), default="rest")
    optim.add_argument("--decay_state_params", action="store_true", help="weight-decay A_log and D (as the authors)")
    optim.add_argument("--decay_all_params", action="store_true",
                       help="weight-decay every parameter, biases and norms included (as the authors)")
    optim.add_argument("--momentum", type=float, default=0.9)
    optim.add_argument("--no_nesterov", action="store_true")
    optim.add_argument("--adam_beta1", type=float, default=0.9)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--lr_schedule", choices=("cosine", "step", "constant"), default="cosine")
    optim.add_argument("--warmup_epochs", type=float, default=0.0)
    optim.add_argument("--warmup_ratio", type=float, default=None)
    optim.add_argument("--min_lr_ratio", type=float, default=0.0)
    optim.add_argument("--lr_milestones", type=int, nargs="*", default=[], help="step schedule: epochs")
    optim.add_argument("--lr_factors", type=float, nargs="*", default=[], help="step schedule: multipliers")
    optim.add_argument("--num_train_epochs", type=int, default=10)
    optim.add_argument("--max_train_steps", type=int, default=None, help="stop after this many optimizer steps")
    optim.add_argument("--per_device_train_batch_size", type=int, default=16)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=32)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--max_grad_norm", type=float, default=None)
    optim.add_argument("--label_smoothing", type=float, default=0.1)
    optim.add_argument("--mixup_alpha", type=float, default=0.0, help="mixup (videos and both targets, one lambda)")
    optim.add_argument("--cutmix_alpha", type=float, default=0.0)
    optim.add_argument("--mixup_prob", type=float, default=1.0)
    optim.add_argument("--mixup_switch_prob", type=float, default=0.5)
    optim.add_argument("--loss", choices=("ce", "class_balanced", "logit_adjusted"), default="ce")
    optim.add_argument("--class_balanced_beta", type=float, default=0.999)
    optim.add_argument("--logit_adjustment_tau", type=float, default=1.0)
    optim.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
                       help="default: Accelerate's configuration")
    optim.add_argument("--skip_nonfinite_steps", action="store_true",
                       help="skip a step whose loss is NaN / inf instead of stopping the run")
    optim.add_argument("--seed", type=int, default=0)


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """When and how the model is evaluated, and which metric picks the best model."""
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument("--eval_every_epochs", type=int, default=1)
    evaluation.add_argument("--temporal_views", type=int, default=1, help="K temporal views per clip")
    evaluation.add_argument("--spatial_crops", type=int, default=1, help="M spatial crops per view")
    evaluation.add_argument("--metric_for_best_model", type=str, default=None,
                            help="default all_action_top1 (recognition) / all_action_mt5r (anticipation)")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Output folder, checkpoints, resuming and locking, logging and threads."""
    ckpt = parser.add_argument_group("checkpoints and outputs")
    ckpt.add_argument("--output_dir", type=str, default="outputs/train_ek100")
    ckpt.add_argument("--checkpointing_steps", type=str, default="epoch", help='N optimizer steps, "epoch" or "no"')
    ckpt.add_argument("--checkpoints_total_limit", type=int, default=2)
    ckpt.add_argument("--resume_from_checkpoint", type=str, default=None, help='"latest" or a checkpoint folder')
    add_run_arguments(ckpt)
    ckpt.add_argument("--report_to", type=str, default="none",
                      help='trackers for accelerator.init_trackers: "all", "tensorboard", "wandb", ... or "none"')
    ckpt.add_argument("--logging_steps", type=int, default=10)
    ckpt.add_argument("--no_plot", action="store_true", help="do not write training_curves.png")
    ckpt.add_argument("--num_threads", type=int, default=None, help="torch intra-op threads per process")


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """LoRA adapters (PEFT) on the backbone."""
    lora = parser.add_argument_group("LoRA (PEFT)")
    lora.add_argument("--lora_r", type=int, default=0, help="> 0: train LoRA adapters on the backbone")
    lora.add_argument("--lora_alpha", type=float, default=16.0)
    lora.add_argument("--lora_dropout", type=float, default=0.0)
    lora.add_argument("--lora_target_modules", type=str, nargs="*", default=None,
                      help="module names / suffixes, or one regex (default: the vision backbone's query and value)")
    lora.add_argument("--merge_lora", action="store_true", help="also save the best model with adapters merged")


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """Pushing the best model to the Hub."""
    hub = parser.add_argument_group("Hub")
    hub.add_argument("--push_to_hub", action="store_true")
    hub.add_argument("--hub_model_id", type=str, default=None)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The script's options, in groups; ``finish_parser`` adds a help text for every option, the names transformers'
    TrainingArguments uses as aliases, and ``--debug``."""
    parser = argparse.ArgumentParser(description=description or __doc__, formatter_class=HelpFormatter)
    parser.add_argument("--recipe", type=str, default=None,
                        help="YAML file of arguments (keys are these option names); the command line overrides it")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the resolved optimizer groups, optimizer and schedule as JSON, and exit")
    for add_group in (add_training_data_arguments, add_model_arguments, add_optimisation_arguments,
                      add_evaluation_arguments, add_output_arguments, add_lora_arguments, add_hub_arguments):
        add_group(parser)
    return finish_parser(parser, TRAINING_HELP)


def parse_args(argv=None, parser: argparse.ArgumentParser | None = None) -> tuple[argparse.Namespace, dict]:
    """The arguments (``--recipe``'s values as defaults, the command line over them) and the recipe applied."""
    parser = parser or build_parser()
    args, recipe = parse_args_with_recipe(parser, argv)
    try:
        apply_warmup_ratio(args)
    except ValueError as e:
        parser.error(str(e))
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    if args.checkpointing_steps not in ("epoch", "no") and not args.checkpointing_steps.isdigit():
        parser.error(f"--checkpointing_steps {args.checkpointing_steps!r}: give a number of steps, 'epoch' or 'no'")
    if args.init_from and args.model_name_or_path:
        parser.error("give --init_from or --model_name_or_path, not both")
    check_minimums(parser, args)
    return args, recipe


# --------------------------------------------------------------------------------------------------------- helpers
def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0]}
    for name in ("mambavl", "torch", "torchvision", "transformers", "accelerate", "datasets", "evaluate", "peft", "av",
                 "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return versions


def apply_lora(model, args, base_path: str):
    """Wrap ``model`` with LoRA adapters on the backbone; the fusion, the text MLP, the video adapter and the heads are
    trained whole (``modules_to_save``)."""
    from peft import LoraConfig, get_peft_model

    targets = args.lora_target_modules
    if not targets:
        targets = r".*\.vision\.backbone\..*\.(query|value)"
    elif len(targets) == 1 and any(c in targets[0] for c in "*.\\|("):
        targets = targets[0]
    config = LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
        modules_to_save=["fusion", "questions.mlp", "vision.norm", "vision.proj", "verb_head", "noun_head",
                         "classifier"],
    )
    peft_model = get_peft_model(model, config)
    # PEFT takes the base's name from the model, which has none when it was built from a config.
    peft_model.peft_config["default"].base_model_name_or_path = base_path
    return peft_model


def plot_curves(history: list[dict], path: Path) -> None:
    """Training loss and learning rate per step, evaluation top-1 per epoch: one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h["kind"] == "train"]
    evals = [h for h in history if h["kind"] == "eval"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if train:
        axes[0].plot([h["step"] for h in train], [h["loss"] for h in train])
        axes[1].plot([h["step"] for h in train], [h["lr"] for h in train])
    axes[0].set(title="training loss", xlabel="optimizer step")
    axes[1].set(title="learning rate (rest group)", xlabel="optimizer step")
    for key in ("all_verb_top1", "all_noun_top1", "all_action_top1", "all_action_mt5r"):
        points = [(h["epoch"], h["metrics"][key]) for h in evals if key in h["metrics"]]
        if points:
            axes[2].plot(*zip(*points), marker="o", label=key)
    axes[2].set(title="evaluation", xlabel="epoch", ylabel="%")
    if evals:
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")  # path may be a temporary whose name ends in .<pid>@<host>
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    args, recipe = parse_args(argv)
    return run_training(args, recipe)


def run_training(args: argparse.Namespace, recipe: dict,
                 after_training: Callable[[Run], dict | None] | None = None) -> dict:
    """Train inside the lock of ``--output_dir``. ``after_training(run)``, when given, runs on the trained model after
    the final save (its dict joins the result)."""
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = create_accelerator(args)
    with runs.lock_output_dir(accelerator, args.output_dir, enabled=not args.dry_run, break_lock=args.break_lock):
        return train(args, recipe, accelerator, after_training)


def train(args, recipe, accelerator, after_training=None) -> dict:
    """The run itself: model, data, optimiser, loop (training, evaluation, checkpoints), final save."""
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)

    # Model first (a dry run needs nothing else), built identically on every process from the run seed.
    model, processor, model_source = create_model(args)
    if args.dry_run:
        return dry_run_report(args, model, model_source, accelerator)
    config = model.config
    processor = create_processor(args, config, processor)
    data = load_data(args, processor, config, accelerator)
    model = initialise_model(args, model, processor, data.train_rows, accelerator)

    optimizer, specs = create_optimizer(args, model)
    train_dataloader, eval_dataloader = create_dataloaders(args, data)
    schedule = create_schedule(args, len(data.train_dataset), accelerator.num_processes)
    lr_scheduler = build_scheduler(
        optimizer, total_steps=schedule.max_train_steps, steps_per_epoch=schedule.steps_per_epoch,
        schedule=args.lr_schedule, warmup_steps=round(args.warmup_epochs * schedule.steps_per_epoch),
        min_lr_ratio=args.min_lr_ratio, milestones=tuple(args.lr_milestones), factors=tuple(args.lr_factors),
    )
    loss_fn = create_loss(args, config, data.train_rows, accelerator.device)
    metadata = run_metadata(args, recipe, accelerator, model, model_source, data.spec, specs)

    model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader)
    accelerator.register_for_checkpointing(lr_scheduler)
    run = Run(args=args, accelerator=accelerator, model=model, processor=processor, optimizer=optimizer,
              lr_scheduler=lr_scheduler, loss_fn=loss_fn, data=data, train_dataloader=train_dataloader,
              eval_dataloader=eval_dataloader, schedule=schedule, metadata=metadata, model_source=model_source)
    if run.tracking:
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()}
        accelerator.init_trackers("mambavl", config=flat)

    finished = resume(run)
    if finished is not None:
        return finished
    train_loop(run)
    result = save_final(run)
    if after_training is not None:
        result.update(after_training(run) or {})
    if args.push_to_hub and accelerator.is_main_process:
        result["hub_commit"] = push_best_model(run)
    if run.tracking:
        accelerator.end_training()
    return result


# ----------------------------------------------------------------------------------------------------------- model
def create_accelerator(args) -> Accelerator:
    kwargs = {"gradient_accumulation_steps": args.gradient_accumulation_steps}
    if args.mixed_precision is not None:
        kwargs["mixed_precision"] = args.mixed_precision
    if args.report_to not in ("none", "", None):
        kwargs.update(log_with=args.report_to, project_dir=args.output_dir)
    return Accelerator(**kwargs)


def create_model(args) -> tuple[Any, MambaVLProcessor | None, str]:
    """The model to train (seeded by ``--seed``), the processor saved with it when it comes from a checkpoint
    (``None`` for a new model) and where it came from. Its ``config.label_smoothing`` is ``--label_smoothing``: the
    model's own loss reads it, and the saved config says what training used.

    A checkpoint (``--init_from`` / ``--model_name_or_path``) loads through ``load_model_and_processor``, the
    package's one loader: weights lacking tensors of the model (also after ``--fusion_type`` / ``--config_overrides``
    change its architecture) and a processor that does not make the model's inputs are refused there, naming them;
    LoRA adapters are merged into their base. The config fields given here (``--label_smoothing``,
    ``--fusion_type``, ``--config_overrides``) override the checkpoint's."""
    set_seed(args.seed)
    try:
        overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"--config_overrides {args.config_overrides!r}: not valid JSON ({e}); give an object such as "
                         "'{\"hidden_size\": 64}'") from None
    if not isinstance(overrides, dict):
        raise ValueError(f"--config_overrides {args.config_overrides!r}: a JSON {type(overrides).__name__}; give an "
                         "object of config fields such as '{\"hidden_size\": 64}'")
    if overrides.get("label_smoothing", args.label_smoothing) != args.label_smoothing:
        raise ValueError(f"--config_overrides sets label_smoothing={overrides['label_smoothing']} but "
                         f"--label_smoothing is {args.label_smoothing}: give it once, with --label_smoothing")
    overrides["label_smoothing"] = args.label_smoothing
    if args.fusion_type:
        overrides["fusion_type"] = args.fusion_type
    if args.init_from and args.task == "anticipation":
        logger.info(f"anticipation starts from the recognition checkpoint {args.init_from}")
    checkpoint = checkpoint_path(args)
    if checkpoint and not args.dry_run:
        model, processor = load_model_and_processor(checkpoint, model_class=MambaVLForVideoClassification,
                                                     merge_adapters=True, **overrides)
        return model, processor, f"checkpoint {checkpoint}"
    model, source = build_model(
        preset=args.preset, config_name=args.config_name, model_name_or_path=checkpoint,
        vision_backbone=args.vision_backbone, text_backbone=args.text_backbone, config_overrides=overrides,
        meta=args.dry_run,
    )
    return model, None, source


def checkpoint_path(args) -> str | None:
    """The checkpoint the model starts from (``--init_from``, else ``--model_name_or_path``), or None for a new one."""
    return args.init_from or args.model_name_or_path


def is_new_model(args) -> bool:
    return not checkpoint_path(args)


def dry_run_report(args, model, model_source: str, accelerator) -> dict:
    """The resolved optimizer, parameter groups, schedule, batch and regularisation, printed as JSON."""
    if args.lora_r > 0:
        model = apply_lora(model, args, base_path="<dry run>")
    _, specs = param_groups(args, model)
    named = dict(model.named_parameters())
    optimizer = {"name": args.optimizer, "betas": [args.adam_beta1, args.adam_beta2], "eps": args.adam_epsilon}
    if args.optimizer == "sgd":
        optimizer.update(momentum=args.momentum, nesterov=not args.no_nesterov)
    report = {
        "model": model_source,
        "optimizer": optimizer,
        "groups": [{"name": s.name, "lr": s.lr, "weight_decay": s.weight_decay, "num_tensors": len(s.params),
                    "num_parameters": int(sum(named[n].numel() for n in s.params))} for s in specs],
        "schedule": {"name": args.lr_schedule, "warmup_epochs": args.warmup_epochs,
                     "min_lr_ratio": args.min_lr_ratio, "milestones": list(args.lr_milestones),
                     "factors": list(args.lr_factors), "num_train_epochs": args.num_train_epochs},
        "batch": {"per_device_train_batch_size": args.per_device_train_batch_size,
                  "gradient_accumulation_steps": args.gradient_accumulation_steps},
        "regularisation": {"label_smoothing": args.label_smoothing, "mixup_alpha": args.mixup_alpha,
                           "cutmix_alpha": args.cutmix_alpha, "loss": args.loss},
        "args": resolved_arguments(args),
    }
    if accelerator.is_main_process:
        print(json.dumps(report, indent=2, sort_keys=True))
    return report


def create_processor(args, config, processor: MambaVLProcessor | None = None) -> MambaVLProcessor:
    """The checkpoint's ``processor`` (its questions checked against the model by the loader; here also its frames
    and crop, unless the clips are pre-extracted features), else one made for ``config`` with the options' tokenizer
    and augmentation; the config gets the default questions and the pad id of its tokenizer."""
    if processor is not None and args.media != "features":
        processor.check_model_config(config, checkpoint_path(args), questions=False)
    if processor is None:
        processor = MambaVLProcessor.from_config(config, tokenizer=args.tokenizer_name,
                                                 max_length=args.max_question_length, crop_scale=args.crop_scale,
                                                 flip_prob=args.flip_prob, rand_augment=args.rand_augment)
        # The tokenizer may not be the text model's own (the RoBERTa-shaped presets with the package's tokenizer):
        # the saved model derives masks of unmasked questions from this pad id.
        config.question_pad_token_id = processor.tokenizer.pad_token_id
    if not config.default_question_input_ids:
        config.update(processor.default_question_inputs())
    apply_question_pool(processor, args.question_pool, args.question_source)
    return processor


def initialise_model(args, model, processor, train_rows: list[dict], accelerator):
    """New heads start from the training split's class prior (``--init_head_bias``); ``--lora_r`` wraps the model
    with adapters (a new model's random base weights are saved first, for the adapters to point to)."""
    if args.init_head_bias == "prior" or (args.init_head_bias == "auto" and is_new_model(args)):
        init_head_bias_from_prior(model, train_rows)
    if args.lora_r <= 0:
        return model
    base_path = checkpoint_path(args)
    if base_path is None:
        base_path = str((Path(args.output_dir) / "base_model").resolve())
        if accelerator.is_main_process:
            save_model_and_processor(model, processor, base_path)
    model = apply_lora(model, args, base_path=base_path)
    if accelerator.is_main_process:
        model.print_trainable_parameters()
    return model


# ------------------------------------------------------------------------------------------------------------ data
@dataclass
class TrainingData:
    """The run's annotation rows and clip datasets; ``eval_dataset_with(**options)`` builds the evaluation set again
    with other ``build_clip_dataset`` options (frames reversed, questions reordered, ...)."""

    spec: DataSpec
    train_rows: list[dict]
    eval_rows: list[dict]
    train_dataset: Any
    eval_dataset: Any
    eval_dataset_with: Callable[..., Any]
    seconds: float


def load_data(args, processor, config, accelerator) -> TrainingData:
    """The data set (real, or the synthetic one built once), its training and evaluation rows and clip datasets."""
    t0 = time.perf_counter()
    cache_dir = Path(args.data_cache_dir) if args.data_cache_dir else default_cache_dir()
    data = resolve_data(
        args.annotations_dir, args.media_root, args.media, cache_dir=cache_dir, accelerator=accelerator,
        synthetic=synthetic_settings(args),
    )
    window = {"anticipation_time": args.anticipation_time, "observation_time": args.observation_time}
    train_rows = load_rows(data, args.train_split, args.task, limit=args.max_train_samples, **window)
    eval_rows = load_rows(data, args.eval_split, args.task, limit=args.max_eval_samples, **window)
    common = dict(data=data, processor=processor, task=args.task, seed=args.seed,
                  question_source=args.question_source, sampling=args.sampling, stride=args.stride,
                  target_fps=args.target_fps, skip_bad_clips=args.skip_bad_clips, accelerator=accelerator,
                  cache_dir=cache_dir / "clips" if args.cache_clips else None,
                  cache_short_side=args.cache_short_side or getattr(config, "image_size", None),
                  progress=accelerator.is_local_main_process)
    train_dataset = build_clip_dataset(train_rows, split=args.train_split, training=True,
                                       questions_path=args.train_questions_file, **common)
    eval_dataset_with = functools.partial(
        build_clip_dataset, eval_rows, split=args.eval_split, training=False, questions_path=args.eval_questions_file,
        temporal_views=args.temporal_views, spatial_crops=args.spatial_crops, **common)
    eval_dataset = eval_dataset_with()
    for dataset in (train_dataset, eval_dataset):
        dataset.check_labels(config.num_verb_classes, config.num_noun_classes)
    seconds = time.perf_counter() - t0
    logger.info(f"data: {data.dataset} ({data.annotations_dir}); {len(train_dataset)} training and "
                f"{len(eval_dataset)} {args.eval_split} clips; {seconds:.1f} s")
    return TrainingData(data, train_rows, eval_rows, train_dataset, eval_dataset, eval_dataset_with, seconds)


def create_dataloaders(args, data: TrainingData) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    train_dataloader = build_dataloader(data.train_dataset, args.per_device_train_batch_size, shuffle=True,
                                        seed=args.seed, num_workers=args.num_workers)
    eval_dataloader = build_dataloader(data.eval_dataset, args.per_device_eval_batch_size, shuffle=False,
                                       seed=args.seed, num_workers=args.num_workers)
    return train_dataloader, eval_dataloader


# ------------------------------------------------------------------------------------------------------- optimiser
def param_groups(args, model):
    lrs = {"lr": args.lr, "lr_backbone": args.lr_backbone, "lr_mamba": args.lr_mamba}
    return build_param_groups(model, **lrs, weight_decay=args.weight_decay, state_params_group=args.state_params_group,
                              decay_state_params=args.decay_state_params, decay_all=args.decay_all_params)


def create_optimizer(args, model) -> tuple[torch.optim.Optimizer, list]:
    """The optimizer over the backbone / Mamba / rest groups, and the groups' specs (names, rates, decay)."""
    groups, specs = param_groups(args, model)
    optimizer = build_optimizer(groups, args.optimizer, momentum=args.momentum, nesterov=not args.no_nesterov,
                                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    return optimizer, specs


@dataclass(frozen=True)
class Schedule:
    """The run's length in optimizer steps of all processes together (the learning-rate schedule steps once each)."""

    steps_per_epoch: int
    max_train_steps: int
    num_train_epochs: int


def create_schedule(args, num_clips: int, num_processes: int) -> Schedule:
    per_epoch = steps_per_epoch(num_clips, args.per_device_train_batch_size, num_processes,
                                args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * per_epoch
    return Schedule(per_epoch, max_train_steps, math.ceil(max_train_steps / per_epoch))


def create_loss(args, config, train_rows: list[dict], device) -> VerbNounLoss | None:
    """None for ``--loss ce`` (the model's own ``outputs.loss``), else the long-tail loss over the training split's
    class counts, smoothing as the model's config says."""
    if args.loss not in LONG_TAIL_LOSSES:
        return None
    return VerbNounLoss(args.loss, class_counts(train_rows, "verb_class", config.num_verb_classes),
                        class_counts(train_rows, "noun_class", config.num_noun_classes),
                        beta=args.class_balanced_beta, tau=args.logit_adjustment_tau,
                        label_smoothing=config.label_smoothing).to(device)


def run_metadata(args, recipe, accelerator, model, model_source: str, data: DataSpec, specs) -> dict:
    """What run_metadata.json and every checkpoint record: arguments, recipe, versions, seeds, world, model (its
    record taken before ``prepare``: FSDP flattens what it wraps)."""
    return {
        "args": resolved_arguments(args),
        "recipe": recipe,
        "versions": package_versions(),
        "git_commit": git_commit(),
        "seeds": {"seed": args.seed, "data_order": "numpy permutation of (seed, epoch)",
                  "clips": "clip_generator(seed, epoch, sample_index)",
                  "dropout_and_mixup": "torch.manual_seed(step_seed(seed, epoch, batch, rank)) per batch"},
        "world_size": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "model": model_source,
        "dataset": data.dataset,
        "parameter_groups": [{"name": s.name, "lr": s.lr, "weight_decay": s.weight_decay, "num_tensors": len(s.params)}
                             for s in specs],
        **runs.model_record(model),
    }


# ------------------------------------------------------------------------------------------------------------ loop
def new_state() -> dict:
    """The loop's state, saved in every checkpoint and restored on resume."""
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_metric": None, "best_epoch": None,
            "history": [], "bad_train_clips": [], "nonfinite_steps": [], "last_checkpoint": None}


@dataclass
class Run:
    """A training run in progress: what the loop, the evaluations and the saves share."""

    args: argparse.Namespace
    accelerator: Accelerator
    model: Any
    processor: Any
    optimizer: Any
    lr_scheduler: Any
    loss_fn: VerbNounLoss | None
    data: TrainingData
    train_dataloader: Any
    eval_dataloader: Any
    schedule: Schedule
    metadata: dict
    model_source: str
    state: dict = field(default_factory=new_state)
    running: list = field(default_factory=list)  # losses since the last log line
    last_metrics: dict | None = None
    last_predictions: Any = None
    training_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def tracking(self) -> bool:
        return self.args.report_to not in ("none", "", None)

    @property
    def mixup(self) -> dict | None:
        args = self.args
        if args.mixup_alpha <= 0 and args.cutmix_alpha <= 0:
            return None
        return {"mixup_alpha": args.mixup_alpha, "cutmix_alpha": args.cutmix_alpha, "prob": args.mixup_prob,
                "switch_prob": args.mixup_switch_prob}

    @functools.cached_property
    def config(self):
        unwrapped = self.accelerator.unwrap_model(self.model)
        base = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
        return base.config

    @property
    def checkpoint_every(self) -> int | None:
        """``--checkpointing_steps N``: N; "epoch" / "no": None."""
        steps = self.args.checkpointing_steps
        return int(steps) if steps.isdigit() else None

    @property
    def metric_name(self) -> str:
        return self.args.metric_for_best_model or default_metric_for_best_model(self.args.task)


def resume(run: Run) -> dict | None:
    """Restore the checkpoint ``--resume_from_checkpoint`` names, if any (refused when its settings differ); returns
    the result of a run that had already finished, else None."""
    args, accelerator, state, output_dir = run.args, run.accelerator, run.state, run.output_dir
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        checkpointing.clean_stale_temporaries(output_dir)
    accelerator.wait_for_everyone()
    folder = checkpointing.resolve_resume_checkpoint(output_dir, args.resume_from_checkpoint)
    if args.resume_from_checkpoint and folder is None:
        logger.info(f"--resume_from_checkpoint {args.resume_from_checkpoint}: no complete checkpoint in "
                    f"{output_dir}; starting from scratch")
    if folder is None:
        return None
    run.metadata["resumptions"] = runs.check_resume(folder, run.metadata, args.allow_changed_args)
    loaded = checkpointing.load_checkpoint(accelerator, folder)
    state.update({k: loaded[k] for k in state if k in loaded})
    state["last_checkpoint"] = str(folder)
    logger.info(f"resumed from {folder}: epoch {state['epoch']}, batch {state['step_in_epoch']}, "
                f"step {state['global_step']}")
    finished = runs.finished_summary(output_dir, state["global_step"], run.schedule.max_train_steps)
    if finished is None:
        return None
    logger.warning(f"{output_dir}: this run already finished at step {state['global_step']} (see "
                   f"{output_dir / runs.SUMMARY_FILE}); nothing to do. Raise --num_train_epochs or "
                   "--max_train_steps to train it further.")
    if run.tracking:
        accelerator.end_training()
    return {"metrics": finished.get("final_metrics"), "global_step": state["global_step"],
            "output_dir": str(output_dir), "bad_train_clips": finished.get("bad_training_clips", []),
            "finished_before": True}


def train_loop(run: Run) -> None:
    """Epochs of training steps, an evaluation every ``--eval_every_epochs`` (and after the last), checkpoints."""
    args, accelerator, state, schedule = run.args, run.accelerator, run.state, run.schedule
    total_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("***** Running training *****")
    logger.info(f"  clips = {len(run.data.train_dataset)}, epochs = {schedule.num_train_epochs}, total batch = "
                f"{total_batch}, optimizer steps = {schedule.max_train_steps}, model = {run.model_source}")
    progress = tqdm(range(schedule.max_train_steps), disable=not accelerator.is_local_main_process, desc="train")
    progress.update(state["global_step"])
    t_train = time.perf_counter()
    for epoch in range(state["epoch"], schedule.num_train_epochs):
        if state["global_step"] >= schedule.max_train_steps:
            break
        train_epoch(run, epoch, progress)
        last_epoch = epoch + 1 == schedule.num_train_epochs or state["global_step"] >= schedule.max_train_steps
        if (epoch + 1) % args.eval_every_epochs == 0 or last_epoch:
            evaluate_epoch(run, epoch)
        if args.checkpointing_steps == "epoch":
            save_checkpoint(run, state["global_step"])
    run.training_seconds = time.perf_counter() - t_train - run.eval_seconds
    progress.close()


def train_epoch(run: Run, epoch: int, progress) -> None:
    """One epoch (the rest of it, when resumed mid-epoch) of training steps."""
    state = run.state
    # The prepared loader passes the epoch to the sampler (and would reset it from its own counter otherwise); the
    # dataset seeds frame positions and augmentation with it.
    run.train_dataloader.set_epoch(epoch)
    run.data.train_dataset.set_epoch(epoch)
    run.model.train()
    skip = state["step_in_epoch"] if epoch == state["epoch"] else 0
    batches = run.accelerator.skip_first_batches(run.train_dataloader, skip) if skip else run.train_dataloader
    for batch_index, batch in enumerate(batches, start=skip):
        training_step(run, batch, epoch, batch_index)
        if not run.accelerator.sync_gradients:
            continue
        if after_optimizer_step(run, epoch, progress) >= run.schedule.max_train_steps:
            break
    state["epoch"], state["step_in_epoch"] = epoch + 1, 0


def training_step(run: Run, batch: dict, epoch: int, batch_index: int) -> None:
    """Forward, loss, backward and (at the end of an accumulation) the optimizer step of one batch. A non-finite loss
    on any process stops the run, or with ``--skip_nonfinite_steps`` skips the step."""
    args, accelerator, state = run.args, run.accelerator, run.state
    rank = accelerator.process_index
    # Dropout and mixup draw from (seed, epoch, batch, rank) alone: a resumed run repeats them exactly.
    torch.manual_seed(step_seed(args.seed, epoch, batch_index, rank))
    generator = torch.Generator().manual_seed(step_seed(args.seed, epoch, batch_index, rank, 1))
    with accelerator.accumulate(run.model):
        loss, _ = compute_loss(run.model, batch, run.loss_fn, num_verbs=run.config.num_verb_classes,
                               num_nouns=run.config.num_noun_classes, mixup=run.mixup, generator=generator)
        if faults.nan_loss_step(state["global_step"] + 1):
            loss = loss * float("nan")
        losses = accelerator.gather(loss.detach().float().reshape(1))
        finite = bool(torch.isfinite(losses).all())
        if finite:
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                accelerator.clip_grad_norm_(run.model.parameters(), args.max_grad_norm)
            run.optimizer.step()
            run.optimizer.zero_grad()
        elif args.skip_nonfinite_steps:
            run.optimizer.zero_grad()
            state["nonfinite_steps"].append(state["global_step"] + 1)
            logger.warning(f"non-finite loss at step {state['global_step'] + 1}: step skipped")
        else:
            last = state["last_checkpoint"] or "none (no checkpoint was written yet)"
            message = (f"non-finite loss ({losses.tolist()}) at optimizer step {state['global_step'] + 1}, "
                       f"epoch {epoch}, batch {batch_index}; stopping. The last good checkpoint is {last}: "
                       "resume with --resume_from_checkpoint (lower the learning rate or use "
                       "--mixed_precision no), or pass --skip_nonfinite_steps to skip such steps.")
            accelerator.end_training()
            raise FloatingPointError(message)
    bad = batch["index"][~batch["valid"].bool()].tolist()
    state["bad_train_clips"].extend(run.data.train_rows[i]["narration_id"] for i in bad)
    state["step_in_epoch"] = batch_index + 1
    if finite:
        run.running.append(float(loss.detach()))


def after_optimizer_step(run: Run, epoch: int, progress) -> int:
    """Advance the schedule and the step count, log every ``--logging_steps``, checkpoint every
    ``--checkpointing_steps``; returns the step."""
    args, state = run.args, run.state
    run.lr_scheduler.step()
    state["global_step"] += 1
    progress.update(1)
    step = state["global_step"]
    if step % args.logging_steps == 0 or step == run.schedule.max_train_steps:
        mean_loss = float(np.mean(run.running)) if run.running else float("nan")
        lr = run.optimizer.param_groups[-1]["lr"]
        state["history"].append({"kind": "train", "step": step, "epoch": epoch, "loss": mean_loss, "lr": lr})
        progress.set_postfix(loss=f"{mean_loss:.3f}")
        if run.tracking:
            run.accelerator.log({"train/loss": mean_loss, "train/lr": lr}, step=step)
        run.running = []
    faults.kill_point("after_step", step)
    if run.checkpoint_every and step % run.checkpoint_every == 0:
        save_checkpoint(run, step)
    return step


def save_checkpoint(run: Run, step: int) -> None:
    """The Accelerate state and the loop's state, written whole or not at all (see ``checkpointing``)."""
    state, output_dir = run.state, run.output_dir
    try:
        folder = checkpointing.save_checkpoint(
            run.accelerator, output_dir, step, {k: v for k, v in state.items() if k != "last_checkpoint"},
            run.metadata, total_limit=run.args.checkpoints_total_limit,
            disk_full_hint=runs.disk_full_hint(output_dir))
    except DiskFullError:
        raise
    except OSError as e:  # a lost mount, say: what survived and how to go on
        last = state["last_checkpoint"] or "none (no checkpoint was written yet)"
        raise OSError(e.errno, f"could not write the checkpoint of step {step} in {output_dir} ({e}); nothing "
                               f"of it was kept. The last good checkpoint is {last}: free space and resume with "
                               "--resume_from_checkpoint latest.") from e
    state["last_checkpoint"] = str(folder)


# ------------------------------------------------------------------------------------------------------ evaluation
def evaluate(run: Run, description: str = "eval", **dataset_options) -> tuple[Any, dict]:
    """(predictions, metrics) of the model on the evaluation split; ``dataset_options`` (``build_clip_dataset``
    arguments such as ``reverse_frames``) evaluate a variant of the split instead."""
    args, accelerator = run.args, run.accelerator
    dataloader = run.eval_dataloader
    if dataset_options:
        dataloader = accelerator.prepare(build_dataloader(run.data.eval_dataset_with(**dataset_options),
                                                          args.per_device_eval_batch_size, shuffle=False,
                                                          seed=args.seed, num_workers=args.num_workers))
    eval_rows = run.data.eval_rows
    predictions = predict(run.model, dataloader, accelerator, eval_rows, description=description)
    observation = [r.get("observation_clipped", False) for r in eval_rows] if args.task == "anticipation" else None
    metrics = score(predictions, task=args.task, split=args.eval_split, question_source=args.question_source,
                    observation_clipped=observation)
    return predictions, metrics


def evaluate_epoch(run: Run, epoch: int) -> None:
    """Evaluate after ``epoch``, log the metrics, and save the model when it is the best so far."""
    args, state = run.args, run.state
    t_eval = time.perf_counter()
    predictions, metrics = evaluate(run)
    run.eval_seconds += time.perf_counter() - t_eval
    run.last_metrics, run.last_predictions = metrics, predictions
    value = metrics.get(run.metric_name)
    if value is None:
        raise KeyError(f"--metric_for_best_model {run.metric_name!r} is not one of the metrics: {sorted(metrics)}")
    state["history"].append({"kind": "eval", "step": state["global_step"], "epoch": epoch + 1, "metrics": metrics})
    logger.info(f"epoch {epoch + 1}: " + ", ".join(
        f"{k} {metrics[k]:.2f}" for k in ("all_verb_top1", "all_noun_top1", "all_action_top1", "all_action_mt5r")
        if k in metrics))
    if run.tracking:
        run.accelerator.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
                            step=state["global_step"])
    if state["best_metric"] is None or (value == value and value > state["best_metric"]):
        state["best_metric"], state["best_epoch"] = value, epoch + 1
        payload = metrics_payload(metrics, task=args.task, split=args.eval_split, dataset=run.data.spec.dataset,
                                  question_source=args.question_source, epoch=epoch + 1,
                                  global_step=state["global_step"])
        save_best(run.accelerator, run.model, run.processor, run.output_dir / "best_model", predictions, payload,
                  merge=args.merge_lora, hint=runs.disk_full_hint(run.output_dir))


# ------------------------------------------------------------------------------------------------------------ save
def save_final(run: Run) -> dict:
    """final_model/, run_metadata.json, the training curves and train_summary.json (last: its presence says the run
    ended); prints the final metric table. Returns the run's result."""
    args, accelerator, state, output_dir = run.args, run.accelerator, run.state, run.output_dir
    bad_train = sorted(set(gather_object(state["bad_train_clips"])))
    unwrapped = accelerator.unwrap_model(run.model)
    state_dict = accelerator.get_state_dict(run.model)
    summary = {"global_step": state["global_step"], "epochs": state["epoch"], "best_metric": state["best_metric"],
               "metric_for_best_model": run.metric_name, "best_epoch": state["best_epoch"],
               "bad_training_clips": bad_train, "num_bad_training_clips": len(bad_train),
               "nonfinite_steps_skipped": state["nonfinite_steps"], "final_metrics": run.last_metrics,
               "training_seconds": run.training_seconds, "eval_seconds": run.eval_seconds}
    if run.last_metrics is None:  # resumed after its last step (its final save had failed): evaluate it again
        run.last_predictions, run.last_metrics = evaluate(run)
        summary["final_metrics"] = run.last_metrics
    if accelerator.is_main_process:
        hint = runs.disk_full_hint(output_dir)
        with atomic_write(output_dir / "final_model", directory=True, what="final_model/", hint=hint) as tmp:
            save_model_and_processor(unwrapped, run.processor, tmp, state_dict=state_dict)
            faults.disk_full_point("final_model")
        atomic.write_text(output_dir / "run_metadata.json", json.dumps(run.metadata, indent=2, default=str) + "\n",
                          hint=hint)
        if not args.no_plot:
            with atomic_write(output_dir / "training_curves.png", hint=hint) as tmp:
                plot_curves(state["history"], tmp)
        atomic.write_text(output_dir / runs.SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n",
                          hint=hint)
        if bad_train:
            logger.warning(f"{len(bad_train)} training clips could not be read and were skipped: {bad_train}")
        print(format_metric_table(run.last_metrics, args.question_source, title=f"{args.eval_split}, final model:"))
    return {"metrics": run.last_metrics, "global_step": state["global_step"], "output_dir": str(output_dir),
            "bad_train_clips": bad_train, "data_seconds": run.data.seconds,
            "training_seconds": run.training_seconds, "eval_seconds": run.eval_seconds}


def save_best(accelerator, model, processor, folder: Path, predictions, payload: dict, merge: bool = False,
              hint: str | None = None) -> None:
    """The best model so far (model + processor, adapters only for LoRA), its metrics.json and per-clip predictions,
    each folder written whole or not at all."""
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return
    with atomic_write(folder, directory=True, what=f"{folder.name}/", hint=hint) as tmp:
        save_model_and_processor(unwrapped, processor, tmp, state_dict=state_dict if not
                                 hasattr(unwrapped, "peft_config") else None)
        write_metrics_json(tmp / "metrics.json", payload)
        write_predictions(tmp, predictions)
    if merge and hasattr(unwrapped, "merge_and_unload"):
        import copy

        merged = copy.deepcopy(unwrapped).merge_and_unload()
        merged_folder = folder.parent / f"{folder.name}_merged"
        with atomic_write(merged_folder, directory=True, what=f"{merged_folder.name}/", hint=hint) as tmp:
            save_model_and_processor(merged, processor, tmp)


def push_best_model(run: Run) -> str:
    """Push best_model/ (LoRA adapters merged: their base is a local folder the Hub repository could not point to)
    with its metrics and model card; returns the commit id."""
    from modeling_mambavl.hub import push_to_hub
    from modeling_mambavl.saving import load_model_and_processor

    best_dir = run.output_dir / "best_model"
    if not (best_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"--push_to_hub: {best_dir} holds no evaluated model (no evaluation ran)")
    best, best_processor = load_model_and_processor(best_dir, merge_adapters=True)
    commit = push_to_hub(best, best_processor, run.args.hub_model_id, metrics=best_dir / "metrics.json")
    logger.info(f"pushed {best_dir} to {run.args.hub_model_id} ({commit.oid})")
    return commit.oid


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "train_ek100.py"))
