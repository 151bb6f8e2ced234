"""Gradient caching: the loss of a batch far larger than memory, one mini-batch of activations at a time.

GradCache (Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"), as sentence-transformers' CachedMultipleNegativesRankingLoss does it, over every term of our objective:

1. **Encode without grad.** Each text column goes through the encoder in mini-batches of ``cache_mini_batch_size``
   rows; the pooled vectors of every layer the objective may read are kept, with the RNG state each mini-batch
   started from (its dropout can be replayed).
2. **The loss of the whole batch.** The embedding-level terms (the task loss at every prefix and rung, PIC, the
   teacher's relations; in-batch candidates = the whole batch, and every rank's with ``gather_across_devices``)
   on those vectors as leaf tensors; ``autograd.grad`` gives d loss / d vector.
3. **Replay with grad.** Each mini-batch again, from its RNG state: ``sum(vector * cached gradient)`` plus its share
   of the token-level terms (SIA: a mean over a column's sentences, so n of the column's N rows carry n / N of it)
   is backpropagated. The last replay also recomputes step 2 on detached vectors, so the objective's own
   parameters (PIC projectors, the classifier) get their gradient inside a forward of the wrapped module, where
   DDP averages it.

The parameters receive the gradient of the whole batch's loss; peak activation memory is one mini-batch's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.checkpoint import get_device_states, set_device_states

from ..losses.base import EncodedText


class RandState:
    """The RNG state a forward starts from (CPU, and the devices of ``tensors``), to replay its dropout masks."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.cpu = torch.get_rng_state()
        self.devices, self.states = get_device_states(*tensors)

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            set_device_states(self.devices, self.states)
            yield


@dataclass
class MiniBatch:
    """Rows ``rows`` of text column ``column``: their features, and the RNG state their first pass started from."""

    column: int
    rows: slice
    features: dict[str, torch.Tensor]
    rand: RandState


@dataclass
class Replay:
    """What a replayed mini-batch needs: the cached gradient of each pooled layer it feeds (rows of the batch), the
    weight of its token-level terms, and, on the last replay, the cached batch (``full``) whose embedding-level loss is
    recomputed for the objective's own parameters."""

    mini: MiniBatch
    grads: dict[int | None, torch.Tensor]
    token_weight: float
    full: Callable[[], torch.Tensor] | None = None


@dataclass
class CachedBatch:
    """Step 1's output: per column the cached pooled vectors (leaf tensors), and the mini-batches in order."""

    encoded: list[EncodedText]
    minis: list[MiniBatch]
    leaves: list[dict[int | None, torch.Tensor]] = field(default_factory=list)


def split_rows(batch: dict[str, torch.Tensor], size: int) -> list[tuple[slice, dict[str, torch.Tensor]]]:
    """``batch`` (tensors of B rows) as consecutive mini-batches of at most ``size`` rows."""
    rows = next(iter(batch.values())).shape[0]
    return [
        (slice(start, min(start + size, rows)), {k: v[start : start + size] for k, v in batch.items()})
        for start in range(0, rows, size)
    ]


def encode_without_grad(
    encode: Callable[[dict[str, torch.Tensor]], EncodedText],
    columns: list[dict[str, torch.Tensor]],
    size: int,
    layers: list[int],
    num_layers: int,
) -> CachedBatch:
    """Step 1: every column in mini-batches without grad; keeps the pooled vectors of ``layers`` (and the last
    layer's, key None) as leaf tensors that require grad."""
    cached = CachedBatch([], [])
    for c, batch in enumerate(columns):
        pooled: dict[int | None, list[torch.Tensor]] = {key: [] for key in [None, *layers]}
        for rows, features in split_rows(batch, size):
            rand = RandState(*features.values())
            with torch.no_grad():
                encoded = encode(features)
                for key in pooled:
                    pooled[key].append(encoded.pooled(key))
            cached.minis.append(MiniBatch(c, rows, features, rand))
        leaves = {key: torch.cat(parts).requires_grad_() for key, parts in pooled.items()}
        cached.leaves.append(leaves)
        cached.encoded.append(EncodedText.from_pooled(leaves, batch["attention_mask"], num_layers))
    return cached


def leaf_gradients(loss: torch.Tensor, cached: CachedBatch) -> list[dict[int | None, torch.Tensor]]:
    """Step 2's gradient: d loss / d each cached vector (zeros for a layer the loss does not read)."""
    flat = [(c, key, leaf) for c, leaves in enumerate(cached.leaves) for key, leaf in leaves.items()]
    grads = torch.autograd.grad(loss, [leaf for *_, leaf in flat], allow_unused=True)
    out: list[dict[int | None, torch.Tensor]] = [{} for _ in cached.leaves]
    for (c, key, _), grad in zip(flat, grads, strict=True):
        if grad is not None:
            out[c][key] = grad
    return out


def detached(cached: CachedBatch) -> list[EncodedText]:
    """The cached batch again, cut from the graph (the last replay's recomputation reaches only the objective)."""
    return [
        EncodedText.from_pooled({k: v.detach() for k, v in leaves.items()}, e.attention_mask, e.num_layers)
        for leaves, e in zip(cached.leaves, cached.encoded, strict=True)
    ]


def replays(
    cached: CachedBatch, grads: list[dict[int | None, torch.Tensor]], token_terms: bool, full: Callable | None
) -> list[Replay]:
    """Step 3's plan: one Replay per mini-batch, in order; the last one carries ``full``."""
    columns = len(cached.leaves)
    out = []
    for mini in cached.minis:
        rows = cached.leaves[mini.column][None].shape[0]
        weight = (mini.rows.stop - mini.rows.start) / rows / columns if token_terms else 0.0
        out.append(Replay(mini, {k: g[mini.rows] for k, g in grads[mini.column].items()}, weight))
    out[-1].full = full
    return out


def replay_loss(encoded: EncodedText, replay: Replay, token_terms: Callable[[EncodedText], dict]) -> dict[str, Any]:
    """The surrogate of one replayed mini-batch (``"loss"``): sum(vector * cached gradient) over its pooled layers,
    plus its share of the token-level terms (their weighted components, and ``"token_loss"``, for the log), plus the
    last replay's recomputed batch loss (whose gradient reaches only the objective's parameters)."""
    surrogate = sum((encoded.pooled(key) * grad).sum() for key, grad in replay.grads.items())
    out: dict[str, Any] = {}
    if replay.token_weight:
        parts = token_terms(encoded)
        if parts:
            surrogate = surrogate + replay.token_weight * parts["loss"]
            out.update({name: replay.token_weight * value.detach() for name, value in parts.items()})
            out["token_loss"] = out.pop("loss")
    if replay.full is not None:
        surrogate = surrogate + replay.full()
    out["loss"] = surrogate
    return out
