"""Fit the output rotation: centre the pooled vectors and rotate them onto their principal directions.

``fit_output_rotation(model, tokenizer, texts)`` encodes ``texts`` at the model's default exit layer (pooled,
before any rotation the model already holds), and stores ``mean`` and the eigenvectors of the covariance,
largest variance first, as the model's :class:`~mipic_hf.modeling_mipic.OutputRotation`. A prefix of d
coordinates then keeps the d directions of largest variance (PCA truncation), and full-width cosine changes
only by the centring. ``python -m mipic_hf.run`` fits it on the training sentences (never on evaluation text)
before training, after training, or not at all (``model.fit_rotation``: before | after | none; ``auto``,
the default, is ``before`` (chosen on STS-B dev, benchmarks/RESULTS.md) for full fine-tuning and ``none``
with LoRA, whose adapters cannot carry it). ``adaptor`` fits the output adaptor (:mod:`.adaptor`: an orthogonal
map, no centring, the full width's codes in the backbone's coordinates) after training instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..modeling_mipic import pool

ROTATION_CHOICES = ("auto", "none", "before", "after", "adaptor")
FITTED_AFTER = ("after", "adaptor")  # fitted on the trained model
AUTO_ROTATION = "before"  # issue 14's select_rotation on STS-B dev (benchmarks/quality_rules.py)


def resolve_rotation(choice: str, use_lora: bool) -> str:
    """``model.fit_rotation`` as the run applies it: ``auto`` is :data:`AUTO_ROTATION` for full fine-tuning
    and ``none`` with LoRA (an adapter cannot carry the rotation, and adapters are often exported on their own
    later; set ``before`` explicitly for a merged LoRA model)."""
    if choice != "auto":
        return choice
    return "none" if use_lora else AUTO_ROTATION


def training_texts(dataset: Any, columns: Iterable[str], limit: int | None = None, seed: int = 0) -> list[str]:
    """The distinct texts of ``columns`` of a training dataset (first-seen order); a seeded sample of ``limit``."""
    texts = list(dict.fromkeys(t for c in columns for t in dataset[c] if isinstance(t, str) and t))
    if limit is not None and len(texts) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
        texts = [texts[i] for i in keep]
    return texts


@torch.no_grad()
def pooled_vectors(
    model: Any, tokenizer: Any, texts: list[str], layer: int | None = None, batch_size: int = 64
) -> torch.Tensor:
    """(N, D) float64 pooled vectors of ``texts`` at ``layer`` (default exit), without the output rotation."""
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for start in range(0, len(texts), batch_size):
            features = tokenizer(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=model.config.max_seq_length,
                return_tensors="pt",
            ).to(model.device)
            out = model(**features, layer=layer)
            chunks.append(pool(out.last_hidden_state, features["attention_mask"], model.config.pooling).double())
    finally:
        model.train(was_training)
    return torch.cat(chunks).cpu()


def principal_rotation(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, R) of (N, D) vectors: R's columns are the covariance eigenvectors, largest eigenvalue first, each
    signed so that its largest-magnitude entry is positive (a deterministic choice among +-v)."""
    vectors = vectors.to(torch.float64)
    if vectors.shape[0] < 2:
        raise ValueError("fitting an output rotation needs at least 2 texts")
    mean = vectors.mean(0)
    centred = vectors - mean
    covariance = centred.T @ centred / (vectors.shape[0] - 1)
    values, vecs = torch.linalg.eigh(covariance)  # ascending
    order = torch.argsort(values, descending=True, stable=True)
    matrix = vecs[:, order]
    peak = matrix.abs().argmax(0)
    signs = torch.sign(matrix[peak, torch.arange(matrix.shape[1])])
    return mean, matrix * torch.where(signs == 0, 1.0, signs)


def fit_output_rotation(
    model: Any, tokenizer: Any, texts: list[str], layer: int | None = None, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit centring + PCA on ``texts`` and store it in ``model`` (``config.output_rotation`` becomes true);
    returns (mean, R) in float64."""
    mean, matrix = principal_rotation(pooled_vectors(model, tokenizer, texts, layer, batch_size))
    model.set_output_rotation(mean, matrix)
    return mean, matrix
