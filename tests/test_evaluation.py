"""One EK100 evaluator: ``mambavl eval`` and ``examples/eval_ek100.py`` both run
``training.evaluation.evaluate_ek100``, so on the same checkpoint and data they print the same table and write the same
``metrics.json`` (strict JSON), and a clip that cannot be read stays in ``num_clips`` and out of the scored clips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers.scripts import import_script
from helpers.train_run import EVAL, SYNTHETIC, break_clip, copy_dataset, synthetic_cache, synthetic_root

from modeling_mambavl.cli import main as cli_main


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


@pytest.fixture(scope="module")
def eval_module():
    yield from import_script(EVAL, "eval_ek100_one_evaluator")


def _reject_constant(name: str):
    raise ValueError(f"metrics.json holds the non-JSON constant {name}")


def _strict(path: Path) -> dict:
    """metrics.json parsed as strict JSON (NaN / Infinity refused), with its count of empty metrics checked."""
    document = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    assert document["num_empty_metrics"] == sum(v is None for v in document["metrics"].values())
    return document


def _run_script(eval_module, model: Path, out: Path, annotations: Path, media: Path, *extra: str) -> dict:
    return eval_module.main([
        "--model_name_or_path", str(model), "--annotations_dir", str(annotations), "--media_root", str(media),
        "--media", "frames", "--num_workers", "0", "--per_device_eval_batch_size", "4", "--output_dir", str(out),
        *extra])


def _cli_args(model: Path, out: Path, annotations: Path, media: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(model), "--annotations", str(annotations), "--media-root", str(media),
            "--media", "frames", "--dataset-name", "epic-kitchens-100", "--batch-size", "4", "--output", str(out),
            *extra]


# (script options, the same for the CLI, clips evaluated): one view; 2 temporal views x 2 spatial crops with the
# lenient rule; the first 2 clips only (the old CLI counted the whole split in num_clips then).
CASES = {
    "one-view": ((), (), SYNTHETIC["num_validation"]),
    "views-and-rule": (("--temporal_views", "2", "--spatial_crops", "2", "--action_rule", "independent"),
                       ("--temporal-views", "2", "--spatial-crops", "2", "--action-rule", "independent"),
                       SYNTHETIC["num_validation"]),
    "first-two": (("--max_eval_samples", "2"), ("--limit", "2"), 2),
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "views-and-rule" else c
                                  for c in sorted(CASES)])
def test_cli_and_script_write_the_same_metrics_json(case, cache, tiny_saved, eval_module, tmp_path, capsys):
    script_options, cli_options, num = CASES[case]
    folder = tiny_saved[0]
    root = synthetic_root(cache)
    annotations = root / "annotations"
    result = _run_script(eval_module, folder, tmp_path / "script", annotations, root, *script_options)
    script_table = capsys.readouterr().out
    assert cli_main(_cli_args(folder, tmp_path / "cli.json", annotations, root, *cli_options)) == 0
    cli_table = capsys.readouterr().out

    ours, theirs = _strict(tmp_path / "cli.json"), _strict(tmp_path / "script" / "metrics.json")
    assert ours == theirs  # same keys, same values
    assert ours["num_clips"] == ours["num_clips_scored"] == result["num_clips"] == num
    assert ours["counts"]["num_examples"] == num
    assert ours["action_rule"] == ("independent" if case == "views-and-rule" else "official")
    if case == "first-two":  # no tail noun among them: a null metric, counted, instead of NaN
        assert ours["metrics"]["tail_noun_top1"] is None and ours["num_empty_metrics"] >= 1
    # The same table, printed by both.
    assert cli_table == script_table
    assert cli_table.startswith(f"validation: questions: generic; clips scored: {num} of {num}\n")
    assert "all top1" in cli_table
    if case == "first-two":  # --json prints the document metrics.json holds (and no table)
        assert cli_main(_cli_args(folder, tmp_path / "again.json", annotations, root, *cli_options, "--json")) == 0
        printed = capsys.readouterr().out
        assert json.loads(printed, parse_constant=_reject_constant) == ours
        assert printed == (tmp_path / "again.json").read_text(encoding="utf-8")


def test_views_change_what_is_scored(cache, tiny_saved, tmp_path, capsys):
    """The view options reach the model: 2 temporal views give other logits than one (so the equality above is not
    two runs ignoring them)."""
    from modeling_mambavl.training.builders import DataSpec
    from modeling_mambavl.training.evaluation import evaluate_ek100

    folder, model, processor = tiny_saved
    root = synthetic_root(cache)
    data = DataSpec(root / "annotations", root, "frames", "synthetic-ek100")
    one = evaluate_ek100(model, processor, data, batch_size=4, print_table=False)
    two = evaluate_ek100(model, processor, data, batch_size=4, temporal_views=2, print_table=False)
    assert one.predictions.narration_ids == two.predictions.narration_ids
    assert abs(one.predictions.verb_logits - two.predictions.verb_logits).max() > 1e-6
    assert capsys.readouterr().out == ""  # print_table=False prints nothing


@pytest.mark.slow
def test_a_bad_clip_stays_in_num_clips_and_out_of_the_scored_ones(cache, tiny_saved, eval_module, tmp_path, capsys,
                                                                  caplog):
    folder = tiny_saved[0]
    annotations, media = copy_dataset(cache, tmp_path / "data")
    broken = break_clip(media, annotations, "validation", 3)

    # Without --skip-bad-clips: one line naming the clip, exit status 2, before the model runs.
    assert cli_main(_cli_args(folder, tmp_path / "strict.json", annotations, media)) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mambavl eval: ") and broken in error
    assert not (tmp_path / "strict.json").exists()

    result = _run_script(eval_module, folder, tmp_path / "script", annotations, media, "--skip_bad_clips")
    capsys.readouterr()
    caplog.clear()
    assert cli_main(_cli_args(folder, tmp_path / "cli.json", annotations, media, "--skip-bad-clips")) == 0
    captured = capsys.readouterr()
    bad = result["bad_clips"]
    assert broken in bad
    assert any(r.levelname == "WARNING" and broken in r.getMessage() for r in caplog.records)  # the CLI names it
    ours = _strict(tmp_path / "cli.json")
    assert ours == _strict(tmp_path / "script" / "metrics.json")
    num = SYNTHETIC["num_validation"]
    assert ours["num_clips"] == num and ours["num_clips_scored"] == num - len(bad) < num
    assert ours["counts"]["num_examples"] == ours["num_clips_scored"]  # the metrics are over the scored clips only
    assert f"clips scored: {num - len(bad)} of {num}" in captured.out


def test_cli_refuses_a_split_without_labels(cache, tiny_saved, tmp_path, capsys):
    root = synthetic_root(cache)
    out = tmp_path / "metrics.json"
    assert cli_main(_cli_args(tiny_saved[0], out, root / "annotations", root, "--split", "test")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("mambavl eval: split 'test'") and "no verb / noun labels" in error
    assert not out.exists()


def test_bad_output_paths_are_refused_before_the_evaluation(tiny_saved, eval_module, tmp_path, capsys):
    """eval_ek100.py with a folder as --write_question_predictions (it used to be replaced by the file, with all it
    held, after the evaluation) or a file as --output_dir: one line naming the option, status 2, nothing written."""
    from modeling_mambavl.cli import run_main

    folder = tmp_path / "first_stage"
    folder.mkdir()
    (folder / "keep.json").write_text("{}")
    plain = tmp_path / "plain"
    plain.write_text("x")
    model = str(tiny_saved[0])
    cases = [
        (["--output_dir", str(tmp_path / "out"), "--write_question_predictions", str(folder)],
         f"--write_question_predictions {folder}: is a folder, and a file goes there"),
        (["--output_dir", str(plain)], f"--output_dir {plain}: is a file, and a folder goes there"),
        (["--output_dir", str(tmp_path / "out"), "--write_question_predictions", str(plain / "q.json")],
         f"--write_question_predictions {plain / 'q.json'}: {plain} is a file, not a folder"),
    ]
    for options, expected in cases:
        assert run_main(eval_module.main, "eval_ek100.py", ["--model_name_or_path", model, *options]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"eval_ek100.py: {expected}"), lines
    assert (folder / "keep.json").read_text() == "{}" and plain.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first_stage", "plain"]  # no output folder was made


def test_a_second_evaluation_into_the_same_output_dir_is_refused(tiny_saved, eval_module, tmp_path, capsys):
    """Two evaluations into one --output_dir would mix their metrics.json, predictions and probabilities: the second
    is refused, one line naming the folder and the other process, and writes nothing."""
    import subprocess
    import sys

    from modeling_mambavl.cli import run_main

    out = tmp_path / "eval"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom modeling_mambavl.training.runs import RunLock\n"
         "RunLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(300)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = run_main(eval_module.main, "eval_ek100.py", ["--model_name_or_path", str(tiny_saved[0]),
                                                            "--output_dir", str(out), "--num_workers", "0"])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and lines[-1].startswith(f"eval_ek100.py: --output_dir {out} is in use by another")
        assert f"pid {holder.pid}" in lines[-1]
        assert [p.name for p in out.iterdir()] == ["run.lock"]  # the holder's, nothing of the refused run
    finally:
        holder.kill()
        holder.wait()


def test_metrics_json_is_strict_json():
    """A NaN that escaped metrics_payload is refused instead of being written as the non-JSON constant NaN."""
    from modeling_mambavl.model_card import metrics_json_text
    from modeling_mambavl.training.evaluation import metrics_payload

    payload = metrics_payload({"all_verb_top1": float("nan"), "all_noun_top1": 50.0, "num_examples": 4,
                               "num_clips": 4, "num_clips_scored": 4}, task="recognition", split="validation",
                              dataset="synthetic-ek100", question_source="generic", epoch=0, global_step=0)
    document = json.loads(metrics_json_text(payload), parse_constant=_reject_constant)
    assert document["metrics"] == {"all_verb_top1": None, "all_noun_top1": 50.0}
    assert document["num_empty_metrics"] == 1
    with pytest.raises(ValueError, match="Out of range float"):
        metrics_json_text({**payload, "metrics": {"all_verb_top1": float("nan")}})


def _predictions(ids, seed=0):
    import numpy as np

    from modeling_mambavl.training.evaluation import Predictions

    rng = np.random.default_rng(seed)
    n = len(ids)
    return Predictions(narration_ids=list(ids), participant_ids=["P01"] * n, verb_logits=rng.normal(size=(n, 97)),
                       noun_logits=rng.normal(size=(n, 300)), verb_labels=rng.integers(0, 97, n),
                       noun_labels=rng.integers(0, 300, n), valid=np.ones(n, dtype=bool))


def test_question_predictions_refuse_bad_top_k_and_non_finite_logits(tmp_path):
    """top_k of the wrong type (a bare TypeError before), above the 97 x 100 actions the official score ranks (9,700
    were written silently for 20,000), and NaN logits on a valid clip (a numpy broadcasting error before)."""
    import numpy as np

    from modeling_mambavl.training.evaluation import question_predictions, write_question_predictions

    predictions = _predictions(["a", "b", "c"])
    for top_k in (2.5, True, "3"):
        with pytest.raises(ValueError, match=rf"top_k={re.escape(repr(top_k))}: .*an integer >= 1"):
            question_predictions(predictions, top_k)
    with pytest.raises(ValueError, match=r"top_k=9701: the official action score ranks 9700 actions per clip"):
        question_predictions(predictions, 9701)
    assert len(question_predictions(predictions, 9700)["a"]) == 9700
    predictions.verb_logits[1, 5] = np.nan
    with pytest.raises(ValueError, match=r"verb_logits: 1 valid clip\(s\) hold NaN or inf, e.g. narrations \['b'\]"):
        write_question_predictions(tmp_path / "q.json", predictions)
    assert list(tmp_path.iterdir()) == []
    predictions.valid[1] = False  # an unreadable clip's logits are never read
    assert sorted(question_predictions(predictions, 1)) == ["a", "c"]


def test_read_probabilities_names_a_file_that_is_not_one_of_ours(tmp_path):
    """Missing, empty, text, pickled, lacking arrays, NaN probabilities: each an error naming the file and what to
    give (EOFError, a pickle message or KeyError 'verb_probs' before, none naming the file)."""
    import pickle

    import numpy as np

    from modeling_mambavl.training.evaluation import read_probabilities, write_probabilities

    good = write_probabilities(tmp_path / "good.npz", _predictions(["a", "b"]))
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"verb_probs": 1}))
    np.savez(tmp_path / "partial.npz", narration_ids=np.array(["a", "b"]))
    with np.load(good) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["noun_probs"][0, 3] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    fix = "give a probabilities.npz written by eval_ek100.py --write_question_predictions"
    cases = {
        "missing.npz": (FileNotFoundError, rf"probabilities file .*missing.npz not found; {fix}"),
        "empty.npz": (ValueError, rf"empty.npz: not a .npz file of probabilities .*; {fix}"),
        "text.npz": (ValueError, rf"text.npz: not a .npz file of probabilities .*; {fix}"),
        "pickle.npz": (ValueError, rf"pickle.npz: not a .npz file of probabilities .*; {fix}"),
        "partial.npz": (ValueError, rf"partial.npz: lacks the arrays \['participant_ids', 'verb_probs', .*; {fix}"),
        "nan.npz": (ValueError, r"nan.npz: noun_probs holds NaN, inf or negative values on valid clips"),
    }
    for name, (error, expected) in cases.items():
        with pytest.raises(error, match=expected):
            read_probabilities([good, tmp_path / name])
    assert read_probabilities(str(good)).narration_ids == ["a", "b"]


def test_a_full_disk_while_writing_first_stage_outputs_leaves_the_previous_files(tmp_path, monkeypatch):
    """write_question_predictions and write_probabilities on a full disk (a write raising ENOSPC): the documented
    DiskFullError, the previous file untouched, no temporary left."""
    from helpers.full_disk import fill_disk

    from modeling_mambavl import atomic
    from modeling_mambavl.training.evaluation import write_probabilities, write_question_predictions

    predictions = _predictions(["a", "b"])
    (tmp_path / "q.json").write_text("previous")
    (tmp_path / "probabilities.npz").write_text("previous")

    fill_disk(monkeypatch, write_bytes=True)
    with pytest.raises(atomic.DiskFullError, match=r"could not write question predictions \(.*q.json\); nothing of "):
        write_question_predictions(tmp_path / "q.json", predictions)
    with pytest.raises(atomic.DiskFullError, match=r"could not write probabilities \(.*probabilities.npz\)"):
        write_probabilities(tmp_path / "probabilities.npz", predictions)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probabilities.npz", "q.json"]
    assert {p.read_text() for p in tmp_path.iterdir()} == {"previous"}
