"""examples/train_ek100.py under `accelerate launch` with two real processes (gloo on the CPU): evaluation gathers each
validation clip exactly once, one checkpoint is written, and a second run resumes from it."""

import csv
import json
from collections import Counter

import pytest
from helpers.train_run import (
    SYNTHETIC,
    TRAIN,
    TWO_CPU_PROCESSES_ENV,
    run,
    script_args,
    synthetic_cache,
    two_cpu_processes,
)

from modeling_mambavl.training import checkpointing


def _narration_ids(path):
    with open(path, newline="", encoding="utf-8") as f:
        return Counter(row["narration_id"] for row in csv.DictReader(f))


@pytest.mark.slow
def test_two_processes_train_evaluate_checkpoint_and_resume(tmp_path_factory, tmp_path):
    cache = synthetic_cache(tmp_path_factory)
    out = tmp_path / "ddp"
    # 12 training clips = one optimizer step an epoch at 2 x 6; 12 validation clips in batches of 2 x 5, so the last
    # batch is short and gather_for_metrics must drop the padding the sampler adds.
    common = ("--per_device_train_batch_size", "6", "--per_device_eval_batch_size", "5", "--lr_schedule", "constant",
              "--checkpointing_steps", "epoch", "--checkpoints_total_limit", "1")
    proc = run(TRAIN, script_args(cache, out, "--num_train_epochs", "1", *common), launcher=two_cpu_processes(),
               env=TWO_CPU_PROCESSES_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Num processes: 2" in proc.stderr and "Process index: 1" in proc.stderr
    meta = json.loads((out / "run_metadata.json").read_text())
    assert meta["world_size"] == 2

    annotations = next(cache.glob("synthetic-*")) / "annotations" / "EPIC_100_validation.csv"
    expected = _narration_ids(annotations)
    assert sum(expected.values()) == SYNTHETIC["num_validation"]
    assert _narration_ids(out / "best_model" / "predictions.csv") == expected  # no padding duplicates, none missing
    metrics = json.loads((out / "best_model" / "metrics.json").read_text())
    assert metrics["num_clips"] == metrics["num_clips_scored"] == SYNTHETIC["num_validation"]
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["checkpoint-00000001"]

    proc = run(TRAIN, script_args(cache, out, "--num_train_epochs", "2", "--resume_from_checkpoint", "latest",
                                  *common), launcher=two_cpu_processes(), env=TWO_CPU_PROCESSES_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stderr and "checkpoint-00000001: epoch 1, batch 0, step 1" in proc.stderr
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["epochs"] == 2
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["checkpoint-00000002"]
    assert _narration_ids(out / "best_model" / "predictions.csv") == expected
