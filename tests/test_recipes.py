"""examples/recipes/*.yaml: `train_ek100.py --recipe X --dry_run` resolves exactly the optimizer groups, learning rates,
weight decay and schedule the file states, every value carries a source comment, and the deviations are listed."""

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "examples" / "recipes"
NAMES = ["orvit_recognition", "avion_vitb_recognition", "avion_vitl_recognition", "orvit_anticipation"]
GROUP_LR = {"rest": "lr", "mamba": "lr_mamba", "backbone": "lr_backbone"}


@pytest.fixture
def train(train_script):
    """examples/train_ek100.py (conftest's module-scoped import)."""
    return train_script


def _dry_run(train, capsys, *argv) -> dict:
    """The JSON that --dry_run prints (parsed from stdout, not the returned object)."""
    train.main([*argv, "--dry_run"])
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def _recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text(encoding="utf-8"))


def test_the_four_recipes_exist():
    # and the CPU demo's (tests/test_demo.py), which reproduces no paper configuration
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted([*NAMES, "demo"])


@pytest.mark.parametrize("name", NAMES)
def test_dry_run_resolves_what_the_recipe_states(train, capsys, name):
    recipe = _recipe(name)
    report = _dry_run(train, capsys, "--recipe", str(RECIPES / f"{name}.yaml"))

    # Optimizer.
    optimizer = report["optimizer"]
    assert optimizer["name"] == recipe["optimizer"]
    if recipe["optimizer"] == "sgd":
        assert optimizer["momentum"] == pytest.approx(float(recipe["momentum"]))
        assert optimizer["nesterov"] is (not recipe["no_nesterov"])
    else:
        assert optimizer["betas"] == pytest.approx([float(recipe["adam_beta1"]), float(recipe["adam_beta2"])])
        assert optimizer["eps"] == pytest.approx(float(recipe["adam_epsilon"]))

    # Groups: every group's learning rate is the recipe's rate for its kind, every group decays at the recipe's rate
    # (the authors decay every parameter), and the feature models hold the mixers and "the rest" (no backbone).
    groups = report["groups"]
    assert {g["name"] for g in groups} == {"mamba", "rest"}
    for group in groups:
        assert group["lr"] == pytest.approx(float(recipe[GROUP_LR[group["name"]]])), group
        assert group["weight_decay"] == pytest.approx(float(recipe["weight_decay"])), group
        assert group["num_parameters"] > 0
    mixers = next(g for g in groups if g["name"] == "mamba")
    assert mixers["num_tensors"] == 16  # two mixers x (in_proj, conv w/b, x_proj, dt_proj w/b, D, out_proj)

    # Schedule.
    schedule = report["schedule"]
    assert schedule["name"] == recipe["lr_schedule"]
    assert schedule["num_train_epochs"] == recipe["num_train_epochs"]
    assert schedule["warmup_epochs"] == pytest.approx(float(recipe["warmup_epochs"]))
    assert schedule["min_lr_ratio"] == pytest.approx(float(recipe["min_lr_ratio"]))
    assert schedule["milestones"] == recipe.get("lr_milestones", [])
    assert schedule["factors"] == pytest.approx([float(f) for f in recipe.get("lr_factors", [])])

    # Batch and regularisation, and every option of the file as the script resolved it.
    assert report["batch"]["per_device_train_batch_size"] == recipe["per_device_train_batch_size"]
    assert report["batch"]["gradient_accumulation_steps"] == recipe["gradient_accumulation_steps"]
    for key in ("label_smoothing", "mixup_alpha", "cutmix_alpha"):
        assert report["regularisation"][key] == pytest.approx(float(recipe[key]))
    resolved = report["args"]
    for key, value in recipe.items():
        if key.startswith("_"):
            continue
        got = resolved[key]
        if isinstance(value, float) or isinstance(got, float):
            assert got == pytest.approx(float(value)), key
        elif isinstance(value, list):
            assert got == pytest.approx([float(v) for v in value]) if got and isinstance(got[0], float) else \
                got == value, key
        else:
            assert got == value, key
    assert resolved["decay_all_params"] is True and resolved["fusion_type"] == "ssm"


