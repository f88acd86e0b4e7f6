"""The data options that ``examples/train_ek100.py`` and ``examples/eval_ek100.py`` share: one definition, so that a
model trained with some media layout, sampling or question source is evaluated with the same names and defaults."""

from __future__ import annotations

import argparse


def add_data_arguments(group: argparse._ActionsContainer) -> None:
    """Add the shared EK100 data options (media, task, questions, caches, synthetic data, sampling) to ``group``."""
    group.add_argument("--annotations_dir", type=str, default=None,
                       help="epic-kitchens-100-annotations folder; without it, synthetic EK100-format data is used")
    group.add_argument("--media_root", type=str, default=None,
                       help="folder holding rgb_frames/ or videos/ (EK100 layout), or a feature folder")
    group.add_argument("--media", choices=("frames", "video", "features"), default="frames")
    group.add_argument("--task", choices=("recognition", "anticipation"), default="recognition")
    group.add_argument("--anticipation_time", type=float, default=1.0)
    group.add_argument("--observation_time", type=float, default=2.133)
    group.add_argument("--max_eval_samples", type=int, default=None)
    group.add_argument("--question_source", choices=("generic", "file", "predicted", "oracle"), default="generic")
    group.add_argument("--data_cache_dir", type=str, default=None,
                       help="synthetic data and decoded-clip caches (default $MAMBAVL_CACHE or ~/.cache/mambavl)")
    group.add_argument("--cache_clips", action="store_true",
                       help="decode every clip's window once into a uint8 cache (small data sets)")
    group.add_argument("--synthetic_train_clips", type=int, default=400)
    group.add_argument("--synthetic_validation_clips", type=int, default=128)
    group.add_argument("--synthetic_size", type=int, default=112)
    group.add_argument("--sampling", choices=("segment", "dense"), default=None,
                       help="frame sampling (default: segment for recognition, dense end-anchored for anticipation)")
    group.add_argument("--stride", type=int, default=4)
    group.add_argument("--target_fps", type=float, default=30.0)
    group.add_argument("--skip_bad_clips", action="store_true",
                       help="skip unreadable media (counted and listed at the end) instead of stopping")
    group.add_argument("--num_workers", type=int, default=2)


def add_run_arguments(group: argparse._ActionsContainer) -> None:
    """Add the options of resuming into, and locking, a training run's ``--output_dir``."""
    group.add_argument("--allow_changed_args", action="store_true",
                       help="resume although settings that change results (learning rate, batch, schedule, seed, "
                            "data, ...) differ from the checkpoint's; the changes are recorded in run_metadata.json")
    group.add_argument("--break_lock", action="store_true",
                       help="take over an --output_dir locked by a run on another host (only once that run has ended)")
