"""EK100 evaluation: the one code path of ``mambavl eval``, ``examples/eval_ek100.py`` and the training loop.

``evaluate_ek100`` is the whole evaluation of a saved model on a split (what the CLI and the script call): data,
views, bad clips, ``predict``, ``score``, the printed table and ``metrics.json``. ``predict`` runs a model over a
prepared DataLoader of :class:`~modeling_mambavl.training.data.EK100ClipDataset` items on every process, averages the
logits of a clip's views (K temporal x M spatial) before anything else, and gathers the rows with
``accelerator.gather_for_metrics`` (which drops the samples Accelerate repeats to even out the last batch), so the
result has each row of the split exactly once. ``score`` computes ``EK100Metric`` over the clips that could be read;
the clips that could not are reported, never silently dropped from the count (``num_clips`` vs ``num_clips_scored``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import atomic
from ..ek100.annotations import ORACLE_QUESTIONS
from ..ek100.metric import softmax
from ..model_card import metrics_json_text, split_metrics
from .builders import DataSpec, build_clip_dataset, build_dataloader, load_rows

__all__ = [
    "Evaluation",
    "EvaluationArguments",
    "Predictions",
    "checkpoint_position",
    "evaluate_ek100",
    "metrics_payload",
    "format_metric_table",
    "predict",
    "question_predictions",
    "read_probabilities",
    "score",
    "write_metrics_json",
    "write_predictions",
    "write_probabilities",
    "write_question_predictions",
]

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Per-row model outputs of one split, in dataset row order.

    ``verb_logits`` (N, num_verbs) and ``noun_logits`` (N, num_nouns) are float32 (view-averaged); ``valid`` (N,) is
    False for clips whose media could not be read (their logits are meaningless).
    """

    narration_ids: list[str]
    participant_ids: list[str]
    verb_logits: np.ndarray
    noun_logits: np.ndarray
    verb_labels: np.ndarray
    noun_labels: np.ndarray
    valid: np.ndarray
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def num_clips(self) -> int:
        return len(self.narration_ids)

    @property
    def num_clips_scored(self) -> int:
        return int(self.valid.sum())

    @property
    def bad_clips(self) -> list[str]:
        return [n for n, ok in zip(self.narration_ids, self.valid) if not ok]


