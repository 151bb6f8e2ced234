"""Export: a run folder becomes a folder that loads in transformers and sentence-transformers, with its card."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ARCHS, markdown_rows, tiny_config
from huggingface_hub import ModelCard
from test_hub_format import _fresh_env, load_in_fresh_process
from test_trainer import WORDS
from transformers import AutoModel, AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel
from mipic_hf.evaluation.frontier import target_line
from mipic_hf.hub.export import export_run, max_seq_length
from mipic_hf.hub.folders import ExportError
from mipic_hf.run import main

TEXTS = ["the cat sat on the mat", "a", "blue river under a big moon tonight", "hello there"]
BUDGETS = [(8, 1), (64, 2)]
LORA_ARCHS = {"xlm-roberta", "qwen3"}  # the big-backbone path; BERT trains fully


def _backbone(folder: Path, arch: str, tokenizer) -> str:
    config = tiny_config(arch, vocab_size=tokenizer.vocab_size)
    if arch == "xlm-roberta":
        config.pad_token_id = tokenizer.pad_token_id
    kwargs = {"add_pooling_layer": False} if arch != "qwen3" else {}
    AutoModel.from_config(config, **kwargs).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, minilm_path: str) -> dict[str, Path]:
    """One tiny 3-step run per architecture (LoRA for XLM-R and Qwen3), evaluated on 30 STS-B test pairs."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    root = tmp_path_factory.mktemp("export_runs")
    data = root / "train.txt"
    data.write_text("\n".join(" ".join(WORDS[i : i + 6]) for i in range(20)) + "\n")
    out = {}
    for arch in ARCHS:
        backbone = _backbone(root / f"{arch}-backbone", arch, tokenizer)
        args = [
            *("--backbone", backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", str(data)),
            *("--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3"),
            *("--eval_tasks", "stsb", "--eval_max_samples", "30", "--report_to", "none", "--save_strategy", "no"),
            *("--output_dir", str(root / arch), "--use_cpu", "true", "--license", "apache-2.0"),
            *("--pooling", "last_token" if arch == "qwen3" else "mean"),
        ]
        if arch in LORA_ARCHS:
            args += ["--use_lora", "true", "--lora_r", "4", "--lora_alpha", "8"]
        assert main(args) == 0, arch
        out[arch] = root / arch
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_export_loads_in_a_fresh_process(arch: str, runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs[arch]
    export = run / "export"
    files = {p.relative_to(export).as_posix() for p in export.rglob("*") if p.is_file()}
    expected = {
        "config.json",
        "model.safetensors",
        "configuration_mipic.py",
        "modeling_mipic.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "README.md",
        "mipic_recipe.yaml",
        "eval/eval_results.json",
        "eval/eval_results.md",
        "eval/stsb_score_vs_dim.png",
        "eval/stsb_heatmap.png",
    }
    assert expected <= files, sorted(expected - files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    assert not any(p.name.startswith(".") for p in run.iterdir()), "no partial export left behind"

    config = json.loads((export / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_mipic.MatryoshkaModel"
    assert config["is_matryoshka"] and config["matryoshka_dimensions"] == [8, 16, 64]
    assert config["matryoshka_layers"] == [1, 2] and config["adapter"] is None
    summary = config["mipic_training"]
    assert summary["method"] == "mipic" and summary["preset"] == "default" and summary["steps"] == 3
    assert summary["pic_ladder"][-1] == [64, 2] and 0 < summary["alpha"] < 1
    assert summary["terms"] == {"sia": False, "pic": False, "rung": True}  # the default preset
    assert ("lora" in summary) == (arch in LORA_ARCHS)
    recipe = yaml.safe_load((export / "mipic_recipe.yaml").read_text())
    assert recipe["loss"]["method"] == "mipic" and recipe["training"]["max_steps"] == 3

    merged = MatryoshkaModel.from_pretrained(run).eval()
    tokenizer = AutoTokenizer.from_pretrained(run)
    result = load_in_fresh_process(export, TEXTS, BUDGETS, cwd=tmp_path)
    assert result["class"].startswith("transformers_modules.")
    for dim, layer in BUDGETS:
        ours = merged.encode(TEXTS, tokenizer, dimension=dim, layer=layer)
        np.testing.assert_allclose(np.array(result["embeddings"][f"{dim},{layer}"]), ours, atol=1e-5)


def test_card_renders_and_parses(runs: dict[str, Path]) -> None:
    export = runs["bert"] / "export"
    text = (export / "README.md").read_text()
    assert "{{" not in text and "{%" not in text
    card = ModelCard.load(export / "README.md")
    data = card.data
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert {"mipic", "matryoshka", "sentence-similarity", "feature-extraction"} <= set(data.tags)
    assert data.license == "apache-2.0" and data.datasets is None  # a local training file names no Hub dataset
    results = json.loads((export / "eval" / "eval_results.json").read_text())
    index = data.eval_results
    assert len(index) == len(results["tasks"]) * len(results["dims"]) == 3
    for entry, dim in zip(index, results["dims"], strict=True):
        assert entry.metric_args == {"dimension": dim, "layer": 2}
        assert entry.dataset_type == "sentence-transformers/stsb" and entry.dataset_split == "test"
        assert entry.metric_value == pytest.approx(
            results["tasks"]["stsb"]["scores"]["L2"][f"D{dim}"]["spearman"], abs=0.01
        )
    body = card.text
    for needle in (
        "trust_remote_code=True",
        "dimension=64, layer=",
        "truncate_dim=64",
        "eval/stsb_score_vs_dim.png",
        "```yaml",
        "- transformers: ",
        "arXiv:2604.24374",
    ):
        assert needle in body, needle
    grids = [row[1:] for row in markdown_rows(body) if row[0] == "L2"]  # the card's grid tables, float32 first
    for grid, precision in zip(grids, ["float32", "int8", "binary"], strict=True):
        table = results["tasks"]["stsb"]["scores" if precision == "float32" else "quantized"]
        table = table if precision == "float32" else table[precision]
        assert grid == [f"{table['L2'][f'D{d}']['spearman']:.2f}" for d in results["dims"]], precision
    assert results["precisions"] == ["float32", "int8", "binary", "binary_rescore"]  # rescoring: retrieval only
    assert "stsb: quality per byte" in body and target_line(results, "stsb", 0.99) in body
    assert 'precision="int8"' in body and "eval/stsb_frontier.png" in body  # the run calibrated int8 ranges
    assert f'AutoModel.from_pretrained("{export}"' in body  # no repo id yet: the snippet loads the folder


@pytest.mark.parametrize("dim", [8, 16])
def test_sentence_transformers_returns_the_same_vectors(dim: int, runs: dict[str, Path]) -> None:
    from sentence_transformers import SentenceTransformer

    export = runs["bert"] / "export"
    ours = MatryoshkaModel.from_pretrained(export).eval().encode(TEXTS, dimension=dim)
    st = SentenceTransformer(str(export), trust_remote_code=True, truncate_dim=dim)
    np.testing.assert_allclose(st.encode(TEXTS, normalize_embeddings=True), ours, atol=1e-5)
    plain = st.encode(TEXTS)  # Normalize runs before truncation: same direction, not unit length
    cosine = (plain * ours).sum(1) / np.linalg.norm(plain, axis=1)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
    full = SentenceTransformer(str(export), trust_remote_code=True)
    np.testing.assert_allclose(full.encode(TEXTS), MatryoshkaModel.from_pretrained(export).encode(TEXTS), atol=1e-5)


def test_adapter_only_export_reloads(runs: dict[str, Path], tmp_path: Path) -> None:
    run = runs["xlm-roberta"]
    out = tmp_path / "adapter-export"
    assert (
        subprocess.run(
            [sys.executable, "-m", "mipic_hf.export", str(run), str(out), "--adapter_only"],
            env=_fresh_env(),
            capture_output=True,
            timeout=300,
        ).returncode
        == 0
    )
    assert not (out / "model.safetensors").exists()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["adapter"]["base_model"] == str(run.parent / "xlm-roberta-backbone")
    assert "adapter only" in (out / "README.md").read_text()

    merged = MatryoshkaModel.from_pretrained(run).eval()
    reloaded = MatryoshkaModel.from_pretrained(out).eval()
    assert hasattr(reloaded.backbone, "peft_config")
    result = load_in_fresh_process(out, TEXTS, BUDGETS, cwd=tmp_path)
    for dim, layer in BUDGETS:
        expected = merged.encode(TEXTS, dimension=dim, layer=layer)
        np.testing.assert_allclose(reloaded.encode(TEXTS, dimension=dim, layer=layer), expected, atol=1e-4)
        np.testing.assert_allclose(np.array(result["embeddings"][f"{dim},{layer}"]), expected, atol=1e-4)


def test_bad_exports_fail_before_writing(runs: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ExportError, match="has no config.json"):
        export_run(tmp_path / "nothing", tmp_path / "o1")
    with pytest.raises(ExportError, match="has no adapter/"):
        export_run(runs["bert"], tmp_path / "o2", adapter_only=True)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match="exists and is not empty; pass --overwrite"):
        export_run(runs["bert"], taken)
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]

    # A failure half-way leaves neither the output nor a partial folder behind, and keeps the old folder.
    import mipic_hf.hub.export as export_module

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "render_card", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(runs["bert"], tmp_path / "o3")
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(runs["bert"], taken, overwrite=True)
    assert not (tmp_path / "o3").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert [p.name for p in taken.iterdir()] == ["mine.txt"]

    proc = subprocess.run(
        [sys.executable, "-m", "mipic_hf.export", str(tmp_path / "nothing"), str(tmp_path / "o4")],
        env=_fresh_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "error: RUN_DIR" in proc.stderr
    assert not (tmp_path / "o4").exists()


@pytest.mark.parametrize(
    ("arch", "own", "tokenizer_limit", "expected"),
    [
        ("xlm-roberta", None, 512, 130),  # the tiny config's 130 positions bound it
        ("qwen3", None, 100, 100),  # the tokenizer's limit is the smaller
        ("bert", None, int(1e30), 512),  # a tokenizer without a limit: BERT's 512 positions
        ("bert", 64, 512, 64),  # the model's own max_seq_length first
    ],
)
def test_sentence_bert_config_length_follows_sentence_transformers(arch, own, tokenizer_limit, expected) -> None:
    """sentence_bert_config.json's max_seq_length: the model's own, else min(max_position_embeddings, the
    tokenizer's model_max_length), as sentence-transformers derives it (no fixed fallback)."""
    config = MatryoshkaConfig(text_config=tiny_config(arch), max_seq_length=own)
    assert max_seq_length(config, tokenizer_limit) == expected
