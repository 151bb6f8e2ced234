"""Evaluate a MatryoshkaModel on a grid of (exit layer, embedding dimension) budgets.

For each task every distinct text is encoded once, at full width, up to the deepest exit layer, and each
exit's hidden states are pooled (``MatryoshkaModel.encode_layers``; equal to ``model.encode(..., layer=l)``);
each dimension d is then the first d columns, re-normalised, which equals ``model.encode(..., dimension=d,
layer=l)``. So a grid costs one encoding pass per task.

A precision axis (``precisions=``) scores each (layer, dim) cell again as int8 / uint8 codes or sign bits
(:mod:`.precision`): int8 ranges come from the model (``config.quantization_ranges``) or from
``calibration_texts`` (training text), never from evaluation text. Retrieval tasks (BEIR folders, :mod:`.retrieval`)
search the whole corpus exactly. ``exclude_pairs`` (normalised training pairs, ``mipic_hf.data.overlap``) drops the
evaluation pairs and queries that are training examples, and the result says how many.

Result structure (JSON-serialisable)::

    {
      "model": "path-or-name",
      "dims": [8, 16, ...],            # ascending
      "layers": [2, 4, ...],           # ascending
      "max_samples": null | int,
      "precisions": ["float32", "int8", ...],
      "calibration": {"source": "model" | "texts", "num_texts": n},   # only with int8 / uint8
      "tasks": {
        "stsb": {
          "task_type": "sts" | "classification" | "pair_classification" | "retrieval",
          "main_metric": "spearman" | "accuracy" | "ap" | "ndcg@10",
          "num_examples": {"test": 1379} (+ "train": n for classification, "corpus": n for retrieval,
                          "dropped_as_training": n with exclude_pairs),
          "scores": {"L2": {"D8": {"spearman": 71.2, "pearson": 70.9}, ...}, ...},       # float32
          "quantized": {"int8": {"L2": {"D8": {...}}}, "binary": ...}                   # other precisions
        }
      }
    }

Metric values are percentages: sts -> spearman, pearson; classification -> accuracy, macro_f1;
pair_classification -> accuracy, f1 (both at their best threshold), ap; retrieval -> ndcg@10, recall@100, mrr@10
("test" counts the queries).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .metrics import MAIN_METRIC, METRIC_FOR_TASK
from .precision import (
    applies,
    calibration_ranges,
    check_precisions,
    coded_full,
    model_code_basis,
    model_ranges,
    searchable,
)
from .retrieval import ranking_metrics, search_cell

TASK_TYPES = (*METRIC_FOR_TASK, "retrieval")


def layer_key(layer: int) -> str:
    return f"L{int(layer)}"


def dim_key(dim: int) -> str:
    return f"D{int(dim)}"


# ----- benchmarks ----------------------------------------------------------------------------------
def get_benchmarks() -> Mapping[str, Any]:
    """The benchmark registry, ``mipic_hf.data.BENCHMARKS`` (imported lazily)."""
    from mipic_hf.data import BENCHMARKS

    return BENCHMARKS


def get_loader() -> Callable[..., Any]:
    """The benchmark loader, ``mipic_hf.data.load_benchmark`` (imported lazily)."""
    from mipic_hf.data import load_benchmark

    return load_benchmark


def spec_of(task: str, benchmarks: Mapping[str, Any]) -> Any:
    """The registry entry of a task, or a retrieval spec for a BEIR folder named by its path."""
    if task in benchmarks:
        return benchmarks[task]
    from mipic_hf.data.retrieval import is_beir_folder, path_spec

    if is_beir_folder(task):
        return path_spec(task)
    raise KeyError(task)


def task_type_of(spec: Any) -> str:
    """The task type of a BENCHMARKS entry (an object with ``.task`` or a mapping with ``"task"``)."""
    task = spec.get("task") if isinstance(spec, Mapping) else getattr(spec, "task", None)
    if task not in TASK_TYPES:
        raise ValueError(f"benchmark task type must be one of {', '.join(TASK_TYPES)}, got {task!r}")
    return task


def check_tasks(tasks: Iterable[str] | str, benchmarks: Mapping[str, Any] | None = None) -> list[str]:
    """Validate task names against the registry; one-line ValueError listing the known ones."""
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    tasks = [str(t).strip() for t in tasks]
    if not tasks:
        raise ValueError("tasks must name at least one benchmark")
    benchmarks = get_benchmarks() if benchmarks is None else benchmarks
    from mipic_hf.data.retrieval import is_beir_folder

    unknown = [t for t in tasks if t not in benchmarks and not is_beir_folder(t)]
    if unknown:
        raise ValueError(
            f"unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(sorted(benchmarks))}, or the path of a "
            "BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
        )
    return list(dict.fromkeys(tasks))


def _check_ints(field: str, values: Any, low: int, high: int, what: str) -> list[int]:
    if values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{field} must be a list of integers in {low}..{high} ({what}), got {values!r}")
    values = list(values)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high]
    if not values or bad:
        raise ValueError(f"{field} must be a non-empty list of integers in {low}..{high} ({what}), got {values!r}")
    return sorted({int(v) for v in values})


def check_grid(model: Any, dims: Iterable[int] | None, layers: Iterable[int] | None) -> tuple[list[int], list[int]]:
    """Resolve and validate (dims, layers): defaults from the config, sorted, de-duplicated."""
    hidden, num_layers = int(model.hidden_size), int(model.num_layers)
    dims = model.config.matryoshka_dimensions if dims is None else dims
    layers = model.config.matryoshka_layers if layers is None else layers
    dims = _check_ints("dims", dims, 1, hidden, "hidden size")
    layers = _check_ints("layers", layers, 1, num_layers, "num_hidden_layers")
    return dims, layers


# ----- scoring -------------------------------------------------------------------------------------
def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def sample_rows(dataset: Any, max_samples: int | None, seed: int = 0) -> Any:
    """A seeded random subset of ``max_samples`` rows (kept in their original order); all rows when it fits.

    Random rather than the first N rows: benchmark files are often sorted by label or source, and a head
    would give a probe few classes (banking77's first 200 train rows hold 2 of its 77 intents).
    """
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    rows = np.sort(np.random.default_rng(seed).choice(len(dataset), size=max_samples, replace=False))
    return dataset.select(rows.tolist())


def _unique(texts: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    unique = list(dict.fromkeys(texts))
    return unique, {t: i for i, t in enumerate(unique)}


class _TaskData:
    """The columns of one task, its distinct texts, and the row index of each column's texts in them.

    Retrieval tasks keep every document and query as given (no de-duplication): the corpus is rows
    ``0 .. corpus-1`` of ``texts`` and the queries follow, so the corpus is a view, never a copy.
    """

    def __init__(self, name: str, task_type: str, test: Any, train: Any = None) -> None:
        self.name, self.task_type = name, task_type
        if task_type == "retrieval":
            self.retrieval = test
            self.texts = [*test.corpus, *test.queries]
            self.num_examples = {"test": len(test.queries), "corpus": len(test.corpus)}
            if not test.queries or not test.corpus:
                raise ValueError(f"retrieval task {name!r} has no queries or no documents")
            return
        if task_type == "classification":
            if train is None:
                raise ValueError(f"classification task {name!r} needs a train split for the probe")
            columns = {"train": list(train["text"]), "test": list(test["text"])}
            self.train_labels = np.asarray(list(train["label"]), dtype=np.int64)
            if len(np.unique(self.train_labels)) < 2:
                raise ValueError(f"classification task {name!r}: the probe's train rows hold fewer than 2 classes")
            self.references = np.asarray(list(test["label"]), dtype=np.int64)
            self.num_examples = {"test": len(columns["test"]), "train": len(columns["train"])}
        else:
            columns = {"sentence1": list(test["sentence1"]), "sentence2": list(test["sentence2"])}
            gold = test["score"] if task_type == "sts" else test["label"]
            self.references = np.asarray(list(gold), dtype=np.float64 if task_type == "sts" else np.int64)
            self.num_examples = {"test": len(columns["sentence1"])}
        if self.num_examples["test"] == 0:
            raise ValueError(f"task {name!r} has an empty test split")
        self.texts, position = _unique(t for column in columns.values() for t in column)
        self.index = {key: np.asarray([position[t] for t in column], dtype=np.int64) for key, column in columns.items()}

    def score(self, embeddings: np.ndarray, metric: Any) -> dict[str, float]:
        """Scores of (already cut and normalised) embeddings of ``self.texts`` (not for retrieval tasks)."""
        if self.task_type == "classification":
            from sklearn.linear_model import LogisticRegression

            probe = LogisticRegression(max_iter=1000, random_state=0)
            probe.fit(embeddings[self.index["train"]], self.train_labels)
            predictions = probe.predict(embeddings[self.index["test"]])
        else:
            a, b = embeddings[self.index["sentence1"]], embeddings[self.index["sentence2"]]
            predictions = np.sum(a * b, axis=1)
        return {k: float(v) for k, v in metric.compute(predictions=predictions, references=self.references).items()}

    def score_cell(
        self, full: np.ndarray, dim: int, precision: str, ranges: Any, normalize: bool, metric: Any
    ) -> dict[str, float]:
        """Scores of one (dim, precision) cell from the full-width vectors of ``self.texts`` at one layer."""
        if self.task_type == "retrieval":
            data, corpus = self.retrieval, len(self.retrieval.corpus)
            rows = search_cell(full[corpus:], full[:corpus], dim, precision, ranges, normalize)
            ranked = [[data.corpus_ids[r] for r in row] for row in rows]
            return ranking_metrics(ranked, data.qrels, data.query_ids)
        from .precision import budget_view

        return self.score(searchable(budget_view(full, dim, normalize), precision, ranges), metric)


def drop_training_examples(task_type: str, data: Any, exclude: set[tuple[str, str]]) -> tuple[Any, int]:
    """``data`` without its examples whose normalised text pair is in ``exclude`` (pairs for STS and pair
    classification; for retrieval, a query with any of its relevant documents); and how many were dropped.
    Classification rows are single texts and are kept."""
    from mipic_hf.data.overlap import pair_key

    if task_type in ("sts", "pair_classification"):
        keep = [
            i
            for i, (a, b) in enumerate(zip(data["sentence1"], data["sentence2"], strict=True))
            if pair_key(a, b) not in exclude
        ]
        return (data if len(keep) == len(data) else data.select(keep)), len(data) - len(keep)
    if task_type == "retrieval":
        text = dict(zip(data.corpus_ids, data.corpus, strict=True))

        def seen(query: str, words: str) -> bool:
            relevant = [doc for doc, gain in data.qrels[query].items() if gain > 0 and doc in text]
            return any(pair_key(words, text[doc]) in exclude for doc in relevant)

        drop = {q for q, words in zip(data.query_ids, data.queries, strict=True) if seen(q, words)}
        return data.without_queries(drop), len(drop)
    return data, 0


def _encode_at_layers(
    model: Any, tokenizer: Any, texts: list[str], layers: list[int], batch_size: int, max_length: int | None
) -> dict[int, Any]:
    """Full-width embeddings of ``texts`` at each exit layer: one pass for all layers when the model offers
    ``encode_layers`` (MatryoshkaModel), else one ``encode`` per layer."""
    hidden = int(model.hidden_size)
    kwargs = {"batch_size": batch_size, "show_progress_bar": False, "max_length": max_length}
    if hasattr(model, "encode_layers"):
        out = model.encode_layers(texts, tokenizer, layers, dimension=hidden, **kwargs)
        return {layer: out[layer].cpu().numpy() for layer in layers}
    return {layer: model.encode(texts, tokenizer, dimension=hidden, layer=layer, **kwargs) for layer in layers}


def evaluate_grid(
    model: Any,
    tokenizer: Any,
    tasks: list[str] | str,
    dims: list[int] | None = None,
    layers: list[int] | None = None,
    batch_size: int = 64,
    max_samples: int | None = None,
    data_dir: str | None = None,
    show_progress_bar: bool = True,
    *,
    benchmarks: Mapping[str, Any] | None = None,
    load_fn: Callable[..., Any] | None = None,
    max_length: int | None = None,
    model_name: str | None = None,
    sample_seed: int = 0,
    split: str = "test",
    precisions: list[str] | str | None = None,
    calibration_texts: list[str] | None = None,
    exclude_pairs: set[tuple[str, str]] | None = None,
    encode_fn: Callable[[list[str], list[int]], Mapping[int, Any]] | None = None,
    calibration_mode: str = "coordinate",
) -> dict[str, Any]:
    """Score ``model`` on every task at every (exit layer, dimension[, precision]) of the grid.

    Args:
        model: a MatryoshkaModel (or any model with ``encode(texts, tokenizer, dimension=, layer=)``,
            ``hidden_size``, ``num_layers`` and ``config.matryoshka_dimensions`` / ``matryoshka_layers``).
        tokenizer: the model's tokenizer.
        tasks: BENCHMARKS names or BEIR folder paths (a list, or one comma-separated string).
        dims: embedding widths (default ``config.matryoshka_dimensions``), each in 1..hidden size.
        layers: exit layers (default ``config.matryoshka_layers``), each in 1..num_hidden_layers.
        batch_size: texts per forward pass.
        max_samples: cap on the rows of each split used (test, and train for classification probes; the queries
            of a retrieval task, whose corpus stays whole): a random subset (``sample_seed``), the same for every
            layer and dim; None: every row.
        data_dir: passed to the loaders.
        show_progress_bar: a tqdm bar over (task, layer).
        benchmarks, load_fn: the registry and loader (default ``mipic_hf.data.BENCHMARKS`` /
            ``load_benchmark``, and ``mipic_hf.data.retrieval.load_retrieval`` for retrieval tasks); injectable
            for tests and custom tasks (a custom ``load_fn`` loads every task).
        max_length: truncation length passed to ``encode``.
        model_name: the ``"model"`` field of the result (default ``config.name_or_path`` or the class name).
        sample_seed: seed of the ``max_samples`` subsets.
        split: the split scored ("test"; "validation" to choose settings without touching the test sets).
        precisions: the storage precisions scored (:data:`~mipic_hf.evaluation.precision.GRID_PRECISIONS`;
            default float32 only). int8 / uint8 need ranges: ``calibration_texts``', else the model's.
        calibration_texts: training texts the int8 / uint8 ranges are computed from (never evaluation text); when
            given they are used even if the model stores ranges (e.g. ``encode_fn`` changes the vectors), and
            without them the model's stored ranges are.
        calibration_mode: how ranges are computed from ``calibration_texts``: ``coordinate`` (each coordinate's
            min and max, sentence-transformers' way) or ``shared`` (one min and max per budget;
            :func:`~mipic_hf.evaluation.precision.calibration_ranges`).
        exclude_pairs: normalised training pairs (``mipic_hf.data.overlap.training_pairs``); evaluation examples
            among them are dropped and counted.
        encode_fn: ``encode_fn(texts, layers) -> {layer: (N, hidden) array}``, the full-width vectors
            ``model.encode_layers`` would give (default: that); e.g. a cache shared by several grids.

    Returns:
        The result dict documented in this module's docstring: one entry per (layer, dim) per task.
    """
    from tqdm.auto import tqdm

    dims, layers = check_grid(model, dims, layers)
    benchmarks = get_benchmarks() if benchmarks is None else benchmarks
    tasks = check_tasks(tasks, benchmarks)
    task_types = {t: task_type_of(spec_of(t, benchmarks)) for t in tasks}
    precisions = check_precisions(precisions)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    calibrated = [p for p in precisions if p in ("int8", "uint8")]
    ranges = model_ranges(model, layers, dims) if calibrated and not calibration_texts else None
    if calibrated and ranges is None and not calibration_texts:
        raise ValueError(
            f"precisions {', '.join(calibrated)} need int8 ranges: the model holds none for every (layer, dim) of "
            "the grid, so pass calibration_texts (training text, never evaluation text)"
        )

    name = model_name or getattr(model.config, "name_or_path", None) or type(model).__name__
    results: dict[str, Any] = {
        "model": str(name),
        "dims": dims,
        "layers": layers,
        "max_samples": max_samples,
        "split": split,
        "precisions": precisions,
        "tasks": {},
    }
    if encode_fn is None:

        def encode_fn(texts: list[str], layers: list[int]) -> Mapping[int, Any]:
            return _encode_at_layers(model, tokenizer, texts, layers, batch_size, max_length)

    if calibrated:
        if ranges is None:
            full = {k: np.asarray(v, dtype=np.float32) for k, v in encode_fn(list(calibration_texts), layers).items()}
            ranges = calibration_ranges(full, dims, _normalizes(model), calibration_mode, model_code_basis(model))
            results["calibration"] = {"source": "texts", "num_texts": len(calibration_texts), "mode": calibration_mode}
        else:
            results["calibration"] = {"source": "model"}
    bar = tqdm(total=len(tasks) * len(layers), desc="Matryoshka eval", disable=not show_progress_bar)
    try:
        for task in tasks:
            bar.set_postfix_str(task)
            data = _load_task(task, task_types[task], load_fn, split, data_dir, max_samples, sample_seed, exclude_pairs)
            results["tasks"][task] = _score_task(
                data, encode_fn, dims, layers, precisions, ranges, (_normalizes(model), model_code_basis(model)), bar
            )
    finally:
        bar.close()
    return results


def _normalizes(model: Any) -> bool:
    return bool(getattr(model.config, "normalize", True))


def _load_task(
    task: str,
    task_type: str,
    load_fn: Callable[..., Any] | None,
    split: str,
    data_dir: str | None,
    max_samples: int | None,
    sample_seed: int,
    exclude_pairs: set[tuple[str, str]] | None,
) -> _TaskData:
    """One task's rows: loaded, without training examples (when ``exclude_pairs``), sampled."""
    if load_fn is None:
        if task_type == "retrieval":
            from mipic_hf.data.retrieval import load_retrieval as load_fn
        else:
            load_fn = get_loader()
    test = load_fn(task, split=split, data_dir=data_dir)
    dropped = None
    if exclude_pairs is not None:
        test, dropped = drop_training_examples(task_type, test, exclude_pairs)
    if task_type == "retrieval":
        if max_samples is not None and len(test.query_ids) > max_samples:
            rows = np.sort(np.random.default_rng(sample_seed).choice(len(test.query_ids), max_samples, replace=False))
            test = test.subset(rows.tolist())
    else:
        test = sample_rows(test, max_samples, sample_seed)
    train = None
    if task_type == "classification":
        train = sample_rows(load_fn(task, split="train", data_dir=data_dir), max_samples, sample_seed)
    data = _TaskData(task, task_type, test, train)
    if dropped is not None:
        data.num_examples["dropped_as_training"] = dropped
    return data


def _score_task(
    data: _TaskData,
    encode_fn: Callable[[list[str], list[int]], Mapping[int, Any]],
    dims: list[int],
    layers: list[int],
    precisions: list[str],
    ranges: dict[tuple[int, int], Any] | None,
    view: tuple[bool, np.ndarray | None],
    bar: Any,
) -> dict[str, Any]:
    """Every (layer, dim, precision) cell of one task, from one encoding pass; ``view``: (the model normalises,
    its code basis)."""
    normalize, basis = view
    metric = None if data.task_type == "retrieval" else METRIC_FOR_TASK[data.task_type]()
    scores: dict[str, dict[str, Any]] = {p: {} for p in precisions if applies(p, data.task_type)}
    for layer, full in encode_fn(data.texts, layers).items():
        full = np.asarray(full, dtype=np.float32)
        for precision, table in scores.items():
            table[layer_key(layer)] = {
                dim_key(d): data.score_cell(
                    coded_full(full, d, basis),
                    d,
                    precision,
                    None if ranges is None else ranges.get((layer, d)),
                    normalize,
                    metric,
                )
                for d in dims
            }
        bar.update(1)
    entry = {
        "task_type": data.task_type,
        "main_metric": MAIN_METRIC[data.task_type],
        "num_examples": data.num_examples,
        "scores": scores.pop("float32"),
    }
    if scores:
        entry["quantized"] = scores
    return entry


# ----- reading results -----------------------------------------------------------------------------
def main_score(results: Mapping[str, Any], task: str, layer: int, dim: int, precision: str = "float32") -> float:
    """The main metric of ``task`` at exit ``layer``, width ``dim`` and storage ``precision``."""
    entry = results["tasks"][task]
    try:
        table = entry["scores"] if precision == "float32" else entry["quantized"][precision]
        return float(table[layer_key(layer)][dim_key(dim)][entry["main_metric"]])
    except KeyError:
        raise KeyError(
            f"no score for task {task!r} at layer {layer}, dim {dim}, precision {precision} in these results"
        ) from None


def average_main_score(results: Mapping[str, Any], layer: int | None = None, dim: int | None = None) -> float:
    """Mean main metric over tasks and over the grid cells matching ``layer`` / ``dim`` (None: all of them)."""
    layers = results["layers"] if layer is None else [layer]
    dims = results["dims"] if dim is None else [dim]
    values = [main_score(results, task, lay, d) for task in results["tasks"] for lay in layers for d in dims]
    if not values:
        raise ValueError("these results hold no scores")
    return float(np.mean(values))