def _forward_views(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Verb and noun logits (B, C) of a batch, averaged over views when ``pixel_values`` is (B, V, T, C, H, W)."""
    inputs = {k: batch[k] for k in ("question_input_ids", "question_attention_mask") if k in batch}
    if "video_features" in batch:
        out = model(video_features=batch["video_features"], **inputs)
        return out.verb_logits.float(), out.noun_logits.float()
    pixels = batch["pixel_values"]
    if pixels.dim() == 5:
        out = model(pixel_values=pixels, **inputs)
        return out.verb_logits.float(), out.noun_logits.float()
    batch_size, views = pixels.shape[:2]
    repeated = {k: v.repeat_interleave(views, dim=0) for k, v in inputs.items()}
    out = model(pixel_values=pixels.flatten(0, 1), **repeated)
    verb = out.verb_logits.float().reshape(batch_size, views, -1).mean(1)
    noun = out.noun_logits.float().reshape(batch_size, views, -1).mean(1)
    return verb, noun


@torch.no_grad()
def predict(model: torch.nn.Module, dataloader: Any, accelerator: Any, rows: Sequence[dict],
            progress: bool = True, description: str = "eval") -> Predictions:
    """Run ``model`` over ``dataloader`` (prepared by ``accelerator``) and gather one prediction per row of ``rows``.

    Every process sees its shard; the gathered result is complete and in row order on every process. With
    ``accelerator=None`` one process runs it on the model's device (the batches are moved there).
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = None if accelerator is not None else next(model.parameters()).device
    main = accelerator is None or accelerator.is_local_main_process
    indices, valid, verbs, nouns = [], [], [], []
    bar = tqdm(dataloader, desc=description, disable=not (progress and main), leave=False)
    for batch in bar:
        if device is not None:
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        verb, noun = _forward_views(model, batch)
        gathered = (batch["index"], batch["valid"], verb, noun)
        if accelerator is not None:
            gathered = accelerator.gather_for_metrics(gathered)
        for store, value in zip((indices, valid, verbs, nouns), gathered):
            store.append(value.cpu())
    model.train(was_training)
    index = torch.cat(indices).numpy()
    order = np.argsort(index, kind="stable")
    index = index[order]
    verb_logits = torch.cat(verbs).numpy()[order]
    noun_logits = torch.cat(nouns).numpy()[order]
    ok = torch.cat(valid).numpy()[order].astype(bool)
    if len(index) != len(rows) or (index != np.arange(len(rows))).any():
        missing = sorted(set(range(len(rows))) - set(index.tolist()))
        raise RuntimeError(
            f"evaluation gathered {len(index)} predictions for {len(rows)} rows (missing rows e.g. {missing[:5]}); the "
            "DataLoader must cover the split once, in any order (no drop_last)"
        )
    return Predictions(
        narration_ids=[r["narration_id"] for r in rows],
        participant_ids=[r.get("participant_id") or "" for r in rows],
        verb_logits=verb_logits,
        noun_logits=noun_logits,
        verb_labels=np.array([r.get("verb_class", -100) if r.get("verb_class") is not None else -100 for r in rows]),
        noun_labels=np.array([r.get("noun_class", -100) if r.get("noun_class") is not None else -100 for r in rows]),
        valid=ok,
        seen=index,
    )


def score(predictions: Predictions, task: str = "recognition", split: str = "validation",
          question_source: str | None = None, action_rule: str = "official",
          observation_clipped: Sequence[bool] | None = None) -> dict[str, Any]:
    """``EK100Metric`` over the valid (readable, labelled) clips; adds ``num_clips`` / ``num_clips_scored``."""
    from ..ek100 import EK100Metric

    keep = predictions.valid & (predictions.verb_labels >= 0) & (predictions.noun_labels >= 0)
    results: dict[str, Any]
    if keep.any():
        metric = EK100Metric(task, split=split, question_source=question_source)
        extra = {}
        if observation_clipped is not None:
            extra["observation_clipped"] = np.asarray(observation_clipped)[keep]
        results = metric.compute(
            verb_logits=predictions.verb_logits[keep], noun_logits=predictions.noun_logits[keep],
            verb_labels=predictions.verb_labels[keep], noun_labels=predictions.noun_labels[keep],
            narration_ids=[n for n, k in zip(predictions.narration_ids, keep) if k],
            participant_ids=[p for p, k in zip(predictions.participant_ids, keep) if k],
            action_rule=action_rule, **extra,
        )
    else:
        results = {}
    results = {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in results.items()}
    results["num_clips"] = predictions.num_clips
    results["num_clips_scored"] = int(keep.sum())
    return results


def default_metric_for_best_model(task: str) -> str:
    """Action top-1 for recognition, action mean top-5 recall for anticipation (the challenges' headline numbers)."""
    return "all_action_mt5r" if task == "anticipation" else "all_action_top1"


_TABLE_ROWS = (("all", "top1"), ("all", "top5"), ("tail", "top1"), ("unseen", "top1"), ("all", "mt5r"),
               ("tail", "mt5r"), ("unseen", "mt5r"))


def format_metric_table(metrics: dict[str, Any], question_source: str | None = None, title: str = "") -> str:
    """A plain-text table (rows: all/tail/unseen x top-1/top-5/mT5R; columns verb/noun/action), headed by the question
    source, and by ``ORACLE QUESTIONS`` when the questions came from the ground truth."""
    lines = []
    if question_source == "oracle" or metrics.get("label") == ORACLE_QUESTIONS:
        lines.append(f"*** {ORACLE_QUESTIONS}: questions built from the ground-truth narrations; not a valid result ***")
    head = f"{title} " if title else ""
    lines.append(f"{head}questions: {question_source or metrics.get('question_source') or 'unknown'}; clips scored: "
                 f"{metrics.get('num_clips_scored', '?')} of {metrics.get('num_clips', '?')}")
    lines.append(f"{'':14s}{'verb':>9s}{'noun':>9s}{'action':>9s}")
    for subset, kind in _TABLE_ROWS:
        keys = [f"{subset}_{x}_{kind}" for x in ("verb", "noun", "action")]
        if not any(k in metrics for k in keys):
            continue
        cells = []
        for k in keys:
            v = metrics.get(k)
            cells.append(f"{v:9.2f}" if isinstance(v, (int, float)) and not math.isnan(v) else f"{'-':>9s}")
        lines.append(f"{subset + ' ' + kind:14s}" + "".join(cells))
    return "\n".join(lines)


def metrics_payload(metrics: dict[str, Any], *, task: str, split: str, dataset: str, question_source: str,
                    epoch: int, global_step: int) -> dict[str, Any]:
    """The ``metrics.json`` document (see the README): what was evaluated, on how many clips, and every metric.

    ``metrics`` holds percentages only, ``null`` for the metric of an empty subset (strict JSON: never ``NaN``), and
    ``num_empty_metrics`` says how many are ``null``; the subset sizes (``num_examples``, ``num_tail_verb``, ...) go to
    ``counts``, so that the model card's ``model-index`` reads metrics only."""
    payload: dict[str, Any] = {
        "task": task,
        "split": split,
        "dataset": dataset,
        "question_source": question_source,
    }
    if question_source == "oracle":
        payload["label"] = ORACLE_QUESTIONS
    values = {k: v for k, v in metrics.items() if k not in ("num_clips", "num_clips_scored")}
    # "metrics" holds numbers only (the model card and the Hub read it so); settings such as the action rule the
    # numbers were computed with sit beside it.
    settings = {k: v for k, v in values.items() if not isinstance(v, (int, float)) or isinstance(v, bool)}
    payload.update(settings)
    scores, counts = split_metrics({k: v for k, v in values.items() if k not in settings})
    payload.update(
        num_clips=int(metrics["num_clips"]),
        num_clips_scored=int(metrics["num_clips_scored"]),
        epoch=int(epoch),
        global_step=int(global_step),
        counts=counts,
        num_empty_metrics=sum(v is None for v in scores.values()),
        metrics=scores,
    )
    return payload


def write_metrics_json(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``metrics.json`` (:func:`metrics_json_text`) atomically (a full disk: ``atomic.DiskFullError``)."""
    return atomic.write_text(path, metrics_json_text(payload))


def checkpoint_position(path: str | os.PathLike | None) -> tuple[int, int]:
    """(epoch, global step) of a saved model, from the ``metrics.json`` saved beside it (``(0, 0)`` without one, or
    for a Hub repo id)."""
    metrics = Path(path) / "metrics.json" if path is not None else None
    if metrics is not None and metrics.is_file():
        saved = json.loads(metrics.read_text(encoding="utf-8"))
        return int(saved.get("epoch", 0)), int(saved.get("global_step", 0))
    return 0, 0


def write_predictions(folder: str | Path, predictions: Predictions, top_k: int = 5, prefix: str = "predictions") -> \
        tuple[Path, Path]:
    """``predictions.json`` (per ``narration_id``: top-k verbs and nouns with softmax scores, labels, ``valid``) and
    ``predictions.csv`` (one line per clip: predicted and true verb / noun, valid); each written atomically."""
    folder = atomic.check_target(folder, directory=True)
    folder.mkdir(parents=True, exist_ok=True)
    verb_p = softmax(predictions.verb_logits.astype(np.float64))
    noun_p = softmax(predictions.noun_logits.astype(np.float64))
    verb_top = np.argsort(-verb_p, axis=1, kind="stable")[:, :top_k]
    noun_top = np.argsort(-noun_p, axis=1, kind="stable")[:, :top_k]
    doc = {}
    for i, nid in enumerate(predictions.narration_ids):
        doc[nid] = {
            "valid": bool(predictions.valid[i]),
            "verb": verb_top[i].tolist(),
            "verb_scores": [round(float(verb_p[i, j]), 6) for j in verb_top[i]],
            "noun": noun_top[i].tolist(),
            "noun_scores": [round(float(noun_p[i, j]), 6) for j in noun_top[i]],
            "verb_label": int(predictions.verb_labels[i]),
            "noun_label": int(predictions.noun_labels[i]),
        }
    json_path = atomic.write_text(folder / f"{prefix}.json", json.dumps(doc, indent=1) + "\n")
    csv_path = folder / f"{prefix}.csv"
    with atomic.atomic_write(csv_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["narration_id", "valid", "verb_pred", "noun_pred", "verb_label", "noun_label"])
        for i, nid in enumerate(predictions.narration_ids):
            writer.writerow([nid, int(predictions.valid[i]), int(verb_top[i, 0]), int(noun_top[i, 0]),
                             int(predictions.verb_labels[i]), int(predictions.noun_labels[i])])
    return json_path, csv_path



@dataclass
class Evaluation:
    """What :func:`evaluate_ek100` produced. ``metrics`` (:func:`score`'s dict) and ``payload`` (the ``metrics.json``
    document) are ``None`` for a split without labels and on processes other than the main one."""

    predictions: Predictions
    metrics: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    metrics_path: Path | None = None
    predictions_paths: tuple[Path, Path] | None = None


@dataclass
class EvaluationArguments:
    """What :func:`evaluate_ek100` evaluates and how (in the manner of transformers' ``TrainingArguments``): ``mambavl
    eval`` and ``examples/eval_ek100.py`` each fill one from their command line, so the options, their defaults and
    their meaning are written here once.

    Which clips:
        split: the annotation split. task: ``"recognition"`` or ``"anticipation"`` (``anticipation_time`` /
        ``observation_time`` seconds). limit: the first ``limit`` rows only. require_labels: refuse a split without
        verb / noun labels before anything runs.
    Questions:
        question_source: ``"generic"``, ``"file"``, ``"predicted"`` or ``"oracle"`` (labelled ``ORACLE QUESTIONS``);
        questions_path: the file of ``file`` / ``predicted``.
    Clips:
        temporal_views x spatial_crops views a clip, their logits averaged; sampling / stride / target_fps: frame
        sampling (default: segment for recognition, dense end-anchored for anticipation). skip_bad_clips: an
        unreadable clip stays in ``num_clips`` and is left out of the metrics (else its ``MediaError`` stops the
        evaluation before the model runs). clip_cache_dir: decode every window once into a clip cache there.
    Controls:
        reverse_frames: every clip played backwards; shuffle_questions: each clip gets another clip's questions (a
        permutation drawn from ``seed``, which also seeds the frame sampling).
    Running:
        batch_size clips a step and process; num_workers data-loader workers.
    Scoring and outputs:
        action_rule: ``"official"`` or the authors' ``"independent"``. checkpoint: the folder or Hub id the model came
        from (named in a processor mismatch; its ``metrics.json`` gives ``epoch`` / ``global_step``). metrics_path:
        write ``metrics.json`` (strict JSON, :func:`metrics_payload`) there; predictions_dir: write
        ``predictions.json`` / ``.csv`` there; print_table: print the metric table.
    """

    split: str = "validation"
    task: str = "recognition"
    limit: int | None = None
    anticipation_time: float = 1.0
    observation_time: float = 2.133
    require_labels: bool = False
    question_source: str = "generic"
    questions_path: str | os.PathLike | None = None
    temporal_views: int = 1
    spatial_crops: int = 1
    sampling: str | None = None
    stride: int = 4
    target_fps: float = 30.0
    skip_bad_clips: bool = False
    clip_cache_dir: str | os.PathLike | None = None
    reverse_frames: bool = False
    shuffle_questions: bool = False
    seed: int = 0
    batch_size: int = 8
    num_workers: int = 0
    action_rule: str = "official"
    checkpoint: str | os.PathLike | None = None
    metrics_path: str | os.PathLike | None = None
    predictions_dir: str | os.PathLike | None = None
    print_table: bool = True


def evaluate_ek100(
    model: torch.nn.Module,
    processor: Any,
    data: DataSpec,
    arguments: EvaluationArguments | None = None,
    *,
    accelerator: Any = None,
    **overrides: Any,
) -> Evaluation:
    """Evaluate ``model`` on a split of ``data`` (from ``training.builders.resolve_data``): ``mambavl eval`` and
    ``examples/eval_ek100.py`` are this function.

    ``arguments`` (:class:`EvaluationArguments`, default: its defaults) says what is evaluated and how; ``overrides``
    replace some of its fields (``evaluate_ek100(model, processor, data, temporal_views=2)``). The clips are read as
    ``predict`` and ``score`` need them, the metric table printed and ``metrics.json`` written on a labelled split.
    With ``accelerator`` (Accelerate) the model and the data loader are prepared and every process evaluates its
    shard; without, one process runs on the model's device.
    """
    unknown = sorted(set(overrides) - {f.name for f in fields(EvaluationArguments)})
    if unknown:
        raise TypeError(f"evaluate_ek100: unknown option(s) {unknown}; the options are the fields of "
                        f"EvaluationArguments: {[f.name for f in fields(EvaluationArguments)]}")
    args = replace(arguments if arguments is not None else EvaluationArguments(), **overrides)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if data.media != "features":
        processor.check_model_config(base.config, args.checkpoint if args.checkpoint is not None else "the model",
                                     questions=False)
    rows = load_rows(data, args.split, args.task, anticipation_time=args.anticipation_time,
                     observation_time=args.observation_time, limit=args.limit)
    labelled = any(r.get("verb_class") is not None for r in rows)
    if args.require_labels and not labelled:
        raise ValueError(f"split {args.split!r} of {data.annotations_dir} has no verb / noun labels to score; "
                         "evaluate a labelled split (validation), or make a challenge submission with "
                         "examples/eval_ek100.py --submission")
    order = np.random.default_rng([args.seed, 7]).permutation(len(rows)).tolist() if args.shuffle_questions else None
    main = accelerator is None or accelerator.is_main_process
    dataset = build_clip_dataset(
        rows, data, processor, split=args.split, task=args.task, training=False, seed=args.seed,
        question_source=args.question_source, questions_path=args.questions_path, sampling=args.sampling,
        stride=args.stride, target_fps=args.target_fps, skip_bad_clips=args.skip_bad_clips,
        cache_dir=args.clip_cache_dir, cache_short_side=getattr(base.config, "image_size", None),
        temporal_views=args.temporal_views, spatial_crops=args.spatial_crops, reverse_frames=args.reverse_frames,
        question_order=order, accelerator=accelerator, progress=main,
    )
    dataloader = build_dataloader(dataset, args.batch_size, shuffle=False, seed=args.seed,
                                  num_workers=args.num_workers)
    if accelerator is not None:
        model, dataloader = accelerator.prepare(model, dataloader)
    predictions = predict(model, dataloader, accelerator, rows, description=f"eval {args.split}")
    result = Evaluation(predictions)
    if main:
        _report(result, rows, data, args)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return result


def _report(result: Evaluation, rows: Sequence[dict], data: DataSpec, args: EvaluationArguments) -> None:
    """The main process's part of :func:`evaluate_ek100`: per-clip predictions, the unreadable clips named, and on a
    labelled split the metrics, ``metrics.json`` and (``print_table``) the printed table; fills ``result``."""
    predictions = result.predictions
    if args.predictions_dir is not None:
        result.predictions_paths = write_predictions(args.predictions_dir, predictions)
    if predictions.bad_clips:
        logger.warning(f"{len(predictions.bad_clips)} clips could not be read and were not scored: "
                       f"{predictions.bad_clips}")
    if not any(r.get("verb_class") is not None for r in rows):
        return
    observation = [r.get("observation_clipped", False) for r in rows] if args.task == "anticipation" else None
    result.metrics = score(predictions, task=args.task, split=args.split, question_source=args.question_source,
                           action_rule=args.action_rule, observation_clipped=observation)
    epoch, step = checkpoint_position(args.checkpoint)
    result.payload = metrics_payload(result.metrics, task=args.task, split=args.split, dataset=data.dataset,
                                     question_source=args.question_source, epoch=epoch, global_step=step)
    if args.metrics_path is not None:
        result.metrics_path = write_metrics_json(args.metrics_path, result.payload)
    if args.print_table:
        controls = [name for name, on in (("frames reversed", args.reverse_frames),
                                          ("questions shuffled", args.shuffle_questions)) if on]
        title = args.split + (f" [control: {', '.join(controls)}]" if controls else "") + ":"
        print(format_metric_table(result.metrics, args.question_source, title=title))


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def question_predictions(predictions: Predictions, top_k: int = 5) -> dict[str, list[list[Any]]]:
    """The first stage's top-k actions per clip, as the ``predicted`` question source reads them:
    ``{narration_id: [[verb, noun, score], ...]}``, best first.

    Actions are ranked by the official EK100 action score (``official_action_topk``: the softmax over each row's
    top-100 verb and top-100 noun logits, multiplied), and ``score`` is that product. Clips whose media could not be
    read (``valid`` False) are left out: their logits are meaningless.
    """
    from ..ek100.metric import official_action_topk

    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k={top_k!r}: a predictions file needs at least one action per clip (an integer >= 1)")
    # The official score ranks the top-100 verbs x the top-100 nouns: no clip has more actions than that.
    ranked = min(100, predictions.verb_logits.shape[1]) * min(100, predictions.noun_logits.shape[1])
    if top_k > ranked:
        raise ValueError(f"top_k={top_k}: the official action score ranks {ranked} actions per clip (top-100 verbs x "
                         f"top-100 nouns); give top_k <= {ranked}")
    keep = np.flatnonzero(predictions.valid)
    for name in ("verb_logits", "noun_logits"):
        bad = ~np.isfinite(getattr(predictions, name)[keep]).all(axis=1)
        if bad.any():  # the ranking of a NaN row is meaningless; a second stage would read it as a prediction
            ids = [predictions.narration_ids[i] for i in keep[bad][:3]]
            raise ValueError(f"{name}: {int(bad.sum())} valid clip(s) hold NaN or inf, e.g. narrations {ids}; mark "
                             "unreadable clips valid=False or fix the model's outputs")
    verbs, nouns, probs = official_action_topk(predictions.verb_logits[keep], predictions.noun_logits[keep], k=top_k)
    return {
        predictions.narration_ids[i]: [[int(v), int(n), round(float(p), 8)] for v, n, p in zip(*row)]
        for i, row in zip(keep.tolist(), zip(verbs, nouns, probs))
    }


def write_question_predictions(path: str | Path, predictions: Predictions, top_k: int = 5) -> Path:
    """Write :func:`question_predictions` as the JSON the ``predicted`` question source reads, atomically."""
    doc = question_predictions(predictions, top_k)
    return atomic.write_text(path, json.dumps(doc, separators=(",", ":")) + "\n", what="question predictions")


def write_probabilities(path: str | Path, predictions: Predictions) -> Path:
    """Per-clip softmax probabilities as ``.npz`` (``narration_ids`` (N,), ``participant_ids`` (N,),
    ``verb_probs`` (N, num_verbs) and ``noun_probs`` (N, num_nouns) float32, ``verb_labels`` / ``noun_labels`` (N,),
    ``valid`` (N,)), written atomically, so that the predictions of several models can be averaged
    (:func:`read_probabilities` with ``average``)."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, narration_ids=np.array(predictions.narration_ids, dtype=str),
        participant_ids=np.array(predictions.participant_ids, dtype=str),
        verb_probs=_softmax(predictions.verb_logits).astype(np.float32),
        noun_probs=_softmax(predictions.noun_logits).astype(np.float32),
        verb_labels=predictions.verb_labels, noun_labels=predictions.noun_labels, valid=predictions.valid,
    )
    with atomic.atomic_write(path, what="probabilities") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return Path(path)


PROBABILITY_KEYS = ("narration_ids", "participant_ids", "verb_probs", "noun_probs", "verb_labels", "noun_labels",
                    "valid")


def _load_probabilities(path: Path) -> dict[str, np.ndarray]:
    """One :func:`write_probabilities` file as arrays; anything else raises an error naming ``path``."""
    import zipfile

    fix = "give a probabilities.npz written by eval_ek100.py --write_question_predictions"
    if not path.is_file():
        raise FileNotFoundError(f"probabilities file {path} not found" + (" (a folder)" if path.exists() else "")
                                + f"; {fix}")
    try:
        with np.load(path, allow_pickle=False) as f:
            loaded = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a .npz file of probabilities ({e}); {fix}") from None
    missing = [k for k in PROBABILITY_KEYS if k not in loaded]
    if missing:
        raise ValueError(f"{path}: lacks the arrays {missing}; {fix}")
    n = len(loaded["narration_ids"])
    for key in ("verb_probs", "noun_probs"):
        if loaded[key].ndim != 2 or loaded[key].shape[0] != n:
            raise ValueError(f"{path}: {key} has shape {loaded[key].shape}, expected ({n}, classes); {fix}")
        probs = loaded[key][loaded["valid"].astype(bool)]  # unreadable clips' rows are never used
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise ValueError(f"{path}: {key} holds NaN, inf or negative values on valid clips; a probability is in "
                             "[0, 1]")
    return loaded


def read_probabilities(paths: str | Path | Sequence[str | Path]) -> Predictions:
    """:class:`Predictions` from one :func:`write_probabilities` file, or the mean of several models' probabilities
    over the same clips (an ensemble: a clip is valid when every model could read it).

    The returned logits are ``log`` of the (mean) probabilities: every softmax of them, and so the official action
    score and every metric, sees the mean probabilities. Raises ``ValueError`` naming the file whose clips differ
    from the first file's, or that is not such a file (not a ``.npz``, arrays missing, NaN / negative probabilities);
    ``FileNotFoundError`` for a missing one.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("read_probabilities needs at least one .npz file")
    first, verb, noun, valid = None, 0.0, 0.0, None
    for path in paths:
        loaded = _load_probabilities(Path(path))
        if first is None:
            first = loaded
        elif not np.array_equal(loaded["narration_ids"], first["narration_ids"]):
            raise ValueError(f"{path}: its clips differ from those of {paths[0]} ({len(loaded['narration_ids'])} vs "
                             f"{len(first['narration_ids'])} narrations, or another order); average predictions of "
                             "the same split only")
        verb = verb + loaded["verb_probs"].astype(np.float64)
        noun = noun + loaded["noun_probs"].astype(np.float64)
        valid = loaded["valid"] if valid is None else valid & loaded["valid"]
    tiny = np.finfo(np.float64).tiny
    return Predictions(
        narration_ids=first["narration_ids"].tolist(), participant_ids=first["participant_ids"].tolist(),
        verb_logits=np.log(np.maximum(verb / len(paths), tiny)).astype(np.float32),
        noun_logits=np.log(np.maximum(noun / len(paths), tiny)).astype(np.float32),
        verb_labels=first["verb_labels"], noun_labels=first["noun_labels"], valid=valid.astype(bool),
    )
