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

from ..losses.base import EncodedText, MatryoshkaObjective
from .grad_cache import CachedBatch, Replay, encode_without_grad, replay_loss
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
        self, encoder: nn.Module, objective: MatryoshkaObjective, task_loss: str, teacher: TeacherTerm | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.objective = objective
        self.task_loss = task_loss
        self.teacher = teacher

    @property
    def needs_hidden_states(self) -> bool:
        need = self.objective.needs_hidden_states
        return need or (self.teacher is not None and bool(self.teacher.layers))

    def columns(self, features: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """The encoder passes of a batch: one per text column, the single column twice for SimCSE's two views."""
        twice = self.task_loss == "simcse" and self.objective.task_weight
        return features * 2 if twice else features  # no views: no task

    def encode(self, batch: dict[str, torch.Tensor]) -> EncodedText:
        """One encoder forward over one text column."""
        inner = matryoshka_model(self.encoder)
        token_map = inner.rotate if inner.output_rotation is not None else None
        out = self.encoder(**batch, output_hidden_states=self.needs_hidden_states)
        return EncodedText(out.last_hidden_state, batch["attention_mask"], inner.pool, out.hidden_states, token_map)

    def encode_columns(self, features: list[dict[str, torch.Tensor]]) -> list[EncodedText]:
        return [self.encode(batch) for batch in self.columns(features)]

    def forward(
        self,
        features: list[dict[str, torch.Tensor]] | None = None,
        labels: torch.Tensor | None = None,
        texts: list[list[str]] | None = None,
        replay: Replay | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss of the batch and its components; with ``replay``, one replayed mini-batch of a gradient-cached
        step (``training.grad_cache``) and its surrogate loss."""
        if replay is not None:
            with replay.mini.rand.replay():
                encoded = self.encode(replay.mini.features)
            return replay_loss(encoded, replay, self.objective.token_terms)
        encoded = self.encode_columns(features)
        return self._with_teacher(self.objective(encoded, labels), encoded, features, texts)

    def _with_teacher(
        self, parts: dict[str, torch.Tensor], encoded: list[EncodedText], features: Any, texts: Any, taught: Any = None
    ) -> dict[str, torch.Tensor]:
        """``parts`` plus the teacher's term, weighted into the loss (unchanged without a teacher)."""
        if self.teacher is not None:
            parts["teacher"] = self.teacher(encoded, features, texts, taught=taught)
            parts["loss"] = parts["loss"] + self.teacher.weight * parts["teacher"]
        return parts

    def cached_batch_loss(
        self, features: list[dict[str, torch.Tensor]], labels: Any, texts: Any, size: int
    ) -> tuple[CachedBatch, dict[str, torch.Tensor], Any]:
        """Steps 1 and 2 of a gradient-cached step: the batch encoded without grad in mini-batches of ``size``,
        and its embedding-level loss (the teacher also runs mini-batch by mini-batch), plus the kwargs that leave
        the token-level terms out of the objective."""
        num_layers = int(matryoshka_model(self.encoder).config.text_config.num_hidden_layers)
        layers = list(range(1, num_layers)) if self.needs_hidden_states else []
        cached = encode_without_grad(self.encode, self.columns(features), size, layers, num_layers)
        skip = {"with_token_terms": False} if self.objective.has_token_terms else {}
        taught = self.teacher.embed(features, texts, size) if self.teacher is not None else None
        parts = self.objective(cached.encoded, labels, **skip)
        parts = self._with_teacher(parts, cached.encoded, features, texts, taught)
        return cached, parts, skip

    # The Trainer turns activation checkpointing on through the module it holds: pass it to the encoder.
    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        self.encoder.activation_checkpointing_enable(**kwargs)

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        self.encoder.gradient_checkpointing_enable(**kwargs)

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(getattr(self.encoder, "is_activation_checkpointing", False))
