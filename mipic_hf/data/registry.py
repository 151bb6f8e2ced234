"""What the data layer knows: row kinds and their columns, splits, file formats, and the benchmark registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
TASK_TYPES = ("sts", "classification", "pair_classification", "retrieval")
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
    kind: str  # row kind: scored_pairs (sts), labeled (classification), pair_labels (pair_classification), beir
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
    # BEIR layout, read by mipic_hf.data.retrieval (train claims = the dev split); any BEIR folder also works by path
    "scifact": BenchmarkSpec("scifact", "retrieval", "beir", ("train", "validation", "test"), "mteb/scifact"),
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
HUB_COLUMNS: dict[str, dict[str, str]] = {
    **{name: {} for name in ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr", "mrpc", "wic")},
    "banking77": {},
    "trec": {"coarse_label": "label"},
    "sst2": {},
    "emotion": {},
    "tweet_eval": {},
    "scitail": {"premise": "sentence1", "hypothesis": "sentence2"},
}
HUB_SPLITS = {"sickr": ("test",)}  # splits the Hub copy has, where fewer than the local files


class NotLocal(Exception):
    """A benchmark file is not in the data dir (the loader falls back to the Hub)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path
