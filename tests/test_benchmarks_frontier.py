"""benchmarks/frontier.py on a backbone grid other than MiniLM's (``--backbone mpnet`` uses the same path)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.fixture
def frontier(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import frontier

    yield frontier
    sys.modules.pop("frontier", None)


def test_a_grid_is_scored_at_its_own_exits_and_from_one_encoding(
    frontier, tiny_backbone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.numpy import load_file

    from mipic_hf.evaluation.grid import evaluate_grid, main_score

    grid = frontier.Grid("tiny", [1, 2], [64, 32, 16, 8], tmp_path / "runs", "done", tmp_path / "res", tmp_path / "c")
    monkeypatch.setattr(frontier.Grid, "base", lambda self: tiny_backbone)
    monkeypatch.setitem(frontier.TASKS, "test", ["stsb"])  # SciFact's 5,183 documents are the benchmark's, not CI's
    frontier.score_method(None, ["untrained", "untrained_pca"], 42, ["test"], set(), grid)

    raw = json.loads((tmp_path / "res" / "test" / "untrained" / "seed0.json").read_text())
    assert raw["provenance"]["backbone"] == "tiny" and raw["results"]["layers"] == [1, 2]
    # The cache holds the model's own pooled vectors at the grid's exits (one encoding serves every row and split) ...
    cached = load_file(str(tmp_path / "c" / "untrained_seed0.safetensors"))
    assert set(cached) == {"L1", "L2"}
    texts = json.loads((tmp_path / "c" / "untrained_seed0.json").read_text())[:40]
    model, tokenizer = frontier.load_model(tiny_backbone)
    model.config.normalize = False
    direct = model.encode_layers(texts, tokenizer, [1, 2], dimension=64, batch_size=16)
    for layer in (1, 2):
        assert np.allclose(cached[f"L{layer}"][:40], direct[layer].numpy(), atol=1e-5)
    # ... and scores what evaluating the model directly scores (a random tiny model: its cosines are so close that
    # float noise between batchings moves the Spearman by up to ~0.06; mixing up texts or exits moves it by points).
    model.config.normalize = True
    scored = evaluate_grid(model, tokenizer, ["stsb"], layers=[1, 2], split="test", precisions=["float32"])
    for layer in (1, 2):
        for dim in (64, 8):
            assert main_score(raw["results"], "stsb", layer, dim) == pytest.approx(
                main_score(scored, "stsb", layer, dim), abs=0.1
            )
    rotated = json.loads((tmp_path / "res" / "test" / "untrained_pca" / "seed0.json").read_text())
    assert main_score(rotated["results"], "stsb", 2, 8) != main_score(raw["results"], "stsb", 2, 8)

    capsys.readouterr()
    frontier.score_method(None, ["untrained", "untrained_pca"], 42, ["test"], set(), grid)  # nothing is scored twice
    assert "skip ['untrained', 'untrained_pca'] seed 42: scored" in capsys.readouterr().out


def test_the_mpnet_grid_scores_quality_py_rows_at_a_quarter_of_its_depth(frontier) -> None:
    mpnet = frontier.GRIDS["mpnet"]
    assert mpnet.layers == [3, 6, 9, 12] and mpnet.dims[0] == 768 and mpnet.dims[-1] == 8
    assert frontier.run_dir("t_final", 42, mpnet) == BENCHMARKS / "runs" / "mpnet" / "test" / "t_final" / "seed42"
    assert frontier.model_path("st_matryoshka", 43, mpnet).name == "model"  # sentence-transformers peers save there
    assert frontier.raw_file("test", "untrained", 42, mpnet) == mpnet.results / "test" / "untrained" / "seed0.json"
    assert mpnet.results != frontier.GRIDS["minilm"].results and mpnet.cache != frontier.GRIDS["minilm"].cache


def test_each_grid_is_the_shape_the_quality_benchmark_derives(frontier, minilm_path: str, tmp_path: Path) -> None:
    """The grids are written out so the report runs without the weights; ``quality_registry.shape`` owns the rule."""
    from transformers import AutoConfig

    AutoConfig.for_model("mpnet", hidden_size=768, num_hidden_layers=12).save_pretrained(tmp_path)
    for name, path in (("minilm", minilm_path), ("mpnet", str(tmp_path))):
        dims, layers = frontier.quality.shape(path)
        assert (frontier.GRIDS[name].dims, frontier.GRIDS[name].layers) == (dims[::-1], layers)
