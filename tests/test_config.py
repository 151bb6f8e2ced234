"""MatryoshkaConfig: validation errors name the field; JSON round trip keeps every Matryoshka key."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_config

from mipic_hf import MatryoshkaConfig


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"matryoshka_dimensions": [16, 8, 64]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": [8, 8, 64]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": [8, 16, 128]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": [0, 16, 64]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": [-4, 16, 64]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": [8, 16, 32]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": [8, 16.5, 64]}, "matryoshka_dimensions"),
        ({"matryoshka_dimensions": []}, "matryoshka_dimensions"),
        ({"matryoshka_layers": [0, 2]}, "matryoshka_layers"),
        ({"matryoshka_layers": [1, 3]}, "matryoshka_layers"),
        ({"matryoshka_layers": [2, 1]}, "matryoshka_layers"),
        ({"pooling": "max"}, "pooling"),
        ({"default_dimension": 65}, "default_dimension"),
        ({"default_dimension": 0}, "default_dimension"),
        ({"default_layer": 3}, "default_layer"),
        ({"default_layer": 0}, "default_layer"),
        ({"normalize": "yes"}, "normalize"),
        ({"max_seq_length": 0}, "max_seq_length"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        MatryoshkaConfig(text_config=tiny_config("bert"), **kwargs)
    assert "\n" not in str(info.value)


def test_cls_pooling_refused_for_decoder() -> None:
    with pytest.raises(ValueError, match="pooling 'cls' is not valid"):
        MatryoshkaConfig(text_config=tiny_config("qwen3"), pooling="cls")


def test_defaults_follow_the_backbone() -> None:
    enc = MatryoshkaConfig(text_config=tiny_config("bert"))
    assert enc.matryoshka_dimensions == [8, 16, 32, 64]
    assert enc.matryoshka_layers == [1, 2]
    assert enc.pooling == "cls" and enc.is_causal is False
    assert (enc.default_dimension, enc.default_layer) == (64, 2)
    dec = MatryoshkaConfig(text_config=tiny_config("qwen3"))
    assert dec.pooling == "last_token" and dec.is_causal is True
    assert enc.is_matryoshka is True
    with pytest.raises(ValueError, match="model_type"):
        MatryoshkaConfig(text_config={"hidden_size": 64})


def test_json_round_trip_keeps_every_key(tmp_path) -> None:
    config = MatryoshkaConfig(
        text_config=tiny_config("xlm-roberta"),
        matryoshka_dimensions=[4, 16, 64],
        matryoshka_layers=[1, 2],
        pooling="mean",
        normalize=False,
        default_dimension=16,
        default_layer=1,
        max_seq_length=77,
    )
    config.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for key in (
        "is_matryoshka",
        "matryoshka_dimensions",
        "matryoshka_layers",
        "pooling",
        "normalize",
        "default_dimension",
        "default_layer",
        "max_seq_length",
    ):
        assert raw[key] == getattr(config, key), key
    assert raw["is_matryoshka"] is True
    assert raw["text_config"]["model_type"] == "xlm-roberta"

    loaded = MatryoshkaConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.text_config).__name__ == "XLMRobertaConfig"
    assert loaded.text_config.hidden_size == 64
    # A dict text_config (what config.json holds) gives the same config.
    again = MatryoshkaConfig.from_dict(raw)
    assert again.matryoshka_dimensions == [4, 16, 64] and again.text_config.model_type == "xlm-roberta"
