"""examples/train_ek100.py options of the issue's build list, each in a real run: --report_to, the training-curves
PNG, --loss, K x M multi-view evaluation, --metric_for_best_model, --push_to_hub, --init_from for anticipation,
--skip_bad_clips."""

import csv
import json
import shutil

import pytest
import torch
from helpers.train_run import SMALL_MODEL, SYNTHETIC, TRAIN, run, script_args, synthetic_cache
from hub_server import HubServer
from safetensors.torch import load_file

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor
from modeling_mambavl.saving import save_model_and_processor

REPO_ID = "mambavl-org/train-test"


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


def _plot_on(args):
    return [a for a in args if a != "--no_plot"]


@pytest.mark.slow
def test_trackers_curves_loss_views_best_metric_and_push(cache, tmp_path):
    out = tmp_path / "run"
    with HubServer() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_loopback_test_token", "HF_HOME": str(tmp_path / "hf"),
               "HF_HUB_OFFLINE": "0"}
        proc = run(TRAIN, _plot_on(script_args(
            cache, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "6", "--logging_steps", "1",
            "--loss", "logit_adjusted", "--temporal_views", "2", "--spatial_crops", "2",
            "--metric_for_best_model", "all_verb_top5", "--report_to", "tensorboard",
            "--push_to_hub", "--hub_model_id", REPO_ID)), env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        pushed = hub.files_at(REPO_ID)
    assert {"config.json", "model.safetensors", "metrics.json", "README.md"} <= set(pushed)
    assert json.loads(pushed["metrics.json"]) == json.loads((out / "best_model" / "metrics.json").read_text())

    png = (out / "training_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = sorted({p.parent for p in out.rglob("events.out.tfevents.*")})
    assert folders, "--report_to tensorboard wrote no event file"
    scalars = {}  # the tracker writes the run's configuration (hparams) and the scalars in separate folders
    for folder in folders:
        accumulator = EventAccumulator(str(folder))
        accumulator.Reload()
        scalars.update({tag: accumulator.Scalars(tag) for tag in accumulator.Tags()["scalars"]})
    assert {"train/loss", "train/lr", "eval/all_verb_top1", "eval/all_verb_top5"} <= set(scalars), sorted(scalars)
    assert [e.step for e in scalars["train/loss"]] == [1, 2]

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["metric_for_best_model"] == "all_verb_top5"
    assert summary["best_metric"] == summary["final_metrics"]["all_verb_top5"]
    args = json.loads((out / "run_metadata.json").read_text())["args"]
    assert args["loss"] == "logit_adjusted" and (args["temporal_views"], args["spatial_crops"]) == (2, 2)
    metrics = json.loads((out / "best_model" / "metrics.json").read_text())
    # 2 x 2 views a clip, averaged into one prediction per clip
    assert metrics["num_clips"] == metrics["num_clips_scored"] == SYNTHETIC["num_validation"]
    assert len(json.loads((out / "best_model" / "predictions.json").read_text())) == SYNTHETIC["num_validation"]


@pytest.mark.slow
def test_anticipation_starts_from_a_recognition_checkpoint(cache, tmp_path):
    torch.manual_seed(3)
    config = MambaVLConfig.from_preset("tiny", **SMALL_MODEL, **MambaVLProcessor().default_question_inputs())
    processor = MambaVLProcessor.from_config(config)  # frames and size of this config, as train_ek100.py saves it
    save_model_and_processor(MambaVLForVideoClassification(config), processor, tmp_path / "recognition")
    out = tmp_path / "anticipation"
    # A zero learning rate (and no decay) leaves the weights as loaded: the final model must equal the checkpoint.
    args = script_args(cache, out, "--task", "anticipation", "--init_from", str(tmp_path / "recognition"),
                       "--max_train_steps", "1", "--per_device_train_batch_size", "6", "--lr", "0",
                       "--lr_backbone", "0", "--lr_mamba", "0", "--weight_decay", "0", "--checkpointing_steps", "no")
    args.remove("--config_overrides")
    args.remove(json.dumps(SMALL_MODEL))
    proc = run(TRAIN, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "anticipation starts from the recognition checkpoint" in proc.stderr
    loaded = load_file(str(tmp_path / "recognition" / "model.safetensors"))
    final = load_file(str(out / "final_model" / "model.safetensors"))
    assert loaded.keys() == final.keys() and all(torch.equal(loaded[k], final[k]) for k in loaded)
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["metric_for_best_model"] == "all_action_mt5r"
    metrics = json.loads((out / "best_model" / "metrics.json").read_text())
    assert metrics["task"] == "anticipation" and "all_action_mt5r" in metrics["metrics"]


@pytest.mark.slow
def test_skip_bad_clips_counts_and_lists_them(cache, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(next(cache.glob("synthetic-*")), data)
    with open(data / "annotations" / "EPIC_100_train.csv", newline="") as f:
        row = next(csv.DictReader(f))
    frames = data / "rgb_frames" / row["participant_id"] / row["video_id"]
    for i in range(int(row["start_frame"]), int(row["stop_frame"]) + 1):
        (frames / f"frame_{i:010d}.jpg").write_bytes(b"not a jpeg")
    common = ["--annotations_dir", str(data / "annotations"), "--media_root", str(data), "--media", "frames",
              "--num_train_epochs", "1", "--per_device_train_batch_size", "6", "--checkpointing_steps", "no"]
    args = script_args(tmp_path / "cache", tmp_path / "strict", *common)
    args.remove("--cache_clips")
    proc = run(TRAIN, args)
    assert proc.returncode != 0 and row["video_id"] in proc.stderr
    args = script_args(tmp_path / "cache", tmp_path / "skip", *common, "--skip_bad_clips")
    args.remove("--cache_clips")
    proc = run(TRAIN, args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "skip" / "train_summary.json").read_text())
    assert row["narration_id"] in summary["bad_training_clips"]
    assert summary["num_bad_training_clips"] == len(summary["bad_training_clips"]) >= 1
    assert "could not be read and were skipped" in proc.stderr
