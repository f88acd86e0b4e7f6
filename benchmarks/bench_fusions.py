"""The fusions and their controls on the synthetic data, with the CPU demo's budget: verb / noun / action top-1 (mean ±
std over seeds) and the frames-reversed control.

    python benchmarks/bench_fusions.py                                   # 5 fusions x 3 seeds, the demo's settings
    python benchmarks/bench_fusions.py --jobs 2                          # two runs at a time (one thread each)
    python benchmarks/bench_fusions.py --fusions ssm none --seeds 0 --extra --num_train_epochs 2

Each run is ``examples/demo.py --fusion_type F --seed S`` as a subprocess (the demo's recipe: data, preset, optimiser,
schedule and epochs; ``--extra`` appends options), so the table measures exactly what ``make demo`` trains.
From each run: the final model's metrics (``train_summary.json``) and ``controls.json`` (verb top-1 on the take / put /
open / close clips with frames reversed; the largest top-1 change with questions shuffled across clips). The seed
changes the model's initialisation, the data order and the augmentation; the data set itself is the same for every
run. The demo trains on one thread, so ``--jobs`` runs that many at once; when the data cache does not exist yet,
the first run builds it alone before the others start. Results: ``benchmarks/results/fusions.json`` (written after
every run, so an interrupted sweep keeps its runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from modeling_mambavl.configuration import FUSION_TYPES

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.py"
# Every fusion the training script trains end to end; the linear probe is a separate baseline (no fusion module).
FUSIONS = tuple(t for t in FUSION_TYPES if t != "linear_probe")
METRICS = ("all_verb_top1", "all_noun_top1", "all_action_top1")


def run_one(fusion: str, seed: int, cache: Path, output: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(DEMO), "--fusion_type", fusion, "--seed", str(seed),
           "--data_cache_dir", str(cache), "--output_dir", str(output), "--no_plot", "--checkpointing_steps", "no",
           *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads((output / "train_summary.json").read_text())
    controls = json.loads((output / "controls.json").read_text())
    metrics = summary["final_metrics"]
    return {
        "fusion": fusion, "seed": seed, "seconds": seconds,
        **{k: metrics[k] for k in METRICS},
        "reversal_pair_verb_top1": controls["reversal_pair_verb_top1"],
        "reversal_pair_verb_top1_frames_reversed": controls["reversal_pair_verb_top1_frames_reversed"],
        "questions_shuffled_max_change": controls["questions_shuffled_max_change"],
    }


def summarise(runs: list[dict]) -> dict:
    table = {}
    keys = (*METRICS, "reversal_pair_verb_top1", "reversal_pair_verb_top1_frames_reversed",
            "questions_shuffled_max_change")
    for fusion in dict.fromkeys(r["fusion"] for r in runs):
        mine = [r for r in runs if r["fusion"] == fusion]
        table[fusion] = {"seeds": [r["seed"] for r in mine]}
        for key in keys:
            values = [r[key] for r in mine]
            table[fusion][key] = {"mean": statistics.fmean(values),
                                  "std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return table


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fusions", nargs="+", default=list(FUSIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--cache_dir", type=str, default=None, help="synthetic data (default: a temporary folder)")
    parser.add_argument("--output", type=str, default=str(ROOT / "benchmarks" / "results" / "fusions.json"))
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (each trains on one thread)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train_ek100.py options")
    args = parser.parse_args(argv)

    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    order = [(fusion, seed) for fusion in args.fusions for seed in args.seeds]
    runs: list[dict] = []
    report: dict = {}
    lock = threading.Lock()

    with tempfile.TemporaryDirectory(prefix="bench_fusions-") as tmp:
        cache = Path(args.cache_dir) if args.cache_dir else Path(tmp) / "cache"

        def one(fusion: str, seed: int) -> None:
            run = run_one(fusion, seed, cache, Path(tmp) / f"{fusion}-{seed}", args.extra)
            with lock:
                runs.append(run)
                runs.sort(key=lambda r: order.index((r["fusion"], r["seed"])))
                print(json.dumps(run), flush=True)
                report.update({
                    "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                "cpu_count": os.cpu_count(), "jobs": args.jobs},
                    "settings": "examples/demo.py (examples/recipes/demo.yaml) " + " ".join(args.extra),
                    "runs": runs,
                    "summary": summarise(runs),
                })
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                Path(args.output).write_text(json.dumps(report, indent=1) + "\n")

        pending = list(order)
        if args.jobs > 1 and not cache.exists():
            one(*pending.pop(0))  # builds the data and clip caches that the parallel runs then share
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(one, fusion, seed) for fusion, seed in pending]:
                future.result()
    for fusion, row in report["summary"].items():
        cells = [f"{row[k]['mean']:.1f} ± {row[k]['std']:.1f}" for k in (*METRICS,
                 "reversal_pair_verb_top1", "reversal_pair_verb_top1_frames_reversed")]
        print(f"{fusion:10s} " + " | ".join(cells))
    return report


if __name__ == "__main__":
    main()
