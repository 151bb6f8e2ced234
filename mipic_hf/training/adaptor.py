"""Fit an output adaptor: an orthogonal map of a frozen model's pooled vector whose prefixes keep the full width's
neighbourhoods.

The Matryoshka-Adaptor idea (Yoon et al., 2024) in its orthogonal form: ``y = z @ R`` with R orthogonal and no
centring, so the full-width cosine is exactly the model's own (nothing to lose at full width by construction),
while R orders the coordinates so that each prefix ``y[:d]`` ranks a batch's texts as the full width ``z`` does.
The loss, per batch of B training texts (their pooled vectors, no labels):

- for each float prefix d: KL(softmax(cos(z_i, z_j) / tau) || softmax(cos(y_i[:d], y_j[:d]) / tau)) over the other
  texts j of the batch, averaged over i (the teacher is the frozen full width);
- for each binary prefix d (optional): the same KL with the prefix's soft sign bits, ``tanh(y[:d] * sqrt(d) /
  beta_scale)``, in place of ``y[:d]``, so that the sign bits a store keeps rank like the full width.

R starts from the eigenvectors of the second moment of the training vectors (uncentred PCA: the prefixes start as
the directions of most energy; or ITQ-balanced variants of it, :func:`initial_rotation`) and is trained through
``torch.nn.utils.parametrizations.orthogonal`` (Cayley map), so it stays orthogonal to float precision at every step.
It is stored as the model's output rotation with a zero mean: ``encode``, the grid, ONNX, the standard folders and
sentence-transformers (a stock Dense module) apply it. With ``full_width_codes="backbone"`` the full width's int8 and
binary codes are taken in the model's own coordinates (``y @ R^T = z``): the base's own full-width codes (but for
the signs of coordinates the backbone leaves at zero, float noise), which no rotation tried beats (issue 28's
screens), while R orders the prefixes. It trains on cached vectors: no encoder forward after the first pass, minutes
on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..configuration_mipic import FULL_WIDTH_CODES
from ..losses.teacher_relation import TeacherRelationLoss
from .rotation import pooled_vectors

ADAPTOR_INITS = ("pca", "identity", "itq", "nested_itq")
ITQ_ITERATIONS = 50


@dataclass
class AdaptorSettings:
    """What the adaptor trains on and how (each field checked in ``__post_init__``)."""

    dims: list[int] | None = None  # float prefixes in the loss (default: every trained dim below the width)
    binary_dims: list[int] = field(default_factory=list)  # prefixes whose soft sign bits are in the loss
    binary_weight: float = 1.0
    binary_scale: float = 1.0  # soft bits tanh(y * sqrt(d) / binary_scale)
    binary_relation: str = "symmetric"  # soft bits against soft bits, or "asymmetric": float rows against soft bits
    init: str = "pca"
    steps: int = 400
    batch_size: int = 512
    temperature: float = 0.05
    learning_rate: float = 1e-3
    seed: int = 0
    full_width_codes: str = "rotated"  # or "backbone": the full width's int8 / binary codes in the model's own basis

    def __post_init__(self) -> None:
        if self.init not in ADAPTOR_INITS:
            raise ValueError(f"adaptor init must be one of {', '.join(ADAPTOR_INITS)}, got {self.init!r}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "steps" else 2):
                raise ValueError(f"adaptor {name} must be an integer >= {0 if name == 'steps' else 2}, got {value!r}")
        for name in ("temperature", "learning_rate", "binary_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or value != value or value == float("inf"):
                raise ValueError(f"adaptor {name} must be a finite number > 0, got {value!r}")
        if self.full_width_codes not in FULL_WIDTH_CODES:
            raise ValueError(
                f"adaptor full_width_codes must be one of {', '.join(FULL_WIDTH_CODES)}, got {self.full_width_codes!r}"
            )
        if self.binary_relation not in ("symmetric", "asymmetric"):
            raise ValueError(f"adaptor binary_relation must be symmetric or asymmetric, got {self.binary_relation!r}")
        if not 0 <= self.binary_weight < float("inf"):
            raise ValueError(f"adaptor binary_weight must be a finite number >= 0, got {self.binary_weight!r}")


def second_moment_rotation(vectors: torch.Tensor) -> torch.Tensor:
    """The eigenvectors of ``X^T X / N`` (no centring), largest eigenvalue first, each signed so that its
    largest-magnitude entry is positive: (D, D) float64, orthogonal."""
    x = vectors.to(torch.float64)
    values, vecs = torch.linalg.eigh(x.T @ x / x.shape[0])
    matrix = vecs[:, torch.argsort(values, descending=True, stable=True)]
    signs = torch.sign(matrix[matrix.abs().argmax(0), torch.arange(matrix.shape[1])])
    return matrix * torch.where(signs == 0, 1.0, signs)


def itq_rotation(vectors: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Iterative quantization (Gong & Lazebnik, 2011): the orthogonal R minimising ||sign(X R) - X R||, from a random
    orthogonal start; sign bits of ``X @ R`` then carry balanced shares of X's energy. (D, D) float64."""
    x = vectors.to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(x.shape[1], x.shape[1], generator=generator, dtype=torch.float64))[0]
    for _ in range(ITQ_ITERATIONS):
        u, _, vh = torch.linalg.svd(x.T @ torch.sign(x @ rotation))
        rotation = u @ vh
    return rotation


