"""MatryoshkaModel on tiny random BERT, XLM-R and Qwen3: shapes, prefix property, padding, early exit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import ARCHS, tiny_config

from mipic_hf import MatryoshkaConfig, MatryoshkaModel

DIMS = [4, 16, 32, 64]


def make_model(arch: str, **kwargs) -> MatryoshkaModel:
    config = MatryoshkaConfig(text_config=tiny_config(arch), matryoshka_dimensions=DIMS, **kwargs)
    return MatryoshkaModel(config).eval()


def token_ids(length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 1000, (length,), generator=g)


def pad_batch(seqs: list[torch.Tensor], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
        else:
            ids[i, width - len(s) :], mask[i, width - len(s) :] = s, 1
    return ids, mask


def pad_id(model: MatryoshkaModel) -> int:
    return model.config.text_config.pad_token_id or 0


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_per_dimension(arch: str) -> None:
    model = make_model(arch)
    ids, mask = pad_batch([token_ids(7, 1), token_ids(4, 2), token_ids(9, 3)], pad_id(model), "right")
    for d in DIMS + [5, 63]:
        out = model(input_ids=ids, attention_mask=mask, dimension=d)
        assert out.embeddings.shape == (3, d)
        assert out.embeddings.dtype == torch.float32
        torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(3))
        assert out.last_hidden_state.shape == (3, 9, 64)
        assert out.hidden_states is None
    default = model(input_ids=ids, attention_mask=mask)
    assert default.embeddings.shape == (3, 64)


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_property(arch: str) -> None:
    model = make_model(arch)
    ids, mask = pad_batch([token_ids(6, 4), token_ids(11, 5)], pad_id(model), "right")
    full = model(input_ids=ids, attention_mask=mask).embeddings
    for d in DIMS:
        cut = model(input_ids=ids, attention_mask=mask, dimension=d).embeddings
        torch.testing.assert_close(cut, F.normalize(full[:, :d], dim=-1), atol=1e-6, rtol=1e-5)


def test_prefix_without_normalization() -> None:
    model = make_model("bert", normalize=False, pooling="mean")
    ids = token_ids(8, 6)[None]
    full = model(input_ids=ids).embeddings
    torch.testing.assert_close(model(input_ids=ids, dimension=16).embeddings, full[:, :16])
    assert not torch.allclose(full.norm(dim=-1), torch.ones(1))


@pytest.mark.parametrize(
    ("arch", "pooling", "side"),
    [
        ("bert", "cls", "right"),
        ("bert", "mean", "right"),
        ("xlm-roberta", "cls", "right"),
        ("xlm-roberta", "mean", "right"),
        ("qwen3", "last_token", "right"),
        ("qwen3", "last_token", "left"),
        ("qwen3", "mean", "left"),
    ],
)
def test_padding_invariance(arch: str, pooling: str, side: str) -> None:
    model = make_model(arch, pooling=pooling)
    short, long = token_ids(5, 7), token_ids(12, 8)
    alone = model(input_ids=short[None], attention_mask=torch.ones(1, 5, dtype=torch.long))
    ids, mask = pad_batch([short, long], pad_id(model), side)
    batched = model(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(batched.embeddings[0], alone.embeddings[0], atol=1e-5, rtol=0)
    long_alone = model(input_ids=long[None]).embeddings[0]
    torch.testing.assert_close(batched.embeddings[1], long_alone, atol=1e-5, rtol=0)
    # Every layer's exit is padding invariant too.
    for layer in (1, 2):
        a = model(input_ids=short[None], layer=layer, dimension=16).embeddings[0]
        b = model(input_ids=ids, attention_mask=mask, layer=layer, dimension=16).embeddings[0]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_early_exit_runs_exactly_l_blocks(arch: str) -> None:
    config = MatryoshkaConfig(text_config=tiny_config(arch, num_layers=4), matryoshka_dimensions=[8, 64])
    model = MatryoshkaModel(config).eval()
    _, _, blocks = model.block_list()
    assert len(blocks) == 4
    calls: list[int] = []
    handles = [b.register_forward_hook(lambda m, i, o, k=k: calls.append(k)) for k, b in enumerate(blocks)]
    ids, mask = pad_batch([token_ids(6, 9), token_ids(10, 10)], pad_id(model), "right")
    full = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert calls == [0, 1, 2, 3]
    assert len(full.hidden_states) == 5
    for layer in (1, 2, 3, 4):
        calls.clear()
        out = model(input_ids=ids, attention_mask=mask, layer=layer, dimension=8, output_hidden_states=True)
        assert calls == list(range(layer)), (layer, calls)
        expected = model.embed(full.hidden_states[layer], mask, dimension=8)
        torch.testing.assert_close(out.embeddings, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.last_hidden_state, full.hidden_states[layer], atol=1e-5, rtol=1e-5)
        assert len(out.hidden_states) == layer + 1
    for h in handles:
        h.remove()
    # The block list is restored after an early exit, also when the forward raises.
    assert len(model.block_list()[2]) == 4
    with pytest.raises(IndexError):
        model(input_ids=torch.full((1, 3), 10**6), layer=1)
    assert len(model.block_list()[2]) == 4


def test_decoder_layers_share_the_final_norm() -> None:
    """Qwen3: hidden_states[l] is final_norm(block l output) at every l, as an exit after l computes."""
    model = make_model("qwen3")
    ids = token_ids(6, 11)[None]
    raw = model.backbone(input_ids=ids, output_hidden_states=True).hidden_states
    ours = model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(ours[1], model.backbone.norm(raw[1]))
    torch.testing.assert_close(ours[2], raw[2])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"dimension": 0}, "dimension"),
        ({"dimension": 65}, "dimension"),
        ({"layer": 0}, "layer"),
        ({"layer": 3}, "layer"),
    ],
)
def test_bad_budget_names_the_field(kwargs: dict, field: str) -> None:
    model = make_model("bert")
    with pytest.raises(ValueError, match=f"^{field} must be"):
        model(input_ids=token_ids(4, 1)[None], **kwargs)


def test_encode_matches_forward_and_keeps_order(minilm_path: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = MatryoshkaModel(MatryoshkaConfig(text_config=tiny_config("bert", vocab_size=30522), pooling="mean"))
    model.train()  # encode must switch to eval (no dropout) and restore the mode
    texts = ["a b c d e f g h", "short", "a medium length text here", "x"]
    emb = model.encode(texts, tokenizer, dimension=16, layer=1, batch_size=3)
    assert emb.shape == (4, 16) and emb.dtype.name == "float32"
    assert model.training
    model.eval()
    for i, text in enumerate(texts):
        ref = model(**tokenizer([text], return_tensors="pt"), dimension=16, layer=1).embeddings[0]
        torch.testing.assert_close(torch.from_numpy(emb[i]), ref, atol=1e-5, rtol=0)
    one = model.encode("short", tokenizer, convert_to_tensor=True, dimension=8)
    assert isinstance(one, torch.Tensor) and one.shape == (8,)
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(texts, tokenizer, batch_size=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_encode_layers_equals_one_early_exit_per_layer(arch: str, minilm_path: str) -> None:
    """One pass with hidden states gives, at every exit, what a real early exit (encode with layer=l) gives;
    Qwen3's final norm included, with and without an output rotation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    text_config = tiny_config(arch, vocab_size=tokenizer.vocab_size, num_layers=3)
    if arch != "qwen3":
        text_config.pad_token_id = tokenizer.pad_token_id
    pooling = "last_token" if arch == "qwen3" else "mean"
    model = MatryoshkaModel(MatryoshkaConfig(text_config=text_config, pooling=pooling)).eval()
    texts = ["a b c d e f g h", "short", "a medium length text here", "x"]
    for rotated in (False, True):
        if rotated:
            model.set_output_rotation(torch.randn(64), torch.linalg.qr(torch.randn(64, 64))[0])
        together = model.encode_layers(texts, tokenizer, [3, 1, 2], dimension=16, batch_size=3)
        assert sorted(together) == [1, 2, 3]
        for layer in (1, 2, 3):
            alone = model.encode(texts, tokenizer, dimension=16, layer=layer, batch_size=3, convert_to_tensor=True)
            torch.testing.assert_close(together[layer], alone, atol=1e-5, rtol=0)
        assert not torch.allclose(together[1], together[3], atol=1e-3)
