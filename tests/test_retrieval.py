"""Retrieval in the grid: BEIR folders, exact chunked search, nDCG@10 / recall@100 / MRR@10 against hand-computed
rankings, the precision axis on retrieval, clean evaluation (training pairs dropped), and the quality-per-byte
frontier."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from sklearn.metrics import ndcg_score
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaModel
from mipic_hf.data.overlap import normalize_text, pair_key, training_pairs
from mipic_hf.data.retrieval import RetrievalSet, is_beir_folder, load_retrieval
from mipic_hf.evaluation.frontier import Cell, best_within, cells, frontier, smallest_within, target_line
from mipic_hf.evaluation.grid import drop_training_examples, evaluate_grid, main_score
from mipic_hf.evaluation.precision import searchable
from mipic_hf.evaluation.report import safe_name
from mipic_hf.evaluation.retrieval import _merge, exact_search, ranking_metrics
from mipic_hf.training.calibration import fit_quantization_ranges

WORDS = "cat dog bird fish tree car road house river sky sun moon blue red green big small fast slow rain".split()


def write_beir(folder: Path, n_docs: int = 30, n_queries: int = 8) -> Path:
    """A BEIR folder of made-up texts: each query shares words with its one or two relevant documents."""
    rng = random.Random(1)
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    docs = [(f"d{i}", " ".join(rng.choices(WORDS, k=3)), " ".join(rng.choices(WORDS, k=8))) for i in range(n_docs)]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc_id, title, text in docs:
            f.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    queries, qrels = [], {"train": [], "test": []}
    for q in range(n_queries):
        relevant = rng.sample(range(n_docs), k=1 + q % 2)
        words = docs[relevant[0]][2].split()[:4] + rng.choices(WORDS, k=2)
        queries.append({"_id": f"q{q}", "text": " ".join(words)})
        qrels["test" if q % 2 == 0 else "train"] += [(f"q{q}", f"d{r}", 1 + (k == 0)) for k, r in enumerate(relevant)]
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(q) + "\n" for q in queries)
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{a}\t{b}\t{s}" for a, b, s in rows]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def beir(tmp_path_factory) -> Path:
    return write_beir(tmp_path_factory.mktemp("beir") / "toy")


# ----- metrics and search ----------------------------------------------------------------------------------
def test_ranking_metrics_against_a_hand_computed_ranking() -> None:
    qrels = {"q1": {"d1": 1, "d2": 2, "d0": 0}, "q2": {"d9": 1}}
    ranked = [["d3", "d1", "d7", "d2", "d0"], ["d5", "d6"]]
    got = ranking_metrics(ranked, qrels, ["q1", "q2"])
    dcg = 1 / np.log2(3) + 2 / np.log2(5)  # d1 at rank 2 (gain 1), d2 at rank 4 (gain 2); d0 judged 0
    idcg = 2 / np.log2(2) + 1 / np.log2(3)
    assert got["ndcg@10"] == pytest.approx(100 * (dcg / idcg + 0.0) / 2, abs=1e-9)
    assert got["ndcg@10"] == pytest.approx(28.36037, abs=1e-5)
    assert got["mrr@10"] == pytest.approx(100 * (1 / 2 + 0) / 2)  # q1's first relevant at rank 2, q2 none
    assert got["recall@100"] == pytest.approx(100 * (2 / 2 + 0 / 1) / 2)


def test_ranking_metrics_cutoffs() -> None:
    qrels = {"q": {"hit": 1}}
    late = [f"x{i}" for i in range(10)] + ["hit"]  # rank 11: outside @10, inside @100
    got = ranking_metrics([late], qrels, ["q"])
    assert got == {"ndcg@10": 0.0, "recall@100": 100.0, "mrr@10": 0.0}


def test_ndcg_matches_sklearn_on_random_graded_judgements() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 40))  # no ties
    gains = rng.integers(0, 3, size=(6, 40))
    gains[:, 0] = 1  # every query has a relevant document
    ids = [f"d{i}" for i in range(40)]
    ranked = [[ids[i] for i in np.argsort(-row)] for row in scores]
    qrels = {f"q{q}": {ids[i]: int(g) for i, g in enumerate(gains[q]) if g} for q in range(6)}
    got = ranking_metrics(ranked, qrels, [f"q{q}" for q in range(6)])
    assert got["ndcg@10"] == pytest.approx(100 * ndcg_score(gains, scores, k=10), abs=1e-9)


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_exact_search_in_chunks_equals_brute_force(chunk: int) -> None:
    rng = np.random.default_rng(chunk)
    queries, corpus = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(23, 6)).astype(np.float32)
    scores, rows = exact_search(queries, len(corpus), lambda a, b: corpus[a:b], k=10, chunk_size=chunk, query_chunk=2)
    full = queries @ corpus.T
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-6)


def test_ties_go_to_the_earlier_document_across_chunks() -> None:
    corpus = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.float32)
    _, rows = exact_search(np.array([[1, 0]], dtype=np.float32), 5, lambda a, b: corpus[a:b], k=4, chunk_size=2)
    assert rows.tolist() == [[1, 2, 4, 0]]
    merged = _merge(np.array([[1.0, 2.0, 1.0]]), np.array([[7, 8, 3]]), 3)[1]
    assert merged.tolist() == [[8, 7, 3]]  # the earlier column wins a tie (candidates come in corpus order)


# ----- the BEIR loader --------------------------------------------------------------------------------------
def test_beir_folder_loads_by_path_and_split(beir: Path) -> None:
    assert is_beir_folder(beir) and not is_beir_folder(beir / "qrels")
    test = load_retrieval(str(beir), "test")
    assert test.query_ids == ["q0", "q2", "q4", "q6"] and len(test.corpus) == 30
    first = json.loads((beir / "corpus.jsonl").read_text().splitlines()[0])
    assert test.corpus[0] == f"{first['title']} {first['text']}"  # title + " " + text, MTEB's way
    dev = load_retrieval(str(beir), "validation")  # no dev qrels: the train queries are the dev split
    assert dev.query_ids == ["q1", "q3", "q5", "q7"] and dev.qrels["q1"]
    with pytest.raises(ValueError, match=r"has no split 'bogus'; choose one of \['train', 'test'\]"):
        load_retrieval(str(beir), "bogus")
    with pytest.raises(ValueError, match="is not a BEIR folder"):
        load_retrieval(str(beir / "qrels"))


def test_scifact_by_name_reads_the_data_dir() -> None:
    import os

    root = os.environ.get("MIPIC_DATA_DIR")
    if not root or not Path(root, "scifact", "corpus.jsonl").is_file():
        pytest.fail("this test needs ../shared/data/scifact (MIPIC_DATA_DIR)")
    test = load_retrieval("scifact", "test")
    assert (len(test.corpus), len(test.query_ids), sum(map(len, test.qrels.values()))) == (5183, 300, 339)
    dev = load_retrieval("scifact", "validation")
    assert (len(dev.query_ids), sum(map(len, dev.qrels.values()))) == (809, 919)
    assert not set(dev.query_ids) & set(test.query_ids)


# ----- the grid on a retrieval task -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_backbone: str) -> tuple[MatryoshkaModel, object]:
    model = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 16, 64], matryoshka_layers=[1, 2])
    return model.eval(), AutoTokenizer.from_pretrained(tiny_backbone)


def _direct(model, tokenizer, data: RetrievalSet, layer: int, dim: int, precision: str) -> dict:
    """The cell's metrics computed here, from encode() at the budget and a full sort."""
    q = model.encode(data.queries, tokenizer, dimension=dim, layer=layer)
    c = model.encode(data.corpus, tokenizer, dimension=dim, layer=layer)
    if precision == "binary_rescore":  # 4 x 100 candidates > 30 documents: every document is re-ranked
        scores = q @ searchable(c, "binary").T
    else:
        scores = searchable(q, precision) @ searchable(c, precision).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    ranked = [[data.corpus_ids[i] for i in row] for row in order]
    return ranking_metrics(ranked, data.qrels, data.query_ids)


