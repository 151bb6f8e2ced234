"""Saved folders load in a fresh process through AutoModel + trust_remote_code, without mipic_hf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ARCHS, tiny_config
from transformers import AutoConfig, AutoModel, AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel

TEXTS = ["the cat sat on the mat", "a", "embeddings at every budget are unit vectors", "hello there"]
BUDGETS = [(16, 1), (64, 2), (8, 2)]

LOADER = r"""
import json, sys
sys.modules["mipic_hf"] = None  # make sure the package itself cannot be imported here
try:
    import mipic_hf  # noqa: F401
    raise SystemExit("mipic_hf importable")
except ImportError:
    pass
from transformers import AutoModel, AutoTokenizer
folder, texts, budgets = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
result = {
    "class": type(model).__module__ + "." + type(model).__name__,
    "config": model.config.to_dict(),
    "embeddings": {f"{d},{l}": model.encode(texts, tokenizer, dimension=d, layer=l).tolist() for d, l in budgets},
}
print("RESULT" + json.dumps(result))
"""


def _fresh_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_fresh(script: str, *args: str, cwd: Path, timeout: int = 300) -> tuple[dict | str, str]:
    """Run ``python -c script args`` in a new interpreter (no PYTHONPATH, offline, no stdin: a prompt fails it);
    returns what it printed after ``RESULT`` (JSON when it parses) and everything else it printed (stderr, and
    stdout before ``RESULT``, where an ``input()`` prompt goes)."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_fresh_env(),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, printed = proc.stdout.split("RESULT", 1)
    try:
        return json.loads(printed), proc.stderr + before
    except json.JSONDecodeError:
        return printed.strip(), proc.stderr + before


def load_in_fresh_process(folder: Path, texts: list[str], budgets: list[tuple[int, int]], cwd: Path) -> dict:
    """Load ``folder`` with AutoModel(trust_remote_code) in a new interpreter without mipic_hf; embed ``texts``."""
    result, _ = run_fresh(LOADER, str(folder), json.dumps(texts), json.dumps(budgets), cwd=cwd)
    return result


@pytest.mark.parametrize("arch", ARCHS)
def test_save_and_load_in_fresh_process(arch: str, tmp_path: Path, minilm_path: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    pooling = "last_token" if arch == "qwen3" else "mean"
    config = MatryoshkaConfig(
        text_config=tiny_config(arch, vocab_size=tokenizer.vocab_size),
        matryoshka_dimensions=[8, 16, 64],
        pooling=pooling,
        default_dimension=16,
    )
    if arch == "xlm-roberta":
        config.text_config.pad_token_id = tokenizer.pad_token_id
    model = MatryoshkaModel(config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    files = sorted(p.name for p in folder.iterdir())
    assert "model.safetensors" in files
    assert {"configuration_mipic.py", "modeling_mipic.py", "config.json"} <= set(files)
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_mipic.MatryoshkaConfig",
        "AutoModel": "modeling_mipic.MatryoshkaModel",
    }
    assert saved["is_matryoshka"] is True and saved["matryoshka_dimensions"] == [8, 16, 64]

    # The code files import only torch, transformers and the standard library.
    for name in ("configuration_mipic.py", "modeling_mipic.py"):
        for line in (folder / name).read_text().splitlines():
            if line.startswith(("import ", "from ")):
                top = line.split()[1].split(".")[0]
                assert top in sys.stdlib_module_names or top in {"torch", "transformers", ""}, line

    result = load_in_fresh_process(folder, TEXTS, BUDGETS, cwd=tmp_path)
    assert result["class"].startswith("transformers_modules.")
    assert result["config"]["matryoshka_dimensions"] == [8, 16, 64]
    assert result["config"]["default_dimension"] == 16
    for d, layer in BUDGETS:
        ours = model.encode(TEXTS, tokenizer, dimension=d, layer=layer, convert_to_tensor=True)
        theirs = torch.tensor(result["embeddings"][f"{d},{layer}"])
        torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_auto_classes_resolve_in_process(tmp_path: Path) -> None:
    model = MatryoshkaModel(MatryoshkaConfig(text_config=tiny_config("bert"))).eval()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MatryoshkaConfig)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MatryoshkaModel)
    ids = torch.randint(5, 1000, (2, 7))
    torch.testing.assert_close(loaded(input_ids=ids).embeddings, model(input_ids=ids).embeddings)
