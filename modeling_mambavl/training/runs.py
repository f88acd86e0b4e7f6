"""A training run and its ``--output_dir``: an exclusive lock, resuming only what is compatible, finished runs.

- **Lock.** The main process (under Accelerate, only it) creates ``<output_dir>/run.lock`` holding its pid, host and
  start time; a second run into the same folder is refused while that process lives. A lock is stale when its owner
  is on this host and no longer running (it is then taken over); an owner on another host cannot be checked from
  here, so the run is refused naming it and ``--break_lock``.
- **Compatibility.** Every checkpoint's ``run_metadata.json`` records the resolved arguments, the model config and
  the shape of every weight. Resuming compares them with the current run: a model whose weights have other shapes is
  refused naming the fields; arguments that change results (learning rates, batch, schedule, seed, data, ...) are
  refused unless ``--allow_changed_args``, which records them in ``run_metadata.json`` with the resumption itself;
  arguments that do not change results (logging, evaluation frequency, workers, paths) are not compared; raising
  ``--num_train_epochs`` / ``--max_train_steps`` extends a run.
- **Finished runs.** Resuming a run whose ``train_summary.json`` says it reached the last step does nothing and says
  so, leaving its outputs as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import atomic
from . import checkpointing

__all__ = [
    "LOCK_FILE",
    "RunLock",
    "RunRefused",
    "check_resume",
    "disk_full_hint",
    "finished_summary",
    "lock_output_dir",
    "model_record",
]

LOCK_FILE = "run.lock"
SUMMARY_FILE = "train_summary.json"

# Arguments that cannot change what a run computes: never compared on resume.
NOT_COMPARED = frozenset({
    "recipe", "demo", "dry_run", "output_dir", "resume_from_checkpoint", "allow_changed_args", "break_lock",
    "logging_steps", "report_to", "no_plot", "num_threads", "install_seconds", "num_workers", "data_cache_dir",
    "annotations_dir", "media_root", "train_questions_file", "eval_questions_file", "model_name_or_path", "init_from",
    "checkpointing_steps", "checkpoints_total_limit", "eval_every_epochs", "per_device_eval_batch_size",
    "max_eval_samples", "controls", "push_to_hub", "hub_model_id", "merge_lora", "debug",
})
# Raising these extends a run; lowering them changes its schedule.
EXTENDABLE = ("num_train_epochs", "max_train_steps")
# Config entries that describe the files or the machine, not the model.
CONFIG_NOT_COMPARED = frozenset({"transformers_version", "_name_or_path", "architectures", "auto_map", "dtype",
                                 "torch_dtype", "scan_backend", "_commit_hash", "_attn_implementation_autoset"})


class RunRefused(RuntimeError):
    """A run that must not go on: its output folder is in use, or the checkpoint it would resume does not match."""


# ----------------------------------------------------------------------------------------------------------- lock
def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), which tells a process from a later one given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


class RunLock:
    """``<output_dir>/run.lock``: one live run per output folder (see the module docstring)."""

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self.owner: dict[str, Any] = {
            "pid": os.getpid(), "host": atomic.host_name(), "process_start": _process_start_time(os.getpid()),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "token": uuid.uuid4().hex,
            "command": " ".join(sys.argv),
        }
        self.held = False
        self.created_dir = False

    def _read_owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _owner_is_dead(self, owner: dict[str, Any]) -> bool:
        if owner.get("host") != atomic.host_name() or not isinstance(owner.get("pid"), int):
            return False
        if not atomic.process_is_alive(owner["pid"]):
            return True
        recorded = owner.get("process_start")
        return recorded is not None and recorded != _process_start_time(owner["pid"])

    def _refusal(self, owner: dict[str, Any]) -> str:
        who = (f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, started {owner.get('started', '?')}: "
               f"{owner.get('command', '?')}")
        if owner.get("host") == atomic.host_name():
            return (f"--output_dir {self.output_dir} is in use by another training run ({who}; lock file "
                    f"{self.path}). Wait for it to end, or give another --output_dir.")
        return (f"--output_dir {self.output_dir} is locked by a training run on another host ({who}; lock file "
                f"{self.path}); whether it is still running cannot be checked from {atomic.host_name()}. If it has "
                "ended, pass --break_lock to take the folder over; otherwise give another --output_dir.")

    def acquire(self, break_lock: bool = False) -> None:
        """Create the lock file, taking over a stale one (or, with ``break_lock``, one of another host).

        Raises:
            RunRefused: a live process holds the lock, or one on another host does and ``break_lock`` is False.
        """
        atomic.check_target(self.output_dir, directory=True, name="--output_dir")  # a file there: say so, not EEXIST
        # A run that stops before writing anything (bad annotations, a refused resume) leaves no folder behind.
        self.created_dir = not self.output_dir.exists()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(self.owner, indent=2) + "\n"
        with _directory_mutex(self.output_dir):
            for _ in range(3):
                # Written whole beside the lock, then hard-linked to its name: the link fails if a lock exists, and a
                # reader never sees a half-written owner.
                tmp = atomic.temporary_path(self.path)
                tmp.write_text(payload, encoding="utf-8")
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return
                except FileExistsError:
                    pass
                finally:
                    atomic.discard(tmp)
                owner = self._read_owner()
                if owner is None:
                    continue
                mine = owner.get("pid") == os.getpid() and owner.get("host") == atomic.host_name() and \
                    owner.get("process_start") == self.owner["process_start"]
                if mine or self._owner_is_dead(owner) or (break_lock and owner.get("host") != atomic.host_name()):
                    print(f"{self.path}: taking over the lock of pid {owner.get('pid')} on {owner.get('host')} "
                          f"({'this process' if mine else 'ended' if not break_lock else '--break_lock'})",
                          file=sys.stderr, flush=True)
                    atomic.discard(self.path)
                    continue
                raise RunRefused(self._refusal(owner))
        raise RunRefused(f"{self.path}: could not create the lock file (it keeps changing); is another run starting?")

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if self.held and (self._read_owner() or {}).get("token") == self.owner["token"]:
            atomic.discard(self.path)
            if self.created_dir:
                with contextlib.suppress(OSError):  # not empty (the run wrote something), or already gone
                    self.output_dir.rmdir()
        self.held = False


@contextlib.contextmanager
def _directory_mutex(folder: Path) -> Iterator[None]:
    """Serialise lock checks of processes on this host (``flock`` on the folder; skipped where unsupported)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def lock_output_dir(accelerator: Any, output_dir: str | os.PathLike, *, enabled: bool = True,
                    break_lock: bool = False) -> Iterator[RunLock | None]:
    """Hold ``<output_dir>/run.lock`` for the ``with`` block: taken by the main process only; every process raises
    :class:`RunRefused` if it cannot be taken."""
    lock, error = None, None
    if enabled and accelerator.is_main_process:
        lock = RunLock(output_dir)
        try:
            lock.acquire(break_lock=break_lock)
        except RunRefused as e:
            error = str(e)
    if enabled and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [error]
        broadcast_object_list(box, from_process=0)
        error = box[0]
    if error:
        raise RunRefused(error)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


