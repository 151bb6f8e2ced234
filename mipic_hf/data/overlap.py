"""Which evaluation examples are training examples: normalised text pairs.

STS-B train is built from STS 2012-2016, so a model trained on it has seen some STS12 pairs with their gold
score. Evaluation drops an evaluation pair (or a retrieval query with one of its relevant documents) whose
normalised, unordered text pair is a training pair of the run (:func:`normalize_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_NOT_WORD = re.compile(r"[^\w\s]")


def normalize_text(text: str) -> str:
    """Lower-cased, every character that is neither a word character nor whitespace (punctuation, symbols)
    removed, words joined by single spaces. (STS12 against STS-B train: 839 of 3,108 pairs match.)"""
    return " ".join(_NOT_WORD.sub("", str(text).lower()).split())


def pair_key(a: str, b: str) -> tuple[str, str]:
    """The unordered, normalised key of a text pair."""
    x, y = normalize_text(a), normalize_text(b)
    return (x, y) if x <= y else (y, x)


def training_pairs(dataset: Any, columns: Iterable[str] | None = None) -> set[tuple[str, str]]:
    """The normalised pairs a training set shows the model: the first text column with each other text column of
    the same row (sentence1/sentence2, anchor/positive, anchor/negative). A single-text set has none.

    ``columns``: the text columns in order (default: every string column, in the dataset's order).
    """
    if columns is None:
        first = dataset[0] if len(dataset) else {}
        columns = [c for c in dataset.column_names if isinstance(first.get(c), str)]
    columns = list(columns)
    if len(columns) < 2:
        return set()
    head = dataset[columns[0]]
    pairs: set[tuple[str, str]] = set()
    for other in columns[1:]:
        pairs.update(pair_key(a, b) for a, b in zip(head, dataset[other], strict=True) if a and b)
    return pairs
