"""EPIC-KITCHENS-100 annotation CSVs -> `datasets.Dataset`, with validated rows and anticipation windows.

The official files (``epic-kitchens-100-annotations``): ``EPIC_100_train.csv`` / ``EPIC_100_validation.csv``
(15 columns, labelled) and ``EPIC_100_test_timestamps.csv`` (8 columns, no labels). Timestamps are
``HH:MM:SS.ss``; ``start_frame`` / ``stop_frame`` index the released 60 fps (``PXX_YY``) or 50 fps (``PXX_1YY``)
JPEG frames, 1-based, stop inclusive.
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..lazy_imports import missing_extra

try:
    import datasets
except ModuleNotFoundError as e:  # an inference install: say which extra brings it
    raise missing_extra(e, __name__) from e

from .layout import VIDEO_ID_PATTERN, frames_fps
from .vocabulary import EK100Vocabulary

__all__ = [
    "EK100AnnotationError",
    "LABELLED_COLUMNS",
    "ORACLE_QUESTIONS",
    "TEST_COLUMNS",
    "SPLIT_FILES",
    "UNKNOWN_ACTION",
    "VIDEO_ID_PATTERN",
    "anticipation_window",
    "frames_fps",
    "load_ek100",
    "parse_timestamp",
    "read_ek100_csv",
]

logger = logging.getLogger(__name__)

TEST_COLUMNS = (
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
)
LABELLED_COLUMNS = TEST_COLUMNS + (
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
)
SPLIT_FILES = {
    "train": "EPIC_100_train.csv",
    "validation": "EPIC_100_validation.csv",
    "test": "EPIC_100_test_timestamps.csv",
}
# Every table, metrics file and card made with questions built from the ground truth carries this label.
ORACLE_QUESTIONS = "ORACLE QUESTIONS"
# A (verb, noun) pair outside the action table: the ignore index of torch's cross-entropy and of transformers'
# losses, so a closed-vocabulary action loss skips the row while the verb and noun labels still count.
UNKNOWN_ACTION = -100

_MEDIA = ("frames", "video", "features")
_TASKS = ("recognition", "anticipation")
# Minutes and seconds below 60: "00:00:75.00" is refused rather than read as 75 s.
_TIMESTAMP = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d*)?)$")
_PARTICIPANT = re.compile(r"^P\d+$")
_QUOTED_LIST = re.compile(r"^\[(?:'[^'\\]*'(?:, '[^'\\]*')*)?\]$")


class EK100AnnotationError(ValueError):
    """A malformed EK100 annotation file or row; the message names the file, the line and the field."""


def parse_timestamp(text: str) -> float:
    """``"HH:MM:SS.ss"`` (minutes and seconds below 60) -> seconds (float). ``ValueError`` on anything else."""
    match = _TIMESTAMP.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a HH:MM:SS.ss timestamp (minutes and seconds 00-59)")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def anticipation_window(
    start_sec: float, anticipation_time: float = 1.0, observation_time: float = 2.133
) -> tuple[float, float, bool]:
    """The observed window of an anticipation sample: ``(observation_start, observation_end, clipped)``.

    ``observation_end = start_sec - anticipation_time`` exactly (the gap before the action is never seen);
    ``observation_start = observation_end - observation_time``, clipped at 0 s (``clipped`` is then True). When the
    whole window lies before 0 s (an action starting within ``anticipation_time`` of the video start) the window is
    empty, ``observation_start = max(0, ...)`` exceeds ``observation_end`` and media loaders return black frames.
    """
    end = start_sec - anticipation_time
    start = end - observation_time
    clipped = start < 0.0
    return (max(start, 0.0), end, clipped)


def _literal_list(text: str, kind: type) -> list:
    # The official files write these with Python's repr; a regex fast path avoids literal_eval on 67k rows.
    if kind is int:
        value = json.loads(text)
    elif _QUOTED_LIST.match(text):
        value = [] if text == "[]" else text[2:-2].split("', '")
    else:
        value = ast.literal_eval(text)
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        raise ValueError(f"expected a list of {kind.__name__}")
    return value


def read_ek100_csv(path: str | Path, vocab: EK100Vocabulary | None = None) -> dict[str, list]:
    """Read and validate one EK100 annotation CSV into columns.

    Labelled files (the 15 train/validation columns) also get ``verb_class`` / ``noun_class`` checked against
    ``vocab`` and ``all_nouns`` / ``all_noun_classes`` parsed to lists; 8-column (test) files carry no labels.
    Every problem raises :class:`EK100AnnotationError` naming the file, the line and the field.

    Returns a dict of equal-length lists: the CSV columns (frames as int, timestamps as the original strings,
    ``narration_timestamp`` ``None`` when empty) plus ``start_sec`` / ``stop_sec`` (float seconds).
    """
    path = Path(path)
    vocab = vocab or EK100Vocabulary.default()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: EK100 annotation file not found")
    # utf-8-sig: files saved by spreadsheet programs start with a byte-order mark, which must not become part of
    # the first column's name.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise EK100AnnotationError(f"{path}: empty file, expected a header row") from None
        header = [h.strip() for h in header]
        labelled = set(LABELLED_COLUMNS) <= set(header)
        expected = LABELLED_COLUMNS if labelled else TEST_COLUMNS
        missing = [c for c in expected if c not in header]
        if missing:
            raise EK100AnnotationError(
                f"{path}, line 1: missing column(s) {missing}; an EK100 file has the columns "
                f"{list(TEST_COLUMNS)} (test) or {list(LABELLED_COLUMNS)} (train / validation)"
            )
        if not labelled and any(c in header for c in LABELLED_COLUMNS[8:]):
            partial = [c for c in LABELLED_COLUMNS[8:] if c not in header]
            raise EK100AnnotationError(f"{path}, line 1: label columns incomplete, missing {partial}")
        position = {c: header.index(c) for c in expected}
        columns: dict[str, list] = {c: [] for c in expected}
        columns["start_sec"], columns["stop_sec"] = [], []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise EK100AnnotationError(
                    f"{path}, line {line}: {len(row)} fields, the header has {len(header)} "
                    "(a missing or extra comma, or an unquoted list field?)"
                )
            values = {c: row[i] for c, i in position.items()}
            _validate_row(path, line, values, labelled, vocab, seen)
            for c in expected:
                columns[c].append(values[c])
            columns["start_sec"].append(values["start_sec"])
            columns["stop_sec"].append(values["stop_sec"])
    if not columns["narration_id"]:
        raise EK100AnnotationError(f"{path}: no annotation rows")
    return columns


def _validate_row(
    path: Path, line: int, values: dict[str, Any], labelled: bool, vocab: EK100Vocabulary, seen: dict[str, int]
) -> None:
    """Check and convert one row in place; raise naming the file, line and field."""

    def fail(field: str, message: str) -> None:
        raise EK100AnnotationError(f"{path}, line {line}, field {field!r}: {message}")

    _validate_ids(values, line, seen, fail)
    _validate_times(values, fail)
    if labelled:
        _validate_labels(values, vocab, fail)


def _validate_ids(values: dict[str, Any], line: int, seen: dict[str, int], fail: Callable[[str, str], None]) -> None:
    """The narration, participant and video ids of a row (stripped in place; ``seen`` maps ids to their line)."""
    narration_id = values["narration_id"].strip()
    if not narration_id:
        fail("narration_id", "empty")
    if narration_id in seen:
        fail("narration_id", f"duplicate {narration_id!r} (first on line {seen[narration_id]})")
    seen[narration_id] = line
    participant, video = values["participant_id"].strip(), values["video_id"].strip()
    if not _PARTICIPANT.match(participant):
        fail("participant_id", f"{participant!r} is not a participant id like 'P01'")
    if not VIDEO_ID_PATTERN.match(video):
        fail("video_id", f"{video!r} is not an EK100 video id like 'P01_01' or 'P01_101' (letters P, digits, one '_')")
    if not video.startswith(participant + "_"):
        fail("video_id", f"{video!r} does not belong to participant {participant!r} (expected '{participant}_NN')")
    values.update(narration_id=narration_id, participant_id=participant, video_id=video)


def _validate_times(values: dict[str, Any], fail: Callable[[str, str], None]) -> None:
    """Timestamps (``start_sec`` / ``stop_sec`` added) and frame numbers of a row, converted in place."""
    for field, key in (("start_timestamp", "start_sec"), ("stop_timestamp", "stop_sec")):
        try:
            values[key] = parse_timestamp(values[field])
        except ValueError:
            fail(field, f"{values[field]!r} is not a HH:MM:SS.ss timestamp (minutes and seconds 00-59)")
    narration_ts = values["narration_timestamp"].strip()
    if narration_ts:
        try:
            parse_timestamp(narration_ts)
        except ValueError:
            fail("narration_timestamp", f"{narration_ts!r} is not a HH:MM:SS.sss timestamp (minutes and seconds 00-59)")
    values["narration_timestamp"] = narration_ts or None
    for field in ("start_frame", "stop_frame"):
        try:
            values[field] = int(values[field])
        except ValueError:
            fail(field, f"{values[field]!r} is not an integer frame number")
        if values[field] < 0:
            fail(field, f"negative frame number {values[field]}")
    if values["stop_sec"] < values["start_sec"]:
        fail("stop_timestamp", f"stop {values['stop_timestamp']} is before start {values['start_timestamp']}")
    if values["stop_frame"] < values["start_frame"]:
        fail("stop_frame", f"stop frame {values['stop_frame']} is before start frame {values['start_frame']}")


def _validate_labels(values: dict[str, Any], vocab: EK100Vocabulary, fail: Callable[[str, str], None]) -> None:
    """Verb / noun classes (against ``vocab``) and the ``all_nouns`` / ``all_noun_classes`` lists of a labelled row."""
    for field, size in (("verb_class", vocab.num_verbs), ("noun_class", vocab.num_nouns)):
        try:
            values[field] = int(values[field])
        except ValueError:
            fail(field, f"{values[field]!r} is not an integer class id")
        if not 0 <= values[field] < size:
            fail(field, f"unknown class id {values[field]} (the vocabulary has ids 0..{size - 1})")
    try:
        values["all_nouns"] = _literal_list(values["all_nouns"], str)
    except (ValueError, SyntaxError):
        fail("all_nouns", f"{values['all_nouns']!r} is not a list of strings like \"['plate']\"")
    try:
        values["all_noun_classes"] = _literal_list(values["all_noun_classes"], int)
    except (ValueError, SyntaxError):
        fail("all_noun_classes", f"{values['all_noun_classes']!r} is not a list of integers like '[2]'")
    if len(values["all_nouns"]) != len(values["all_noun_classes"]):
        fail("all_noun_classes", f"{len(values['all_noun_classes'])} ids for {len(values['all_nouns'])} nouns")
    for noun in values["all_noun_classes"]:
        if not 0 <= noun < vocab.num_nouns:
            fail("all_noun_classes", f"unknown noun class id {noun} (ids 0..{vocab.num_nouns - 1})")
    if values["noun_class"] not in values["all_noun_classes"]:
        fail("noun_class", f"{values['noun_class']} is not in all_noun_classes {values['all_noun_classes']}")


def _default_vocabulary(annotations_dir: Path) -> EK100Vocabulary:
    required = ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv", "EPIC_100_actions_3806.csv")
    if all((annotations_dir / name).is_file() for name in required):
        return EK100Vocabulary.from_dir(annotations_dir)
    return EK100Vocabulary.default()


def _features(labelled: bool, anticipation: bool, vocab: EK100Vocabulary) -> datasets.Features:
    spec: dict[str, Any] = {
        "narration_id": datasets.Value("string"),
        "participant_id": datasets.Value("string"),
        "video_id": datasets.Value("string"),
        "narration_timestamp": datasets.Value("string"),
        "start_timestamp": datasets.Value("string"),
        "stop_timestamp": datasets.Value("string"),
        "start_frame": datasets.Value("int64"),
        "stop_frame": datasets.Value("int64"),
    }
    if labelled:
        spec.update(
            narration=datasets.Value("string"),
            verb=datasets.Value("string"),
            verb_class=datasets.ClassLabel(names=[c.key for c in vocab.verbs]),
            noun=datasets.Value("string"),
            noun_class=datasets.ClassLabel(names=[c.key for c in vocab.nouns]),
            all_nouns=datasets.Sequence(datasets.Value("string")),
            all_noun_classes=datasets.Sequence(datasets.Value("int64")),
            action_class=datasets.Value("int64"),
        )
    spec.update(start_sec=datasets.Value("float64"), stop_sec=datasets.Value("float64"))
    if anticipation:
        spec.update(
            observation_start=datasets.Value("float64"),
            observation_end=datasets.Value("float64"),
            observation_clipped=datasets.Value("bool"),
        )
    spec["sample_index"] = datasets.Value("int64")
    return datasets.Features(spec)


def load_ek100(
    annotations_dir: str | Path,
    split: str,
    media_root: str | Path | None = None,
    media: str = "frames",
    task: str = "recognition",
    anticipation_time: float = 1.0,
    observation_time: float = 2.133,
    *,
    vocab: EK100Vocabulary | None = None,
    processor: Any = None,
    num_frames: int | None = None,
    sampling: str | None = None,
    stride: int = 4,
    target_fps: float = 30.0,
    training: bool = False,
    seed: int = 0,
    question_source: str | Callable[[dict], list[str]] | None = None,
    questions_path: str | Path | None = None,
    question_types: Sequence[str] = ("verb", "noun"),
    unknown_actions: str = "ignore",
    check_media: bool = True,
) -> datasets.Dataset:
    """Load an EK100 split as a `datasets.Dataset`, optionally with lazily decoded media.

    Args:
        annotations_dir: folder with the official CSVs (``EPIC_100_{train,validation}.csv``,
            ``EPIC_100_test_timestamps.csv``; the class CSVs there, when present, give the vocabulary).
        split: ``"train"``, ``"validation"`` or ``"test"`` (no labels).
        media_root: where the media live; ``None`` gives the annotations only. ``media="frames"``: the folder
            holding ``rgb_frames/PXX/PXX_YY/frame_%010d.jpg``; ``"video"``: the folder holding
            ``videos/PXX/PXX_YY.MP4``; ``"features"``: a feature folder (``index.json`` + safetensors shards, see
            :mod:`modeling_mambavl.ek100.features`).
        task: ``"recognition"`` (the segment ``[start_sec, stop_sec]``) or ``"anticipation"`` (the window of
            ``observation_time`` seconds ending ``anticipation_time`` seconds before the action starts, sampled
            densely from its end; windows before 0 s are clipped and counted in ``observation_clipped``).
        processor: a ``MambaVLProcessor`` (videos + questions -> ``pixel_values``, ``question_input_ids``,
            ``question_attention_mask``) or ``MambaVLVideoProcessor``; ``None`` returns decoded ``video`` arrays
            (T, H, W, 3) uint8 and the ``questions`` strings.
        num_frames, sampling, stride, target_fps, training, seed: frame sampling (``num_frames`` defaults to the
            processor's, else 16; ``sampling`` to ``"segment"`` for recognition and ``"dense"`` for anticipation;
            random frame positions and augmentation are seeded by (seed, epoch, ``sample_index``); set the epoch
            with :func:`set_ek100_epoch`).
        question_source: ``"generic"``, ``"file"`` (with ``questions_path``), ``"predicted"`` (with
            ``questions_path``), ``"oracle"`` (refused for the test split) or a callable example -> Q strings.
            Questions are built per example in the transform, one per entry of ``question_types``, and tokenized
            by a ``MambaVLProcessor`` (set its ``max_length`` when single examples go through a DataLoader, so that
            they stack). With ``"oracle"`` the summary in ``dataset.info.description`` says ``ORACLE QUESTIONS``.
        unknown_actions: a labelled (verb, noun) pair missing from the action table gets ``action_class =
            UNKNOWN_ACTION`` (-100) and is counted (``"ignore"``, the default), or raises (``"error"``).
        check_media: check up front that every video's frame folder / MP4 / feature entry exists. A question file
            or predictions file is always checked up front: one lacking narrations of the split raises ``ValueError``.

    Returns:
        A `datasets.Dataset` with the columns ``narration_id, participant_id, video_id, narration_timestamp,
        start_timestamp, stop_timestamp, start_frame, stop_frame, start_sec, stop_sec`` (+ ``narration, verb,
        verb_class, noun, noun_class, all_nouns, all_noun_classes, action_class`` for labelled splits,
        + ``observation_start, observation_end, observation_clipped`` for anticipation) and ``sample_index``.
        ``dataset.info.description`` holds a JSON summary (rows, clipped windows, unknown actions).
    """
    annotations_dir = Path(annotations_dir)
    _check_arguments(split, media, task, anticipation_time, observation_time, question_source, unknown_actions)
    if not annotations_dir.is_dir():
        raise FileNotFoundError(f"{annotations_dir}: annotations folder not found (an epic-kitchens-100-annotations checkout)")
    vocab = vocab or _default_vocabulary(annotations_dir)
    path = annotations_dir / SPLIT_FILES[split]
    columns = read_ek100_csv(path, vocab)
    labelled = "verb_class" in columns
    if split != "test" and not labelled:
        raise EK100AnnotationError(f"{path}: the {split} split needs the label columns {list(LABELLED_COLUMNS[8:])}")
    if split == "test" and labelled:
        logger.warning("%s: the test split carries labels; they are dropped", path)
        columns = {c: columns[c] for c in (*TEST_COLUMNS, "start_sec", "stop_sec")}
        labelled = False
    num_rows = len(columns["narration_id"])
    summary: dict[str, Any] = {"file": str(path), "split": split, "task": task, "num_rows": num_rows}
    if labelled:
        summary["num_unknown_actions"] = _add_action_classes(columns, vocab, path, unknown_actions)
    if task == "anticipation":
        summary.update(_add_anticipation_windows(columns, anticipation_time, observation_time, path))
    columns["sample_index"] = list(range(num_rows))
    if question_source is not None:
        summary["question_source"] = question_source if isinstance(question_source, str) else "custom"
        if question_source == "oracle":
            summary["label"] = ORACLE_QUESTIONS

    features = _features(labelled, task == "anticipation", vocab)
    info = datasets.DatasetInfo(description=json.dumps(summary), features=features)
    dataset = datasets.Dataset.from_dict({k: columns[k] for k in features}, features=features, info=info)
    if media_root is None:
        return dataset

    # Imported here: the media pipeline pulls torch and safetensors, which annotations alone do not need.
    from .media import EK100Transform

    transform = EK100Transform(
        media_root=media_root, media=media, task=task, split=split, processor=processor, num_frames=num_frames,
        sampling=sampling, stride=stride, target_fps=target_fps, training=training, seed=seed,
        question_source=question_source, questions_path=questions_path, question_types=tuple(question_types),
        vocab=vocab,
    )
    if check_media:
        transform.check(dataset)
    transform.check_questions(dataset["narration_id"])
    return dataset.with_transform(transform)


def _check_arguments(
    split: str,
    media: str,
    task: str,
    anticipation_time: float,
    observation_time: float,
    question_source: Any,
    unknown_actions: str,
) -> None:
    """`load_ek100`'s argument checks: ``ValueError`` naming the argument, its value and what is allowed."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split={split!r}: expected one of {sorted(SPLIT_FILES)}")
    if media not in _MEDIA:
        raise ValueError(f"media={media!r}: expected one of {_MEDIA}")
    if task not in _TASKS:
        raise ValueError(f"task={task!r}: expected one of {_TASKS}")
    if unknown_actions not in ("ignore", "error"):
        raise ValueError(f"unknown_actions={unknown_actions!r}: expected 'ignore' or 'error'")
    if not (anticipation_time >= 0 and math.isfinite(anticipation_time)):
        raise ValueError(f"anticipation_time={anticipation_time!r}: expected a finite number of seconds >= 0")
    if not (observation_time > 0 and math.isfinite(observation_time)):
        raise ValueError(f"observation_time={observation_time!r}: expected a finite number of seconds > 0")
    if isinstance(question_source, str) and question_source == "oracle" and split == "test":
        raise ValueError(
            "question_source='oracle' builds questions from the ground-truth narration and is refused for the "
            "test split; use 'generic', 'file' or 'predicted'"
        )


