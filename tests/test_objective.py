"""build_objective: presets, overrides, the paper's per-backbone ladders, and validation."""

from __future__ import annotations

import pytest
from transformers import BertConfig, Qwen3Config

from mipic_hf import MatryoshkaConfig, MIPICTrainingArguments
from mipic_hf.losses import MIPICLoss, MRLLoss, StarbucksLoss, TwoDMSELoss
from mipic_hf.losses.objective import build_objective, resolve_settings


def args(tmp_path, **kw) -> MIPICTrainingArguments:
    """Training arguments; preset `tuned` (SIA and PIC on) unless the test names one."""
    kw.setdefault("preset", "tuned")
    return MIPICTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, **kw)


def bert_base() -> MatryoshkaConfig:
    return MatryoshkaConfig(text_config=BertConfig(), matryoshka_dimensions=[16, 32, 64, 128, 256, 512, 768])


def test_paper_preset_follows_method_md(tmp_path) -> None:
    objective = build_objective(args(tmp_path, preset="paper"), bert_base(), "simcse")
    assert isinstance(objective, MIPICLoss)
    assert objective.alpha == 0.4
    assert objective.pic.ladder == [(16, 2), (32, 4), (64, 6), (128, 8), (256, 9), (512, 10), (768, 12)]
    assert objective.sia.layers == [2, 4, 6, 8, 9, 10, 12]
    assert objective.sia.prefix_dims == [16, 32, 64, 128, 256, 512]
    assert objective.sia.gammas == [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert objective.sia.attention_temperature == 0.05 and objective.sia.k_min == 8
    assert objective.sia.kl_direction == "student_teacher" and objective.sia.aggregation == "sum"
    assert objective.sia.detach_sia_teacher is False
    assert objective.task.temperature == 0.05 and objective.pic.temperature == 0.05
    qwen = MatryoshkaConfig(
        text_config=Qwen3Config(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8),
        matryoshka_dimensions=[16, 32, 64, 128, 256, 512, 1024],
    )
    objective = build_objective(args(tmp_path, preset="paper"), qwen, "simcse")
    assert objective.alpha == 0.5 and objective.pic.ladder[0] == (16, 2) and objective.sia.layers[-1] == 28


def test_tuned_preset_rescales_the_attention_kl_and_supervises_the_rungs(tmp_path) -> None:
    objective = build_objective(args(tmp_path, preset="tuned"), bert_base(), "simcse")
    assert objective.sia.attention_temperature == 1.0 and objective.sia.aggregation == "mean"
    paper = resolve_settings(args(tmp_path, preset="paper"))
    tuned = resolve_settings(args(tmp_path, preset="tuned"))
    changed = {k for k in paper if paper[k] != tuned[k]}
    assert changed == {"attention_temperature", "sia_aggregation", "pic_task_weight"}
    assert objective.pic_task_weight == 1.0 and objective.rungs == objective.pic.ladder[:-1]
    assert build_objective(args(tmp_path, preset="paper"), bert_base(), "simcse").pic_task_weight == 0.0


def test_default_preset_is_tuned_without_sia_and_pic(tmp_path) -> None:
    """`default` = `tuned` with the SIA and PIC weights at 0: neither module is built (no parameters, no
    work), the ladder's rungs keep the task loss, and the loss is alpha x (task + rung task)."""
    tuned = resolve_settings(args(tmp_path, preset="tuned"))
    default = resolve_settings(args(tmp_path, preset="default"))
    assert {k for k in tuned if tuned[k] != default[k]} == {"sia_attention_weight", "sia_cka_weight", "pic_weight"}
    assert default["sia_attention_weight"] == default["sia_cka_weight"] == default["pic_weight"] == 0.0
    objective = build_objective(args(tmp_path, preset="default"), bert_base(), "simcse")
    assert objective.sia is None and objective.pic is None and not list(objective.parameters())
    assert objective.ladder == [(16, 2), (32, 4), (64, 6), (128, 8), (256, 9), (512, 10), (768, 12)]
    assert objective.rungs == objective.ladder[:-1] and objective.pic_task_weight == 1.0
    on = build_objective(args(tmp_path, preset="default", sia_cka_weight=1.0, pic_weight=0.5), bert_base(), "simcse")
    assert on.sia is not None and on.sia.attention_weight == 0.0 and on.pic is not None and on.pic_weight == 0.5


def test_explicit_values_override_the_preset(tmp_path) -> None:
    a = args(
        tmp_path,
        attention_temperature=1.0,
        detach_sia_teacher=True,
        sia_aggregation="mean",
        alpha=0.7,
        pic_ladder=["64:6", "768:12"],
        sia_gammas=[0.5] * 6,
        aux_lr_multiplier=3.0,
    )
    settings = resolve_settings(a)
    assert settings["attention_temperature"] == 1.0 and settings["aux_lr_multiplier"] == 3.0
    assert settings["sia_k_min"] == 8  # untouched values come from the preset
    objective = build_objective(a, bert_base(), "mnrl")
    assert objective.alpha == 0.7 and objective.sia.detach_sia_teacher is True
    assert objective.pic.ladder == [(64, 6), (768, 12)] and objective.sia.layers == [6, 12]
    assert objective.sia.gammas == [0.5] * 6


def test_terms_can_be_switched_off(tmp_path) -> None:
    objective = build_objective(args(tmp_path, pic_weight=0.0, sia_cka_weight=0.0), bert_base(), "mnrl")
    assert objective.pic is None and objective.sia is not None and objective.sia.cka_weight == 0.0
    objective = build_objective(args(tmp_path, sia_attention_weight=0.0, sia_cka_weight=0.0), bert_base(), "mnrl")
    assert objective.sia is None


def test_methods(tmp_path) -> None:
    config = bert_base()
    assert isinstance(build_objective(args(tmp_path, method="mrl"), config, "cosent"), MRLLoss)
    none = build_objective(args(tmp_path, method="none"), config, "cosent")
    assert isinstance(none, MRLLoss) and none.full_dim_only
    two = build_objective(args(tmp_path, method="2dmse", twodmse_layer_weighting="linear"), config, "cosent")
    assert isinstance(two, TwoDMSELoss) and two.layers == list(range(1, 12))
    star = build_objective(args(tmp_path, method="starbucks", starbucks_pairs=["32:2", "768:12"]), config, "cosent")
    assert isinstance(star, StarbucksLoss) and star.pairs == [(32, 2), (768, 12)]
    with pytest.raises(ValueError, match="starbucks_pairs must increase"):
        build_objective(args(tmp_path, method="starbucks", starbucks_pairs=["32:2", "16:12"]), config, "cosent")
    with pytest.raises(ValueError, match="twodmse_layer_weighting"):
        build_objective(args(tmp_path, method="2dmse", twodmse_layer_weighting="exp"), config, "cosent")


def test_authors_preset_is_the_notebook_objective(tmp_path) -> None:
    """preset authors: 0.6 x task + 0.4 x (0.4 x CKA + 0.2 x chain), attention KL off, lifts random and ranking
    the tokens, k = max(8, 64 d / D), chain averaged at tau 0.07, SIA at hidden_states 8 and 10 (bert-base)."""
    import torch

    from mipic_hf.losses.base import EncodedText
    from mipic_hf.modeling_mipic import pool

    objective = build_objective(args(tmp_path, preset="authors"), bert_base(), "simcse")
    assert objective.alpha == 0.6 and objective.pic_weight == 0.2 and objective.pic_task_weight == 0.0
    assert objective.sia.layers == [8, 10] and objective.pic.ladder == [(16, 3), (128, 7), (768, 12)]
    assert objective.sia.attention_weight == 0.0 and objective.sia.cka_weight == 0.4
    assert objective.sia.topk_rank == "lifted" and objective.sia.keep_rule == [8, 8, 8, 10, 21, 42]
    assert objective.pic.aggregation == "mean" and objective.pic.temperature == 0.07
    assert objective.task.temperature == 0.07 and objective.sia.aggregation == "mean"
    assert not torch.equal(objective.sia.lifts["layer8_dim16"].weight, torch.eye(16, 768))  # random lifts

    # The whole loss is that sum of its logged parts (one tiny forward's worth of random states).
    tiny = MatryoshkaConfig(text_config=BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2))
    objective = build_objective(args(tmp_path, preset="authors"), tiny, "simcse")
    torch.manual_seed(0)
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[0, 5:] = 0
    views = []
    for _ in range(2):
        states = tuple(torch.randn(6, 9, 64) for _ in range(3))
        views.append(EncodedText(states[-1], mask, lambda h, m: pool(h, m, "cls"), states))
    out = objective(views)
    assert out["sia_att"].item() == 0.0 and out["sia_cka"].item() > 0 and out["pic"].item() > 0
    expected = 0.6 * out["mrl"] + 0.4 * (out["sia_cka"] + 0.2 * out["pic"])
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
