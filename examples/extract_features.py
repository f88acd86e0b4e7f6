#!/usr/bin/env python
"""Extract video-backbone tokens for EPIC-KITCHENS-100 segments into a feature folder (fp16 safetensors shards keyed
by ``narration_id`` + ``index.json``; ``load_ek100(..., media="features")`` reads it).

The backbone is a transformers video model (a Hub id or a local folder) or your own callable for models that are
not in transformers (ORViT-Motionformer, LaViLa / AVION), given as ``module:function``::

    # a factory called once as function(**json.loads(--backbone_kwargs)); returns the backbone
    def build(checkpoint: str) -> torch.nn.Module: ...
    # backbone(pixel_values (B, T, C, H, W) float) -> tokens (B, F, D) in the canonical order: [CLS] then (t, h, w)
    # optional attributes on the returned object: has_cls (bool, default False), name, num_frames, image_size,
    # image_mean, image_std

transformers backbones go through MambaVL's own vision adapter, so the tokens are stored in the order the model reads
them ([CLS] then frame-major, whatever the backbone's own order; TimeSformer's patch-major tokens are re-ordered).

Frames are sampled and normalised exactly as in training (``load_ek100`` + ``MambaVLVideoProcessor``): the evaluation
view by default (``segment`` sampling, or ``dense`` with ``--sampling dense --stride 4``; end-anchored for
``--task anticipation``), or with ``--training`` the random training sampling and augmentation, ``--views K`` times
(view k uses epoch k of the per-clip generators), each view in its own folder ``<output_dir>/view-XX``.

Distributed with Accelerate (``accelerate launch examples/extract_features.py ...``): every process extracts its
share of the remaining rows into its own shard folder, and the main process writes ``index.json`` at the end.
Resumable: a killed run leaves complete shards behind; running the same command again skips the narration ids they
hold (a shard cut short by the kill is deleted and its rows are extracted again). A folder with an ``index.json`` is
complete and is left alone unless ``--overwrite``. (For tests, ``MAMBAVL_FAULT=after_step:N`` SIGKILLs a process
after its N-th batch; see ``modeling_mambavl.training.faults``.)

Example::

    accelerate launch examples/extract_features.py --annotations_dir epic-kitchens-100-annotations \\
        --split train validation --media_root /data/EK100 --media frames --backbone MCG-NJU/videomae-base \\
        --output_dir features/videomae-base --batch_size 16 --num_workers 8
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling_mambavl.lazy_imports import require_modules

# an inference install (no extras): one line naming the extra, not a traceback
require_modules("extract_features.py", "datasets")

from modeling_mambavl.ek100 import EK100FeatureWriter, load_ek100, set_ek100_epoch
from modeling_mambavl.ek100.features import FEATURES_FORMAT, FEATURES_INDEX
from modeling_mambavl.training.arguments import HelpFormatter, finish_parser
from modeling_mambavl.training.faults import kill_point

SHARDS_DIR = "shards"
# The version of the index written here; the same as EK100FeatureWriter's (a test compares the two).
_INDEX_FORMAT_VERSION = 1
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_IMAGENET_MEAN, _IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------------------------------------------------
# Backbones


class _TransformersBackbone(torch.nn.Module):
    """A transformers video model behind MambaVL's vision adapter: pixel_values -> canonical tokens (B, F, D)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        from transformers import AutoModel

        from modeling_mambavl import MambaVLConfig
        from modeling_mambavl.modeling import backbone_frame_settings
        from modeling_mambavl.vision import MambaVLVisionAdapter

        backbone = AutoModel.from_pretrained(source)
        width = backbone.config.hidden_size
        frames = getattr(backbone.config, "num_frames", None)
        # The linear-probe config has no adapter weights: the adapter only re-orders the backbone's tokens.
        config = MambaVLConfig(vision_config=backbone.config, fusion_type="linear_probe", hidden_size=width,
                               **({"num_frames": frames} if isinstance(frames, int) else {}))
        self.adapter = MambaVLVisionAdapter(config)
        self.adapter.backbone = backbone
        self.has_cls = config.video_layout[0]
        self.name = str(source)
        self.num_frames = config.num_frames
        settings = backbone_frame_settings(source)
        self.image_size = settings.get("image_size") or getattr(backbone.config, "image_size", None)
        self.image_mean = settings.get("image_mean")
        self.image_std = settings.get("image_std")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.adapter.tokens(pixel_values=pixel_values)
        return tokens


