"""Which task loss a train set implies, from its columns."""

from __future__ import annotations

from typing import Any

from .collator import split_columns

# ``task_loss: auto`` from the recipe's data kind (the same rule infer_task applies to a dataset's columns)
KIND_TO_TASK = {
    "sentences": "simcse",
    "pairs": "mnrl",
    "triplets": "mnrl",
    "scored_pairs": "cosent",
    "labeled": "classification",
}


def infer_task(dataset: Any) -> tuple[str, int | None]:
    """(task_loss, num_labels) from a datasets.Dataset's columns, as ``task_loss=auto`` documents."""
    if dataset is None or not hasattr(dataset, "column_names"):
        raise ValueError("task_loss=auto needs a train_dataset with named columns; set task_loss explicitly")
    example = dataset[0] if len(dataset) else None
    texts, label = split_columns(dataset.column_names, example)
    if label is None:
        return ("simcse" if len(texts) == 1 else "mnrl"), None
    feature = dataset.features.get(label) if getattr(dataset, "features", None) else None
    names = getattr(feature, "names", None)
    values = dataset[label]
    if names is not None or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        num = len(names) if names is not None else int(max(values)) + 1
        return "classification", num
    return "cosent", None
