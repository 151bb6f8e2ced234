"""mipic_hf.data: local benchmark parsers (with each format quirk), Hub mapping, and train-data loading.

Every benchmark format is reproduced in a tiny fixture folder with made-up sentences, so the tests need neither
the Hub nor the real data. One test also checks the documented row counts of the real data when
``$MIPIC_DATA_DIR`` points at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mipic_hf import data
from mipic_hf.data import (
    BENCHMARKS,
    KIND_COLUMNS,
    KINDS,
    TASK_TYPES,
    describe,
    load_benchmark,
    load_train_data,
)

# --------------------------------------------------------------------------------------------------------------
# fixture data folder: same layout and quirks as the real one, invented sentences

STSB = {
    "train": [
        # 7 fields, a bare double quote in sentence1
        'main-captions\tMSRvid\t2012test\t0001\t4.500\tA cat naps on a "sunny sill.\tA cat sleeps by the window.',
        # 9 fields (two trailing license columns) and bare quotes in both sentences
        'main-news\theadlines\t2015\t0002\t1.250\tThe "mayor" opened a bridge.\tA bakery sold "bread.\tlic-a\tlic-b',
        "main-forums\tanswers\t2016\t0003\t0.000\tSnow fell on the hills.\tPrices rose again.",
    ],
    "dev": [
        "main-captions\tMSRvid\t2012test\t0004\t3.000\tTwo kids kick a ball.\tChildren play football.",
        'main-news\theadlines\t2015\t0005\t2.200\tA "quiet" town votes.\tVoters go out.\tlic-a\tlic-b',
    ],
    "test": [
        "main-captions\tMSRvid\t2012test\t0006\t5.000\tA bird sings.\tA bird is singing.",
        "main-captions\tMSRvid\t2012test\t0007\t0.400\tA van is parked.\tA chef slices onions.",
        'main-news\theadlines\t2015\t0008\t1.800\tRain "delays" trains.\tTrains run late.\tlic-a\tlic-b',
        "main-forums\tanswers\t2016\t0009\t3.600\tKeep the soil damp.\tWater the plant often.",
    ],
}
SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
SICK = {
    "SICK_test_annotated.txt": [
        "1\tA man is playing a flute\tA person plays a flute\t4.7\tENTAILMENT",
        "2\tA dog is running in snow\tA cat is sleeping\t1.2\tNEUTRAL",
        "3\tTwo women are cooking\tNobody is cooking\t2.9\tCONTRADICTION",
    ],
    "SICK_train.txt": [
        "4\tA boy rides a bike\tA child is riding a bicycle\t4.9\tENTAILMENT",
        "5\tA girl sings\tA plane lands\t1.0\tNEUTRAL",
    ],
    "SICK_trial.txt": ["6\tA man cuts bread\tBread is being cut by a man\t4.8\tENTAILMENT"],
}
FIXTURE_COUNTS = {
    ("stsb", "train"): 3,
    ("stsb", "validation"): 2,
    ("stsb", "test"): 4,
    ("sts12", "test"): 4,
    ("trec", "train"): 4,
    ("trec", "test"): 2,
    ("banking77", "train"): 3,
    ("banking77", "test"): 2,
    ("sst2", "train"): 3,
    ("sst2", "validation"): 2,
    ("sst2", "test"): 2,
    ("snli", "train"): 3,
}
REAL_COUNTS = {
    ("stsb", "train"): 5749,
    ("stsb", "validation"): 1500,
    ("stsb", "test"): 1379,
    ("sts12", "test"): 3108,
    ("trec", "train"): 5452,
    ("trec", "test"): 500,
    ("banking77", "train"): 10003,
    ("banking77", "test"): 3080,
    ("sst2", "train"): 67349,
    ("sst2", "validation"): 872,
    ("sst2", "test"): 1821,
    ("snli", "train"): 5864,
}
FOLDERS = {
    "stsb": "stsb",
    "sts12": "sts12-16",
    "trec": "trec",
    "banking77": "banking77",
    "sst2": "sst2",
    "snli": "snli",
}


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")  # keep \r\n where a fixture has it


def build_data_dir(root: Path) -> Path:
    """Write every local benchmark format, quirks included, under ``root``."""
    for split, lines in STSB.items():
        _write(root / "stsb" / f"sts-{split}.csv", "\n".join(lines) + "\n")

    sts12 = root / "sts12-16" / "STS12-en-test"
    _write(sts12 / "00-readme.txt", "not data\n")
    _write(
        sts12 / "STS.input.alpha.txt",
        "a red car .\ta car is red .\nan old song .\ta new film .\nbig hat .\tlarge hat .\n",
    )
    _write(sts12 / "STS.gs.alpha.txt", "4.0\n\n2.5\n")  # empty gold line: the pair is unscored and dropped
    _write(sts12 / "STS.input.beta.txt", "the sun sets .\tthe day ends .\nfish swim .\tbirds fly .\n")
    _write(sts12 / "STS.gs.beta.txt", "3.0\n1.0\n")
    sts13 = root / "sts12-16" / "STS13-en-test"
    _write(sts13 / "STS.input.gamma.txt", "a tall tree .\ta high tree .\n")
    _write(sts13 / "STS.gs.gamma.txt", "4.2\n")
    _write(sts13 / "STS.input.SMT.txt", "no gold .\tfor these .\n")  # no STS.gs.SMT.txt: skipped
    sts16 = root / "sts12-16" / "STS16-en-test"  # STS16 input lines carry two extra source columns
    _write(sts16 / "STS.input.delta.txt", "cold tea .\ticed tea .\tsrc-a\tsrc-b\nwarm bread .\tfresh bread .\tx\ty\n")
    _write(sts16 / "STS.gs.delta.txt", "3.5\n\n")

    for name, rows in SICK.items():
        _write(root / "sick" / name, "\r\n".join([SICK_HEADER, *rows]) + "\r\n")  # CRLF line endings

    snli = root / "snli"
    _write(
        snli / "triplets_senteval_devtest.tsv",
        "split\tpremise\tentailment\tcontradiction\n"
        "dev\tA chef stirs a pot .\tSomeone is cooking .\tThe chef is asleep .\n"
        'dev\tA kid holds a "kite .\tA child has a kite .\tThe kid is swimming .\n'
        "test\tTwo dogs nap .\tAnimals rest .\tThe dogs are racing .\n",
    )
    senteval = snli / "senteval"
    _write(senteval / "s1.dev", "A man rows a boat . \nA man rows a boat . \nA man rows a boat . \nA girl reads . \n")
    _write(senteval / "s2.dev", "A man is on water . \nThe man is tired . \nThe man is flying . \nSomeone reads . \n")
    _write(senteval / "labels.dev", "entailment\nneutral\ncontradiction\nentailment\n")
    _write(senteval / "s1.test", "A bus stops . \nA bus stops . \n")
    _write(senteval / "s2.test", "A vehicle halts . \nThe bus is new . \n")
    _write(senteval / "labels.test", "entailment\nneutral\n")
    _write(
        snli / "cat_subset" / "train.tsv",
        '3\t3\t"A man holds a sign reading ""hello there."""\tA man holds a sign.\n'
        "2\t2\tA woman jogs at dawn.\tThe woman is asleep.\n"
        "1\t1\tA woman jogs at dawn.\tThe woman trains for a race.\n"
        "3\t3\tA dog runs on grass.\tAn animal moves outside.\n",
    )

    trec = root / "trec"
    _write(
        trec / "train_5500.label",
        "DESC:manner How is caf\xe9 au lait made ?\nNUM:count How many legs does a spider have ?\n"
        "LOC:city What city hosts the yearly fair ?\nHUM:ind Who painted the blue barn ?\n".encode("latin-1"),
    )
    _write(trec / "TREC_10.label", b"ABBR:exp What does ABC stand for ?\nENTY:animal What animal purrs ?\n")

    bank = root / "banking77"
    _write(bank / "categories.json", json.dumps(["card_arrival", "change_pin", "Refund_not_showing_up"]))
    _write(
        bank / "train.csv",
        'text,category\nWhere is my new card?,card_arrival\n"My card\nnever came, help",card_arrival\n'
        "How do I change my PIN?,change_pin\n",
    )
    _write(bank / "test.csv", "text,category\nMy refund is missing,Refund_not_showing_up\nNew PIN please,change_pin\n")

    sst2 = root / "sst2"
    _write(sst2 / "sentiment-train", "a warm , funny film . \t1\ndull and slow \t0\nquietly moving \t1\n")
    _write(sst2 / "sentiment-dev", "a total mess . \t0\nbright and clever . \t1\n")
    _write(sst2 / "sentiment-test", "too long by half . \t0\na small gem . \t1\n")
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline and no $MIPIC_DATA_DIR unless a test sets it; a Hub call fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MIPIC_DATA_DIR", raising=False)

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected datasets.load_dataset{args}")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------------------------------------------
# constants


