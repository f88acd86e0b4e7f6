#!/usr/bin/env python
"""Feature-folder storage and read speed at the paper's token counts.

For each backbone shape (ORViT-Motionformer ViT-B: 1 + 8 x 14 x 14 = 1,569 tokens x 768; LaViLa/AVION ViT-B/16 over
16 frames: 1 + 16 x 14 x 14 = 3,137 x 768; ViT-L/14: 1 + 16 x 16 x 16 = 4,097 x 1,024), writes ``--clips`` random clips
with ``EK100FeatureWriter`` (fp16 safetensors) and reports the bytes per clip on disk, the projected size of the EK100
train (67,217) and validation (9,668) splits, and how fast ``EK100FeatureReader`` serves random clips from a warm page
cache (the best case of a training epoch; a cold read is bounded by the disk).

    python benchmarks/bench_features.py [--clips 64] [--output benchmarks/results/features.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from modeling_mambavl.ek100 import EK100FeatureReader, EK100FeatureWriter

SHAPES = {
    "orvit-motionformer-vitb (1569 x 768)": (1569, 768),
    "avion-vitb16, 16 frames (3137 x 768)": (3137, 768),
    "avion-vitl14, 16 frames (4097 x 1024)": (4097, 1024),
}
SPLITS = {"train": 67_217, "validation": 9_668}


def measure(tokens: int, dim: int, clips: int, root: Path) -> dict:
    folder = root / f"{tokens}x{dim}"
    g = torch.Generator().manual_seed(0)
    with EK100FeatureWriter(folder, backbone="bench", has_cls=True, shard_size=16) as writer:
        for i in range(clips):
            writer.add(f"clip_{i}", torch.randn(tokens, dim, generator=g))
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    reader = EK100FeatureReader(folder)
    order = [f"clip_{i}" for i in range(clips)]
    for name in order:  # warm the page cache
        reader[name].float()
    random.Random(0).shuffle(order)
    start = time.perf_counter()
    for name in order:
        reader[name].float()  # what the dataset transform does
    elapsed = time.perf_counter() - start
    per_clip = size / clips
    return {
        "tokens": tokens,
        "dim": dim,
        "bytes_per_clip": per_clip,
        "mb_per_clip": per_clip / 1e6,
        "raw_fp16_bytes": tokens * dim * 2,
        "projected_gb": {split: n * per_clip / 1e9 for split, n in SPLITS.items()},
        "warm_read_clips_per_s": clips / elapsed,
        "warm_read_mb_per_s": size / elapsed / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "clips": args.clips, "shapes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (tokens, dim) in SHAPES.items():
            row = measure(tokens, dim, args.clips, Path(tmp))
            results["shapes"][name] = row
            print(f"{name:40s} {row['mb_per_clip']:6.2f} MB/clip  train {row['projected_gb']['train']:6.1f} GB  "
                  f"val {row['projected_gb']['validation']:5.1f} GB  warm read {row['warm_read_clips_per_s']:7.1f} "
                  f"clips/s ({row['warm_read_mb_per_s']:.0f} MB/s)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
