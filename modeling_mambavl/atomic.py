"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Everything a run leaves behind (training checkpoints, ``final_model/``, ``best_model/``, metrics, predictions,
submissions) is written into a hidden temporary sibling named for its owner, ``.tmp-<name>.<pid>@<host>``, fsynced, and
only then renamed over the final name. A write that fails removes its temporary, so nothing half-written remains; one
that fails because the disk is full (``ENOSPC`` from Python, or the same error as the safetensors and torch writers
report it) raises :class:`DiskFullError`, whose message is the one documented in RELIABILITY.md. A folder replacing an
older one is swapped in with two renames; the older one waits aside as ``.tmp-<name>.previous.<pid>@<host>`` and is
put back by :func:`clean_temporaries` should the process die between them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DiskFullError",
    "atomic_write",
    "check_target",
    "clean_temporaries",
    "commit",
    "discard",
    "is_disk_full",
    "process_is_alive",
    "temporary_path",
    "write_text",
]

TMP_PREFIX = ".tmp-"
PREVIOUS = ".previous"
_TMP_RE = re.compile(r"^\.tmp-(?P<name>[^@]+)\.(?P<pid>\d+)@(?P<host>[^@/]+)$")
# torch's zip writer reports a full disk as "unexpected pos ..." or "file write failed", without an errno: a write
# error on a filesystem left with less than this is taken for a full disk.
_NEARLY_FULL_BYTES = 1 << 20
FULL_DISK_HINT = "Free space and run it again."


class DiskFullError(OSError):
    """A write stopped by a full disk. ``str()``: ``[Errno 28] No space left on device: could not write <what>
    (<path>); nothing of it was kept. <hint>``; ``errno`` is ``ENOSPC``, ``filename`` the final path."""

    def __init__(self, path: str | os.PathLike, what: str | None = None, hint: str | None = None) -> None:
        path = Path(path)
        message = (f"No space left on device: could not write {what or path.name} ({path}); nothing of it was kept. "
                   f"{hint or FULL_DISK_HINT}")
        super().__init__(errno.ENOSPC, message)
        self.path = path

    def __str__(self) -> str:
        return f"[Errno {errno.ENOSPC}] {self.strerror}"


def host_name() -> str:
    return socket.gethostname() or "localhost"


