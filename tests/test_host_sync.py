"""``compute_loss`` reads nothing back to the host: no ``.item()``, ``bool(tensor)`` or ``if tensor`` of ours in the
hot path (issue 16); on a GPU each such read stalls the launch queue until the forward has finished."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
from test_trainer import make_args, make_dataset, tiny_model
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoTokenizer

import mipic_hf
from mipic_hf import MIPICTrainer
from mipic_hf.training.collator import MatryoshkaDataCollator
from mipic_hf.training.trainer import NonFiniteLossError

PACKAGE = str(Path(mipic_hf.__file__).parent)
TORCH = str(Path(torch.__file__).parent)
CASES = {
    "mrl": dict(method="mrl"),
    "default": dict(method="mipic", preset="default"),
    "tuned (SIA + PIC)": dict(method="mipic", preset="tuned"),
    "paper": dict(method="mipic", preset="paper"),
    "default + teacher": dict(method="mipic", preset="default", teacher_model="initial"),
    "starbucks": dict(method="starbucks"),
}


class HostReads(TorchDispatchMode):
    """Each read of a tensor's value by the host (``aten::_local_scalar_dense``: ``.item()``, ``bool()``,
    ``float()``), named by the first caller outside torch."""

    def __init__(self) -> None:
        super().__init__()
        self.callers: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            outside = (f for f in traceback.extract_stack()[:-1] if not f.filename.startswith(TORCH))  # not this frame
            frames = list(outside)
            self.callers.append(f"{frames[-1].filename}:{frames[-1].lineno}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", list(CASES))
def test_compute_loss_reads_no_tensor_on_the_host(case: str, minilm_path: str, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    rows = make_dataset("pairs", n=8)
    args = make_args(tmp_path, per_device_train_batch_size=8, **CASES[case])
    model = tiny_model(tokenizer, dropout=0.1)
    trainer = MIPICTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    batch = MatryoshkaDataCollator(tokenizer)([rows[i] for i in range(8)])
    trainer.model.train()
    with HostReads() as reads:
        trainer.compute_loss(trainer.model, batch)
        float(torch.ones(()))  # a read the probe must see, named by this file
    assert reads.callers[-1].startswith(__file__), reads.callers
    # transformers' SDPA mask check (``padding_mask.all()``) reads one value per encoder pass; none may be ours
    ours = [c for c in reads.callers if c.startswith(PACKAGE)]
    assert ours == [], ours


def test_the_nonfinite_guard_stops_the_training_step_not_compute_loss(minilm_path: str, tmp_path: Path) -> None:
    """A NaN loss passes ``compute_loss`` (it reads nothing) and stops the training step that ran it, after its
    backward (the run-level behaviour, no later checkpoint: ``test_reliability``)."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    rows = make_dataset("pairs", n=8)
    args = make_args(tmp_path, per_device_train_batch_size=8)
    trainer = MIPICTrainer(model=tiny_model(tokenizer), args=args, train_dataset=rows, processing_class=tokenizer)
    batch = MatryoshkaDataCollator(tokenizer)([rows[i] for i in range(8)])
    with torch.no_grad():
        next(trainer.encoder.parameters()).fill_(float("nan"))
    trainer.model.train()
    assert torch.isnan(trainer.compute_loss(trainer.model, batch))
    trainer.current_gradient_accumulation_steps = 1
    with pytest.raises(NonFiniteLossError, match=r"^loss is nan at step 1 \(non-finite: mrl=nan"):
        trainer.training_step(trainer.model, batch)
    assert all(p.grad is not None for p in trainer.encoder.parameters() if p.requires_grad)  # the backward ran
