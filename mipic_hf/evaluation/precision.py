"""The precision axis of the grid: what a budget's vectors look like stored as float32, int8 or bits, and the
similarity a vector store takes on them.

- ``float32``: cosine of the vectors.
- ``int8`` / ``uint8``: cosine of the one-byte codes (what a store of int8 vectors with a cosine metric computes),
  the codes from ``ranges`` calibrated on training text.
- ``binary`` / ``ubinary``: Hamming similarity of the sign bits (as the dot product of +-1 vectors,
  ``d - 2 * hamming``, which ranks the same).
- ``binary_rescore`` (retrieval only): the corpus stored as bits, searched with the query's bits, and the top
  ``RESCORE_MULTIPLIER * k`` re-ranked by the float query's dot product with the stored bits, as
  sentence-transformers' ``semantic_search_faiss(..., rescore=True)`` does. It stores as many bytes as ``binary``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from ..modeling_mipic import CALIBRATED_PRECISIONS, PRECISIONS, precision_bytes, quantize_embeddings

RESCORE = "binary_rescore"
GRID_PRECISIONS = (*PRECISIONS, RESCORE)
RESCORE_MULTIPLIER = 4
BINARY = ("binary", "ubinary", RESCORE)


def check_precisions(values: Iterable[str] | str | None) -> list[str]:
    """Validated precisions, float32 first then the rest in ``GRID_PRECISIONS`` order (None: float32 only)."""
    if values is None:
        return ["float32"]
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    values = [str(v).strip() for v in values]
    unknown = [v for v in values if v not in GRID_PRECISIONS]
    if unknown or not values:
        raise ValueError(f"precisions must be among {', '.join(GRID_PRECISIONS)}, got {values!r}")
    return [p for p in GRID_PRECISIONS if p in values or p == "float32"]


def cell_bytes(dimension: int, precision: str) -> int:
    """Bytes one stored vector of a (dimension, precision) cell takes."""
    return precision_bytes(dimension, "binary" if precision == RESCORE else precision)


def applies(precision: str, task_type: str) -> bool:
    """Whether a grid precision is scored on a task type (rescoring needs a corpus to search)."""
    return precision != RESCORE or task_type == "retrieval"


def budget_view(full: np.ndarray, dimension: int, normalize: bool) -> np.ndarray:
    """What ``encode(..., dimension=d)`` returns from full-width vectors: the first d columns, L2-normalised
    again when the model normalises (float32)."""
    cut = np.asarray(full[:, :dimension], dtype=np.float32)
    return _unit(cut) if normalize else cut


def coded_full(full: np.ndarray, dimension: int, basis: np.ndarray | None) -> np.ndarray:
    """The full-width vectors a (dimension) budget is cut from in the grid: ``full @ basis`` at the full width when
    the model codes it in another basis (``MatryoshkaModel.code_basis``: orthogonal, so float cosines are the same
    and only the int8 / binary codes change), else ``full`` itself."""
    return full if basis is None or dimension != full.shape[1] else np.asarray(full, dtype=np.float32) @ basis


def model_code_basis(model: Any) -> np.ndarray | None:
    """The model's ``code_basis()`` as a float32 array (None for a model without one, e.g. no rotation)."""
    basis = model.code_basis() if hasattr(model, "code_basis") else None
    return None if basis is None else basis.detach().cpu().numpy().astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def quantize(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """:func:`mipic_hf.modeling_mipic.quantize_embeddings` on numpy arrays (``binary_rescore`` stores ``binary``)."""
    precision = "binary" if precision == RESCORE else precision
    ranges_t = None if ranges is None else torch.as_tensor(np.asarray(ranges, dtype=np.float32))
    return quantize_embeddings(torch.from_numpy(np.ascontiguousarray(vectors)), precision, ranges_t).numpy()


def signs(codes: np.ndarray, dimension: int) -> np.ndarray:
    """The +-1 float32 vectors of packed sign bits (binary: int8 shifted by 128; ubinary: uint8)."""
    packed = (codes.astype(np.int16) + 128).astype(np.uint8) if codes.dtype == np.int8 else codes
    bits = np.unpackbits(packed, axis=-1)[:, :dimension]
    return bits.astype(np.float32) * 2 - 1


def searchable(vectors: np.ndarray, precision: str, ranges: np.ndarray | None = None) -> np.ndarray:
    """Float32 vectors whose dot products are the similarity a store takes at ``precision`` (module docstring)."""
    if precision == "float32":
        return _unit(np.asarray(vectors, dtype=np.float32))
    codes = quantize(vectors, precision, ranges)
    if precision in CALIBRATED_PRECISIONS:
        return _unit(codes.astype(np.float32))
    return signs(codes, vectors.shape[1])


def sample_texts(texts: Iterable[str], limit: int | None, seed: int = 0) -> list[str]:
    """The distinct non-empty texts (first-seen order); a seeded sample of ``limit`` of them."""
    unique = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    if limit is not None and len(unique) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(unique), size=limit, replace=False))
        unique = [unique[i] for i in keep]
    return unique


