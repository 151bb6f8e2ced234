"""Linear CKA with a token mask (tokens as samples), for SIA's top-k token-geometry term.

Kornblith et al., "Similarity of Neural Network Representations Revisited" (ICML 2019); used by MIPIC
(arXiv 2604.24374) section "SIA" on the top-k tokens of each sentence. For one sentence with token rows
X (k x d1) and Y (k x d2), centred over tokens: CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), which is
the normalised inner product of the centred k x k Gram matrices. Everything here runs in float32 (or the
input's float64) with autocast disabled, and padded or dropped tokens never count.
"""

from __future__ import annotations

import torch

# Added under the square roots of the Gram norms: keeps gradients finite for constant inputs and k = 1.
GRAM_EPS = 1e-20


def _no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def _wide(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def gram(x: torch.Tensor) -> torch.Tensor:
    """Uncentred token Gram matrices x x^T: (B, m, d) -> (B, m, m), in float32 or higher."""
    with _no_autocast(x.device):
        x = _wide(x)
        return x @ x.transpose(-1, -2)


def center_gram(g: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Centre Gram matrices (..., m, m) over the tokens selected by ``mask`` (..., m); others become 0.

    Equals (P X)(P X)^T with P the masked centring matrix, computed in O(m^2) from the Gram matrix
    alone, so one cumulative Gram serves every token subset. Leading dimensions broadcast.
    """
    with _no_autocast(g.device):
        g = _wide(g)
        s = mask.to(g.dtype)
        n = s.sum(-1).clamp(min=1.0)
        row_mean = (g @ s.unsqueeze(-1)).squeeze(-1) / n.unsqueeze(-1)  # (..., m): mean over kept columns
        total_mean = (row_mean * s).sum(-1) / n  # (...,)
        centred = g - row_mean.unsqueeze(-1) - row_mean.unsqueeze(-2) + total_mean[..., None, None]
        return centred * (s.unsqueeze(-1) * s.unsqueeze(-2))


def cka_from_centered_grams(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
    """CKA per sentence from centred Gram matrices (..., m, m) -> (...,)."""
    with _no_autocast(k.device):
        k, l = _wide(k), _wide(l)  # noqa: E741
        num = (k * l).sum((-1, -2))
        den = ((k * k).sum((-1, -2)) + GRAM_EPS).sqrt() * ((l * l).sum((-1, -2)) + GRAM_EPS).sqrt()
        return num / den


def linear_cka(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Batched linear CKA between token representations, one value per sentence.

    Args:
        x: (B, m, d1) token states (e.g. a prefix of the width).
        y: (B, m, d2) token states of the same tokens (e.g. the full width).
        mask: (B, m) bool, True for tokens that count (default: all).

    Returns:
        (B,) CKA in [0, 1]: 1 when x and y agree up to rotation and isotropic scaling, 0 for a sentence
        with fewer than two distinct kept tokens.
    """
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"x and y must share (batch, tokens), got {tuple(x.shape)} and {tuple(y.shape)}")
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return cka_from_centered_grams(center_gram(gram(x), mask), center_gram(gram(y), mask))
