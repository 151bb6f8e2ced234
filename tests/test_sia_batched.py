"""SIA batched over layers (issue 16) against the per-layer loop it replaced: the same values and gradients.

``loop_sia`` / ``loop_layer_terms`` are the per-layer implementation of ``SIALoss.forward`` before the layers
were stacked, copied here verbatim (``self`` -> ``sia``) as the reference; they read only public attributes.

The one op that rounds differently is the lift P_{l,i} q: the loop ran one ``nn.Linear`` per (layer, prefix),
the batched code one matmul over all lifts, and a float32 GEMM's summation order depends on its shape (even
``F.linear`` with the same lifts concatenated differs in the last bit). So the equality tests use exact lifts
(signed permutations scaled by powers of two: every lifted coordinate is one exact product, in any order) and
must agree to 1e-6 (bitwise in practice); dense lifts agree to float32 rounding, amplified at tau_att 0.05.
"""

from __future__ import annotations

import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

import mipic_hf.losses.sia as sia_module
from mipic_hf.losses.base import NEG_INF, EncodedText
from mipic_hf.losses.cka import center_gram, cka_from_centered_grams
from mipic_hf.losses.sia import SIALoss, topk_token_masks
from mipic_hf.modeling_mipic import pool

D, NUM_LAYERS = 16, 4
LENGTHS, WIDTH = [11, 5, 16, 2, 9], 16  # padding in every sentence but one
TOL = {"rtol": 1e-6, "atol": 1e-6}


