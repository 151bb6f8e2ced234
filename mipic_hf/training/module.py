"""TrainingModule: the encoder and the objective in one ``nn.Module``, the module the Trainer and accelerate wrap.

The objective's trainable parts (SIA lifts, PIC projectors, the classifier head) are parameters of this module
next to the encoder's, so DDP broadcasts and averages them, and FSDP / DeepSpeed shard them, like any other
weight; ``forward`` computes the whole loss, so every parameter is used inside the wrapped module's forward (what
FSDP needs to gather its shards). Only the encoder is the saved model: ``MIPICTrainer`` writes the objective's
weights to ``mipic_aux.safetensors`` in checkpoints and never exports them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..losses.base import EncodedText
from .teacher import TeacherTerm
from .unwrap import matryoshka_model


class TrainingModule(nn.Module):
    """``forward(features, labels=None, texts=None) -> {"loss": ..., <component>: ...}``.

    Args:
        encoder: the MatryoshkaModel being trained (PEFT-wrapped or not).
        objective: the loss module (``losses.objective.build_objective``), holding any auxiliary parameters.
        task_loss: the task (``simcse`` encodes the single text column twice: two dropout views).
        teacher: the frozen teacher's term, or None. A plain object: the teacher's weights are never parameters
            of this module, so no engine syncs, shards or saves them.
    """

    def __init__(
        self, encoder: nn.Module, objective: nn.Module, task_loss: str, teacher: TeacherTerm | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.objective = objective
        self.task_loss = task_loss
        self.teacher = teacher

    def encode_columns(self, features: list[dict[str, torch.Tensor]]) -> list[EncodedText]:
        """One encoder forward per text column (the single column twice for SimCSE)."""
        task_weight = getattr(getattr(self.objective, "task", None), "weight", 1.0)
        columns = features * 2 if self.task_loss == "simcse" and task_weight else features  # no views: no task
        need_hidden = bool(getattr(self.objective, "needs_hidden_states", True))
        need_hidden = need_hidden or (self.teacher is not None and bool(self.teacher.layers))
        inner = matryoshka_model(self.encoder)
        token_map = inner.rotate if inner.output_rotation is not None else None
        encoded = []
        for batch in columns:
            out = self.encoder(**batch, output_hidden_states=need_hidden)
            encoded.append(
                EncodedText(out.last_hidden_state, batch["attention_mask"], inner.pool, out.hidden_states, token_map)
            )
        return encoded

    def forward(
        self,
        features: list[dict[str, torch.Tensor]],
        labels: torch.Tensor | None = None,
        texts: list[list[str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        encoded = self.encode_columns(features)
        parts = self.objective(encoded, labels)
        if self.teacher is not None:
            parts["teacher"] = self.teacher(encoded, features, texts)
            parts["loss"] = parts["loss"] + self.teacher.weight * parts["teacher"]
        return parts

    # The Trainer turns activation checkpointing on through the module it holds: pass it to the encoder.
    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        self.encoder.activation_checkpointing_enable(**kwargs)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.encoder.gradient_checkpointing_enable(**kwargs)

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(getattr(self.encoder, "is_activation_checkpointing", False))
