"""The output adaptor: orthogonal, full width untouched, prefixes closer to the full width's neighbourhoods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaModel
from mipic_hf.training.adaptor import (
    AdaptorSettings,
    adaptor_loss,
    fit_adaptor,
    fit_output_adaptor,
    second_moment_rotation,
)


def _clustered(n: int = 400, d: int = 32, seed: int = 0) -> torch.Tensor:
    """Vectors whose neighbourhoods live in a few directions spread over every coordinate (so the identity's
    prefixes lose them)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(8, d, generator=g) * 3
    x = centres[torch.randint(0, 8, (n,), generator=g)] + torch.randn(n, d, generator=g)
    mix = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    return x @ mix


def test_second_moment_rotation_matches_numpy() -> None:
    x = _clustered()
    got = second_moment_rotation(x).numpy()
    values, vectors = np.linalg.eigh((x.double().T @ x.double() / len(x)).numpy())
    expected = vectors[:, ::-1]
    assert np.allclose(np.abs(got), np.abs(expected), atol=1e-8)  # each column up to its sign
    assert np.allclose(got.T @ got, np.eye(32), atol=1e-10)


def test_fit_adaptor_is_orthogonal_and_lowers_the_loss() -> None:
    x = _clustered()
    settings = AdaptorSettings(steps=60, batch_size=128, binary_dims=[16], seed=1)
    dims = [2, 4, 8]
    r0 = second_moment_rotation(x)
    r = fit_adaptor(x, settings, dims)
    assert torch.allclose(r.T @ r, torch.eye(32, dtype=torch.float64), atol=1e-10)
    z = x.float()
    before = adaptor_loss(z, z @ r0.float(), settings, dims)
    after = adaptor_loss(z, z @ r.float(), settings, dims)
    assert after < 0.9 * before  # the same batch (every row), the loss the adaptor optimises
    # orthogonal, no centring: the full width's cosines are unchanged
    unit = torch.nn.functional.normalize(z, dim=-1)
    rotated = torch.nn.functional.normalize(z @ r.float(), dim=-1)
    assert torch.allclose(unit @ unit.T, rotated @ rotated.T, atol=1e-5)


def test_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="adaptor init must be one of pca, identity"):
        AdaptorSettings(init="random")
    with pytest.raises(ValueError, match="adaptor temperature must be a finite number > 0"):
        AdaptorSettings(temperature=0)
    with pytest.raises(ValueError, match="adaptor steps must be an integer >= 0"):
        AdaptorSettings(steps=-1)
    with pytest.raises(ValueError, match=r"adaptor dims must lie in 1..32"):
        fit_adaptor(_clustered(), AdaptorSettings(steps=1), [64])


def test_fit_output_adaptor_keeps_the_full_width(tiny_backbone: str) -> None:
    model = MatryoshkaModel.from_backbone(tiny_backbone, matryoshka_dimensions=[8, 16, 64]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    texts = [
        f"text number {i} about {w}" for i, w in enumerate("cats dogs rain sun cars roads trees rivers".split() * 4)
    ]
    before = model.encode(texts, tokenizer)
    fit_output_adaptor(model, tokenizer, texts, AdaptorSettings(steps=5, batch_size=16))
    after = model.encode(texts, tokenizer)
    assert model.config.output_rotation is True and torch.count_nonzero(model.output_rotation.mean) == 0
    np.testing.assert_allclose(after @ after.T, before @ before.T, atol=1e-5)  # full-width cosines unchanged
    assert not np.allclose(after, before, atol=1e-3)  # the coordinates did move