def test_constants() -> None:
    assert KINDS == ("sentences", "pairs", "triplets", "scored_pairs", "labeled")
    assert KIND_COLUMNS["scored_pairs"] == ["sentence1", "sentence2", "score"]
    assert set(KIND_COLUMNS) == set(KINDS)
    expected = {"stsb", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr", "snli", "banking77", "trec", "sst2"}
    assert expected <= set(BENCHMARKS)
    assert {n for n, s in BENCHMARKS.items() if not s.local} == {"emotion", "tweet_eval", "mrpc", "scitail", "wic"}
    for name, spec in BENCHMARKS.items():
        assert spec.name == name and spec.task in TASK_TYPES and spec.hub_id
        kinds = {"sts": "scored_pairs", "classification": "labeled", "retrieval": "beir"}
        assert spec.kind == kinds.get(spec.task, "pair_labels")


# --------------------------------------------------------------------------------------------------------------
# local benchmark parsers


def test_stsb_tabs_bare_quotes_and_9_fields(root: Path) -> None:
    train = load_benchmark("stsb", "train", data_dir=root)
    assert train.column_names == ["sentence1", "sentence2", "score"]
    assert train.features["score"].dtype == "float64" and train.features["sentence1"].dtype == "string"
    assert len(train) == 3
    assert train[0]["sentence1"] == 'A cat naps on a "sunny sill.'
    assert train[1] == {
        "sentence1": 'The "mayor" opened a bridge.',
        "sentence2": 'A bakery sold "bread.',
        "score": 1.25,
    }
    assert train["score"] == [4.5, 1.25, 0.0]
    assert load_benchmark("stsb", "dev", data_dir=root)["score"] == [3.0, 2.2]  # dev = validation
    assert len(load_benchmark("stsb", "validation", data_dir=root)) == 2
    test = load_benchmark("stsb", data_dir=root)  # default split: test
    assert len(test) == 4 and test[2]["sentence1"] == 'Rain "delays" trains.'


def test_sts12_drops_unscored_pairs(root: Path) -> None:
    ds = load_benchmark("sts12", data_dir=root)
    assert ds.column_names == ["sentence1", "sentence2", "score"]
    assert ds["sentence1"] == ["a red car .", "big hat .", "the sun sets .", "fish swim ."]  # subsets sorted
    assert ds["score"] == [4.0, 2.5, 3.0, 1.0]


def test_sts13_to_16_discover_subsets(root: Path) -> None:
    sts13 = load_benchmark("sts13", data_dir=root)  # the SMT input without gold scores is skipped
    assert sts13["sentence1"] == ["a tall tree ."] and sts13["score"] == [4.2]
    sts16 = load_benchmark("sts16", data_dir=root)  # extra source columns ignored, empty gold dropped
    assert sts16[:] == {"sentence1": ["cold tea ."], "sentence2": ["iced tea ."], "score": [3.5]}


def test_sickr_crlf_and_header(root: Path) -> None:
    test = load_benchmark("sickr", data_dir=root)
    assert len(test) == 3 and test.column_names == ["sentence1", "sentence2", "score"]
    assert test[0] == {"sentence1": "A man is playing a flute", "sentence2": "A person plays a flute", "score": 4.7}
    assert not any("\r" in s for s in [*test["sentence1"], *test["sentence2"]])
    assert len(load_benchmark("sickr", "train", data_dir=root)) == 2
    assert load_benchmark("sickr", "dev", data_dir=root)["score"] == [4.8]


def test_trec_latin1_coarse_classes(root: Path) -> None:
    train = load_benchmark("trec", "train", data_dir=root)
    assert train.column_names == ["text", "label"]
    assert train.features["label"].names == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    assert train[0]["text"] == "How is café au lait made ?"
    assert [train.features["label"].int2str(i) for i in train["label"]] == ["DESC", "NUM", "LOC", "HUM"]
    assert load_benchmark("trec", data_dir=root)["label"] == [0, 1]


def test_banking77_quoted_newline(root: Path) -> None:
    train = load_benchmark("banking77", "train", data_dir=root)
    assert len(train) == 3  # 4 physical lines after the header
    assert train[1]["text"] == "My card\nnever came, help"
    names = train.features["label"].names
    assert names == ["card_arrival", "change_pin", "Refund_not_showing_up"]  # case-insensitive sort
    assert train["label"] == [0, 0, 1]
    assert load_benchmark("banking77", "test", data_dir=root)["label"] == [2, 1]


def test_sst2(root: Path) -> None:
    train = load_benchmark("sst2", "train", data_dir=root)
    assert train[:] == {"text": ["a warm , funny film .", "dull and slow", "quietly moving"], "label": [1, 0, 1]}
    assert train.features["label"].names == ["negative", "positive"]
    assert len(load_benchmark("sst2", "validation", data_dir=root)) == 2
    assert load_benchmark("sst2", "test", data_dir=root)["label"] == [0, 1]


def test_snli_triplets_and_pair_classification(root: Path) -> None:
    train = load_benchmark("snli", "train", data_dir=root)
    assert train.column_names == ["anchor", "positive", "negative"] and len(train) == 3
    assert train[1]["anchor"] == 'A kid holds a "kite .'
    dev = load_benchmark("snli", "validation", data_dir=root)  # neutral dropped
    assert dev.column_names == ["sentence1", "sentence2", "label"]
    assert dev["label"] == [1, 0, 1] and dev.features["label"].names == ["contradiction", "entailment"]
    assert dev[0] == {"sentence1": "A man rows a boat .", "sentence2": "A man is on water .", "label": 1}
    assert load_benchmark("snli", data_dir=root)[:] == {
        "sentence1": ["A bus stops ."],
        "sentence2": ["A vehicle halts ."],
        "label": [1],
    }


def test_max_samples_and_env_data_dir(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIPIC_DATA_DIR", str(root))
    assert data.data_dir() == root
    assert load_benchmark("stsb", "test", max_samples=2)["score"] == [5.0, 0.4]
    assert len(load_benchmark("stsb", "test", max_samples=100)) == 4
    assert "max_samples" in one_line_error(load_benchmark, "stsb", max_samples=0)
    monkeypatch.setenv("MIPIC_DATA_DIR", str(root / "nope"))
    assert data.data_dir() is None


# $MIPIC_DATA_DIR as the session has it (the autouse fixture removes it from each test's environment).
REAL_DATA_DIR = data.data_dir()


def test_documented_row_counts(root: Path) -> None:
    """The real data's documented counts when $MIPIC_DATA_DIR is set, else the fixture's (never skipped)."""
    if REAL_DATA_DIR is not None:
        base, expected, classes = REAL_DATA_DIR, REAL_COUNTS, 77
    else:
        base, expected, classes = root, FIXTURE_COUNTS, 3
    missing = sorted({FOLDERS[name] for name, _ in expected if not (base / FOLDERS[name]).is_dir()})
    assert not missing, f"{base} lacks {missing}: every documented count is checked, none skipped"
    for (name, split), count in expected.items():
        ds = load_benchmark(name, split, data_dir=base)
        assert len(ds) == count, (name, split)
        assert ds.column_names == data.ROW_COLUMNS[BENCHMARKS[name].split_kind(split)]
    assert load_benchmark("banking77", "train", data_dir=base).features["label"].num_classes == classes


# --------------------------------------------------------------------------------------------------------------
# errors and the Hub path


def test_unknown_name_and_split() -> None:
    message = one_line_error(load_benchmark, "stsc")
    assert "benchmark 'stsc'" in message and "'stsb'" in message and "'sst2'" in message
    message = one_line_error(load_benchmark, "stsb", "holdout")
    assert "split 'holdout'" in message and "['train', 'validation', 'test']" in message
    assert "['test']" in one_line_error(load_benchmark, "sts12", "train")


def test_hub_only_offline_error_before_any_network(root: Path) -> None:
    message = one_line_error(load_benchmark, "emotion", data_dir=root)
    assert "'emotion'" in message and "hub-only" in message and "HF_HUB_OFFLINE" in message


def test_missing_local_files_offline(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = one_line_error(load_benchmark, "sts14", data_dir=root)
    assert "STS14-en-test" in message and "HF_HUB_OFFLINE" in message
    assert "no data dir" in one_line_error(load_benchmark, "stsb")
    assert "does not exist" in one_line_error(load_benchmark, "stsb", data_dir=root / "missing")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert "only available locally" in one_line_error(load_benchmark, "sickr", "train")  # Hub copy: test only


class FakeHub:
    """Stands in for datasets.load_dataset: returns the given rows and records the calls."""

    def __init__(self, dataset: datasets.Dataset) -> None:
        self.dataset, self.calls = dataset, []

    def __call__(self, path: str, name: str | None = None, split: str | None = None) -> datasets.Dataset:
        self.calls.append((path, name, split))
        return self.dataset


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def install(rows: dict, features: datasets.Features | None = None) -> FakeHub:
        fake = FakeHub(datasets.Dataset.from_dict(rows, features=features))
        monkeypatch.setattr(datasets, "load_dataset", fake)
        return fake

    return install


def test_hub_sts_and_classification_mapping(online) -> None:
    fake = online({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "score": [0.2, 0.9]})
    ds = load_benchmark("stsb", "validation")
    assert fake.calls == [("sentence-transformers/stsb", None, "validation")]
    assert ds.column_names == ["sentence1", "sentence2", "score"] and ds["score"] == [0.2, 0.9]

    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["x", "y"])})
    fake = online({"text": ["t1", "t2"], "label": [1, 0]}, feats)
    ds = load_benchmark("emotion", "train")
    assert fake.calls == [("dair-ai/emotion", "split", "train")]
    assert ds.features["label"].names == ["x", "y"] and ds["label"] == [1, 0]

    online({"text": ["t1", "t2", "t3"], "label": [1, 0, 1], "label_text": ["b", "a", "b"]})
    assert load_benchmark("banking77", "test").features["label"].names == ["a", "b"]


