"""Benchmark and train data: local files first (``$MIPIC_DATA_DIR``), the Hugging Face Hub otherwise.

Every loader returns a ``datasets.Dataset`` with standard columns, so the trainer and the evaluators never see
the quirks of the source files:

- ``load_benchmark(name, split)``: a named evaluation set (``BENCHMARKS``). STS sets give ``sentence1,
  sentence2, score``; classification sets ``text, label`` (a ``ClassLabel`` with the class names);
  pair-classification sets ``sentence1, sentence2, label`` (0/1). SNLI's train split gives triplets.
- ``load_train_data(source, kind)``: a train set of one ``kind`` (``KIND_COLUMNS``) from a benchmark name, a
  local file or folder (csv, tsv, jsonl/json, parquet, txt) or a Hub dataset id (``owner/name`` or
  ``owner/name:config``), checked row by row.

Local layout (``data_dir`` argument, else ``$MIPIC_DATA_DIR``)::

    stsb/sts-{train,dev,test}.csv             tab-separated, bare quotes, 7 or 9 fields; score, s1, s2 = 4, 5, 6
    sts12-16/STS1{2..6}-en-test/STS.input.<subset>.txt + STS.gs.<subset>.txt   (empty gold line = unscored)
    sick/SICK_{train,trial,test_annotated}.txt  tab-separated, header, CRLF; relatedness_score
    snli/triplets_senteval_devtest.tsv        header split premise entailment contradiction
    snli/senteval/{s1,s2,labels}.{dev,test}   one pair per line
    snli/cat_subset/train.tsv                 label label premise hypothesis (3 entailment, 1 neutral, 2 contradiction)
    trec/{train_5500,TREC_10}.label           latin-1, "COARSE:fine question"
    banking77/{train,test}.csv + categories.json   CSV with quoted newlines, header text,category
    sst2/sentiment-{train,dev,test}           "sentence<TAB>0|1"
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import datasets

KINDS = ("sentences", "pairs", "triplets", "scored_pairs", "labeled")
# Standard columns per train kind, in the order the trainer tokenizes them (label column: "score" or "label").
KIND_COLUMNS: dict[str, list[str]] = {
    "sentences": ["text"],
    "pairs": ["anchor", "positive"],
    "triplets": ["anchor", "positive", "negative"],
    "scored_pairs": ["sentence1", "sentence2", "score"],
    "labeled": ["text", "label"],
}
# Columns of every row kind a loader returns: the train kinds plus the pair-classification rows of benchmarks.
ROW_COLUMNS: dict[str, list[str]] = {**KIND_COLUMNS, "pair_labels": ["sentence1", "sentence2", "label"]}
TASK_TYPES = ("sts", "classification", "pair_classification")
SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {"dev": "validation", "val": "validation", "valid": "validation"}

# Source column names accepted for each standard column when ``columns`` does not name them (first found wins;
# the standard name itself always comes first). Kept small on purpose: anything else needs ``columns``.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "text": ("sentence", "sentence1", "query"),
    "anchor": ("query", "sentence1", "sentence_a", "sentence_A", "sentence", "text"),
    "positive": ("pos", "sentence2", "sentence_b", "sentence_B", "document"),
    "negative": ("neg", "hard_negative", "sentence3"),
    "sentence1": ("sentence_a", "sentence_A", "anchor", "text1"),
    "sentence2": ("sentence_b", "sentence_B", "positive", "text2"),
    "score": ("similarity_score", "relatedness_score", "label"),
    "label": ("labels", "category", "class"),
}
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".txt": "txt"}


@dataclass(frozen=True)
class BenchmarkSpec:
    """A named evaluation set: what the evaluator does with it and where its rows come from."""

    name: str
    task: str  # one of TASK_TYPES
    kind: str  # row kind: scored_pairs (sts), labeled (classification), pair_labels (pair_classification)
    splits: tuple[str, ...]
    hub_id: str | None
    hub_config: str | None = None
    local: bool = True  # False: hub-only
    train_kind: str | None = None  # row kind of the train split when it differs from ``kind`` (snli: triplets)

    def split_kind(self, split: str) -> str:
        """Row kind of one split."""
        return self.train_kind if split == "train" and self.train_kind else self.kind


def _sts(name: str, hub_id: str, splits: tuple[str, ...] = ("test",)) -> BenchmarkSpec:
    return BenchmarkSpec(name, "sts", "scored_pairs", splits, hub_id)


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "stsb": _sts("stsb", "sentence-transformers/stsb", SPLITS),
    "sts12": _sts("sts12", "mteb/sts12-sts"),
    "sts13": _sts("sts13", "mteb/sts13-sts"),
    "sts14": _sts("sts14", "mteb/sts14-sts"),
    "sts15": _sts("sts15", "mteb/sts15-sts"),
    "sts16": _sts("sts16", "mteb/sts16-sts"),
    "sickr": _sts("sickr", "mteb/sickr-sts", SPLITS),
    "snli": BenchmarkSpec(
        "snli", "pair_classification", "pair_labels", SPLITS, "stanfordnlp/snli", train_kind="triplets"
    ),
    "banking77": BenchmarkSpec("banking77", "classification", "labeled", ("train", "test"), "mteb/banking77"),
    "trec": BenchmarkSpec("trec", "classification", "labeled", ("train", "test"), "CogComp/trec"),
    "sst2": BenchmarkSpec("sst2", "classification", "labeled", SPLITS, "SetFit/sst2"),
    "emotion": BenchmarkSpec("emotion", "classification", "labeled", SPLITS, "dair-ai/emotion", "split", local=False),
    "tweet_eval": BenchmarkSpec(
        "tweet_eval", "classification", "labeled", SPLITS, "cardiffnlp/tweet_eval", "sentiment", local=False
    ),
    "mrpc": BenchmarkSpec("mrpc", "pair_classification", "pair_labels", SPLITS, "nyu-mll/glue", "mrpc", local=False),
    "scitail": BenchmarkSpec(
        "scitail", "pair_classification", "pair_labels", SPLITS, "allenai/scitail", "tsv_format", local=False
    ),
    "wic": BenchmarkSpec("wic", "pair_classification", "pair_labels", SPLITS, "aps/super_glue", "wic", local=False),
}

TREC_CLASSES = ("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM")  # the order of CogComp/trec's coarse_label
SST2_CLASSES = ("negative", "positive")
# Pair-classification label names (0, 1); the Hub's string labels are mapped through them.
PAIR_CLASSES = {
    "snli": ("contradiction", "entailment"),
    "mrpc": ("not_equivalent", "equivalent"),
    "scitail": ("neutral", "entails"),
    "wic": ("False", "True"),
}
# Hub column names -> standard columns, per benchmark (snli is mapped by hand: triplets and label codes).
_HUB_COLUMNS: dict[str, dict[str, str]] = {
    **{name: {} for name in ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr", "mrpc", "wic")},
    "banking77": {},
    "trec": {"coarse_label": "label"},
    "sst2": {},
    "emotion": {},
    "tweet_eval": {},
    "scitail": {"premise": "sentence1", "hypothesis": "sentence2"},
}
_HUB_SPLITS = {"sickr": ("test",)}  # splits the Hub copy has, where fewer than the local files


class _NotLocal(Exception):
    """A benchmark file is not in the data dir (the loader falls back to the Hub)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


