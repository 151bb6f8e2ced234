"""linear_cka: invariances, a slow reference with explicit centring matrices, masking, finite gradients."""

from __future__ import annotations

import pytest
import torch

from mipic_hf.losses.cka import linear_cka


def slow_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """CKA of one sentence's kept rows (k x d1), (k x d2) with H = I - 11^T / k, in float64."""
    x, y = x.double(), y.double()
    k = x.shape[0]
    h = torch.eye(k, dtype=torch.float64) - torch.ones(k, k, dtype=torch.float64) / k
    xc, yc = h @ x, h @ y
    num = (yc.T @ xc).norm() ** 2
    den = (xc.T @ xc).norm() * (yc.T @ yc).norm()
    return float(num / den)


def random_mask(b: int, m: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, m + 1, (b,), generator=g)
    return torch.arange(m)[None, :] < lengths[:, None]


def test_identical_inputs_give_one() -> None:
    x = torch.randn(4, 10, 16)
    torch.testing.assert_close(linear_cka(x, x), torch.ones(4), atol=1e-5, rtol=0)


def test_invariant_to_rotation_and_isotropic_scaling() -> None:
    x, y = torch.randn(3, 12, 8), torch.randn(3, 12, 20)
    mask = random_mask(3, 12, 0)
    base = linear_cka(x, y, mask)
    q1, _ = torch.linalg.qr(torch.randn(8, 8))
    q2, _ = torch.linalg.qr(torch.randn(20, 20))
    torch.testing.assert_close(linear_cka(x @ q1, y, mask), base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(linear_cka(x, y @ q2, mask), base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(linear_cka(3.7 * x, y, mask), base, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(linear_cka(x, 0.01 * y, mask), base, atol=1e-5, rtol=1e-4)
    # A non-isotropic scaling does change it.
    assert not torch.allclose(linear_cka(x * torch.linspace(0.1, 5, 8), y, mask), base, atol=1e-3)


def test_equals_slow_reference_on_random_data() -> None:
    x, y = torch.randn(5, 9, 6), torch.randn(5, 9, 11) + 2.0
    y[:, :, :6] += 0.7 * x  # make them related
    mask = random_mask(5, 9, 1)
    fast = linear_cka(x, y, mask)
    for b in range(5):
        keep = mask[b]
        assert fast[b].item() == pytest.approx(slow_cka(x[b, keep], y[b, keep]), rel=1e-4)


def test_masked_tokens_have_no_effect() -> None:
    x, y = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    mask = random_mask(2, 10, 2)
    mask[:, 0] = True
    mask[:, -1] = False
    noisy_x, noisy_y = x.clone(), y.clone()
    noisy_x[~mask] = 1e3 * torch.randn_like(noisy_x[~mask])
    noisy_y[~mask] = -7.0
    torch.testing.assert_close(linear_cka(noisy_x, noisy_y, mask), linear_cka(x, y, mask))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_finite_gradients_for_few_tokens(k: int) -> None:
    x = torch.randn(2, 6, 4, requires_grad=True)
    y = torch.randn(2, 6, 5, requires_grad=True)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, :k] = True
    value = linear_cka(x, y, mask)
    assert torch.isfinite(value).all()
    value.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_finite_gradients_for_constant_inputs() -> None:
    x = torch.ones(2, 6, 4, requires_grad=True)
    y = torch.randn(2, 6, 5, requires_grad=True)
    value = linear_cka(x, y)
    torch.testing.assert_close(value, torch.zeros(2))
    value.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


def test_float32_under_bf16_autocast() -> None:
    x, y = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    exact = linear_cka(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = linear_cka(x.bfloat16().float(), y.bfloat16().float())
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, exact, atol=2e-2, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = linear_cka(x, y)
    torch.testing.assert_close(same, exact, atol=1e-6, rtol=1e-5)