def _kl(log_p: torch.Tensor, log_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (log_p.exp() * (log_p - log_q) * mask).sum(-1)


def loop_sia(sia: SIALoss, encoded: EncodedText) -> dict[str, torch.Tensor]:
    """The per-layer ``SIALoss.forward`` (one checkpointed ``loop_layer_terms`` per SIA layer)."""
    mask = encoded.token_mask
    att_terms, cka_terms = [], []
    with torch.autocast(device_type=mask.device.type, enabled=False):
        for layer in sia.layers:
            states, query = encoded.states(layer), encoded.pooled(layer)
            if torch.is_grad_enabled() and states.requires_grad:
                att, cka = checkpoint(loop_layer_terms, sia, layer, states, query, mask, use_reentrant=False)
            else:
                att, cka = loop_layer_terms(sia, layer, states, query, mask)
            att_terms.append(att)
            cka_terms.append(cka)
    att_all, cka_all = torch.cat(att_terms), torch.cat(cka_terms)
    if sia.aggregation == "sum":
        att_total, cka_total = att_all.sum(), cka_all.sum()
    else:
        att_total, cka_total = att_all.mean(), cka_all.mean()
    return {"sia_att": sia.attention_weight * att_total, "sia_cka": sia.cka_weight * cka_total}


def loop_layer_terms(
    sia: SIALoss, layer: int, states: torch.Tensor, query: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_att and L_cka (each a mean over sentences) of every prefix at one layer: two (P,) tensors."""
    h = states.float()
    q = query.float()
    h_teacher = h.detach() if sia.detach_sia_teacher else h
    q_teacher = q.detach() if sia.detach_sia_teacher else q
    scale = math.sqrt(sia.hidden_size) * sia.attention_temperature
    fmask = mask.to(h.dtype)

    teacher_scores = torch.einsum("bd,bmd->bm", q_teacher, h_teacher) / scale
    log_teacher = F.log_softmax(teacher_scores.masked_fill(~mask, NEG_INF), dim=-1)
    if sia.topk_rank == "teacher":
        keep = topk_token_masks(teacher_scores, mask, sia.keep_rule, sia.k_min)  # (P, B, m), nested sets
    lifted = torch.stack(
        [F.pad(sia.lifts[sia.lift_key(layer, d)](q_teacher), (0, sia.hidden_size - d)) for d in sia.prefix_dims]
    )  # (P, B, D)
    student_scores = torch.einsum("pbd,bmd->pbm", lifted, h) / scale
    log_student = F.log_softmax(student_scores.masked_fill(~mask, NEG_INF), dim=-1)
    if sia.topk_rank == "lifted":
        keep = torch.stack(
            [topk_token_masks(student_scores[i], mask, [g], sia.k_min)[0] for i, g in enumerate(sia.keep_rule)]
        )
    if sia.kl_direction == "student_teacher":
        kl = _kl(log_student, log_teacher.expand_as(log_student), fmask)
    else:
        kl = _kl(log_teacher.expand_as(log_student), log_student, fmask)
    att = kl.mean(-1)  # (P,)

    sizes = [b - a for a, b in zip([0, *sia.prefix_dims], [*sia.prefix_dims, sia.hidden_size], strict=True)]
    blocks = h.split(sizes, dim=-1)
    grams = []
    for block in blocks[:-1]:
        block_gram = block @ block.transpose(-1, -2)
        grams.append(block_gram if not grams else grams[-1] + block_gram)
    student = center_gram(torch.stack(grams), keep)  # (P, B, m, m)
    rest = h_teacher.split(sizes, dim=-1)[-1]
    base = grams[-1].detach() if sia.detach_sia_teacher else grams[-1]
    teacher = center_gram((base + rest @ rest.transpose(-1, -2)).expand_as(student), keep)
    cka = (1.0 - cka_from_centered_grams(student, teacher)).mean(-1)  # (P,)
    return att, cka


def random_encoded(
    lengths: list[int] = LENGTHS, width: int = WIDTH, seed: int = 0, dtype: torch.dtype = torch.float32
) -> EncodedText:
    """hidden_states 0..NUM_LAYERS of shape (B, width, D), requiring grad; padding holds large garbage."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    states = []
    for _ in range(NUM_LAYERS + 1):
        h = torch.randn(len(lengths), width, D, generator=g) * 2 + 0.5
        h = torch.where(mask[..., None].bool(), h, 100 * torch.randn(h.shape, generator=g))
        states.append(h.to(dtype).requires_grad_(True))
    return EncodedText(states[-1], mask, lambda h, m: pool(h, m, "mean"), tuple(states))


def make_sia(prefix_dims: list[int], layers: list[int], seed: int = 3, dense: bool = False, **options) -> SIALoss:
    """An SIALoss whose lifts are moved off their init, so every lift counts: ``dense`` adds Gaussian noise;
    otherwise each lift row holds one +-2^k at a random column (P q exact in float32, whatever the order)."""
    torch.manual_seed(seed)
    sia = SIALoss(D, prefix_dims, layers, **options)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lift in sia.lifts.values():
            if dense:
                lift.weight.add_(0.3 * torch.randn(lift.weight.shape, generator=g))
                continue
            d = lift.weight.shape[0]
            signs = torch.randint(0, 2, (d,), generator=g) * 2 - 1
            scales = 2.0 ** torch.randint(-1, 2, (d,), generator=g)
            lift.weight.zero_()
            lift.weight[torch.arange(d), torch.randperm(D, generator=g)[:d]] = signs * scales
    return sia


def value_and_grads(
    sia: SIALoss, forward, encoded: EncodedText, autocast: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(att, cka) of ``forward`` (under bf16 autocast when asked) and the gradients of their sum w.r.t. every
    hidden state and lift. The backward runs outside autocast, as in a Trainer step."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = forward(sia, encoded)
    values = torch.stack([out["sia_att"], out["sia_cka"]])
    inputs = [*encoded.hidden_states, *sia.lifts.parameters()]
    grads = torch.autograd.grad(values.sum(), inputs, allow_unused=True, materialize_grads=True)
    return values, list(grads)


def batched(sia: SIALoss, encoded: EncodedText) -> dict[str, torch.Tensor]:
    return sia(encoded)


def assert_batched_matches_loop(
    sia: SIALoss, seed: int = 0, dtype: torch.dtype = torch.float32, autocast: bool = False, grad_tol: float = 1e-6
) -> float:
    """The batched and the per-layer SIA agree: values to 1e-6; gradients w.r.t. every hidden state and lift to
    ``grad_tol`` times max(1, the largest gradient) (a float32 ulp of a gradient of 50 is 4e-6); padding gets
    no gradient. Returns the largest difference seen."""
    fast, fast_grads = value_and_grads(sia, batched, random_encoded(seed=seed, dtype=dtype), autocast)
    slow, slow_grads = value_and_grads(sia, loop_sia, random_encoded(seed=seed, dtype=dtype), autocast)
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, slow, **TOL)
    padding = ~random_encoded(seed=seed).token_mask
    worst = (fast - slow).abs().max().item()
    scale = max(1.0, max(g.abs().max().item() for g in slow_grads))
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=grad_tol * scale)
        worst = max(worst, (a.float() - b.float()).abs().max().item())
    for grad in fast_grads[: NUM_LAYERS + 1]:
        assert grad[padding].abs().max() == 0  # padding never counts
    return worst


CASES = [
    ([4, 8], [1, 3], {}),  # the paper: sum, KL(a_i || a_D), tau_att 0.05
    ([4, 8], [1, 3], {"aggregation": "mean", "attention_temperature": 1.0}),  # tuned
    ([4, 8], [1, 3], {"attention_weight": 0.0}),  # no attention KL
    ([4, 8], [3, 1], {"aggregation": "mean", "attention_weight": 0.0, "k_min": 2}),
    ([2, 4, 8, 12], [1, 2, 3, 4], {"k_min": 2, "kl_direction": "teacher_student", "attention_temperature": 0.5}),
    ([2, 4, 8, 12], [1, 2, 3, 4], {"aggregation": "mean", "k_min": 3, "gammas": [0.1, 0.4, 0.4, 0.9]}),
    ([6], [2], {"k_min": 1, "attention_temperature": 0.3}),  # one layer, one prefix
    ([1, 15], [4, 2, 1], {"k_min": 2, "detach_sia_teacher": True}),
    ([4, 8, 12], [2, 4], {"aggregation": "mean", "detach_sia_teacher": True, "attention_weight": 0.5}),
    # the authors' code: tokens ranked by each prefix's lifted (random) scores, k = max(k_min, 64 d / D)
    ([4, 8], [1, 3], {"topk_rank": "lifted", "lift_init": "random", "k_min": 2, "aggregation": "mean"}),
    ([2, 4, 8], [1, 2, 4], {"topk_rank": "lifted", "k_rule": "width", "k_min": 2, "attention_weight": 0.0}),
]


@pytest.mark.parametrize(("prefix_dims", "layers", "options"), CASES)
def test_batched_sia_matches_per_layer_loop(prefix_dims: list[int], layers: list[int], options: dict) -> None:
    sia = make_sia(prefix_dims, layers, **options)
    for seed in (0, 1):
        assert_batched_matches_loop(sia, seed=seed)


@pytest.mark.parametrize(("prefix_dims", "layers", "options"), CASES)
def test_batched_sia_dense_lifts_agree_to_float32_rounding(
    prefix_dims: list[int], layers: list[int], options: dict
) -> None:
    """Dense lifts: the lift GEMM rounds differently (see the module docstring); values still agree to 1e-6, the
    gradients to 1e-6 of their largest at tau_att >= 0.3, and to 1e-4 of it at tau_att 0.05, where the sharp
    attention softmax amplifies a last-bit change of P q (measured: up to 1.5e-5)."""
    sia = make_sia(prefix_dims, layers, dense=True, **options)
    sharp = sia.attention_weight > 0 and sia.attention_temperature < 0.3
    for seed in (0, 1):
        assert_batched_matches_loop(sia, seed=seed, grad_tol=1e-4 if sharp else 1e-6)


@pytest.mark.parametrize(("prefix_dims", "layers", "options"), [CASES[0], CASES[3], CASES[7], CASES[9]])
def test_batched_sia_float32_under_bf16_autocast(prefix_dims: list[int], layers: list[int], options: dict) -> None:
    """Under autocast (bf16) the scores, softmaxes, KLs, Grams and CKA stay float32: the same numbers as without
    autocast, batched or not, with float32 states; with bf16 states (a bf16 model) both upcast them alike."""
    sia = make_sia(prefix_dims, layers, **options)
    exact = torch.stack(list(sia(random_encoded()).values()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = torch.stack(list(sia(random_encoded()).values()))
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, exact, rtol=0, atol=0)
    for dtype in (torch.float32, torch.bfloat16):
        assert_batched_matches_loop(sia, dtype=dtype, autocast=True)


def test_batched_sia_same_without_grad() -> None:
    """The no-grad path (no checkpoint) gives the values of the checkpointed one."""
    sia = make_sia([2, 4, 8, 12], [1, 2, 3, 4], k_min=2)
    with_grad = torch.stack(list(sia(random_encoded()).values()))
    with torch.no_grad():
        without = torch.stack(list(sia(random_encoded()).values()))
        reference = torch.stack(list(loop_sia(sia, random_encoded()).values()))
    torch.testing.assert_close(without, with_grad.detach(), rtol=0, atol=0)
    torch.testing.assert_close(without, reference, **TOL)


class Created(TorchFunctionMode):
    """Records a weak reference to every tensor a torch call returns (and how many calls ran)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.tensors: list[weakref.ref] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += getattr(func, "__name__", "") != "__get__"  # attribute reads (x.requires_grad) do no work
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.tensors.append(weakref.ref(t))
        return out

    def alive(self, min_numel: int, inputs: tuple[torch.Tensor, ...]) -> list[tuple[int, ...]]:
        """Shapes of the recorded tensors still alive with >= min_numel elements, other than the inputs (a
        no-op call such as ``x.float()`` returns its input)."""
        own = {t.untyped_storage().data_ptr() for t in inputs}
        tensors = [t for r in self.tensors if (t := r()) is not None and t.untyped_storage().data_ptr() not in own]
        return [tuple(t.shape) for t in tensors if t.numel() >= min_numel]


def test_batched_sia_keeps_only_its_inputs_for_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpointed: after the forward no stacked states, score or Gram tensor is alive (the backward
    recomputes them from the layers' own states); without the checkpoint the same probe finds them kept."""
    sia = make_sia([2, 4, 8, 12], [1, 2, 3, 4], k_min=2)
    large = len(LENGTHS) * WIDTH * min(WIDTH, D)  # one layer's states or Grams
    for checkpointed in (True, False):
        if not checkpointed:
            monkeypatch.setattr(sia_module, "checkpoint", lambda fn, *args, **kwargs: fn(*args))
        encoded = random_encoded()
        with Created() as created:
            out = sia(encoded)
        kept = created.alive(large, encoded.hidden_states)
        assert (kept == []) == checkpointed, kept
        (out["sia_att"] + out["sia_cka"]).backward()
        assert all(h.grad is not None for h in encoded.hidden_states[1:])


def test_batched_sia_torch_calls_do_not_grow_with_layers() -> None:
    """The forward's torch calls are the same for one SIA layer and for four (pooling done beforehand)."""
    calls = []
    for layers in ([2], [1, 2, 3, 4]):
        sia = make_sia([2, 4, 8, 12], layers)
        encoded = random_encoded()
        for layer in layers:
            encoded.pooled(layer)
        with Created() as created:
            sia(encoded)
        calls.append(created.calls)
    assert calls[0] == calls[1], calls