CALIBRATION_MODES = ("coordinate", "shared", "auto")
AGREEMENT_TEXTS = 1000  # calibration texts whose pairwise cosines ``auto`` compares


def code_agreement(view: np.ndarray, ranges: np.ndarray) -> float:
    """Pearson correlation, over the pairs of (at most AGREEMENT_TEXTS of) ``view``'s rows, between their cosines as
    floats and as int8 codes with ``ranges`` (the similarity a store computes): how well the codes keep the
    texts' relations."""
    sample = np.asarray(view[:AGREEMENT_TEXTS], dtype=np.float32)
    floats, codes = _unit(sample), searchable(sample, "int8", ranges)
    upper = np.triu_indices(len(sample), k=1)
    return float(np.corrcoef((floats @ floats.T)[upper], (codes @ codes.T)[upper])[0, 1])


def calibration_ranges(
    full_by_layer: Mapping[int, np.ndarray],
    dims: Iterable[int],
    normalize: bool,
    mode: str = "coordinate",
    basis: np.ndarray | None = None,
) -> dict[tuple[int, int], np.ndarray]:
    """Per (layer, dim): the (2, dim) ranges of the budget's vectors (:func:`budget_view`) of the calibration texts,
    from their full-width vectors at each layer.

    ``coordinate`` (sentence-transformers' calibration): each coordinate's own min and max, so every coordinate gets
    all 256 codes and the codes' cosine weighs a low-variance coordinate like a high-variance one. ``shared``: one
    min and max over every coordinate of the budget, repeated, so the codes keep the coordinates' relative scales
    (what a rotated, PCA-ordered vector needs). ``auto``: per budget, whichever of the two gives int8 codes whose
    cosines between the calibration texts agree best with the floats' (:func:`code_agreement`; no evaluation
    data). All are (2, dim) arrays that ``quantize_embeddings`` takes as is. ``basis``: the model's
    :func:`model_code_basis` (the full width's ranges are then those of its codes' coordinates).
    """
    if mode not in CALIBRATION_MODES:
        raise ValueError(f"calibration mode must be one of {', '.join(CALIBRATION_MODES)}, got {mode!r}")
    ranges = {}
    for layer, full in full_by_layer.items():
        for dim in dims:
            view = budget_view(coded_full(full, dim, basis), dim, normalize)
            if mode == "auto":
                chosen = max((_ranges(view, m) for m in CALIBRATION_MODES[:2]), key=lambda r: code_agreement(view, r))
            else:
                chosen = _ranges(view, mode)
            ranges[(int(layer), int(dim))] = chosen
    return ranges


def _ranges(view: np.ndarray, mode: str) -> np.ndarray:
    dim = view.shape[1]
    low, high = (view.min(axis=0), view.max(axis=0)) if mode == "coordinate" else (view.min(), view.max())
    return np.stack([np.broadcast_to(low, (dim,)), np.broadcast_to(high, (dim,))])


def model_ranges(model: Any, layers: Iterable[int], dims: Iterable[int]) -> dict[tuple[int, int], np.ndarray] | None:
    """The ranges a model stores for every (layer, dim) asked, else None (some budget is not calibrated)."""
    if getattr(model, "quantization", None) is None:
        return None
    try:
        return {(lay, d): model.quantization.get(lay, d).cpu().numpy() for lay in layers for d in dims}
    except ValueError:
        return None
