"""Small helpers shared by the readers: the data folder, the offline switch, argument checks, Dataset building."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from .registry import ROW_COLUMNS, SPLIT_ALIASES, NotLocal


def data_dir() -> Path | None:
    """The local data folder: ``$MIPIC_DATA_DIR`` when it is set and exists, else None."""
    value = os.environ.get("MIPIC_DATA_DIR", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


default_data_dir = data_dir  # the loaders' ``data_dir`` argument shadows the function


def offline_switch(datasets: bool = True) -> str | None:
    """The name of the offline switch that is set, else None: HF_HUB_OFFLINE (every Hub download and upload)
    or, for Hub datasets (``datasets``), HF_DATASETS_OFFLINE too. Read at call time, unlike the libraries'
    import-time constants, so a switch set after import counts. The project's one offline test."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")[: 2 if datasets else 1]:
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return var
    return None


def check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def normalize_split(split: str, allowed: Sequence[str], owner: str) -> str:
    value = SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    if value not in allowed:
        raise ValueError(
            f"split {split!r} is not available for {owner}; choose one of {list(allowed)} ('dev' = validation)"
        )
    return value


def read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Lines of a text file without line endings (only \\n and \\r\\n end a line, unlike str.splitlines)."""
    if not path.is_file():
        raise NotLocal(path)
    text = path.read_text(encoding=encoding)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def open_csv(path: Path) -> Any:
    if not path.is_file():
        raise NotLocal(path)
    return path.open(encoding="utf-8", newline="")


def _features(kind: str, names: Sequence[str] | None = None) -> datasets.Features:
    """Features of one row kind: strings, float64 score, int64 label (a ClassLabel when names are known)."""
    feats: dict[str, Any] = {}
    for column in ROW_COLUMNS[kind]:
        if column == "score":
            feats[column] = datasets.Value("float64")
        elif column == "label":
            feats[column] = datasets.ClassLabel(names=list(names)) if names else datasets.Value("int64")
        else:
            feats[column] = datasets.Value("string")
    return datasets.Features(feats)


def make_dataset(kind: str, data: dict[str, list[Any]], names: Sequence[str] | None = None) -> datasets.Dataset:
    columns = ROW_COLUMNS[kind]
    return datasets.Dataset.from_dict({c: data[c] for c in columns}, features=_features(kind, names))


def take_head(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.select(range(max_samples))


def describe(dataset: Any) -> str:
    """One line: ``"5749 rows, columns sentence1, sentence2, score"``."""
    columns = ", ".join(getattr(dataset, "column_names", None) or [])
    try:
        return f"{len(dataset)} rows, columns {columns}"
    except TypeError:  # an IterableDataset has no length
        return f"streamed rows, columns {columns}"
