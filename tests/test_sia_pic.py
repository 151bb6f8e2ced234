"""SIA and PIC against slow per-sentence references; top-k sets; stop-gradients; padding never counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_cka import slow_cka

from mipic_hf.losses.base import EncodedText
from mipic_hf.losses.pic import PICLoss, default_ladder, parse_ladder, validate_ladder
from mipic_hf.losses.sia import SIALoss, topk_token_masks, width_counts
from mipic_hf.modeling_mipic import pool

D, LAYERS = 16, 3


def make_encoded(
    lengths: list[int], width: int, seed: int = 0, requires_grad: bool = False, pooling: str = "mean"
) -> EncodedText:
    """Random hidden states for layers 0..LAYERS; padding positions hold garbage, mask says which count."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    states = []
    for _ in range(LAYERS + 1):
        h = torch.randn(len(lengths), width, D, generator=g) * 2 + 0.5
        states.append(h.requires_grad_(requires_grad))
    return EncodedText(states[-1], mask, lambda h, m: pool(h, m, pooling), tuple(states))


def repad(encoded: EncodedText, width: int, seed: int) -> EncodedText:
    """The same sentences padded to ``width`` with different garbage in the padding."""
    g = torch.Generator().manual_seed(seed)
    old = encoded.attention_mask.shape[1]
    states = []
    for h in encoded.hidden_states:
        new = torch.randn(h.shape[0], width, D, generator=g) * 50
        new[:, :old] = torch.where(encoded.attention_mask[..., None].bool(), h.detach(), new[:, :old])
        states.append(new)
    mask = torch.zeros(h.shape[0], width, dtype=torch.long)
    mask[:, :old] = encoded.attention_mask
    return EncodedText(states[-1], mask, encoded.pool_fn, tuple(states))


def slow_sia(sia: SIALoss, encoded: EncodedText) -> tuple[float, float]:
    """Per layer, per prefix, per sentence: KL and top-k CKA with explicit selection, then aggregate."""
    att_terms, cka_terms = [], []
    for layer in sia.layers:
        hs = encoded.hidden_states[layer].detach().double()
        for i, d in enumerate(sia.prefix_dims):
            p = sia.lifts[sia.lift_key(layer, d)].weight.detach().double()  # (d, D)
            att_b, cka_b = [], []
            for b in range(hs.shape[0]):
                m = int(encoded.attention_mask[b].sum())
                h = hs[b, :m]
                q = h.mean(0)  # mean pooling of the real tokens
                s_t = (h @ q) / math.sqrt(D) / sia.attention_temperature
                s_s = (h[:, :d] @ (p @ q)) / math.sqrt(D) / sia.attention_temperature
                a_t, a_s = torch.softmax(s_t, 0), torch.softmax(s_s, 0)
                if sia.kl_direction == "student_teacher":
                    att_b.append(float((a_s * (a_s.log() - a_t.log())).sum()))
                else:
                    att_b.append(float((a_t * (a_t.log() - a_s.log())).sum()))
                if sia.k_rule == "width":
                    k = min(m, max(sia.k_min, 64 * d // D))
                else:
                    k = min(m, max(sia.k_min, math.ceil(sia.gammas[i] * m - 1e-6)))
                ranking = s_t if sia.topk_rank == "teacher" else s_s
                top = torch.argsort(ranking, descending=True, stable=True)[:k]
                x, y = h[top, :d], h[top]
                cka_b.append(1.0 - (slow_cka(x, y) if k > 1 else 0.0))
            att_terms.append(sum(att_b) / len(att_b))
            cka_terms.append(sum(cka_b) / len(cka_b))
    if sia.aggregation == "sum":
        return sia.attention_weight * sum(att_terms), sia.cka_weight * sum(cka_terms)
    return (sia.attention_weight * sum(att_terms) / len(att_terms), sia.cka_weight * sum(cka_terms) / len(cka_terms))


def perturb_lifts(sia: SIALoss, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lift in sia.lifts.values():
            lift.weight.add_(0.3 * torch.randn(lift.weight.shape, generator=g))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"attention_temperature": 1.0, "aggregation": "mean", "kl_direction": "teacher_student"},
        {"attention_temperature": 0.5, "k_min": 2, "attention_weight": 0.3, "cka_weight": 2.0},
        # the authors' code: tokens ranked by each prefix's lifted (random, untrained) scores
        {"topk_rank": "lifted", "k_min": 2, "lift_init": "random", "aggregation": "mean", "attention_weight": 0.0},
        {"topk_rank": "lifted", "k_rule": "width", "k_min": 2},
    ],
)
def test_sia_matches_slow_reference(options: dict) -> None:
    sia = SIALoss(D, [4, 8], [1, 3], **options)
    perturb_lifts(sia)
    encoded = make_encoded([11, 5, 16, 9], width=16)
    fast = sia(encoded)
    att, cka = slow_sia(sia, encoded)
    assert fast["sia_att"].item() == pytest.approx(att, rel=1e-4, abs=1e-6)
    assert fast["sia_cka"].item() == pytest.approx(cka, rel=1e-4, abs=1e-6)


