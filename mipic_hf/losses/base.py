"""What every objective receives: one encoder pass per text column, cached, sliced by dim and layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

NEG_INF = -1e9  # finite "minus infinity" for masked scores: keeps 0 * log terms finite in backward


def _no_pooling(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    raise ValueError("this text holds cached pooled vectors only, not for this layer")


@dataclass
class EncodedText:
    """The cached output of one encoder forward over one text column.

    Args:
        last_hidden_state: (B, m, D) token states of the last layer.
        attention_mask: (B, m) 1 for real tokens, 0 for padding.
        pool_fn: the model's pooling, ``(states, attention_mask) -> (B, D)`` in float32, including the model's
            output rotation when it has one (so ``pooled`` is the vector whose prefixes are the embeddings).
        hidden_states: ``hidden_states[l]`` for l = 0..L when the objective needs layers, else None.
        token_map: the output rotation for token states (``MatryoshkaModel.rotate``) when the model has one:
            ``states`` then returns rotated states, whose first d coordinates pool to the d-prefix embedding.
    """

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    pool_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    hidden_states: tuple[torch.Tensor, ...] | None = None
    token_map: Callable[[torch.Tensor], torch.Tensor] | None = None
    layer_count: int | None = None
    _pooled: dict[int | None, torch.Tensor] = field(default_factory=dict, repr=False)
    _mapped: dict[int | None, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_pooled(
        cls, pooled: dict[int | None, torch.Tensor], attention_mask: torch.Tensor, num_layers: int
    ) -> EncodedText:
        """Pooled vectors computed elsewhere (gradient caching: ``pooled[None]`` is the last layer's), without token
        states: the embedding-level terms read them; a token-level term finds no states and says so."""
        return cls(pooled[None], attention_mask, _no_pooling, layer_count=num_layers, _pooled=dict(pooled))

    @property
    def num_layers(self) -> int:
        if self.hidden_states is not None:
            return len(self.hidden_states) - 1
        if self.layer_count is not None:
            return self.layer_count
        raise ValueError("this objective needs hidden states, but the encoder pass did not keep them")

    def states(self, layer: int | None = None) -> torch.Tensor:
        """Token states of ``layer`` (None: the last layer), in the embedding's coordinates (``token_map``)."""
        if self.token_map is None:
            return self.raw_states(layer)
        key = self._key(layer)
        if key not in self._mapped:
            self._mapped[key] = self.token_map(self.raw_states(layer))
        return self._mapped[key]

    def _key(self, layer: int | None) -> int | None:
        known = self.hidden_states is not None or self.layer_count is not None
        return None if layer is None or (known and layer == self.num_layers) else layer

    def raw_states(self, layer: int | None = None) -> torch.Tensor:
        """Token states of ``layer`` as the encoder returned them (None: the last layer)."""
        if self.pool_fn is _no_pooling:
            raise ValueError("token states were not kept: this text holds cached pooled vectors only")
        if layer is None or (self.hidden_states is not None and layer == self.num_layers):
            return self.last_hidden_state
        if self.hidden_states is None:
            raise ValueError(f"layer {layer} requested, but the encoder pass did not keep hidden states")
        return self.hidden_states[layer]

    def pooled(self, layer: int | None = None) -> torch.Tensor:
        """Full-width pooled sentence vectors (B, D) of ``layer`` in float32, computed once per layer."""
        key = self._key(layer)
        if key not in self._pooled:
            self._pooled[key] = self.pool_fn(self.raw_states(layer), self.attention_mask)
        return self._pooled[key]

    @property
    def token_mask(self) -> torch.Tensor:
        return self.attention_mask.bool()


def check_objective(objective: object) -> None:
    """An objective handed in from outside (``MIPICTrainer(objective=...)``) must honour the interface below."""
    if not isinstance(objective, MatryoshkaObjective):
        raise TypeError(
            f"objective must be a mipic_hf.losses.MatryoshkaObjective (subclass it: task, forward, and what differs "
            f"of needs_hidden_states / token_terms / config_dict), got {type(objective).__name__}"
        )


class MatryoshkaObjective(nn.Module):
    """What the trainer, the plan and the run summary ask of an objective, so none of them looks at its type.

    Subclasses set ``task`` (the :class:`~mipic_hf.losses.task.MatryoshkaTaskLoss` at every prefix) and
    ``forward(encoded, labels) -> {"loss", <named components>}``; they override what differs:

    - ``needs_hidden_states``: whether the encoder pass must keep every layer's states;
    - :meth:`token_terms` / ``has_token_terms``: the token-level part a gradient-cached step adds mini-batch by
      mini-batch (empty by default);
    - :meth:`config_dict`: the objective's settings as plain values (the plan and ``mipic_training`` print them);
    - ``citation``: the paper the objective comes from (BibTeX), where there is one.
    """

    needs_hidden_states: bool = False
    citation: str | None = None
    task: nn.Module

    @property
    def task_weight(self) -> float:
        return float(self.task.weight)

    @property
    def num_candidates(self) -> int | None:
        """InfoNCE candidates per anchor in the last call (None for other task losses)."""
        return self.task.num_candidates

    @property
    def has_token_terms(self) -> bool:
        return False

    def token_terms(self, encoded: EncodedText) -> dict[str, torch.Tensor]:
        return {}

    def config_dict(self) -> dict[str, object]:
        return {}