def initial_rotation(vectors: torch.Tensor, init: str, blocks: list[int], seed: int = 0) -> torch.Tensor:
    """The adaptor's start: ``pca`` (:func:`second_moment_rotation`), ``identity``, ``itq`` (PCA then ITQ over the
    full width) or ``nested_itq`` (PCA, then ITQ inside each block of PCA directions between consecutive
    ``blocks`` boundaries: every prefix ending at a boundary spans the same directions as PCA's, with balanced
    sign bits inside each block)."""
    hidden = vectors.shape[1]
    if init == "identity":
        return torch.eye(hidden, dtype=torch.float64)
    pca = second_moment_rotation(vectors)
    if init == "pca":
        return pca
    projected = vectors.to(torch.float64) @ pca
    if init == "itq":
        return pca @ itq_rotation(projected, seed)
    inner = torch.zeros(hidden, hidden, dtype=torch.float64)
    edges = [0, *sorted({b for b in blocks if 0 < b < hidden}), hidden]
    for start, stop in zip(edges, edges[1:], strict=False):
        block = slice(start, stop)
        inner[block, block] = itq_rotation(projected[:, block], seed) if stop - start > 1 else torch.ones(1, 1)
    return pca @ inner


def _relation_kl(
    target: torch.Tensor, vectors: torch.Tensor, temperature: float, queries: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(target rows || softmax of the in-batch cosines of ``queries`` (default ``vectors``) against ``vectors`` /
    temperature), self-pairs left out."""
    unit = nn.functional.normalize(vectors, dim=-1)
    rows = unit if queries is None else nn.functional.normalize(queries, dim=-1)
    mask = torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    logits = (rows @ unit.T / temperature).masked_fill(mask, float("-inf"))
    log_student = torch.log_softmax(logits, dim=-1).masked_fill(mask, 0.0)
    return nn.functional.kl_div(log_student, target, reduction="batchmean")


def adaptor_loss(z: torch.Tensor, y: torch.Tensor, settings: AdaptorSettings, dims: list[int]) -> torch.Tensor:
    """The adaptor's loss for a batch: ``z`` the frozen full-width vectors, ``y = z @ R`` (module docstring). The
    float prefixes' term is the teacher relation KL (``TeacherRelationLoss``, its mean over dims, summed here)."""
    relation = TeacherRelationLoss(dims, temperature=settings.temperature)
    loss = len(dims) * relation(y, z)["teacher"]
    if not settings.binary_dims:
        return loss
    unit = nn.functional.normalize(z, dim=-1)
    mask = torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    target = torch.softmax((unit @ unit.T / settings.temperature).masked_fill(mask, float("-inf")), dim=-1)
    for d in settings.binary_dims:
        bits = torch.tanh(y[:, :d] * d**0.5 / settings.binary_scale)
        queries = y[:, :d] if settings.binary_relation == "asymmetric" else None
        loss = loss + settings.binary_weight * _relation_kl(target, bits, settings.temperature, queries)
    return loss


def fit_adaptor(vectors: torch.Tensor, settings: AdaptorSettings, dims: list[int]) -> torch.Tensor:
    """Train R on (N, D) pooled vectors; returns it as (D, D) float64 (orthogonal)."""
    if vectors.shape[0] < 2:
        raise ValueError("fitting an adaptor needs at least 2 texts")
    hidden = vectors.shape[1]
    bad = [d for d in [*dims, *settings.binary_dims] if not 1 <= d <= hidden]
    if bad:
        raise ValueError(f"adaptor dims must lie in 1..{hidden}, got {bad}")
    generator = torch.Generator().manual_seed(settings.seed)
    start = initial_rotation(vectors, settings.init, dims, settings.seed)
    if settings.steps == 0:
        return start
    linear = nn.Linear(hidden, hidden, bias=False)
    nn.utils.parametrizations.orthogonal(linear, orthogonal_map="cayley")
    with torch.no_grad():
        linear.weight = start.T.to(torch.float32)
    optimizer = torch.optim.Adam(linear.parameters(), lr=settings.learning_rate)
    data = vectors.to(torch.float32)
    batch = min(settings.batch_size, len(data))
    for _ in range(settings.steps):
        rows = torch.randperm(len(data), generator=generator)[:batch]
        z = data[rows]
        loss = adaptor_loss(z, z @ linear.weight.T, settings, dims)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        matrix = linear.weight.T.to(torch.float64)
    # re-orthogonalise in float64 (the parametrization is orthogonal to float32 precision)
    u, _, vh = torch.linalg.svd(matrix)
    return u @ vh


def fit_output_adaptor(
    model: Any, tokenizer: Any, texts: list[str], settings: AdaptorSettings | None = None, batch_size: int = 64
) -> torch.Tensor:
    """Fit the adaptor on ``texts`` (training text, pooled at the default exit, before any rotation the model holds)
    and store it as the model's output rotation with a zero mean, with ``settings.full_width_codes`` as the model's
    ``config.full_width_codes``; returns R (float64)."""
    settings = settings or AdaptorSettings()
    dims = settings.dims or [d for d in model.config.matryoshka_dimensions if d < model.hidden_size]
    vectors = pooled_vectors(model, tokenizer, texts, batch_size=batch_size)  # before any rotation the model holds
    matrix = fit_adaptor(vectors, settings, dims)
    model.set_output_rotation(torch.zeros(model.hidden_size, dtype=torch.float64), matrix)
    model.config.full_width_codes = settings.full_width_codes
    return matrix
