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

from .benchmarks import load_benchmark
from .common import data_dir, describe
from .registry import BENCHMARKS, KIND_COLUMNS, KINDS, ROW_COLUMNS, TASK_TYPES, BenchmarkSpec
from .train import TrainData, is_benchmark_list, load_train_data, looks_like_path, read_train_data

__all__ = [
    "BENCHMARKS",
    "KINDS",
    "KIND_COLUMNS",
    "ROW_COLUMNS",
    "TASK_TYPES",
    "BenchmarkSpec",
    "TrainData",
    "data_dir",
    "describe",
    "is_benchmark_list",
    "load_benchmark",
    "load_train_data",
    "looks_like_path",
    "read_train_data",
]
