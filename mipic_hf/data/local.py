"""Readers of the local benchmark files (layout in ``mipic_hf.data``), one per benchmark."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets

from .common import make_dataset, open_csv, read_lines
from .registry import PAIR_CLASSES, SST2_CLASSES, TREC_CLASSES, NotLocal


def _stsb_local(root: Path, split: str) -> datasets.Dataset:
    path = root / "stsb" / f"sts-{ {'validation': 'dev'}.get(split, split) }.csv"
    data: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
    with open_csv(path) as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) < 7:
                raise ValueError(f"{path} line {i}: expected 7 or more tab-separated fields, got {len(row)}")
            data["score"].append(float(row[4]))
            data["sentence1"].append(row[5].strip())
            data["sentence2"].append(row[6].strip())
    return make_dataset("scored_pairs", data)


def _sts_year_local(year: int) -> Callable[[Path, str], datasets.Dataset]:
    def load(root: Path, split: str) -> datasets.Dataset:
        folder = root / "sts12-16" / f"STS{year}-en-test"
        data: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
        inputs = sorted(folder.glob("STS.input.*.txt")) if folder.is_dir() else []
        pairs = [(p, folder / p.name.replace("STS.input.", "STS.gs.", 1)) for p in inputs]
        pairs = [(p, g) for p, g in pairs if g.is_file()]  # e.g. STS13 SMT: input without gold scores
        if not pairs:
            raise NotLocal(folder / "STS.input.<subset>.txt")
        for input_path, gold_path in pairs:
            sentences, gold = read_lines(input_path), read_lines(gold_path)
            if len(sentences) != len(gold):
                raise ValueError(f"{input_path} has {len(sentences)} lines but {gold_path.name} has {len(gold)}")
            for line, score in zip(sentences, gold, strict=True):
                if not score.strip():
                    continue  # unscored pair
                fields = line.split("\t")
                if len(fields) < 2:
                    raise ValueError(f"{input_path}: a line has {len(fields)} tab-separated field(s), expected 2")
                data["sentence1"].append(fields[0].strip())
                data["sentence2"].append(fields[1].strip())
                data["score"].append(float(score))
        return make_dataset("scored_pairs", data)

    return load


def _sick_local(root: Path, split: str) -> datasets.Dataset:
    name = {"train": "SICK_train.txt", "validation": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}[split]
    path = root / "sick" / name
    data: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
    with open_csv(path) as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.strip() for h in next(reader, [])]
        try:
            a, b, s = (header.index(c) for c in ("sentence_A", "sentence_B", "relatedness_score"))
        except ValueError:
            raise ValueError(f"{path}: header needs sentence_A, sentence_B, relatedness_score; got {header}") from None
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            data["sentence1"].append(row[a].strip())
            data["sentence2"].append(row[b].strip())
            data["score"].append(float(row[s]))
    return make_dataset("scored_pairs", data)


def _snli_local(root: Path, split: str) -> datasets.Dataset:
    if split == "train":
        path = root / "snli" / "triplets_senteval_devtest.tsv"
        data: dict[str, list[Any]] = {"anchor": [], "positive": [], "negative": []}
        with open_csv(path) as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                data["anchor"].append(row["premise"].strip())
                data["positive"].append(row["entailment"].strip())
                data["negative"].append(row["contradiction"].strip())
        return make_dataset("triplets", data)
    suffix = {"validation": "dev", "test": "test"}[split]
    folder = root / "snli" / "senteval"
    s1, s2, labels = (read_lines(folder / f"{stem}.{suffix}") for stem in ("s1", "s2", "labels"))
    if not len(s1) == len(s2) == len(labels):
        raise ValueError(f"{folder}: s1/s2/labels.{suffix} have {len(s1)}/{len(s2)}/{len(labels)} lines")
    data = {"sentence1": [], "sentence2": [], "label": []}
    codes = {"entailment": 1, "contradiction": 0}
    for a, b, label in zip(s1, s2, labels, strict=True):
        code = codes.get(label.strip())
        if code is not None:  # neutral dropped
            data["sentence1"].append(a.strip())
            data["sentence2"].append(b.strip())
            data["label"].append(code)
    return make_dataset("pair_labels", data, PAIR_CLASSES["snli"])


def snli_pairs_local(root: Path, split: str) -> datasets.Dataset:
    """(premise, entailment hypothesis) pairs of SNLI train: cat_subset/train.tsv rows with label 3."""
    path = root / "snli" / "cat_subset" / ("train.tsv" if split == "train" else "test.tsv")
    data: dict[str, list[Any]] = {"anchor": [], "positive": []}
    with open_csv(path) as f:
        for row in csv.reader(f, delimiter="\t"):  # default quoting: a few sentences are CSV-quoted
            if len(row) >= 4 and row[0].strip() == "3":
                data["anchor"].append(row[2].strip())
                data["positive"].append(row[3].strip())
    return make_dataset("pairs", data)


def _trec_local(root: Path, split: str) -> datasets.Dataset:
    path = root / "trec" / ("train_5500.label" if split == "train" else "TREC_10.label")
    data: dict[str, list[Any]] = {"text": [], "label": []}
    for i, line in enumerate(read_lines(path, encoding="latin-1"), start=1):
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse not in TREC_CLASSES:
            raise ValueError(f"{path} line {i}: unknown coarse class {coarse!r}; expected one of {list(TREC_CLASSES)}")
        data["text"].append(text.strip())
        data["label"].append(TREC_CLASSES.index(coarse))
    return make_dataset("labeled", data, TREC_CLASSES)


def _banking77_local(root: Path, split: str) -> datasets.Dataset:
    folder = root / "banking77"
    path = folder / f"{split}.csv"
    rows: list[tuple[str, str]] = []
    with open_csv(path) as f:
        for row in csv.DictReader(f):  # a real CSV parser: some texts hold quoted newlines
            rows.append((row["text"].strip(), row["category"].strip()))
    categories = folder / "categories.json"
    found = sorted({c for _, c in rows})
    # Names sorted case-insensitively: the label ids of the Hub copies (PolyAI/banking77, mteb/banking77).
    listed = json.loads(categories.read_text(encoding="utf-8")) if categories.is_file() else found
    names = sorted(listed, key=lambda c: (c.casefold(), c))
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise ValueError(f"{path}: categories not in categories.json: {unknown[:5]}")
    index = {name: i for i, name in enumerate(names)}
    return make_dataset("labeled", {"text": [t for t, _ in rows], "label": [index[c] for _, c in rows]}, names)


def _sst2_local(root: Path, split: str) -> datasets.Dataset:
    path = root / "sst2" / f"sentiment-{ {'validation': 'dev'}.get(split, split) }"
    data: dict[str, list[Any]] = {"text": [], "label": []}
    for i, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        text, _, label = line.rpartition("\t")
        if label.strip() not in ("0", "1"):
            raise ValueError(f"{path} line {i}: expected 'sentence<TAB>0|1', got label {label.strip()!r}")
        data["text"].append(text.strip())
        data["label"].append(int(label))
    return make_dataset("labeled", data, SST2_CLASSES)


LOCAL: dict[str, Callable[[Path, str], datasets.Dataset]] = {
    "stsb": _stsb_local,
    **{f"sts{year}": _sts_year_local(year) for year in range(12, 17)},
    "sickr": _sick_local,
    "snli": _snli_local,
    "banking77": _banking77_local,
    "trec": _trec_local,
    "sst2": _sst2_local,
}
