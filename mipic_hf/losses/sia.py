"""SIA: Self-distilled Intra-relational Alignment along the dimension axis (MIPIC section 2).

MIPIC (arXiv 2604.24374), SIA; our reading and decisions in docs/method.md. At every layer l in
the SIA layer set and every prefix d_i < D, the full-width states of the same layer teach the prefix:

(a) attention relation: query q = the full-width pooled vector of layer l; teacher scores
    s_D[j] = <q, H_j> / sqrt(D), student scores s_i[j] = <P_{l,i} q, H_j[:d_i]> / sqrt(D) with a learnable
    bias-free lift P_{l,i} (d_i x D, initialised to plain truncation [I 0]); a = softmax over real tokens of
    s / attention_temperature; L_att = KL(a_i || a_D) (or KL(a_D || a_i)), mean over sentences.
(b) top-k CKA: keep each sentence's k_i = min(m, max(k_min, ceil(gamma_i m))) tokens ranked by a_D
    (m = its own length; gamma grows with the prefix, so the sets are nested); L_cka = 1 - CKA(H[S_i, :d_i],
    H[S_i, :]), mean over sentences.

Cost: the prefix Gram matrices are cumulative over dimension blocks, so all prefixes of a layer cost one
full-width Gram; each token subset is a mask (centring in O(m^2)), never a loop over sentences.
All scores, softmaxes, KLs and Grams are float32 with autocast off; padding never counts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import NEG_INF, EncodedText
from .cka import center_gram, cka_from_centered_grams

KL_DIRECTIONS = ("student_teacher", "teacher_student")
AGGREGATIONS = ("sum", "mean")
LIFT_INITS = ("identity", "random")
TOPK_RANKS = ("teacher", "lifted")
K_RULES = ("fraction", "width")


def default_gammas(num_prefixes: int, start: float = 0.2, step: float = 0.1) -> list[float]:
    """The paper's fraction of kept tokens per prefix: 0.2, 0.3, ... (capped at 1)."""
    return [min(1.0, round(start + step * i, 6)) for i in range(num_prefixes)]


