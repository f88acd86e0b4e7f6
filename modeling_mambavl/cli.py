"""``mambavl``: predict actions in a clip, evaluate on EK100, write a model card.

    mambavl predict VIDEO [--model ID_OR_PATH] [--questions VERB_Q NOUN_Q] [--top-k 5] [--json]
    mambavl eval --model ID_OR_PATH --annotations DIR --media-root DIR [--split validation] [--output metrics.json]
                 [--temporal-views K] [--spatial-crops M] [--skip-bad-clips] [--json]
    mambavl card CHECKPOINT_DIR [--repo-id ORG/NAME] [--example-video CLIP | --synthetic-example] [--metrics PATH]

A user error prints one line naming the file or option and the fix (exit status 2); ``--debug`` shows the traceback.
The CLI loads checkpoints with the package's own classes and never runs code bundled with a checkpoint.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .lazy_imports import missing_extra

# USER_ERRORS is built on first use (see __getattr__ below).
__all__ = ["main", "build_parser", "run_main", "user_error_message", "USER_ERRORS"]  # noqa: F822

MODEL_ENV = "MAMBAVL_MODEL"
DEBUG_HELP = "on an error, show the full traceback instead of one line"


def _user_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import StrictDataclassFieldValidationError

    from .processors.video_io import MediaError
    from .training.runs import RunRefused

    # Bad media, bad paths, bad values, a model folder or repo that cannot be read, an output folder in use or a
    # checkpoint that does not match (RunRefused), a full disk (an OSError), a config field of the wrong type
    # (transformers' strict dataclass check, e.g. from --config_overrides): the user's to fix.
    return (MediaError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError, OSError,
            RunRefused, StrictDataclassFieldValidationError)


def __getattr__(name: str) -> Any:
    # USER_ERRORS names the training tools' RunRefused: built on first use, so `mambavl --help` imports no more than
    # the package.
    if name == "USER_ERRORS":
        globals()[name] = _user_errors()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def user_error_message(error: BaseException, args: argparse.Namespace | None = None) -> str:
    """One line for a user error: the error's own message (which names the file or field) and what fixes it."""
    from .processors.video_io import MediaError

    text = " ".join(str(error).split()) or type(error).__name__
    if "Repo id must be in the form" in text:  # HFValidationError, or transformers' OSError re-raising it
        # huggingface_hub's message about repo id syntax, for what was meant as a local folder that is missing
        name = text.rsplit(": '", 1)[-1].split("'")[0]
        return (f"{name}: no such folder, and not a Hub repo id; give a folder written by save_pretrained (model and "
                "processor) or a Hub repo id such as org/name")
    if isinstance(error, MediaError):
        if error.window is not None and getattr(args, "window", None) is not None:
            fix = "give a --window START END inside the video, or leave --window out for the whole clip"
        else:
            fix = "give a video file PyAV can decode (MP4, MKV, WebM, ...) or an EK100 frame folder"
    elif isinstance(error, FileNotFoundError) and error.filename is not None:  # the OS's message names no fix
        fix = "check the path"
    elif isinstance(error, OSError) and getattr(args, "model", None) and str(args.model) in text:
        fix = "--model takes a folder written by save_pretrained or a Hub repo id"
    else:
        return text
    return f"{text}; {fix}"


def _missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The line for a library of an extra that this install lacks (``mambavl eval`` in an inference install), or
    None for any other missing module (a bug, shown with its traceback)."""
    converted = missing_extra(error, "this command")
    return None if converted is error else str(converted)


def run_main(main_function: Any, prog: str, argv: Sequence[str] | None = None) -> int:
    """Run a script's ``main(argv)`` and return its exit status (``main``'s own when it returns an int, else 0): a
    user error (``USER_ERRORS``) prints one line, ``prog: message; fix``, and gives 2; ``--debug`` among the arguments
    re-raises it with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = main_function(argv)
    except ModuleNotFoundError as e:
        message = _missing_extra_message(e)
        if message is None or "--debug" in argv:
            raise
    except _user_errors() as e:
        if "--debug" in argv:
            raise
        message = user_error_message(e)
    else:
        return result if isinstance(result, int) and not isinstance(result, bool) else 0
    # The traceback is gone once the except block ends: progress bars held by the failed call's frames close (and
    # draw their last line) now, so the message stays the last line the user sees.
    gc.collect()
    sys.stderr.flush()
    print(f"{prog}: {message} (--debug shows the traceback)", file=sys.stderr)
    return 2