def test_hub_pair_classification_mapping(online) -> None:
    online({"premise": ["p1", "p2"], "hypothesis": ["h1", "h2"], "label": ["entails", "neutral"]})
    ds = load_benchmark("scitail", "test")
    assert ds.column_names == ["sentence1", "sentence2", "label"] and ds["label"] == [1, 0]

    online({"sentence1": ["a"], "sentence2": ["b"], "label": [-1]})  # hidden test labels
    assert "unlabeled" in one_line_error(load_benchmark, "wic", "test")

    rows = {
        "premise": ["p1", "p1", "p1", "p2", "p3", "p3"],
        "hypothesis": ["e1", "n1", "c1", "e2", "c3", "e3"],
        "label": [0, 1, 2, 0, 2, 0],
    }
    online(rows)
    train = load_benchmark("snli", "train")
    assert train[:] == {"anchor": ["p1", "p3"], "positive": ["e1", "e3"], "negative": ["c1", "c3"]}
    test = load_benchmark("snli", "test")
    assert test["label"] == [1, 0, 1, 0, 1] and test["sentence2"] == ["e1", "c1", "e2", "c3", "e3"]
    assert load_train_data("snli", "pairs")[:] == {"anchor": ["p1", "p2", "p3"], "positive": ["e1", "e2", "e3"]}


