"""PIC: Progressive Information Chaining along the depth axis (MIPIC section 3).

MIPIC (arXiv 2604.24374), PIC; docs/method.md. A ladder of checkpoints (d_1, l_1) -> ... -> (d_K, l_K),
strictly growing in width and depth and ending at (D, last layer). z_r = the pooled vector of layer l_r cut
to d_r (L2-normalised). Each link maps the shallower rung up with a small MLP
phi_r: d_r -> max(d_r, d_{r+1}) / 2 -> d_{r+1} (ReLU) and applies InfoNCE (cos / tau, in-batch negatives)
against stop-gradient(z_{r+1}): the deeper rung teaches; only the shallower rung and phi_r learn from the
link. L_PIC = the sum of the K - 1 links.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import EncodedText
from .gather import gather_with_local_grad
from .task import infonce_logits, prefix

AGGREGATIONS = ("sum", "mean")  # over the ladder's links


def parse_ladder(value: object, field: str = "pic_ladder") -> list[tuple[int, int]]:
    """Read a ladder: "16:1,32:2", ["16:1", "32:2"] or [[16, 1], [32, 2]] -> [(16, 1), (32, 2)]."""
    if isinstance(value, str):
        items: list = [v for v in value.replace(" ", ",").split(",") if v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"{field} must be a list of 'dim:layer' pairs, got {value!r}")
    rungs = []
    for item in items:
        try:
            if isinstance(item, str):
                dim, layer = item.split(":")
            else:
                dim, layer = item
            rungs.append((int(dim), int(layer)))
        except (ValueError, TypeError):
            raise ValueError(f"{field} entries must be 'dim:layer' pairs like '64:3', got {item!r}") from None
    return rungs


def default_ladder(dims: list[int], num_layers: int) -> list[tuple[int, int]]:
    """min(#dims, L) rungs ending at (D, L): dims spread over the list, layers spread over the depth.

    E.g. dims 8..384 (7) and 6 layers -> (8,1) (16,2) (32,3) (128,4) (256,5) (384,6).
    """
    k = min(len(dims), num_layers)
    if k == 1:
        return [(dims[-1], num_layers)]
    idx = [math.floor(i * (len(dims) - 1) / (k - 1) + 0.5) for i in range(k)]
    layers = [max(1, math.floor((i + 1) * num_layers / k + 0.5)) for i in range(k)]
    return [(dims[j], layer) for j, layer in zip(idx, layers, strict=True)]


def validate_ladder(
    ladder: list[tuple[int, int]], hidden_size: int, num_layers: int, field: str = "pic_ladder"
) -> None:
    """Strictly increasing in both dim and layer, within the model, ending at (D, L)."""
    if len(ladder) < 2:
        raise ValueError(f"{field} needs at least 2 rungs, got {ladder}")
    for (d0, l0), (d1, l1) in zip(ladder, ladder[1:], strict=False):
        if not (d1 > d0 and l1 > l0):
            raise ValueError(f"{field} must increase in both dim and layer, got {(d0, l0)} -> {(d1, l1)}")
    for d, layer in ladder:
        if not 1 <= d <= hidden_size:
            raise ValueError(f"{field} dims must lie in 1..{hidden_size}, got {d}")
        if not 1 <= layer <= num_layers:
            raise ValueError(f"{field} layers must lie in 1..{num_layers} (num_hidden_layers), got {layer}")
    if ladder[-1] != (hidden_size, num_layers):
        raise ValueError(
            f"{field} must end at (hidden size, last layer) = {(hidden_size, num_layers)}, got {ladder[-1]}"
        )


class PICLoss(nn.Module):
    """PIC on one encoded text column: ``forward(encoded) -> {"pic": sum (or mean) of the link InfoNCE losses}``.

    Args:
        ladder: [(dim, layer), ...] strictly increasing, ending at (D, L).
        temperature: tau of the link InfoNCE.
        aggregation: ``sum`` (paper) or ``mean`` over the K - 1 links.
    """

    def __init__(
        self,
        ladder: list[tuple[int, int]],
        temperature: float = 0.05,
        gather_across_devices: bool = False,
        aggregation: str = "sum",
    ) -> None:
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"pic_aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        self.aggregation = aggregation
        self.ladder = [tuple(r) for r in ladder]
        self.temperature = temperature
        self.gather_across_devices = gather_across_devices
        self.projectors = nn.ModuleList()
        for (d0, _), (d1, _) in zip(self.ladder, self.ladder[1:], strict=False):
            width = max(1, max(d0, d1) // 2)
            self.projectors.append(nn.Sequential(nn.Linear(d0, width), nn.ReLU(), nn.Linear(width, d1)))

    @property
    def layers(self) -> list[int]:
        return [layer for _, layer in self.ladder]

    def forward(self, encoded: EncodedText) -> dict[str, torch.Tensor]:
        device = encoded.pooled().device
        links = []
        with torch.autocast(device_type=device.type, enabled=False):
            for r, phi in enumerate(self.projectors):
                (d0, l0), (d1, l1) = self.ladder[r], self.ladder[r + 1]
                student = F.normalize(phi(prefix(encoded.pooled(l0), d0)), dim=-1)
                target, offset = prefix(encoded.pooled(l1), d1).detach(), 0
                if self.gather_across_devices:  # the targets are detached: gathering only adds negatives
                    target, offset = gather_with_local_grad(target)
                logits = infonce_logits(student, target, self.temperature)
                targets = torch.arange(logits.shape[0], device=logits.device) + offset
                links.append(F.cross_entropy(logits, targets))
        links = torch.stack(links)
        return {"pic": links.sum() if self.aggregation == "sum" else links.mean()}
