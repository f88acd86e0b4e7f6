"""EK100 tooling costs, and whether the synthetic data set is learnable by a small model on a CPU.

    python benchmarks/bench_ek100.py [--probe] [--annotations ../shared/data/ek100-annotations]
        [--official DIR] [--only metric ...] -> benchmarks/results/ek100.json

Measures: generating the default synthetic data set; parsing the real validation CSV (when present); EK100Metric on
its 9,668 rows (recognition and anticipation, both tie rules, real labels and participants, simulated bf16 logits),
timed interleaved with the official evaluation code when ``--official`` names a folder holding checkouts of
epic-kitchens/C1-Action-Recognition and epic-kitchens/C3-Action-Anticipation (the results are then compared key by
key), and what the default tie rule changes against the official order; writing a 13,092-row anticipation
submission. ``--probe`` also trains a
small CNN (a per-frame conv stack; the verb head sees a coarse 4x4 grid of every frame, the noun head max-pools over
space and averages over frames) on the synthetic train split for a fixed number of epochs, 8 frames at 112 px, and
reports validation top-1: evidence that verbs and nouns are visually unambiguous, not a result of MambaVL.
"""

from __future__ import annotations

import argparse
import gc
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


# Simulated classifiers, by how much they favour frequent classes (the weight of log class frequency in their
# logits) with the label's boost (verb, noun) that gives them about 60 % verb and 45-50 % noun top-1.
SIMULATED_MODELS = {"no_frequency_preference": (0.0, 2.8, 3.0), "moderate": (0.5, 2.0, 2.4), "strong": (1.0, 2.2, 2.6)}


def simulated_logits(verb_labels: np.ndarray, noun_labels: np.ndarray, seed: int = 0,
                     model: str = "moderate") -> tuple[np.ndarray, np.ndarray]:
    """(N, 97) / (N, 300) logits of a simulated classifier, rounded to bfloat16 as a bf16 model's outputs are.

    Each logit is ``2 * (boost * [class is the label] + preference * log(1 + class frequency) + N(0, 1))``, with the
    frequencies of the labels themselves (``SIMULATED_MODELS`` gives preference and boosts). The largest logits are
    about 6 (no preference) to 18 (strong), where bf16 keeps steps of 1/32 to 1/8: near-equal scores become equal.
    """
    import torch

    preference, verb_boost, noun_boost = SIMULATED_MODELS[model]
    rng = np.random.default_rng(seed)
    out = []
    for labels, size, boost in ((verb_labels, 97, verb_boost), (noun_labels, 300, noun_boost)):
        logits = rng.normal(size=(len(labels), size)) + preference * np.log(np.bincount(labels, minlength=size) + 1.0)
        logits[np.arange(len(labels)), labels] += boost
        out.append(torch.from_numpy(2.0 * logits).to(torch.bfloat16).float().numpy())
    return out[0], out[1]


