"""A real embedding server (Infinity, from PyPI, in its own virtual environment) on a standard budget folder answers
what ``MatryoshkaModel.encode`` computes. The environment is built on first use (``.venv-infinity``); a machine that
cannot build it fails this test with the reason, it is never skipped."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from test_standard_export import TEXTS, trained_folder
from transformers import AutoTokenizer

from mipic_hf.hub.budget import Budget
from mipic_hf.hub.standard import export_standard

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "serving.py"
_spec = importlib.util.spec_from_file_location("serving_benchmark", SCRIPT)
serving = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(serving)


@pytest.fixture(scope="module")
def infinity() -> Path:
    try:
        return serving.infinity_venv()
    except serving.ServingError as err:
        pytest.fail(f"the serving test needs Infinity: {err}")


@pytest.mark.parametrize("arch", ["bert", "qwen3"])
def test_infinity_answers_encode_on_a_standard_folder(arch: str, infinity: Path, minilm_path: str, tmp_path: Path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    source, model = trained_folder(tmp_path, arch, tokenizer)  # rotated: the Dense module carries rotation + cut
    (folder,) = export_standard(source, tmp_path / "served", [Budget(2, 16)])
    with serving.serve(folder, command=infinity) as server:
        served = server.embed(TEXTS)
        prefix = server.embed(TEXTS, dimensions=8)
        process = server.process
    assert process.poll() is not None, "the server is stopped at the end"
    np.testing.assert_allclose(served, model.encode(TEXTS, tokenizer, dimension=16, layer=2), atol=1e-4)
    # Infinity's `dimensions` keeps a prefix of the served vector and does not normalise it again.
    np.testing.assert_allclose(prefix, served[:, :8], atol=1e-6)
    normalised = prefix / np.linalg.norm(prefix, axis=1, keepdims=True)
    np.testing.assert_allclose(normalised, model.encode(TEXTS, tokenizer, dimension=8, layer=2), atol=1e-4)


def test_the_serving_benchmark_writes_its_rows_and_reprints_them(infinity: Path, tiny_backbone: str, tmp_path: Path):
    from mipic_hf import MatryoshkaModel

    folder = tmp_path / "model"
    MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 16, 64]).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_backbone).save_pretrained(folder)
    out = tmp_path / "serving.json"
    args = ["--model", str(folder), "--budgets", "2:64", "1:16", "--max_pairs", "8", "--rounds", "1"]
    assert serving.main([*args, "--threads", "1", "--batch_size", "4", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert [(r["layer"], r["dim"]) for r in results["rows"]] == [(2, 64), (1, 16)]
    assert results["sentences"] == len(serving.stsb_sentences(8)) and results["infinity_version"] == "0.0.78"
    assert all(r["max_abs_diff"] < 1e-4 for r in results["rows"]), results["rows"]
