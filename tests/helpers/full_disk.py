"""A full disk, simulated: files opened by ``modeling_mambavl.atomic`` (and, optionally, ``Path.write_bytes``) raise
``OSError(ENOSPC)`` on write, as they would on a disk with no space left."""

from __future__ import annotations

import errno
import pathlib

import pytest


class FullFile:
    """Stands for the file ``atomic`` opens: entering works, every write fails with ENOSPC."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def _full_write_bytes(self, data):
    raise OSError(errno.ENOSPC, "No space left on device")


def fill_disk(monkeypatch: pytest.MonkeyPatch, write_bytes: bool = False) -> None:
    """Make ``atomic``'s writes (and ``Path.write_bytes`` with ``write_bytes``) fail as on a full disk; undone by
    ``monkeypatch.undo()``."""
    from modeling_mambavl import atomic

    monkeypatch.setattr(atomic, "open", FullFile, raising=False)
    if write_bytes:
        monkeypatch.setattr(pathlib.Path, "write_bytes", _full_write_bytes)
