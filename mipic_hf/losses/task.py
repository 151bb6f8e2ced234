"""L_MRL: the task loss applied at every nested prefix of the sentence embedding (MIPIC section 1).

Kusupati et al., "Matryoshka Representation Learning" (NeurIPS 2022); MIPIC (arXiv 2604.24374) eq. for
L_MRL. The pooled vector z is cut to its first d coordinates, L2-normalised, and the task loss is applied
at every d in the dimension list, weighted (default: equal weights), and summed.

Task losses (``task``), by the data a user has:
- ``simcse``: single sentences encoded twice (dropout makes two views); InfoNCE with cos / tau, the other
  sentences of the batch as negatives (Gao et al., SimCSE, 2021).
- ``mnrl``: (anchor, positive[, negatives...]); InfoNCE of the anchor against every positive and negative
  in the batch (multiple negatives ranking loss, Henderson et al. 2017).
- ``cosent``: (sentence1, sentence2, score); CoSENT ranking of pair cosines by score (Su, 2022).
- ``classification``: (sentence, label); cross-entropy through a nested cosine classifier: one weight matrix
  W (C x D) whose first d columns classify the d-prefix, logits = scale * cos(z[:d], W[:, :d]).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .gather import gather_with_local_grad

if TYPE_CHECKING:
    from .base import EncodedText

TASKS = ("simcse", "mnrl", "cosent", "classification")


def prefix(z: torch.Tensor, dim: int) -> torch.Tensor:
    """First ``dim`` coordinates of (B, D) vectors, L2-normalised, in float32."""
    return F.normalize(z[..., :dim].float(), p=2, dim=-1)


def infonce_logits(anchor: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine logits / tau of unit vectors: (B, d) x (N, d) -> (B, N)."""
    return anchor @ candidates.T / temperature