def test_grid_scores_a_beir_folder_at_every_cell(tiny, beir: Path) -> None:
    model, tokenizer = tiny
    precisions = ["float32", "binary", "binary_rescore"]
    results = evaluate_grid(
        model, tokenizer, [str(beir)], dims=[8, 64], layers=[1, 2], precisions=precisions, show_progress_bar=False
    )
    entry = results["tasks"][str(beir)]
    assert entry["task_type"] == "retrieval" and entry["main_metric"] == "ndcg@10"
    assert entry["num_examples"] == {"test": 4, "corpus": 30}
    data = load_retrieval(str(beir), "test")
    for layer in (1, 2):
        for dim in (8, 64):
            for precision in precisions:
                expected = _direct(model, tokenizer, data, layer, dim, precision)
                table = entry["scores"] if precision == "float32" else entry["quantized"][precision]
                got = table[f"L{layer}"][f"D{dim}"]
                assert got == pytest.approx(expected, abs=1e-9), (layer, dim, precision)


def test_int8_cells_need_ranges_before_any_work(tiny, beir: Path) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="precisions int8 need int8 ranges: .* pass calibration_texts"):
        evaluate_grid(model, tokenizer, [str(beir)], precisions=["int8"], show_progress_bar=False)
    with pytest.raises(ValueError, match="precisions must be among float32, int8"):
        evaluate_grid(model, tokenizer, [str(beir)], precisions=["fp16"], show_progress_bar=False)
    results = evaluate_grid(
        model,
        tokenizer,
        [str(beir)],
        dims=[16],
        layers=[2],
        precisions=["int8"],
        calibration_texts=["a cat", "the red car on the road", "rain"],
        show_progress_bar=False,
    )
    assert results["calibration"] == {"source": "texts", "num_texts": 3, "mode": "coordinate"}
    assert 0 <= main_score(results, str(beir), 2, 16, "int8") <= 100