def _add_action_classes(columns: dict[str, list], vocab: EK100Vocabulary, path: Path, unknown_actions: str) -> int:
    """Add the ``action_class`` column (``UNKNOWN_ACTION`` for a pair outside the action table, or raise with
    ``unknown_actions="error"``); returns how many rows are unknown."""
    actions, unknown = [], 0
    for i, (verb, noun) in enumerate(zip(columns["verb_class"], columns["noun_class"])):
        if vocab.has_action(verb, noun):
            actions.append(vocab.action_id(verb, noun))
            continue
        if unknown_actions == "error":
            raise EK100AnnotationError(
                f"{path}, narration {columns['narration_id'][i]}: (verb {verb}, noun {noun}) is not one of the "
                f"{vocab.num_actions} action classes; pass unknown_actions='ignore' to keep it as {UNKNOWN_ACTION}"
            )
        actions.append(UNKNOWN_ACTION)
        unknown += 1
    columns["action_class"] = actions
    if unknown:
        logger.warning(
            "%s: %d of %d rows have a (verb, noun) pair outside the %d-class action table; their "
            "action_class is %d", path, unknown, len(actions), vocab.num_actions, UNKNOWN_ACTION,
        )
    return unknown


def _add_anticipation_windows(
    columns: dict[str, list], anticipation_time: float, observation_time: float, path: Path
) -> dict[str, Any]:
    """Add the ``observation_start`` / ``observation_end`` / ``observation_clipped`` columns; returns their summary
    (the times, how many windows were clipped at 0 s and how many are empty)."""
    windows = [anticipation_window(s, anticipation_time, observation_time) for s in columns["start_sec"]]
    columns["observation_start"] = [w[0] for w in windows]
    columns["observation_end"] = [w[1] for w in windows]
    columns["observation_clipped"] = [w[2] for w in windows]
    clipped = sum(columns["observation_clipped"])
    empty = sum(1 for w in windows if w[1] <= 0.0)
    if clipped:
        logger.info(
            "%s: %d anticipation windows start before 0 s and were clipped (%d are empty: the action starts "
            "within %.3f s of the video start)", path, clipped, empty, anticipation_time,
        )
    return {"anticipation_time": anticipation_time, "observation_time": observation_time,
            "num_clipped_windows": clipped, "num_empty_windows": empty}