def _official_modules(official: Path) -> tuple:
    """The official evaluation code from checkouts of epic-kitchens/C1-Action-Recognition and
    C3-Action-Anticipation under ``official`` (not shipped; cloned by whoever runs the comparison)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(official / "C1-Action-Recognition"))
    from utils import metrics as c1_metrics  # noqa: E402  (the C1 checkout's package)
    from utils import scoring as c1_scoring

    spec = importlib.util.spec_from_file_location(
        "c3_evaluate", official / "C3-Action-Anticipation" / "evaluate_anticipation_json_ek100.py"
    )
    c3 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(c3)
    return c1_scoring, c1_metrics, c3


def _official_results(modules: tuple, task: str, verb_logits, noun_logits, truth, vocab) -> dict:
    """The official numbers, as their scripts compute them from score arrays (C1 ``evaluate.py`` for recognition,
    C3 ``evaluate_anticipation_json_ek100.py`` for anticipation), with our key names; percentages."""
    c1_scoring, c1_metrics, c3 = modules
    scoring = c1_scoring if task == "recognition" else c3
    (verbs, nouns), scores = scoring.compute_action_scores(verb_logits, noun_logits, top_n=100)
    actions = [{int(v) * 1000 + int(n): s for v, n, s in zip(*row)} for row in zip(verbs, nouns, scores)]
    scores = {"verb": verb_logits, "noun": noun_logits, "action": actions}
    tail_verbs, tail_nouns = sorted(vocab.tail_verbs), sorted(vocab.tail_nouns)
    unseen = sorted(vocab.unseen_participants["validation"])
    if task == "recognition":
        table = c1_metrics.compute_metrics(truth, scores, tail_verbs, tail_nouns, unseen)
        return {f"{subset}_{name}_top{k}": float(value * 100)
                for subset, tasks in table.items() for name, values in tasks.items()
                for k, value in zip((1, 5), values)}
    table = c3.compute_anticipation_metrics(truth, scores, tail_verbs, tail_nouns, unseen)
    names = {"overall": "all", "tail": "tail", "unseen": "unseen"}
    return {f"{names[subset]}_{name}_mt5r": value * 100 for subset, tasks in table.items() for name, value in tasks.items()}


def bench_metric(annotations: Path, official: Path | None, tmp: Path, repeats: int = 5) -> dict:
    """EK100Metric on the real validation labels and participants with simulated bf16 logits: its time (both tasks,
    both tie rules) interleaved with the official code's when a checkout is given, whether every official key is
    equal to the last digit under ``ties="official"``, and what the default tie rule changes."""
    from modeling_mambavl.ek100 import EK100Metric, EK100Vocabulary, load_ek100
    from modeling_mambavl.ek100.metric import compute_ek100_metrics

    if not (annotations / "EPIC_100_validation.csv").is_file():
        return {"skipped": f"no {annotations / 'EPIC_100_validation.csv'}"}
    rows = load_ek100(annotations, "validation")
    verb_labels, noun_labels = np.array(rows["verb_class"]), np.array(rows["noun_class"])
    narration_ids, participants = list(rows["narration_id"]), list(rows["participant_id"])
    verb_logits, noun_logits = simulated_logits(verb_labels, noun_labels)
    vocab = EK100Vocabulary.default()
    inputs = dict(verb_logits=verb_logits, noun_logits=noun_logits, verb_labels=verb_labels, noun_labels=noun_labels,
                  narration_ids=narration_ids, participant_ids=participants)
    # As the training and evaluation scripts use it (cache files, here in a temporary cache_dir).
    jobs = {f"{task}_{ties}": (lambda task=task, ties=ties: EK100Metric(task, ties=ties, cache_dir=str(tmp))
                               .compute(**inputs))
            for task in ("recognition", "anticipation") for ties in ("lower_id", "official")}
    modules = _official_modules(official) if official else None
    if modules:
        import pandas as pd

        truth = pd.DataFrame({"verb_class": verb_labels, "noun_class": noun_labels,
                              "action_class": verb_labels * 1000 + noun_labels, "participant_id": participants})
        # The official scripts take float64 scores (C3 reads them from JSON; C1 from whatever the pickle holds).
        arrays = (verb_logits.astype(np.float64), noun_logits.astype(np.float64))
        for task in ("recognition", "anticipation"):
            jobs[f"{task}_official_code"] = lambda task=task: _official_results(modules, task, *arrays, truth, vocab)
    wall: dict[str, list[float]] = {name: [] for name in jobs}
    cpu: dict[str, list[float]] = {name: [] for name in jobs}
    results = {}
    for _ in range(repeats):  # interleaved: every job once per round, so load changes hit them alike
        for name, job in jobs.items():
            gc.collect()  # the garbage of the previous job is not this one's time
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = job()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    out: dict = {
        "rows": len(verb_labels),
        "logits": "simulated bf16 classifier (bench_ek100.simulated_logits, moderate, seed 0)",
        "repeats": repeats,
        "median_wall_seconds": {name: round(float(np.median(t)), 3) for name, t in wall.items()},
        "median_cpu_seconds": {name: round(float(np.median(t)), 3) for name, t in cpu.items()},
        "all_verb_top1": results["recognition_lower_id"]["all_verb_top1"],
        "num_unseen": results["recognition_lower_id"]["num_unseen"],
        "num_tail_action": results["recognition_lower_id"]["num_tail_action"],
    }
    if modules:
        for task in ("recognition", "anticipation"):
            theirs, ours = results[f"{task}_official_code"], results[f"{task}_official"]
            differing = sorted(key for key, value in theirs.items() if ours[key] != value)
            out[f"{task}_official_code_keys"] = len(theirs)
            out[f"{task}_keys_differing_from_official_code"] = differing
    # The default rule against the official order: points of each key, 5 draws of each simulated model.
    shifts: dict = {}
    for model in SIMULATED_MODELS:
        for seed in range(5):
            v, n = simulated_logits(verb_labels, noun_labels, seed, model)
            table = {ties: compute_ek100_metrics(v, n, verb_labels, noun_labels, participants, vocab=vocab, ties=ties)
                     for ties in ("lower_id", "official")}
            for key in ("all_verb_top1", "all_noun_top1", "all_action_top1", "all_verb_top5", "tail_verb_top1"):
                shifts.setdefault(model, {}).setdefault(key, []).append(table["lower_id"][key] - table["official"][key])
            shifts[model].setdefault("official_all_verb_top1", []).append(table["official"]["all_verb_top1"])
    out["lower_id_minus_official_points"] = {
        model: {key: {"mean": round(float(np.mean(d)), 3), "min": round(float(np.min(d)), 3),
                      "max": round(float(np.max(d)), 3)} for key, d in keys.items()}
        for model, keys in shifts.items()
    }
    return out


def bench_submission(tmp: Path) -> dict:
    from modeling_mambavl.ek100 import write_submission

    rng = np.random.default_rng(0)
    m = 13092
    verbs = rng.normal(size=(m, 97)).astype(np.float32)
    nouns = rng.normal(size=(m, 300)).astype(np.float32)
    path, seconds = _timed(lambda: write_submission(tmp / "test.zip", [f"x_{i}" for i in range(m)], verbs, nouns,
                                                    "anticipation", 2, 3, 3))
    return {"submission_anticipation_13092_seconds": round(seconds, 1),
            "submission_zip_megabytes": round(path.stat().st_size / 2**20, 1)}


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


SECTIONS = ("generation", "annotations", "metric", "submission", "probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    parser.add_argument("--annotations", type=Path, default=here.parents[1] / "shared" / "data" / "ek100-annotations")
    parser.add_argument("--official", type=Path, default=None,
                        help="a folder holding checkouts of epic-kitchens/C1-Action-Recognition and "
                             "C3-Action-Anticipation: the metric is then timed against, and compared with, their code")
    parser.add_argument("--probe", action="store_true", help="also train the small CNN probe (minutes)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the metric timings")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None,
                        help="run these sections and replace them in --output, keeping the others")
    parser.add_argument("--output", type=Path, default=here / "results" / "ek100.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    sections = set(args.only or [s for s in SECTIONS if s != "probe" or args.probe])
    results: dict = json.loads(args.output.read_text()) if args.only and args.output.is_file() else {}
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
               "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if sections & {"generation", "probe"}:
            results["synthetic_generation"] = bench_generation(tmp / "synthetic")
        if "annotations" in sections:
            results["annotations_validation"] = bench_annotations(args.annotations)
        if "metric" in sections:
            results["metric"] = bench_metric(args.annotations, args.official, tmp, args.repeats)
            for stale in ("metric_recognition_9668_seconds", "metric_anticipation_9668_seconds"):
                results.pop(stale, None)  # the figures of the metric's first version, before this section
        if "submission" in sections:
            results.update(bench_submission(tmp))
        if "probe" in sections:
            results["probe"] = probe(tmp / "synthetic", args.epochs)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine" if not args.only else f"machine_{'_'.join(sorted(sections))}"] = machine
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
