"""Pre-extracted clip features: fp16 safetensors shards keyed by ``narration_id`` plus an ``index.json``.

Layout of a feature folder::

    index.json                       # metadata + which shard holds each narration id (written last)
    features-00000.safetensors       # {narration_id: tensor (F, D) float16, ...}
    features-00001.safetensors
    ...

``index.json`` records everything needed to use the features without guessing: ``shape`` ([F, D] per clip),
``dtype``, ``token_order`` (``"frame-major"``: [CLS if present] then (t, h, w) raster, the model's canonical
order), ``has_cls``, ``backbone`` (a Hub id or a description), ``task`` (features of recognition segments must
not be used for anticipation, whose window ends before the action), ``sampling`` and ``processor`` settings, and
``shards`` / ``narration_ids``. ``examples/extract_features.py`` writes folders with :class:`EK100FeatureWriter`;
``load_ek100(..., media="features")`` reads them with :class:`EK100FeatureReader`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["FEATURES_FORMAT", "FEATURES_INDEX", "EK100FeatureReader", "EK100FeatureWriter"]

FEATURES_INDEX = "index.json"
FEATURES_FORMAT = "mambavl-ek100-features"
_FORMAT_VERSION = 1
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_TOKEN_ORDERS = ("frame-major", "patch-major", "pooled")


class EK100FeatureWriter:
    """Write per-narration feature tensors into shards and an ``index.json``.

    Every tensor has the same shape (F, D) (F tokens of width D); they are stored as ``dtype`` (fp16 by default).
    The index is written by :meth:`close` (or on leaving a ``with`` block without an exception), so a folder with an
    ``index.json`` is complete.

    Example::

        with EK100FeatureWriter(out, backbone="MCG-NJU/videomae-base", has_cls=False,
                                sampling={"num_frames": 16, "sampling": "dense", "stride": 4}) as writer:
            for narration_id, tokens in extracted:      # tokens: (F, D)
                writer.add(narration_id, tokens)
    """

    def __init__(
        self,
        root: str | Path,
        *,
        backbone: str,
        has_cls: bool,
        token_order: str = "frame-major",
        task: str = "recognition",
        sampling: Mapping[str, Any] | None = None,
        processor: Mapping[str, Any] | None = None,
        dtype: str = "float16",
        shard_size: int = 1024,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r}: expected one of {sorted(_DTYPES)}")
        if token_order not in _TOKEN_ORDERS:
            raise ValueError(f"token_order={token_order!r}: expected one of {_TOKEN_ORDERS}")
        if task not in ("recognition", "anticipation"):
            raise ValueError(f"task={task!r}: expected 'recognition' or 'anticipation'")
        if shard_size < 1:
            raise ValueError(f"shard_size={shard_size}: expected >= 1")
        if (self.root / FEATURES_INDEX).exists() and not overwrite:
            raise FileExistsError(f"{self.root / FEATURES_INDEX} exists; pass overwrite=True to replace the folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self._meta = {
            "format": FEATURES_FORMAT,
            "format_version": _FORMAT_VERSION,
            "backbone": str(backbone),
            "has_cls": bool(has_cls),
            "token_order": token_order,
            "task": task,
            "dtype": dtype,
            "sampling": dict(sampling or {}),
            "processor": dict(processor or {}),
        }
        self._dtype = _DTYPES[dtype]
        self._shard_size = shard_size
        self._pending: dict[str, torch.Tensor] = {}
        self._shards: dict[str, int] = {}
        self._where: dict[str, str] = {}
        self._shape: list[int] | None = None
        self._closed = False

    def add(self, narration_id: str, features: torch.Tensor) -> None:
        """Add the (F, D) features of one narration."""
        if self._closed:
            raise RuntimeError(f"{self.root}: the writer is closed")
        if not isinstance(narration_id, str) or not narration_id:
            raise ValueError(f"narration_id must be a non-empty string, got {narration_id!r}")
        if narration_id in self._where or narration_id in self._pending:
            raise ValueError(f"{self.root}: features for narration {narration_id!r} were already added")
        tensor = torch.as_tensor(features)
        if tensor.ndim != 2:
            raise ValueError(f"narration {narration_id!r}: features must be (tokens, dim), got shape {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"narration {narration_id!r}: features contain NaN or inf")
        if self._shape is None:
            self._shape = list(tensor.shape)
        elif list(tensor.shape) != self._shape:
            raise ValueError(
                f"narration {narration_id!r}: shape {tuple(tensor.shape)} differs from the folder's {tuple(self._shape)}"
            )
        self._pending[narration_id] = tensor.detach().to("cpu", self._dtype).contiguous()
        if len(self._pending) >= self._shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        name = f"features-{len(self._shards):05d}.safetensors"
        save_file(self._pending, str(self.root / name), metadata={"format": FEATURES_FORMAT})
        self._shards[name] = len(self._pending)
        self._where.update(dict.fromkeys(self._pending, name))
        self._pending = {}

    def close(self) -> Path:
        """Write the last shard and ``index.json``; returns the index path."""
        if self._closed:
            return self.root / FEATURES_INDEX
        self._flush()
        if not self._where:
            raise ValueError(f"{self.root}: no features were added")
        index = {
            **self._meta,
            "shape": self._shape,
            "num_items": len(self._where),
            "shards": self._shards,
            "narration_ids": self._where,
        }
        tmp = self.root / (FEATURES_INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
        os.replace(tmp, self.root / FEATURES_INDEX)
        self._closed = True
        return self.root / FEATURES_INDEX

    def __enter__(self) -> EK100FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def _check_shards(index_path: Path, shards: Any, where: Any) -> None:
    """Every shard the index names is a relative ``.safetensors`` path without ``..`` that resolves inside the
    feature folder, and every narration points at a listed shard: an edited index must not read files elsewhere."""
    if not isinstance(shards, dict) or not isinstance(where, dict):
        raise ValueError(f"{index_path}: 'shards' and 'narration_ids' must be objects")
    root = index_path.parent.resolve()
    for name in shards:
        relative = isinstance(name, str) and not Path(name).is_absolute() and ".." not in Path(name).parts
        if not relative or not name.endswith(".safetensors") or not (root / name).resolve().is_relative_to(root):
            raise ValueError(f"{index_path}: shard {name!r} is not a .safetensors file inside {root}; shards must be "
                             "relative paths in the feature folder, without '..'")
    for narration_id, name in where.items():
        if name not in shards:
            raise ValueError(f"{index_path}: narration {narration_id!r} points at shard {name!r}, which is not listed "
                             f"in 'shards' {sorted(shards)[:3]}")


class EK100FeatureReader(Mapping):
    """Read a feature folder: ``reader[narration_id]`` -> tensor (F, D) in the stored dtype.

    Shards are memory-mapped on first use; the reader pickles without its open handles, so it can live in a
    dataset transform used by DataLoader workers.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        index_path = self.root / FEATURES_INDEX
        if not index_path.is_file():
            raise FileNotFoundError(
                f"{index_path} not found: a feature folder needs an {FEATURES_INDEX} next to its safetensors shards "
                "(written by EK100FeatureWriter / examples/extract_features.py)"
            )
        try:
            meta = json.loads(index_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{index_path}: not valid JSON ({e})") from None
        if meta.get("format") != FEATURES_FORMAT:
            raise ValueError(f"{index_path}: 'format' is {meta.get('format')!r}, expected {FEATURES_FORMAT!r}")
        if meta.get("format_version", 0) > _FORMAT_VERSION:
            raise ValueError(
                f"{index_path}: format_version {meta['format_version']} is newer than this reader "
                f"({_FORMAT_VERSION}); upgrade modeling_mambavl"
            )
        for key in ("shape", "dtype", "token_order", "has_cls", "backbone", "narration_ids", "shards"):
            if key not in meta:
                raise ValueError(f"{index_path}: missing key {key!r}")
        if meta["dtype"] not in _DTYPES:
            raise ValueError(f"{index_path}: dtype {meta['dtype']!r} is not one of {sorted(_DTYPES)}")
        _check_shards(index_path, meta["shards"], meta["narration_ids"])
        self.metadata: dict[str, Any] = meta
        self._where: dict[str, str] = meta["narration_ids"]
        self._handles: dict[str, Any] = {}

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.metadata["shape"])

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.metadata["dtype"]]

    @property
    def has_cls(self) -> bool:
        return bool(self.metadata["has_cls"])

    @property
    def token_order(self) -> str:
        return self.metadata["token_order"]

    @property
    def backbone(self) -> str:
        return self.metadata["backbone"]

    @property
    def task(self) -> str | None:
        return self.metadata.get("task")

    # ------------------------------------------------------------------ Mapping
    def __getitem__(self, narration_id: str) -> torch.Tensor:
        try:
            shard = self._where[narration_id]
        except KeyError:
            raise KeyError(
                f"narration {narration_id!r} has no features in {self.root / FEATURES_INDEX} "
                f"({len(self._where)} narrations indexed)"
            ) from None
        handle = self._handles.get(shard)
        if handle is None:
            path = self.root / shard
            if not path.is_file():
                raise FileNotFoundError(f"{path} (shard of narration {narration_id!r}) is missing")
            handle = self._handles[shard] = safe_open(str(path), framework="pt")
        try:
            tensor = handle.get_tensor(narration_id)
        except Exception as e:  # a shard that does not hold what the index says
            raise KeyError(f"{self.root / shard}: no tensor for narration {narration_id!r} ({e})") from None
        if list(tensor.shape) != list(self.metadata["shape"]) or not torch.isfinite(tensor).all():
            # The writer refuses both; a shard changed since then must not feed NaN or a wrong shape to a model.
            what = "NaN or inf values" if list(tensor.shape) == list(self.metadata["shape"]) else \
                f"shape {tuple(tensor.shape)}, the index says {tuple(self.metadata['shape'])}"
            raise ValueError(f"{self.root / shard}: the features of narration {narration_id!r} have {what}; "
                             "extract them again (examples/extract_features.py)")
        return tensor

    def __contains__(self, narration_id: object) -> bool:
        return narration_id in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __getstate__(self) -> dict:
        return {"root": self.root, "metadata": self.metadata, "_where": self._where, "_handles": {}}

    def __repr__(self) -> str:
        return f"EK100FeatureReader({str(self.root)!r}, {len(self)} narrations, shape={self.shape}, backbone={self.backbone!r})"
