"""`make demo`: examples/demo.py at a very small size prints the metric table, both controls and the time breakdown,
and writes controls.json; the Makefile target runs that script after a timed runtime install; its recipe,
examples/recipes/demo.yaml, resolves to the settings the demo was tuned with."""

import json
import re

import pytest
from helpers.scripts import import_script
from helpers.train_run import REPO, run, script_args, synthetic_cache

DEMO = REPO / "examples" / "demo.py"

NUMBER = r"-?\d+\.\d"

# The settings the demo was tuned with (BENCHMARKS.md, "The CPU demo and the fusion table").
TUNED = {
    "preset": "tiny", "media": "frames", "question_source": "generic", "synthetic_train_clips": 1600,
    "synthetic_validation_clips": 128, "synthetic_size": 64, "cache_clips": True, "crop_scale": [0.9, 1.0],
    "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "lr_schedule": "cosine", "max_grad_norm": 1.0,
    "warmup_epochs": 1.0, "num_train_epochs": 24, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 64,
    "label_smoothing": 0.0, "checkpointing_steps": "1000", "checkpoints_total_limit": 1, "eval_every_epochs": 24,
    "num_workers": 1, "num_threads": 1, "output_dir": "outputs/demo",
}


@pytest.fixture(scope="session")  # the session's data set (helpers/train_run.py builds it once)
def cache(tmp_path_factory):
    return synthetic_cache(tmp_path_factory)


def test_demo_recipe_gives_the_tuned_settings_and_the_command_line_overrides_it():
    for demo in import_script(DEMO, "demo_for_arguments"):
        args, recipe = demo.parse_args([])
        assert {k: getattr(args, k) for k in TUNED} == TUNED
        assert recipe == TUNED and args.recipe == str(REPO / "examples/recipes/demo.yaml")
        args, _ = demo.parse_args(["--lr", "1e-3", "--install_seconds", "3"])
        assert (args.lr, args.install_seconds, args.preset) == (1e-3, 3.0, "tiny")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lrr: 0.1\n", r"unknown option 'lrr'; recipe keys are the script's option names"),
        ("lr: true\n", r"lr=True: takes a float value, not true / false"),  # it became lr 1.0
        ("num_train_epochs: 2.5\n", r"num_train_epochs=2.5: takes an integer"),  # it became 2 epochs
        ("cache_clips: 'yes'\n", r"cache_clips takes true or false, got 'yes'"),
        ("lr: [1, 2]\n", r"lr takes one value, got \[1, 2\]"),
        ("optimizer: adamx\n", r"optimizer='adamx' is not one of \['adamw', 'sgd'\]"),
        ("- lr\n", r"expected a mapping of option names to values, got list"),
        ("lr: [unclosed\n", r"not valid YAML"),
        (None, r"no such file"),
    ],
    ids=["unknown-key", "bool-for-float", "fraction-for-int", "string-for-bool", "list-for-one", "bad-choice",
         "not-a-mapping", "not-yaml", "missing"],
)
def test_a_bad_recipe_given_to_the_demo_names_the_file_and_the_key(tmp_path, text, expected):
    from modeling_mambavl.training.recipe import RecipeError

    recipe = tmp_path / "mine.yaml"
    if text is not None:
        recipe.write_text(text)
    for demo in import_script(DEMO, "demo_bad_recipe"):
        with pytest.raises(RecipeError, match=rf"^--recipe {re.escape(str(recipe))}: {expected}"):
            demo.parse_args(["--recipe", str(recipe)])
    whole = tmp_path / "whole.yaml"
    whole.write_text("num_train_epochs: 2.0\nlr: 1\n")  # whole numbers are fine either way
    for demo in import_script(DEMO, "demo_good_recipe"):
        args, _ = demo.parse_args(["--recipe", str(whole)])
        assert (args.num_train_epochs, args.lr) == (2, 1.0)


@pytest.mark.slow
def test_demo_prints_metrics_controls_and_time_breakdown(cache, tmp_path):
    out = tmp_path / "demo"
    args = script_args(cache, out, "--install_seconds", "7", "--num_train_epochs", "1",
                       "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "12")
    result = run(DEMO, args, timeout=300)
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
    assert "$(SUBMAKE) install" in body  # runtime dependencies only, not the dev extra
    assert re.search(r"^SUBMAKE = \$\(MAKE\) --no-print-directory$", makefile, re.M)
    assert "examples/demo.py --install_seconds" in body
    assert "install-dev" not in body
    runtime = re.search(r"^install: (.*)$", makefile, re.M)[1]
    assert ".installed-runtime" in runtime


@pytest.mark.parametrize("target, directory", [("demo", "DEMO_DIR"), ("demo-questions", "DEMO_QUESTIONS_DIR")])
def test_make_dry_run_of_the_demos_runs_nothing(target, directory, tmp_path):
    """``make -n demo`` prints what it would run and runs nothing: a recipe line naming ``$(MAKE)`` itself would run
    even under ``-n`` (the install, and on the same line the training)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("no make here")
    out = tmp_path / "out"
    result = subprocess.run(["make", "-n", target, f"{directory}={out}"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    script = "examples/demo.py" if target == "demo" else "examples/cascade_ek100.py"
    assert script in result.stdout and str(out) in result.stdout
    assert not out.exists()
