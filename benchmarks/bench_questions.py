"""Do questions built from a first stage's predictions help? The question cascade's rows over seeds, for recognition
and anticipation: verb / noun / action (top-1 for recognition, mean top-5 recall for anticipation), mean ± std.

    python benchmarks/bench_questions.py                                  # 2 tasks x 3 seeds, the demo's settings
    python benchmarks/bench_questions.py --tasks recognition --seeds 0 --jobs 2
    python benchmarks/bench_questions.py --cascade_args="--synthetic_variant hard" --extra --num_train_epochs 20

Each (task, seed) is one ``examples/cascade_ek100.py --demo --task T --seed S --controls shuffled none oracle`` run as
a subprocess (``--cascade_args`` and ``--extra`` add cascade options and training options), in its own folder under
``--work_dir``, which it resumes: an interrupted sweep, run again, skips every finished step. Rows: the first stage
alone (mean of the K fold models), the second stage with predicted questions (templates), the same with its questions
shuffled across clips, the question-free ``none`` fusion, and ORACLE questions (ground truth, masked: an upper bound,
not a result). Questions phrased from per-class pools need a local LM: that row reads "not run" unless
``--pool_args "--question_pool pool.json"`` (a pool from ``examples/generate_questions.py --pool``) is given; the
pools run shares the first stage of its seed and retrains only the second stage. Results: ``benchmarks/results/questions.json``
(written after every cascade) with the markdown table and the command of every row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
CASCADE = ROOT / "examples" / "cascade_ek100.py"
TASKS = ("recognition", "anticipation")
# (results.json row key, table label); "stage2_pools" comes from a second cascade run with --pool_args.
ROWS = (
    ("stage1", "first stage alone (mean of K fold models)"),
    ("stage2", "second stage, predicted questions (templates)"),
    ("stage2_pools", "second stage, predicted questions (per-class pools)"),
    ("stage2_shuffled", "second stage, predicted questions shuffled across clips"),
    ("control_none", "question-free fusion none"),
    ("control_oracle", "ORACLE QUESTIONS (ground truth, masked; upper bound)"),
)
HEADLINE = {"recognition": "top1", "anticipation": "mt5r"}


def cascade_command(task: str, seed: int, work: Path, cascade_args: list[str], extra: list[str],
                    folder: str = "") -> list[str]:
    return [sys.executable, str(CASCADE), "--demo", "--task", task, "--seed", str(seed),
            "--controls", "shuffled", "none", "oracle", "--data_cache_dir", str(work / "data"),
            "--output_dir", str(work / (folder or f"{task}-seed{seed}")), *cascade_args, "--", *extra]


def run_cascade(command: list[str], log: Path) -> dict:
    """Run (or resume) one cascade; its ``results.json``, with the wall and CPU seconds of this call."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start, cpu = time.perf_counter(), os.times()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        result = subprocess.run(command, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    end = os.times()
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}); see {log}")
    output = Path(command[command.index("--output_dir") + 1])
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["cpu_seconds_children"] = round((end.children_user - cpu.children_user)
                                            + (end.children_system - cpu.children_system), 1)
    results["command"] = shlex.join(command)
    return results


def summarise(runs: list[dict], pools_run: bool) -> dict:
    """Per task and row: mean and std over seeds of verb / noun / action (the task's headline metric)."""
    table: dict = {}
    for task in dict.fromkeys(r["task"] for r in runs):
        mine = [r for r in runs if r["task"] == task]
        kind = HEADLINE[task]
        table[task] = {}
        for key, label in ROWS:
            present = [r for r in mine if key in r["rows"]]
            if not present:
                table[task][key] = {"label": label, "status": "not run: no local LM" if key == "stage2_pools"
                                    and not pools_run else "not run"}
                continue
            row = {"label": label, "seeds": [r["seed"] for r in present],
                   "commands": [r["rows"][key].get("command", r["command"]) for r in present]}
            for x in ("verb", "noun", "action"):
                values = [r["rows"][key]["metrics"].get(f"all_{x}_{kind}") for r in present]
                values = [v for v in values if v is not None]
                row[x] = {"mean": statistics.fmean(values) if values else None,
                          "std": statistics.stdev(values) if len(values) > 1 else None}  # one seed: no spread
            table[task][key] = row
    return table


