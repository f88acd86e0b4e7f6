"""``--recipe FILE``: a YAML file of training arguments, overridden by the command line.

A recipe's keys are the scripts' argparse option names (``lr``, ``lr_backbone``, ``optimizer``, ...; dashes or
underscores), its values what the options take (lists for ``nargs`` options). Unknown keys raise an error naming the
file and the key, so a typo never goes unnoticed. Keys starting with ``_`` (e.g. ``_notes``, ``_deviations``) are
documentation and are kept in the run metadata but never applied.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RecipeError", "load_recipe", "parse_args_with_recipe", "resolved_arguments"]


class RecipeError(ValueError):
    """A recipe file that cannot be applied (unreadable, not a mapping, an unknown key, a bad value)."""


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML file into a flat dict (keys with ``-`` normalised to ``_``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--recipe {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"--recipe {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"--recipe {path}: expected a mapping of option names to values, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _check_value(path: Path, action: argparse.Action, value: Any) -> Any:
    """Convert a YAML value with the option's own type, so that a recipe and the command line agree."""
    if value is None:
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise RecipeError(f"--recipe {path}: {action.dest} takes true or false, got {value!r}")
        return value

    def one(v: Any) -> Any:
        # YAML's true / false and 2.5 must not become 1.0 and 2 for a number option: the command line refuses them.
        if isinstance(v, bool) and action.type is not None:
            raise RecipeError(f"--recipe {path}: {action.dest}={value!r}: takes a {action.type.__name__} value, not "
                              "true / false")
        if action.type is int and isinstance(v, float) and not v.is_integer():
            raise RecipeError(f"--recipe {path}: {action.dest}={value!r}: takes an integer")
        try:
            # YAML reads 1e-3 as a string (no dot): the option's own type converts it as the command line would.
            v = action.type(v) if action.type is not None else v
        except (TypeError, ValueError) as e:
            raise RecipeError(f"--recipe {path}: {action.dest}={value!r}: {e}") from None
        if action.choices is not None and v not in action.choices:
            raise RecipeError(f"--recipe {path}: {action.dest}={v!r} is not one of {list(action.choices)}")
        return v

    if action.nargs in ("*", "+") or isinstance(action.nargs, int):
        values = value if isinstance(value, (list, tuple)) else [value]
        return [one(v) for v in values]
    if isinstance(value, (list, tuple, dict)):
        raise RecipeError(f"--recipe {path}: {action.dest} takes one value, got {value!r}")
    return one(value)


def parse_args_with_recipe(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, presets: dict[str, dict[str, Any]] | None = None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv`` with the recipe named by ``--recipe`` (and any named ``presets`` switched on by a flag of the
    same name, such as ``--demo``) as defaults: the command line always wins.

    Returns the arguments and the recipe that was applied (file keys, documentation keys included).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    # --help waits for the final parse, so that it shows the recipe's defaults and its --no_<flag> switch-offs.
    first, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    recipe: dict[str, Any] = {}
    for name, values in (presets or {}).items():
        if getattr(first, name, False):
            recipe.update(values)
    recipe_path = getattr(first, "recipe", None)
    if recipe_path:
        recipe.update(load_recipe(recipe_path))
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "recipe")}
    defaults = {}
    for key, value in recipe.items():
        if key.startswith("_"):
            continue
        if key not in actions:
            where = recipe_path or "the built-in recipe"
            raise RecipeError(f"--recipe {where}: unknown option {key!r}; recipe keys are the script's option names "
                              "(see --help)")
        defaults[key] = _check_value(Path(recipe_path or "<built-in>"), actions[key], value)
    parser.set_defaults(**defaults)
    _add_switch_offs(parser, [actions[key] for key, value in defaults.items() if value is True])
    return parser.parse_args(argv), recipe


def _add_switch_offs(parser: argparse.ArgumentParser, switched_on: Sequence[argparse.Action]) -> None:
    """``--no_<option>`` for each flag (``store_true``) the recipe switches on, so that the command line still wins:
    a flag alone can only switch itself on."""
    for action in switched_on:
        if not isinstance(action, argparse._StoreTrueAction):
            continue
        try:
            # No default of its own (the help would show the flag's, True, as this switch's).
            parser.add_argument("--no_" + action.option_strings[-1].lstrip("-"), dest=action.dest,
                                action="store_false", default=argparse.SUPPRESS,
                                help=f"switch off {action.option_strings[-1]}, which the recipe switches on")
        except argparse.ArgumentError:  # the script has that option already
            pass


def resolved_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The final arguments as a JSON-serialisable dict (paths as strings)."""
    return json.loads(json.dumps(vars(args), default=str))
