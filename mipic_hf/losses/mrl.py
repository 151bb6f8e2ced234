"""Baselines without auxiliary terms: ``mrl`` (the task loss at every prefix) and ``none`` (full width only).

Kusupati et al., "Matryoshka Representation Learning" (NeurIPS 2022). ``none`` is plain fine-tuning of the
full embedding, the reference every Matryoshka method is compared against.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import EncodedText
from .task import MatryoshkaTaskLoss


class MRLLoss(nn.Module):
    """L_MRL on the last layer: ``forward(encoded, labels) -> {"loss", "mrl"}``.

    With ``full_dim_only`` the task loss is applied at the full width alone (method ``none``).
    """

    needs_hidden_states = False

    def __init__(self, task: MatryoshkaTaskLoss, full_dim_only: bool = False) -> None:
        super().__init__()
        self.task = task
        self.full_dim_only = full_dim_only

    def forward(self, encoded: list[EncodedText], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        dims = [self.task.dims[-1]] if self.full_dim_only else None
        out = dict(self.task([e.pooled() for e in encoded], labels, dims=dims))
        out["loss"] = out["mrl"]
        return out