def process_is_alive(pid: int) -> bool:
    """True if a process with this id exists on this host (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def temporary_path(final: str | os.PathLike, pid: int | None = None) -> Path:
    """The hidden sibling ``final`` is written into: ``.tmp-<name>.<pid>@<host>`` (this process by default)."""
    final = Path(final)
    return final.parent / f"{TMP_PREFIX}{final.name}.{pid or os.getpid()}@{host_name()}"


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under ``path`` (or the file itself), then ``path``."""
    path = Path(path)
    if path.is_dir():
        for p in path.rglob("*"):
            if p.is_file():
                _fsync(p)
    _fsync(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def discard(tmp: str | os.PathLike) -> None:
    """Remove a temporary file or folder, whatever state it is in."""
    _remove(Path(tmp))


def commit(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """fsync ``tmp`` and rename it to ``final``; an existing folder ``final`` is replaced only now."""
    tmp, final = Path(tmp), Path(final)
    fsync_tree(tmp)
    if final.is_dir() and not final.is_symlink():
        # A folder cannot be renamed over a non-empty one: the old one steps aside, the new one takes its name, and
        # only then is the old one removed.
        aside = final.parent / f"{TMP_PREFIX}{final.name}{PREVIOUS}.{os.getpid()}@{host_name()}"
        _remove(aside)
        os.replace(final, aside)
        os.replace(tmp, final)
        _fsync(final.parent)
        _remove(aside)
    else:
        os.replace(tmp, final)
        _fsync(final.parent)
    return final


def is_disk_full(error: BaseException, where: str | os.PathLike | None = None) -> bool:
    """True if ``error`` (or an error it was raised from) is a full disk: ``ENOSPC``, the safetensors writer's
    "No space left on device (os error 28)", or a write error of torch's writer on a filesystem (``where``) that has
    almost no space left."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        text = str(current)
        if "No space left on device" in text or "os error 28" in text:
            return True
        current = current.__cause__ or current.__context__
    if where is not None and isinstance(error, (OSError, RuntimeError)):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(Path(where)).free < _NEARLY_FULL_BYTES
    return False


def check_target(path: str | os.PathLike, *, directory: bool = False, name: str | None = None) -> Path:
    """Refuse, before anything is written, a target that cannot take what is meant to go there: a folder where a file
    goes (it would be replaced, and everything in it lost), a file where a folder goes, or a file where a folder on
    the way should be. ``name`` (an option such as ``--output_dir``) leads the message. Returns ``Path(path)``.

    Raises ``IsADirectoryError`` / ``NotADirectoryError`` naming the path and what would fix it.
    """
    final = Path(path)
    lead = f"{name} {final}" if name else str(final)
    if final.exists():
        if final.is_dir() and not directory:
            raise IsADirectoryError(f"{lead}: is a folder, and a file goes there (writing it would replace the folder "
                                    f"and all it holds); give a file path such as {final / 'name.json'}")
        if directory and not final.is_dir():
            raise NotADirectoryError(f"{lead}: is a file, and a folder goes there; give a folder path, or remove "
                                     "the file")
        return final
    for parent in final.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{lead}: {parent} is a file, not a folder, so nothing can be written "
                                         "inside it; give a path in a folder")
            break
    return final


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, directory: bool = False, what: str | None = None,
                 hint: str | None = None) -> Iterator[Path]:
    """Write ``path`` through a temporary sibling: ``with atomic_write(p) as tmp: <write tmp>``.

    Args:
        path: the final file or folder.
        directory: ``tmp`` is a fresh, empty folder (else: a file path, its parent created).
        what / hint: the words of :class:`DiskFullError` should the disk be full.

    On success ``tmp`` is fsynced and renamed to ``path``; on any error it is removed and the previous ``path`` (if
    any) is untouched; a full disk raises :class:`DiskFullError` from the original error. A folder where a file goes
    (or a file where a folder goes) is refused before anything is written (:func:`check_target`).
    """
    final = check_target(path, directory=directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    _remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        commit(tmp, final)
    except BaseException as e:
        full = not isinstance(e, DiskFullError) and is_disk_full(e, final.parent)
        _remove(tmp)
        if full:
            raise DiskFullError(final, what, hint) from e
        raise


def temporary_owner(name: str) -> tuple[int, str] | None:
    """(pid, host) encoded in a temporary's name, or None for a name without an owner."""
    match = _TMP_RE.match(name)
    return (int(match["pid"]), match["host"]) if match else None


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries in ``folder`` left by this process or by dead processes of this host (and unowned
    ones of older versions); a folder set aside by an interrupted replacement is put back when its final name is
    missing. Temporaries of live processes, or of processes on other hosts, are left alone. Returns what was removed
    or put back."""
    folder = Path(folder)
    handled: list[Path] = []
    if not folder.is_dir():
        return handled
    here = host_name()
    for p in sorted(folder.iterdir()):
        if not p.name.startswith(TMP_PREFIX):
            continue
        owner = temporary_owner(p.name)
        if owner is not None:
            pid, host = owner
            if host != here or (pid != os.getpid() and process_is_alive(pid)):
                continue
            name = _TMP_RE.match(p.name)["name"]
            if name.endswith(PREVIOUS):
                final = folder / name[: -len(PREVIOUS)]
                if not final.exists():
                    os.replace(p, final)
                    handled.append(p)
                    continue
        _remove(p)
        handled.append(p)
    return handled


def write_text(path: str | os.PathLike, text: str, *, what: str | None = None, hint: str | None = None) -> Path:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    with atomic_write(path, what=what, hint=hint) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
