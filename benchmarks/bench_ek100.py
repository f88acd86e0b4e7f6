"""EK100 tooling costs, and whether the synthetic data set is learnable by a small model on a CPU.

    python benchmarks/bench_ek100.py [--probe] [--annotations ../shared/data/ek100-annotations]
        -> benchmarks/results/ek100.json

Measures: generating the default synthetic data set; parsing the real validation CSV (when present); EK100Metric on
9,668 rows (recognition and anticipation); writing a 13,092-row anticipation submission. ``--probe`` also trains a
small CNN (a per-frame conv stack; the verb head sees a coarse 4x4 grid of every frame, the noun head max-pools over
space and averages over frames) on the synthetic train split for a fixed number of epochs, 8 frames at 112 px, and
reports validation top-1: evidence that verbs and nouns are visually unambiguous, not a result of MambaVL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def bench_generation(root: Path) -> dict:
    from modeling_mambavl.ek100 import make_synthetic_ek100

    data, seconds = _timed(lambda: make_synthetic_ek100(root))
    jpegs = sum(1 for _ in (root / "rgb_frames").rglob("*.jpg"))
    mp4_bytes = sum(p.stat().st_size for p in (root / "videos").rglob("*.MP4"))
    return {
        "seconds": round(seconds, 1),
        "rows": data.num_rows,
        "jpeg_frames": jpegs,
        "mp4_megabytes": round(mp4_bytes / 2**20, 1),
        "reuse_seconds": round(_timed(lambda: make_synthetic_ek100(root))[1], 4),
    }


def bench_annotations(annotations: Path) -> dict | None:
    from modeling_mambavl.ek100 import load_ek100

    if not (annotations / "EPIC_100_validation.csv").is_file():
        return None
    ds, seconds = _timed(lambda: load_ek100(annotations, "validation", task="anticipation"))
    return {"rows": ds.num_rows, "seconds": round(seconds, 2), "summary": json.loads(ds.info.description)}


def bench_metric_and_submission(tmp: Path) -> dict:
    from modeling_mambavl.ek100 import EK100Metric, write_submission

    rng = np.random.default_rng(0)
    n = 9668
    verb_labels, noun_labels = rng.integers(0, 97, n), rng.integers(0, 300, n)
    verb_logits = rng.normal(size=(n, 97)).astype(np.float32)
    noun_logits = rng.normal(size=(n, 300)).astype(np.float32)
    verb_logits[np.arange(n), verb_labels] += 2
    noun_logits[np.arange(n), noun_labels] += 2
    ids = [f"P{1 + i % 30:02d}_01_{i}" for i in range(n)]
    out = {}
    for task in ("recognition", "anticipation"):
        metric = EK100Metric(task, keep_in_memory=True)
        _, seconds = _timed(lambda m=metric: m.compute(verb_logits=verb_logits, noun_logits=noun_logits,
                                                         verb_labels=verb_labels, noun_labels=noun_labels,
                                                         narration_ids=ids))
        out[f"metric_{task}_9668_seconds"] = round(seconds, 2)
    m = 13092
    verbs = rng.normal(size=(m, 97)).astype(np.float32)
    nouns = rng.normal(size=(m, 300)).astype(np.float32)
    path, seconds = _timed(lambda: write_submission(tmp / "test.zip", [f"x_{i}" for i in range(m)], verbs, nouns,
                                                    "anticipation", 2, 3, 3))
    out["submission_anticipation_13092_seconds"] = round(seconds, 1)
    out["submission_zip_megabytes"] = round(path.stat().st_size / 2**20, 1)
    return out


def probe(root: Path, epochs: int = 16) -> dict:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from modeling_mambavl.ek100 import load_ek100, set_ek100_epoch

    torch.manual_seed(0)
    annotations = root / "annotations"

    def decode(split, training, epoch=0):
        ds = load_ek100(annotations, split, root, media="frames", num_frames=8, training=training, seed=0)
        set_ek100_epoch(ds, epoch)
        batch = ds[:]
        x = torch.from_numpy(np.stack(batch["video"])).permute(0, 1, 4, 2, 3).float() / 255
        return x, torch.tensor(batch["verb_class"]), torch.tensor(batch["noun_class"])

    (train_sets, decode_seconds) = _timed(lambda: [decode("train", True, e) for e in range(2)])
    x_val, verb_val, noun_val = decode("validation", False)
    verbs = sorted(set(train_sets[0][1].tolist()))
    nouns = sorted(set(train_sets[0][2].tolist()))
    to_verb = {v: i for i, v in enumerate(verbs)}
    to_noun = {n: i for i, n in enumerate(nouns)}

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(3, 32, 5, 2, 2), nn.ReLU(), nn.Conv2d(32, 48, 3, 2, 1), nn.ReLU(),
                nn.Conv2d(48, 64, 3, 2, 1), nn.ReLU(), nn.Conv2d(64, 64, 3, 1, 1), nn.ReLU(),
            )
            self.grid = nn.AdaptiveAvgPool2d(4)
            self.verb = nn.Sequential(nn.Linear(8 * 64 * 16, 256), nn.ReLU(), nn.Linear(256, len(verbs)))
            self.noun = nn.Linear(64, len(nouns))

        def forward(self, x):
            b = x.shape[0]
            f = self.conv(x.flatten(0, 1))
            return self.verb(self.grid(f).reshape(b, -1)), self.noun(f.amax(dim=(2, 3)).reshape(b, 8, -1).mean(1))

    model = Probe()
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    start = time.perf_counter()
    for epoch in range(epochs):
        x, v, n = train_sets[epoch % 2]
        v = torch.tensor([to_verb[a] for a in v.tolist()])
        n = torch.tensor([to_noun[a] for a in n.tolist()])
        model.train()
        for idx in torch.randperm(len(x)).split(32):
            verb_logits, noun_logits = model(x[idx])
            loss = F.cross_entropy(verb_logits, v[idx]) + F.cross_entropy(noun_logits, n[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        verb_logits, noun_logits = model(x_val)
    verb_acc = (verb_logits.argmax(1) == torch.tensor([to_verb[a] for a in verb_val.tolist()])).float().mean()
    noun_acc = (noun_logits.argmax(1) == torch.tensor([to_noun[a] for a in noun_val.tolist()])).float().mean()
    return {
        "epochs": epochs,
        "train_clips": len(train_sets[0][0]),
        "validation_clips": len(x_val),
        "decode_seconds": round(decode_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "validation_verb_top1": round(100 * float(verb_acc), 1),
        "validation_noun_top1": round(100 * float(noun_acc), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    parser.add_argument("--annotations", type=Path, default=here.parents[1] / "shared" / "data" / "ek100-annotations")
    parser.add_argument("--probe", action="store_true", help="also train the small CNN probe (minutes)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--output", type=Path, default=here / "results" / "ek100.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results["synthetic_generation"] = bench_generation(tmp / "synthetic")
        results["annotations_validation"] = bench_annotations(args.annotations)
        results.update(bench_metric_and_submission(tmp))
        if args.probe:
            results["probe"] = probe(tmp / "synthetic", args.epochs)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
