"""In-batch negatives from every rank for the contrastive terms (``gather_across_devices``).

``gather_with_local_grad(x)`` concatenates ``x`` from all ranks in rank order; the other ranks' rows carry no
gradient, this rank's rows are ``x`` itself, so the backward pass only reaches the local encoder (as in
sentence-transformers' ``gather_across_devices`` and CLIP-style training). Outside ``torch.distributed``
(one process) it returns ``x`` and offset 0. SIA and CKA never gather: they are per-sentence terms.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_local_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(rows of ``x`` from every rank, the row offset of this rank's block).

    Every rank must pass the same number of rows (the Trainer's dataloader evens out the last batch).
    """
    rank, size = world()
    if size == 1:
        return x, 0
    counts = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(size)]
    dist.all_gather(counts, torch.tensor([x.shape[0]], device=x.device))
    if len({int(c) for c in counts}) != 1:
        raise ValueError(
            f"gather_across_devices needs the same batch size on every rank, got {[int(c) for c in counts]}"
        )
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts), rank * x.shape[0]