@pytest.mark.parametrize("name", NAMES)
def test_the_backbone_group_takes_lr_backbone_when_a_backbone_is_trained(train, capsys, name):
    """The same recipe on a model with a vision backbone (the tiny VideoMAE preset): a third group at lr_backbone."""
    recipe = _recipe(name)
    report = _dry_run(train, capsys, "--recipe", str(RECIPES / f"{name}.yaml"), "--preset", "tiny",
                      "--config_overrides", "{}")
    groups = {g["name"]: g for g in report["groups"]}
    assert set(groups) == {"backbone", "mamba", "rest"}
    for kind, group in groups.items():
        assert group["lr"] == pytest.approx(float(recipe[GROUP_LR[kind]]))
        assert group["weight_decay"] == pytest.approx(float(recipe["weight_decay"]))


@pytest.mark.parametrize("name", NAMES)
def test_every_value_names_its_source_and_the_deviations_are_listed(name):
    text = (RECIPES / f"{name}.yaml").read_text(encoding="utf-8")
    recipe = yaml.safe_load(text)
    sources = set(recipe["_sources"])
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^([a-z][a-z0-9_]*):", line)
        if not match:
            continue
        # The comment on the line, or the comment block right above it, cites a source ([X] or "deviation N").
        comment = line.split("#", 1)[1] if "#" in line else ""
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            comment += lines[j]
            j -= 1
        cited = set(re.findall(r"\[([A-Z])\]", comment))
        assert cited or "deviation" in comment or "unused" in comment, f"{name}: {match.group(1)} names no source"
        assert cited <= sources, f"{name}: {match.group(1)} cites {cited - sources}, not in _sources"
    deviations = " ".join(recipe["_deviations"])
    for topic in ("Masked pooling", "Official metric", "Question source", "Frozen backbone"):
        assert topic in deviations, f"{name}: no deviation about {topic!r}"
    if recipe["task"] == "anticipation":
        assert "1 s" in deviations and "official window" in deviations
        assert recipe["anticipation_time"] == 1.0
    assert recipe["_expected"], name


# The authors' values (DESIGN.md section 1 and their released configs), independent of the YAML files.
AUTHORS = {
    "orvit_recognition": dict(optimizer="sgd", lr=1e-3, lr_backbone=1e-3, lr_mamba=3e-3, weight_decay=4e-5,
                              lr_schedule="cosine", warmup_epochs=2.0, num_train_epochs=100, total_batch=64,
                              mixup_alpha=0.8, label_smoothing=0.1, rand_augment="rand-m7-n4", task="recognition"),
    "avion_vitb_recognition": dict(optimizer="sgd", lr=1e-3, lr_backbone=1e-3, lr_mamba=3e-3, weight_decay=4e-5,
                                   lr_schedule="cosine", warmup_epochs=2.0, num_train_epochs=100, total_batch=64,
                                   mixup_alpha=0.8, label_smoothing=0.1, rand_augment=None, task="recognition"),
    "avion_vitl_recognition": dict(optimizer="sgd", lr=1e-3, lr_backbone=1e-3, lr_mamba=3e-3, weight_decay=4e-5,
                                   lr_schedule="cosine", warmup_epochs=2.0, num_train_epochs=100, total_batch=64,
                                   mixup_alpha=0.8, label_smoothing=0.1, rand_augment=None, task="recognition"),
    "orvit_anticipation": dict(optimizer="adamw", lr=2e-5, lr_backbone=1e-5, lr_mamba=2e-4, weight_decay=0.05,
                               lr_schedule="step", warmup_epochs=0.0, num_train_epochs=50, total_batch=24,
                               mixup_alpha=0.0, label_smoothing=0.1, rand_augment="rand-m7-n4", task="anticipation",
                               lr_milestones=[0, 19, 40], lr_factors=[1.0, 0.1, 0.01]),
}