# --------------------------------------------------------------------------------------------------- compatibility
def model_record(model: Any) -> dict[str, Any]:
    """What a checkpoint records of its model: the config (as JSON) and every weight's shape."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "config": json.loads(base.config.to_json_string(use_diff=False)),
        "model_shapes": {name: list(t.shape) for name, t in model.state_dict().items()},
    }


def _changes(old: dict[str, Any], new: dict[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, dict]:
    return {k: {"checkpoint": old.get(k), "now": new.get(k)} for k in sorted(set(old) | set(new))
            if k not in skip and old.get(k) != new.get(k)}


def _describe(changes: dict[str, dict], limit: int = 8) -> str:
    parts = [f"{k} {json.dumps(v['checkpoint'], default=str)} -> {json.dumps(v['now'], default=str)}"
             for k, v in list(changes.items())[:limit]]
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return "; ".join(parts) + more


def check_resume(checkpoint: str | os.PathLike, metadata: dict[str, Any],
                 allow_changed_args: bool = False) -> list[dict[str, Any]]:
    """Check that the run described by ``metadata`` (``args``, ``config``, ``model_shapes``, ``world_size``) may resume
    ``checkpoint``; return the run's resumptions for ``run_metadata.json``: the checkpoint's, then this one (the
    checkpoint resumed, its step, the time, the settings changed and what allowed them, the epochs or steps raised).

    Raises:
        RunRefused: the weights' shapes differ (naming the config fields and arguments that differ, and tensors), or
            result-changing arguments differ and ``allow_changed_args`` is False (naming each, old -> new).
    """
    checkpoint = Path(checkpoint)
    saved = json.loads((checkpoint / "run_metadata.json").read_text(encoding="utf-8"))
    old_args, new_args = dict(saved.get("args") or {}), dict(metadata.get("args") or {})
    old_args["world_size"], new_args["world_size"] = saved.get("world_size"), metadata.get("world_size")
    config_changes = {f"config.{k}": v for k, v in _changes(saved.get("config") or {}, metadata.get("config") or {},
                                                            CONFIG_NOT_COMPARED).items()} if "config" in saved else {}
    arg_changes = _changes(old_args, new_args, NOT_COMPARED | set(EXTENDABLE))
    extended = {}
    for name in EXTENDABLE:
        old, new = old_args.get(name), new_args.get(name)
        if old != new:
            growing = isinstance(old, int) and isinstance(new, int) and new > old
            (extended if growing else arg_changes)[name] = {"checkpoint": old, "now": new}

    old_shapes, new_shapes = saved.get("model_shapes"), metadata.get("model_shapes")
    if old_shapes is not None and new_shapes is not None and old_shapes != new_shapes:
        tensors = [f"{k} {tuple(old_shapes[k]) if k in old_shapes else 'absent'} -> "
                   f"{tuple(new_shapes[k]) if k in new_shapes else 'absent'}"
                   for k in sorted(set(old_shapes) | set(new_shapes)) if old_shapes.get(k) != new_shapes.get(k)]
        fields = _describe({**config_changes, **arg_changes}) or "none recorded"
        raise RunRefused(
            f"--resume_from_checkpoint {checkpoint}: the model these arguments build has other weight shapes than the "
            f"checkpoint's (fields that differ: {fields}; tensors: {', '.join(tensors[:4])}"
            f"{f' and {len(tensors) - 4} more' if len(tensors) > 4 else ''}). Resume with the checkpoint's model "
            "settings, or start a new run in another --output_dir."
        )
    changes = {**config_changes, **arg_changes}
    if changes and not allow_changed_args:
        raise RunRefused(
            f"--resume_from_checkpoint {checkpoint}: these settings differ from the checkpoint's and change the "
            f"results: {_describe(changes)}. Resume with the checkpoint's values, or pass --allow_changed_args to go "
            "on with the new ones (recorded in run_metadata.json)."
        )
    state = json.loads((checkpoint / checkpointing.TRAINER_STATE).read_text(encoding="utf-8"))
    return [*saved.get("resumptions", []), {
        "checkpoint": str(checkpoint), "global_step": state.get("global_step"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "changed": changes, "allowed_by": "--allow_changed_args" if changes else None, "extended": extended,
    }]


# ----------------------------------------------------------------------------------------------------- finishing
def finished_summary(output_dir: str | os.PathLike, global_step: int, max_train_steps: int) -> dict[str, Any] | None:
    """The ``train_summary.json`` of a run that already ended at ``global_step`` (>= ``max_train_steps``), else None."""
    path = Path(output_dir) / SUMMARY_FILE
    if global_step < max_train_steps or not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return summary if summary.get("global_step") == global_step else None


def disk_full_hint(output_dir: str | os.PathLike) -> str:
    """The last sentence of a training run's full-disk message: the newest complete checkpoint and how to go on."""
    complete = checkpointing.list_checkpoints(output_dir)
    last = complete[-1] if complete else "none (no checkpoint was written yet)"
    return f"The last good checkpoint is {last}: free space and resume with --resume_from_checkpoint latest."