def markdown(summary: dict) -> str:
    lines = []
    for task, rows in summary.items():
        metric = "top-1" if HEADLINE[task] == "top1" else "mean top-5 recall"
        lines += [f"**{task}** (validation {metric}, %, mean ± std over seeds; one seed: its value)", "",
                  "| row | seeds | verb | noun | action |", "|---|---|---|---|---|"]
        for row in rows.values():
            if "status" in row:
                lines.append(f"| {row['label']} | - | {row['status']} | | |")
                continue
            cells = ["-" if row[x]["mean"] is None else f"{row[x]['mean']:.1f}" if row[x]["std"] is None
                     else f"{row[x]['mean']:.1f} ± {row[x]['std']:.1f}" for x in ("verb", "noun", "action")]
            lines.append(f"| {row['label']} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--work_dir", type=str, default=str(ROOT / "outputs" / "bench_questions"),
                        help="the cascades' folders (kept: a rerun resumes them) and the synthetic data")
    parser.add_argument("--output", type=str, default=str(ROOT / "benchmarks" / "results" / "questions.json"))
    parser.add_argument("--jobs", type=int, default=1, help="cascades at a time (each trains on one thread)")
    parser.add_argument("--cascade_args", type=str, default="",
                        help='more cascade_ek100.py options, one string (e.g. "--synthetic_variant hard")')
    parser.add_argument("--pool_args", type=str, default=None,
                        help='cascade options that phrase the predicted questions from per-class pools, e.g. "--question_pool '
                             'pool.json" (a second second stage per seed, row stage2_pools); without them that row '
                             "reads not run")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train_ek100.py options")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    work = Path(args.work_dir)
    cascade_args = shlex.split(args.cascade_args)
    order = [(task, seed) for task in args.tasks for seed in args.seeds]
    runs: list[dict] = []
    report: dict = {}
    lock = threading.Lock()

    def one(task: str, seed: int) -> None:
        run = run_cascade(cascade_command(task, seed, work, cascade_args, args.extra), work / "logs" /
                          f"{task}-seed{seed}.log")
        if args.pool_args is not None:
            # The same first stage (same settings and seed): the pools run reads the finished one.
            pools_dir = work / f"{task}-seed{seed}-pools"
            pools_dir.mkdir(parents=True, exist_ok=True)
            if not (pools_dir / "stage1").exists():
                (pools_dir / "stage1").symlink_to(Path("..") / f"{task}-seed{seed}" / "stage1")
            pools = run_cascade(cascade_command(task, seed, work, [*cascade_args, *shlex.split(args.pool_args),
                                                                   "--controls"], args.extra,
                                                folder=f"{task}-seed{seed}-pools"),
                                work / "logs" / f"{task}-seed{seed}-pools.log")
            run["rows"]["stage2_pools"] = pools["rows"]["stage2"]
        with lock:
            runs.append(run)
            runs.sort(key=lambda r: order.index((r["task"], r["seed"])))
            print(f"{task} seed {seed}: {run['wall_seconds']} s wall, {run['cpu_seconds_children']} s CPU", flush=True)
            summary = summarise(runs, args.pool_args is not None)
            report.update({
                "command": shlex.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "jobs": args.jobs},
                "settings": "examples/cascade_ek100.py --demo (DEMO_OPTIONS, DEMO_TRAINING) " + args.cascade_args
                            + (" -- " + shlex.join(args.extra) if args.extra else ""),
                "runs": runs,
                "summary": summary,
                "markdown": markdown(summary),
            })
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(report, indent=1) + "\n")

    pending = list(order)
    if args.jobs > 1 and not (work / "data").exists():
        one(*pending.pop(0))  # builds the data and clip caches that the parallel runs then share
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(one, task, seed) for task, seed in pending]:
            future.result()
    print(report.get("markdown", ""))
    return report


if __name__ == "__main__":
    main()
