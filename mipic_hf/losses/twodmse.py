"""2DMSE / ESE baseline: one random layer and one random prefix per step, plus KL to the last layer.

Li et al., "2D Matryoshka Sentence Embeddings" (2024) and ESE ("Espresso Sentence Embeddings"); the
sentence-transformers ``Matryoshka2dLoss`` follows the same recipe. Each step samples a layer l from the
trained exit layers (below the last) and a prefix d < D, then

    L = task(L, D) + task(L, d) + w(l) * (task(l, D) + task(l, d)) + kl_weight * KL(p_L || p_l)

where p are the softmax(scores / kl_temperature) rows of the task's similarity logits at full width, the
last layer is the teacher and is detached (the bug sentence-transformers fixed in #3880), and w(l) is the
layer weighting: ``uniform`` 1, ``log`` 1 / (1 + ln l), ``linear`` 1 / (1 + l), l the 1-based layer.
Sampling uses torch's global RNG, which the Trainer saves and restores with checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import EncodedText, MatryoshkaObjective
from .task import MatryoshkaTaskLoss

LAYER_WEIGHTINGS = ("uniform", "log", "linear")


def layer_weight(layer: int, weighting: str) -> float:
    if weighting == "uniform":
        return 1.0
    if weighting == "log":
        return 1.0 / (1.0 + math.log(layer))
    if weighting == "linear":
        return 1.0 / (1.0 + layer)
    raise ValueError(f"twodmse_layer_weighting must be one of {', '.join(LAYER_WEIGHTINGS)}, got {weighting!r}")


class TwoDMSELoss(MatryoshkaObjective):
    """``forward(encoded, labels) -> {"loss", "mrl", "layer", "kl"}`` (mrl = the last-layer part)."""

    needs_hidden_states = True

    def __init__(
        self,
        task: MatryoshkaTaskLoss,
        layers: list[int],
        num_layers: int,
        layer_weighting: str = "log",
        kl_weight: float = 1.0,
        kl_temperature: float = 0.3,
    ) -> None:
        super().__init__()
        layer_weight(1, layer_weighting)  # validates the name
        self.task = task
        self.layers = [layer for layer in layers if layer < num_layers] or [max(1, num_layers - 1)]
        self.prefix_dims = [d for d in task.dims if d < task.dims[-1]] or [task.dims[-1]]
        self.layer_weighting = layer_weighting
        self.kl_weight = kl_weight
        self.kl_temperature = kl_temperature

    def config_dict(self) -> dict[str, object]:
        return {
            "layers": list(self.layers),
            "layer_weighting": self.layer_weighting,
            "kl_weight": self.kl_weight,
            "kl_temperature": self.kl_temperature,
        }

    def sample(self) -> tuple[int, int]:
        """One (layer, dim) for this step, from torch's global RNG."""
        layer = self.layers[int(torch.randint(len(self.layers), ()).item())]
        dim = self.prefix_dims[int(torch.randint(len(self.prefix_dims), ()).item())]
        return layer, dim

    def forward(self, encoded: list[EncodedText], labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        layer, dim = self.sample()
        full = self.task.dims[-1]
        last = [e.pooled() for e in encoded]
        shallow = [e.pooled(layer) for e in encoded]
        last_part = self.task(last, labels, dims=[full, dim])["mrl"]
        layer_part = layer_weight(layer, self.layer_weighting) * self.task(shallow, labels, dims=[full, dim])["mrl"]
        with torch.autocast(device_type=last_part.device.type, enabled=False):
            teacher = F.softmax(self.task.scores(last, full).detach() / self.kl_temperature, dim=-1)
            student = F.log_softmax(self.task.scores(shallow, full) / self.kl_temperature, dim=-1)
            kl = F.kl_div(student, teacher, reduction="batchmean")
        loss = last_part + layer_part + self.kl_weight * kl
        return {"loss": loss, "mrl": last_part, "layer": layer_part, "kl": kl}
