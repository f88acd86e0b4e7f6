"""Faults injected into the REAL training script through ``MAMBAVL_FAULT``: kills at five points, a full disk, and
the proof that a run killed (or stopped by a full disk) at each point and resumed ends with parameters and optimizer
state ``torch.equal`` to an uninterrupted run.

One uninterrupted reference run (started first, in parallel) and one chain of runs in a second folder: each link is
killed or stopped by a fault, the next link resumes from ``latest``. Every link after a fault must resume from the
last COMPLETE checkpoint (never the torn or unrenamed one the fault left behind); the last link runs to the end, and
its checkpoints must equal the reference's. Resuming is deterministic, so a link that resumed from checkpoint k
repeats exactly what an uninterrupted run does after k: the final comparison covers every link.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from helpers.train_run import TRAIN, assert_same_state, environment, run, script_args, synthetic_cache

from modeling_mambavl.training import checkpointing

# 12 clips, batch 6: 2 optimizer steps an epoch; 4 steps = 2 epochs, a checkpoint after every step, evaluation only
# at the end (so every run is seconds of work beyond start-up).
EXTRA = ("--max_train_steps", "4", "--per_device_train_batch_size", "6", "--checkpointing_steps", "1",
         "--checkpoints_total_limit", "2", "--eval_every_epochs", "100", "--mixup_alpha", "0.8",
         "--cutmix_alpha", "1.0")
RESUME = ("--resume_from_checkpoint", "latest")


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


def _names(folder):
    return [p.name for p in checkpointing.list_checkpoints(folder)]


def _temporaries(folder):
    """Temporary folders, without the owner suffix (``.<pid>@<host>``) of their names."""
    return sorted(p.name.rsplit(".", 1)[0] if "@" in p.name else p.name
                  for p in folder.iterdir() if p.name.startswith(".tmp-"))


def _torn(folder):
    (torn,) = folder.glob(".tmp-checkpoint-00000002.*@*")
    return torn


@pytest.mark.slow
def test_killed_at_five_points_and_full_disk_then_resumed_equals_uninterrupted(cache, tmp_path):
    started = time.perf_counter()
    reference, chain = tmp_path / "reference", tmp_path / "chain"
    # The reference runs beside the chain (two processes at a time).
    ref_proc = subprocess.Popen([sys.executable, str(TRAIN), *script_args(cache, reference, *EXTRA)],
                                env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                cwd=TRAIN.parents[1])
    links = []

    def link(fault, resume=True):
        t0 = time.perf_counter()
        proc = run(TRAIN, script_args(cache, chain, *EXTRA, *(RESUME if resume else ())), fault=fault)
        links.append((fault, round(time.perf_counter() - t0, 1)))
        return proc

    try:
        # 1. after_step:2 -- killed after optimizer step 2, before its checkpoint: checkpoint 1 is the latest.
        proc = link("after_step:2", resume=False)
        assert proc.returncode == -9, proc.stderr[-3000:]
        assert _names(chain) == ["checkpoint-00000001"]

        # 2. enospc:model -- the disk is full while the weights are written: a clear error naming the surviving
        # checkpoint, a nonzero exit, no temporary left, checkpoint 1 intact.
        proc = link("enospc:model")
        assert proc.returncode not in (0, -9), proc.stderr[-3000:]
        assert "resumed from" in proc.stderr and "checkpoint-00000001" in proc.stderr
        assert "No space left on device" in proc.stderr
        assert "could not write the checkpoint of step 2" in proc.stderr
        assert "last good checkpoint is" in proc.stderr and "checkpoint-00000001" in proc.stderr.split(
            "could not write the checkpoint of step 2")[1]
        assert _names(chain) == ["checkpoint-00000001"] and _temporaries(chain) == []

        # 3. during_save:model -- killed with the weights file half written: the torn folder stays hidden.
        proc = link("during_save:model")
        assert proc.returncode == -9, proc.stderr[-3000:]
        assert _names(chain) == ["checkpoint-00000001"]
        torn = _torn(chain)
        assert torn.is_dir() and not checkpointing.is_complete(torn)

        # 4. during_save:optimizer -- killed between the weights and the optimizer state.
        proc = link("during_save:optimizer")
        assert proc.returncode == -9, proc.stderr[-3000:]
        assert "resumed from" in proc.stderr and "checkpoint-00000001" in proc.stderr
        assert _names(chain) == ["checkpoint-00000001"]
        # The previous link's torn folder (a dead owner) was removed at start-up; this link's own is the only one.
        assert not torn.exists()
        torn = _torn(chain)
        assert (torn / "model.safetensors").is_file()
        assert not (torn / "optimizer.bin").exists() and not checkpointing.is_complete(torn)

        # 5. enospc:optimizer -- the disk fills up after the weights: same as 2.
        proc = link("enospc:optimizer")
        assert proc.returncode not in (0, -9), proc.stderr[-3000:]
        assert "No space left on device" in proc.stderr and "checkpoint-00000001" in proc.stderr
        assert _names(chain) == ["checkpoint-00000001"] and _temporaries(chain) == []

        # 6. before_rename -- complete and fsynced but never renamed: still not a checkpoint to resume.
        proc = link("before_rename")
        assert proc.returncode == -9, proc.stderr[-3000:]
        assert _names(chain) == ["checkpoint-00000001"] and _temporaries(chain) == [".tmp-checkpoint-00000002"]

        # 7. after_rename -- renamed, killed before pruning: checkpoint 2 is complete and is what comes next.
        proc = link("after_rename")
        assert proc.returncode == -9, proc.stderr[-3000:]
        assert _names(chain) == ["checkpoint-00000001", "checkpoint-00000002"]

        # 8. no fault: resumes from checkpoint 2 and runs to the end; stale temporaries are gone.
        proc = link(None)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "resumed from" in proc.stderr and "checkpoint-00000002" in proc.stderr
        assert _names(chain) == ["checkpoint-00000003", "checkpoint-00000004"] and _temporaries(chain) == []
    finally:
        if ref_proc.poll() is None:
            ref_proc.wait(timeout=600)
    assert ref_proc.returncode == 0, ref_proc.stderr.read()[-3000:]
    for name in ("checkpoint-00000003", "checkpoint-00000004"):
        assert_same_state(reference / name, chain / name)
    from safetensors.torch import load_file

    final_ref = load_file(str(reference / "final_model" / "model.safetensors"))
    final_chain = load_file(str(chain / "final_model" / "model.safetensors"))
    assert final_ref.keys() == final_chain.keys()
    assert all(torch.equal(final_ref[k], final_chain[k]) for k in final_ref)
    elapsed = time.perf_counter() - started
    print(f"\nkill/resume chain: {elapsed:.0f} s in all; links {links}")
