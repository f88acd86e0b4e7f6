"""The `mambavl` command line: predict (against a direct forward), eval (metrics.json by the contract), card, help."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.tiny_checkpoint import BBB, METRICS, assert_same_top_k, direct_top_k, tiny_checkpoint, write_test_video
from huggingface_hub import ModelCard

from modeling_mambavl.cli import build_parser, main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    model, processor = tiny_checkpoint(folder)
    return folder, model, processor


def _predict_json(capsys, *args) -> dict:
    assert main(["predict", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_help_reads_well(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("predict", "eval", "card"):
        assert command in text
    for command, option in (("predict", "--questions"), ("eval", "--annotations"), ("card", "--example-video")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert option in capsys.readouterr().out


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("mambavl")
    assert script.is_file(), "pip install -e . installs the mambavl console script"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "predict" in result.stdout


def test_predict_equals_direct_forward(checkpoint, tmp_path, capsys):
    folder, model, processor = checkpoint
    clip = write_test_video(tmp_path / "clip.mp4")
    result = _predict_json(capsys, str(clip), "--model", str(folder), "--top-k", "5")
    expected = direct_top_k(model, processor, clip)
    for key in ("actions", "verbs", "nouns"):
        assert_same_top_k(result[key], expected[key])
    questions = ["What does the person do with the pan?", "Which object is held?"]
    asked = _predict_json(capsys, str(clip), "-m", str(folder), "--questions", *questions, "-k", "3")
    assert asked["questions"] == questions
    assert_same_top_k(asked["actions"], direct_top_k(model, processor, clip, 3, questions)["actions"])
    assert main(["predict", str(clip), "--model", str(folder), "--top-k", "2"]) == 0
    table = capsys.readouterr().out
    assert expected["actions"][0]["label"] in table and "verb" in table and "noun" in table


@pytest.mark.skipif(not BBB.is_file(), reason="the Big Buck Bunny clip (../shared/data/videos) is absent")
def test_predict_on_the_real_clip(checkpoint, capsys, monkeypatch):
    folder, model, processor = checkpoint
    monkeypatch.setenv("MAMBAVL_MODEL", str(folder))
    result = json.loads(subprocess.run([sys.executable, "-m", "modeling_mambavl.cli", "predict", str(BBB), "--json",
                                        "--model", str(folder)], capture_output=True, text=True, check=True,
                                       timeout=600).stdout)
    expected = direct_top_k(model, processor, BBB)
    for key in ("actions", "verbs", "nouns"):
        assert_same_top_k(result[key], expected[key])


def test_predict_errors_name_the_problem(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAMBAVL_MODEL", raising=False)
    with pytest.raises(SystemExit, match="does not exist"):
        main(["predict", str(tmp_path / "missing.mp4"), "--model", str(checkpoint[0])])
    clip = write_test_video(tmp_path / "c.mp4", num_frames=8)
    with pytest.raises(SystemExit, match="--model"):
        main(["predict", str(clip)])


def test_card_writes_a_parsable_card(checkpoint, tmp_path, capsys):
    folder, model, processor = checkpoint
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    clip = write_test_video(tmp_path / "demo.mp4")
    assert main(["card", str(folder), "--repo-id", "org/tiny", "--example-video", str(clip)]) == 0
    card = ModelCard.load(folder / "README.md")
    assert card.data.pipeline_tag == "video-classification" and card.data.license == "cc-by-nc-4.0"
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == METRICS["metrics"]
    assert (folder / "examples" / "demo.mp4").is_file()
    assert card.data.widget[0]["src"].endswith("org/tiny/resolve/main/examples/demo.mp4")
    assert card.data.widget[0]["output"][0]["label"] == direct_top_k(model, processor, clip)["actions"][0]["label"]
    (folder / "metrics.json").write_text(json.dumps({**METRICS, "question_source": "oracle"}))
    assert main(["card", str(folder)]) == 2  # oracle metrics without the label break the contract
    assert "ORACLE QUESTIONS" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_writes_metrics_json(checkpoint, tmp_path, capsys):
    from modeling_mambavl.ek100 import make_synthetic_ek100

    folder, model, processor = checkpoint
    data = make_synthetic_ek100(tmp_path / "synthetic", num_train=12, num_validation=12, num_test=12, clips_per_video=6,
                                size=64, frames=False, features=False)
    out = tmp_path / "metrics.json"
    assert main(["eval", "--model", str(folder), "--annotations", str(data.annotations_dir), "--media-root",
                 str(data.media_root), "--media", "video", "--dataset-name", "synthetic-ek100", "--batch-size", "4",
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["dataset"] == "synthetic-ek100" and report["question_source"] == "generic"
    assert report["num_clips"] == report["num_clips_scored"] == data.num_rows["validation"]
    for key in ("all_verb_top1", "all_noun_top5", "all_action_top1", "tail_verb_top1", "unseen_action_top1"):
        assert 0.0 <= report["metrics"][key] <= 100.0
    from modeling_mambavl.model_card import load_metrics

    assert load_metrics(out)["metrics"] == report["metrics"]  # the card reads what eval writes
    assert build_parser().parse_args(["eval", "--model", "m", "--annotations", "a", "--media-root", "r"]).split == \
        "validation"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modeling_mambavl.cli", *args], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, **(env or {})))


def _one_line_error(result: subprocess.CompletedProcess, command: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("mambavl")]
    assert len(lines) == 1 and lines[0].startswith(f"mambavl {command}: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_user_errors_are_one_line_naming_the_file_and_the_fix(checkpoint, tmp_path):
    """A window past the end, bad media, a missing model folder: one line naming the file / option and the fix, exit
    status 2, no traceback; --debug shows the traceback."""
    folder = str(checkpoint[0])
    clip = write_test_video(tmp_path / "clip.mp4")  # 1 s
    line = _one_line_error(_cli("predict", str(clip), "-m", folder, "--window", "5", "6"), "predict")
    assert str(clip) in line and "past the end" in line and "--window START END inside the video" in line
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    line = _one_line_error(_cli("predict", str(text), "-m", folder), "predict")
    assert str(text) in line and "give a video file PyAV can decode" in line
    missing = tmp_path / "no" / "such" / "model"
    line = _one_line_error(_cli("predict", str(clip), "-m", str(missing)), "predict")
    assert f"--model {missing}: no such folder" in line and "save_pretrained" in line
    debug = _cli("predict", str(clip), "-m", folder, "--window", "5", "6", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "MediaError" in debug.stderr


SABOTAGE = '''import os
open(os.environ["MAMBAVL_REMOTE_CODE_MARKER"], "a").write(__file__ + "\\n")
raise RuntimeError("the checkpoint's bundled code ran")
'''


@pytest.mark.slow
def test_cli_never_runs_the_checkpoints_code(checkpoint, tmp_path):
    """The CLI loads with the package's classes and never passes trust_remote_code: with every bundled code file of
    the checkpoint replaced by code that leaves a marker and raises, predict and card still work, and no marker."""
    import shutil

    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint[0], folder, ignore=shutil.ignore_patterns("metrics.json", "README.md", "examples"))
    bundle = [p for p in folder.glob("*.py")]
    assert {"modeling_mamba_vl.py", "configuration_mambavl.py", "processing_mambavl.py"} <= {p.name for p in bundle}
    for path in bundle:
        path.write_text(SABOTAGE)
    marker = tmp_path / "remote-code-ran.txt"
    env = {"MAMBAVL_REMOTE_CODE_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    clip = write_test_video(tmp_path / "clip.mp4")
    predicted = _cli("predict", str(clip), "-m", str(folder), "--json", env=env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert json.loads(predicted.stdout)["actions"][0]["label"] == direct_top_k(*checkpoint[1:], clip)["actions"][0][
        "label"]
    carded = _cli("card", str(folder), "--repo-id", "org/tiny", "--synthetic-example", env=env)  # loads the model
    assert carded.returncode == 0, carded.stderr[-3000:]
    assert ModelCard.load(folder / "README.md").data.widget[0]["src"].endswith("examples/synthetic_take_plate.mp4")
    assert not marker.exists(), marker.read_text()
    source = (Path(__file__).resolve().parents[1] / "modeling_mambavl" / "cli.py").read_text()
    assert "trust_remote_code" not in source