def build_backbone(spec: str, kwargs: dict[str, Any] | None = None) -> Any:
    """``module:function`` (a factory, called with ``kwargs``) or a transformers model id / folder."""
    module_name, sep, function = spec.partition(":")
    if sep and function and not Path(spec).exists():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"--backbone {spec!r}: cannot import module {module_name!r} ({e}); put it on PYTHONPATH") from e
        factory = getattr(module, function, None)
        if not callable(factory):
            raise ValueError(f"--backbone {spec!r}: module {module_name!r} has no callable {function!r}")
        backbone = factory(**(kwargs or {}))
        if not callable(backbone):
            raise ValueError(f"--backbone {spec!r}: {function}() returned {type(backbone).__name__}, not a callable")
        if not hasattr(backbone, "name"):
            try:
                backbone.name = spec
            except AttributeError:
                pass
        return backbone
    if kwargs:
        raise ValueError("--backbone_kwargs is only for module:function backbones")
    return _TransformersBackbone(spec)


def _tokens(backbone: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    out = backbone(pixel_values)
    out = getattr(out, "last_hidden_state", out)
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or out.shape[0] != pixel_values.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the backbone returned {shape} for pixel_values {tuple(pixel_values.shape)}; expected tokens "
                         f"(batch={pixel_values.shape[0]}, F, D)")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Shards on disk (resuming and merging)


