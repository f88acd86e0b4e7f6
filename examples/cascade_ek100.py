#!/usr/bin/env python
"""The question cascade on EPIC-KITCHENS-100 (or the synthetic EK100-format data): a first stage predicts actions,
and a second-stage MambaVL reads questions built from its top-k (``--question_source predicted``).

    python examples/cascade_ek100.py --output_dir runs/cascade --num_folds 5 --seed 0 \\
        --annotations_dir epic-kitchens-100-annotations --media_root /data/EK100 -- --recipe my.yaml

    python examples/cascade_ek100.py --output_dir runs/cascade --task anticipation -- --num_train_epochs 20

Stages (each runs ``examples/train_ek100.py`` / ``examples/eval_ek100.py`` as a subprocess, through ``--launcher``,
e.g. ``--launcher "accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml"``):

1. **First stage, out of fold.** The training *videos* are split into K folds (a video is never split; folds are
   balanced by clip count, drawn from ``--seed``). Fold model k trains on the other K-1 folds (generic questions,
   ``--stage1_fusion``) and predicts the training clips of fold k, which it never saw, and the validation and test
   clips. Validation / test predictions are the mean of the K fold models' probabilities (no extra full-data model),
   so the second stage sees predictions of the same quality at training and test time. Everything is merged into one
   predictions JSON (``stage1/predictions.json``: ``narration_id -> [[verb, noun, score], ...]``, top
   ``--question_top_k`` actions by the official action score). For ``--task anticipation`` the first stage is
   trained for anticipation and predicts from the observed window.
2. **Second stage**: trained and evaluated with ``--question_source predicted`` on that file.
3. **Controls** (``--controls``): ``shuffled`` (the second stage evaluated with the predicted questions of other
   clips), ``none`` (the question-free ``fusion_type="none"`` model, generic questions), ``oracle`` (trained and
   evaluated on the evaluation split with questions built from the ground truth, masked: an upper bound, labelled
   ORACLE QUESTIONS; the question sources refuse oracle questions for the test split, so this row has none).

Resumable: every finished step leaves ``step.json`` in its folder and a rerun skips it (an interrupted training
resumes from its last checkpoint); a rerun with other settings into the same ``--output_dir`` is refused.
``--output_dir`` ends with ``results.json`` and the table it prints. Arguments after ``--`` go to every training run
(e.g. ``--num_train_epochs``, ``--lr``, ``--recipe``); the data options below go to every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from modeling_mambavl.lazy_imports import require_modules

# an inference install (no extras): one line naming the extra, not a traceback
require_modules("cascade_ek100.py", "datasets", "accelerate")

from modeling_mambavl import atomic
from modeling_mambavl.ek100.annotations import ORACLE_QUESTIONS, SPLIT_FILES
from modeling_mambavl.training.arguments import (
    HelpFormatter,
    add_data_arguments,
    check_minimums,
    finish_parser,
)
from modeling_mambavl.training.builders import default_cache_dir, resolve_data, synthetic_settings
from modeling_mambavl.training.evaluation import (
    Predictions,
    read_probabilities,
    score,
    write_probabilities,
    write_question_predictions,
)

EXAMPLES = Path(__file__).resolve().parent
TRAIN = EXAMPLES / "train_ek100.py"
EVAL = EXAMPLES / "eval_ek100.py"
CONTROLS = ("shuffled", "none", "oracle")
STEP_MARKER = "step.json"
# Data options the cascade sets itself for each run.
OWN_DATA_OPTIONS = frozenset({"question_source", "annotations_dir", "media_root"})
# Data options of the predicted questions (a question pool phrasing them): the second stage's runs only.
STAGE2_DATA_OPTIONS = frozenset({"question_pool"})


# `--demo` (what `make demo-questions` runs): a small cascade on the default synthetic data on the CPU. The training
# arguments are those of `train_ek100.py --demo` (see DEMO_RECIPE there) with fewer epochs, so that the first stage is
# not saturated and three folds and the second stage fit the demo's time; one thread per run.
DEMO_OPTIONS = ["--output_dir", "outputs/demo-questions", "--num_folds", "3", "--controls", "shuffled", "--jobs", "2",
                "--synthetic_train_clips", "1600", "--synthetic_size", "64", "--cache_clips", "--num_workers", "1"]
DEMO_TRAINING = ["--optimizer", "adamw", "--lr", "3e-3", "--weight_decay", "0.05", "--lr_schedule", "cosine",
                 "--max_grad_norm", "1.0", "--warmup_epochs", "1", "--num_train_epochs", "12",
                 "--eval_every_epochs", "12", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size",
                 "64", "--label_smoothing", "0", "--crop_scale", "0.9", "1.0", "--checkpointing_steps", "1000",
                 "--checkpoints_total_limit", "1", "--num_threads", "1", "--no_plot"]


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str], tuple[argparse.Action, ...]]:
    """(arguments, the training arguments after ``--``, the data options' actions)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    if "--demo" in argv:  # the demo's settings first: options given on the command line come later and win
        argv = [*DEMO_OPTIONS, *argv]
        extra = [*DEMO_TRAINING, *extra]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--demo", action="store_true",
                        help="the CPU demo behind make demo-questions: the settings of DEMO_OPTIONS / DEMO_TRAINING in "
                             "this script, which options given here override")
    parser.add_argument("--output_dir", type=str, default="outputs/cascade",
                        help="folder of every stage's outputs, results.json and the markers that make a rerun resume")
    parser.add_argument("--num_folds", type=int, default=3, help="K: first-stage folds of the training videos")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and of every run")
    parser.add_argument("--question_top_k", type=int, default=5, help="first-stage actions per clip in the questions")
    parser.add_argument("--preset", type=str, default="tiny", help="MambaVLConfig preset of every model")
    parser.add_argument("--stage1_fusion", type=str, default=None,
                        help="fusion of the first-stage models (default: the preset's; e.g. none)")
    parser.add_argument("--controls", nargs="*", choices=CONTROLS, default=list(CONTROLS),
                        help="control rows: shuffled predicted questions, the question-free none fusion, ORACLE")
    parser.add_argument("--checkpoint", choices=("final_model", "best_model"), default="final_model",
                        help="which saved model of each training run predicts and is evaluated (best_model is "
                             "chosen on the evaluation split)")
    parser.add_argument("--eval_split", type=str, default="validation", help="labelled split of every table row")
    parser.add_argument("--jobs", type=int, default=1,
                        help="steps run at a time where they are independent (fold models; second stage and "
                             "controls); each one's output then goes to <its folder>.log")
    parser.add_argument("--launcher", type=str, default=None,
                        help='command that runs the scripts, e.g. "accelerate launch --num_processes 2" (default: '
                             "this Python)")
    data = add_data_arguments(parser.add_argument_group("data (passed to every run)"))
    finish_parser(parser)
    args = parser.parse_args(argv)
    # out-of-fold predictions need 2 folds; the data options' minimums are the training script's
    check_minimums(parser, args)
    if args.question_source != "generic":
        parser.error(f"--question_source {args.question_source}: the cascade chooses the question source of each "
                     "stage itself; leave it out")
    check_training_arguments(extra, data)
    if args.eval_split not in SPLIT_FILES or args.eval_split == "test":
        parser.error(f"--eval_split {args.eval_split}: the table needs a labelled split (train or validation)")
    return args, extra, data


