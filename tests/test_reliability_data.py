"""Bad annotations and bad media met by the REAL training and evaluation scripts: annotation errors stop the run
before any training (naming file and line, nothing written); unreadable clips stop training and evaluation with the
file and the clip named, or are skipped and counted with ``--skip_bad_clips``; evaluation keeps every clip in its
count (``num_clips``) and reports the unreadable ones (``num_clips_scored``, ``bad_clips``, ``valid`` per clip)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers.train_run import TRAIN, break_clip, copy_dataset, run, script_args, synthetic_cache

from modeling_mambavl.ek100 import EK100AnnotationError
from modeling_mambavl.processors import MediaError


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


def _data_args(annotations: Path, media: Path) -> list[str]:
    return ["--annotations_dir", str(annotations), "--media_root", str(media), "--media", "frames"]


def _rewrite(path: Path, edit) -> None:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    rows = edit(rows)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def _set(line: int, column: str, value: str):
    """An edit setting ``column`` of file line ``line`` (the header is line 1)."""
    def edit(rows):
        rows[line - 1][rows[0].index(column)] = value
        return rows
    return edit


def _drop_column(column: str):
    def edit(rows):
        i = rows[0].index(column)
        return [r[:i] + r[i + 1:] for r in rows]
    return edit


def _stop_before_start(line: int):
    def edit(rows):
        h = rows[0]
        row = rows[line - 1]
        for a, b in (("start_timestamp", "stop_timestamp"), ("start_frame", "stop_frame")):
            row[h.index(a)], row[h.index(b)] = row[h.index(b)], row[h.index(a)]
        return rows
    return edit


# (file, edit, what the message must name)
BAD_ANNOTATIONS = {
    "missing_column": ("EPIC_100_train.csv", _drop_column("stop_frame"), r"line 1: missing column.*stop_frame"),
    "unknown_verb_class": ("EPIC_100_train.csv", _set(3, "verb_class", "4242"),
                           r"line 3, field 'verb_class': unknown class id 4242"),
    "stop_before_start": ("EPIC_100_validation.csv", _stop_before_start(4),
                          r"line 4, field 'stop_timestamp': stop .* is before start"),
    "malformed_list": ("EPIC_100_train.csv", _set(2, "all_noun_classes", "[2,"),
                       r"line 2, field 'all_noun_classes'"),
    "malformed_noun_list": ("EPIC_100_validation.csv", _set(5, "all_nouns", "plate"),
                            r"line 5, field 'all_nouns'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_annotations_stop_the_training_script_before_training(case, cache, tmp_path, train_script,
                                                                   fresh_accelerate_state):
    filename, edit, expected = BAD_ANNOTATIONS[case]
    annotations, media = copy_dataset(cache, tmp_path / "data")
    _rewrite(annotations / filename, edit)
    out = tmp_path / "run"
    with pytest.raises(EK100AnnotationError, match=str(annotations / filename).replace(".", r"\.") + ", " + expected):
        train_script.main(script_args(cache, out, *_data_args(annotations, media), "--max_train_steps", "1"))
    assert not out.exists()  # no checkpoint, no model, not even the run folder


@pytest.mark.slow
def test_bad_annotation_subprocess_exits_nonzero_naming_file_and_line(cache, tmp_path):
    annotations, media = copy_dataset(cache, tmp_path / "data")
    _rewrite(annotations / "EPIC_100_train.csv", _set(6, "verb_class", "-3"))
    out = tmp_path / "run"
    proc = run(TRAIN, script_args(cache, out, *_data_args(annotations, media), "--max_train_steps", "1"))
    # A user error: one line naming file, line and field (exit 2, no traceback; --debug shows it).
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"train_ek100.py: {annotations / 'EPIC_100_train.csv'}, line 6, field 'verb_class'"), last
    assert "train:" not in proc.stderr  # the loop never started
    assert not out.exists()


@pytest.mark.slow
def test_bad_training_clip_stops_or_is_skipped_and_counted(cache, tmp_path, train_script, fresh_accelerate_state):
    annotations, media = copy_dataset(cache, tmp_path / "data")
    broken = break_clip(media, annotations, "train", 2)
    # The broken clip's frames may be shared by a validation clip of the same video: count those too.
    common = [*_data_args(annotations, media), "--max_train_steps", "2", "--per_device_train_batch_size", "6",
              "--data_cache_dir", str(tmp_path / "cache")]
    strict = tmp_path / "strict"
    with pytest.raises(MediaError, match=r"frame_\d+\.jpg") as err:
        train_script.main(script_args(cache, strict, *common))
    assert "rgb_frames" in err.value.path and broken in str(err.value)
    assert not any(strict.glob("checkpoint-*"))

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    lenient = tmp_path / "lenient"
    result = train_script.main(script_args(cache, lenient, *common, "--skip_bad_clips"))
    assert broken in result["bad_train_clips"]
    summary = json.loads((lenient / "train_summary.json").read_text())
    assert broken in summary["bad_training_clips"]
    assert summary["num_bad_training_clips"] == len(summary["bad_training_clips"]) >= 1
    metrics = json.loads((lenient / "best_model" / "metrics.json").read_text())
    assert metrics["num_clips"] == 12  # every validation clip is in the count


@pytest.mark.slow
def test_evaluation_keeps_unreadable_clips_in_its_count(cache, tmp_path, train_script, eval_script,
                                                          fresh_accelerate_state):
    from accelerate.state import AcceleratorState

    # A model from a clean one-step run.
    model_run = tmp_path / "model"
    train_script.main(script_args(cache, model_run, "--max_train_steps", "1", "--per_device_train_batch_size", "6"))
    annotations, media = copy_dataset(cache, tmp_path / "data")
    broken = break_clip(media, annotations, "validation", 3)
    args = ["--model_name_or_path", str(model_run / "final_model"), *_data_args(annotations, media),
            "--num_workers", "0", "--per_device_eval_batch_size", "5"]

    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(MediaError) as err:
        eval_script.main([*args, "--output_dir", str(tmp_path / "strict")])
    assert broken in str(err.value) and "rgb_frames" in err.value.path

    AcceleratorState._reset_state(reset_partial_state=True)
    out = tmp_path / "lenient"
    result = eval_script.main([*args, "--skip_bad_clips", "--output_dir", str(out)])
    bad = result["bad_clips"]
    assert broken in bad
    assert result["num_clips"] == 12 and result["num_clips_scored"] == 12 - len(bad)
    assert result["metrics"]["num_clips"] == 12 and result["metrics"]["num_clips_scored"] == 12 - len(bad)
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["num_clips"] == 12 and stored["num_clips_scored"] == 12 - len(bad)
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 12 and predictions[broken]["valid"] is False
    with open(out / "predictions.csv", newline="") as f:
        rows = {r["narration_id"]: r for r in csv.DictReader(f)}
    assert len(rows) == 12 and rows[broken]["valid"] == "0"
