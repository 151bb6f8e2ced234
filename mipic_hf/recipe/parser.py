"""Recipes: YAML sections parsed by HfArgumentParser into dataclasses, with command-line overrides.

A recipe has sections ``model``, ``data``, ``loss``, ``teacher``, ``lora``, ``eval``, ``export``, ``hub`` and
``training``
(any TrainingArguments field). Keys may also be given flat at the top level. On the command line, the flat
field name overrides the file (``--learning_rate 1e-5 --matryoshka_dimensions 8 16 64 384``), as
HfArgumentParser does. Unknown keys fail before any work, naming the key and the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..training.arguments import MIPICTrainingArguments
from ..training.field_rules import nonfinite
from .arguments import Recipe, RecipeError

GROUPS = Recipe.groups()
DATACLASSES = tuple(GROUPS.values())

# Keys renamed since a release: the error names the new key instead of a guess.
RENAMED = {"output_rotation": "fit_rotation"}


_TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}


_HUB_FIELDS = {name for name in _TRAINING_FIELDS if name.startswith("hub_")} | {"push_to_hub"}


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# A recipe section per group, except the run switches (top level only) and the training group, whose
# MIPICTrainingArguments fields are split into loss, teacher, hub and training.
SECTIONS: dict[str, set[str]] = {
    **{name: _names(cls) for name, cls in GROUPS.items() if name not in ("run", "training")},
    "loss": {n for n in _names(MIPICTrainingArguments) if not n.startswith("teacher_")} - _TRAINING_FIELDS,
    "teacher": {n for n in _names(MIPICTrainingArguments) if n.startswith("teacher_")},
    "hub": _HUB_FIELDS,
    "training": _TRAINING_FIELDS - _HUB_FIELDS,
}


ALL_FIELDS: set[str] = set().union(*SECTIONS.values()) | _names(GROUPS["run"])


def _closest(key: str, candidates: set[str]) -> str:
    if key in RENAMED:
        return f"; it is now '{RENAMED[key]}'"
    match = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def section_of(key: str) -> str | None:
    """The recipe section a field belongs to (None for the run switches)."""
    return next((s for s, keys in SECTIONS.items() if key in keys), None)


def flatten_recipe(recipe: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """Sections -> one flat {field: value}; unknown keys and keys in the wrong section raise RecipeError."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"{source}: the file must hold a mapping of sections (model, data, loss, ...)")
    flat: dict[str, Any] = {}
    for top, value in recipe.items():
        if top in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise RecipeError(f"{source}: section '{top}' must be a mapping of keys, got {type(value).__name__}")
            for key, item in value.items():
                if key not in SECTIONS[top]:
                    home = section_of(key)
                    if home is not None:
                        raise RecipeError(f"{source}: '{top}.{key}' belongs in the '{home}' section")
                    raise RecipeError(f"{source}: unknown key '{top}.{key}'{_closest(key, SECTIONS[top])}")
                flat[key] = item
        elif top in ALL_FIELDS:
            flat[top] = value
        else:
            raise RecipeError(f"{source}: unknown key '{top}'{_closest(top, ALL_FIELDS | set(SECTIONS))}")
    return flat


def _tokens(key: str, value: Any) -> list[str]:
    """A recipe value as the command-line tokens HfArgumentParser reads (so it type-checks them)."""
    if value is None:
        return []
    if isinstance(value, bool):
        return [f"--{key}", "true" if value else "false"]
    if isinstance(value, (list, tuple)):
        items = [":".join(str(v) for v in item) if isinstance(item, (list, tuple)) else str(item) for item in value]
        return [f"--{key}", *(items or ["none"])] if items or key == "eval_tasks" else []
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", str(value)]


def _check_cli(argv: list[str]) -> None:
    for token in argv:
        if token.startswith("--"):
            key = token[2:].split("=", 1)[0]
            if key not in ALL_FIELDS:
                raise RecipeError(f"unknown option '--{key}'{_closest(key, ALL_FIELDS)}")


