"""One owner per field rule: the Python API (building the argument dataclasses, the transformers way) and a recipe
refuse a bad value with the same line, the recipe's prefixed by the field's section."""

from __future__ import annotations

from pathlib import Path

import pytest

from mipic_hf.recipe.arguments import EvalArguments, LoraArguments, ModelArguments
from mipic_hf.run import main
from mipic_hf.training.arguments import MIPICTrainingArguments

NAN = float("nan")
# (the dataclass, its field, a bad value, the section a recipe names it in, the refusal)
CASES = [
    (MIPICTrainingArguments, "teacher_weight", -1.0, "teacher", "teacher_weight must be >= 0, got -1.0"),
    (MIPICTrainingArguments, "teacher_temperature", 0.0, "teacher", "teacher_temperature must be > 0, got 0.0"),
    (MIPICTrainingArguments, "alpha", 2.0, "loss", "alpha must be in [0, 1], got 2.0"),
    (MIPICTrainingArguments, "alpha", -0.1, "loss", "alpha must be in [0, 1], got -0.1"),
    (MIPICTrainingArguments, "temperature", 0.0, "loss", "temperature must be > 0, got 0.0"),
    (MIPICTrainingArguments, "attention_temperature", 0.0, "loss", "attention_temperature must be > 0, got 0.0"),
    (MIPICTrainingArguments, "sia_cka_weight", NAN, "loss", "sia_cka_weight must be a finite number, got nan"),
    (MIPICTrainingArguments, "pic_weight", -1.0, "loss", "pic_weight must be >= 0, got -1.0"),
    (MIPICTrainingArguments, "task_weight", -1.0, "loss", "task_weight must be >= 0, got -1.0"),
    (MIPICTrainingArguments, "learning_rate", -1.0, "training", "learning_rate must be > 0, got -1.0"),
    (MIPICTrainingArguments, "adam_beta2", 1.0, "training", "adam_beta2 must be in [0, 1), got 1.0"),
    (ModelArguments, "calibration_mode", "minmax", "model", "calibration_mode must be one of coordinate, shared, auto"),
    (ModelArguments, "fit_rotation", "sometimes", "model", "fit_rotation must be one of auto, none, before"),
    (LoraArguments, "lora_dropout", 1.5, "lora", "lora_dropout must be in [0, 1), got 1.5"),
    (EvalArguments, "eval_target", 1.5, "eval", "eval_target must be a number in (0, 1], got 1.5"),
]


def _build(cls: type, name: str, value: object, tmp_path: Path) -> object:
    extra = {"output_dir": str(tmp_path / "api"), "report_to": "none"} if cls is MIPICTrainingArguments else {}
    return cls(**{name: value}, **extra)


@pytest.mark.parametrize(("cls", "name", "value", "section", "message"), CASES, ids=[f"{c[1]}={c[2]}" for c in CASES])
def test_the_python_api_and_a_recipe_refuse_alike(
    cls: type, name: str, value: object, section: str, message: str, tiny_backbone: str, tmp_path: Path, capsys
) -> None:
    with pytest.raises(ValueError) as api:
        _build(cls, name, value, tmp_path)
    assert str(api.value).startswith(message), str(api.value)
    out = tmp_path / "out"
    code = main(
        [
            *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", "stsb"),
            *("--max_steps", "1", "--eval_tasks", "none", "--report_to", "none", "--output_dir", str(out)),
            *(f"--{name}", str(value)),
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and err == [f"error: {section}.{api.value}"], err
    assert not out.exists()


def test_teacher_sources_exclude_each_other_in_both_paths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^teacher_model and teacher_cache exclude each other; set one$"):
        MIPICTrainingArguments(output_dir=str(tmp_path), teacher_model="initial", teacher_cache="t.safetensors")
