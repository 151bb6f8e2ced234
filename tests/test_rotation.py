"""The output rotation (centring + PCA of the pooled vector): the fit against a slow reference, the run switch
(fitted on training text only, before or after training), and exact save / load / export (transformers,
sentence-transformers, ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import WORDS
from transformers import AutoModel, AutoTokenizer

import mipic_hf.training.rotation as rotation
from mipic_hf import MatryoshkaModel
from mipic_hf.data import load_benchmark
from mipic_hf.modeling_mipic import pool
from mipic_hf.run import main

TEXTS = ["the cat sat on the mat", "a", "blue river under a big moon tonight", "hello there", "one two three"]


def reference_rotation(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow reference: power iteration with deflation on the covariance, one direction at a time."""
    mean = vectors.mean(0)
    cov = np.cov(vectors - mean, rowvar=False)
    columns = []
    rng = np.random.default_rng(0)
    for _ in range(cov.shape[0]):
        v = rng.normal(size=cov.shape[0])
        for _ in range(5000):
            v = cov @ v
            for u in columns:  # stay orthogonal to the directions found
                v -= (u @ v) * u
            v /= np.linalg.norm(v)
        columns.append(v * np.sign(v[np.argmax(np.abs(v))]))
    return mean, np.stack(columns, axis=1)


def test_principal_rotation_matches_reference() -> None:
    rng = np.random.default_rng(1)
    scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.25])  # well separated eigenvalues
    mixing = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    vectors = rng.normal(size=(400, 6)) * scales @ mixing.T + rng.normal(size=6)
    mean, matrix = rotation.principal_rotation(torch.from_numpy(vectors))
    ref_mean, ref_matrix = reference_rotation(vectors)
    np.testing.assert_allclose(mean.numpy(), ref_mean, atol=1e-12)
    np.testing.assert_allclose(matrix.numpy(), ref_matrix, atol=1e-6)
    np.testing.assert_allclose(matrix.T.numpy() @ matrix.numpy(), np.eye(6), atol=1e-12)
    rotated = (vectors - mean.numpy()) @ matrix.numpy()
    variances = rotated.var(0)
    assert list(variances) == sorted(variances, reverse=True)
    np.testing.assert_allclose(rotated.mean(0), 0.0, atol=1e-12)


def test_set_output_rotation_refuses_non_orthogonal(tiny_backbone: str) -> None:
    model = MatryoshkaModel.from_backbone(tiny_backbone, pooling="mean")
    with pytest.raises(ValueError, match="not orthogonal"):
        model.set_output_rotation(torch.zeros(64), torch.eye(64) * 2)
    assert model.output_rotation is None and model.config.output_rotation is False


def _rotated_by_hand(model: MatryoshkaModel, tokenizer, texts: list[str], dim: int, layer: int) -> np.ndarray:
    features = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**features, layer=layer).last_hidden_state
        pooled = pool(states, features["attention_mask"], model.config.pooling).double()
    rot = model.output_rotation
    out = ((pooled - rot.mean.double()) @ rot.matrix.double())[:, :dim]
    return torch.nn.functional.normalize(out, dim=-1).numpy()


@pytest.fixture(scope="module")
def rotated_runs(tmp_path_factory, tiny_backbone: str) -> dict[str, Path]:
    """A 3-step tiny run with the rotation fitted before training, one after; records every fitted text."""
    root = tmp_path_factory.mktemp("rotation_runs")
    data = root / "train.txt"
    data.write_text("\n".join(" ".join(WORDS[i : i + 6]) for i in range(20)) + "\n")
    seen: dict[str, list[str]] = {}
    original = rotation.pooled_vectors
    out = {}
    for when in ("before", "after"):

        def spy(model, tokenizer, texts, *args, _when=when, **kwargs):
            seen[_when] = list(texts)
            return original(model, tokenizer, texts, *args, **kwargs)

        rotation.pooled_vectors = spy
        try:
            args = [
                *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", str(data)),
                *("--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3"),
                *("--eval_tasks", "stsb", "--eval_max_samples", "20", "--report_to", "none"),
                *("--save_strategy", "no", "--output_dir", str(root / when), "--use_cpu", "true"),
                *("--pooling", "mean", "--fit_rotation", when, "--matryoshka_layers", "1", "2"),
            ]
            assert main(args) == 0
        finally:
            rotation.pooled_vectors = original
        out[when] = root / when
    out["seen"] = seen
    out["train"] = data
    return out


def test_rotation_is_fitted_on_training_text_only(rotated_runs: dict) -> None:
    train = set(rotated_runs["train"].read_text().split("\n")) - {""}
    stsb = load_benchmark("stsb", split="test")
    evaluation = set(stsb["sentence1"]) | set(stsb["sentence2"])
    for when in ("before", "after"):
        fitted = rotated_runs["seen"][when]
        assert sorted(fitted) == sorted(train)
        assert not set(fitted) & evaluation


def test_rotation_after_training_centres_the_trained_model(rotated_runs: dict) -> None:
    """Fitted after training: on the training texts the trained model's rotated vectors have zero mean and a
    diagonal covariance with decreasing variances (what a PCA of that very model gives)."""
    folder = rotated_runs["after"]
    model = MatryoshkaModel.from_pretrained(folder).eval()
    texts = rotated_runs["seen"]["after"]
    raw = rotation.pooled_vectors(model, AutoTokenizer.from_pretrained(folder), texts)
    rotated = model.rotate(raw.float()).double()
    np.testing.assert_allclose(rotated.mean(0).numpy(), 0.0, atol=1e-4)
    cov = np.cov(rotated.numpy(), rowvar=False)
    off_diagonal = cov - np.diag(np.diag(cov))
    assert np.abs(off_diagonal).max() < 1e-4 * np.abs(np.diag(cov)).max()
    variances = np.diag(cov)
    assert np.all(np.diff(variances) <= 1e-6 * variances[0])