def parse_recipe(argv: list[str]) -> Recipe:
    """``[RECIPE.yaml] [--field value ...]`` -> a :class:`Recipe` (one dataclass per section group).

    Values from the file are validated by the same parser as the command line (types, choices), and the
    command line wins. ``output_dir`` defaults to ``runs/<recipe name>``.
    """
    argv = list(argv)
    recipe_path = None
    if argv and not argv[0].startswith("-"):
        recipe_path = argv.pop(0)
    flat: dict[str, Any] = {}
    if recipe_path is not None:
        path = Path(recipe_path)
        if not path.is_file():
            raise RecipeError(f"recipe '{recipe_path}' does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe '{recipe_path}' is not valid YAML: {str(err).splitlines()[0]}") from None
        flat = flatten_recipe(loaded or {}, source=str(recipe_path))
        flat.setdefault("output_dir", str(Path("runs") / path.stem))
    _check_cli(argv)
    tokens = [t for key, value in flat.items() for t in _tokens(key, value)] + argv
    if "output_dir" not in flat and not any(t.split("=")[0] == "--output_dir" for t in argv):
        tokens += ["--output_dir", "runs/mipic"]
    parser = HfArgumentParser(DATACLASSES)

    def one_line_error(message: str) -> None:  # argparse would print its usage screen and exit
        raise RecipeError(message.splitlines()[0])

    parser.error = one_line_error  # type: ignore[method-assign]
    # Keep the token order: the file first, then the command line (argparse keeps the last value).
    try:
        return Recipe(*parser.parse_args_into_dataclasses(args=tokens, look_for_args_file=False))
    except OverflowError:  # TrainingArguments' __post_init__ turning an inf step count into an int
        raise RecipeError(_nonfinite_message(tokens)) from None
    except ValueError as err:
        dry_run = any(t.split("=")[0] == "--dry_run" for t in tokens)
        if dry_run and ("bf16" in str(err) or "fp16" in str(err)):
            # A GPU recipe dry-run on a machine without bf16/fp16 support: validate everything else.
            parsed = parser.parse_args_into_dataclasses(
                args=[*tokens, "--bf16", "false", "--fp16", "false"], look_for_args_file=False
            )
            print(f"note: {str(err).splitlines()[0]} (mixed precision not checked in this dry run)")
            return Recipe(*parsed)
        raise RecipeError(qualified(str(err).splitlines()[0])) from None


def qualified(message: str) -> str:
    """A dataclass's field error (``<field> must be ...``) with the field's recipe section in front, so a recipe
    and the Python API refuse a value with the same words (``loss.alpha must lie ...`` / ``alpha must lie ...``)."""
    name = message.split(" ", 1)[0]
    section = section_of(name)
    return f"{section}.{message}" if section and name in ALL_FIELDS else message


def _nonfinite_message(tokens: list[str]) -> str:
    """The error for the first ``--field value`` whose value is an infinite or NaN number."""
    for key, value in zip(tokens, tokens[1:], strict=False):
        if key.startswith("--"):
            try:
                number = float(value)
            except ValueError:
                continue
            if not math.isfinite(number):
                return nonfinite_message(key[2:].split("=")[0], value)
    return "a number in the recipe is not finite (inf or nan)"


def nonfinite_message(name: str, value: Any) -> str:
    """``<section>.<name> must be a finite number, got <value>``: the field rules' wording, with the section."""
    return qualified(nonfinite(name, value))


def recipe_help(prog: str, description: str) -> str:
    """``--help``: the usage line, the command's description and every field a recipe or the command line may set
    (HfArgumentParser's help for the recipe dataclasses, TrainingArguments included)."""
    parser = HfArgumentParser(DATACLASSES, prog=prog, usage=f"{prog} [RECIPE.yaml] [--field value ...] [--dry_run]")
    parser.description = description
    return parser.format_help()
