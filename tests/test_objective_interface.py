"""The objective interface (losses/base.py): what the trainer, the plan and the run summary ask of an objective
without looking at its type."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_config
from torch import nn

from mipic_hf import MatryoshkaConfig
from mipic_hf.losses import MatryoshkaObjective, check_objective
from mipic_hf.losses.objective import build_objective
from mipic_hf.recipe.plan import objective_lines
from mipic_hf.training.arguments import MIPICTrainingArguments


def _objective(tmp_path: Path, **kwargs: object) -> MatryoshkaObjective:
    config = MatryoshkaConfig(text_config=tiny_config("bert", num_layers=4), matryoshka_dimensions=[8, 16, 32, 64])
    args = MIPICTrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)
    return build_objective(args, config, "mnrl", None)


def test_every_method_honours_the_interface(tmp_path: Path) -> None:
    for method, hidden, citation in [
        ("mipic", True, "arXiv:2604.24374"),
        ("mrl", False, "Matryoshka Representation Learning"),
        ("none", False, "Matryoshka Representation Learning"),
        ("starbucks", True, "arXiv:2410.13230"),
        ("2dmse", True, None),
    ]:
        objective = _objective(tmp_path, method=method)
        assert isinstance(objective, MatryoshkaObjective), method
        assert objective.needs_hidden_states is hidden, method
        assert objective.task_weight == 1.0 and objective.token_terms(None) == {} and not objective.has_token_terms
        assert (citation is None and objective.citation is None) or citation in objective.citation, method


def test_config_dict_describes_mipic_and_starbucks(tmp_path: Path) -> None:
    mipic = _objective(tmp_path, method="mipic", preset="default")
    config = mipic.config_dict()
    assert config["alpha"] == 0.4 and config["terms"] == {"sia": False, "pic": False, "rung": True}
    assert config["pic_ladder"] == [list(rung) for rung in mipic.ladder] and "sia_layers" not in config
    assert objective_lines(config)[1] == "  SIA        off, alpha 0.4"
    tuned = _objective(tmp_path, method="mipic", preset="tuned")
    assert tuned.has_token_terms and tuned.config_dict()["sia_layers"] == list(tuned.sia.layers)
    starbucks = _objective(tmp_path, method="starbucks")
    assert starbucks.config_dict() == {"pairs": [list(pair) for pair in starbucks.pairs]}
    assert objective_lines(starbucks.config_dict()) == [
        "  diagonal   " + " ".join(f"({dim},{layer})" for dim, layer in starbucks.pairs)
    ]


def test_a_module_that_is_no_objective_is_refused() -> None:
    with pytest.raises(TypeError, match="objective must be a mipic_hf.losses.MatryoshkaObjective .* got Linear"):
        check_objective(nn.Linear(2, 2))


def test_the_teacher_term_is_built_by_the_losses_for_the_recipe_and_the_trainer(tmp_path: Path, tiny_backbone) -> None:
    """build_teacher_loss: None without a teacher; its settings and citation; dims and exits checked against the
    model there, so the Python API (the trainer) and a recipe refuse them with the same words."""
    from mipic_hf.losses.objective import build_teacher_loss
    from mipic_hf.recipe import RecipeError, parse_recipe
    from mipic_hf.recipe.plan import build_plan

    config = MatryoshkaConfig(text_config=tiny_config("bert", num_layers=4), matryoshka_dimensions=[8, 16, 32, 64])

    def args(**kwargs: object) -> MIPICTrainingArguments:
        return MIPICTrainingArguments(output_dir=str(tmp_path), report_to="none", **kwargs)

    assert build_teacher_loss(args(), config) is None
    term = build_teacher_loss(args(teacher_model="initial", teacher_dims=[8, 32], teacher_temperature=0.05), config)
    assert term.config_dict() == {"dims": [8, 32], "temperature": 0.05, "cka_weight": 0.0, "relation": "kl"}
    assert "Relational Knowledge Distillation" in term.citation
    with pytest.raises(ValueError, match=r"^teacher_dims must lie in 1..64, got \[65\]$"):
        build_teacher_loss(args(teacher_model="initial", teacher_dims=[8, 65]), config)
    with pytest.raises(ValueError, match=r"^teacher_layers must lie in 1..4 \(num_hidden_layers\), got \[5\]$"):
        build_teacher_loss(args(teacher_model="initial", teacher_layers=[5]), config)
    recipe = ["--backbone", tiny_backbone, "--train_data", "stsb", "--output_dir", str(tmp_path / "o"), "--dry_run"]
    with pytest.raises(RecipeError, match=r"^teacher.teacher_dims must lie in 1..64, got \[65\]$"):
        build_plan(parse_recipe([*recipe, "--teacher_model", "initial", "--teacher_dims", "8", "65"]))
    plan = build_plan(parse_recipe([*recipe, "--teacher_model", "initial", "--teacher_dims", "8", "16"]))
    assert plan.teacher_loss.dims == [8, 16]
    assert "teacher    initial: relation KL (tau 0.2) x10 at dims [8, 16]" in plan.describe()
