"""ONNX export: one graph per (exit layer, dimension), equal to MatryoshkaModel.encode, stopping at the exit layer."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ARCHS
from test_export import _backbone
from test_hub_format import _fresh_env
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaModel
from mipic_hf.cli.export_onnx import main
from mipic_hf.data import load_benchmark
from mipic_hf.hub.card import render_card
from mipic_hf.hub.onnx import _session, export_onnx, parse_budgets, run_graph
from mipic_hf.training.calibration import fit_quantization_ranges

# Lengths 1..16 words so every batch pads.
TEXTS = [
    "a",
    "the cat sat on the mat",
    "blue river under a big moon tonight, and then the long road home through the quiet hills again",
    "hello there",
    "one two three four five six seven",
]


def _ops(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def _batch(tokenizer, texts: list[str]) -> dict:
    return tokenizer(texts, padding=True, truncation=True, return_tensors="np")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, minilm_path: str) -> dict[str, Path]:
    """A 2-layer random MatryoshkaModel folder per architecture, trained budgets dims 8, 16, 64 x layers 1, 2."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    root = tmp_path_factory.mktemp("onnx_models")
    out = {}
    for arch in ARCHS:
        backbone = _backbone(root / f"{arch}-backbone", arch, tokenizer)
        model = MatryoshkaModel.from_backbone(
            backbone,
            matryoshka_dimensions=[8, 16, 64],
            matryoshka_layers=[1, 2],
            pooling="last_token" if arch == "qwen3" else "mean",
        )
        if arch == "bert":  # calibrated int8 ranges travel into budgets.json
            fit_quantization_ranges(model.eval(), tokenizer, TEXTS)
        model.save_pretrained(root / arch)
        tokenizer.save_pretrained(root / arch)
        out[arch] = root / arch
    return out


