"""Retrieval sets in BEIR layout: a corpus, queries and relevance judgements (qrels) per split.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (header ``query-id corpus-id score``). A split's queries are the ones its qrels name (as BEIR
and MTEB evaluate); every document of the corpus is a candidate. A document's text is ``title + " " + text``,
stripped (MTEB's convention). ``validation`` reads ``qrels/dev.tsv``, else ``qrels/train.tsv`` (SciFact has no
dev qrels: its train claims are the split to choose settings on, its test claims the one to report). Named sets
(``scifact``) are read from ``$MIPIC_DATA_DIR/<name>``; any other BEIR folder is named by its path. There is no
Hub fallback: download the BEIR folder once and name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .common import default_data_dir
from .registry import BENCHMARKS, BenchmarkSpec

BEIR_FILES = ("corpus.jsonl", "queries.jsonl")
BEIR_SPLITS = ("train", "dev", "test")


@dataclass
class RetrievalSet:
    """One split of a retrieval set: queries (those the split's qrels name) against the whole corpus.

    ``qrels[query_id][doc_id]`` is the judged relevance (> 0: relevant). ``dropped`` counts the queries left out
    as training examples (:meth:`without_queries`).
    """

    name: str
    corpus_ids: list[str]
    corpus: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, int]]
    dropped: int = field(default=0)

    def without_queries(self, drop: set[str]) -> RetrievalSet:
        """The same set without the queries whose ids are in ``drop``."""
        keep = [i for i, q in enumerate(self.query_ids) if q not in drop]
        return RetrievalSet(
            self.name,
            self.corpus_ids,
            self.corpus,
            [self.query_ids[i] for i in keep],
            [self.queries[i] for i in keep],
            {q: self.qrels[q] for q in (self.query_ids[i] for i in keep)},
            self.dropped + len(self.query_ids) - len(keep),
        )

    def subset(self, rows: list[int]) -> RetrievalSet:
        """The same set with only the queries at ``rows`` (the corpus stays whole)."""
        ids = {self.query_ids[i] for i in rows}
        return self.without_queries(set(self.query_ids) - ids)


def is_beir_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder in BEIR layout (corpus, queries and a qrels folder)."""
    folder = Path(path).expanduser()
    return folder.is_dir() and all((folder / n).is_file() for n in BEIR_FILES) and (folder / "qrels").is_dir()


def beir_splits(folder: str | Path) -> tuple[str, ...]:
    """The splits a BEIR folder has qrels for."""
    return tuple(s for s in BEIR_SPLITS if (Path(folder).expanduser() / "qrels" / f"{s}.tsv").is_file())


def path_spec(path: str) -> BenchmarkSpec:
    """A BenchmarkSpec for a BEIR folder named by its path."""
    return BenchmarkSpec(path, "retrieval", "beir", beir_splits(path) or ("test",), None)


def retrieval_folder(name: str, data_dir: str | Path | None = None) -> Path:
    """The BEIR folder of a named retrieval set (``data_dir``/``$MIPIC_DATA_DIR`` + name) or of a path."""
    if name in BENCHMARKS and BENCHMARKS[name].task == "retrieval":
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        if root is None:
            raise ValueError(f"retrieval set {name!r} is read from $MIPIC_DATA_DIR/{name}: set MIPIC_DATA_DIR")
        folder = root / name
    else:
        folder = Path(name).expanduser()
    if not is_beir_folder(folder):
        raise ValueError(
            f"retrieval set {name!r}: '{folder}' is not a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)"
        )
    return folder


def _read_jsonl(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_json(path, lines=True, dtype=dict.fromkeys(columns, str))
    missing = [c for c in columns if c != "title" and c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: rows need the field(s) {', '.join(missing)}")
    for column in columns:
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].fillna("").astype(str)
    return frame


def load_retrieval(name: str, split: str = "test", data_dir: str | Path | None = None) -> RetrievalSet:
    """One split of a BEIR folder (a named set or a path) as a :class:`RetrievalSet`."""
    folder = retrieval_folder(name, data_dir)
    if split in ("validation", "val", "dev"):  # no dev qrels (SciFact): the train queries are the dev split
        split = "dev" if (folder / "qrels" / "dev.tsv").is_file() else "train"
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise ValueError(f"retrieval set {name!r} has no split {split!r}; choose one of {list(beir_splits(folder))}")
    corpus = _read_jsonl(folder / "corpus.jsonl", ("_id", "title", "text"))
    queries = _read_jsonl(folder / "queries.jsonl", ("_id", "text"))
    judged = pd.read_csv(qrels_path, sep="\t", dtype={"query-id": str, "corpus-id": str}, keep_default_na=False)
    if not {"query-id", "corpus-id", "score"} <= set(judged.columns):
        raise ValueError(f"{qrels_path}: the header must be query-id, corpus-id, score; got {list(judged.columns)}")
    qrels: dict[str, dict[str, int]] = {}
    for query, doc, score in judged[["query-id", "corpus-id", "score"]].itertuples(index=False):
        qrels.setdefault(query, {})[doc] = int(score)
    text_of = dict(zip(queries["_id"], queries["text"], strict=True))
    unknown = [q for q in qrels if q not in text_of]
    if unknown:
        raise ValueError(f"{qrels_path}: query ids not in queries.jsonl: {unknown[:5]}")
    query_ids = list(qrels)
    documents = (corpus["title"] + " " + corpus["text"]).str.strip()
    return RetrievalSet(
        str(name), list(corpus["_id"]), list(documents), query_ids, [text_of[q] for q in query_ids], qrels
    )
