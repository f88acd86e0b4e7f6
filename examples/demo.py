#!/usr/bin/env python
"""The CPU demo behind ``make demo``: train_ek100.py with ``examples/recipes/demo.yaml`` (the tiny preset on the
synthetic EK100-format data), then two controls on the trained model and a summary: the metric table, the controls and
where the time went.

    python examples/demo.py                                # what `make demo` runs (after a timed install)
    python examples/demo.py --fusion_type none --seed 1    # any train_ek100.py option overrides the recipe

Controls: frames reversed (the synthetic data's time-reversal verb pairs, take / put and open / close, must collapse:
one frame cannot tell them apart) and questions shuffled across clips (generic questions are the same for every clip,
so nothing may change). They are written to ``<output_dir>/controls.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from modeling_mambavl.lazy_imports import require_modules

# an inference install (no extras): one line naming the extra, not a traceback
require_modules("demo.py", "accelerate")

from accelerate import PartialState

from modeling_mambavl import atomic
from modeling_mambavl.training import runs

EXAMPLES = Path(__file__).resolve().parent
RECIPE = EXAMPLES / "recipes" / "demo.yaml"

# The time-reversal pairs of the synthetic data (take/put: up/down, open/close: grow/shrink): one frame cannot tell
# them apart, so a model that recognises them must read the frame order.
REVERSAL_VERBS = ("take", "put", "open", "close")
SCORES = ("all_verb_top1", "all_noun_top1", "all_action_top1")


def import_train_script():
    """examples/train_ek100.py as a module (a script beside this one, not part of the package)."""
    if "train_ek100" in sys.modules:
        return sys.modules["train_ek100"]
    spec = importlib.util.spec_from_file_location("train_ek100", EXAMPLES / "train_ek100.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_ek100"] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


train_ek100 = import_train_script()


def parse_args(argv=None) -> tuple[argparse.Namespace, dict]:
    """train_ek100.py's options with the demo recipe as their defaults, and ``--install_seconds``."""
    parser = train_ek100.build_parser(__doc__)
    parser.add_argument("--install_seconds", type=float, default=None,
                        help="seconds the runtime install took (the Makefile times it), shown in the time line")
    argv = list(sys.argv[1:] if argv is None else argv)
    return train_ek100.parse_args(["--recipe", str(RECIPE), *argv], parser)


def main(argv=None) -> dict:
    start = time.perf_counter()
    args, recipe = parse_args(argv)

    def after_training(run) -> dict:
        t0 = time.perf_counter()
        controls = run_controls(run)
        return {"controls": controls, "eval_seconds": run.eval_seconds + time.perf_counter() - t0}

    result = train_ek100.run_training(args, recipe, after_training=after_training)
    if "controls" in result and PartialState().is_main_process:  # a run finished before has nothing new to show
        print_summary(args, result, time.perf_counter() - start)
    return result


def run_controls(run) -> dict:
    """Frames reversed (verbs that are time reversals of each other must collapse) and questions shuffled across clips
    (with generic questions nothing may change), on the trained model; written to controls.json."""
    from modeling_mambavl.ek100 import EK100Vocabulary

    args, eval_rows, metrics = run.args, run.data.eval_rows, run.last_metrics
    vocab = EK100Vocabulary.default()
    pair_ids = {vocab.verb_id(v) for v in REVERSAL_VERBS}
    pairs = np.array([r.get("verb_class") in pair_ids for r in eval_rows])

    def pair_verb_top1(predictions) -> float:
        keep = pairs & predictions.valid
        hits = predictions.verb_logits[keep].argmax(1) == predictions.verb_labels[keep]
        return float(100 * hits.mean()) if keep.any() else float("nan")

    reversed_predictions, reversed_metrics = train_ek100.evaluate(run, "control: reversed", reverse_frames=True)
    order = np.random.default_rng([args.seed, 7]).permutation(len(eval_rows)).tolist()
    _, shuffled_metrics = train_ek100.evaluate(run, "control: shuffled questions", question_order=order)
    controls = {
        "reversal_pair_clips": int(pairs.sum()),
        "reversal_pair_verb_top1": pair_verb_top1(run.last_predictions),
        "reversal_pair_verb_top1_frames_reversed": pair_verb_top1(reversed_predictions),
        "frames_reversed": {k: reversed_metrics[k] for k in SCORES},
        "questions_shuffled": {k: shuffled_metrics[k] for k in SCORES},
        "questions_shuffled_max_change": max(abs(shuffled_metrics[k] - metrics[k]) for k in SCORES),
    }
    if run.accelerator.is_main_process:
        atomic.write_text(Path(args.output_dir) / "controls.json", json.dumps(controls, indent=2) + "\n",
                          hint=runs.disk_full_hint(args.output_dir))
    return controls


def print_summary(args, result: dict, total: float) -> None:
    """The metric table, the controls and the time breakdown."""
    metrics, controls = result["metrics"], result["controls"]
    lines = ["", "=" * 72, "MambaVL CPU demo: tiny preset, synthetic EK100-format data, generic questions", "=" * 72]
    lines.append(f"{'':8s}{'top-1':>8s}{'top-5':>8s}")
    for name in ("verb", "noun", "action"):
        lines.append(f"{name:8s}{metrics[f'all_{name}_top1']:8.1f}{metrics[f'all_{name}_top5']:8.1f}")
    lines.append(f"(validation: {metrics['num_clips_scored']} of {metrics['num_clips']} clips scored, unseen "
                 "videos)")
    if controls:
        lines.append("")
        lines.append(f"control, frames reversed: verb top-1 on the {controls['reversal_pair_clips']} time-reversal-pair "
                     f"clips (take/put, open/close) {controls['reversal_pair_verb_top1']:.1f} -> "
                     f"{controls['reversal_pair_verb_top1_frames_reversed']:.1f}")
        shuffled = controls["questions_shuffled"]
        lines.append(f"control, questions shuffled across clips: verb {shuffled['all_verb_top1']:.1f}, noun "
                     f"{shuffled['all_noun_top1']:.1f}, action {shuffled['all_action_top1']:.1f} (largest change "
                     f"{controls['questions_shuffled_max_change']:.1f} points; generic questions are the same for "
                     "every clip)")
    lines.append("")
    parts = []
    if args.install_seconds is not None:
        parts.append(f"install {args.install_seconds:.0f} s")
    parts += [f"data {result['data_seconds']:.0f} s", f"train {result['training_seconds']:.0f} s",
              f"eval {result['eval_seconds']:.0f} s"]
    lines.append("time: " + ", ".join(parts) + f" (this script {total:.0f} s)")
    lines.append(f"outputs: {args.output_dir} (best_model/, metrics.json, predictions, training_curves.png)")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "demo.py"))