@pytest.mark.parametrize("when", ["before", "after"])
def test_rotation_saved_loaded_and_applied_exactly(rotated_runs: dict, when: str) -> None:
    folder = rotated_runs[when]
    model = MatryoshkaModel.from_pretrained(folder).eval()
    assert model.config.output_rotation is True
    matrix = model.output_rotation.matrix.double()
    np.testing.assert_allclose((matrix.T @ matrix).numpy(), np.eye(64), atol=1e-5)
    assert not np.allclose(matrix.numpy(), np.eye(64), atol=1e-2)  # a real rotation, not the initial identity
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for dim, layer in [(8, 1), (16, 2), (64, 2)]:
        got = model.encode(TEXTS, tokenizer, dimension=dim, layer=layer)
        np.testing.assert_allclose(got, _rotated_by_hand(model, tokenizer, TEXTS, dim, layer), atol=1e-5)


def test_rotation_in_transformers_and_sentence_transformers_exports(rotated_runs: dict) -> None:
    from sentence_transformers import SentenceTransformer

    export = rotated_runs["before"] / "export"
    reference = MatryoshkaModel.from_pretrained(rotated_runs["before"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    remote = AutoModel.from_pretrained(export, trust_remote_code=True).eval()
    for dim in (8, 64):
        expected = reference.encode(TEXTS, tokenizer, dimension=dim)
        np.testing.assert_allclose(remote.encode(TEXTS, tokenizer, dimension=dim), expected, atol=1e-5)
        st = SentenceTransformer(str(export), trust_remote_code=True, truncate_dim=dim, device="cpu")
        assert [type(m).__name__ for m in st] == ["Transformer", "Pooling", "Dense", "Normalize"]
        np.testing.assert_allclose(st.encode(TEXTS, normalize_embeddings=True), expected, atol=1e-5)


def test_rotation_inside_the_onnx_graph(rotated_runs: dict, tmp_path: Path) -> None:
    from mipic_hf.hub.budget import Budget
    from mipic_hf.hub.onnx import _session, export_onnx, run_graph

    folder = rotated_runs["after"] / "export"
    out = export_onnx(folder, tmp_path / "onnx", [Budget(1, 8), Budget(2, 64)])
    model = MatryoshkaModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    for layer, dim in [(1, 8), (2, 64)]:
        got = run_graph(_session(out / f"model_L{layer}_D{dim}.onnx"), batch)
        np.testing.assert_allclose(got, model.encode(TEXTS, tokenizer, dimension=dim, layer=layer), atol=1e-5)


def test_bad_rotation_switch_is_one_line_before_any_work(tmp_path: Path, tiny_backbone: str, capsys) -> None:
    out = tmp_path / "run"
    args = ["--backbone", tiny_backbone, "--train_data", "stsb", "--output_dir", str(out), "--dry_run"]
    assert main([*args, "--fit_rotation", "sometimes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: model.fit_rotation must be one of auto, none, before, after, adaptor, got 'sometimes'"]
    assert main([*args, "--fit_rotation", "before", "--adapter_only", "true", "--use_lora", "true"]) == 2
    assert "export.adapter_only cannot carry model.fit_rotation" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "applied"),
    [
        ([], "before"),  # auto: the rotation select_rotation picked on STS-B dev
        (["--use_lora", "true", "--adapter_only", "true"], "none"),  # an adapter cannot carry it
        (["--use_lora", "true"], "none"),  # LoRA: adapters are often exported alone later
        (["--use_lora", "true", "--fit_rotation", "before"], "before"),  # a merged LoRA model can carry it
        (["--fit_rotation", "after"], "after"),
        (["--fit_rotation", "none"], "none"),
    ],
)
def test_auto_rotation_resolves_in_the_plan(extra: list[str], applied: str, tmp_path: Path, tiny_backbone: str) -> None:
    from mipic_hf.recipe import parse_recipe
    from mipic_hf.recipe.plan import build_plan

    args = ["--backbone", tiny_backbone, "--train_data", "stsb", "--output_dir", str(tmp_path / "o"), "--dry_run"]
    plan = build_plan(parse_recipe([*args, *extra]))
    assert plan.recipe.model.fit_rotation == applied
    assert f"output rotation {applied}" in plan.describe()


def test_the_run_scores_its_starting_checkpoint(rotated_runs: dict, tiny_backbone: str) -> None:
    """results["base"] is the backbone as loaded, before the rotation and training, scored on the same grid."""
    import json

    from mipic_hf.evaluation.grid import evaluate_grid

    results = json.loads((rotated_runs["before"] / "eval" / "eval_results.json").read_text())
    assert results["base"]["model"] == tiny_backbone
    start = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 16, 64], pooling="mean")
    start.config.matryoshka_layers = [1, 2]
    expected = evaluate_grid(start, AutoTokenizer.from_pretrained(tiny_backbone), ["stsb"], max_samples=20)
    got, want = results["base"]["tasks"]["stsb"]["scores"], expected["tasks"]["stsb"]["scores"]
    for layer in ("L1", "L2"):
        for dim in ("D8", "D16", "D64"):
            assert got[layer][dim]["spearman"] == pytest.approx(want[layer][dim]["spearman"], abs=1e-6)
    assert got != results["tasks"]["stsb"]["scores"]