def shard_narration_ids(path: Path) -> list[str] | None:
    """The narration ids a safetensors shard holds, or ``None`` when the file is incomplete (cut short by a kill)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                return None
            header = json.loads(f.read(header_len))
    except (OSError, ValueError):
        return None
    header.pop("__metadata__", None)
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    return list(header) if size == 8 + header_len + end else None


def _shard_files(root: Path) -> list[Path]:
    return sorted((root / SHARDS_DIR).glob("*/features-*.safetensors"))


def scan_shards(root: Path, remove_incomplete: bool = False) -> dict[str, Path]:
    """narration id -> the (first) complete shard holding it, over every shard folder of ``root``."""
    where: dict[str, Path] = {}
    for path in _shard_files(root):
        ids = shard_narration_ids(path)
        if ids is None:
            if remove_incomplete:
                path.unlink()
            continue
        for narration_id in ids:
            where.setdefault(narration_id, path)
    return where


def write_index(root: Path, metadata: dict[str, Any], narration_ids: list[str]) -> Path:
    """Check that every narration id has features and write ``root/index.json`` (what EK100FeatureWriter writes)."""
    where = scan_shards(root)
    missing = [n for n in narration_ids if n not in where]
    if missing:
        raise RuntimeError(f"{root}: {len(missing)} narration(s) have no features (e.g. {missing[:3]}); a process "
                           "failed: run the same command again to extract them")
    shapes = set()
    from safetensors import safe_open

    used = {where[n] for n in narration_ids}
    for path in sorted(used):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                shapes.add(tuple(f.get_slice(key).get_shape()))
    if len(shapes) != 1:
        raise RuntimeError(f"{root}: the shards hold features of different shapes {sorted(shapes)}")
    relative = {n: where[n].relative_to(root).as_posix() for n in narration_ids}
    counts: dict[str, int] = {}
    for name in relative.values():
        counts[name] = counts.get(name, 0) + 1
    index = {
        "format": FEATURES_FORMAT,
        "format_version": _INDEX_FORMAT_VERSION,
        **metadata,
        "shape": list(shapes.pop()),
        "num_items": len(relative),
        "shards": dict(sorted(counts.items())),
        "narration_ids": relative,
    }
    tmp = root / (FEATURES_INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    os.replace(tmp, root / FEATURES_INDEX)
    return root / FEATURES_INDEX


# ---------------------------------------------------------------------------------------------------------------------
# Extraction


def _collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "narration_id": [e["narration_id"] for e in examples],
        "pixel_values": torch.stack([torch.as_tensor(e["pixel_values"]) for e in examples]),
    }


def _extract_view(args, accelerator, backbone, datasets: dict, root: Path, metadata: dict[str, Any], view: int) -> None:
    """Extract one view of every split in ``datasets`` ({split: dataset with media}) into ``root``."""
    from tqdm.auto import tqdm

    rows = _rows(args)  # [(split, index in the split, narration id)], in the order of --split
    narration_ids = [n for _, _, n in rows]
    if (root / FEATURES_INDEX).exists():
        if not args.overwrite:
            accelerator.print(f"{root / FEATURES_INDEX} exists: the folder is complete (pass --overwrite to redo it)")
            return
        if accelerator.is_main_process:
            (root / FEATURES_INDEX).unlink()
            shutil.rmtree(root / SHARDS_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        scan_shards(root, remove_incomplete=True)  # a shard cut short by a kill: its rows are extracted again
    accelerator.wait_for_everyone()
    done = scan_shards(root)
    accelerator.wait_for_everyone()  # every process has read the same state before anyone writes
    remaining = [row for row in rows if row[2] not in done]
    mine = remaining[accelerator.process_index :: accelerator.num_processes]
    accelerator.print(f"{root}: {len(rows) - len(remaining)} of {len(rows)} narrations already extracted; "
                      f"{len(remaining)} to go on {accelerator.num_processes} process(es)")
    if mine:
        folder = root / SHARDS_DIR / f"rank{accelerator.process_index:05d}-{uuid.uuid4().hex[:8]}"
        writer = EK100FeatureWriter(folder, shard_size=args.shard_size, **metadata)
        bar = tqdm(total=len(mine), desc=f"view {view}" if args.views > 1 else "extract", unit="clip",
                   disable=not accelerator.is_local_main_process)
        step = 0
        with torch.inference_mode():
            for split, dataset in datasets.items():
                indices = [i for s, i, _ in mine if s == split]
                if not indices:
                    continue
                set_ek100_epoch(dataset, view)
                loader = torch.utils.data.DataLoader(dataset.select(indices), batch_size=args.batch_size,
                                                     num_workers=args.num_workers, collate_fn=_collate)
                for batch in loader:
                    pixel_values = batch["pixel_values"].to(accelerator.device)
                    with accelerator.autocast():
                        tokens = _tokens(backbone, pixel_values)
                    for narration_id, features in zip(batch["narration_id"], tokens):
                        writer.add(narration_id, features)
                    bar.update(len(batch["narration_id"]))
                    step += 1
                    kill_point("after_step", step=step)
        writer.close()
        bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        path = write_index(root, metadata, narration_ids)
        accelerator.print(f"wrote {path} ({len(narration_ids)} narrations)")
    accelerator.wait_for_everyone()


def _rows(args) -> list[tuple[str, int, str]]:
    """(split, row index, narration id) of every row to extract (the first ``--limit`` of each split)."""
    rows = []
    for split in dict.fromkeys(args.split):
        ids = list(load_ek100(args.annotations_dir, split, task=args.task, anticipation_time=args.anticipation_time,
                              observation_time=args.observation_time)["narration_id"])
        rows += [(split, i, n) for i, n in enumerate(ids[: args.limit] if args.limit else ids)]
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Extract EK100 backbone features (see the module docstring).",
                                formatter_class=HelpFormatter)
    p.add_argument("--annotations_dir", required=True, help="epic-kitchens-100-annotations folder")
    p.add_argument("--split", required=True, nargs="+", choices=("train", "validation", "test"),
                   help="one or more splits, extracted into the same folder (train_ek100.py --media features reads "
                        "its training and evaluation rows from one folder)")
    p.add_argument("--media_root", required=True, help="the folder holding rgb_frames/ or videos/")
    p.add_argument("--media", default="frames", choices=("frames", "video"),
                   help="what --media_root holds: JPEG frame folders or MP4 videos")
    p.add_argument("--backbone", required=True, help="a transformers model id / folder, or module:function")
    p.add_argument("--backbone_kwargs", default=None, help="JSON keyword arguments of a module:function factory")
    p.add_argument("--output_dir", required=True, help="feature folder to write (index.json + safetensors shards)")
    p.add_argument("--task", default="recognition", choices=("recognition", "anticipation"),
                   help="which window of each segment: the segment itself, or the video before it")
    p.add_argument("--anticipation_time", type=float, default=1.0,
                   help="anticipation: seconds between the end of the observed window and the action")
    p.add_argument("--observation_time", type=float, default=2.133, help="anticipation: seconds of video observed")
    p.add_argument("--num_frames", type=int, default=None, help="default: the backbone's, else 16")
    p.add_argument("--sampling", default=None, choices=("segment", "dense"),
                   help="default: segment for recognition, dense for anticipation")
    p.add_argument("--stride", type=int, default=4, help="dense sampling: every stride-th frame at target_fps")
    p.add_argument("--target_fps", type=float, default=30.0,
                   help="dense sampling: the frame rate strides are counted at, whatever the source's")
    p.add_argument("--image_size", type=int, default=None, help="default: the backbone's processor / config, else 224")
    p.add_argument("--image_mean", type=float, nargs=3, default=None,
                   help="per-channel normalisation mean (default: the backbone's processor)")
    p.add_argument("--image_std", type=float, nargs=3, default=None,
                   help="per-channel normalisation std (default: the backbone's processor)")
    p.add_argument("--training", action="store_true",
                   help="random training sampling and augmentation (RandomResizedCrop, flip, --rand_augment)")
    p.add_argument("--rand_augment", default=None, help="with --training, e.g. rand-m7-n4")
    p.add_argument("--crop_scale", type=float, nargs=2, default=None,
                   help="with --training: RandomResizedCrop area range (default 0.5 1.0)")
    p.add_argument("--flip_prob", type=float, default=None, help="with --training: horizontal flip probability (0.5)")
    p.add_argument("--augment_per_frame", action="store_true",
                   help="with --training: draw crop / flip / RandAugment per frame (the authors' ORViT pipeline)")
    p.add_argument("--views", type=int, default=1, help="with --training: views per clip, one folder each")
    p.add_argument("--seed", type=int, default=0, help="seed of the training sampling and augmentation")
    p.add_argument("--batch_size", type=int, default=8, help="clips per backbone forward")
    p.add_argument("--num_workers", type=int, default=0, help="data-loader worker processes")
    p.add_argument("--dtype", default="float16", choices=sorted(_DTYPES), help="dtype the features are stored in")
    p.add_argument("--shard_size", type=int, default=256, help="clips per shard (a kill loses at most one per process)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of each split (smoke tests)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing feature folder")
    finish_parser(p)  # HF-standard aliases, --debug; refuses an option without help
    args = p.parse_args(argv)
    if args.views < 1:
        p.error(f"--views {args.views}: expected >= 1")
    if args.views > 1 and not args.training:
        p.error("--views > 1 needs --training (evaluation views are all the same)")
    if not args.training and (args.rand_augment or args.augment_per_frame or args.crop_scale or args.flip_prob is not None):
        p.error("--rand_augment / --crop_scale / --flip_prob / --augment_per_frame apply only with --training")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from accelerate import Accelerator

    from modeling_mambavl import MambaVLVideoProcessor

    accelerator = Accelerator()
    kwargs = json.loads(args.backbone_kwargs) if args.backbone_kwargs else None
    backbone = build_backbone(args.backbone, kwargs)
    if isinstance(backbone, torch.nn.Module):
        backbone = backbone.to(accelerator.device).eval()
    num_frames = args.num_frames or getattr(backbone, "num_frames", None) or 16
    image_size = args.image_size or getattr(backbone, "image_size", None) or 224
    image_mean = args.image_mean or getattr(backbone, "image_mean", None) or _IMAGENET_MEAN
    image_std = args.image_std or getattr(backbone, "image_std", None) or _IMAGENET_STD
    sampling = args.sampling or ("dense" if args.task == "anticipation" else "segment")
    processor = MambaVLVideoProcessor(
        num_frames=num_frames, size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(image_mean), image_std=list(image_std), rand_augment=args.rand_augment,
        augment_per_frame=args.augment_per_frame,
        **({"crop_scale": tuple(args.crop_scale)} if args.crop_scale else {}),
        **({"flip_prob": args.flip_prob} if args.flip_prob is not None else {}),
    )
    datasets = {
        split: load_ek100(
            args.annotations_dir, split, args.media_root, media=args.media, task=args.task,
            anticipation_time=args.anticipation_time, observation_time=args.observation_time, processor=processor,
            num_frames=num_frames, sampling=sampling, stride=args.stride, target_fps=args.target_fps,
            training=args.training, seed=args.seed,
        )
        for split in dict.fromkeys(args.split)
    }
    base = Path(args.output_dir)
    for view in range(args.views):
        metadata = {
            "backbone": str(getattr(backbone, "name", args.backbone)),
            "has_cls": bool(getattr(backbone, "has_cls", False)),
            "token_order": "frame-major",
            "task": args.task,
            "dtype": args.dtype,
            "sampling": {
                "splits": list(dict.fromkeys(args.split)), "media": args.media, "num_frames": num_frames,
                "sampling": sampling,
                "stride": args.stride, "target_fps": args.target_fps,
                "anchor": "end" if args.task == "anticipation" else "center", "training": args.training,
                "seed": args.seed, "view": view, "num_views": args.views,
                **({"anticipation_time": args.anticipation_time, "observation_time": args.observation_time}
                   if args.task == "anticipation" else {}),
            },
            "processor": {
                "image_size": image_size, "image_mean": list(image_mean), "image_std": list(image_std),
                "resize": "shortest_edge", "crop": "center" if not args.training else "random_resized",
                **({"crop_scale": list(processor.crop_scale), "crop_ratio": list(processor.crop_ratio),
                    "flip_prob": processor.flip_prob, "rand_augment": args.rand_augment,
                    "augment_per_frame": args.augment_per_frame} if args.training else {}),
            },
        }
        root = base / f"view-{view:02d}" if args.views > 1 else base
        _extract_view(args, accelerator, backbone, datasets, root, metadata, view)
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "extract_features.py"))
