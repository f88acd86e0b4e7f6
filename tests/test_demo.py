"""`make demo`: examples/train_ek100.py --demo at a very small size prints the metric table, both controls and the time
breakdown, and writes controls.json; the Makefile target runs that script after a timed runtime install."""

import json
import re

import pytest
from helpers.train_run import REPO, TRAIN, run, script_args, synthetic_cache

NUMBER = r"-?\d+\.\d"


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


@pytest.mark.slow
def test_demo_prints_metrics_controls_and_time_breakdown(cache, tmp_path):
    out = tmp_path / "demo"
    args = script_args(cache, out, "--demo", "--install_seconds", "7", "--num_train_epochs", "1",
                       "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "12")
    result = run(TRAIN, args, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    stdout = result.stdout

    assert "MambaVL CPU demo" in stdout
    header = re.search(r"^\s+top-1\s+top-5$", stdout, re.M)
    assert header, stdout
    for name in ("verb", "noun", "action"):
        assert re.search(rf"^{name}\s+{NUMBER}\s+{NUMBER}$", stdout, re.M), f"no {name} row in:\n{stdout}"
    assert re.search(r"12 of 12 clips scored", stdout)

    reversed_line = re.search(rf"control, frames reversed: verb top-1 on the (\d+) time-reversal-pair clips .* "
                              rf"({NUMBER}) -> ({NUMBER})", stdout)
    assert reversed_line, stdout
    shuffled_line = re.search(rf"control, questions shuffled across clips: verb ({NUMBER}), noun ({NUMBER}), action "
                              rf"({NUMBER}) \(largest change ({NUMBER}) points", stdout)
    assert shuffled_line, stdout
    timing = re.search(r"time: install 7 s, data (\d+) s, train (\d+) s, eval (\d+) s \(this script (\d+) s\)", stdout)
    assert timing, stdout
    assert int(timing[4]) >= int(timing[2])

    controls = json.loads((out / "controls.json").read_text())
    assert controls["reversal_pair_clips"] == int(reversed_line[1]) > 0
    assert f"{controls['reversal_pair_verb_top1_frames_reversed']:.1f}" == reversed_line[3]
    # Generic questions are identical for every clip, so shuffling them across clips cannot change a prediction.
    assert controls["questions_shuffled_max_change"] == 0.0
    metrics = json.loads((out / "best_model" / "metrics.json").read_text())
    assert metrics  # the best model's metrics are written next to it
    assert (out / "final_model" / "config.json").is_file()


def test_make_demo_times_the_install_and_runs_the_demo_script():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "no demo target in the Makefile"
    body = recipe[1]
    assert "$(MAKE) --no-print-directory install" in body  # runtime dependencies only, not the dev extra
    assert "examples/train_ek100.py --demo --install_seconds" in body
    assert "install-dev" not in body
    runtime = re.search(r"^install: (.*)$", makefile, re.M)[1]
    assert ".installed-runtime" in runtime
