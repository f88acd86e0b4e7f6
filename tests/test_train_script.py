"""examples/train_ek100.py: recipes and --dry_run, outputs of a run, non-finite losses, exact resume after a kill."""

import json
import re

import pytest
from helpers.train_run import TRAIN, assert_same_state, run, script_args, synthetic_cache

from modeling_mambavl.training import checkpointing
from modeling_mambavl.training.recipe import RecipeError


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


def _dry_run(train_script, capsys, *argv):
    report = train_script.main(["--dry_run", *argv])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(report))
    return printed


def test_dry_run_prints_the_resolved_groups(train_script, capsys, tmp_path, fresh_accelerate_state):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "_notes: the authors' recognition recipe, shortened\n"
        "optimizer: sgd\nlr: 3e-3\nlr_backbone: 1.0e-3\nlr_mamba: 1e-3\nweight_decay: 4e-5\n"
        "lr_schedule: cosine\nwarmup_epochs: 2\nnum_train_epochs: 100\nmixup_alpha: 0.8\ncutmix_alpha: 1.0\n"
        "decay_state_params: true\n"
    )
    report = _dry_run(train_script, capsys, "--recipe", str(recipe), "--preset", "tiny", "--num_train_epochs", "7")
    assert report["optimizer"] == {"name": "sgd", "momentum": 0.9, "nesterov": True, "betas": [0.9, 0.999],
                                   "eps": 1e-8}
    assert report["schedule"]["name"] == "cosine" and report["schedule"]["warmup_epochs"] == 2.0
    assert report["schedule"]["num_train_epochs"] == 7  # the command line wins over the recipe
    groups = {g["name"]: g for g in report["groups"]}
    assert groups["rest"]["lr"] == 3e-3 and groups["mamba"]["lr"] == 1e-3 and groups["backbone"]["lr"] == 1e-3
    assert groups["rest"]["weight_decay"] == 4e-5 and groups["rest/no_decay"]["weight_decay"] == 0.0
    assert all(g["num_parameters"] > 0 and g["num_tensors"] > 0 for g in report["groups"])
    # decay_state_params: the shared A_log and the mixers' D are decayed.
    from modeling_mambavl.training.builders import build_model
    from modeling_mambavl.training.optimization import build_param_groups

    model, _ = build_model(preset="tiny", meta=True)
    _, specs = build_param_groups(model, lr=3e-3, weight_decay=4e-5, decay_state_params=True)
    decayed = {n for s in specs if s.weight_decay > 0 for n in s.params}
    assert "mambavl.fusion.layers.0.A_log" in decayed and "mambavl.fusion.layers.0.video_mixer.D" in decayed
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(g["num_parameters"] for g in report["groups"]) == expected
    assert report["args"]["mixup_alpha"] == 0.8 and report["args"]["recipe"] == str(recipe)


def test_dry_run_state_params_in_the_mamba_group(train_script, capsys, fresh_accelerate_state):
    report = _dry_run(train_script, capsys, "--state_params_group", "mamba", "--lr", "1", "--lr_mamba", "2")
    groups = {g["name"]: g for g in report["groups"]}
    default = _dry_run(train_script, capsys, "--lr", "1", "--lr_mamba", "2")
    moved = {g["name"]: g for g in default["groups"]}
    a_log = 128 * 16  # the tiny preset's shared A_log: d_inner 128 x N 16
    assert groups["mamba/no_decay"]["num_parameters"] == moved["mamba/no_decay"]["num_parameters"] + a_log
    assert groups["rest/no_decay"]["num_parameters"] == moved["rest/no_decay"]["num_parameters"] - a_log


