"""examples/eval_ek100.py on its own, as a user runs it: a saved model evaluated on a labelled split (the same figures
as the training run's own evaluation), a challenge submission for the test split, and the errors that stop it early."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile

import jsonschema
import pytest
from helpers.train_run import EVAL, TRAIN, data_args, run, script_args, synthetic_cache, synthetic_root

from modeling_mambavl.ek100.annotations import SPLIT_FILES
from modeling_mambavl.ek100.submission import submission_schema


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """A model from a one-epoch run that evaluated itself on the validation split at the end."""
    out = tmp_path_factory.mktemp("eval-script") / "run"
    proc = run(TRAIN, script_args(cache, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "6"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _split_ids(cache, split: str) -> list[str]:
    with open(synthetic_root(cache) / "annotations" / SPLIT_FILES[split], newline="") as f:
        return [row["narration_id"] for row in csv.DictReader(f)]


def test_evaluating_a_saved_model_reproduces_the_training_runs_figures(cache, trained, tmp_path):
    out = tmp_path / "eval"
    proc = run(EVAL, ["--model_name_or_path", str(trained / "best_model"), "--split", "validation",
                      "--output_dir", str(out), *data_args(cache)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The metric table, headed by the split and the question source.
    assert "validation: questions: generic; clips scored: 12 of 12" in proc.stdout
    assert "all top1" in proc.stdout and "unseen top1" in proc.stdout
    ours = json.loads((out / "metrics.json").read_text())
    theirs = json.loads((trained / "best_model" / "metrics.json").read_text())
    assert ours["split"] == "validation" and ours["question_source"] == "generic" and ours["num_clips_scored"] == 12
    assert (ours["epoch"], ours["global_step"]) == (theirs["epoch"], theirs["global_step"])
    for key in ("all_verb_top1", "all_noun_top1", "all_action_top1", "all_verb_top5", "all_noun_top5"):
        assert ours["metrics"][key] == pytest.approx(theirs["metrics"][key], abs=1e-6), key
    predictions = json.loads((out / "predictions.json").read_text())
    assert sorted(predictions) == sorted(_split_ids(cache, "validation"))


def test_test_split_writes_a_valid_challenge_submission(cache, trained, tmp_path):
    submission = tmp_path / "submission.zip"
    proc = run(EVAL, ["--model_name_or_path", str(trained / "final_model"), "--split", "test",
                      "--output_dir", str(tmp_path / "eval"), "--submission", str(submission),
                      "--sls_pt", "0", "--sls_tl", "3", "--sls_td", "3", *data_args(cache)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with zipfile.ZipFile(submission) as z:
        document = json.loads(z.read("test.json"))
    jsonschema.validate(document, submission_schema())
    assert sorted(document["results"]) == sorted(_split_ids(cache, "test"))
    assert (document["sls_pt"], document["sls_tl"], document["sls_td"]) == (0, 3, 3)
    assert not (tmp_path / "eval" / "metrics.json").exists()  # the test split has no labels to score


def test_submission_needs_the_supervision_levels(cache, trained, tmp_path):
    proc = run(EVAL, ["--model_name_or_path", str(trained / "final_model"), "--split", "test",
                      "--submission", str(tmp_path / "s.zip"), *data_args(cache)])
    assert proc.returncode == 2 and "--sls_pt, --sls_tl and --sls_td" in proc.stderr


def test_a_processor_that_disagrees_with_the_model_is_named(cache, trained, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(trained / "final_model", model)
    path = model / "processor_config.json"
    document = json.loads(path.read_text())
    document["video_processor"]["num_frames"] = 4
    path.write_text(json.dumps(document))
    proc = run(EVAL, ["--model_name_or_path", str(model), "--output_dir", str(tmp_path / "eval"), *data_args(cache)])
    assert proc.returncode != 0
    assert "processor_config.json" in proc.stderr and "num_frames=4" in proc.stderr and "num_frames=8" in proc.stderr


def test_check_processor_fits_names_the_disagreement():
    from modeling_mambavl import MambaVLConfig, MambaVLProcessor

    config = MambaVLConfig.from_preset("tiny")
    processor = MambaVLProcessor.from_config(config)
    processor.check_model_config(config, "ckpt")  # made from the config: fits
    processor.video_processor.crop_size = {"height": 32, "width": 32}
    with pytest.raises(ValueError, match=r"ckpt \(processor_config.json\) crops frames to 32x32 .* image_size=64"):
        processor.check_model_config(config, "ckpt")
    processor.video_processor.num_frames = config.num_frames * 2
    with pytest.raises(ValueError, match=f"num_frames={config.num_frames * 2} .* num_frames={config.num_frames}"):
        processor.check_model_config(config, "ckpt")


def test_evaluation_options_are_the_fields_of_evaluation_arguments(cache, tiny_saved, tmp_path):
    """The script and `mambavl eval` each fill one EvaluationArguments; keyword overrides replace its fields (the
    caller's object is left as it was), and an unknown option is named with the ones there are."""
    from modeling_mambavl.training.builders import DataSpec
    from modeling_mambavl.training.evaluation import EvaluationArguments, evaluate_ek100

    _, model, processor = tiny_saved
    root = synthetic_root(cache)
    data = DataSpec(root / "annotations", root, "frames", "synthetic-ek100")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['temporal_view'\].*'temporal_views'"):
        evaluate_ek100(model, processor, data, temporal_view=2)
    arguments = EvaluationArguments(limit=3, batch_size=2, print_table=False, metrics_path=tmp_path / "metrics.json")
    result = evaluate_ek100(model, processor, data, arguments, limit=2)
    assert result.predictions.num_clips == 2 and arguments.limit == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["num_clips"] == 2
