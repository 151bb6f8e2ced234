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