# --------------------------------------------------------------------------------------------------------------
# small helpers


def data_dir() -> Path | None:
    """The local data folder: ``$MIPIC_DATA_DIR`` when it is set and exists, else None."""
    value = os.environ.get("MIPIC_DATA_DIR", "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None


_default_data_dir = data_dir  # the loaders' ``data_dir`` argument shadows the function


def _offline() -> str | None:
    """The name of the offline switch that is set (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), else None."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return var
    return None


def _check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def _normalize_split(split: str, allowed: Sequence[str], owner: str) -> str:
    value = SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    if value not in allowed:
        raise ValueError(
            f"split {split!r} is not available for {owner}; choose one of {list(allowed)} ('dev' = validation)"
        )
    return value


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    """Lines of a text file without line endings (only \\n and \\r\\n end a line, unlike str.splitlines)."""
    if not path.is_file():
        raise _NotLocal(path)
    text = path.read_text(encoding=encoding)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _open_csv(path: Path) -> Any:
    if not path.is_file():
        raise _NotLocal(path)
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


def _make(kind: str, data: dict[str, list[Any]], names: Sequence[str] | None = None) -> datasets.Dataset:
    columns = ROW_COLUMNS[kind]
    return datasets.Dataset.from_dict({c: data[c] for c in columns}, features=_features(kind, names))


def _head(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
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


# --------------------------------------------------------------------------------------------------------------
# local benchmark readers: (root, split) -> Dataset; raise _NotLocal when a file is missing


def _stsb_local(root: Path, split: str) -> datasets.Dataset:
    path = root / "stsb" / f"sts-{ {'validation': 'dev'}.get(split, split) }.csv"
    data: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
    with _open_csv(path) as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
            if not row:
                continue
            if len(row) < 7:
                raise ValueError(f"{path} line {i}: expected 7 or more tab-separated fields, got {len(row)}")
            data["score"].append(float(row[4]))
            data["sentence1"].append(row[5].strip())
            data["sentence2"].append(row[6].strip())
    return _make("scored_pairs", data)


def _sts_year_local(year: int) -> Callable[[Path, str], datasets.Dataset]:
    def load(root: Path, split: str) -> datasets.Dataset:
        folder = root / "sts12-16" / f"STS{year}-en-test"
        data: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
        inputs = sorted(folder.glob("STS.input.*.txt")) if folder.is_dir() else []
        pairs = [(p, folder / p.name.replace("STS.input.", "STS.gs.", 1)) for p in inputs]
        pairs = [(p, g) for p, g in pairs if g.is_file()]  # e.g. STS13 SMT: input without gold scores
        if not pairs:
            raise _NotLocal(folder / "STS.input.<subset>.txt")
        for input_path, gold_path in pairs:
            sentences, gold = _read_lines(input_path), _read_lines(gold_path)
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
        return _make("scored_pairs", data)

    return load


def _sick_local(root: Path, split: str) -> datasets.Dataset:
    name = {"train": "SICK_train.txt", "validation": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}[split]
    path = root / "sick" / name
    data: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
    with _open_csv(path) as f:
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
    return _make("scored_pairs", data)


def _snli_local(root: Path, split: str) -> datasets.Dataset:
    if split == "train":
        path = root / "snli" / "triplets_senteval_devtest.tsv"
        data: dict[str, list[Any]] = {"anchor": [], "positive": [], "negative": []}
        with _open_csv(path) as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                data["anchor"].append(row["premise"].strip())
                data["positive"].append(row["entailment"].strip())
                data["negative"].append(row["contradiction"].strip())
        return _make("triplets", data)
    suffix = {"validation": "dev", "test": "test"}[split]
    folder = root / "snli" / "senteval"
    s1, s2, labels = (_read_lines(folder / f"{stem}.{suffix}") for stem in ("s1", "s2", "labels"))
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
    return _make("pair_labels", data, PAIR_CLASSES["snli"])


def _snli_pairs_local(root: Path, split: str) -> datasets.Dataset:
    """(premise, entailment hypothesis) pairs of SNLI train: cat_subset/train.tsv rows with label 3."""
    path = root / "snli" / "cat_subset" / ("train.tsv" if split == "train" else "test.tsv")
    data: dict[str, list[Any]] = {"anchor": [], "positive": []}
    with _open_csv(path) as f:
        for row in csv.reader(f, delimiter="\t"):  # default quoting: a few sentences are CSV-quoted
            if len(row) >= 4 and row[0].strip() == "3":
                data["anchor"].append(row[2].strip())
                data["positive"].append(row[3].strip())
    return _make("pairs", data)


def _trec_local(root: Path, split: str) -> datasets.Dataset:
    path = root / "trec" / ("train_5500.label" if split == "train" else "TREC_10.label")
    data: dict[str, list[Any]] = {"text": [], "label": []}
    for i, line in enumerate(_read_lines(path, encoding="latin-1"), start=1):
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse not in TREC_CLASSES:
            raise ValueError(f"{path} line {i}: unknown coarse class {coarse!r}; expected one of {list(TREC_CLASSES)}")
        data["text"].append(text.strip())
        data["label"].append(TREC_CLASSES.index(coarse))
    return _make("labeled", data, TREC_CLASSES)


def _banking77_local(root: Path, split: str) -> datasets.Dataset:
    folder = root / "banking77"
    path = folder / f"{split}.csv"
    rows: list[tuple[str, str]] = []
    with _open_csv(path) as f:
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
    return _make("labeled", {"text": [t for t, _ in rows], "label": [index[c] for _, c in rows]}, names)


def _sst2_local(root: Path, split: str) -> datasets.Dataset:
    path = root / "sst2" / f"sentiment-{ {'validation': 'dev'}.get(split, split) }"
    data: dict[str, list[Any]] = {"text": [], "label": []}
    for i, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        text, _, label = line.rpartition("\t")
        if label.strip() not in ("0", "1"):
            raise ValueError(f"{path} line {i}: expected 'sentence<TAB>0|1', got label {label.strip()!r}")
        data["text"].append(text.strip())
        data["label"].append(int(label))
    return _make("labeled", data, SST2_CLASSES)


_LOCAL: dict[str, Callable[[Path, str], datasets.Dataset]] = {
    "stsb": _stsb_local,
    **{f"sts{year}": _sts_year_local(year) for year in range(12, 17)},
    "sickr": _sick_local,
    "snli": _snli_local,
    "banking77": _banking77_local,
    "trec": _trec_local,
    "sst2": _sst2_local,
}


# --------------------------------------------------------------------------------------------------------------
# Hub mapping (datasets.load_dataset rows -> standard rows)


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


def _from_hub(spec: BenchmarkSpec, split: str) -> datasets.Dataset:
    raw = datasets.load_dataset(spec.hub_id, spec.hub_config, split=split)
    if spec.name == "snli":
        return _snli_from_hub(raw, split)
    kind = spec.split_kind(split)
    rename = _HUB_COLUMNS.get(spec.name, {})
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
    return _make(kind, data, names)


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
        return _make("triplets", {c: [r[i] for r in rows] for i, c in enumerate(("anchor", "positive", "negative"))})
    keep = [
        (p, h, 1 if label == 0 else 0)
        for p, h, label in zip(premises, hypotheses, labels, strict=True)
        if label in (0, 2)
    ]
    data = {c: [r[i] for r in keep] for i, c in enumerate(ROW_COLUMNS["pair_labels"])}
    return _make("pair_labels", data, PAIR_CLASSES["snli"])


def _snli_pairs_from_hub(split: str) -> datasets.Dataset:
    raw = datasets.load_dataset(BENCHMARKS["snli"].hub_id, split=split)
    rows = zip(list(raw["premise"]), list(raw["hypothesis"]), list(raw["label"]), strict=True)
    keep = [(p, h) for p, h, label in rows if label == 0]
    return _make("pairs", {"anchor": [p for p, _ in keep], "positive": [h for _, h in keep]})


# --------------------------------------------------------------------------------------------------------------
# load_benchmark


def _spec(name: str) -> BenchmarkSpec:
    key = str(name).lower()
    if key not in BENCHMARKS:
        raise ValueError(f"benchmark {name!r} is unknown; choose one of {list(BENCHMARKS)}")
    return BENCHMARKS[key]


def _root(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        return _default_data_dir()
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ValueError(f"data_dir '{path}' does not exist or is not a folder")
    return path


def _local_or_hub(
    spec: BenchmarkSpec,
    split: str,
    root: Path | None,
    local: Callable[[Path, str], datasets.Dataset] | None,
    hub: Callable[[], datasets.Dataset],
) -> datasets.Dataset:
    """Read the local files when the data dir has them, else the Hub copy (a one-line error when offline)."""
    missing: Path | None = None
    if root is not None and local is not None:
        try:
            return local(root, split)
        except _NotLocal as err:
            missing = err.path
    if not spec.local:
        var = _offline()
        if var:
            raise ValueError(
                f"benchmark {spec.name!r} is hub-only ({spec.hub_id}) and {var} is set, so it cannot be loaded offline"
            )
        return hub()
    where = f"no local file {missing}" if missing else "no data dir (pass data_dir= or set MIPIC_DATA_DIR)"
    hub_splits = _HUB_SPLITS.get(spec.name, spec.splits)
    if split not in hub_splits:
        raise ValueError(
            f"benchmark {spec.name!r} split {split!r} is only available locally ({where}); "
            f"the Hub copy {spec.hub_id} has splits {list(hub_splits)}"
        )
    var = _offline()
    if var:
        raise ValueError(
            f"benchmark {spec.name!r} split {split!r}: {where}, and {var} is set so the Hub copy {spec.hub_id} "
            "cannot be loaded; point MIPIC_DATA_DIR at a data folder"
        )
    return hub()


def load_benchmark(
    name: str, split: str = "test", data_dir: str | Path | None = None, max_samples: int | None = None
) -> datasets.Dataset:
    """Rows with standard columns: sts -> sentence1, sentence2, score (float); classification -> text, label
    (int; a ClassLabel feature with the class names when known); pair_classification -> sentence1, sentence2,
    label (0/1). snli as a train set -> anchor, positive, negative triplets (local: the triplets tsv).

    Local files (``data_dir``, else ``$MIPIC_DATA_DIR``; layout in the module docstring) come first, the Hub copy
    (``BENCHMARKS[name].hub_id``) otherwise. Scores keep the source's scale (local STS-B 0-5, its Hub copy 0-1).
    ``split``: train | validation (alias dev) | test, as ``BENCHMARKS[name].splits`` allows; ``max_samples``
    keeps the first N rows.
    """
    spec = _spec(name)
    split = _normalize_split(split, spec.splits, f"benchmark {spec.name!r}")
    _check_max_samples(max_samples)
    root = _root(data_dir)
    dataset = _local_or_hub(spec, split, root, _LOCAL.get(spec.name), lambda: _from_hub(spec, split))
    return _head(dataset, max_samples)


# --------------------------------------------------------------------------------------------------------------
# load_train_data

# Row kinds a benchmark split has -> train kinds it can serve (extra columns are dropped).
_COMPATIBLE = {
    "triplets": ("triplets", "pairs", "sentences"),
    "scored_pairs": ("scored_pairs", "sentences"),
    "labeled": ("labeled", "sentences"),
    "pair_labels": ("sentences",),
}
_PAIRED_TEXT_COLUMNS = ("sentence1", "sentence2", "anchor", "positive", "negative")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of one local file (format from the suffix); plain Python readers, no cache."""
    fmt = FILE_FORMATS[path.suffix.lower()]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(encoding="utf-8-sig", newline="" if fmt in ("csv", "tsv") else None) as f:
        if fmt in ("csv", "tsv"):
            reader = csv.DictReader(f, delimiter="," if fmt == "csv" else "\t")
            return [{k: v for k, v in row.items() if k is not None} for row in reader]
        if fmt == "txt":
            return [{"text": line.strip()} for line in f.read().split("\n") if line.strip()]
        text = f.read()
    if fmt == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None  # JSON Lines saved as .json
        if isinstance(obj, dict):  # {"data": [rows]} or {column: [values]}
            lists = [v for v in obj.values() if isinstance(v, list)]
            if len(obj) == 1 and lists and all(isinstance(r, dict) for r in lists[0]):
                obj = lists[0]
            elif lists and len(lists) == len(obj):
                obj = [dict(zip(obj, values, strict=True)) for values in zip(*obj.values(), strict=True)]
        if isinstance(obj, list):
            return obj
    rows = []
    for i, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"line {i} is not valid JSON ({err.msg})") from None
    return rows