def test_sia_padding_never_counts() -> None:
    sia = SIALoss(D, [4, 8], [1, 2], attention_temperature=0.5, k_min=3)
    perturb_lifts(sia)
    short = make_encoded([12, 7, 10], width=12)
    long = repad(short, 64, seed=9)
    a, b = sia(short), sia(long)
    torch.testing.assert_close(a["sia_att"], b["sia_att"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a["sia_cka"], b["sia_cka"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_sia_teacher_gradients(detach: bool) -> None:
    sia = SIALoss(D, [4, 8], [2], attention_temperature=0.5, detach_sia_teacher=detach)
    encoded = make_encoded([10, 7], width=10, requires_grad=True)
    out = sia(encoded)
    (out["sia_att"] + out["sia_cka"]).backward()
    grad = encoded.hidden_states[2].grad
    teacher_only = grad[..., 8:]  # coordinates that only the full-width teacher uses
    if detach:
        assert teacher_only.abs().max() == 0
    else:
        assert teacher_only.abs().max() > 0
    assert grad[..., :8].abs().max() > 0  # the prefixes always learn
    assert all(lift.weight.grad is not None and lift.weight.grad.abs().max() > 0 for lift in sia.lifts.values())


def test_sia_float32_under_autocast() -> None:
    sia = SIALoss(D, [4, 8], [1], attention_temperature=0.5)
    encoded = make_encoded([8, 6], width=8)
    exact = sia(encoded)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = sia(encoded)
    assert auto["sia_att"].dtype == torch.float32
    torch.testing.assert_close(auto["sia_cka"], exact["sia_cka"])
    torch.testing.assert_close(auto["sia_att"], exact["sia_att"])


def test_topk_sets_nested_capped_and_ranked() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 9.0, 9.0], [3.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    sets = topk_token_masks(scores, mask, gammas=[0.2, 0.5, 1.0], k_min=2)
    # k = min(m, max(k_min, ceil(gamma m))): sentence 0 (m=6): 2, 3, 6; sentence 1 (m=3): 2, 2, 3.
    assert sets.sum(-1).tolist() == [[2, 2], [3, 2], [6, 3]]
    assert not (sets & ~mask).any()  # padding never kept, however high its score
    for i in range(2):
        assert (sets[i] <= sets[i + 1]).all()  # nested
    assert sets[0, 0].nonzero().flatten().tolist() == [1, 4]  # the teacher's two best tokens
    assert sets[0, 1].nonzero().flatten().tolist() == [0, 2]
    assert sets[1, 0].nonzero().flatten().tolist() == [1, 2, 4]
    small = topk_token_masks(scores, mask, gammas=[0.2], k_min=50)
    assert small.sum(-1).tolist() == [[6, 3]]  # capped by each sentence's length


@torch.no_grad()
def slow_pic(pic: PICLoss, encoded: EncodedText) -> float:
    total = 0.0
    for r, phi in enumerate(pic.projectors):
        (d0, l0), (d1, l1) = pic.ladder[r], pic.ladder[r + 1]
        b = encoded.attention_mask.shape[0]
        zs, zt = [], []
        for i in range(b):
            m = int(encoded.attention_mask[i].sum())
            zs.append(F.normalize(encoded.hidden_states[l0][i, :m].mean(0)[:d0], dim=0))
            zt.append(F.normalize(encoded.hidden_states[l1][i, :m].mean(0)[:d1], dim=0))
        link = 0.0
        for i in range(b):
            s = F.normalize(phi(zs[i]), dim=0)
            logits = torch.stack([s @ zt[j] for j in range(b)]) / pic.temperature
            link += float(-torch.log_softmax(logits, 0)[i])
        total += link / b
    return total


def test_pic_matches_slow_reference_and_ignores_padding() -> None:
    pic = PICLoss([(4, 1), (8, 2), (16, 3)], temperature=0.1)
    encoded = make_encoded([9, 4, 12, 6, 12], width=12)
    fast = pic(encoded)["pic"].item()
    assert fast == pytest.approx(slow_pic(pic, encoded), rel=1e-4)
    assert pic(repad(encoded, 40, seed=4))["pic"].item() == pytest.approx(fast, rel=1e-5)


def test_pic_gradients_reach_shallow_rung_and_phi_never_the_target() -> None:
    pic = PICLoss([(4, 1), (16, 3)])
    encoded = make_encoded([7, 5, 6], width=7, requires_grad=True)
    pic(encoded)["pic"].backward()
    assert encoded.hidden_states[1].grad.abs().max() > 0
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in pic.projectors.parameters())
    assert encoded.hidden_states[3].grad is None or encoded.hidden_states[3].grad.abs().max() == 0


def test_ladders() -> None:
    assert default_ladder([8, 16, 32, 64, 128, 256, 384], 6) == [(8, 1), (16, 2), (32, 3), (128, 4), (256, 5), (384, 6)]
    ladder = default_ladder([16, 32, 64, 128, 256, 512, 768], 12)
    validate_ladder(ladder, 768, 12)
    assert ladder[-1] == (768, 12) and len(ladder) == 7
    assert parse_ladder("16:1,32:2") == parse_ladder(["16:1", "32:2"]) == parse_ladder([[16, 1], [32, 2]])
    with pytest.raises(ValueError, match="increase in both"):
        validate_ladder([(16, 2), (32, 2), (64, 3)], 64, 3)
    with pytest.raises(ValueError, match="must end at"):
        validate_ladder([(16, 1), (32, 2)], 64, 3)
    with pytest.raises(ValueError, match="layers must lie in"):
        validate_ladder([(16, 1), (64, 4)], 64, 3)
    with pytest.raises(ValueError, match="dim:layer"):
        parse_ladder(["16-1"])


def test_lift_init_identity_or_nn_linear_random() -> None:
    torch.manual_seed(5)
    random = SIALoss(D, [4, 8], [1, 3], lift_init="random")
    torch.manual_seed(5)
    expected = [torch.nn.Linear(D, d, bias=False).weight for _ in (1, 3) for d in (4, 8)]
    for got, want in zip(random.lifts.values(), expected, strict=True):
        torch.testing.assert_close(got.weight, want, atol=0, rtol=0)
    identity = SIALoss(D, [4, 8], [1, 3])
    for (_, lift), d in zip(identity.lifts.items(), [4, 8, 4, 8], strict=True):
        torch.testing.assert_close(lift.weight, torch.eye(d, D), atol=0, rtol=0)
    encoded = make_encoded([11, 5, 16, 9], width=16)
    att, _ = slow_sia(random, encoded)  # the slow reference reads the lifts, whatever their init
    assert random(encoded)["sia_att"].item() == pytest.approx(att, rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="sia_lift_init must be one of identity, random"):
        SIALoss(D, [4, 8], [1], lift_init="zeros")


def test_pic_mean_aggregation_is_the_slow_reference_over_the_links() -> None:
    ladder = [(4, 1), (8, 2), (16, 3)]
    torch.manual_seed(0)
    summed = PICLoss(ladder, temperature=0.1)
    torch.manual_seed(0)
    averaged = PICLoss(ladder, temperature=0.1, aggregation="mean")
    encoded = make_encoded([9, 4, 12, 6, 12], width=12)
    assert averaged(encoded)["pic"].item() == pytest.approx(slow_pic(summed, encoded) / 2, rel=1e-4)
    assert summed(encoded)["pic"].item() == pytest.approx(slow_pic(summed, encoded), rel=1e-4)
    with pytest.raises(ValueError, match="pic_aggregation"):
        PICLoss(ladder, aggregation="max")


def test_width_k_rule_counts_as_the_authors_code() -> None:
    """k = max(8, int(64 d / 768)) for bert-base's prefixes 16 ... 512: 8, 8, 8, 10, 21, 42."""
    assert width_counts([16, 32, 64, 128, 256, 512], 768, 8) == [8, 8, 8, 10, 21, 42]
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, True, False]])
    sets = topk_token_masks(scores, mask, [2, 9], k_min=1)  # ints: fixed counts, capped by the length (5)
    assert sets.sum(-1).tolist() == [[2], [5]]
    with pytest.raises(ValueError, match="sia_k_rule must be one of fraction, width"):
        SIALoss(D, [4, 8], [1], k_rule="tokens")
    with pytest.raises(ValueError, match="sia_topk_rank must be one of teacher, lifted"):
        SIALoss(D, [4, 8], [1], topk_rank="random")
