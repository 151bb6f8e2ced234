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
full-width Gram; each token subset is a mask (centring in O(m^2)), never a loop over sentences. The SIA layers'
states are stacked into one (L, B, m, D) tensor, so every layer and prefix is scored, ranked, centred and
compared in the same few batched ops (no loop over layers or lifts): the operator count does not grow with L.
Autograd keeps only the inputs (the pass is recomputed in the backward), but while it runs, forward or
recomputed, it holds every layer's intermediates at once: a transient peak about L times the per-layer loop's.
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


def keep_counts(mask: torch.Tensor, gammas: list[float], k_min: int) -> torch.Tensor:
    """How many tokens each prefix keeps in each sentence.

    Args:
        mask: (B, m) bool, real tokens.
        gammas: per prefix, the kept fraction (a float) or a fixed count (an int, ``sia_k_rule: width``).
        k_min: at least this many tokens (capped by the sentence length).

    Returns:
        (P, B) long: k_i = min(m_b, max(k_min, ceil(gamma_i * m_b))), m_b the real length of sentence b.
    """
    lengths = mask.sum(-1)  # (B,)
    out = []
    for gamma in gammas:
        if isinstance(gamma, int):  # a fixed count (sia_k_rule: width)
            k = torch.full_like(lengths, gamma).clamp(min=k_min)
        else:  # a fraction of the sentence's own length
            k = torch.ceil(gamma * lengths.float() - 1e-6).long().clamp(min=k_min)
        out.append(torch.minimum(k, lengths))
    return torch.stack(out)