def check_training_arguments(extra: Sequence[str], data: Sequence[argparse.Action]) -> None:
    """Refuse data options (``data``: their actions) among the training arguments (after ``--``, or in a ``--recipe``
    file there): the evaluation runs would not see them, so they go before ``--``, where every run gets them."""
    dests = {a.dest: a.option_strings[0] for a in data if a.option_strings}
    flags = {flag for a in data for flag in a.option_strings}
    given = [token.split("=", 1)[0] for token in extra if token.split("=", 1)[0] in flags]
    if "--recipe" in extra and extra.index("--recipe") + 1 < len(extra):
        recipe = Path(extra[extra.index("--recipe") + 1])
        if recipe.is_file():
            from modeling_mambavl.training.recipe import load_recipe

            given += [f"{dests[k]} (in {recipe})" for k in load_recipe(recipe) if k in dests]
    if given:
        raise ValueError(f"data options among the training arguments after --: {', '.join(given)}; give them before "
                         "--, where every training and evaluation run of the cascade gets them")


def data_options(args: argparse.Namespace, data: Sequence[argparse.Action]) -> list[str]:
    """The data options given on the command line (those differing from their defaults), as arguments again, except
    the ones the cascade sets per run: every option ``add_data_arguments`` defines (``data``: the actions it
    returned) travels, new ones included."""
    out: list[str] = []
    for action in data:
        if action.dest in OWN_DATA_OPTIONS | STAGE2_DATA_OPTIONS or not action.option_strings:
            continue
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def read_split_rows(annotations_dir: Path, split: str) -> tuple[list[str], list[dict]]:
    """(header, rows) of a split's annotation CSV, as written (no parsing of values)."""
    path = annotations_dir / SPLIT_FILES[split]
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = list(reader.fieldnames or ())
    for column in ("narration_id", "video_id"):
        if column not in header:
            raise ValueError(f"{path}: no {column!r} column; the cascade splits the training clips by video")
    return header, rows