@pytest.fixture(scope="module")
def minilm_model(tmp_path_factory, minilm_path: str) -> Path:
    folder = tmp_path_factory.mktemp("onnx_minilm") / "model"
    MatryoshkaModel.from_backbone(minilm_path, matryoshka_layers=[2, 4, 6]).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_equals_encode_and_stops_at_the_exit(arch: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    folder = tiny_models[arch]
    out = export_onnx(folder, tmp_path / "onnx", parse_budgets([16, 64], [1, 2], None, None))
    index = json.loads((out / "budgets.json").read_text())
    assert [(e["layer"], e["dimension"]) for e in index["budgets"]] == [(1, 16), (1, 64), (2, 16), (2, 64)]
    model = MatryoshkaModel.from_pretrained(folder).eval()
    for side in ("right", "left"):
        tokenizer = AutoTokenizer.from_pretrained(out, padding_side=side)
        batch = _batch(tokenizer, TEXTS)
        assert (batch["attention_mask"] == 0).any()
        for entry in index["budgets"]:
            got = run_graph(_session(out / entry["file"]), batch)
            expected = model.encode(TEXTS, tokenizer, dimension=entry["dimension"], layer=entry["layer"])
            assert got.shape == (len(TEXTS), entry["dimension"])
            np.testing.assert_allclose(got, expected, atol=1e-4)
    for entry in index["budgets"]:
        if arch != "bert":
            assert entry["output_ranges"] is None
            continue
        stored = model.quantization_ranges(entry["layer"], entry["dimension"]).numpy()
        assert entry["output_ranges"]["precisions"] == ["int8", "uint8"]
        assert np.array_equal(np.asarray(entry["output_ranges"]["ranges"], dtype=np.float32), stored)  # exactly
    for entry in index["budgets"]:
        graph = onnx.load(str(out / entry["file"]))
        assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == entry["dimension"]
        assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask"]
        # One softmax per attention block: the graph runs exactly `layer` blocks.
        assert _ops(out / entry["file"])["Softmax"] == entry["layer"]
        names = " ".join(init.name for init in graph.graph.initializer)
        assert not re.search(rf"\blayers?\.{entry['layer']}\.", names)


def test_minilm_fp32_and_int8(minilm_model: Path, tmp_path: Path) -> None:
    out = export_onnx(
        minilm_model, tmp_path / "onnx", parse_budgets(None, None, ["6:384", "2:32"], None), quantize="int8"
    )
    index = json.loads((out / "budgets.json").read_text())
    assert [(e["file"], e["quantization"]) for e in index["budgets"]] == [
        ("model_L6_D384.onnx", None),
        ("model_L6_D384_int8.onnx", "int8"),
        ("model_L2_D32.onnx", None),
        ("model_L2_D32_int8.onnx", "int8"),
    ]
    texts = list(load_benchmark("stsb", split="validation")["sentence1"][:64])
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = _batch(tokenizer, texts)
    model = MatryoshkaModel.from_pretrained(minilm_model).eval()
    fp32 = {}
    for entry in index["budgets"]:
        got = run_graph(_session(out / entry["file"]), batch)
        layer, dim = entry["layer"], entry["dimension"]
        # BERT: one LayerNorm after the embeddings, two per block.
        assert _ops(out / entry["file"])["LayerNormalization"] == 1 + 2 * layer
        if entry["quantization"] is None:
            np.testing.assert_allclose(got, model.encode(texts, tokenizer, dimension=dim, layer=layer), atol=1e-4)
            fp32[layer] = got
        else:
            cosine = (got * fp32[layer]).sum(-1) / np.linalg.norm(got, axis=-1)
            # Mean over 64 sentences > 0.99 at every budget, worst sentence > 0.98. With onnxruntime 1.32 the
            # full width's worst sentence is 0.988 (mean 0.993); a 32-d prefix of layer 2 (untrained MiniLM)
            # was 0.988 (mean 0.996) with every quantization setting tried.
            assert cosine.mean() > 0.99 and cosine.min() > 0.98, (entry["file"], cosine)
            assert entry["size_mb"] < 0.4 * index["budgets"][0]["size_mb"]


def test_card_section_and_snippet_run(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Into MODEL_DIR/onnx: the export folder's card gains the ONNX section; the README snippet runs as printed."""
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(tiny_models["bert"], folder)
    render_card(folder, license="mit").save(folder / "README.md")
    assert "ONNX" not in (folder / "README.md").read_text()
    assert main([str(folder), str(folder / "onnx"), "--dimension", "16", "--layer", "1"]) == 0
    card = (folder / "README.md").read_text()
    assert "### ONNX Runtime" in card and "`onnx/model_L1_D16.onnx`" in card and "license: mit" in card
    hub_card = str(render_card(folder, repo_id="org/name"))  # as publish renders it for the repo
    assert 'hf_hub_download("org/name", "onnx/model_L1_D16.onnx")' in hub_card
    assert 'AutoTokenizer.from_pretrained("org/name", subfolder="onnx")' in hub_card
    readme = (folder / "onnx" / "README.md").read_text()
    snippet = readme.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, env=_fresh_env(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("(2, 16)")
    # The model holds int8 ranges: the card's second snippet turns the graph's output into encode's int8 codes.
    second = readme.split("```python\n")[2].split("```", 1)[0]
    check = "\nprint(codes.tolist())\n"
    result = subprocess.run(
        [sys.executable, "-c", snippet + second + check], capture_output=True, text=True, env=_fresh_env(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    model = MatryoshkaModel.from_pretrained(folder)
    sentences = ["A fox naps under the old oak.", "The oak shades a sleeping fox."]
    ours = model.encode(sentences, AutoTokenizer.from_pretrained(folder), dimension=16, layer=1, precision="int8")
    got = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    assert np.abs(got - ours.astype(int)).max() <= 1 and (got == ours).mean() > 0.9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dimension", "32"], "budget 2:32: dimension 32 is not a trained dimension; allowed: 8, 16, 64"),
        (["--layer", "3"], "budget 3:64: layer 3 is not a trained exit layer; allowed: 1, 2 (the backbone has 2 "),
        (["--budgets", "2-64"], "--budgets: expected LAYER:DIM such as 4:64 (positive integers), got '2-64'"),
        (["--budgets", "1:8", "--layer", "1"], "pass either --budgets or --dimension/--layer, not both"),
        (["--quantize", "fp16"], "argument --quantize: invalid choice: 'fp16' (choose from "),  # then int8
        (["--opset", "9"], "--opset must lie in 18.."),
        (["--layer", "two"], "argument --layer: invalid int value: 'two'"),
    ],
)
def test_bad_requests_fail_in_one_line(
    args: list[str], message: str, tiny_models: dict[str, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "onnx"
    assert main([str(tiny_models["bert"]), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {message}"), err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_not_a_model_folder_and_existing_output(tiny_models: dict[str, Path], tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), str(tmp_path / "onnx")]) == 2
    assert "is not a MatryoshkaModel folder" in capsys.readouterr().err
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("user data")
    assert main([str(tiny_models["bert"]), str(kept)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]
