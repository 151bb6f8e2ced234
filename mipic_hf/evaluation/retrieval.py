"""Exact search and ranking metrics for retrieval tasks (BEIR layout, ``mipic_hf.data.retrieval``).

Search is exact (every document scored) and runs over the corpus in chunks: the corpus is turned into its stored
form (:func:`~mipic_hf.evaluation.precision.searchable`) one chunk at a time and only a running top k per query is
kept, so memory is the full-width embeddings the grid already holds plus one chunk, whatever the corpus size.
Ties go to the document that comes first in the corpus (binary codes tie often).

Metrics, as BEIR / MTEB compute them (trec_eval's definitions, x100): nDCG@10 (gain = the judged relevance,
discount log2(rank + 1), ideal from the qrels), recall@100 (share of the relevant documents in the top 100) and
MRR@10 (reciprocal rank of the first relevant document in the top 10, else 0), averaged over queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .precision import RESCORE, RESCORE_MULTIPLIER, budget_view, quantize, searchable, signs

TOP_K = 100  # the deepest cutoff a metric reads (recall@100)
CORPUS_CHUNK = 8192
QUERY_CHUNK = 256
RESCORE_CHUNK = 32  # queries whose candidates are re-ranked at once
METRICS = ("ndcg@10", "recall@100", "mrr@10")


def _merge(scores: np.ndarray, indices: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of candidate (scores, indices) per row; among equal scores the earlier column wins (candidates
    are laid out in corpus order, so that is the earlier document)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def exact_search(
    queries: np.ndarray,
    corpus_size: int,
    corpus_chunk: Callable[[int, int], np.ndarray],
    k: int,
    chunk_size: int = CORPUS_CHUNK,
    query_chunk: int = QUERY_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, corpus rows) of each query by dot product, best first.

    ``corpus_chunk(start, stop)`` returns the searchable vectors of corpus rows start..stop-1; it is called once
    per chunk of ``chunk_size`` rows, so the whole searchable corpus never exists at once.
    """
    k = min(k, corpus_size)
    n = len(queries)
    best_scores = np.full((n, 0), -np.inf, dtype=np.float32)
    best_rows = np.zeros((n, 0), dtype=np.int64)
    for start in range(0, corpus_size, chunk_size):
        stop = min(start + chunk_size, corpus_size)
        block = corpus_chunk(start, stop)
        rows = np.arange(start, stop, dtype=np.int64)
        new_scores, new_rows = [], []
        for q in range(0, n, query_chunk):
            scores = queries[q : q + query_chunk] @ block.T
            top_scores, top_rows = _merge(scores, np.broadcast_to(rows, scores.shape), k)
            new_scores.append(top_scores)
            new_rows.append(top_rows)
        best_scores, best_rows = _merge(
            np.concatenate([best_scores, np.concatenate(new_scores)], axis=1),
            np.concatenate([best_rows, np.concatenate(new_rows)], axis=1),
            k,
        )
    return best_scores, best_rows


def search_cell(
    query_full: np.ndarray,
    corpus_full: np.ndarray,
    dimension: int,
    precision: str,
    ranges: np.ndarray | None,
    normalize: bool,
    k: int = TOP_K,
    chunk_size: int = CORPUS_CHUNK,
) -> np.ndarray:
    """Ranked corpus rows (n_queries, k) of one (dimension, precision) cell, from full-width vectors.

    Queries and documents are stored the same way; ``binary_rescore`` searches the bits for
    ``RESCORE_MULTIPLIER * k`` candidates and re-ranks them by the float query against the stored bits.
    """
    stored = "binary" if precision == RESCORE else precision

    def chunk(start: int, stop: int) -> np.ndarray:
        return searchable(budget_view(corpus_full[start:stop], dimension, normalize), stored, ranges)

    queries = searchable(budget_view(query_full, dimension, normalize), stored, ranges)
    depth = RESCORE_MULTIPLIER * k if precision == RESCORE else k
    _, rows = exact_search(queries, len(corpus_full), chunk, depth, chunk_size)
    if precision != RESCORE:
        return rows
    query_float = budget_view(query_full, dimension, normalize)
    ranked = np.empty((len(rows), min(k, rows.shape[1])), dtype=np.int64)
    for q in range(0, len(rows), RESCORE_CHUNK):  # the candidates' bits of a few queries at a time
        candidates = rows[q : q + RESCORE_CHUNK]
        stored = quantize(budget_view(corpus_full[candidates.reshape(-1)], dimension, normalize), "binary")
        bits = signs(stored, dimension).reshape(*candidates.shape, dimension)
        rescored = np.einsum("qd,qkd->qk", query_float[q : q + RESCORE_CHUNK], bits)
        ranked[q : q + RESCORE_CHUNK] = _merge(rescored, candidates, k)[1]
    return ranked


def ranking_metrics(ranked: list[list[str]], qrels: Mapping[str, Mapping[str, int]], query_ids: list[str]) -> dict:
    """nDCG@10, recall@100 and MRR@10 (x100, mean over ``query_ids``) of ranked document ids per query."""
    ndcg, recall, mrr = [], [], []
    for query, docs in zip(query_ids, ranked, strict=True):
        judged = qrels.get(query, {})
        gains = [max(int(judged.get(doc, 0)), 0) for doc in docs]
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)
        discounts = 1.0 / np.log2(np.arange(2, 12))
        idcg = float(np.dot(ideal[:10], discounts[: len(ideal[:10])]))
        dcg = float(np.dot(gains[:10], discounts[: len(gains[:10])]))
        ndcg.append(dcg / idcg if idcg > 0 else 0.0)
        relevant = {d for d, g in judged.items() if g > 0}
        recall.append(len(relevant & set(docs[:100])) / len(relevant) if relevant else 0.0)
        first = next((i for i, g in enumerate(gains[:10]) if g > 0), None)
        mrr.append(0.0 if first is None else 1.0 / (first + 1))
    return {name: float(100.0 * np.mean(v)) for name, v in zip(METRICS, (ndcg, recall, mrr), strict=True)}