def test_train_data_from_hub_id(online) -> None:
    fake = online({"anchor": ["a1", "a2"], "positive": ["p1", "p2"], "negative": ["n1", "n2"]})
    ds = load_train_data("sentence-transformers/all-nli:triplet", "pairs", max_samples=1)
    assert fake.calls == [("sentence-transformers/all-nli", "triplet", "train")]
    assert ds[:] == {"anchor": ["a1"], "positive": ["p1"]}


# --------------------------------------------------------------------------------------------------------------
# load_train_data from local files


def test_train_csv_scored_pairs(tmp_path: Path) -> None:
    path = tmp_path / "sts.csv"
    path.write_text('sentence1,sentence2,score,extra\nhi there,"hello, there",4.5,x\nred,blue,1,y\n')
    ds = load_train_data(str(path), "scored_pairs")
    assert ds.column_names == ["sentence1", "sentence2", "score"]
    assert ds.features["score"].dtype == "float64"
    assert ds[:] == {"sentence1": ["hi there", "red"], "sentence2": ["hello, there", "blue"], "score": [4.5, 1.0]}
    assert describe(ds) == "2 rows, columns sentence1, sentence2, score"


def test_train_tsv_triplets_with_aliases(tmp_path: Path) -> None:
    path = tmp_path / "nli.tsv"
    path.write_text('query\tpos\tneg\n"A ""quoted"" cat"\tA cat\tA dog\nsun\tstar\tmoon\n')
    ds = load_train_data(path, "triplets")
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert ds[0] == {"anchor": 'A "quoted" cat', "positive": "A cat", "negative": "A dog"}  # csv quoting applies
    assert len(ds) == 2


