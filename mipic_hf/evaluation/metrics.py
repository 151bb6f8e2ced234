"""Embedding-evaluation metrics as ``evaluate.Metric`` subclasses defined in this package.

They never touch the Hub: instantiate the classes directly (``STSSpearman()``), not through
``evaluate.load(...)``. ``evaluate.Metric.__init__`` needs no module path; it only creates a cache folder.
Our subclasses default to ``keep_in_memory=True`` (no Arrow cache file is written) and to a cache folder under
the system temp dir (so a read-only ``~/.cache/huggingface`` is never needed); both can be overridden with the
usual ``keep_in_memory=`` / ``cache_dir=`` arguments. All scores are percentages (x100).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import datasets
import evaluate
import numpy as np

_CACHE_DIR = os.path.join(tempfile.gettempdir(), "mipic_hf_metrics")

_MTEB_CITATION = """\
@inproceedings{muennighoff2023mteb,
  title = {{MTEB}: Massive Text Embedding Benchmark},
  author = {Muennighoff, Niklas and Tazi, Nouamane and Magne, Lo{\\"i}c and Reimers, Nils},
  booktitle = {EACL},
  year = {2023}
}
"""


class _LocalMetric(evaluate.Metric):
    """An ``evaluate.Metric`` that works offline: in-memory by default, cache folder under the temp dir."""

    def __init__(self, keep_in_memory: bool = True, cache_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(keep_in_memory=keep_in_memory, cache_dir=cache_dir or _CACHE_DIR, **kwargs)


def _as_array(values: Any, dtype: Any) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(-1)


class STSSpearman(_LocalMetric):
    """Semantic textual similarity: Spearman and Pearson correlation of cosine similarities with gold scores."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Spearman and Pearson correlation (x100) between predicted similarities (e.g. cosine "
            "of two sentence embeddings) and gold similarity scores, as in SentEval and MTEB STS tasks.",
            citation=_MTEB_CITATION,
            inputs_description="""
Args:
    predictions (`list[float]`): predicted similarity of each pair (e.g. cosine similarity).
    references (`list[float]`): gold similarity score of each pair (any scale).
Returns:
    spearman (`float`): 100 * Spearman rank correlation.
    pearson (`float`): 100 * Pearson correlation.
""",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
        from scipy.stats import pearsonr, spearmanr

        pred = _as_array(predictions, np.float64)
        gold = _as_array(references, np.float64)
        if len(pred) < 2:
            raise ValueError(f"STSSpearman needs at least 2 pairs, got {len(pred)}")
        return {
            "spearman": float(100.0 * spearmanr(pred, gold).statistic),
            "pearson": float(100.0 * pearsonr(pred, gold).statistic),
        }


class ClassificationScores(_LocalMetric):
    """Single-label classification: accuracy and macro F1 of predicted class ids."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy and macro-averaged F1 (x100) of predicted class ids, e.g. from a logistic "
            "regression probe trained on frozen sentence embeddings (MTEB classification).",
            citation=_MTEB_CITATION,
            inputs_description="""
Args:
    predictions (`list[int]`): predicted class id of each example.
    references (`list[int]`): gold class id of each example.
Returns:
    accuracy (`float`): 100 * accuracy.
    macro_f1 (`float`): 100 * F1 averaged over the classes seen in predictions or references.
""",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.f1_score.html"],
        )

    def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        pred = _as_array(predictions, np.int64)
        gold = _as_array(references, np.int64)
        return {
            "accuracy": float(100.0 * accuracy_score(gold, pred)),
            "macro_f1": float(100.0 * f1_score(gold, pred, average="macro", zero_division=0)),
        }


def best_threshold_scores(scores: Any, labels: Any) -> dict[str, float]:
    """Best accuracy and best F1 over every threshold on ``scores`` (predict 1 when score >= threshold).

    The thresholds are chosen on these very scores, as MTEB and SentEval pair classification do. Tied scores
    always get the same prediction. Returns fractions in [0, 1] plus the chosen thresholds (midpoints between
    consecutive distinct scores, +-inf at the ends).
    """
    s = _as_array(scores, np.float64)
    y = _as_array(labels, np.int64)
    if len(s) != len(y) or len(s) == 0:
        raise ValueError(f"scores and labels must be non-empty and of equal length, got {len(s)} and {len(y)}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("pair classification labels must be 0 or 1")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    n, positives = len(y), int(y.sum())
    # Predict the top k as positive, for every k that does not split a group of tied scores (k = 0..n).
    k = np.arange(n + 1)
    tp = np.concatenate([[0], np.cumsum(y)])
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[:-1] != s[1:]
    accuracy = (tp + (n - positives) - (k - tp)) / n
    f1 = np.where(k + positives > 0, 2 * tp / np.maximum(k + positives, 1), 0.0)
    padded = np.concatenate([[np.inf], s, [-np.inf]])
    thresholds = (padded[k] + padded[k + 1]) / 2  # between the k-th and (k+1)-th highest scores
    thresholds[0], thresholds[n] = np.inf, -np.inf
    best_acc = int(np.flatnonzero(valid)[np.argmax(accuracy[valid])])
    best_f1 = int(np.flatnonzero(valid)[np.argmax(f1[valid])])
    return {
        "accuracy": float(accuracy[best_acc]),
        "accuracy_threshold": float(thresholds[best_acc]),
        "f1": float(f1[best_f1]),
        "f1_threshold": float(thresholds[best_f1]),
    }


class PairClassificationScores(_LocalMetric):
    """Pair classification (duplicates, paraphrase): best-threshold accuracy / F1 and average precision."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Pair classification from similarity scores (x100): accuracy and F1 at their best "
            "thresholds (chosen on these scores, as MTEB and SentEval do) and average precision.",
            citation=_MTEB_CITATION,
            inputs_description="""
Args:
    predictions (`list[float]`): similarity of each pair (e.g. cosine similarity); higher means positive.
    references (`list[int]`): gold label of each pair, 0 or 1.
Returns:
    accuracy (`float`): 100 * best accuracy over thresholds.
    f1 (`float`): 100 * best F1 (positive class) over thresholds.
    ap (`float`): 100 * average precision of the scores (sklearn).
""",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.average_precision_score.html"
            ],
        )

    def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
        from sklearn.metrics import average_precision_score

        pred = _as_array(predictions, np.float64)
        gold = _as_array(references, np.int64)
        best = best_threshold_scores(pred, gold)
        ap = average_precision_score(gold, pred) if 0 < gold.sum() < len(gold) else float("nan")
        return {"accuracy": 100.0 * best["accuracy"], "f1": 100.0 * best["f1"], "ap": float(100.0 * ap)}


METRIC_FOR_TASK: dict[str, type[_LocalMetric]] = {
    "sts": STSSpearman,
    "classification": ClassificationScores,
    "pair_classification": PairClassificationScores,
}
MAIN_METRIC: dict[str, str] = {
    "sts": "spearman",
    "classification": "accuracy",
    "pair_classification": "ap",
    "retrieval": "ndcg@10",  # scored by mipic_hf.evaluation.retrieval, not an evaluate.Metric
}
