"""Start-up cost: ``import modeling_mambavl`` and ``mambavl --help`` against the transformers classes they build on.

    python benchmarks/bench_import.py                 # 5 interleaved runs of each command, results/import.json
    python benchmarks/bench_import.py --repeats 9 --output /tmp/import.json

Three commands, each a fresh Python process (nothing cached in memory but the OS's file cache):

- ``transformers``: ``python -c "import transformers; from transformers import VideoMAEForVideoClassification,
  AutoProcessor"`` — the reference: a video model class and the Auto processor, what any transformers video user loads;
- ``package``: ``python -c "import modeling_mambavl"`` (registers the config, models, processors and pipeline task);
- ``cli_help``: ``mambavl --help`` (the console script of this environment).

One untimed warm-up run of each, then ``--repeats`` rounds; every round runs the three commands once, in a rotated
order, so that load on a shared machine falls on all of them alike. For each run: wall time (``time.perf_counter``
around the process) and CPU time (user + system of the child, from ``os.wait4``). Reported: medians, and the ratios
package / transformers and cli_help / package of the medians (targets: <= 1.05 and <= 1.10). ``python -X importtime
-c "import modeling_mambavl"`` shows what a slow import spends its time on.
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
import time
from pathlib import Path

import _machine as _machine_info  # benchmarks/ is on sys.path when a benchmark runs as a script

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"package / transformers": 1.05, "cli_help / package": 1.10}


def commands(python: str) -> dict[str, list[str]]:
    """The three measured command lines, for the interpreter ``python`` (its environment's ``mambavl`` script)."""
    script = Path(python).with_name("mambavl")
    return {
        "transformers": [python, "-c", "import transformers; "
                         "from transformers import VideoMAEForVideoClassification, AutoProcessor"],
        "package": [python, "-c", "import modeling_mambavl"],
        "cli_help": [str(script), "--help"],
    }


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``command``; raises if it fails."""
    with tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        # From a neutral folder: in a checkout, `python -c` would import the source folder next to it instead of
        # the installed package.
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                   cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            message = stderr.read().decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}: {message}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(repeats: int, python: str) -> dict[str, dict[str, list[float]]]:
    """Per command: the wall and CPU seconds of ``repeats`` interleaved runs (after one warm-up run each)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmds = commands(python)
    names = list(cmds)
    for name in names:
        run_once(cmds[name], env)
    runs: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            wall, cpu = run_once(cmds[name], env)
            runs[name]["wall"].append(wall)
            runs[name]["cpu"].append(cpu)
            print(f"round {i + 1}/{repeats} {name:<12} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)
    return runs


def summarise(runs: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    """Medians per command, and the two ratios of medians (wall and CPU) against their targets."""
    medians = {name: {kind: statistics.median(values) for kind, values in r.items()} for name, r in runs.items()}
    ratios = {}
    for label, (num, den) in {"package / transformers": ("package", "transformers"),
                              "cli_help / package": ("cli_help", "package")}.items():
        ratios[label] = {kind: medians[num][kind] / medians[den][kind] for kind in ("wall", "cpu")}
        ratios[label]["target"] = TARGETS[label]
    return {"medians": medians, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the environment to measure")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "import.json"))
    parser.add_argument("--note", default="", help="what else ran on the machine")
    args = parser.parse_args(argv)
    runs = measure(args.repeats, args.python)
    summary = summarise(runs)
    import torch
    import transformers

    report = {
        "benchmark": "bench_import",
        "command": "python benchmarks/bench_import.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu": _machine_info.cpu_model(), "cpu_count": os.cpu_count(),
                    "load_average": os.getloadavg(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__, "note": args.note},
        "commands": {name: " ".join(cmd) for name, cmd in commands(args.python).items()},
        "repeats": args.repeats,
        "runs": runs,
        **summary,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, m in summary["medians"].items():
        print(f"{name:<12} median wall {m['wall']:6.2f} s  cpu {m['cpu']:6.2f} s")
    for label, r in summary["ratios"].items():
        print(f"{label:<24} wall {r['wall']:.3f}  cpu {r['cpu']:.3f}  (target <= {r['target']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