def top_ranked_tokens(scores: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Keep the ``counts`` best real tokens of each sentence (ties: the earlier token first).

    Args:
        scores: (..., B, m) ranking scores (higher = kept first); padding is ignored.
        mask: (B, m) bool, real tokens.
        counts: (..., B) long, tokens to keep; its leading dimensions broadcast against the scores'.

    Returns:
        (broadcast of the leading dimensions, B, m) bool.
    """
    ranking = scores.detach().float().masked_fill(~mask, float("-inf"))
    order = ranking.argsort(dim=-1, descending=True, stable=True)
    ranks = order.argsort(dim=-1)
    return (ranks < counts.unsqueeze(-1)) & mask


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
    return top_ranked_tokens(teacher_scores, mask, keep_counts(mask, gammas, k_min))


def lift_columns(prefix_dims: list[int], hidden_size: int) -> torch.Tensor:
    """Gather index (P, D) that zero-pads each prefix's lifted query to D: row i holds prefix i's column range
    in the lifts concatenated along the output axis (sum_i d_i columns), then the index of one extra zero column."""
    total = sum(prefix_dims)
    columns = []
    for i, d in enumerate(prefix_dims):
        offset = sum(prefix_dims[:i])
        columns.append([offset + k if k < d else total for k in range(hidden_size)])
    return torch.tensor(columns, dtype=torch.long)


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
        self.register_buffer("lift_columns", lift_columns(self.prefix_dims, hidden_size), persistent=False)

    @staticmethod
    def lift_key(layer: int, dim: int) -> str:
        return f"layer{layer}_dim{dim}"

    def forward(self, encoded: EncodedText) -> dict[str, torch.Tensor]:
        # Padding columns are masked out everywhere below. The batch is padded to its longest sentence (the
        # collator's dynamic padding), so no column is padding in every row: nothing to trim, and no host-device
        # sync to find out.
        mask = encoded.token_mask
        with torch.autocast(device_type=mask.device.type, enabled=False):
            states = [encoded.states(layer) for layer in self.layers]
            queries = [encoded.pooled(layer) for layer in self.layers]
            if torch.is_grad_enabled() and any(s.requires_grad for s in states):
                # Keep only the inputs for backward (the layers' states, already kept by the encoder; they are
                # stacked inside) and recompute the m x m Gram work there: SIA keeps almost no activation memory.
                att, cka = checkpoint(self.stacked_terms, states, queries, mask, use_reentrant=False)
            else:
                att, cka = self.stacked_terms(states, queries, mask)
        att, cka = att.t().flatten(), cka.t().flatten()  # layer-major, the order the per-layer loop summed in
        if self.aggregation == "sum":
            att_total, cka_total = att.sum(), cka.sum()
        else:
            att_total, cka_total = att.mean(), cka.mean()
        return {"sia_att": self.attention_weight * att_total, "sia_cka": self.cka_weight * cka_total}

    def stacked_terms(
        self, states: list[torch.Tensor], queries: list[torch.Tensor], mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_att and L_cka (each a mean over sentences) of every prefix at every SIA layer, in batched ops.

        Args:
            states: per SIA layer (``self.layers`` order), its (B, m, D) token states.
            queries: per SIA layer, its (B, D) full-width pooled vectors.
            mask: (B, m) bool, real tokens.

        Returns:
            Two (P, L) float32 tensors: the attention KL and 1 - CKA of prefix i at layer l.
        """
        h = torch.stack(states).float()  # (L, B, m, D)
        q = torch.stack(queries).float()  # (L, B, D)
        h_teacher = h.detach() if self.detach_sia_teacher else h
        q_teacher = q.detach() if self.detach_sia_teacher else q
        att, keep = self.attention_terms(h, h_teacher, q_teacher, mask)
        return att, self.cka_terms(h, h_teacher, keep)

    def lifted_queries(self, q_teacher: torch.Tensor) -> torch.Tensor:
        """The student queries P_{l,i} q of every layer and prefix, zero-padded to D: (L, B, D) -> (L, B, P, D).

        One matmul against all lifts concatenated (L x sum_i d_i rows), then one gather that places prefix i's
        d_i coordinates first and zeros after them (``lift_columns``), so no per-lift op runs.
        """
        weights = torch.cat(
            [self.lifts[self.lift_key(layer, d)].weight for layer in self.layers for d in self.prefix_dims]
        )
        lifted = torch.einsum("lsd,lbd->lbs", weights.view(len(self.layers), -1, self.hidden_size), q_teacher)
        return F.pad(lifted, (0, 1))[..., self.lift_columns]  # column sum_i d_i is the zero

    def attention_terms(
        self, h: torch.Tensor, h_teacher: torch.Tensor, q_teacher: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention KL of every layer and prefix, and the top-k token sets of the CKA term.

        Args:
            h, h_teacher: (L, B, m, D) float32 token states (h_teacher detached under ``detach_sia_teacher``).
            q_teacher: (L, B, D) float32 full-width pooled queries (detached likewise).
            mask: (B, m) bool, real tokens.

        Returns:
            (P, L) KL, mean over sentences; (P, L, B, m) bool kept tokens (nested over prefixes).
        """
        scale = math.sqrt(self.hidden_size) * self.attention_temperature
        teacher_scores = torch.einsum("lbd,lbmd->lbm", q_teacher, h_teacher) / scale
        log_teacher = F.log_softmax(teacher_scores.masked_fill(~mask, NEG_INF), dim=-1)
        # Student attention: <P q, H[:d]> = <pad_D(P q), H>, every layer and prefix in one einsum.
        student_scores = torch.einsum("lbpd,lbmd->plbm", self.lifted_queries(q_teacher), h) / scale
        log_student = F.log_softmax(student_scores.masked_fill(~mask, NEG_INF), dim=-1)
        counts = keep_counts(mask, self.keep_rule, self.k_min)[:, None]  # (P, 1, B)
        # teacher: the same ranking for every prefix, so the sets are nested; lifted: each prefix's own (authors')
        ranking = teacher_scores if self.topk_rank == "teacher" else student_scores
        keep = top_ranked_tokens(ranking, mask, counts)  # (P, L, B, m)
        fmask = mask.to(h.dtype)
        if self.kl_direction == "student_teacher":
            kl = _kl(log_student, log_teacher.expand_as(log_student), fmask)
        else:
            kl = _kl(log_teacher.expand_as(log_student), log_student, fmask)
        return kl.mean(-1), keep

    def cka_terms(self, h: torch.Tensor, h_teacher: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """1 - top-k CKA(H[S, :d_i], H[S, :]) of every layer and prefix, mean over sentences.

        Args:
            h, h_teacher: (L, B, m, D) float32 token states (h_teacher detached under ``detach_sia_teacher``).
            keep: (P, L, B, m) bool, the kept tokens S of each prefix, layer and sentence.

        Returns:
            (P, L). The prefix Grams are cumulative over the width's blocks, each block one (L B)-batched matmul:
            G_{d_i} = G_{d_(i-1)} + H[..., d_(i-1):d_i] H[..., d_(i-1):d_i]^T.
        """
        num_layers, batch = h.shape[:2]
        sizes = [b - a for a, b in zip([0, *self.prefix_dims], [*self.prefix_dims, self.hidden_size], strict=True)]
        blocks = h.flatten(0, 1).split(sizes, dim=-1)  # each (L B, m, block)
        grams = []
        for block in blocks[:-1]:
            block_gram = block @ block.transpose(-1, -2)
            grams.append(block_gram if not grams else grams[-1] + block_gram)
        student = center_gram(torch.stack(grams).unflatten(1, (num_layers, batch)), keep)  # (P, L, B, m, m)
        # Teacher: the full-width Gram of the same tokens = last prefix Gram + the remaining block.
        rest = h_teacher.flatten(0, 1).split(sizes, dim=-1)[-1]
        base = grams[-1].detach() if self.detach_sia_teacher else grams[-1]
        full = (base + rest @ rest.transpose(-1, -2)).unflatten(0, (num_layers, batch))  # (L, B, m, m)
        teacher = center_gram(full.expand_as(student), keep)
        return (1.0 - cka_from_centered_grams(student, teacher)).mean(-1)