def cosent_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CoSENT: log(1 + sum over pairs (i, j) with label_i > label_j of exp(s_j - s_i)), scores already scaled."""
    diff = scores[None, :] - scores[:, None]  # diff[i, j] = s_j - s_i
    wanted = labels[:, None] > labels[None, :]
    diff = diff.masked_fill(~wanted, float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), dim=0)


def check_task_inputs(task: str, num_text_columns: int, has_labels: bool) -> None:
    """Fail with one line when the data does not fit the task loss."""
    need, ok = {
        "simcse": ("1 text column and no labels", num_text_columns == 1 and not has_labels),
        "mnrl": ("2 or more text columns (anchor, positive[, negatives])", num_text_columns >= 2),
        "cosent": ("2 text columns and a score column", num_text_columns == 2 and has_labels),
        "classification": ("1 text column and a label column", num_text_columns == 1 and has_labels),
    }[task]
    if not ok:
        labels = "a label/score column" if has_labels else "no label column"
        found = f"{num_text_columns} text column(s) and {labels}"
        raise ValueError(f"task_loss {task!r} needs {need}; the data has {found}")


class NestedCosineClassifier(nn.Module):
    """One (num_labels x D) weight matrix; the d-prefix is classified by its first d columns."""

    def __init__(self, hidden_size: int, num_labels: int, scale: float) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2 for classification, got {num_labels}")
        self.weight = nn.Parameter(torch.randn(num_labels, hidden_size) / hidden_size**0.5)
        self.scale = scale

    def forward(self, z_prefix: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight[:, : z_prefix.shape[-1]].float(), dim=-1)
        return self.scale * z_prefix @ w.T


class MatryoshkaTaskLoss(nn.Module):
    """The task loss at every nested prefix, weighted and summed (L_MRL).

    Inputs: ``pooled``, a list of full-width pooled vectors (B, D), one per text column (for ``simcse`` the
    two dropout views); ``labels`` (B,) float scores for ``cosent``, int classes for ``classification``.
    Output: ``{"mrl": weight * sum_d w_d * loss_d}`` (``weight``: ``task_weight``; 0 skips the computation).
    """

    def __init__(
        self,
        task: str,
        dims: list[int],
        dim_weights: list[float] | None = None,
        temperature: float = 0.05,
        cosent_scale: float = 20.0,
        hidden_size: int | None = None,
        num_labels: int | None = None,
        gather_across_devices: bool = False,
        weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not weight >= 0:  # NaN fails too
            raise ValueError(f"task_weight must be >= 0, got {weight}")
        self.weight = float(weight)
        if task not in TASKS:
            raise ValueError(f"task_loss must be one of {', '.join(TASKS)}, got {task!r}")
        if dim_weights is not None and len(dim_weights) != len(dims):
            raise ValueError(f"mrl_dim_weights needs one weight per dimension ({len(dims)}), got {len(dim_weights)}")
        self.task = task
        self.dims = list(dims)
        self.dim_weights = list(dim_weights) if dim_weights is not None else [1.0] * len(dims)
        self.temperature = temperature
        self.cosent_scale = cosent_scale
        self.gather_across_devices = gather_across_devices
        self.num_candidates: int | None = None  # InfoNCE candidates per anchor in the last call (logged)
        self.classifier = None
        if task == "classification":
            if hidden_size is None or num_labels is None:
                raise ValueError("classification needs hidden_size and num_labels")
            self.classifier = NestedCosineClassifier(hidden_size, num_labels, scale=1.0 / temperature)

    def scores(self, pooled: list[torch.Tensor], dim: int) -> torch.Tensor:
        """The similarity logits the task loss is computed from, at one prefix (rows are distributions)."""
        views = [prefix(z, dim) for z in pooled]
        if self.task in ("simcse", "mnrl"):
            return infonce_logits(views[0], torch.cat(views[1:]), self.temperature)
        if self.task == "cosent":
            return ((views[0] * views[1]).sum(-1) * self.cosent_scale)[None, :]
        return self.classifier(views[0])

    def loss_at(
        self, pooled: list[torch.Tensor], labels: torch.Tensor | None, dim: int, offset: int = 0
    ) -> torch.Tensor:
        """The task loss at one prefix width (``offset``: the row of this rank's first positive when the
        candidates were gathered from every rank)."""
        logits = self.scores(pooled, dim)
        if self.task in ("simcse", "mnrl"):
            self.num_candidates = logits.shape[1]
            targets = torch.arange(logits.shape[0], device=logits.device) + offset
            return F.cross_entropy(logits, targets)
        if self.task == "cosent":
            return cosent_loss(logits[0], labels.float())
        return F.cross_entropy(logits, labels.long())

    def forward(
        self, pooled: list[torch.Tensor], labels: torch.Tensor | None = None, dims: list[int] | None = None
    ) -> dict[str, torch.Tensor]:
        dims = self.dims if dims is None else dims
        if not self.weight:  # task_weight 0: no task loss (e.g. a teacher as the only signal)
            return {"mrl": pooled[0].new_zeros((), dtype=torch.float32)}
        weights = dict(zip(self.dims, self.dim_weights, strict=True))
        offset = 0
        if self.gather_across_devices and self.task in ("simcse", "mnrl"):
            gathered = [gather_with_local_grad(z) for z in pooled[1:]]  # anchors stay local
            pooled = [pooled[0], *(z for z, _ in gathered)]
            offset = gathered[0][1]
        total = sum(weights.get(d, 1.0) * self.loss_at(pooled, labels, d, offset) for d in dims)
        return {"mrl": self.weight * total}

    def at_exits(
        self, encoded: list[EncodedText], labels: torch.Tensor | None, pairs: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Sum of the task loss at each (dim, layer) pair: the pooled states of ``layer`` cut to ``dim``, one
        ``EncodedText`` per text column (Starbucks' diagonal, MIPIC's ladder rungs)."""
        return sum(self([e.pooled(layer) for e in encoded], labels, dims=[dim])["mrl"] for dim, layer in pairs)