def test_label_smoothing_is_given_once(train_script, fresh_accelerate_state):
    with pytest.raises(ValueError, match="label_smoothing=0.2 but --label_smoothing is 0.1: give it once"):
        train_script.main(["--dry_run", "--config_overrides", '{"label_smoothing": 0.2}'])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ('{"mixer_recompute": ', r"--config_overrides '\{\"mixer_recompute\": ': not valid JSON \(Expecting value"),
        ("[1]", r"--config_overrides '\[1\]': a JSON list; give an object of config fields"),
        ('{"mixer_recompute": 2}', r"Validation error for field 'mixer_recompute': TypeError: Field 'mixer_recompute' "
                                   r"expected str, got int \(value: 2\)"),
    ],
    ids=["not-json", "not-an-object", "wrong-type"],
)
def test_bad_config_overrides_are_one_line_naming_the_option_or_field(train_script, overrides, expected, capsys,
                                                                       fresh_accelerate_state):
    """A JSON error naming no option, and a field of the wrong type (transformers' strict dataclass check), ended
    with a traceback before."""
    from modeling_mambavl.cli import run_main

    assert run_main(train_script.main, "train_ek100.py", ["--dry_run", "--config_overrides", overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert re.match(rf"train_ek100.py: {expected}", lines[-1]) and "Traceback" not in "\n".join(lines), lines


def test_recipe_errors_name_the_file_and_key(train_script, tmp_path, fresh_accelerate_state):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml.*learning_rate"):
        train_script.parse_args(["--recipe", str(bad)])
    bad.write_text("optimizer: lamb\n")
    with pytest.raises(RecipeError, match="lamb"):
        train_script.parse_args(["--recipe", str(bad)])


@pytest.mark.slow
def test_run_outputs(cache, tmp_path):
    out = tmp_path / "run"
    proc = run(TRAIN, script_args(cache, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "6",
                                  "--logging_steps", "1", "--label_smoothing", "0.05"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = out / "best_model"
    metrics = json.loads((best / "metrics.json").read_text())
    assert set(metrics) == {"task", "split", "dataset", "question_source", "action_rule", "num_clips",
                            "num_clips_scored", "epoch", "global_step", "counts", "num_empty_metrics", "metrics"}
    assert metrics["action_rule"] == "official"
    assert all(isinstance(v, (int, float)) for v in metrics["metrics"].values())  # what the model card accepts
    assert metrics["dataset"] == "synthetic-ek100" and metrics["num_clips"] == metrics["num_clips_scored"] == 12
    assert metrics["epoch"] == 1 and metrics["global_step"] == 2 and "all_action_top1" in metrics["metrics"]
    predictions = json.loads((best / "predictions.json").read_text())
    assert len(predictions) == 12 and all(len(p["verb"]) == 5 for p in predictions.values())
    assert (best / "predictions.csv").read_text().count("\n") == 13
    from modeling_mambavl.saving import load_model_and_processor

    model, processor = load_model_and_processor(best)
    assert model.config.default_question_input_ids == processor.default_question_inputs()["default_question_input_ids"]
    assert model.config.question_pad_token_id == processor.tokenizer.pad_token_id == 0
    # The model's own loss read config.label_smoothing: the saved config says what training used (not the 0.1 default).
    assert model.config.label_smoothing == 0.05
    meta = json.loads((out / "run_metadata.json").read_text())
    assert {"args", "recipe", "versions", "git_commit", "seeds"} <= set(meta) and "torch" in meta["versions"]
    checkpoint = checkpointing.list_checkpoints(out)[-1]
    stored = json.loads((checkpoint / "run_metadata.json").read_text())
    assert stored["args"]["seed"] == 0 and stored["seeds"]["seed"] == 0


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_the_last_checkpoint(cache, tmp_path):
    out = tmp_path / "nan"
    args = script_args(cache, out, "--max_train_steps", "3", "--per_device_train_batch_size", "6",
                       "--checkpointing_steps", "1", "--eval_every_epochs", "100")
    proc = run(TRAIN, args, fault="nan_loss:2")
    assert proc.returncode != 0
    assert "non-finite loss" in proc.stderr and "checkpoint-00000001" in proc.stderr
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["checkpoint-00000001"]
    proc = run(TRAIN, args + ["--skip_nonfinite_steps", "--output_dir", str(tmp_path / "skip")], fault="nan_loss:2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "skip" / "train_summary.json").read_text())
    assert summary["nonfinite_steps_skipped"] == [2] and summary["global_step"] == 3


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(cache, tmp_path):
    """Killed right after optimizer step 3 (mid-epoch 2: 2 steps an epoch), resumed from checkpoint 2."""
    extra = ("--max_train_steps", "5", "--per_device_train_batch_size", "6", "--checkpointing_steps", "1",
             "--checkpoints_total_limit", "2", "--eval_every_epochs", "100", "--mixup_alpha", "0.8",
             "--cutmix_alpha", "1.0")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = run(TRAIN, script_args(cache, straight, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run(TRAIN, script_args(cache, killed, *extra), fault="after_step:3")
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert checkpointing.list_checkpoints(killed)[-1].name == "checkpoint-00000002"
    proc = run(TRAIN, script_args(cache, killed, *extra, "--resume_from_checkpoint", "latest"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "checkpoint-00000002" in proc.stderr
    assert_same_state(straight / "checkpoint-00000005", killed / "checkpoint-00000005")


def test_init_from_loads_through_the_one_loader(train_script, tmp_path):
    """--init_from / --model_name_or_path load with load_model_and_processor: the weights as saved with the config
    fields the options set, the processor saved with them; incomplete weights and a processor that does not make the
    model's questions are refused, named."""
    import torch
    from helpers.train_run import SMALL_MODEL
    from safetensors.torch import load_file, save_file

    from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor
    from modeling_mambavl.saving import IncompleteCheckpointError, save_model_and_processor
    from modeling_mambavl.training.builders import build_model

    torch.manual_seed(0)
    config = MambaVLConfig.from_preset("tiny", **SMALL_MODEL, **MambaVLProcessor().default_question_inputs())
    model, processor = MambaVLForVideoClassification(config), MambaVLProcessor.from_config(config)
    save_model_and_processor(model, processor, tmp_path / "complete")
    for option in ("--init_from", "--model_name_or_path"):
        args, _ = train_script.parse_args([option, str(tmp_path / "complete"), "--label_smoothing", "0.2"])
        loaded, loaded_processor, source = train_script.create_model(args)
        assert source == f"checkpoint {tmp_path / 'complete'}" and loaded.config.label_smoothing == 0.2
        assert loaded.state_dict().keys() == model.state_dict().keys()
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
        assert loaded_processor.questions == processor.questions
        assert loaded_processor.video_processor.num_frames == processor.video_processor.num_frames == config.num_frames
        assert train_script.create_processor(args, loaded.config, loaded_processor) is loaded_processor

    weights = load_file(str(tmp_path / "complete" / "model.safetensors"))
    save_model_and_processor(model, processor, tmp_path / "partial")
    partial = {k: v for k, v in weights.items() if k != "verb_head.weight"}
    save_file(partial, str(tmp_path / "partial" / "model.safetensors"), metadata={"format": "pt"})
    args, _ = train_script.parse_args(["--init_from", str(tmp_path / "partial")])
    with pytest.raises(IncompleteCheckpointError, match="verb_head.weight"):
        train_script.create_model(args)

    other = MambaVLProcessor(processor.video_processor, processor.tokenizer, questions=["Which action?", "Which object?"])
    save_model_and_processor(model, other, tmp_path / "other-questions")
    args, _ = train_script.parse_args(["--init_from", str(tmp_path / "other-questions")])
    with pytest.raises(ValueError, match="default_question_input_ids do not match"):
        train_script.create_model(args)

    with pytest.raises(ValueError, match="load_model_and_processor"):
        build_model(model_name_or_path=tmp_path / "complete")
