"""The Hub copies of the benchmarks, mapped to the local readers' columns and labels."""

from __future__ import annotations

from typing import Any

import datasets

from .common import make_dataset
from .registry import BENCHMARKS, HUB_COLUMNS, PAIR_CLASSES, ROW_COLUMNS, BenchmarkSpec


def _class_names(dataset: datasets.Dataset, column: str) -> list[str] | None:
    feature = dataset.features.get(column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    if "label_text" in dataset.column_names:  # e.g. mteb/banking77, SetFit/sst2: (label, label_text) pairs
        pairs = dict(zip(list(dataset[column]), list(dataset["label_text"]), strict=True))
        if sorted(pairs) == list(range(len(pairs))):
            return [str(pairs[i]) for i in range(len(pairs))]
    return None


def _check_labels(labels: list[Any], name: str, split: str) -> None:
    bad = next((i for i, v in enumerate(labels) if v is None or v < 0), None)
    if bad is not None:
        raise ValueError(
            f"benchmark {name!r} split {split!r} from the Hub has unlabeled rows (label {labels[bad]!r} in row {bad}); "
            "its labels are hidden, use another split"
        )


def from_hub(spec: BenchmarkSpec, split: str) -> datasets.Dataset:
    raw = datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    if spec.name == "snli":
        return _snli_from_hub(raw, split)
    kind = spec.split_kind(split)
    rename = HUB_COLUMNS.get(spec.name, {})
    source = {std: next((s for s, t in rename.items() if t == std), std) for std in ROW_COLUMNS[kind]}
    missing = [s for s in source.values() if s not in raw.column_names]
    if missing:
        raise ValueError(f"Hub dataset {spec.hub_id} has no column {missing[0]!r}; it has {raw.column_names}")
    data = {std: list(raw[src]) for std, src in source.items()}
    names = None
    if "label" in source:
        names = _class_names(raw, source["label"])
        if kind == "pair_labels":
            names = list(PAIR_CLASSES.get(spec.name, names or ("0", "1")))
            if data["label"] and isinstance(data["label"][0], str):  # e.g. scitail's "entails" / "neutral"
                index = {n: i for i, n in enumerate(names)}
                data["label"] = [index.get(v, -1) for v in data["label"]]
        _check_labels(data["label"], spec.name, split)
    return make_dataset(kind, data, names)


def _snli_from_hub(raw: datasets.Dataset, split: str) -> datasets.Dataset:
    """stanfordnlp/snli (label 0 entailment, 1 neutral, 2 contradiction, -1 no gold) -> standard rows.

    train: one (premise, first entailment, first contradiction) triplet per premise that has both, as the local
    triplet file was built; validation/test: entailment (1) vs contradiction (0) pairs, neutral dropped.
    """
    premises, hypotheses, labels = list(raw["premise"]), list(raw["hypothesis"]), list(raw["label"])
    if split == "train":
        first: dict[str, dict[int, str]] = {}
        for p, h, label in zip(premises, hypotheses, labels, strict=True):
            if label in (0, 2):
                first.setdefault(p, {}).setdefault(label, h)
        rows = [(p, hs[0], hs[2]) for p, hs in first.items() if 0 in hs and 2 in hs]
        return make_dataset(
            "triplets", {c: [r[i] for r in rows] for i, c in enumerate(("anchor", "positive", "negative"))}
        )
    keep = [
        (p, h, 1 if label == 0 else 0)
        for p, h, label in zip(premises, hypotheses, labels, strict=True)
        if label in (0, 2)
    ]
    data = {c: [r[i] for r in keep] for i, c in enumerate(ROW_COLUMNS["pair_labels"])}
    return make_dataset("pair_labels", data, PAIR_CLASSES["snli"])


def snli_pairs_from_hub(split: str) -> datasets.Dataset:
    raw = datasets.load_dataset(BENCHMARKS["snli"].hub_id, split=split)
    rows = zip(list(raw["premise"]), list(raw["hypothesis"]), list(raw["label"]), strict=True)
    keep = [(p, h) for p, h, label in rows if label == 0]
    return make_dataset("pairs", {"anchor": [p for p, _ in keep], "positive": [h for _, h in keep]})
