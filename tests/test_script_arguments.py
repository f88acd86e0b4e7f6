"""The example scripts' command lines: --help shows every option's default and a help text for each, the names
transformers' TrainingArguments uses are accepted as aliases, and user errors are one line (--debug: the traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.scripts import import_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = {  # script -> the function that parses its command line
    "train_ek100": "parse_args", "eval_ek100": "parse_args", "extract_features": "parse_args",
    "generate_questions": "main", "prepare_ek100": "main", "convert_authors_checkpoint": "main", "demo": "parse_args",
    "cascade_ek100": "parse_args",
}


@pytest.fixture(params=sorted(SCRIPTS))
def script(request):
    yield from import_script(EXAMPLES / f"{request.param}.py", f"script_{request.param}")


def _help(module, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        getattr(module, SCRIPTS[module.__name__.removeprefix("script_")])(["--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def _options(text: str) -> list[tuple[str, str]]:
    """(option line, its help text) for every option in a --help text."""
    entries, current = [], None
    for line in text.splitlines():
        match = re.match(r"^  (-{1,2}[\w-]+.*?)(?:\s{2,}(.*))?$", line)
        if match:
            current = [match[1], match[2] or ""]
            entries.append(current)
        elif current is not None and line.startswith(" " * 10):
            current[1] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            current = None
    return [(o, " ".join(h.split())) for o, h in entries]


def test_help_shows_defaults_and_a_help_text_for_every_option(script, capsys):
    options = _options(_help(script, capsys))
    assert len(options) >= 5
    for option, text in options:
        assert text, f"{option}: no help text"
    defaults = [text for _, text in options if "default" in text]
    assert len(defaults) >= len([o for o in options if "-h, --help" not in o[0]]) // 3, defaults
    assert any(o.startswith("--debug") for o, _ in options)


def test_train_help_names_defaults_and_hf_aliases(capsys):
    for module in import_script(EXAMPLES / "train_ek100.py", "script_train_ek100"):
        options = dict(_options(_help(module, capsys)))
    assert options["--lr LR, --learning_rate LR"].endswith("(default: 0.001)")
    assert options["--num_train_epochs NUM_TRAIN_EPOCHS"].endswith("(default: 10)")
    assert options["--max_train_steps MAX_TRAIN_STEPS, --max_steps MAX_TRAIN_STEPS"]
    assert "(default: 16)" in options["--per_device_train_batch_size PER_DEVICE_TRAIN_BATCH_SIZE"]


def test_hf_standard_names_are_aliases(fresh_accelerate_state):
    for train in import_script(EXAMPLES / "train_ek100.py", "script_train_ek100"):
        args, _ = train.parse_args([
            "--learning_rate", "0.02", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
            "--num_train_epochs", "10", "--weight_decay", "0.1", "--warmup_ratio", "0.2",
            "--gradient_accumulation_steps", "2", "--seed", "3", "--max_steps", "7", "--save_steps", "5",
            "--save_total_limit", "1", "--dataloader_num_workers", "0", "--lr_scheduler_type", "constant",
            "--label_smoothing_factor", "0.2"])
        assert (args.lr, args.per_device_train_batch_size, args.per_device_eval_batch_size) == (0.02, 4, 8)
        assert (args.num_train_epochs, args.weight_decay, args.gradient_accumulation_steps, args.seed) == (10, 0.1, 2, 3)
        assert args.warmup_epochs == pytest.approx(2.0)  # 0.2 of 10 epochs
        assert (args.max_train_steps, args.checkpointing_steps, args.checkpoints_total_limit) == (7, "5", 1)
        assert (args.num_workers, args.lr_schedule, args.label_smoothing) == (0, "constant", 0.2)
        with pytest.raises(SystemExit):
            train.parse_args(["--warmup_ratio", "0.1", "--warmup_epochs", "1"])
    for evaluate in import_script(EXAMPLES / "eval_ek100.py", "script_eval_ek100"):
        args = evaluate.parse_args(["--model_name_or_path", "m", "--dataloader_num_workers", "0", "--seed", "4"])
        assert (args.num_workers, args.seed) == (0, 4)
    for extract in import_script(EXAMPLES / "extract_features.py", "script_extract_features"):
        args = extract.parse_args(["--annotations_dir", "a", "--split", "train", "--media_root", "m", "--backbone",
                                   "b", "--output_dir", "o", "--per_device_eval_batch_size", "3"])
        assert args.batch_size == 3


@pytest.mark.slow
def test_script_user_errors_are_one_line(tmp_path):
    """A missing model folder given to eval_ek100.py: one line naming it and the fix, status 2, no traceback;
    --debug shows the traceback."""
    env = dict(os.environ)
    missing = tmp_path / "no_model"
    command = [sys.executable, str(EXAMPLES / "eval_ek100.py"), "--model_name_or_path", str(missing)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"eval_ek100.py: {missing}: no such folder") and "save_pretrained" in line
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=600, env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.parametrize(
    ("name", "option", "value", "expected"),
    [
        ("train_ek100", "--per_device_train_batch_size", "0", "must be at least 1, got 0"),
        ("train_ek100", "--num_train_epochs", "-3", "must be at least 1, got -3"),
        ("train_ek100", "--lr", "-1", "must be at least 0, got -1.0"),
        ("train_ek100", "--gradient_accumulation_steps", "0", "must be at least 1, got 0"),
        ("train_ek100", "--seed", "-1", "must be at least 0, got -1"),
        ("train_ek100", "--seed", str(2**32), f"must be at most {2**32 - 1}, got {2**32}"),
        ("train_ek100", "--num_workers", "-2", "must be at least 0, got -2"),
        ("eval_ek100", "--per_device_eval_batch_size", "0", "must be at least 1, got 0"),
        ("eval_ek100", "--max_eval_samples", "0", "must be at least 1, got 0"),
        # the first-stage and cascade options, and the data options the cascade passes on to its runs
        *[(name, option, str(low - 1), f"must be at least {low}, got {low - 1}") for name, option, low in
          [("eval_ek100", "--question_top_k", 1), ("cascade_ek100", "--num_folds", 2), ("cascade_ek100", "--jobs", 1),
           ("cascade_ek100", "--question_top_k", 1), ("cascade_ek100", "--synthetic_size", 1)]],
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_option(name, option, value, expected, capsys):
    """Before: a DataLoader's "batch_size should be a positive integer" naming no option, -3 epochs trained nothing
    and still wrote final_model/, lr -1 stopped on a NaN loss with a traceback, --seed -1 gave numpy's "Seed must be
    between 0 and 2**32 - 1", --max_eval_samples 0 "questions: no rows to tokenize"."""
    for module in import_script(EXAMPLES / f"{name}.py", f"range_{name}"):
        argv = (["--model_name_or_path", "m"] if name == "eval_ek100" else []) + [option, value]
        with pytest.raises(SystemExit) as info:
            module.parse_args(argv)
        assert info.value.code == 2
        assert f"{option} {expected}" in capsys.readouterr().err
