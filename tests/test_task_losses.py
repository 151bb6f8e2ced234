"""L_MRL task losses and the baselines (mrl, none, 2dmse, starbucks) against slow references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mipic_hf.losses.base import EncodedText
from mipic_hf.losses.mipic import MIPICLoss
from mipic_hf.losses.mrl import MRLLoss
from mipic_hf.losses.starbucks import StarbucksLoss
from mipic_hf.losses.task import MatryoshkaTaskLoss
from mipic_hf.losses.twodmse import TwoDMSELoss, layer_weight
from mipic_hf.modeling_mipic import pool

DIMS = [4, 8, 16]


def slow_infonce(anchor: torch.Tensor, cands: torch.Tensor, d: int, tau: float) -> float:
    total = 0.0
    for i in range(anchor.shape[0]):
        a = F.normalize(anchor[i, :d], dim=0)
        logits = torch.stack([a @ F.normalize(c[:d], dim=0) for c in cands]) / tau
        total += float(torch.logsumexp(logits, 0) - logits[i])
    return total / anchor.shape[0]


def slow_cosent(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, d: int, scale: float) -> float:
    s = [float(F.normalize(u[i, :d], dim=0) @ F.normalize(v[i, :d], dim=0)) * scale for i in range(len(u))]
    terms = [0.0] + [s[j] - s[i] for i in range(len(s)) for j in range(len(s)) if labels[i] > labels[j]]
    return math.log(sum(math.exp(t) for t in terms))


@torch.no_grad()
def test_infonce_mnrl_with_hard_negatives() -> None:
    a, p, n = torch.randn(5, 16), torch.randn(5, 16), torch.randn(5, 16)
    loss = MatryoshkaTaskLoss("mnrl", DIMS, dim_weights=[0.5, 1.0, 2.0], temperature=0.1)
    expected = sum(w * slow_infonce(a, torch.cat([p, n]), d, 0.1) for w, d in zip([0.5, 1.0, 2.0], DIMS, strict=True))
    assert loss([a, p, n])["mrl"].item() == pytest.approx(expected, rel=1e-4)
    # simcse is the same InfoNCE between the two views, no extra negatives.
    simcse = MatryoshkaTaskLoss("simcse", DIMS, temperature=0.05)
    expected = sum(slow_infonce(a, p, d, 0.05) for d in DIMS)
    assert simcse([a, p])["mrl"].item() == pytest.approx(expected, rel=1e-4)


@torch.no_grad()
def test_cosent() -> None:
    u, v = torch.randn(6, 16), torch.randn(6, 16)
    labels = torch.tensor([0.5, 4.0, 2.5, 2.5, 1.0, 3.2])
    loss = MatryoshkaTaskLoss("cosent", DIMS, cosent_scale=20.0)
    expected = sum(slow_cosent(u, v, labels, d, 20.0) for d in DIMS)
    assert loss([u, v], labels)["mrl"].item() == pytest.approx(expected, rel=1e-4)


def test_nested_classifier_uses_the_prefix_columns() -> None:
    z = torch.randn(6, 16)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = MatryoshkaTaskLoss("classification", DIMS, hidden_size=16, num_labels=3, temperature=0.05)
    w = loss.classifier.weight
    expected = 0.0
    for d in DIMS:
        logits = F.normalize(z[:, :d], dim=-1) @ F.normalize(w[:, :d], dim=-1).T / 0.05
        expected += F.cross_entropy(logits, labels)
    value = loss([z], labels)["mrl"]
    torch.testing.assert_close(value, expected)
    value.backward()
    assert w.grad.abs().max() > 0
    with pytest.raises(ValueError, match="num_labels"):
        MatryoshkaTaskLoss("classification", DIMS, hidden_size=16, num_labels=1)


def test_task_and_weights_are_validated() -> None:
    with pytest.raises(ValueError, match="task_loss must be one of"):
        MatryoshkaTaskLoss("triplet", DIMS)
    with pytest.raises(ValueError, match="mrl_dim_weights"):
        MatryoshkaTaskLoss("mnrl", DIMS, dim_weights=[1.0])


def encoded_column(seed: int, layers: int = 3, requires_grad: bool = False) -> EncodedText:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    states = tuple(torch.randn(4, 6, 16, generator=g).requires_grad_(requires_grad) for _ in range(layers + 1))
    return EncodedText(states[-1], mask, lambda h, m: pool(h, m, "mean"), states)


def test_mrl_and_none() -> None:
    enc = [encoded_column(0), encoded_column(1)]
    task = MatryoshkaTaskLoss("mnrl", DIMS)
    pooled = [e.pooled() for e in enc]
    torch.testing.assert_close(MRLLoss(task)(enc)["loss"], sum(task.loss_at(pooled, None, d) for d in DIMS))
    torch.testing.assert_close(MRLLoss(task, full_dim_only=True)(enc)["loss"], task.loss_at(pooled, None, 16))


def test_starbucks_sums_the_diagonal() -> None:
    enc = [encoded_column(2), encoded_column(3)]
    task = MatryoshkaTaskLoss("mnrl", DIMS)
    pairs = [(4, 1), (8, 2), (16, 3)]
    expected = sum(task.loss_at([e.pooled(layer) for e in enc], None, d) for d, layer in pairs)
    torch.testing.assert_close(StarbucksLoss(task, pairs)(enc)["loss"], expected)


def test_twodmse_samples_one_layer_and_dim_and_detaches_the_teacher() -> None:
    task = MatryoshkaTaskLoss("mnrl", DIMS)
    loss = TwoDMSELoss(task, layers=[1, 2, 3], num_layers=3, layer_weighting="log", kl_weight=1.0)
    assert loss.layers == [1, 2] and loss.prefix_dims == [4, 8]
    torch.manual_seed(5)
    layer, dim = loss.sample()
    enc = [encoded_column(4, requires_grad=True), encoded_column(5, requires_grad=True)]
    torch.manual_seed(5)
    out = loss(enc)
    last = [e.pooled() for e in enc]
    shallow = [e.pooled(layer) for e in enc]
    expected_last = task.loss_at(last, None, 16) + task.loss_at(last, None, dim)
    expected_layer = layer_weight(layer, "log") * (task.loss_at(shallow, None, 16) + task.loss_at(shallow, None, dim))
    torch.testing.assert_close(out["mrl"], expected_last)
    torch.testing.assert_close(out["layer"], expected_layer)
    # The KL term sends no gradient into the last layer (the teacher).
    out["kl"].backward()
    assert enc[0].hidden_states[3].grad is None or enc[0].hidden_states[3].grad.abs().max() == 0
    assert enc[0].hidden_states[layer].grad.abs().max() > 0
    assert layer_weight(4, "linear") == pytest.approx(0.2)
    assert layer_weight(math.e, "log") == pytest.approx(0.5)
    with pytest.raises(ValueError, match="twodmse_layer_weighting"):
        layer_weight(2, "cubic")


def test_pic_task_weight_adds_the_task_loss_at_the_lower_rungs() -> None:
    enc = [encoded_column(0, requires_grad=True), encoded_column(1)]
    task = MatryoshkaTaskLoss("mnrl", DIMS)
    rungs = [(DIMS[0], 1), (DIMS[1], 2), (DIMS[-1], 3)]
    plain = MIPICLoss(task, None, None, alpha=0.3, rungs=rungs)(enc)
    assert "rung" not in plain  # 0 (the paper) adds nothing
    out = MIPICLoss(task, None, None, alpha=0.3, rungs=rungs, pic_task_weight=0.5)(enc)
    expected_rung = sum(task([e.pooled(layer) for e in enc], None, dims=[d])["mrl"] for d, layer in rungs[:-1])
    torch.testing.assert_close(out["rung"], expected_rung)
    torch.testing.assert_close(out["loss"], 0.3 * (plain["mrl"] + 0.5 * expected_rung))
    out["loss"].backward()
    assert enc[0].hidden_states[1].grad.abs().sum() > 0  # the shallow rung's layer is supervised


@torch.no_grad()
def test_the_whole_mipic_loss_weighs_the_task_against_sia_and_pic_by_alpha() -> None:
    """L = alpha (L_MRL + w_rung L_rung) + (1 - alpha) (L_SIA + w_pic L_PIC), each term averaged over the text
    columns, against the terms computed one by one (each term has its own reference test)."""
    from mipic_hf.losses.pic import PICLoss
    from mipic_hf.losses.sia import SIALoss

    enc = [encoded_column(0), encoded_column(1)]
    task = MatryoshkaTaskLoss("mnrl", DIMS)
    rungs = [(DIMS[0], 1), (DIMS[1], 2), (DIMS[-1], 3)]
    sia = SIALoss(16, [4, 8], [1, 3], attention_temperature=0.5, k_min=3)
    pic = PICLoss(rungs, temperature=0.1)
    pooled = [e.pooled() for e in enc]
    mrl = task(pooled, None)["mrl"]
    rung = sum(task([e.pooled(layer) for e in enc], None, dims=[d])["mrl"] for d, layer in rungs[:-1])
    sia_parts = [sia(e) for e in enc]
    sia_att = (sia_parts[0]["sia_att"] + sia_parts[1]["sia_att"]) / 2
    sia_cka = (sia_parts[0]["sia_cka"] + sia_parts[1]["sia_cka"]) / 2
    pic_term = (pic(enc[0])["pic"] + pic(enc[1])["pic"]) / 2
    assert min(float(sia_att), float(sia_cka), float(pic_term), float(rung)) > 1e-3  # every term contributes
    for alpha in (0.4, 0.7):
        out = MIPICLoss(task, sia, pic, alpha=alpha, pic_weight=2.0, rungs=rungs, pic_task_weight=0.5)(enc)
        torch.testing.assert_close(out["sia_att"], sia_att)
        torch.testing.assert_close(out["sia_cka"], sia_cka)
        torch.testing.assert_close(out["pic"], pic_term)
        expected = alpha * (mrl + 0.5 * rung) + (1 - alpha) * (sia_att + sia_cka + 2.0 * pic_term)
        torch.testing.assert_close(out["loss"], expected)
