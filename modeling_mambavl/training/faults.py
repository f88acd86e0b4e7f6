"""Fault injection for reliability tests, driven by the ``MAMBAVL_FAULT`` environment variable.

Production runs never set it. Tests set it to prove that a run killed at an awkward moment, a full disk or a
non-finite loss loses nothing. The value is a comma-separated list of specs:

- ``after_step:N``            SIGKILL the process right after optimizer step N (1-based, counted over the whole run)
- ``during_save:model``       SIGKILL while a checkpoint is being written, with the weights file half written
- ``during_save:optimizer``   SIGKILL after the weights file, before the optimizer state is written
- ``before_rename``           SIGKILL after a checkpoint is complete and fsynced, before its atomic rename
- ``after_rename``            SIGKILL right after the rename, before older checkpoints are pruned
- ``enospc:model`` / ``enospc:optimizer``  raise ``OSError(ENOSPC)`` at that point of a save (a full disk)
- ``enospc:final_model``      raise ``OSError(ENOSPC)`` once ``final_model/`` is written, before its rename
- ``nan_loss:N``              make the loss of optimizer step N non-finite

Only the process whose rank matches ``MAMBAVL_FAULT_RANK`` (default: every rank) is affected.
"""

from __future__ import annotations

import errno
import os
import signal
import sys

ENV_VAR = "MAMBAVL_FAULT"
KILL_POINTS = ("after_step", "during_save:model", "during_save:optimizer", "before_rename", "after_rename")


def _specs() -> list[str]:
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return []
    rank = os.environ.get("MAMBAVL_FAULT_RANK")
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return []
    return [s.strip() for s in value.split(",") if s.strip()]


def _kill(reason: str) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    print(f"[{ENV_VAR}] killing process {os.getpid()} at {reason}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def kill_point(name: str, step: int | None = None) -> None:
    """SIGKILL this process if ``MAMBAVL_FAULT`` names this point (``after_step`` also needs ``step`` to match)."""
    for spec in _specs():
        if name == "after_step" and spec.startswith("after_step:"):
            if step is not None and step == int(spec.split(":", 1)[1]):
                _kill(f"after_step:{step}")
        elif spec == name:
            _kill(name)


def disk_full_point(name: str) -> None:
    """Raise ``OSError(ENOSPC)`` if ``MAMBAVL_FAULT`` contains ``enospc:<name>`` (simulates a full disk)."""
    if f"enospc:{name}" in _specs():
        raise OSError(errno.ENOSPC, f"No space left on device (simulated by {ENV_VAR}=enospc:{name})")


def nan_loss_step(step: int) -> bool:
    """True if ``MAMBAVL_FAULT`` asks for a non-finite loss at optimizer step ``step`` (1-based)."""
    return any(spec == f"nan_loss:{step}" for spec in _specs())
