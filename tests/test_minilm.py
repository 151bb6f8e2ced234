"""The real all-MiniLM-L6-v2 checkpoint: from_backbone keeps its sentence-transformers embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mipic_hf import MatryoshkaModel

TEXTS = [
    "A man is playing a guitar.",
    "Two dogs run across a snowy field.",
    "The stock market fell sharply on Monday after the announcement.",
    "ok",
]


def test_from_backbone_keeps_the_sentence_transformers_embedding(minilm_path: str) -> None:
    from sentence_transformers import SentenceTransformer

    model = MatryoshkaModel.from_backbone(minilm_path, matryoshka_dimensions=[8, 16, 32, 64, 128, 256, 384])
    # Settings come from the folder's sentence-transformers modules.
    assert model.config.pooling == "mean"
    assert model.config.max_seq_length == 256
    assert getattr(model.backbone, "pooler", None) is None  # unused task pooler dropped

    reference = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS, convert_to_tensor=True)
    ours = model.encode(TEXTS, convert_to_tensor=True)  # tokenizer loaded from the backbone folder
    assert F.cosine_similarity(ours, reference).min() > 0.9999
    # Truncated prefixes are the renormalised first coordinates of the same vector.
    ours64 = model.encode(TEXTS, dimension=64, convert_to_tensor=True)
    torch.testing.assert_close(ours64, F.normalize(reference[:, :64], dim=-1), atol=1e-5, rtol=0)
    # An early exit gives a different (shallower) embedding of the right width.
    shallow = model.encode(TEXTS, dimension=32, layer=2, convert_to_tensor=True)
    assert shallow.shape == (4, 32)
    assert F.cosine_similarity(shallow, F.normalize(reference[:, :32], dim=-1)).mean() < 0.99


def _st_folder(tmp_path, minilm_path: str, pooling_config: dict) -> str:
    """A copy of the MiniLM folder whose Pooling module config is replaced."""
    import json
    import shutil

    folder = tmp_path / "st"
    shutil.copytree(minilm_path, folder)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_config))
    return str(folder)


def test_pooling_read_from_both_sentence_transformers_formats(tmp_path, minilm_path: str) -> None:
    import pytest

    new_format = _st_folder(tmp_path, minilm_path, {"embedding_dimension": 384, "pooling_mode": "cls"})
    assert MatryoshkaModel.from_backbone(new_format).config.pooling == "cls"
    old_format = _st_folder(tmp_path / "b", minilm_path, {"pooling_mode_lasttoken": True})
    assert MatryoshkaModel.from_backbone(old_format).config.pooling == "last_token"
    max_pool = _st_folder(tmp_path / "c", minilm_path, {"pooling_mode": "max"})
    with pytest.raises(ValueError, match="pools with 'max'"):
        MatryoshkaModel.from_backbone(max_pool)
    assert MatryoshkaModel.from_backbone(max_pool, pooling="mean").config.pooling == "mean"
