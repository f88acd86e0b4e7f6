"""Runs that cannot lose work: the output-folder lock, owner-aware clean-up, resuming only what is compatible, and
atomic writes that turn a full disk (a real tmpfs where it can be mounted) into the one documented message."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from modeling_mambavl import atomic
from modeling_mambavl.training import runs


# ----------------------------------------------------------------------------------------------------- helpers
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder: Path, **owner) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / runs.LOCK_FILE
    path.write_text(json.dumps({"started": "2026-01-01T00:00:00Z", "command": "train_ek100.py", **owner}))
    return path


@contextlib.contextmanager
def small_tmpfs(parent: Path, size_bytes: int):
    """A real tmpfs of ``size_bytes`` mounted under ``parent`` (root only), unmounted on exit; skips where mounting is
    not permitted."""
    mount_point = parent / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip() or proc.returncode}); the "
                    "simulated full disk (MAMBAVL_FAULT=enospc:...) covers the same paths")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


# --------------------------------------------------------------------------------------------------------- lock
def test_lock_refuses_a_live_owner_and_is_released(tmp_path):
    # A live process of this host (the test runner's parent) holds the folder.
    _write_lock(tmp_path, pid=os.getppid(), host=atomic.host_name())
    with pytest.raises(runs.RunRefused, match=r"in use by another training run \(pid \d+ on host") as info:
        runs.RunLock(tmp_path).acquire()
    assert str(os.getppid()) in str(info.value) and "another --output_dir" in str(info.value)
    (tmp_path / runs.LOCK_FILE).unlink()
    lock = runs.RunLock(tmp_path)
    lock.acquire()
    owner = json.loads((tmp_path / runs.LOCK_FILE).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == atomic.host_name()
    with pytest.raises(runs.RunRefused):  # a second run of this host while the first holds it
        other = runs.RunLock(tmp_path)
        other.owner["process_start"] = "another process"
        other.acquire()
    lock.release()
    assert not (tmp_path / runs.LOCK_FILE).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid(), host=atomic.host_name())
    lock = runs.RunLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / runs.LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_of_another_host_is_refused_naming_it_and_the_override(tmp_path):
    _write_lock(tmp_path, pid=1234, host="gpu-node-17")
    with pytest.raises(runs.RunRefused, match="another host") as info:
        runs.RunLock(tmp_path).acquire()
    assert "gpu-node-17" in str(info.value) and "--break_lock" in str(info.value)
    lock = runs.RunLock(tmp_path)
    lock.acquire(break_lock=True)
    assert json.loads((tmp_path / runs.LOCK_FILE).read_text())["host"] == atomic.host_name()
    lock.release()


def test_clean_up_touches_only_temporaries_of_this_process_or_dead_owners(tmp_path):
    here = atomic.host_name()
    mine = tmp_path / f".tmp-checkpoint-00000003.{os.getpid()}@{here}"
    dead = tmp_path / f".tmp-checkpoint-00000002.{_dead_pid()}@{here}"
    live = tmp_path / f".tmp-checkpoint-00000002.{os.getppid()}@{here}"
    remote = tmp_path / ".tmp-checkpoint-00000002.4242@gpu-node-17"
    legacy = tmp_path / ".tmp-checkpoint-00000001"
    aside = tmp_path / f".tmp-final_model.previous.{_dead_pid()}@{here}"  # killed between the two renames
    for folder in (mine, dead, live, remote, legacy, aside):
        folder.mkdir()
    (aside / "config.json").write_text("{}")
    removed = atomic.clean_temporaries(tmp_path)
    assert set(removed) == {mine, dead, legacy, aside}
    assert live.is_dir() and remote.is_dir()
    assert (tmp_path / "final_model" / "config.json").is_file()  # the previous final_model put back


# ------------------------------------------------------------------------------------------------ atomic writes
def test_atomic_folder_replaces_the_old_one_only_when_complete(tmp_path):
    final = tmp_path / "best_model"
    final.mkdir()
    (final / "model.safetensors").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_write(final, directory=True) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise RuntimeError("boom")
    assert (final / "model.safetensors").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["best_model"]
    with atomic.atomic_write(final, directory=True) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert (final / "model.safetensors").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["best_model"]


def test_simulated_enospc_becomes_the_documented_message(tmp_path):
    import errno

    with pytest.raises(atomic.DiskFullError) as info:
        with atomic.atomic_write(tmp_path / "metrics.json", what="metrics.json", hint="The hint.") as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert message == (f"[Errno 28] No space left on device: could not write metrics.json ({tmp_path / 'metrics.json'}"
                       "); nothing of it was kept. The hint.")
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


def test_a_folder_where_a_file_goes_is_refused_and_kept_whole(tmp_path):
    """A file written over an existing folder used to replace the folder and all it held (a rename over it); a file
    where a folder goes, or a file on the way, gave a bare "[Errno 17] File exists"."""
    folder = tmp_path / "predictions.json"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(IsADirectoryError, match=r"predictions\.json: is a folder, and a file goes there .*give a file "):
        atomic.write_text(folder, "{}")
    assert (folder / "keep.txt").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == [folder.name]

    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"--output_dir .*plain: is a file, and a folder goes there"):
        atomic.check_target(plain, directory=True, name="--output_dir")
    with pytest.raises(NotADirectoryError, match=r"plain is a file, not a folder, so nothing can be written inside"):
        with atomic.atomic_write(plain / "deeper" / "metrics.json") as tmp:
            tmp.write_text("{}")
    assert plain.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "predictions.json"]  # no temporary left


def test_an_output_dir_that_is_a_file_is_refused_naming_it(tmp_path):
    """train_ek100.py / demo.py / eval_ek100.py --output_dir <a file>: the lock said "[Errno 17] File exists"."""
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(NotADirectoryError, match=rf"^--output_dir {re.escape(str(plain))}: is a file, and a folder "):
        runs.RunLock(plain).acquire()
    assert plain.read_text() == "x"


@pytest.mark.parametrize("writer", ["safetensors", "torch", "python"])
def test_real_full_disk_from_each_writer_becomes_the_documented_message(tmp_path, writer):
    from safetensors.torch import save_file

    tensors = {"w": torch.zeros(256 * 1024)}  # 1 MiB, on a 256 KiB filesystem
    write = {
        "safetensors": lambda p: save_file(tensors, str(p)),
        "torch": lambda p: torch.save(tensors, p),
        "python": lambda p: p.write_text("x" * (1 << 20)),
    }[writer]
    with small_tmpfs(tmp_path, 256 * 1024) as disk:
        (disk / "weights.bin").write_text("previous")
        with pytest.raises(atomic.DiskFullError, match=r"^\[Errno 28\] No space left on device: could not write "):
            with atomic.atomic_write(disk / "weights.bin") as tmp:
                write(tmp)
        assert [p.name for p in disk.iterdir()] == ["weights.bin"]
        assert (disk / "weights.bin").read_text() == "previous"


# ------------------------------------------------------------------------------------------------ compatibility
def _checkpoint(folder: Path, args: dict, config: dict, shapes: dict, world_size: int = 1) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_metadata.json").write_text(json.dumps(
        {"args": args, "config": config, "model_shapes": shapes, "world_size": world_size}))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    return folder


ARGS = {"lr": 1e-3, "per_device_train_batch_size": 6, "seed": 0, "num_train_epochs": 10, "max_train_steps": 2,
        "logging_steps": 10, "num_workers": 2, "eval_every_epochs": 1, "media_root": "/data/a", "output_dir": "out"}
CONFIG = {"hidden_size": 32, "label_smoothing": 0.1, "transformers_version": "5.24.0"}
SHAPES = {"fusion.A_log": [64, 16], "verb_head.weight": [97, 32]}


def _now(args=None, config=None, shapes=None, world_size=1):
    return {"args": {**ARGS, **(args or {})}, "config": {**CONFIG, **(config or {})},
            "model_shapes": shapes or SHAPES, "world_size": world_size}


def test_resume_refuses_another_model_shape_naming_the_fields(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoint-00000002", ARGS, CONFIG, SHAPES)
    shapes = {"fusion.A_log": [128, 16], "verb_head.weight": [97, 64]}
    for allow in (False, True):
        with pytest.raises(runs.RunRefused, match="other weight shapes") as info:
            runs.check_resume(ckpt, _now(config={"hidden_size": 64}, shapes=shapes), allow_changed_args=allow)
        assert "config.hidden_size 32 -> 64" in str(info.value) and "fusion.A_log (64, 16) -> (128, 16)" in str(info.value)


@pytest.mark.parametrize("change", [{"lr": 1e-2}, {"per_device_train_batch_size": 8}, {"seed": 1},
                                    {"lr_schedule": "step"}, {"max_train_steps": 1}])
def test_resume_refuses_result_changing_arguments_unless_allowed(tmp_path, change):
    ckpt = _checkpoint(tmp_path / "checkpoint-00000002", ARGS, CONFIG, SHAPES)
    (name, value), = change.items()
    with pytest.raises(runs.RunRefused, match="--allow_changed_args") as info:
        runs.check_resume(ckpt, _now(args=change))
    assert f"{name} " in str(info.value) and json.dumps(value) in str(info.value)
    record = runs.check_resume(ckpt, _now(args=change), allow_changed_args=True)[-1]
    assert record["changed"] == {name: {"checkpoint": ARGS.get(name), "now": value}}
    assert record["allowed_by"] == "--allow_changed_args" and record["global_step"] == 2


def test_resume_refuses_a_changed_world_size_and_result_changing_config_field(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoint-00000002", ARGS, CONFIG, SHAPES)
    with pytest.raises(runs.RunRefused, match="world_size 1 -> 2"):
        runs.check_resume(ckpt, _now(world_size=2))
    with pytest.raises(runs.RunRefused, match="config.label_smoothing 0.1 -> 0.0"):
        runs.check_resume(ckpt, _now(config={"label_smoothing": 0.0}))


def test_resume_ignores_fields_that_do_not_change_results_and_allows_extending(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoint-00000002", ARGS, CONFIG, SHAPES)
    now = _now(args={"logging_steps": 1, "num_workers": 0, "eval_every_epochs": 5, "media_root": "/data/b",
                     "output_dir": "elsewhere", "num_train_epochs": 20, "max_train_steps": 4},
               config={"transformers_version": "5.30.0"})
    record = runs.check_resume(ckpt, now)[-1]
    assert record["changed"] == {} and record["allowed_by"] is None
    assert record["extended"] == {"num_train_epochs": {"checkpoint": 10, "now": 20},
                                  "max_train_steps": {"checkpoint": 2, "now": 4}}


def test_resumptions_accumulate(tmp_path):
    ckpt = _checkpoint(tmp_path / "checkpoint-00000002", ARGS, CONFIG, SHAPES)
    meta = json.loads((ckpt / "run_metadata.json").read_text())
    meta["resumptions"] = [{"checkpoint": "earlier", "changed": {}}]
    (ckpt / "run_metadata.json").write_text(json.dumps(meta))
    assert [r["checkpoint"] for r in runs.check_resume(ckpt, _now())] == ["earlier", str(ckpt)]


# ------------------------------------------------------------------------------------------ the real training script
# 12 clips, batch 6: 2 optimizer steps an epoch, a checkpoint after every step, evaluation only at the end.
SMALL_RUN = ("--per_device_train_batch_size", "6", "--checkpointing_steps", "1", "--eval_every_epochs", "100")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from helpers.train_run import synthetic_cache

    return synthetic_cache(tmp_path_factory)


def _train(cache, out, *extra, fault=None, overrides=None):
    from helpers.train_run import SMALL_MODEL, TRAIN, run, script_args

    args = script_args(cache, out, *SMALL_RUN, *extra)
    if overrides:
        args[args.index("--config_overrides") + 1] = json.dumps({**SMALL_MODEL, **overrides})
    return run(TRAIN, args, fault=fault)


def _last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_second_run_into_the_same_output_dir_is_refused_and_loses_nothing(cache, tmp_path):
    import signal
    import time

    from helpers.train_run import TRAIN, environment, run, script_args

    from modeling_mambavl.training import checkpointing

    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(TRAIN), *script_args(cache, out, *SMALL_RUN, "--max_train_steps",
                                                                       "4", "--checkpoints_total_limit", "2")],
                             env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             cwd=TRAIN.parents[1])
    try:
        deadline = time.monotonic() + 300
        while not checkpointing.list_checkpoints(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()[-3000:]
        # Held still mid-run (a live process), so the second run meets it whatever the machine's speed.
        first.send_signal(signal.SIGSTOP)
        before = sorted(p.name for p in out.iterdir())
        second = run(TRAIN, script_args(cache, out, *SMALL_RUN, "--max_train_steps", "4"))
        assert sorted(p.name for p in out.iterdir()) == before  # the second run touched nothing
    finally:
        first.send_signal(signal.SIGCONT)
        first.wait(timeout=600)
    assert second.returncode == 2
    assert _last_line(second).startswith(f"train_ek100.py: --output_dir {out} is in use by another training run "
                                         f"(pid {first.pid} on host {atomic.host_name()}")
    assert "Traceback" not in second.stderr
    assert first.returncode == 0, first.stderr.read()[-3000:]
    assert [p.name for p in checkpointing.list_checkpoints(out)] == ["checkpoint-00000003", "checkpoint-00000004"]
    assert (out / "final_model" / "model.safetensors").is_file() and (out / "train_summary.json").is_file()
    assert not (out / runs.LOCK_FILE).exists() and not list(out.glob(".tmp-*"))


@pytest.mark.slow
def test_resume_refuses_incompatible_runs_records_allowed_changes_and_leaves_a_finished_run(cache, tmp_path):
    out = tmp_path / "run"
    proc = _train(cache, out, "--max_train_steps", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resume = ("--resume_from_checkpoint", "latest")

    # Another model shape: refused naming the field and a tensor, even with --allow_changed_args.
    proc = _train(cache, out, "--max_train_steps", "4", *resume, "--allow_changed_args", overrides={"hidden_size": 48})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "other weight shapes" in _last_line(proc) and "config.hidden_size 64 -> 48" in _last_line(proc)

    # A changed learning rate: refused naming it.
    proc = _train(cache, out, "--max_train_steps", "4", *resume, "--lr", "0.05")
    assert proc.returncode == 2 and "lr 0.001 -> 0.05" in _last_line(proc) and "--allow_changed_args" in _last_line(proc)
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-00000001", "checkpoint-00000002"]

    # Allowed: the run goes on (extended to 3 steps) and run_metadata.json records the change and the resumption.
    proc = _train(cache, out, "--max_train_steps", "3", *resume, "--lr", "0.05", "--allow_changed_args",
                  "--logging_steps", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metadata = json.loads((out / "run_metadata.json").read_text())
    (resumption,) = metadata["resumptions"]
    assert resumption["checkpoint"].endswith("checkpoint-00000002") and resumption["global_step"] == 2
    assert resumption["changed"] == {"lr": {"checkpoint": 0.001, "now": 0.05}}
    assert resumption["allowed_by"] == "--allow_changed_args"
    assert resumption["extended"] == {"max_train_steps": {"checkpoint": 2, "now": 3}}
    assert metadata["args"]["lr"] == 0.05

    # Finished: resuming it again says so and leaves its summary as it was.
    summary = (out / "train_summary.json").read_bytes()
    assert json.loads(summary)["final_metrics"] is not None
    proc = _train(cache, out, "--max_train_steps", "3", *resume, "--lr", "0.05")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already finished at step 3" in proc.stderr
    assert (out / "train_summary.json").read_bytes() == summary


def _sizes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _check_full_disk(proc, out: Path, what: str, last: str) -> None:
    from modeling_mambavl.training import checkpointing

    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _last_line(proc)
    assert line.startswith(f"train_ek100.py: [Errno 28] No space left on device: could not write {what} ("), line
    assert f"nothing of it was kept. The last good checkpoint is {out / last}: free space and resume with " \
           "--resume_from_checkpoint latest." in line
    assert "Traceback" not in proc.stderr
    assert [p.name for p in checkpointing.list_checkpoints(out)][-1] == last
    assert not list(out.glob(".tmp-*")), list(out.glob(".tmp-*"))


@pytest.mark.slow
def test_real_full_disk_during_a_checkpoint_and_the_final_save(cache, tmp_path):
    # Sizes from a run on the ordinary disk, so the filesystems below fill up at the intended write.
    reference = tmp_path / "reference"
    assert _train(cache, reference, "--max_train_steps", "1").returncode == 0
    checkpoint = _sizes(reference / "checkpoint-00000001")
    best, final = _sizes(reference / "best_model"), _sizes(reference / "final_model")

    # During checkpoint 2: room for one checkpoint and a half.
    with small_tmpfs(tmp_path, checkpoint * 3 // 2) as disk:
        proc = _train(cache, disk / "run", "--max_train_steps", "2")
        _check_full_disk(proc, disk / "run", "the checkpoint of step 2", "checkpoint-00000001")
        assert not (disk / "run" / "final_model").exists() and not (disk / "run" / "best_model").exists()

    # During the final save: room for the checkpoint, best_model/ and half of final_model/.
    with small_tmpfs(tmp_path, checkpoint + best + final // 2) as disk:
        out = disk / "run"
        proc = _train(cache, out, "--max_train_steps", "1")
        _check_full_disk(proc, out, "final_model/", "checkpoint-00000001")
        assert not (out / "final_model").exists() and not (out / "train_summary.json").exists()
        assert (out / "best_model" / "model.safetensors").is_file()
        # Space freed (the filesystem grown): resuming writes the final model, with the metrics of its last evaluation.
        subprocess.run(["mount", "-o", f"remount,size={2 * (checkpoint + best + final)}", str(disk)], check=True)
        proc = _train(cache, out, "--max_train_steps", "1", "--resume_from_checkpoint", "latest")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (out / "final_model" / "model.safetensors").is_file()
        assert json.loads((out / "train_summary.json").read_text())["final_metrics"] is not None


@pytest.mark.slow
def test_simulated_full_disk_during_the_final_save(cache, tmp_path):
    out = tmp_path / "run"
    proc = _train(cache, out, "--max_train_steps", "1", fault="enospc:final_model")
    _check_full_disk(proc, out, "final_model/", "checkpoint-00000001")
    assert not (out / "final_model").exists() and not (out / "train_summary.json").exists()