def assign_folds(rows: Sequence[dict], num_folds: int, seed: int) -> list[list[str]]:
    """K lists of video ids: every video in exactly one fold, folds balanced by clip count (largest videos first,
    each to the fold with the fewest clips so far; ties and the order of equal videos drawn from ``seed``)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["video_id"]] = counts.get(row["video_id"], 0) + 1
    if len(counts) < 2:
        raise ValueError(f"the training split has {len(counts)} video(s), and out-of-fold predictions need at least 2 "
                         "(a video is never split across folds); give a training split with clips of 2 or more videos")
    if len(counts) < num_folds:
        raise ValueError(f"--num_folds {num_folds}: the training split has only {len(counts)} videos, and a video is "
                         f"never split across folds; use --num_folds {len(counts)} or fewer")
    rng = np.random.default_rng([seed, 20])
    videos = sorted(counts)
    order = rng.permutation(len(videos))
    videos = sorted((videos[i] for i in order), key=lambda v: -counts[v])  # stable: equal sizes keep the draw
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    sizes = [0] * num_folds
    for video in videos:
        k = min(range(num_folds), key=lambda j: (sizes[j], j))
        folds[k].append(video)
        sizes[k] += counts[video]
    return [sorted(f) for f in folds]


def write_split_subset(source: Path, target: Path, split: str, header: list[str], rows: Sequence[dict]) -> None:
    """``target``'s annotation file of ``split`` holding ``rows`` (and the same subset of the split's ``.pkl``, when
    ``source`` has one, as the official annotations do)."""
    path = target / SPLIT_FILES[split]
    with atomic.atomic_write(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    pickle = (source / SPLIT_FILES[split]).with_suffix(".pkl")
    if pickle.is_file():
        import pandas as pd

        frame = pd.read_pickle(pickle)
        ids = [r["narration_id"] for r in rows]
        frame = frame.loc[ids] if frame.index.name == "narration_id" else frame[frame["narration_id"].isin(ids)]
        with atomic.atomic_write(path.with_suffix(".pkl")) as tmp:
            frame.to_pickle(tmp)


def annotation_folder(source: Path, target: Path, train_rows: Sequence[dict], header: list[str]) -> Path:
    """A copy of the annotation folder ``source`` whose training split holds only ``train_rows`` (every other file,
    validation and test included, as it is)."""
    target.mkdir(parents=True, exist_ok=True)
    own = {SPLIT_FILES["train"], Path(SPLIT_FILES["train"]).with_suffix(".pkl").name}
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name not in own:
            with atomic.atomic_write(target / path.name) as tmp:
                Path(tmp).write_bytes(path.read_bytes())
    write_split_subset(source, target, "train", header, train_rows)
    return target


def make_folds(annotations_dir: Path, folder: Path, num_folds: int, seed: int) -> dict:
    """Write, per fold k, ``fold_k/train_annotations`` (training split = the other folds' videos) and
    ``fold_k/heldout_annotations`` (training split = fold k's videos, predicted by fold model k), and the manifest
    ``folds.json``: per fold its training / held-out videos and narration ids."""
    header, rows = read_split_rows(annotations_dir, "train")
    folds = assign_folds(rows, num_folds, seed)
    manifest = {"num_folds": num_folds, "seed": seed, "annotations_dir": str(annotations_dir), "folds": []}
    for k, heldout_videos in enumerate(folds):
        held = set(heldout_videos)
        train_rows = [r for r in rows if r["video_id"] not in held]
        heldout_rows = [r for r in rows if r["video_id"] in held]
        fold_dir = folder / f"fold_{k}"
        annotation_folder(annotations_dir, fold_dir / "train_annotations", train_rows, header)
        annotation_folder(annotations_dir, fold_dir / "heldout_annotations", heldout_rows, header)
        manifest["folds"].append({
            "fold": k,
            "train_videos": sorted({r["video_id"] for r in train_rows}),
            "heldout_videos": heldout_videos,
            "train_narrations": [r["narration_id"] for r in train_rows],
            "heldout_narrations": [r["narration_id"] for r in heldout_rows],
        })
    atomic.write_text(folder / "folds.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


# ------------------------------------------------------------------------------------------------------------ steps
def run_command(command: list[str], stdout=None) -> tuple[int, float | None]:
    """Run ``command``; its exit status and the CPU seconds it used with the processes it waited for (data-loader
    workers), measured per command even when several run at once (``None`` where ``os.wait4`` is missing)."""
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT if stdout else None)
    if not hasattr(os, "wait4"):
        return process.wait(), None
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, round(usage.ru_utime + usage.ru_stime, 1)


class Cascade:
    """Runs the steps, each once: a step whose folder holds ``step.json`` is done."""

    def __init__(self, args: argparse.Namespace, extra: list[str], data_actions: Sequence[argparse.Action]) -> None:
        self.args = args
        self.extra = extra
        self.out = Path(args.output_dir)
        self.launcher = shlex.split(args.launcher) if args.launcher else [sys.executable]
        self.data = data_options(args, data_actions)
        cache = Path(args.data_cache_dir) if args.data_cache_dir else default_cache_dir()
        self.spec = resolve_data(args.annotations_dir, args.media_root, args.media, cache_dir=cache,
                                 synthetic=synthetic_settings(args))
        # Runs on all the data name it as the user did (the synthetic set by its settings); fold runs get their
        # annotation folder and the resolved media.
        self.full_data = [*self.data] + (["--annotations_dir", args.annotations_dir] if args.annotations_dir else []) \
            + (["--media_root", args.media_root] if args.media_root else [])
        self.commands: dict[str, str] = {}
        # e.g. --question_pool: phrases the second stage's predicted questions, meaningless for the other sources
        self.stage2 = [item for a in data_actions if a.dest in STAGE2_DATA_OPTIONS
                       and getattr(args, a.dest, None) is not None for item in (a.option_strings[0],
                                                                                 str(getattr(args, a.dest)))]

    def fold_data(self, annotations: Path, whole_split: bool = False) -> list[str]:
        """Data options of a fold run; ``whole_split``: without ``--max_eval_samples`` (every held-out training clip
        needs its prediction)."""
        media = ["--media_root", str(self.spec.media_root)] if self.spec.media_root else []
        data = list(self.data)
        if whole_split and "--max_eval_samples" in data:
            at = data.index("--max_eval_samples")
            del data[at: at + 2]
        return [*data, "--annotations_dir", str(annotations), *media]

    def step(self, name: str, folder: Path, script: Path, arguments: list[str]) -> Path:
        """Run ``script`` once for the step ``name`` (skipped when ``folder/step.json`` exists)."""
        command = [*self.launcher, str(script), *arguments]
        self.commands[name] = shlex.join(command)
        marker = folder / STEP_MARKER
        if marker.is_file():
            print(f"[cascade] {name}: done before, skipped ({marker})", flush=True)
            return folder
        print(f"[cascade] {name}: {shlex.join(command)}", flush=True)
        start = time.perf_counter()
        if self.args.jobs > 1:  # steps side by side: each one's output in its own log
            log = folder.parent / f"{folder.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w", encoding="utf-8") as f:
                returncode, cpu = run_command(command, stdout=f)
            where = f"its output is in {log}, ending: {log.read_text(encoding='utf-8').strip()[-300:]!r}"
        else:
            returncode, cpu = run_command(command)
            where = "its error is printed above"
        if returncode != 0:
            raise ChildProcessError(f"step {name!r} failed (exit {returncode}; {where}): {shlex.join(command)}. "
                                    "Finished steps are kept: fix the cause and run the cascade again")
        seconds = time.perf_counter() - start
        print(f"[cascade] {name}: finished in {seconds:.0f} s", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(marker, json.dumps({"step": name, "command": command, "seconds": round(seconds, 1),
                                              "cpu_seconds": cpu}, indent=1) + "\n")
        return folder

    def parallel(self, tasks: Sequence) -> list:
        """Call each of ``tasks`` (no arguments), ``--jobs`` at a time; their results in order."""
        if self.args.jobs == 1:
            return [task() for task in tasks]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.args.jobs) as pool:
            futures = [pool.submit(task) for task in tasks]
            return [future.result() for future in futures]

    def train(self, name: str, folder: Path, data: list[str], *options: str) -> Path:
        """A training run into ``folder`` (resumed from its last checkpoint if it was interrupted); returns the model
        that predicts (``--checkpoint``)."""
        a = self.args
        self.step(name, folder, TRAIN, [*data, *self.extra, "--preset", a.preset, "--seed", str(a.seed),
                                        "--eval_split", a.eval_split, *options, "--output_dir", str(folder),
                                        "--resume_from_checkpoint", "latest"])
        return folder / a.checkpoint

    def evaluate(self, name: str, model: Path, folder: Path, data: list[str], split: str, *options: str) -> Path:
        self.step(name, folder, EVAL, ["--model_name_or_path", str(model), *data, "--split", split,
                                       "--seed", str(self.args.seed), *options, "--output_dir", str(folder)])
        return folder


def stage1(cascade: Cascade) -> tuple[Path, dict]:
    """K fold models; their out-of-fold training predictions and mean validation / test predictions, merged."""
    a, out = cascade.args, cascade.out / "stage1"
    manifest_path = out / "folds.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    else:
        manifest = make_folds(cascade.spec.annotations_dir, out, a.num_folds, a.seed)
    splits = [s for s in ("validation", "test") if (cascade.spec.annotations_dir / SPLIT_FILES[s]).is_file()]
    fusion = ["--fusion_type", a.stage1_fusion] if a.stage1_fusion else []

    def fold_model(fold: dict) -> dict[str, Path]:
        """Fold model k: trained on the other folds' videos; predicts fold k's training clips and every clip of
        validation / test. Returns each split's probabilities file."""
        k = fold["fold"]
        fold_dir = out / f"fold_{k}"
        model = cascade.train(f"stage 1, fold {k}: training", fold_dir / "model",
                              cascade.fold_data(fold_dir / "train_annotations"), *fusion)
        files = {}
        for split, folder_name in (("train", "heldout_annotations"), *((s, "train_annotations") for s in splits)):
            folder = fold_dir / f"predict_{split}"
            cascade.evaluate(f"stage 1, fold {k}: predicting {split}", model, folder,
                             cascade.fold_data(fold_dir / folder_name, whole_split=split == "train"), split,
                             "--write_question_predictions", str(folder / "questions.json"), "--question_top_k",
                             str(a.question_top_k))
            files[split] = folder / "probabilities.npz"
        return files

    files = cascade.parallel([lambda fold=fold: fold_model(fold) for fold in manifest["folds"]])
    heldout = [f["train"] for f in files]
    per_split = {split: [f[split] for f in files] for split in splits}
    return merge_stage1(cascade, manifest, heldout, per_split)


def concatenate(parts: Sequence[Predictions]) -> Predictions:
    """One :class:`Predictions` holding the rows of ``parts`` in order."""
    return Predictions(
        narration_ids=[n for p in parts for n in p.narration_ids],
        participant_ids=[n for p in parts for n in p.participant_ids],
        **{name: np.concatenate([getattr(p, name) for p in parts])
           for name in ("verb_logits", "noun_logits", "verb_labels", "noun_labels", "valid")},
    )


def merge_stage1(cascade: Cascade, manifest: dict, heldout: list[Path], per_split: dict[str, list[Path]]) \
        -> tuple[Path, dict]:
    """``stage1/predictions.json`` (every split), ``probabilities_<split>.npz``, ``predicted_by.json`` (which fold
    model predicted each training clip) and the first stage's metrics; checks that every training clip is predicted
    exactly once, by the model of the fold that held its video out."""
    a, out = cascade.args, cascade.out / "stage1"
    path = out / "predictions.json"
    parts = {"train": [read_probabilities(p) for p in heldout]}
    predicted_by: dict[str, int] = {}
    for fold, part in zip(manifest["folds"], parts["train"]):
        if part.narration_ids != fold["heldout_narrations"]:
            raise RuntimeError(f"fold {fold['fold']}: the held-out predictions do not match the fold's clips "
                               f"(manifest {out / 'folds.json'})")
        for nid in part.narration_ids:
            if nid in predicted_by:
                raise RuntimeError(f"training clip {nid!r} is predicted by folds {predicted_by[nid]} and "
                                   f"{fold['fold']}; the folds of {out / 'folds.json'} overlap")
            predicted_by[nid] = fold["fold"]
    _, train_rows = read_split_rows(cascade.spec.annotations_dir, "train")
    missing = [r["narration_id"] for r in train_rows if r["narration_id"] not in predicted_by]
    if missing:
        raise RuntimeError(f"{len(missing)} training clips have no out-of-fold prediction, e.g. {missing[:3]}")
    merged = {"train": concatenate(parts["train"])}
    for split, files in per_split.items():
        merged[split] = read_probabilities(files)  # the mean of the K fold models
    for split, predictions in merged.items():
        write_probabilities(out / f"probabilities_{split}.npz", predictions)
    write_question_predictions(path, concatenate(list(merged.values())), top_k=a.question_top_k)
    atomic.write_text(out / "predicted_by.json", json.dumps(predicted_by, indent=0) + "\n")
    metrics = {}
    for split in ("train", a.eval_split):
        if split in merged and (merged[split].verb_labels >= 0).any():
            values = score(merged[split], task=a.task, split=split, question_source="generic")
            # strict JSON, as metrics.json: an empty subset's metric is null, never NaN
            metrics[split] = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
    atomic.write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return path, metrics


def stage2_and_controls(cascade: Cascade, predictions: Path) -> dict[str, dict]:
    """The second stage on the predicted questions, then the controls; returns each row's metrics."""
    a, out, data = cascade.args, cascade.out, cascade.full_data
    split = a.eval_split
    predicted = ["--question_source", "predicted", *cascade.stage2]
    rows: dict[str, dict] = {}
    trainings = {"stage2": ("stage 2: training", [*predicted, "--train_questions_file", str(predictions),
                                                  "--eval_questions_file", str(predictions)])}
    if "none" in a.controls:
        trainings["control_none"] = ("control none: training", ["--question_source", "generic", "--fusion_type",
                                                                "none"])
    if "oracle" in a.controls:
        trainings["control_oracle"] = ("control oracle: training", ["--question_source", "oracle"])
    models = dict(zip(trainings, cascade.parallel([
        lambda key=key, name=name, options=options: cascade.train(name, out / key / "model", data, *options)
        for key, (name, options) in trainings.items()])))
    on_predicted = [*predicted, "--questions_file", str(predictions)]
    evaluations = [("stage 2: predicted questions", "stage2", models["stage2"], on_predicted)]
    if "shuffled" in a.controls:
        evaluations.append(("stage 2: predicted questions shuffled across clips", "stage2_shuffled",
                            models["stage2"], [*on_predicted, "--shuffle_questions"]))
    if "none" in a.controls:
        evaluations.append(("control: question-free fusion none", "control_none", models["control_none"],
                            ["--question_source", "generic"]))
    if "oracle" in a.controls:
        evaluations.append((f"{ORACLE_QUESTIONS} (ground-truth questions, masked; an upper bound)", "control_oracle",
                            models["control_oracle"], ["--question_source", "oracle"]))
    folders = cascade.parallel([
        lambda key=key, model=model, options=options: cascade.evaluate(
            f"{key}: evaluating {split}", model, out / key / f"eval_{split}", data, split, *options)
        for _, key, model, options in evaluations])
    for (title, key, _, _), folder in zip(evaluations, folders):
        payload = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows[key] = {"title": title, "metrics": payload["metrics"], "question_source": payload["question_source"],
                     "command": cascade.commands[f"{key}: evaluating {split}"]}
        if payload.get("label"):
            rows[key]["label"] = payload["label"]
    return rows


HEADLINE = {"recognition": ("top1", "top-1"), "anticipation": ("mt5r", "mean top-5 recall")}


def format_table(results: dict) -> str:
    """The rows of ``results.json`` as a plain-text table (verb / noun / action, the task's headline metric)."""
    kind, name = HEADLINE[results["task"]]
    lines = [f"question cascade, {results['task']}, {results['eval_split']} ({name}, %), K={results['num_folds']} "
             f"folds, seed {results['seed']}, top-{results['question_top_k']} predicted actions"]
    lines.append(f"{'row':58s}{'verb':>8s}{'noun':>8s}{'action':>8s}")
    for row in results["rows"].values():
        cells = []
        for x in ("verb", "noun", "action"):
            v = row["metrics"].get(f"all_{x}_{kind}")
            cells.append(f"{v:8.2f}" if isinstance(v, (int, float)) and not math.isnan(v) else f"{'-':>8s}")
        lines.append(f"{row['title'][:58]:58s}" + "".join(cells))
    return "\n".join(lines)


def check_settings(out: Path, settings: dict) -> None:
    """Refuse to resume into ``out`` with other settings than the ones it was started with."""
    path = out / "cascade.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise ValueError(f"{path}: this --output_dir was started with other settings ({', '.join(changed)}: "
                             f"{[before.get(k) for k in changed]} then, {[settings.get(k) for k in changed]} now); "
                             "give another --output_dir or the same settings")
    else:
        atomic.write_text(path, json.dumps(settings, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> dict:
    args, extra, data_actions = parse_args(argv)
    start = time.perf_counter()
    out = atomic.check_target(args.output_dir, directory=True, name="--output_dir")
    # what the results depend on; how they are run (jobs, launcher, workers) and which controls may change
    ignored = ("output_dir", "debug", "launcher", "controls", "num_workers", "demo", "jobs")
    settings = {k: v for k, v in vars(args).items() if k not in ignored}
    settings["training_arguments"] = extra
    cascade = Cascade(args, extra, data_actions)
    if not (out / "stage1" / "folds.json").is_file():
        # Before cascade.json records the settings: a --num_folds the data cannot take must not pin the folder to it.
        assign_folds(read_split_rows(cascade.spec.annotations_dir, "train")[1], args.num_folds, args.seed)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    predictions, stage1_metrics = stage1(cascade)
    rows = {"stage1": {"title": f"stage 1 alone (mean of {args.num_folds} fold models)",
                       "metrics": stage1_metrics.get(args.eval_split, {}), "question_source": "generic"}}
    rows.update(stage2_and_controls(cascade, predictions))
    results = {"task": args.task, "eval_split": args.eval_split, "num_folds": args.num_folds, "seed": args.seed,
               "question_top_k": args.question_top_k, "preset": args.preset, "training_arguments": extra,
               "predictions": str(predictions),
               "stage1_train_out_of_fold": stage1_metrics.get("train", {}), "rows": rows,
               "seconds_this_run": round(time.perf_counter() - start, 1)}
    atomic.write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    print(format_table(results), flush=True)
    return results


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "cascade_ek100.py"))
