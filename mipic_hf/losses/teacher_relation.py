"""Teacher-preserving distillation: keep the in-batch geometry a frozen teacher gives the full-width texts.

Inputs: the student's full-width pooled vectors of the batch's texts (N, D) (all text columns stacked,
each text once), the teacher's pooled vectors of the same texts (N, D_t) (any width: only similarities are
compared), and optionally last-layer token states of both with their masks (same tokenizer only).

Computes, for each nested prefix d in ``dims``:
- relation KL (``relation="kl"``): p_t = softmax over the other texts of cos_t(i, j) / tau (the teacher at
  full width), p_s^d = the same with the student's first d coordinates; KL(p_t || p_s^d), averaged over texts;
- or relation MSE (``relation="mse"``): (cos_s^d(i, j) - cos_t(i, j))^2 averaged over the ordered pairs i != j,
  the pairwise similarity loss of Matryoshka-Adaptor (Yoon et al. 2024) applied to the encoder. No softmax, so
  graded similarities count: between unrelated sentences (cosines near 0.03 +- 0.09 for MiniLM) the KL's
  teacher distribution at tau 0.2 is almost flat and asks only that the batch be spread evenly;
- token CKA (``cka_weight`` > 0): 1 - linear CKA between the student's last-layer token states cut to d and
  the teacher's token states, averaged over sentences (reuses ``linear_cka``; padding never counts).
Both are averaged over ``dims`` and computed in float32 with autocast off.

Why: fine-tuning an already trained embedding model (all-MiniLM-L6-v2 here, BGE-M3 or Qwen3-Embedding in
the paper) with MRL-style losses lowers its full-width quality (benchmarks/RESULTS.md); MIPIC's SIA
teacher is the model's own full width, which drifts with it. A frozen teacher anchors the relations the
model already had (relational distillation as in RKD, Park et al. 2019, applied per Matryoshka prefix).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .cka import linear_cka
from .task import prefix


def _off_diagonal_logits(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine logits / tau of unit rows against every other row: (N, d) -> (N, N - 1)."""
    n = x.shape[0]
    logits = x @ x.T / temperature
    keep = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return logits[keep].view(n, n - 1)


class TeacherRelationLoss(nn.Module):
    """``forward(student, teacher, token_pairs=None) -> {"teacher": ...}``.

    ``student`` (N, D) and ``teacher`` (N, D_t): pooled vectors of the same N texts; ``token_pairs``: one
    ``(student_tokens (B, m, D), teacher_tokens (B, m, D_t), mask (B, m))`` per text column, for the CKA part.

    Args:
        dims: the nested prefixes the term applies to (each compared with the teacher's full width).
        temperature: tau_t of both similarity softmaxes (``relation="kl"`` only).
        cka_weight: weight of the token-level CKA part (0: the relation term only).
        relation: ``"kl"`` (softmax relations) or ``"mse"`` (the pairwise cosines themselves).
    """

    RELATIONS = ("kl", "mse")
    citation = """
@inproceedings{park2019relational,
    title={Relational Knowledge Distillation},
    author={Park, Wonpyo and Kim, Dongju and Lu, Yan and Cho, Minsu},
    booktitle={Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year={2019}
}
"""

    def __init__(
        self, dims: list[int], temperature: float = 0.2, cka_weight: float = 0.0, relation: str = "kl"
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("teacher_dims must name at least one dimension")
        if temperature <= 0:
            raise ValueError(f"teacher_temperature must be > 0, got {temperature}")
        if cka_weight < 0:
            raise ValueError(f"teacher_cka_weight must be >= 0, got {cka_weight}")
        if relation not in self.RELATIONS:
            raise ValueError(f"teacher_relation must be one of {', '.join(self.RELATIONS)}, got {relation!r}")
        self.dims = list(dims)
        self.temperature = temperature
        self.cka_weight = cka_weight
        self.relation = relation

    def config_dict(self) -> dict[str, Any]:
        """The term's settings, as the plan and the run summary show them."""
        return {
            "dims": self.dims,
            "temperature": self.temperature,
            "cka_weight": self.cka_weight,
            "relation": self.relation,
        }

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        token_pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f"student and teacher must embed the same texts: {student.shape[0]} vs {teacher.shape[0]}")
        device = student.device
        with torch.autocast(device_type=device.type, enabled=False):
            total = student.new_zeros((), dtype=torch.float32)
            if student.shape[0] >= 3:  # a distribution over at least two other texts
                total = self._relation_term(student, teacher)
            if self.cka_weight and token_pairs:
                gaps = [
                    (1 - linear_cka(tokens[..., :d].float(), reference.detach().float(), mask.bool())).mean()
                    for tokens, reference, mask in token_pairs
                    for d in self.dims
                ]
                total = total + self.cka_weight * torch.stack(gaps).mean()
        return {"teacher": total}

    def _relation_term(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The relation part, averaged over ``dims`` (float32; the caller has autocast off)."""
        teacher_cos = _off_diagonal_logits(F.normalize(teacher.detach().float(), dim=-1), 1.0)
        if self.relation == "mse":
            terms = [(_off_diagonal_logits(prefix(student, d), 1.0) - teacher_cos).pow(2).mean() for d in self.dims]
        else:
            target = F.log_softmax(teacher_cos / self.temperature, dim=-1)
            terms = [
                F.kl_div(
                    F.log_softmax(_off_diagonal_logits(prefix(student, d), self.temperature), dim=-1),
                    target,
                    log_target=True,
                    reduction="batchmean",
                )
                for d in self.dims
            ]
        return torch.stack(terms).mean()
