#!/usr/bin/env python
"""Evaluate a saved MambaVL model on an EPIC-KITCHENS-100 split (or the synthetic EK100-format data) with Accelerate.

    accelerate launch examples/eval_ek100.py --model_name_or_path runs/mambavl/best_model \\
        --annotations_dir epic-kitchens-100-annotations --media_root /data/EK100 --split validation \\
        --temporal_views 2 --spatial_crops 3 --output_dir runs/mambavl/eval_validation

    accelerate launch examples/eval_ek100.py --model_name_or_path runs/mambavl/best_model ... --split test \\
        --submission runs/mambavl/test_submission.zip --sls_pt 2 --sls_tl 3 --sls_td 3

Prints the metric table headed by the question source (``ORACLE QUESTIONS`` when the questions were built from the
ground truth), and writes ``metrics.json`` (labelled splits), per-clip ``predictions.json`` / ``.csv`` and, for the test
split, the challenge submission. Clips whose media cannot be read (``--skip_bad_clips``) are listed and the table says
over how many clips it was computed. The evaluation itself is ``modeling_mambavl.training.evaluation.evaluate_ek100``,
the same as ``mambavl eval``'s.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from modeling_mambavl.lazy_imports import require_modules

# an inference install (no extras): one line naming the extra, not a traceback
require_modules("eval_ek100.py", "accelerate")

from accelerate import Accelerator
from accelerate.logging import get_logger

from modeling_mambavl.atomic import check_target
from modeling_mambavl.saving import load_model_and_processor
from modeling_mambavl.training.arguments import (
    HelpFormatter,
    add_data_arguments,
    check_minimums,
    finish_parser,
)
from modeling_mambavl.training.builders import (
    apply_question_pool,
    default_cache_dir,
    resolve_data,
    synthetic_settings,
)
from modeling_mambavl.training.evaluation import (
    EvaluationArguments,
    evaluate_ek100,
    write_probabilities,
    write_question_predictions,
)
from modeling_mambavl.training.runs import lock_output_dir

logger = get_logger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model_name_or_path", type=str, required=True,
                        help="a folder written by train_ek100.py (best_model/, final_model/) or a Hub id")
    parser.add_argument("--base_model", type=str, default=None, help="base model of a LoRA adapter folder")
    parser.add_argument("--split", type=str, default="validation", help="annotation split to evaluate")
    parser.add_argument("--questions_file", type=str, default=None, help="questions / predictions for this split")
    add_data_arguments(parser.add_argument_group("data"))
    parser.add_argument("--temporal_views", type=int, default=1,
                        help="K temporal views per clip (scores averaged over K x M views)")
    parser.add_argument("--spatial_crops", type=int, default=1, help="M spatial crops per view")
    parser.add_argument("--reverse_frames", action="store_true", help="control: play every clip backwards")
    parser.add_argument("--shuffle_questions", action="store_true", help="control: questions of other clips")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=32, help="clips per process and step")
    parser.add_argument("--action_rule", choices=("official", "independent"), default="official",
                        help="action ranking: the official top-100 x top-100 product, or the authors' lenient "
                             "verb-in-top-5 and noun-in-top-5")
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None,
                        help="autocast dtype (default: Accelerate's configuration)")
    parser.add_argument("--output_dir", type=str, default=None, help="default: <model>/eval_<split>")
    parser.add_argument("--submission", type=str, default=None, help="challenge JSON / zip to write (test split)")
    parser.add_argument("--sls_pt", type=int, default=None, help="supervision level: pretraining (0-5)")
    parser.add_argument("--sls_tl", type=int, default=None, help="supervision level: training labels (0-5)")
    parser.add_argument("--sls_td", type=int, default=None, help="supervision level: training data (0-5)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the frame sampling and of --shuffle_questions")
    parser.add_argument("--write_question_predictions", type=str, default=None, metavar="PATH",
                        help="also write this split's top-k actions as the predictions JSON that --question_source "
                             "predicted reads (a first stage), and probabilities.npz (per-clip verb / noun softmax, "
                             "for averaging models) beside predictions.csv")
    parser.add_argument("--question_top_k", type=int, default=5,
                        help="actions per clip in --write_question_predictions, by the official action score")
    finish_parser(parser)  # HF-standard aliases, --debug; refuses an option without help
    args = parser.parse_args(argv)
    if args.submission and None in (args.sls_pt, args.sls_tl, args.sls_td):
        parser.error("--submission needs --sls_pt, --sls_tl and --sls_td (the challenge's supervision levels)")
    if args.submission and args.question_source == "oracle":
        parser.error("--question_source oracle uses the ground truth; it can never make a challenge submission")
    if args.write_question_predictions and args.question_source == "oracle":
        parser.error("--write_question_predictions with --question_source oracle would pass the ground truth on to "
                     "a second stage; evaluate the first stage with generic, file or predicted questions")
    check_minimums(parser, args)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model_name_or_path) / f"eval_{args.split}"
    # Refused before the evaluation runs, so that a bad output path leaves no half of the outputs behind.
    check_target(output_dir, directory=True, name="--output_dir")
    if args.write_question_predictions:
        check_target(args.write_question_predictions, name="--write_question_predictions")
    accelerator = Accelerator(**({"mixed_precision": args.mixed_precision} if args.mixed_precision else {}))
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    model, processor = load_model_and_processor(args.model_name_or_path, base_model=args.base_model)
    apply_question_pool(processor, args.question_pool, args.question_source)
    model.eval()
    # One evaluation at a time per --output_dir: two would mix their metrics.json, predictions and probabilities.
    with lock_output_dir(accelerator, output_dir):
        return evaluate_into(args, accelerator, output_dir, model, processor)


def evaluate_into(args: argparse.Namespace, accelerator: Accelerator, output_dir: Path, model: Any,
                  processor: Any) -> dict:
    """Evaluate ``model`` on ``args.split`` and write every output into ``output_dir``; returns the summary."""
    cache_dir = Path(args.data_cache_dir) if args.data_cache_dir else default_cache_dir()
    data = resolve_data(
        args.annotations_dir, args.media_root, args.media, cache_dir=cache_dir, accelerator=accelerator,
        synthetic=synthetic_settings(args),
    )
    arguments = EvaluationArguments(
        split=args.split, task=args.task, limit=args.max_eval_samples, anticipation_time=args.anticipation_time,
        observation_time=args.observation_time, question_source=args.question_source,
        questions_path=args.questions_file, temporal_views=args.temporal_views, spatial_crops=args.spatial_crops,
        sampling=args.sampling, stride=args.stride, target_fps=args.target_fps, skip_bad_clips=args.skip_bad_clips,
        clip_cache_dir=cache_dir / "clips" if args.cache_clips else None, reverse_frames=args.reverse_frames,
        shuffle_questions=args.shuffle_questions, seed=args.seed, batch_size=args.per_device_eval_batch_size,
        num_workers=args.num_workers, action_rule=args.action_rule, checkpoint=args.model_name_or_path,
        metrics_path=output_dir / "metrics.json", predictions_dir=output_dir,
    )
    evaluation = evaluate_ek100(model, processor, data, arguments, accelerator=accelerator)
    predictions = evaluation.predictions
    result: dict = {"num_clips": predictions.num_clips, "num_clips_scored": predictions.num_clips_scored,
                    "bad_clips": predictions.bad_clips, "output_dir": str(output_dir)}
    if args.write_question_predictions and accelerator.is_main_process:
        write_question_predictions(args.write_question_predictions, predictions, top_k=args.question_top_k)
        write_probabilities(output_dir / "probabilities.npz", predictions)
    if evaluation.metrics is not None:
        result["metrics"] = evaluation.metrics
    if args.submission and accelerator.is_main_process:
        from modeling_mambavl.ek100 import write_submission

        keep = predictions.valid
        if not keep.all():
            raise RuntimeError(f"{int((~keep).sum())} clips could not be read; a submission needs every segment "
                               f"(e.g. {predictions.bad_clips[:5]})")
        path = write_submission(args.submission, predictions.narration_ids, predictions.verb_logits,
                                predictions.noun_logits, args.task, args.sls_pt, args.sls_tl, args.sls_td)
        logger.info(f"submission written to {path}")
        result["submission"] = str(path)
    accelerator.wait_for_everyone()
    return result


if __name__ == "__main__":
    import sys

    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "eval_ek100.py"))
