"""Baselines without auxiliary terms: ``mrl`` (the task loss at every prefix) and ``none`` (full width only).

Kusupati et al., "Matryoshka Representation Learning" (NeurIPS 2022). ``none`` is plain fine-tuning of the
full embedding, the reference every Matryoshka method is compared against.
"""

from __future__ import annotations

import torch

from .base import EncodedText, MatryoshkaObjective
from .task import MatryoshkaTaskLoss


class MRLLoss(MatryoshkaObjective):
    """L_MRL on the last layer: ``forward(encoded, labels) -> {"loss", "mrl"}``.

    With ``full_dim_only`` the task loss is applied at the full width alone (method ``none``).
    """

    needs_hidden_states = False
    citation = """@inproceedings{kusupati2022matryoshka,
  title     = {Matryoshka Representation Learning},
  author    = {Kusupati, Aditya and Bhatt, Gantavya and Rege, Aniket and Wallingford, Matthew and Sinha, Aditya
               and Ramanujan, Vivek and Howard-Snyder, William and Chen, Kaifeng and Kakade, Sham and Jain, Prateek
               and Farhadi, Ali},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2022}
}"""

    def __init__(self, task: MatryoshkaTaskLoss, full_dim_only: bool = False) -> None:
        super().__init__()
        self.task = task
        self.full_dim_only = full_dim_only

    def forward(self, encoded: list[EncodedText], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        dims = [self.task.dims[-1]] if self.full_dim_only else None
        out = dict(self.task([e.pooled() for e in encoded], labels, dims=dims))
        out["loss"] = out["mrl"]
        return out

    def config_dict(self) -> dict[str, object]:
        return {"full_dim_only": self.full_dim_only}
