"""Gradient caching (``cache_mini_batch_size``): the gradient of the whole batch, mini-batch by mini-batch."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from test_trainer import make_args, make_dataset, tiny_model
from transformers import AutoTokenizer

from mipic_hf import MIPICTrainer
from mipic_hf.training.collator import MatryoshkaDataCollator

CASES = {
    "mrl": dict(method="mrl"),
    "mipic with SIA and PIC": dict(method="mipic", preset="tuned"),
    "mipic default + teacher": dict(method="mipic", preset="default", teacher_model="initial"),
    "classification head": dict(method="mipic", preset="tuned", task_loss="classification", num_labels=3),
}
KINDS = {"classification head": "labeled"}


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


def _trainer(tokenizer, tmp_path: Path, model, rows, **kwargs) -> MIPICTrainer:
    args = make_args(tmp_path, per_device_train_batch_size=len(rows), max_steps=3, **kwargs)
    return MIPICTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)


def _gradients(trainer: MIPICTrainer, batch: dict) -> dict[str, torch.Tensor]:
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.zero_grad(set_to_none=True)
    trainer.training_step(trainer.model, batch)
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _pair(tokenizer, tmp_path: Path, case: str, dropout: float, mini: int):
    torch.manual_seed(0)
    rows = make_dataset(KINDS.get(case, "pairs"), n=8)
    model = tiny_model(tokenizer, dropout=dropout)
    plain = _trainer(tokenizer, tmp_path / "plain", model, rows, **CASES[case])
    cached = _trainer(
        tokenizer, tmp_path / "cached", copy.deepcopy(model), rows, cache_mini_batch_size=mini, **CASES[case]
    )
    cached.model.load_state_dict(plain.model.state_dict())  # the same auxiliary modules too
    batch = MatryoshkaDataCollator(tokenizer)([rows[i] for i in range(len(rows))])
    return plain, cached, batch


@pytest.mark.parametrize("case", list(CASES))
def test_cached_gradients_equal_the_whole_batch_gradients(case: str, tokenizer, tmp_path: Path) -> None:
    """Dropout off, 8 rows in mini-batches of 3 (3, 3, 2): every parameter's gradient (encoder and auxiliary
    modules) within 1e-5 of one pass over the batch, and the same logged loss."""
    plain, cached, batch = _pair(tokenizer, tmp_path, case, dropout=0.0, mini=3)
    expected, got = _gradients(plain, batch), _gradients(cached, batch)
    assert set(got) == set(expected) and any("objective" in n for n in expected) == (
        case != "mrl" and "default" not in case
    )
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    logged = {k: torch.stack(v).mean().item() for k, v in cached._components["train"].items()}
    reference = {k: torch.stack(v).mean().item() for k, v in plain._components["train"].items()}
    assert logged.keys() == reference.keys()
    for name, value in reference.items():
        assert logged[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_dropout_masks_are_replayed(tokenizer, tmp_path: Path) -> None:
    """Dropout on and one mini-batch per column: the replay draws the masks of the first pass, so the gradient is
    the plain step's (without the RNG replay it is not: a guard that the comparison can fail)."""
    plain, cached, batch = _pair(tokenizer, tmp_path, "mipic with SIA and PIC", dropout=0.1, mini=8)
    torch.manual_seed(1)
    expected = _gradients(plain, batch)
    torch.manual_seed(1)
    got = _gradients(cached, batch)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    torch.manual_seed(2)  # other masks: other gradients
    other = _gradients(plain, batch)
    assert any(not torch.allclose(other[n], g, atol=1e-5) for n, g in expected.items())


def test_three_cached_steps_train_like_three_plain_ones(tokenizer, tmp_path: Path) -> None:
    """3 optimizer steps of 8 rows (mini-batches of 4) end at the plain run's weights within 1e-5."""
    plain, cached, _ = _pair(tokenizer, tmp_path, "mipic with SIA and PIC", dropout=0.0, mini=4)
    start = {name: value.clone() for name, value in plain.model.state_dict().items()}
    plain.train()
    cached.train()
    for (name, p), q in zip(plain.model.named_parameters(), cached.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, atol=1e-5, rtol=0, msg=name)
    moved = max((value - start[name]).abs().max().item() for name, value in plain.model.state_dict().items())
    assert moved > 1e-4, "the runs must train for the comparison to mean anything"


def test_cache_settings_are_checked_before_training(tokenizer, tmp_path: Path) -> None:
    rows = make_dataset("pairs", n=8)
    with pytest.raises(ValueError, match="cache_mini_batch_size must be >= 1, got 0"):
        _trainer(tokenizer, tmp_path, tiny_model(tokenizer), rows, cache_mini_batch_size=0)
    with pytest.raises(ValueError, match="teacher_cka_weight compares whole-batch token states"):
        _trainer(
            tokenizer, tmp_path, tiny_model(tokenizer), rows, cache_mini_batch_size=4, teacher_model="initial",
            teacher_cka_weight=1.0,
        )  # fmt: skip