@pytest.mark.parametrize("name", NAMES)
def test_the_recipes_hold_the_authors_values(name):
    recipe, expected = _recipe(name), AUTHORS[name]
    for key, value in expected.items():
        if key == "total_batch":
            # The authors' batch is the total over NUM_GPUS 8.
            assert recipe["per_device_train_batch_size"] * 8 * recipe["gradient_accumulation_steps"] == value
        elif isinstance(value, float):
            assert float(recipe[key]) == pytest.approx(value), key
        else:
            assert recipe[key] == value, key
    if recipe["optimizer"] == "sgd":
        assert recipe["momentum"] == 0.9 and recipe["no_nesterov"] is False  # SOLVER.MOMENTUM, NESTEROV True
    else:
        assert (recipe["adam_beta1"], recipe["adam_beta2"], float(recipe["adam_epsilon"])) == (0.9, 0.999, 1e-8)
    assert recipe["decay_all_params"] is True
    assert recipe["max_question_length"] == 40 and recipe["tokenizer_name"] == "FacebookAI/roberta-base"
    assert recipe["seed"] == 0 and recipe["mixed_precision"] == "fp16"
    overrides = json.loads(recipe["config_overrides"])
    assert overrides["text_embedding_dropout"] == 0.1 and overrides["state_size"] == 16 and overrides["expand"] == 2
    # The AVION models feed the tower's tokens to the mixer; the Motionformer has norm (eps 1e-6) + Linear + tanh.
    if name.startswith("avion"):
        assert overrides["vision_adapter"] == "identity"
        assert overrides["image_mean"] == pytest.approx([0.42481, 0.45782, 0.40821])
    else:
        # The default adapter (norm_linear_tanh) for ssm / none; left unset so that --fusion_type linear_probe works.
        assert "vision_adapter" not in overrides and overrides["layer_norm_eps"] == 1e-6
        assert overrides["image_mean"] == [0.5, 0.5, 0.5]


def test_the_command_line_switches_off_a_flag_the_recipe_switches_on(train):
    """A recipe's ``true`` for a flag is a default like any other: ``--no_<flag>`` switches it off (a flag alone could
    only switch itself on). Without a recipe that switches it on there is no such option."""
    demo, authors = str(RECIPES / "demo.yaml"), str(RECIPES / "orvit_recognition.yaml")
    assert train.parse_args(["--recipe", demo])[0].cache_clips is True
    assert train.parse_args(["--recipe", demo, "--no_cache_clips"])[0].cache_clips is False
    args, _ = train.parse_args(["--recipe", authors, "--no_decay_all_params", "--no_decay_state_params"])
    assert (args.decay_all_params, args.decay_state_params) == (False, False)
    args, _ = train.parse_args(["--recipe", authors])
    assert (args.decay_all_params, args.decay_state_params) == (True, True)
    with pytest.raises(SystemExit):
        train.parse_args(["--no_cache_clips"])


def test_help_after_a_recipe_lists_its_switch_offs(train, capsys):
    """``--recipe demo.yaml --help`` shows the options the recipe adds (``--no_cache_clips``): the
    help is printed by the final parse, not by the first one that only looks for the recipe."""
    with pytest.raises(SystemExit):
        train.parse_args(["--recipe", str(RECIPES / "demo.yaml"), "--help"])
    out = capsys.readouterr().out
    assert "--no_cache_clips" in out
    # The switch's help does not show the flag's default (True) as if it were its own.
    entry = " ".join(out[out.index("  --no_cache_clips "):].split("\n  -")[0].split())
    assert "switch off --cache_clips" in entry and "default" not in entry, entry
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    assert "--no_cache_clips" not in capsys.readouterr().out
