"""Atomic training checkpoints on top of ``Accelerator.save_state``.

A checkpoint is written into a hidden temporary folder (``modeling_mambavl.atomic``: ``.tmp-<name>.<pid>@<host>``,
named for the main process), every file is fsynced, a ``checkpoint_complete.json``
marker listing each file and its size is written last, and only then is the folder renamed to its final name
(``checkpoint-00000120``). Older checkpoints are pruned only after the rename. A run killed at any moment therefore
leaves either the previous complete checkpoints, or those plus a new complete one; resuming only ever considers
folders whose marker matches their contents. A full disk raises ``DiskFullError`` (the one documented message).

Training-state folders hold pickled optimizer / scheduler / RNG states (that is how PyTorch and Accelerate store
them): they are trusted local files written by your own runs. Never resume from a folder someone else gave you;
share models with ``save_pretrained`` (safetensors) instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import atomic
from . import faults

COMPLETE_MARKER = "checkpoint_complete.json"
TRAINER_STATE = "trainer_state.json"
_NAME_RE = re.compile(r"^checkpoint-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint folder that is missing, incomplete or inconsistent."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}"


def _write_json(path: Path, payload: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


def _manifest(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != COMPLETE_MARKER
    }


def is_complete(folder: str | Path) -> bool:
    """True if ``folder`` holds a marker whose file list and sizes match what is on disk."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        expected = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError):
        return False
    return expected == _manifest(folder)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``output_dir``, oldest first (by step)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and _NAME_RE.match(p.name) and is_complete(p)]
    return sorted(found, key=lambda p: int(_NAME_RE.match(p.name).group(1)))


def resolve_resume_checkpoint(output_dir: str | Path, resume_from: str | None) -> Path | None:
    """``"latest"`` -> the newest complete checkpoint (or None); a path -> that folder, which must be complete."""
    if not resume_from:
        return None
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from)
    if not path.is_dir():
        raise CheckpointError(f"--resume_from_checkpoint {path}: no such folder")
    if not is_complete(path):
        raise CheckpointError(
            f"--resume_from_checkpoint {path}: the checkpoint is incomplete (no valid {COMPLETE_MARKER}, or its files "
            "changed since it was written); it was probably interrupted while saving. Use 'latest' to take the "
            "newest complete one."
        )
    return path


def _save_weights_hook(accelerator) -> Callable:
    """Pre-hook of ``save_state`` that writes the weights itself, so that fault points can sit between files."""
    from safetensors.torch import save_file

    def hook(models, weights, output_dir):
        if not weights:  # FSDP / DeepSpeed save their own sharded weights
            faults.kill_point("during_save:optimizer")
            return
        if accelerator.is_main_process:
            try:
                from accelerate.utils.other import clean_state_dict_for_safetensors
            except ImportError:  # pragma: no cover - older Accelerate
                def clean_state_dict_for_safetensors(sd):
                    return sd
            for i, state in enumerate(weights):
                name = "model.safetensors" if i == 0 else f"model_{i}.safetensors"
                path = Path(output_dir) / name
                faults.disk_full_point("model")
                save_file(clean_state_dict_for_safetensors(state), str(path), metadata={"format": "pt"})
                if "during_save:model" in faults._specs():
                    # A torn write: half the file on disk, then the process dies.
                    size = path.stat().st_size
                    with open(path, "r+b") as f:
                        f.truncate(size // 2)
                    faults.kill_point("during_save:model")
        weights.clear()  # written above; Accelerate must not write them again
        faults.disk_full_point("optimizer")
        faults.kill_point("during_save:optimizer")

    return hook


def save_checkpoint(
    accelerator,
    output_dir: str | Path,
    step: int,
    trainer_state: dict[str, Any],
    metadata: dict[str, Any] | None = None,
    total_limit: int | None = None,
    keep: tuple[str | Path, ...] = (),
    disk_full_hint: str | None = None,
) -> Path:
    """Write a complete checkpoint of everything ``accelerator`` tracks, atomically.

    Args:
        accelerator: the run's ``Accelerator`` (model, optimizer, scheduler prepared; RNG states are saved too).
        output_dir: the run folder; the checkpoint becomes ``output_dir/checkpoint-<step>``.
        step: global optimizer step (names the folder).
        trainer_state: JSON-serialisable loop state (epoch, step in epoch, best metric, ...).
        metadata: resolved arguments, recipe, versions, git commit, seeds — stored beside the state.
        total_limit: keep at most this many complete checkpoints (older ones removed after the rename).
        keep: checkpoint folders never pruned (e.g. the best one).
        disk_full_hint: the last sentence of the ``DiskFullError`` raised if the disk is full (what survived and how
            to go on).

    Returns:
        The final checkpoint folder. On any error the temporary folder is removed and the previous checkpoints are
        untouched; the error propagates, a full disk as ``atomic.DiskFullError``.
    """
    output_dir = Path(output_dir)
    final = output_dir / checkpoint_name(step)
    tmp = _shared_temporary(accelerator, final)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic.discard(tmp)
        tmp.mkdir()
    accelerator.wait_for_everyone()
    handle = accelerator.register_save_state_pre_hook(_save_weights_hook(accelerator))
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            _write_json(tmp / TRAINER_STATE, dict(trainer_state, global_step=step))
            _write_json(tmp / "run_metadata.json", metadata or {})
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic.fsync_tree(tmp)
            _write_json(tmp / COMPLETE_MARKER, {"step": step, "files": _manifest(tmp)})
            atomic.fsync_tree(tmp)
            faults.kill_point("before_rename")
            # A re-run of the same step replaces the old folder only now that the new one is complete.
            atomic.commit(tmp, final)
            faults.kill_point("after_rename")
            if total_limit is not None and total_limit > 0:
                protected = {Path(k).resolve() for k in keep} | {final.resolve()}
                complete = list_checkpoints(output_dir)
                for old in complete[: max(0, len(complete) - total_limit)]:
                    if old.resolve() not in protected:
                        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        full = not isinstance(e, atomic.DiskFullError) and atomic.is_disk_full(e, output_dir)
        if accelerator.is_main_process:
            atomic.discard(tmp)
        if full:
            raise atomic.DiskFullError(final, f"the checkpoint of step {step}", disk_full_hint) from e
        raise
    finally:
        handle.remove()
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: str | Path) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; returns the trainer state. Refuses incomplete folders."""
    folder = Path(folder)
    if not is_complete(folder):
        raise CheckpointError(f"{folder}: incomplete checkpoint (missing or stale {COMPLETE_MARKER}); refusing to resume")
    accelerator.load_state(str(folder))
    return json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))


def _shared_temporary(accelerator, final: Path) -> Path:
    """The temporary folder of ``final``, named for the main process and the same on every process."""
    names = [atomic.temporary_path(final).name if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(names, from_process=0)
    return final.parent / names[0]


def clean_stale_temporaries(output_dir: str | Path) -> list[Path]:
    """Remove temporary folders left by interrupted saves of this process or of dead ones (``atomic.clean_temporaries``:
    those of live processes or other hosts are left alone); returns what was removed."""
    return atomic.clean_temporaries(output_dir)