def width_counts(prefix_dims: list[int], hidden_size: int, k_min: int, tokens_at_full_width: int = 64) -> list[int]:
    """``sia_k_rule: width`` (the authors' code): k_i = max(k_min, floor(64 d_i / D)) tokens per prefix."""
    return [max(k_min, tokens_at_full_width * d // hidden_size) for d in prefix_dims]


def topk_token_masks(teacher_scores: torch.Tensor, mask: torch.Tensor, gammas: list[float], k_min: int) -> torch.Tensor:
    """Nested top-k token sets ranked by the teacher, one per prefix.

    Args:
        teacher_scores: (B, m) teacher attention scores (higher = kept first); padding is ignored.
        mask: (B, m) bool, real tokens.
        gammas: per prefix, the kept fraction (a float) or a fixed count (an int, ``sia_k_rule: width``).
        k_min: at least this many tokens (capped by the sentence length).

    Returns:
        (P, B, m) bool: set i keeps the k_i = min(m_b, max(k_min, ceil(gamma_i * m_b))) best real tokens.
    """
    scores = teacher_scores.detach().float().masked_fill(~mask, float("-inf"))
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = order.argsort(dim=-1)
    lengths = mask.sum(-1)  # (B,)
    out = []
    for gamma in gammas:
        if isinstance(gamma, int):  # a fixed count (sia_k_rule: width)
            k = torch.full_like(lengths, gamma).clamp(min=k_min)
        else:  # a fraction of the sentence's own length
            k = torch.ceil(gamma * lengths.float() - 1e-6).long().clamp(min=k_min)
        k = torch.minimum(k, lengths)
        out.append((ranks < k[:, None]) & mask)
    return torch.stack(out)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row over the masked entries (float mask), from log-probabilities."""
    return (log_p.exp() * (log_p - log_q) * mask).sum(-1)


class SIALoss(nn.Module):
    """SIA on one encoded text column: ``forward(encoded) -> {"sia_att": ..., "sia_cka": ...}``.

    Args:
        hidden_size: D.
        prefix_dims: the truncated widths d_i < D (ascending).
        layers: SIA layers (1-based ``hidden_states`` indices).
        attention_temperature: tau_att of the attention softmax.
        kl_direction: ``student_teacher`` = KL(a_i || a_D) (paper), ``teacher_student`` = KL(a_D || a_i).
        detach_sia_teacher: stop gradients through the full-width teacher (q, a_D and the full Gram).
        aggregation: ``sum`` (paper) or ``mean`` over layers x prefixes.
        attention_weight, cka_weight: weights of the two terms.
        k_min, gammas: top-k schedule (default gammas 0.2, 0.3, ... per prefix).
        lift_init: ``identity`` (P = [I 0], the prefix lifted to itself) or ``random`` (nn.Linear's init).
        topk_rank: rank the tokens for CKA by the ``teacher`` distribution (paper) or by each prefix's ``lifted``
            student scores (the authors' code, where the lifts are random and never trained).
        k_rule: ``fraction`` (k = ceil(gamma_i m), paper) or ``width`` (k = max(k_min, floor(64 d_i / D)),
            the authors' code); both at least k_min and at most the sentence's length.
    """

    def __init__(
        self,
        hidden_size: int,
        prefix_dims: list[int],
        layers: list[int],
        attention_temperature: float = 0.05,
        kl_direction: str = "student_teacher",
        detach_sia_teacher: bool = False,
        aggregation: str = "sum",
        attention_weight: float = 1.0,
        cka_weight: float = 1.0,
        k_min: int = 8,
        gammas: list[float] | None = None,
        lift_init: str = "identity",
        topk_rank: str = "teacher",
        k_rule: str = "fraction",
    ) -> None:
        super().__init__()
        if topk_rank not in TOPK_RANKS:
            raise ValueError(f"sia_topk_rank must be one of {', '.join(TOPK_RANKS)}, got {topk_rank!r}")
        if k_rule not in K_RULES:
            raise ValueError(f"sia_k_rule must be one of {', '.join(K_RULES)}, got {k_rule!r}")
        if lift_init not in LIFT_INITS:
            raise ValueError(f"sia_lift_init must be one of {', '.join(LIFT_INITS)}, got {lift_init!r}")
        if kl_direction not in KL_DIRECTIONS:
            raise ValueError(f"sia_kl_direction must be one of {', '.join(KL_DIRECTIONS)}, got {kl_direction!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"sia_aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if attention_temperature <= 0:
            raise ValueError(f"attention_temperature must be > 0, got {attention_temperature}")
        if any(d >= hidden_size for d in prefix_dims) or list(prefix_dims) != sorted(set(prefix_dims)):
            raise ValueError(f"SIA prefixes must be ascending widths below {hidden_size}, got {prefix_dims}")
        gammas = default_gammas(len(prefix_dims)) if gammas is None else list(gammas)
        if len(gammas) != len(prefix_dims) or any(b < a for a, b in zip(gammas, gammas[1:], strict=False)):
            raise ValueError(f"sia_gammas must hold one non-decreasing fraction per prefix {prefix_dims}, got {gammas}")
        if any(not 0 < g <= 1 for g in gammas):
            raise ValueError(f"sia_gammas must lie in (0, 1], got {gammas}")
        self.hidden_size = hidden_size
        self.prefix_dims = list(prefix_dims)
        self.layers = list(layers)
        self.attention_temperature = attention_temperature
        self.kl_direction = kl_direction
        self.detach_sia_teacher = detach_sia_teacher
        self.aggregation = aggregation
        self.attention_weight = attention_weight
        self.cka_weight = cka_weight
        self.k_min = k_min
        self.gammas = gammas
        self.topk_rank = topk_rank
        self.k_rule = k_rule
        # per prefix: a fraction of the sentence (float, fraction) or a fixed count (int, width)
        self.keep_rule = gammas if k_rule == "fraction" else width_counts(prefix_dims, hidden_size, k_min)
        # P_{l,i}: applied to q (<q, P^T h> = <P q, h>), so nothing is lifted per token.
        self.lifts = nn.ModuleDict()
        for layer in self.layers:
            for d in self.prefix_dims:
                lift = nn.Linear(hidden_size, d, bias=False)  # random: nn.Linear's own init
                if lift_init == "identity":
                    with torch.no_grad():
                        lift.weight.copy_(torch.eye(d, hidden_size))
                self.lifts[self.lift_key(layer, d)] = lift

    @staticmethod
    def lift_key(layer: int, dim: int) -> str:
        return f"layer{layer}_dim{dim}"

    def forward(self, encoded: EncodedText) -> dict[str, torch.Tensor]:
        # Padding columns are masked out everywhere below. The batch is padded to its longest sentence (the
        # collator's dynamic padding), so no column is padding in every row: nothing to trim, and no host-device
        # sync to find out.
        mask = encoded.token_mask
        att_terms, cka_terms = [], []
        with torch.autocast(device_type=mask.device.type, enabled=False):
            for layer in self.layers:
                states, query = encoded.states(layer), encoded.pooled(layer)
                if torch.is_grad_enabled() and states.requires_grad:
                    # Keep only the inputs for backward (the layer's states, already kept by the encoder)
                    # and recompute the m x m Gram work there: SIA adds almost no activation memory.
                    att, cka = checkpoint(self.layer_terms, layer, states, query, mask, use_reentrant=False)
                else:
                    att, cka = self.layer_terms(layer, states, query, mask)
                att_terms.append(att)
                cka_terms.append(cka)
        att_all, cka_all = torch.cat(att_terms), torch.cat(cka_terms)
        if self.aggregation == "sum":
            att_total, cka_total = att_all.sum(), cka_all.sum()
        else:
            att_total, cka_total = att_all.mean(), cka_all.mean()
        return {"sia_att": self.attention_weight * att_total, "sia_cka": self.cka_weight * cka_total}

    def layer_terms(
        self, layer: int, states: torch.Tensor, query: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_att and L_cka (each a mean over sentences) of every prefix at one layer: two (P,) tensors.

        Batched over prefixes: the student queries P_{l,i} q are zero-padded to D so one einsum scores every
        prefix, and the prefix Grams come from one split of the width into blocks (no per-prefix slicing).
        """
        h = states.float()
        q = query.float()
        h_teacher = h.detach() if self.detach_sia_teacher else h
        q_teacher = q.detach() if self.detach_sia_teacher else q
        scale = math.sqrt(self.hidden_size) * self.attention_temperature
        fmask = mask.to(h.dtype)

        teacher_scores = torch.einsum("bd,bmd->bm", q_teacher, h_teacher) / scale
        log_teacher = F.log_softmax(teacher_scores.masked_fill(~mask, NEG_INF), dim=-1)
        if self.topk_rank == "teacher":
            keep = topk_token_masks(teacher_scores, mask, self.keep_rule, self.k_min)  # (P, B, m), nested sets

        # Student attention: <P q, H[:d]> = <pad_D(P q), H>, all prefixes in one einsum.
        lifted = torch.stack(
            [F.pad(self.lifts[self.lift_key(layer, d)](q_teacher), (0, self.hidden_size - d)) for d in self.prefix_dims]
        )  # (P, B, D)
        student_scores = torch.einsum("pbd,bmd->pbm", lifted, h) / scale
        log_student = F.log_softmax(student_scores.masked_fill(~mask, NEG_INF), dim=-1)
        if self.topk_rank == "lifted":  # each prefix's tokens ranked by its own lifted scores (authors' code)
            keep = torch.stack(
                [topk_token_masks(student_scores[i], mask, [g], self.k_min)[0] for i, g in enumerate(self.keep_rule)]
            )
        if self.kl_direction == "student_teacher":
            kl = _kl(log_student, log_teacher.expand_as(log_student), fmask)
        else:
            kl = _kl(log_teacher.expand_as(log_student), log_student, fmask)
        att = kl.mean(-1)  # (P,)

        # Cumulative prefix Grams: G_{d_i} = G_{d_(i-1)} + H[..., d_(i-1):d_i] H[..., d_(i-1):d_i]^T.
        sizes = [b - a for a, b in zip([0, *self.prefix_dims], [*self.prefix_dims, self.hidden_size], strict=True)]
        blocks = h.split(sizes, dim=-1)
        grams = []
        for block in blocks[:-1]:
            block_gram = block @ block.transpose(-1, -2)
            grams.append(block_gram if not grams else grams[-1] + block_gram)
        student = center_gram(torch.stack(grams), keep)  # (P, B, m, m)
        # Teacher: the full-width Gram of the same tokens = last prefix Gram + the remaining block.
        rest = h_teacher.split(sizes, dim=-1)[-1]
        base = grams[-1].detach() if self.detach_sia_teacher else grams[-1]
        teacher = center_gram((base + rest @ rest.transpose(-1, -2)).expand_as(student), keep)
        cka = (1.0 - cka_from_centered_grams(student, teacher)).mean(-1)  # (P,)
        return att, cka
