"""Small synthetic EK100 sets for tests, and reading back what ``make_synthetic_ek100`` wrote: a split's CSV rows and a
digest of a folder's bytes."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

from modeling_mambavl.ek100 import make_synthetic_ek100
from modeling_mambavl.ek100.annotations import SPLIT_FILES


def small_frames_set(root: Path, *, clips_per_video: int, size: int) -> Any:
    """A synthetic EK100-format set of 24 / 12 / 12 train / validation / test clips as JPEG frames only (no MP4s, no
    features): quick to make for a test module that runs scripts on it."""
    return make_synthetic_ek100(root, num_train=24, num_validation=12, num_test=12, clips_per_video=clips_per_video,
                                size=size, video=False, features=False)


def split_rows(data: Any, split: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of one split's annotation CSV in a ``SyntheticEK100``'s ``annotations_dir``."""
    with open(data.annotations_dir / SPLIT_FILES[split], newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def folder_digest(folder: Path) -> str:
    """sha256 of every file's relative path and bytes under ``folder``, in path order (``synthetic.json`` left out:
    it records the settings, not the data)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "synthetic.json"):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()