def test_train_jsonl_labels(tmp_path: Path) -> None:
    path = tmp_path / "cls.jsonl"
    rows = [{"sentence": "great", "category": "pos"}, {"sentence": "awful", "category": "neg"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ds = load_train_data(path, "labeled")
    assert ds.column_names == ["text", "label"]
    assert ds.features["label"].names == ["neg", "pos"] and ds["label"] == [1, 0]  # sorted ClassLabel

    path.write_text('{"text": "a", "label": 2}\n{"text": "b", "label": 0}\n')
    ds = load_train_data(path, "labeled")
    assert ds.features["label"].dtype == "int64" and ds["label"] == [2, 0]
    path.write_text('{"text": "a", "label": -1}\n')
    assert "row 0" in one_line_error(load_train_data, path, "labeled")


def test_train_json_layouts(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    assert load_train_data(path, "sentences")["text"] == ["one", "two"]
    path.write_text(json.dumps({"anchor": ["a", "b"], "positive": ["c", "d"]}))
    assert load_train_data(path, "pairs")["positive"] == ["c", "d"]
    path.write_text(json.dumps({"data": [{"text": "x", "label": 1}, {"text": "y", "label": 0}]}))
    assert load_train_data(path, "labeled")["label"] == [1, 0]


def test_train_parquet_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "pairs.parquet"
    table = pa.table({"id": [1, 2, 3], "premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"]})
    pq.write_table(table, path)
    ds = load_train_data(path, "pairs", columns={"premise": "anchor", "hypothesis": "positive"}, max_samples=2)
    assert ds[:] == {"anchor": ["p1", "p2"], "positive": ["h1", "h2"]}
    message = one_line_error(load_train_data, path, "pairs", columns={"premise": "query"})
    assert "'query'" in message and "['anchor', 'positive']" in message
    message = one_line_error(load_train_data, path, "pairs", columns={"prem": "anchor"})
    assert "'prem'" in message and "['id', 'premise', 'hypothesis']" in message


def test_train_txt_sentences(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first sentence\n\n  second one  \n\n")
    ds = load_train_data(path, "sentences")
    assert ds.column_names == ["text"] and ds["text"] == ["first sentence", "second one"]
    assert "missing column 'positive' for kind pairs" in one_line_error(load_train_data, path, "pairs")


def test_train_folder_picks_split_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("ignored")
    (tmp_path / "train.csv").write_text("text\nalpha\nbeta\n")
    (tmp_path / "test.csv").write_text("text\ngamma\n")
    assert load_train_data(tmp_path, "sentences")["text"] == ["alpha", "beta"]
    assert load_train_data(tmp_path, "sentences", split="test")["text"] == ["gamma"]
    (tmp_path / "train.jsonl").write_text('{"text": "delta"}\n')
    assert "mixes formats" in one_line_error(load_train_data, tmp_path, "sentences")


def test_train_missing_column_lists_found(tmp_path: Path) -> None:
    path = tmp_path / "abc.csv"
    path.write_text("a,b,c\n1,2,3\n")
    message = one_line_error(load_train_data, path, "scored_pairs", columns={"a": "sentence1", "b": "sentence2"})
    assert message == "missing column 'score' for kind scored_pairs; the data has columns ['a', 'b', 'c']"


def test_train_bad_scores(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("sentence1,sentence2,score\na,b,1.0\nc,d,nan\n")
    message = one_line_error(load_train_data, path, "scored_pairs")
    assert "score" in message and "row 1" in message
    path.write_text("sentence1,sentence2,score\na,b,high\n")
    assert "row 0 is not a number: 'high'" in one_line_error(load_train_data, path, "scored_pairs")
    path = tmp_path / "s.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": null}\n')
    assert "row 0" in one_line_error(load_train_data, path, "scored_pairs")


def test_invalid_text_cells_are_errors_unless_dropped(tmp_path: Path) -> None:
    """An empty, missing or non-string text cell names its row and column; drop_invalid_rows drops and counts."""
    from mipic_hf.data import read_train_data

    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("sentence1,sentence2,score\na,b,1.0\nc,,2.0\n  ,f,3.0\ng,h,4.0\n")
    message = one_line_error(load_train_data, csv_path, "scored_pairs")
    assert message == (
        f"train data '{csv_path}': row 1, column 'sentence2' is empty (2 such row(s); data.drop_invalid_rows: true "
        "drops them)"
    )
    kept, dropped = read_train_data(csv_path, "scored_pairs", drop_invalid_rows=True)
    assert dropped == 2 and kept["sentence1"] == ["a", "g"] and kept["score"] == [1.0, 4.0]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": 5}\n{"other": "x"}\n')
    assert "row 1, column 'text' is not a string (int 5) (2 such row(s);" in one_line_error(
        load_train_data, jsonl, "sentences"
    )
    kept, dropped = read_train_data(jsonl, "sentences", drop_invalid_rows=True)
    assert dropped == 2 and kept["text"] == ["fine"]
    jsonl.write_text('{"text": null}\n')
    assert "row 0, column 'text' is missing" in one_line_error(load_train_data, jsonl, "sentences")
    assert "every row has an invalid text cell" in one_line_error(
        read_train_data, jsonl, "sentences", drop_invalid_rows=True
    )


def test_train_empty_missing_unreadable(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("text\n")
    assert one_line_error(load_train_data, empty, "sentences") == f"train data '{empty}' has no rows"
    (tmp_path / "blank.txt").write_text("\n\n")
    assert "has no rows" in one_line_error(load_train_data, tmp_path / "blank.txt", "sentences")
    missing = tmp_path / "nope.csv"
    assert one_line_error(load_train_data, missing, "sentences") == f"train file '{missing}' does not exist"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    assert "cannot be read" in one_line_error(load_train_data, bad, "sentences")
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text\ncaf\xe9\n")
    assert "cannot be read" in one_line_error(load_train_data, latin, "sentences")
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    assert "unknown format" in one_line_error(load_train_data, other, "sentences")


def test_train_unknown_kind_and_hub_names_offline(tmp_path: Path) -> None:
    message = one_line_error(load_train_data, tmp_path / "x.csv", "quads")
    assert "kind 'quads'" in message and str(list(KINDS)) in message
    message = one_line_error(load_train_data, "emotion", "labeled")
    assert "'emotion'" in message and "hub-only" in message and "HF_HUB_OFFLINE" in message
    assert "HF_HUB_OFFLINE" in one_line_error(load_train_data, "someone/some-set", "pairs")


def test_train_from_benchmarks(root: Path) -> None:
    ds = load_train_data("stsb", "scored_pairs", data_dir=root)
    assert ds.column_names == ["sentence1", "sentence2", "score"] and len(ds) == 3
    triplets = load_train_data("snli", "triplets", data_dir=root, max_samples=2)
    assert triplets.column_names == ["anchor", "positive", "negative"] and len(triplets) == 2
    pairs = load_train_data("snli", "pairs", data_dir=root)  # SNLI-train entailment pairs (cat_subset, label 3)
    assert pairs[:] == {
        "anchor": ['A man holds a sign reading "hello there."', "A dog runs on grass."],
        "positive": ["A man holds a sign.", "An animal moves outside."],
    }
    texts = load_train_data("banking77", "sentences", data_dir=root)
    assert texts.column_names == ["text"] and len(texts) == 3
    labeled = load_train_data("trec", "labeled", data_dir=root)
    assert labeled.features["label"].names[0] == "ABBR"
    message = one_line_error(load_train_data, "stsb", "pairs", data_dir=root)
    assert "'stsb'" in message and "scored_pairs" in message and "kind pairs" in message
    assert "pair_labels" in one_line_error(load_train_data, "snli", "labeled", split="test", data_dir=root)
    assert "['test']" in one_line_error(load_train_data, "sts12", "scored_pairs", data_dir=root)
