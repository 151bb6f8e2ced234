"""``load_train_data`` / ``read_train_data``: a train set of one kind from a benchmark, a local file or a Hub id,
checked row by row."""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import datasets

from .benchmarks import load_benchmark, local_or_hub, resolve_root
from .common import check_max_samples, make_dataset, normalize_split, offline_switch
from .hub import snli_pairs_from_hub
from .local import snli_pairs_local
from .registry import BENCHMARKS, COLUMN_ALIASES, FILE_FORMATS, KIND_COLUMNS, KINDS, SPLIT_ALIASES

# Row kinds a benchmark split has -> train kinds it can serve (extra columns are dropped).
_COMPATIBLE = {
    "triplets": ("triplets", "pairs", "sentences"),
    "scored_pairs": ("scored_pairs", "sentences"),
    "labeled": ("labeled", "sentences"),
    "pair_labels": ("sentences",),
    "beir": (),  # retrieval sets are for evaluation only
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


def looks_like_path(source: str) -> bool:
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
    return make_dataset(kind, data, names), len(bad)


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
    check_max_samples(max_samples)
    name = str(source)
    if is_benchmark_list(name):  # the benchmarks' text cells are all valid
        return TrainData(_train_from_benchmarks(name, kind, columns, split, max_samples, data_dir), 0)
    if name.lower() in BENCHMARKS:
        return TrainData(_train_from_benchmark(name.lower(), kind, columns, split, max_samples, data_dir), 0)
    split = SPLIT_ALIASES.get(str(split).lower(), str(split).lower())
    path = Path(name).expanduser()
    if path.exists():
        raw = _read_local(path, split, name)
    elif looks_like_path(name):
        raise ValueError(f"train file {name!r} does not exist")
    else:
        var = offline_switch()
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
    split = normalize_split(split, spec.splits, f"benchmark {name!r}")
    if name == "snli" and kind == "pairs" and split == "train":
        root = resolve_root(data_dir)
        dataset = local_or_hub(spec, split, root, snli_pairs_local, lambda: snli_pairs_from_hub(split))
    else:
        rows = spec.split_kind(split)
        if kind not in _COMPATIBLE[rows]:
            allowed = list(_COMPATIBLE[rows]) or "none (use it for evaluation)"
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
