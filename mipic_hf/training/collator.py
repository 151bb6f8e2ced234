"""Batching raw text rows for MIPICTrainer: tokenise every text column with dynamic padding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

LABEL_COLUMNS = ("label", "labels", "score")


def split_columns(column_names: Sequence[str], example: dict[str, Any] | None = None) -> tuple[list[str], str | None]:
    """(text columns in order, label column or None); the label column is the first of label/labels/score."""
    label = next((c for c in LABEL_COLUMNS if c in column_names), None)
    texts = [c for c in column_names if c != label and (example is None or isinstance(example.get(c), str))]
    return texts, label


@dataclass
class MatryoshkaDataCollator:
    """Turn rows ``{"sentence1": str, "sentence2": str, "score": float}`` into model inputs.

    Output: ``{"features": [tokenizer output per text column], "texts": [raw strings per column], "labels":
    tensor}`` (labels only when the rows have a label column; the raw texts feed a teacher). Text columns
    default to the rows' string columns in order; the label column to the first of ``label``, ``labels``,
    ``score``. Padding is dynamic (to the longest row, rounded up to ``pad_to_multiple_of`` when set: 8 keeps
    bf16 / fp16 matrix shapes on the GPU's tensor-core tiles), truncation at ``max_length``.
    """

    tokenizer: Any
    text_columns: list[str] | None = None
    label_column: str | None = None
    max_length: int | None = None
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        text_columns, label_column = self.text_columns, self.label_column
        if text_columns is None:
            text_columns, inferred = split_columns(list(rows[0].keys()), rows[0])
            label_column = label_column or inferred
        if not text_columns:
            raise ValueError(f"no text column found; the rows have {sorted(rows[0].keys())}")
        features, raw = [], []
        for column in text_columns:
            texts = [row[column] for row in rows]
            raw.append(texts)
            features.append(
                dict(
                    self.tokenizer(
                        texts,
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        pad_to_multiple_of=self.pad_to_multiple_of,
                        return_tensors="pt",
                    )
                )
            )
        batch: dict[str, Any] = {"features": features, "texts": raw}
        if label_column is not None and label_column in rows[0]:
            values = [row[label_column] for row in rows]
            dtype = torch.long if all(isinstance(v, int) and not isinstance(v, bool) for v in values) else torch.float
            batch["labels"] = torch.tensor(values, dtype=dtype)
        return batch


def pad_multiple(args: Any) -> int | None:
    """8 under bf16 / fp16 (matrix shapes on the GPU's tensor-core tiles), else None: plain dynamic padding."""
    return 8 if (getattr(args, "bf16", False) or getattr(args, "fp16", False)) else None


def with_lengths(dataset: Any, tokenizer: Any, column_name: str = "length", max_length: int | None = None) -> Any:
    """``dataset`` with each row's token count (its longest text column, truncated at ``max_length``) as
    ``column_name``: what the Trainer's ``group_by_length`` sampler reads, since raw text rows have no input_ids.
    Non-text columns are ignored by the collator, so the extra column changes nothing else."""
    if column_name in dataset.column_names or not len(dataset):
        return dataset
    texts, _ = split_columns(dataset.column_names, dataset[0])

    def count(batch: dict[str, list[Any]]) -> dict[str, list[int]]:
        ids = [tokenizer(batch[c], truncation=True, max_length=max_length)["input_ids"] for c in texts]
        return {column_name: [max(len(row) for row in rows) for rows in zip(*ids, strict=True)]}

    return dataset.map(count, batched=True)
