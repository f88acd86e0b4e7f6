"""The question cascade: first-stage predictions in the ``predicted`` source's format, out-of-fold predictions for the
training split (folds by video), fold-mean predictions for validation / test, and a resumable run
(``examples/cascade_ek100.py``)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.scripts import EXAMPLES, import_script
from helpers.synthetic_files import small_frames_set
from helpers.train_run import environment

from modeling_mambavl.ek100.metric import official_action_topk
from modeling_mambavl.processors import make_question_source
from modeling_mambavl.training.evaluation import (
    Predictions,
    question_predictions,
    read_probabilities,
    write_probabilities,
    write_question_predictions,
)

REPO = Path(__file__).resolve().parents[1]
CASCADE = EXAMPLES / "cascade_ek100.py"


@pytest.fixture(scope="module")
def cascade_script():
    yield from import_script(CASCADE, "cascade_ek100_under_test")


@pytest.fixture(scope="module")
def six_videos(tmp_path_factory):
    """A synthetic EK100-format set at 32 px whose training split has 6 videos of 4 clips (frames only)."""
    return small_frames_set(tmp_path_factory.mktemp("cascade-data"), clips_per_video=4, size=32)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def random_predictions(narration_ids: list[str], seed: int, valid: np.ndarray | None = None) -> Predictions:
    rng = np.random.default_rng(seed)
    n = len(narration_ids)
    return Predictions(
        narration_ids=list(narration_ids), participant_ids=["P01"] * n,
        verb_logits=rng.normal(size=(n, 97)).astype(np.float32) * 3,
        noun_logits=rng.normal(size=(n, 300)).astype(np.float32) * 3,
        verb_labels=rng.integers(0, 97, n), noun_labels=rng.integers(0, 300, n),
        valid=np.ones(n, dtype=bool) if valid is None else valid,
    )


def test_question_predictions_are_the_official_top_k_and_read_by_the_predicted_source(six_videos, tmp_path):
    ids = [r["narration_id"] for r in read_csv(six_videos.annotations_dir / "EPIC_100_validation.csv")]
    valid = np.ones(len(ids), dtype=bool)
    valid[3] = False  # unreadable media: meaningless logits, no entry
    predictions = random_predictions(ids, seed=1, valid=valid)
    path = write_question_predictions(tmp_path / "predictions.json", predictions, top_k=4)

    doc = json.loads(path.read_text())
    assert sorted(doc) == sorted(n for n, ok in zip(ids, valid) if ok)
    verbs, nouns, probs = official_action_topk(predictions.verb_logits, predictions.noun_logits, k=4)
    for i, nid in enumerate(ids):
        if valid[i]:
            assert [[v, n] for v, n, _ in doc[nid]] == [[int(v), int(n)] for v, n in zip(verbs[i], nouns[i])]
            np.testing.assert_allclose([s for _, _, s in doc[nid]], probs[i], rtol=1e-6)
    source = make_question_source("predicted", split="validation", path=path)
    kept = [n for n, ok in zip(ids, valid) if ok]
    source.check_ids(kept)
    with pytest.raises(ValueError, match="lacks 1 of"):
        source.check_ids(ids)
    first = doc[kept[0]][0]
    verb_question, noun_question = source({"narration_id": kept[0]})
    assert source.vocab.verb_name(first[0]) in verb_question
    assert source.vocab.noun_name(first[1]) in noun_question
    with pytest.raises(ValueError, match="top_k"):
        question_predictions(predictions, top_k=0)


def test_read_probabilities_averages_models_and_refuses_other_clips(tmp_path):
    ids = [f"P01_01_{i}" for i in range(5)]
    a, b = random_predictions(ids, 2), random_predictions(ids, 3)
    b.valid[1] = False
    files = [write_probabilities(tmp_path / "a.npz", a), write_probabilities(tmp_path / "b.npz", b)]
    mean = read_probabilities(files)

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    for got, x, y in ((mean.verb_logits, a.verb_logits, b.verb_logits),
                      (mean.noun_logits, a.noun_logits, b.noun_logits)):
        np.testing.assert_allclose(softmax(got.astype(np.float64)), (softmax(x) + softmax(y)) / 2, atol=1e-6)
    assert mean.valid.tolist() == [True, False, True, True, True]
    assert mean.narration_ids == ids and mean.verb_labels.tolist() == a.verb_labels.tolist()
    write_probabilities(tmp_path / "c.npz", random_predictions(ids[::-1], 4))
    with pytest.raises(ValueError, match="c.npz: its clips differ"):
        read_probabilities([files[0], tmp_path / "c.npz"])


def test_folds_split_by_video_never_within_one(cascade_script, six_videos, tmp_path):
    rows = read_csv(six_videos.annotations_dir / "EPIC_100_train.csv")
    for k in (2, 3, 6):
        folds = cascade_script.assign_folds(rows, k, seed=0)
        flat = [v for fold in folds for v in fold]
        assert sorted(flat) == sorted({r["video_id"] for r in rows}) and len(flat) == len(set(flat))
        assert all(folds)
        assert folds == cascade_script.assign_folds(rows, k, seed=0)
    with pytest.raises(ValueError, match="--num_folds 7: the training split has only 6 videos"):
        cascade_script.assign_folds(rows, 7, seed=0)

    manifest = cascade_script.make_folds(six_videos.annotations_dir, tmp_path, 3, seed=5)
    assert json.loads((tmp_path / "folds.json").read_text()) == manifest
    all_ids = sorted(r["narration_id"] for r in rows)
    held = []
    for fold in manifest["folds"]:
        fold_dir = tmp_path / f"fold_{fold['fold']}"
        trained = read_csv(fold_dir / "train_annotations" / "EPIC_100_train.csv")
        predicted = read_csv(fold_dir / "heldout_annotations" / "EPIC_100_train.csv")
        assert not {r["video_id"] for r in trained} & {r["video_id"] for r in predicted}
        assert sorted(r["narration_id"] for r in trained + predicted) == all_ids
        assert [r["narration_id"] for r in predicted] == fold["heldout_narrations"]
        for name in ("EPIC_100_validation.csv", "EPIC_100_test_timestamps.csv", "EPIC_100_verb_classes.csv"):
            assert (fold_dir / "train_annotations" / name).read_bytes() == \
                (six_videos.annotations_dir / name).read_bytes()
        held += fold["heldout_narrations"]
    assert sorted(held) == all_ids


def test_fold_counts_the_data_cannot_take_are_refused_before_anything_is_recorded(cascade_script, six_videos,
                                                                                   tmp_path):
    rows = read_csv(six_videos.annotations_dir / "EPIC_100_train.csv")
    one_video = [r for r in rows if r["video_id"] == rows[0]["video_id"]]
    with pytest.raises(ValueError, match="has 1 video.*at least 2"):
        cascade_script.assign_folds(one_video, 2, seed=0)
    out = tmp_path / "run"
    data = ["--annotations_dir", str(six_videos.annotations_dir), "--media_root", str(six_videos.media_root),
            "--media", "frames"]
    with pytest.raises(ValueError, match="--num_folds 7: the training split has only 6 videos"):
        cascade_script.main(["--output_dir", str(out), "--num_folds", "7", *data])
    # nothing pins the folder to the refused settings: a corrected rerun is not "started with other settings"
    assert not (out / "cascade.json").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=f"--output_dir {a_file}: is a file"):
        cascade_script.main(["--output_dir", str(a_file), *data])
    assert a_file.read_text() == "x"


def test_data_options_belong_before_the_training_arguments(cascade_script, eval_script, tmp_path):
    with pytest.raises(ValueError, match="--synthetic_size.*give them before --"):
        cascade_script.parse_args(["--output_dir", str(tmp_path), "--", "--lr", "1e-3", "--synthetic_size", "32"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.001\nmedia: video\n")
    with pytest.raises(ValueError, match=r"--media \(in .*recipe.yaml\)"):
        cascade_script.parse_args(["--", "--recipe", str(recipe)])
    args, extra, group = cascade_script.parse_args(["--synthetic_size", "32", "--cache_clips", "--", "--lr", "1"])
    assert cascade_script.data_options(args, group) == ["--cache_clips", "--synthetic_size", "32"]
    # the data options are the actions add_data_arguments added (public argparse.Action objects)
    assert {"annotations_dir", "cache_clips", "question_pool"} <= {a.dest for a in group}
    assert extra == ["--lr", "1"]
    with pytest.raises(SystemExit):
        eval_script.parse_args(["--model_name_or_path", "m", "--question_source", "oracle",
                                "--write_question_predictions", str(tmp_path / "q.json")])


def run_cascade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CASCADE), *args], env=environment(), capture_output=True, text=True,
                          timeout=1200, cwd=REPO)


@pytest.mark.slow
def test_cascade_end_to_end_out_of_fold_and_resumable(six_videos, tmp_path):
    out = tmp_path / "cascade"
    args = ["--output_dir", str(out), "--num_folds", "2", "--seed", "3", "--controls", "oracle", "--jobs", "2",
            "--annotations_dir", str(six_videos.annotations_dir), "--media_root", str(six_videos.media_root),
            "--data_cache_dir", str(tmp_path / "cache"), "--num_workers", "0", "--question_top_k", "3",
            "--", "--max_train_steps", "2", "--per_device_train_batch_size", "4", "--num_threads", "1", "--no_plot",
            "--config_overrides", json.dumps({"image_size": 32, "vision_config": {"image_size": 32}})]
    first = run_cascade(*args)
    assert first.returncode == 0, first.stderr[-3000:]

    stage1 = out / "stage1"
    manifest = json.loads((stage1 / "folds.json").read_text())
    predicted_by = json.loads((stage1 / "predicted_by.json").read_text())
    train_ids = [r["narration_id"] for r in read_csv(six_videos.annotations_dir / "EPIC_100_train.csv")]
    video_of = {r["narration_id"]: r["video_id"] for r in read_csv(six_videos.annotations_dir / "EPIC_100_train.csv")}
    # every training clip predicted exactly once, each by a model that never trained on its video
    assert sorted(predicted_by) == sorted(train_ids)
    seen = []
    for fold in manifest["folds"]:
        k = fold["fold"]
        run_args = json.loads((stage1 / f"fold_{k}" / "model" / "run_metadata.json").read_text())["args"]
        trained_on = Path(run_args["annotations_dir"])
        assert trained_on == stage1 / f"fold_{k}" / "train_annotations"
        trained_videos = {r["video_id"] for r in read_csv(trained_on / "EPIC_100_train.csv")}
        assert trained_videos == set(fold["train_videos"])
        fold_predictions = json.loads((stage1 / f"fold_{k}" / "predict_train" / "questions.json").read_text())
        for nid in fold_predictions:
            assert predicted_by[nid] == k and video_of[nid] not in trained_videos
        seen += list(fold_predictions)
    assert sorted(seen) == sorted(train_ids)
    # validation / test: the mean of the fold models' probabilities
    for split in ("validation", "test"):
        merged = np.load(stage1 / f"probabilities_{split}.npz")
        folds = [np.load(stage1 / f"fold_{k}" / f"predict_{split}" / "probabilities.npz") for k in range(2)]
        for key in ("verb_probs", "noun_probs"):
            np.testing.assert_allclose(merged[key], (folds[0][key] + folds[1][key]) / 2, atol=1e-6)
    # one merged JSON the predicted source reads for every split
    for split in ("train", "validation", "test"):
        ids = [r["narration_id"] for r in read_csv(six_videos.annotations_dir / {
            "train": "EPIC_100_train.csv", "validation": "EPIC_100_validation.csv",
            "test": "EPIC_100_test_timestamps.csv"}[split])]
        make_question_source("predicted", split=split, path=stage1 / "predictions.json").check_ids(ids, split)
    results = json.loads((out / "results.json").read_text())
    assert list(results["rows"]) == ["stage1", "stage2", "control_oracle"]
    assert results["rows"]["stage2"]["question_source"] == "predicted"
    assert results["rows"]["control_oracle"]["label"] == "ORACLE QUESTIONS"
    assert "ORACLE QUESTIONS" in first.stdout and "stage 1 alone (mean of 2 fold models)" in first.stdout

    # a rerun skips every finished step; other settings into the same folder are refused in one line
    summary = out / "stage2" / "model" / "train_summary.json"
    before = summary.stat().st_mtime_ns
    again = run_cascade(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, skipped") == 2 * 4 + 2 + 2 and summary.stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["rows"] == results["rows"]
    changed = run_cascade(*[a if a != "3" else "4" for a in args])
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1].startswith("cascade_ek100.py: ") and "seed" in changed.stderr