def _data_files(path: Path, split: str) -> list[Path]:
    """The data files of a folder: those whose name has the split in it when any does, else all of them."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_FORMATS)
    if not files:
        raise ValueError(f"train folder '{path}' has no {'/'.join(sorted(set(FILE_FORMATS.values())))} files")
    words = {split} | {alias for alias, target in SPLIT_ALIASES.items() if target == split}
    named = [p for p in files if words & set(re.split(r"[^a-z0-9]+", p.stem.lower()))]
    files = named or files
    formats = sorted({FILE_FORMATS[p.suffix.lower()] for p in files})
    if len(formats) > 1:
        raise ValueError(f"train folder '{path}' mixes formats {formats}; pass one file")
    return files


def _read_local(path: Path, split: str, label: str) -> _Table:
    if path.is_file() and path.suffix.lower() not in FILE_FORMATS:
        raise ValueError(
            f"train file {label!r} cannot be read: unknown format {path.suffix!r}; use one of {list(FILE_FORMATS)}"
        )
    files = _data_files(path, split) if path.is_dir() else [path]
    rows: list[dict[str, Any]] = []
    for file in files:
        try:
            file_rows = _read_rows(file)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as err:
            raise ValueError(f"train file '{file}' cannot be read: {str(err).splitlines()[0]}") from None
        except Exception as err:  # e.g. a corrupt parquet file
            raise ValueError(f"train file '{file}' cannot be read: {type(err).__name__}: {err}") from None
        if any(not isinstance(r, dict) for r in file_rows):
            raise ValueError(f"train file '{file}' cannot be read: rows must be objects with named fields")
        rows.extend(file_rows)
    return _Table.from_rows(rows)


@dataclass
class _Table:
    """Columns of raw train rows, read lazily: from plain rows (local files) or a datasets.Dataset."""

    names: list[str]
    length: int
    get: Callable[[str], list[Any]]
    features: dict[str, Any]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> _Table:
        names = list(dict.fromkeys(k for r in rows for k in r))
        return cls(names, len(rows), lambda c: [r.get(c) for r in rows], {})

    @classmethod
    def from_dataset(cls, dataset: datasets.Dataset) -> _Table:
        return cls(list(dataset.column_names), len(dataset), lambda c: list(dataset[c]), dict(dataset.features))

    def head(self, max_samples: int | None) -> _Table:
        if max_samples is None or max_samples >= self.length:
            return self
        return _Table(self.names, max_samples, lambda c: self.get(c)[:max_samples], self.features)


def _looks_like_path(source: str) -> bool:
    return (
        Path(source).suffix.lower() in FILE_FORMATS
        or source.startswith((".", "/", "~", "\\"))
        or "\\" in source
        or source.count("/") > 1
    )


def _resolve_columns(names: list[str], kind: str, columns: dict[str, str] | None) -> dict[str, str]:
    """standard column -> source column, from ``columns`` ({source: standard}), the standard name, or an alias."""
    wanted = KIND_COLUMNS[kind]
    mapping: dict[str, str] = {}
    for src, std in (columns or {}).items():
        if std not in wanted:
            raise ValueError(f"columns maps {src!r} to {std!r}, which is not a column of kind {kind} ({wanted})")
        if src not in names:
            raise ValueError(f"missing column {src!r} (columns maps it to {std!r}); the data has columns {names}")
        mapping[std] = src
    used = set(mapping.values())
    for std in wanted:
        if std in mapping:
            continue
        src = next((c for c in (std, *COLUMN_ALIASES.get(std, ())) if c in names and c not in used), None)
        if src is None:
            raise ValueError(f"missing column {std!r} for kind {kind}; the data has columns {names}")
        mapping[std] = src
        used.add(src)
    return mapping


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _invalid_text(value: Any) -> str:
    if value is None:
        return "is missing"
    if isinstance(value, str):
        return "is empty"
    return f"is not a string ({type(value).__name__} {value!r})"


def _to_kind(
    raw: _Table, kind: str, columns: dict[str, str] | None, label: str, drop_invalid_rows: bool = False
) -> tuple[datasets.Dataset, int]:
    """The rows of ``raw`` as the standard columns of ``kind``, checked value by value, and how many rows were
    dropped. A text cell that is missing, empty or not a string is an error naming its row and column, unless
    ``drop_invalid_rows`` (then such rows are dropped and counted)."""
    mapping = _resolve_columns(raw.names, kind, columns)
    values = {std: raw.get(src) for std, src in mapping.items()}
    texts = [std for std in mapping if std not in ("score", "label")]
    bad = [i for i in range(raw.length) if not all(_is_text(values[std][i]) for std in texts)]
    if bad and not drop_invalid_rows:
        row = bad[0]
        std = next(s for s in texts if not _is_text(values[s][row]))
        raise ValueError(
            f"train data {label!r}: row {row}, column {mapping[std]!r} {_invalid_text(values[std][row])} "
            f"({len(bad)} such row(s); data.drop_invalid_rows: true drops them)"
        )
    dropped = set(bad)
    keep = [i for i in range(raw.length) if i not in dropped]  # row numbers in messages stay the source's
    if not keep:
        raise ValueError(f"train data {label!r}: every row has an invalid text cell ({len(bad)} dropped)")
    data: dict[str, list[Any]] = {}
    names: list[str] | None = None
    for std, column in values.items():
        if std == "score":
            data[std] = [_score(column[i], i, label) for i in keep]
        elif std == "label":
            data[std], names = _labels([column[i] for i in keep], raw.features.get(mapping[std]), label)
        else:
            data[std] = [column[i] for i in keep]
    return _make(kind, data, names), len(bad)


def _score(value: Any, row: int, label: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"train data {label!r}: score in row {row} is not a number: {value!r}") from None
    if not math.isfinite(score):
        raise ValueError(f"train data {label!r}: score in row {row} is {score} (scores must be finite numbers)")
    return score


def _labels(values: list[Any], feature: Any, label: str) -> tuple[list[int], list[str] | None]:
    """Int labels (non-negative) and class names: a ClassLabel's, else sorted names for string labels."""
    bad = next((i for i, v in enumerate(values) if v is None), None)
    if bad is not None:
        raise ValueError(f"train data {label!r}: label in row {bad} is missing")
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    ints = [_as_int(v) for v in values]
    if all(i is not None for i in ints):
        bad = next((i for i, v in enumerate(ints) if v < 0 or (names is not None and v >= len(names))), None)
        if bad is not None:
            raise ValueError(
                f"train data {label!r}: label in row {bad} is {values[bad]!r}; labels must be class ids from 0"
            )
        return ints, names  # type: ignore[return-value]
    strings = [str(v) for v in values]
    names = sorted(set(strings))
    index = {name: i for i, name in enumerate(names)}
    return [index[s] for s in strings], names


