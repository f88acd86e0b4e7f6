"""EPIC-KITCHENS-100 challenge submission files (action recognition and action anticipation).

The format is the official one, version "0.2" (epic-kitchens/C1-Action-Recognition ``utils/challenge.py``,
``create_submission.py``; validated by epic-kitchens/C3-Action-Anticipation
``evaluate_anticipation_json_ek100.py``, ``validate_submission``)::

    {"version": "0.2", "challenge": "action_recognition" | "action_anticipation",
     "sls_pt": 0-5, "sls_tl": 0-5, "sls_td": 0-5,
     "results": {"P01_101_0": {"verb": {"0": 1.22, ..., "96": 0.02},
                               "noun": {"0": 0.80, ..., "299": 0.02},
                               "action": {"0,1": 0.31, ...}},        # exactly 100 "verb,noun" keys
                 ...}}

``action`` is optional for both challenges (the evaluator then ranks actions from the verb and noun scores) but must
be on every segment or on none; other keys in a segment are ignored. ``data/submission_schema.json`` states these
rules as a JSON Schema.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write, write_text
from .metric import ACTION_TOP_N, official_action_topk

__all__ = ["CHALLENGES", "SLS_LEVELS", "SUBMISSION_VERSION", "submission_schema", "write_submission"]

SUBMISSION_VERSION = "0.2"
CHALLENGES = {"recognition": "action_recognition", "anticipation": "action_anticipation"}
NUM_VERBS, NUM_NOUNS = 97, 300
# The supervision levels of the EK100 "SLS" scheme (https://github.com/epic-kitchens/sls).
SLS_LEVELS = {
    "sls_pt": "pre-training: 0 none, 1 public images, 2 public images + videos, 3 self-supervised on public data, "
    "4 self-supervised on public data and EPIC-KITCHENS, 5 private data",
    "sls_tl": "training labels: 0 none, 1 video-level, 2 + narration timestamps, 3 + start/stop times, "
    "4 + spatio-temporal labels from pretrained detectors, 5 + other prior knowledge",
    "sls_td": "training data: 0 zero-shot, 1 few-shot, 2 <= 25% of train, 3 train, 4 train + val, "
    "5 train + val + other labelled or unlabelled data",
}


def submission_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a version-0.2 submission file."""
    text = (resources.files(__package__) / "data" / "submission_schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _check_sls(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 5:
        raise ValueError(f"{name}={value!r}: expected an integer 0..5, the {SLS_LEVELS[name]}")
    return int(value)


def _score_lists(scores: np.ndarray) -> list[list[float]]:
    if scores.dtype == np.float32 or scores.dtype == np.float16:
        # The shortest decimal that reads back as the same float32 keeps every ranking and halves the file.
        return [[float(x) for x in row] for row in scores.astype(np.float32).astype(str)]
    return scores.astype(np.float64).tolist()


def _as_scores(name: str, scores: Any, rows: int, columns: int) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu()
        scores = scores.float() if scores.dtype.is_floating_point and scores.dtype.itemsize < 4 else scores
        scores = scores.numpy()
    scores = np.asarray(scores)
    if scores.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected numeric scores, got dtype {scores.dtype}")
    if scores.shape != (rows, columns):
        raise ValueError(f"{name}: shape {scores.shape}, expected ({rows}, {columns}): one row of class scores per narration")
    if scores.dtype.kind in "iu":
        scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{name}: contains NaN or inf, which the challenge JSON cannot hold")
    return scores


def write_submission(
    path: str | Path,
    narration_ids: Sequence[str],
    verb_logits: Any,
    noun_logits: Any,
    task: str,
    sls_pt: int,
    sls_tl: int,
    sls_td: int,
    *,
    question_source: str | None = None,
    include_actions: bool | None = None,
    expected_narration_ids: Sequence[str] | None = None,
) -> Path:
    """Write an EK100 challenge submission (JSON, or a zip holding ``test.json`` when ``path`` ends in ``.zip``).

    Args:
        path: output file.
        narration_ids: (N,) narration ids (the rows of ``EPIC_100_test_timestamps.csv`` for the challenge).
        verb_logits: (N, 97) and noun_logits: (N, 300) class scores (numpy or torch).
        task: "recognition" (challenge "action_recognition") or "anticipation" ("action_anticipation").
        sls_pt, sls_tl, sls_td: the supervision levels (0-5) of pre-training, training labels and training data;
            required, see ``SLS_LEVELS``.
        question_source: how the questions of the model were made; "oracle" (ground-truth narrations) is refused.
        include_actions: add the 100 best "verb,noun" action scores (official ranking: softmax of the top-100
            verbs and nouns, product); default True for anticipation, False for recognition (the server then
            computes them the same way).
        expected_narration_ids: if given, the submission must cover exactly these ids.

    Returns:
        The path written.
    """
    if question_source is not None and str(question_source).lower() == "oracle":
        raise ValueError(
            "question_source='oracle': questions built from ground-truth narrations cannot go into a challenge "
            "submission; use 'generic', 'file' or 'predicted' questions"
        )
    if task not in CHALLENGES:
        raise ValueError(f"task={task!r}: expected one of {sorted(CHALLENGES)}")
    levels = {name: _check_sls(name, value) for name, value in (("sls_pt", sls_pt), ("sls_tl", sls_tl), ("sls_td", sls_td))}
    ids = [str(x) for x in narration_ids]
    if not ids:
        raise ValueError("narration_ids: empty; a submission needs one entry per segment")
    if len(set(ids)) != len(ids):
        duplicate = next(x for i, x in enumerate(ids) if x in ids[:i])
        raise ValueError(f"narration_ids: {duplicate!r} appears more than once")
    if expected_narration_ids is not None:
        expected = {str(x) for x in expected_narration_ids}
        missing, unexpected = sorted(expected - set(ids)), sorted(set(ids) - expected)
        if missing or unexpected:
            raise ValueError(
                f"narration_ids: {len(missing)} expected id(s) missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    verbs = _as_scores("verb_logits", verb_logits, len(ids), NUM_VERBS)
    nouns = _as_scores("noun_logits", noun_logits, len(ids), NUM_NOUNS)
    if include_actions is None:
        include_actions = task == "anticipation"

    verb_rows, noun_rows = _score_lists(verbs), _score_lists(nouns)
    actions = official_action_topk(verbs, nouns, k=ACTION_TOP_N) if include_actions else None
    results: dict[str, dict] = {}
    for i, narration_id in enumerate(ids):
        entry: dict[str, dict] = {
            "verb": {str(c): s for c, s in enumerate(verb_rows[i])},
            "noun": {str(c): s for c, s in enumerate(noun_rows[i])},
        }
        if actions is not None:
            v, n, p = actions[0][i], actions[1][i], actions[2][i]
            entry["action"] = {f"{a},{b}": float(s) for a, b, s in zip(v.tolist(), n.tolist(), p.tolist())}
        results[narration_id] = entry
    submission = {"version": SUBMISSION_VERSION, "challenge": CHALLENGES[task], **levels, "results": results}

    path = Path(path)
    text = json.dumps(submission, allow_nan=False)
    if path.suffix.lower() == ".zip":
        with atomic_write(path, what="the submission") as tmp, \
                zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=5) as archive:
            archive.writestr("test.json", text)
    else:
        write_text(path, text, what="the submission")
    return path