def _model_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument(
        "--model", "-m", default=os.environ.get(MODEL_ENV), required=required and MODEL_ENV not in os.environ,
        metavar="ID_OR_PATH",
        help=f"checkpoint folder or Hub repo id (saved with its processor); default: ${MODEL_ENV}",
    )
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo (default: main)")
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu (default: cuda if available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mambavl",
        description="MambaVL: egocentric action recognition by questioning (Mamba Fusion, ICASSP 2025).",
        epilog="Run 'mambavl COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    predict = commands.add_parser(
        "predict", help="top-k verbs, nouns and actions of a video",
        description="Classify the action in a video clip: the top-k verbs, nouns and actions (softmax scores). "
                    "Without --questions the model's default questions are used.",
        epilog="example: mambavl predict clip.mp4 --model <your-org>/mambavl-vitb --questions "
               "'What is the person doing with the knife?' 'What is being cut?'",
    )
    predict.add_argument("video", metavar="VIDEO", help="video file (any format PyAV reads) or EK100 frame folder")
    _model_argument(predict)
    predict.add_argument("--questions", "-q", nargs="+", metavar="Q", default=None,
                         help="one question per question type of the model, in order (verb question, noun question)")
    predict.add_argument("--top-k", "-k", type=int, default=5, help="how many classes to list (default: 5)")
    predict.add_argument("--window", nargs=2, type=float, metavar=("START", "END"), default=None,
                         help="only the clip between START and END seconds")
    predict.add_argument("--json", action="store_true", help="print JSON instead of tables")
    predict.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser(
        "eval", help="EK100 metrics of a model on an annotated split",
        description="Evaluate a model on an EPIC-KITCHENS-100 split (or the synthetic EK100-format data): print the "
                    "metric table and write metrics.json (the EK100Metric keys, "
                    "{all,tail,unseen}_{verb,noun,action}_top{1,5}). The same evaluation as "
                    "examples/eval_ek100.py (modeling_mambavl.training.evaluation.evaluate_ek100).",
        epilog="example: mambavl eval --model ckpt --annotations epic-kitchens-100-annotations "
               "--media-root EPIC-KITCHENS --media video --output ckpt/metrics.json",
    )
    _model_argument(evaluate)
    evaluate.add_argument("--annotations", required=True, metavar="DIR",
                          help="folder with EPIC_100_{train,validation}.csv (and the class CSVs)")
    evaluate.add_argument("--media-root", required=True, metavar="DIR",
                          help="folder with rgb_frames/PXX/PXX_YY/ (--media frames) or videos/PXX/PXX_YY.MP4")
    evaluate.add_argument("--media", choices=("frames", "video", "features"), default="frames",
                          help="media layout (default: frames); features: --media-root is a folder written by "
                               "examples/extract_features.py")
    evaluate.add_argument("--split", default="validation", help="labelled split (default: validation)")
    evaluate.add_argument("--task", choices=("recognition", "anticipation"), default="recognition")
    evaluate.add_argument("--question-source", choices=("generic", "file", "predicted", "oracle"), default="generic",
                          help="how questions are made (default: generic); 'oracle' results are labelled as such")
    evaluate.add_argument("--questions-file", default=None, metavar="PATH", help="for --question-source file/predicted")
    evaluate.add_argument("--dataset-name", default="epic-kitchens-100",
                          help="the dataset field of metrics.json (synthetic-ek100 for the synthetic data)")
    evaluate.add_argument("--action-rule", choices=("official", "independent"), default="official",
                          help="action ranking: the official top-100 x top-100 product, or the authors' lenient "
                               "verb-in-top-5 and noun-in-top-5 (default: official)")
    evaluate.add_argument("--temporal-views", type=int, default=1, metavar="K",
                          help="K temporal views per clip, logits averaged over K x M views (default: 1)")
    evaluate.add_argument("--spatial-crops", type=int, default=1, metavar="M", help="M spatial crops per view "
                          "(default: 1)")
    evaluate.add_argument("--skip-bad-clips", action="store_true",
                          help="score the clips that can be read: an unreadable one stays in num_clips, is left out "
                               "of num_clips_scored and is named in a warning (default: stop with the clip named)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default: 8)")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N clips")
    evaluate.add_argument("--output", "-o", default=None, metavar="PATH", help="write metrics.json here")
    evaluate.add_argument("--json", action="store_true", help="print metrics.json instead of the metric table")
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    evaluate.set_defaults(run=_eval)

    card = commands.add_parser(
        "card", help="write or refresh README.md (the model card) of a checkpoint folder",
        description="Write the model card of a saved checkpoint: YAML metadata (licence, pipeline tag, widget, "
                    "model-index from metrics.json), usage code, results, limitations, demo link and citation.",
        epilog="example: mambavl card ckpt --repo-id <your-org>/mambavl-vitb --example-video clip.mp4",
    )
    card.add_argument("checkpoint", metavar="CHECKPOINT_DIR", help="folder written by save_pretrained")
    card.add_argument("--repo-id", default=None, help="repo the usage code loads from (default: <namespace>/<folder>)")
    card.add_argument("--metrics", default=None, metavar="PATH", help="metrics.json (default: CHECKPOINT_DIR/metrics.json)")
    card.add_argument("--example-video", default=None, metavar="CLIP",
                      help="clip for the widget; copied to CHECKPOINT_DIR/examples/, the model's top-5 shown")
    card.add_argument("--synthetic-example", action="store_true",
                      help="save a synthetic clip (the synthetic EK100-format data's take-plate motion) as "
                           "CHECKPOINT_DIR/examples/synthetic_take_plate.mp4 and use it as --example-video")
    card.add_argument("--space", default=None, metavar="ORG/NAME", help="demo Space to link (default: the project's)")
    card.add_argument("--license", default=None, help="licence id (default: cc-by-nc-4.0 for EK100 models)")
    card.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    card.set_defaults(run=_card)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _check_model_argument(args: argparse.Namespace) -> None:
    """A --model that is meant as a folder (absolute, relative with ./, or deeper than org/name) must exist: the Hub
    client's message about repo id syntax would not say that the folder is missing."""
    if not args.model:
        raise SystemExit(f"mambavl {args.command}: give --model (a checkpoint folder or Hub repo id) or set "
                         f"${MODEL_ENV}")
    model = str(args.model)
    if not Path(model).exists() and (Path(model).is_absolute() or model.startswith(".") or model.count("/") > 1):
        raise FileNotFoundError(f"--model {model}: no such folder; give a folder written by save_pretrained (model "
                                "and processor) or a Hub repo id such as org/name")


