"""Calibrate int8 / uint8 ranges: the per-coordinate min and max of every trained budget's embedding.

``fit_quantization_ranges(model, tokenizer, texts)`` encodes ``texts`` once up to the deepest trained exit and stores,
for every (layer, dim) of ``config.matryoshka_layers`` x ``config.matryoshka_dimensions``, the (2, dim) min and max of
what ``encode(..., dimension=dim, layer=layer)`` returns (cut, rotated when the model rotates, normalised when it
normalises; at the full width of a model with ``config.full_width_codes: backbone``, in the coordinates its codes are
taken in). ``encode(..., precision="int8")``, the evaluation grid, the export and the standard and ONNX folders use
these ranges. ``python -m mipic_hf.run`` fits them after training on ``model.calibration_max_texts`` training texts
(never evaluation text), as sentence-transformers' ``quantize_embeddings(..., calibration_embeddings=...)`` would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..evaluation.precision import calibration_ranges, model_code_basis
from .errors import NonFiniteLossError


@torch.no_grad()
def fit_quantization_ranges(
    model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64, mode: str = "coordinate"
) -> dict[tuple[int, int], np.ndarray]:
    """Compute and store the ranges of every trained budget (``config.quantization_ranges`` becomes true);
    ``mode``: ``coordinate``, ``shared`` or ``auto`` (:func:`mipic_hf.evaluation.precision.calibration_ranges`)."""
    if len(texts) < 2:
        raise ValueError("calibrating int8 ranges needs at least 2 texts")
    layers = list(model.config.matryoshka_layers)
    full = model.encode_layers(texts, tokenizer, layers, dimension=model.hidden_size, batch_size=batch_size)
    bad = [layer for layer, vectors in full.items() if not torch.isfinite(vectors).all()]
    if bad:
        raise NonFiniteLossError(
            f"the model's embeddings are non-finite at exit layers {bad} on the calibration texts (training "
            "diverged: lower learning_rate or weight_decay); no int8 ranges were stored"
        )
    found = calibration_ranges(
        {layer: v.cpu().numpy() for layer, v in full.items()},
        model.config.matryoshka_dimensions,
        model.config.normalize,
        mode,
        model_code_basis(model),
    )
    model.set_quantization_ranges({key: torch.from_numpy(value) for key, value in found.items()})
    return found