def test_calibration_texts_win_over_the_models_stored_ranges(tiny, beir: Path) -> None:
    """Given texts calibrate the cells even when the model stores ranges (an ``encode_fn`` may change the vectors);
    without texts the stored ranges are used."""
    model, tokenizer = copy.deepcopy(tiny[0]), tiny[1]
    texts = ["a cat", "the red car on the road", "rain"]
    grid = {"dims": [16], "layers": [2], "precisions": ["int8"], "show_progress_bar": False}
    from_texts = evaluate_grid(model, tokenizer, [str(beir)], calibration_texts=texts, **grid)
    fit_quantization_ranges(model, tokenizer, ["one long sentence about nothing at all", "x"], mode="shared")
    stored = evaluate_grid(model, tokenizer, [str(beir)], **grid)
    again = evaluate_grid(model, tokenizer, [str(beir)], calibration_texts=texts, **grid)
    assert stored["calibration"] == {"source": "model"}
    assert again["calibration"] == from_texts["calibration"]
    assert again["tasks"] == from_texts["tasks"]
    assert stored["tasks"] != from_texts["tasks"]


# ----- clean evaluation ---------------------------------------------------------------------------------------
def test_normalised_pairs_match_across_case_punctuation_and_order() -> None:
    assert normalize_text("  The  cat's   HAT, (again)! ") == "the cats hat again"
    assert pair_key("B b.", "a A") == pair_key("a, a", "b B") == ("a a", "b b")
    train = Dataset.from_dict({"anchor": ["x", "y"], "positive": ["p", "q"], "negative": ["n", "m"]})
    assert training_pairs(train) == {("p", "x"), ("n", "x"), ("q", "y"), ("m", "y")}
    assert training_pairs(Dataset.from_dict({"text": ["only one column"]})) == set()