def _load_pipeline(args: argparse.Namespace):
    import torch
    from transformers import pipeline

    from . import pipelines  # noqa: F401 (registers the task)
    from .saving import load_model_and_processor

    _check_model_argument(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_model_and_processor(args.model, revision=args.revision, device=device)
    return pipeline(pipelines.TASK, model=model, processor=processor, device=model.device)


def _table(title: str, rows: list[dict[str, Any]]) -> str:
    width = max([len(r["label"]) for r in rows] + [len(title)])
    lines = [f"{title:<{width}}  score"]
    lines += [f"{r['label']:<{width}}  {r['score']:.4f}" for r in rows]
    return "\n".join(lines)


def _predict(args: argparse.Namespace) -> int:
    if not Path(args.video).exists():
        raise SystemExit(f"mambavl predict: VIDEO {args.video} does not exist; give the path of a video file or an "
                         "EK100 frame folder")
    pipe = _load_pipeline(args)
    kwargs: dict[str, Any] = {"top_k": args.top_k}
    if args.questions is not None:
        kwargs["questions"] = args.questions
    if args.window is not None:
        kwargs["window"] = tuple(args.window)
    result = pipe(str(args.video), **kwargs)
    if args.json:
        print(json.dumps({"video": str(args.video), "model": str(args.model), **result}, indent=2))
        return 0
    print("questions: " + " | ".join(result["questions"]))
    for key in ("verbs", "nouns", "actions", "labels"):
        if key in result:
            print()
            print(_table(key[:-1], result[key]))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import torch

    from .model_card import metrics_json_text
    from .saving import load_model_and_processor
    from .training.builders import DataSpec
    from .training.evaluation import EvaluationArguments, evaluate_ek100

    _check_model_argument(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_model_and_processor(args.model, revision=args.revision, device=device)
    data = DataSpec(Path(args.annotations), Path(args.media_root), args.media, args.dataset_name)
    arguments = EvaluationArguments(
        split=args.split, task=args.task, limit=args.limit, require_labels=True, question_source=args.question_source,
        questions_path=args.questions_file, temporal_views=args.temporal_views, spatial_crops=args.spatial_crops,
        skip_bad_clips=args.skip_bad_clips, batch_size=args.batch_size, action_rule=args.action_rule,
        checkpoint=args.model, metrics_path=args.output, print_table=not args.json,
    )
    evaluation = evaluate_ek100(model, processor, data, arguments)
    if args.json:
        print(metrics_json_text(evaluation.payload), end="")
    return 0


def _card(args: argparse.Namespace) -> int:
    from .hub import write_model_card
    from .model_card import DEFAULT_SPACE

    example = args.example_video
    if args.synthetic_example:
        if example is not None:
            raise ValueError("give --example-video or --synthetic-example, not both")
        from .ek100.synthetic import write_synthetic_clip

        if (Path(args.checkpoint) / "config.json").is_file():  # else write_model_card names what is missing
            example = write_synthetic_clip(Path(args.checkpoint) / "examples" / "synthetic_take_plate.mp4")
    path = write_model_card(args.checkpoint, repo_id=args.repo_id, metrics=args.metrics,
                            example_video=example, space_id=args.space or DEFAULT_SPACE,
                            license=args.license)
    print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mambavl`` command. A user error (bad media, a window past the end of the video, a missing file, a bad
    value) prints one line naming the file or field and the fix, and returns 2; ``--debug`` raises it instead."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ModuleNotFoundError as e:
        message = _missing_extra_message(e)
        if message is None or args.debug:
            raise
        print(f"mambavl {args.command}: {message}", file=sys.stderr)
        return 2
    except _user_errors() as e:
        if args.debug:
            raise
        print(f"mambavl {args.command}: {user_error_message(e, args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
