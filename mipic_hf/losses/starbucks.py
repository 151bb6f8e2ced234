"""Starbucks baseline: the task loss on a fixed diagonal of (layer, dim) pairs, uniform weights.

Zhuang et al., "Starbucks: Improved Training for 2D Matryoshka Embeddings" (2024): instead of sampling,
every step trains the same diagonal, e.g. (2, 32) (4, 64) ... (12, 768) on BERT-base; small prefixes go
with shallow layers. L = sum over the pairs of task(layer, dim).
"""

from __future__ import annotations

import torch

from .base import EncodedText, MatryoshkaObjective
from .task import MatryoshkaTaskLoss


class StarbucksLoss(MatryoshkaObjective):
    """``forward(encoded, labels) -> {"loss", "mrl"}``; ``pairs`` are (dim, layer), as the PIC ladder."""

    needs_hidden_states = True
    citation = """@article{zhuang2024starbucks,
  title   = {Starbucks: Improved Training for 2D Matryoshka Embeddings},
  author  = {Zhuang, Shengyao and Wang, Shuai and Koopman, Bevan and Zuccon, Guido},
  journal = {arXiv preprint arXiv:2410.13230},
  year    = {2024}
}"""

    def __init__(self, task: MatryoshkaTaskLoss, pairs: list[tuple[int, int]]) -> None:
        super().__init__()
        self.task = task
        self.pairs = [tuple(p) for p in pairs]

    def forward(self, encoded: list[EncodedText], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        total = self.task.at_exits(encoded, labels, self.pairs)
        return {"loss": total, "mrl": total}

    def config_dict(self) -> dict[str, object]:
        return {"pairs": [list(pair) for pair in self.pairs]}