def test_decontamination_drops_exactly_the_known_overlaps(tiny, beir: Path) -> None:
    train = Dataset.from_dict(
        {
            "sentence1": ["A cat sat.", "Dogs run!", "fresh"],
            "sentence2": ["The mat.", "In parks", "new"],
            "score": [1.0] * 3,
        }
    )
    exclude = training_pairs(train, ["sentence1", "sentence2"])
    sts = Dataset.from_dict(
        {
            "sentence1": ["a cat sat", "in parks", "dogs run", "unrelated", "fresh"],
            "sentence2": ["the mat", "DOGS, run", "in the park", "text", "old"],
            "score": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    kept, dropped = drop_training_examples("sts", sts, exclude)
    assert dropped == 2 and kept["score"] == [3.0, 4.0, 5.0]  # rows 0 (same pair) and 1 (reversed) are training pairs
    data = load_retrieval(str(beir), "test")
    query, doc = data.queries[1], data.corpus[data.corpus_ids.index(next(iter(data.qrels[data.query_ids[1]])))]
    clean, n = drop_training_examples("retrieval", data, {pair_key(doc.upper() + "!", query)})
    assert n == 1 and clean.query_ids == [q for i, q in enumerate(data.query_ids) if i != 1]
    assert clean.dropped == 1 and len(clean.corpus) == len(data.corpus)

    model, tokenizer = tiny
    results = evaluate_grid(
        model,
        tokenizer,
        [str(beir)],
        dims=[8],
        layers=[2],
        exclude_pairs={pair_key(query, doc)},
        show_progress_bar=False,
    )
    assert results["tasks"][str(beir)]["num_examples"] == {"test": 3, "corpus": 30, "dropped_as_training": 1}


def test_sts12_overlaps_stsb_train_in_839_pairs() -> None:
    import os

    from mipic_hf.data import load_benchmark

    if not os.environ.get("MIPIC_DATA_DIR"):
        pytest.fail("this test needs ../shared/data (MIPIC_DATA_DIR)")
    exclude = training_pairs(load_benchmark("stsb", split="train"))
    kept, dropped = drop_training_examples("sts", load_benchmark("sts12", split="test"), exclude)
    assert (dropped, len(kept)) == (839, 3108 - 839)


# ----- the frontier ---------------------------------------------------------------------------------------------
def _results() -> dict:
    """Two exits x dims 8 / 16 x float32 / binary, made-up scores."""
    grid = {
        "float32": {"L1": {"D8": 40.0, "D16": 50.0}, "L2": {"D8": 60.0, "D16": 70.0}},
        "binary": {"L1": {"D8": 10.0, "D16": 20.0}, "L2": {"D8": 30.0, "D16": 69.5}},
    }

    def table(p: str) -> dict:
        return {lay: {d: {"ndcg@10": v} for d, v in row.items()} for lay, row in grid[p].items()}

    task = {
        "task_type": "retrieval",
        "main_metric": "ndcg@10",
        "scores": table("float32"),
        "quantized": {"binary": table("binary")},
    }
    return {"dims": [8, 16], "layers": [1, 2], "tasks": {"t": task}}


def test_frontier_keeps_the_cells_no_cheaper_cell_beats() -> None:
    found = cells(_results(), "t")
    assert [(c.bytes, c.layer, c.dim, c.precision) for c in found][:2] == [(1, 1, 8, "binary"), (1, 2, 8, "binary")]
    best = frontier(found)
    # bytes: binary d8 = 1, binary d16 = 2, float32 d8 = 32, d16 = 64
    assert [(c.bytes, c.layer, c.score) for c in best] == [
        (1, 1, 10.0),
        (1, 2, 30.0),
        (2, 1, 20.0),
        (2, 2, 69.5),
        (32, 1, 40.0),
        (64, 1, 50.0),
        (64, 2, 70.0),
    ]
    assert Cell(2, 16, "binary", 2, 69.5) in best and all(c.score != 60.0 for c in best)  # (32 B, L2) < 69.5 at 2 B
    assert best_within(found, 31) == Cell(2, 16, "binary", 2, 69.5)
    assert best_within(found, 31, layer=1) == Cell(1, 16, "binary", 2, 20.0)
    assert best_within(found, 0) is None
    assert smallest_within(found, 0.99) == Cell(2, 16, "binary", 2, 69.5)  # 69.5 >= 0.99 x 70
    assert smallest_within(found, 1.0) == Cell(2, 16, "float32", 64, 70.0)


def test_target_line_names_the_smallest_budget() -> None:
    line = target_line(_results(), "t", 0.99)
    assert line == (
        "t: smallest budget within 1% of the full model: layer 2, d 16, binary (2 bytes), ndcg@10 69.50 vs 70.00 "
        "at layer 2, d 16, float32 (64 bytes), 32x smaller"
    )


def test_evaluate_cli_prints_the_target_line_for_a_plain_backbone(
    tiny_backbone: str, beir: Path, tmp_path, capsys
) -> None:
    from mipic_hf.cli.evaluate import main

    out = tmp_path / "eval"
    code = main(
        [
            tiny_backbone,
            "--tasks",
            str(beir),
            "--dims",
            "8",
            "64",
            "--layers",
            "1",
            "2",
            "--target",
            "0.9",
            "--output_dir",
            str(out),
            "--no_progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "eval_results.json").read_text())
    assert results["precisions"] == ["float32", "binary", "binary_rescore"]  # no ranges, no calibration data: no int8
    assert target_line(results, str(beir), 0.9) in printed
    assert (out / f"{safe_name(str(beir))}_frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert "quality per byte" in (out / "eval_results.md").read_text()