class TrainData(NamedTuple):
    dataset: datasets.Dataset
    dropped: int  # rows dropped for an invalid text cell (only with drop_invalid_rows)


def load_train_data(
    source: str | Path,
    kind: str,
    columns: dict[str, str] | None = None,
    split: str = "train",
    max_samples: int | None = None,
    data_dir: str | Path | None = None,
) -> datasets.Dataset:
    """:func:`read_train_data`'s dataset (invalid text cells are errors)."""
    return read_train_data(source, kind, columns, split, max_samples, data_dir).dataset


def read_train_data(
    source: str | Path,
    kind: str,
    columns: dict[str, str] | None = None,
    split: str = "train",
    max_samples: int | None = None,
    data_dir: str | Path | None = None,
    drop_invalid_rows: bool = False,
) -> TrainData:
    """A train set from a named benchmark (BENCHMARKS key), a local file or folder (csv, tsv, jsonl/json,
    parquet, txt), or a Hub dataset id, returned with the KIND_COLUMNS of `kind` only, in that order.

    - ``columns`` maps source names to standard ones, e.g. ``{"premise": "anchor", "hypothesis": "positive"}``;
      other standard columns are taken by name or by ``COLUMN_ALIASES`` (e.g. sentence_A -> sentence1,
      relatedness_score -> score, category -> label).
    - csv (comma) and tsv (tab) have a header row; txt is one sentence per line (column ``text``, empty lines
      dropped); json is a list of rows, ``{"data": [rows]}``, ``{column: [values]}`` or JSON Lines. A folder
      reads its files whose names hold the split (``train.csv``), else all of them (one format).
    - Scores must be finite numbers; labels ints >= 0 or strings (mapped to ints through a sorted ClassLabel).
    - A text cell that is missing, empty or not a string is an error naming its row and column; with
      ``drop_invalid_rows`` such rows are dropped instead and counted in ``TrainData.dropped``.
    - A benchmark serves the kinds its split's rows allow: stsb/sts* scored_pairs, snli train triplets (and
      pairs: (premise, entailment) pairs of SNLI train, local snli/cat_subset/train.tsv), banking77/trec/sst2
      labeled (and sentences). Each problem raises a one-line ValueError naming the field.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is unknown; choose one of {list(KINDS)}")
    _check_max_samples(max_samples)
    name = str(source)
    if is_benchmark_list(name):  # the benchmarks' text cells are all valid
        return TrainData(_train_from_benchmarks(name, kind, columns, split, max_samples, data_dir), 0)
    if name.lower() in BENCHMARKS:
        return TrainData(_train_from_benchmark(name.lower(), kind, columns, split, max_samples, data_dir), 0)
    split = SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    path = Path(name).expanduser()
    if path.exists():
        raw = _read_local(path, split, name)
    elif _looks_like_path(name):
        raise ValueError(f"train file {name!r} does not exist")
    else:
        var = _offline()
        if var:
            raise ValueError(
                f"train data {name!r} is not a benchmark name ({list(BENCHMARKS)}) or an existing file, and {var} "
                "is set so it cannot be loaded from the Hub"
            )
        hub_id, _, config = name.partition(":")
        raw = _Table.from_dataset(datasets.load_dataset(hub_id, config or None, split=split))
    if raw.length == 0:
        raise ValueError(f"train data {name!r} has no rows")
    return TrainData(*_to_kind(raw.head(max_samples), kind, columns, name, drop_invalid_rows))


def is_benchmark_list(name: str) -> bool:
    """``"stsb,snli,trec"``: several named benchmarks, trained on together."""
    parts = [p.strip().lower() for p in str(name).split(",")]
    return len(parts) > 1 and all(p in BENCHMARKS for p in parts)


def _train_from_benchmarks(
    name: str,
    kind: str,
    columns: dict[str, str] | None,
    split: str,
    max_samples: int | None,
    data_dir: str | Path | None,
) -> datasets.Dataset:
    """The train sets of several benchmarks of one kind, concatenated (sentences: each distinct text once),
    shuffled with seed 0 so ``max_samples`` draws from every source."""
    parts = [p.strip().lower() for p in name.split(",")]
    sets = [_train_from_benchmark(p, kind, columns, split, None, data_dir) for p in parts]
    combined = datasets.concatenate_datasets(sets)
    if kind == "sentences":
        combined = datasets.Dataset.from_dict({"text": list(dict.fromkeys(combined["text"]))})
    combined = combined.shuffle(seed=0)
    return combined.select(range(min(len(combined), max_samples))) if max_samples else combined


def _train_from_benchmark(
    name: str,
    kind: str,
    columns: dict[str, str] | None,
    split: str,
    max_samples: int | None,
    data_dir: str | Path | None,
) -> datasets.Dataset:
    spec = BENCHMARKS[name]
    split = _normalize_split(split, spec.splits, f"benchmark {name!r}")
    if name == "snli" and kind == "pairs" and split == "train":
        root = _root(data_dir)
        dataset = _local_or_hub(spec, split, root, _snli_pairs_local, lambda: _snli_pairs_from_hub(split))
    else:
        rows = spec.split_kind(split)
        if kind not in _COMPATIBLE[rows]:
            allowed = list(_COMPATIBLE[rows]) or "none (use it for evaluation with load_benchmark)"
            raise ValueError(
                f"benchmark {name!r} split {split!r} has {rows} rows and cannot be train data of kind {kind}; "
                f"compatible kinds: {allowed}"
            )
        dataset = load_benchmark(name, split, data_dir=data_dir)
        if kind == "sentences" and rows != "labeled":
            # Unlabelled sentences of a paired set (the paper's SimCSE protocol): each distinct text once.
            texts = [c for c in _PAIRED_TEXT_COLUMNS if c in dataset.column_names]
            unique = dict.fromkeys(t for c in texts for t in dataset[c] if isinstance(t, str) and t.strip())
            dataset = datasets.Dataset.from_dict({"text": list(unique)})
    if len(dataset) == 0:
        raise ValueError(f"train data {name!r} has no rows")
    return _to_kind(_Table.from_dataset(dataset).head(max_samples), kind, columns, name)[0]
