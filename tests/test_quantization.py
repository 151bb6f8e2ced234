"""The precision axis: quantizers equal to sentence-transformers', encode(precision=), calibrated int8 ranges saved,
loaded and exported exactly (checkpoint, export folder, standard folder, ONNX index)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaModel
from mipic_hf.evaluation.precision import budget_view, calibration_ranges, code_agreement
from mipic_hf.modeling_mipic import PRECISIONS, precision_bytes, quantize_embeddings
from mipic_hf.training.calibration import fit_quantization_ranges

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from sentence_transformers.quantization import quantize_embeddings as st_quantize

TEXTS = [
    "A fox naps under the old oak.",
    "The oak shades a sleeping fox.",
    "Quarterly revenue rose by four percent.",
    "Where is the nearest train station?",
    "Two children build a sandcastle on the beach.",
    "The committee postponed its vote.",
]


@pytest.mark.parametrize("dim", [8, 13, 64])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_quantizer_equals_sentence_transformers(precision: str, dim: int) -> None:
    """Same codes and dtype as sentence-transformers' quantize_embeddings given the same ranges, including values
    outside the ranges (both saturate), constant coordinates (step 0) and d not a multiple of 8."""
    rng = np.random.default_rng(dim)
    calibration = rng.normal(size=(50, dim)).astype(np.float32)
    ranges = np.stack([calibration.min(0), calibration.max(0)])
    ranges[:, 0] = 0.25  # a constant coordinate: step 0 is taken as 1
    embeddings = (rng.normal(size=(20, dim)) * 1.5).astype(np.float32)  # some values outside the ranges
    ours = quantize_embeddings(torch.from_numpy(embeddings), precision, torch.from_numpy(ranges)).numpy()
    theirs = st_quantize(embeddings, precision, ranges=ranges)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)
    assert ours.shape[1] * ours.itemsize == precision_bytes(dim, precision)


def test_quantizer_refuses_missing_or_misshapen_ranges() -> None:
    x = torch.randn(3, 8)
    with pytest.raises(ValueError, match="needs calibrated ranges"):
        quantize_embeddings(x, "int8")
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 8\)"):
        quantize_embeddings(x, "uint8", torch.zeros(2, 4))
    with pytest.raises(ValueError, match="precision must be one of float32, int8, uint8, binary, ubinary"):
        quantize_embeddings(x, "int4")


@pytest.fixture(scope="module")
def calibrated(tiny_backbone: str) -> tuple[MatryoshkaModel, object]:
    model = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 16, 64], matryoshka_layers=[1, 2])
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    fit_quantization_ranges(model.eval(), tokenizer, TEXTS)
    return model, tokenizer


def test_ranges_are_the_min_and_max_of_each_budget(calibrated) -> None:
    model, tokenizer = calibrated
    assert model.config.quantization_ranges is True
    for layer in (1, 2):
        for dim in (8, 16, 64):
            vectors = model.encode(TEXTS, tokenizer, dimension=dim, layer=layer)
            expected = np.stack([vectors.min(0), vectors.max(0)])
            np.testing.assert_allclose(model.quantization_ranges(layer, dim).numpy(), expected, atol=1e-6)


def test_encode_precision_uses_the_stored_ranges(calibrated) -> None:
    model, tokenizer = calibrated
    floats = model.encode(TEXTS[:3], tokenizer, dimension=16, layer=1)
    ranges = model.quantization_ranges(1, 16).numpy()
    for precision in PRECISIONS:
        codes = model.encode(TEXTS[:3], tokenizer, dimension=16, layer=1, precision=precision)
        np.testing.assert_array_equal(codes, st_quantize(floats, precision, ranges=ranges))
    single = model.encode(TEXTS[0], tokenizer, dimension=16, layer=1, precision="binary")
    assert single.shape == (2,) and single.dtype == np.int8


def test_encode_int8_without_ranges_fails_before_encoding(tiny_backbone: str) -> None:
    model = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 64])
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    with pytest.raises(ValueError, match=r"holds no int8/uint8 ranges .* pass ranges="):
        model.encode(TEXTS, tokenizer, dimension=8, precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        model.encode(TEXTS, tokenizer, precision="fp8")
    explicit = model.encode(TEXTS[:2], tokenizer, dimension=8, precision="int8", ranges=np.ones((2, 8)) * [[-1], [1]])
    assert explicit.dtype == np.int8


def test_ranges_of_an_untrained_budget_are_refused(calibrated) -> None:
    model, tokenizer = calibrated
    with pytest.raises(ValueError, match=r"calibrated at layers \[1, 2\] x dims \[8, 16, 64\], not at \(layer 1, "):
        model.encode(TEXTS, tokenizer, dimension=12, layer=1, precision="int8")


def test_ranges_saved_loaded_and_exported_exactly(calibrated, tmp_path) -> None:
    from mipic_hf.hub.budget import Budget, ranges_record
    from mipic_hf.hub.export import export_run
    from mipic_hf.hub.standard import export_standard

    model, tokenizer = calibrated
    run = tmp_path / "run"
    model.save_pretrained(run)
    tokenizer.save_pretrained(run)
    loaded = MatryoshkaModel.from_pretrained(run)
    assert torch.equal(loaded.quantization.ranges, model.quantization.ranges)
    export = export_run(run, tmp_path / "export")
    again = MatryoshkaModel.from_pretrained(export)
    assert again.config.quantization_ranges is True
    assert torch.equal(again.quantization.ranges, model.quantization.ranges)
    folder = export_standard(run, tmp_path / "std", [Budget(1, 16)])[0]
    stored = json.loads((folder / "quantization_ranges.json").read_text())
    assert stored == ranges_record(model, Budget(1, 16))
    assert np.array_equal(np.asarray(stored["ranges"], dtype=np.float32), model.quantization_ranges(1, 16).numpy())
    assert json.loads((folder / "config.json").read_text())["mipic_budget"]["int8_ranges"] == "quantization_ranges.json"
    assert "quantization_ranges.json" in (folder / "README.md").read_text()  # the card shows how to use them

    # A stock client (sentence-transformers on the standard folder) + the stored ranges gives encode's int8 codes
    # (within one step where float rounding sits on a bucket's edge).
    from sentence_transformers import SentenceTransformer

    served = SentenceTransformer(str(folder)).encode(TEXTS)
    theirs = st_quantize(served, "int8", ranges=np.asarray(stored["ranges"], dtype=np.float32))
    ours = model.encode(TEXTS, tokenizer, dimension=16, layer=1, precision="int8")
    assert np.abs(theirs.astype(int) - ours.astype(int)).max() <= 1 and (theirs == ours).mean() > 0.95


def _two_sets() -> dict[str, np.ndarray]:
    """PCA-like coordinates whose scales fall 100x (shared ranges keep their relation), and even coordinates with
    one outlier value (a shared range would spend the 256 steps on it)."""
    rng = np.random.default_rng(0)
    outlier = rng.normal(size=(400, 32)) + 0.5
    outlier[0, 5] = 200.0
    return {"decay": rng.normal(size=(400, 32)) * np.logspace(0, -2, 32), "outlier": outlier}


def test_calibration_modes_against_numpy() -> None:
    """coordinate: each coordinate's min and max of the cut, normalised budget; shared: one min and max for the
    budget; auto: per budget, the one whose int8 cosines agree best with the floats' (shared on the decaying
    scales, coordinate with the outlier)."""
    for name, vectors in _two_sets().items():
        for dim in (8, 32):
            view = budget_view(vectors, dim, True)
            per = {m: calibration_ranges({6: vectors}, [dim], True, m)[(6, dim)] for m in ("coordinate", "shared")}
            np.testing.assert_array_equal(per["coordinate"], np.stack([view.min(0), view.max(0)]))
            np.testing.assert_array_equal(per["shared"], np.stack([np.full(dim, view.min()), np.full(dim, view.max())]))
            auto = calibration_ranges({6: vectors}, [dim], True, "auto")[(6, dim)]
            best = max(per, key=lambda m: code_agreement(view, per[m]))
            np.testing.assert_array_equal(auto, per[best])
        view = budget_view(vectors, 32, True)
        agreement = {m: code_agreement(view, calibration_ranges({6: vectors}, [32], True, m)[(6, 32)]) for m in per}
        assert max(agreement, key=agreement.get) == {"decay": "shared", "outlier": "coordinate"}[name], agreement
    with pytest.raises(ValueError, match="calibration mode must be one of coordinate, shared, auto, got 'pca'"):
        calibration_ranges({6: vectors}, [8], True, "pca")


def test_calibration_refuses_non_finite_embeddings(tiny_backbone: str) -> None:
    from mipic_hf.training.errors import NonFiniteLossError

    model = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 64], matryoshka_layers=[1, 2])
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    with torch.no_grad():
        model.backbone.encoder.layer[1].output.dense.weight.mul_(1e30)  # what a diverged step leaves: huge, finite
    with pytest.raises(NonFiniteLossError, match=r"embeddings are non-finite at exit layers \[2\]"):
        fit_quantization_ranges(model.eval(), tokenizer, TEXTS)
    assert model.quantization is None  # nothing stored
