"""``config.full_width_codes: backbone``: a rotation orders the prefixes while the full width's int8 and binary codes
are the unrotated model's own, in encode, the calibration, the grid's views and a standard budget folder."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_quantization import TEXTS as SHARED_TEXTS
from test_quantization import st_quantize
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel
from mipic_hf.evaluation.precision import budget_view, calibration_ranges, coded_full, model_code_basis, searchable
from mipic_hf.training.calibration import fit_quantization_ranges

TEXTS = [*SHARED_TEXTS, "Rain is expected over the weekend.", "She plays the violin in an orchestra."]
HIDDEN = 64


@pytest.fixture(scope="module")
def pair(tiny_backbone: str) -> tuple[MatryoshkaModel, MatryoshkaModel, object]:
    """(the plain model, the same weights with a zero-mean rotation and backbone codes, the tokenizer), both
    calibrated on TEXTS."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    plain = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 16, 64]).eval()
    coded = copy.deepcopy(plain)
    matrix = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=torch.Generator().manual_seed(0)))[0]
    coded.set_output_rotation(torch.zeros(HIDDEN), matrix)
    coded.config.full_width_codes = "backbone"
    for model in (plain, coded):
        fit_quantization_ranges(model, tokenizer, TEXTS)
    return plain, coded, tokenizer


def test_the_config_refuses_an_unknown_basis() -> None:
    with pytest.raises(ValueError, match="full_width_codes must be one of rotated, backbone, got 'pca'"):
        MatryoshkaConfig(text_config={"model_type": "bert", "hidden_size": 64}, full_width_codes="pca")


def test_full_width_codes_are_the_unrotated_models_and_prefixes_stay_rotated(pair) -> None:
    plain, coded, tokenizer = pair
    layer = coded.config.default_layer or coded.num_layers
    np.testing.assert_allclose(
        coded.quantization_ranges(layer, HIDDEN).numpy(), plain.quantization_ranges(layer, HIDDEN).numpy(), atol=1e-5
    )
    for precision in ("binary", "ubinary", "int8"):
        ours = coded.encode(TEXTS, tokenizer, precision=precision).astype(int)
        theirs = plain.encode(TEXTS, tokenizer, precision=precision).astype(int)
        assert np.abs(ours - theirs).max() <= (1 if precision == "int8" else 0), precision  # int8: a bucket edge
    rotated = coded.encode(TEXTS, tokenizer, dimension=16)  # floats are the rotated output at every width
    expected = torch.nn.functional.normalize(
        (torch.from_numpy(plain.encode(TEXTS, tokenizer)) @ coded.output_rotation.matrix)[:, :16], dim=-1
    )
    np.testing.assert_allclose(rotated, expected.numpy(), atol=1e-5)
    ranges = coded.quantization_ranges(layer, 16).numpy()
    np.testing.assert_array_equal(
        coded.encode(TEXTS, tokenizer, dimension=16, precision="int8"), st_quantize(rotated, "int8", ranges=ranges)
    )
    rotated_codes = copy.deepcopy(coded)
    rotated_codes.config.full_width_codes = "rotated"
    assert rotated_codes.code_basis() is None and model_code_basis(rotated_codes) is None
    assert not np.array_equal(
        rotated_codes.encode(TEXTS, tokenizer, precision="binary"), coded.encode(TEXTS, tokenizer, precision="binary")
    )


def test_the_grids_views_take_the_same_basis(pair) -> None:
    plain, coded, tokenizer = pair
    basis = model_code_basis(coded)
    full = coded.encode(TEXTS, tokenizer)  # what the grid's encode_fn hands over: the rotated full width
    base = plain.encode(TEXTS, tokenizer)
    assert coded_full(full, 16, basis) is full  # prefixes: the rotated output itself
    found = calibration_ranges({6: full}, [16, HIDDEN], True, "coordinate", basis)
    reference = calibration_ranges({6: base}, [HIDDEN], True, "coordinate")
    np.testing.assert_allclose(found[(6, HIDDEN)], reference[(6, HIDDEN)], atol=1e-5)
    np.testing.assert_allclose(found[(6, 16)], calibration_ranges({6: full}, [16], True)[(6, 16)])
    view = budget_view(coded_full(full, HIDDEN, basis), HIDDEN, True)
    np.testing.assert_array_equal(searchable(view, "binary"), searchable(budget_view(base, HIDDEN, True), "binary"))


def test_a_full_width_budget_folder_serves_the_models_codes(pair, tmp_path) -> None:
    from sentence_transformers import SentenceTransformer

    from mipic_hf.hub.budget import Budget
    from mipic_hf.hub.standard import export_standard

    _, coded, tokenizer = pair
    run = tmp_path / "run"
    coded.save_pretrained(run)
    tokenizer.save_pretrained(run)
    assert json.loads((run / "config.json").read_text())["full_width_codes"] == "backbone"
    layer = coded.config.default_layer or coded.num_layers
    folder = export_standard(run, tmp_path / "std", [Budget(layer, HIDDEN)])[0]
    served = SentenceTransformer(str(folder)).encode(TEXTS)
    floats = coded.encode(TEXTS, tokenizer)
    np.testing.assert_allclose(served @ served.T, floats @ floats.T, atol=1e-5)  # the same cosines
    ranges = np.asarray(json.loads((folder / "quantization_ranges.json").read_text())["ranges"], dtype=np.float32)
    theirs = st_quantize(served, "int8", ranges=ranges).astype(int)
    assert np.abs(theirs - coded.encode(TEXTS, tokenizer, precision="int8").astype(int)).max() <= 1
    np.testing.assert_array_equal(st_quantize(served, "binary"), coded.encode(TEXTS, tokenizer, precision="binary"))


def test_the_full_width_onnx_graph_serves_the_backbones_coordinates(pair, tmp_path) -> None:
    from mipic_hf.hub.budget import Budget
    from mipic_hf.hub.onnx import _session, export_onnx, run_graph

    plain, coded, tokenizer = pair
    run = tmp_path / "run"
    coded.save_pretrained(run)
    tokenizer.save_pretrained(run)
    layer = coded.config.default_layer or coded.num_layers
    out = export_onnx(run, tmp_path / "onnx", [Budget(layer, HIDDEN), Budget(layer, 16)])
    index = {entry["dimension"]: entry for entry in json.loads((out / "budgets.json").read_text())["budgets"]}
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="np"))
    full = run_graph(_session(out / index[HIDDEN]["file"]), batch)
    np.testing.assert_allclose(full, plain.encode(TEXTS, tokenizer), atol=1e-5)  # the unrotated model's vectors
    prefix = run_graph(_session(out / index[16]["file"]), batch)
    np.testing.assert_allclose(prefix, coded.encode(TEXTS, tokenizer, dimension=16), atol=1e-5)  # rotated prefixes
