"""Standard budget folders (``export --standard``): stock clients load them with no remote code and compute
``MatryoshkaModel.encode(..., dimension=D, layer=L)``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ARCHS, tiny_config
from safetensors import safe_open
from test_hub_format import run_fresh
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel
from mipic_hf.cli.export import main
from mipic_hf.hub.budget import Budget
from mipic_hf.hub.export import export_run
from mipic_hf.hub.standard import is_standard_folder

TEXTS = ["the cat sat on the mat", "a", "blue river under a big moon tonight, far from the town", "hello there"]
BUDGETS = [(2, 16), (3, 64)]  # (layer, dim): an early exit with a cut, and the full model
ROTATED = {"bert", "qwen3"}  # XLM-R keeps no rotation: an identity cut, and no Dense module at full width
UNNORMALIZED = {"xlm-roberta"}  # and no Normalize module: vectors as pooled and cut

# Runs in a new interpreter without mipic_hf: sentence-transformers (no trust_remote_code) and AutoModel + the
# pooling + the Dense module + Normalize, written out with numpy, as a client of a stock folder would.
CLIENT = r"""
import json, sys
import numpy as np, torch
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer
from transformers import AutoConfig, AutoModel, AutoTokenizer

folder, texts = sys.argv[1], json.loads(sys.argv[2])
st = SentenceTransformer(folder, device="cpu").encode(texts, convert_to_numpy=True)
tokenizer, config = AutoTokenizer.from_pretrained(folder), AutoConfig.from_pretrained(folder)
model = AutoModel.from_pretrained(folder).eval()
batch = tokenizer(texts, padding=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state.numpy()
mask = batch["attention_mask"].numpy()
pooling = json.load(open(folder + "/1_Pooling/config.json"))
if pooling["pooling_mode_mean_tokens"]:
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
elif pooling["pooling_mode_lasttoken"]:
    last = np.array([np.nonzero(row)[0].max() for row in mask])
    pooled = hidden[np.arange(len(texts)), last]
else:
    pooled = hidden[:, 0]
modules = [m["type"].rsplit(".", 1)[1] for m in json.load(open(folder + "/modules.json"))]
if "Dense" in modules:
    dense = load_file(folder + "/2_Dense/model.safetensors")
    pooled = pooled @ dense["linear.weight"].T + dense.get("linear.bias", 0.0)
if "Normalize" in modules:
    pooled = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
print("RESULT" + json.dumps({
    "st": st.tolist(), "auto": pooled.tolist(), "modules": modules,
    "remote": sorted(m for m in sys.modules if m.startswith(("transformers_modules", "mipic_hf"))),
    "tokenizer": type(tokenizer).__name__, "padding_side": tokenizer.padding_side,
    "layers": config.num_hidden_layers, "dims": config.matryoshka_dimensions, "is_matryoshka": config.is_matryoshka,
}))
"""


def run_client(folder: Path, cwd: Path) -> tuple[dict, str]:
    return run_fresh(CLIENT, str(folder), json.dumps(TEXTS), cwd=cwd)


def trained_folder(root: Path, arch: str, tokenizer) -> tuple[Path, MatryoshkaModel]:
    """A saved 3-layer MatryoshkaModel (what a run folder holds), with a random output rotation for ROTATED."""
    text_config = tiny_config(arch, vocab_size=tokenizer.vocab_size, num_layers=3)
    if arch == "xlm-roberta":
        text_config.pad_token_id = tokenizer.pad_token_id
    config = MatryoshkaConfig(
        text_config=text_config,
        matryoshka_dimensions=[8, 16, 64],
        matryoshka_layers=[1, 2, 3],
        pooling="last_token" if arch == "qwen3" else "mean",
        normalize=arch not in UNNORMALIZED,
    )
    model = MatryoshkaModel(config).eval()
    if arch in ROTATED:
        matrix, _ = torch.linalg.qr(torch.randn(64, 64))
        model.set_output_rotation(0.1 * torch.randn(64), matrix)
    folder = root / f"{arch}-run"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.mark.parametrize("arch", ARCHS)
def test_stock_clients_compute_encode_at_the_budget(arch: str, tokenizer, tmp_path: Path) -> None:
    source, model = trained_folder(tmp_path, arch, tokenizer)
    out = tmp_path / "standard"
    args = [str(source), str(out), "--standard"] + [a for L, D in BUDGETS for a in ("--budget", f"{L}:{D}")]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["layer2-dim16", "layer3-dim64"]
    for layer, dim in BUDGETS:
        folder = out / Budget(layer, dim).name
        assert is_standard_folder(folder) and not list(folder.glob("*.py"))
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == [type(model.backbone).__name__] and "auto_map" not in config
        with safe_open(str(folder / "model.safetensors"), "pt") as weights:
            blocks = {m[1] for k in weights.keys() if (m := re.match(r"(?:.*\.)?layers?\.(\d+)\.", k))}
        assert blocks == {str(i) for i in range(layer)}, blocks  # only the first L blocks travel

        result, stderr = run_client(folder, tmp_path)
        ours = model.encode(TEXTS, tokenizer, dimension=dim, layer=layer)
        np.testing.assert_allclose(np.array(result["st"]), ours, atol=1e-5)
        np.testing.assert_allclose(np.array(result["auto"]), ours, atol=1e-5)
        assert result["remote"] == [], "a stock folder imports no remote code and no mipic_hf"
        assert result["layers"] == layer and result["is_matryoshka"] is True
        assert result["dims"] == [d for d in (8, 16, 64) if d <= dim]
        dense = arch in ROTATED or dim < 64
        normalize = [] if arch in UNNORMALIZED else ["Normalize"]
        assert result["modules"] == ["Transformer", "Pooling", *(["Dense"] if dense else []), *normalize]
        assert result["padding_side"] == ("left" if arch == "qwen3" else "right")
        for noise in ("custom code", "MISSING", "newly initialized", "You are using a model of type"):
            assert noise not in stderr, stderr[-2000:]


def test_an_export_folder_is_a_source_and_the_default_budget_is_the_default(tokenizer, tmp_path: Path) -> None:
    run, model = trained_folder(tmp_path, "bert", tokenizer)
    export = export_run(run, tmp_path / "export")
    main_card = (export / "README.md").read_text()  # the export's card says how to get here
    assert "python -m mipic_hf.export model served --standard --budget 3:64 --budget 2:64" in main_card
    assert "vllm serve <org>/<name>-layer3-dim64" in main_card
    out = tmp_path / "served"
    assert main([str(export), str(out), "--standard", "--repo_id", "org/model-layer3-dim64"]) == 0
    config = json.loads((out / "config.json").read_text())  # one budget: OUT_DIR is the folder
    assert config["num_hidden_layers"] == 3 and config["mipic_budget"]["dimension"] == 64
    card = (out / "README.md").read_text()
    assert 'SentenceTransformer("org/model-layer3-dim64")' in card and "trust_remote_code" not in card
    from sentence_transformers import SentenceTransformer

    served = SentenceTransformer(str(out), device="cpu").encode(TEXTS)
    np.testing.assert_allclose(served, model.encode(TEXTS, tokenizer), atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "3:32"], "budget 3:32: dimension 32 is not a trained dimension; allowed: 8, 16, 64"),
        (["--budget", "4:16"], "budget 4:16: layer 4 is not a trained exit layer; allowed: 1, 2, 3 (the backbone"),
        (["--budget", "2:16", "--budget", "6x384"], "--budget: expected LAYER:DIM such as 4:64 (positive integers)"),
    ],
)
def test_budgets_the_model_was_not_trained_at_are_refused(
    extra: list[str], message: str, tokenizer, tmp_path: Path, capsys
) -> None:
    source, _ = trained_folder(tmp_path, "bert", tokenizer)
    capsys.readouterr()  # what saving the model printed
    out = tmp_path / "out"
    assert main([str(source), str(out), "--standard", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert-run"]  # nothing written, no partial folder


def test_an_existing_out_dir_is_kept_without_overwrite(tokenizer, tmp_path: Path, capsys) -> None:
    source, _ = trained_folder(tmp_path, "bert", tokenizer)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main([str(source), str(out), "--standard"]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert main([str(source), str(out), "--standard", "--overwrite"]) == 0
    assert not (out / "mine.txt").exists() and is_standard_folder(out)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"model_type": "my_custom_encoder"}, "backbone type 'my_custom_encoder' has no standard export"),
        ({"auto_map": {"AutoModel": "modeling_x.XModel"}}, "backbone type 'bert' has no standard export"),
        ({"default_dimension": 32}, "budget 3:32: dimension 32 is not a trained dimension"),  # the default budget
    ],
)
def test_a_backbone_or_default_budget_with_no_standard_export(
    edit: dict, message: str, tokenizer, tmp_path: Path, capsys
) -> None:
    source, _ = trained_folder(tmp_path, "bert", tokenizer)
    config = json.loads((source / "config.json").read_text())
    target = config if "default_dimension" in edit else config["text_config"]  # a remote-code or unknown backbone
    target.update(edit)
    (source / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main([str(source), str(tmp_path / "out"), "--standard"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


# --- the remote-code export: where the tokenizer loads quietly ------------------------------------------------
QUIET = r"""
import sys
{prelude}
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1]{kwargs})
print("RESULT" + type(tokenizer).__name__)
"""


@pytest.mark.parametrize(
    ("prelude", "kwargs"),
    [("import mipic_hf  # registers the config class locally", ""), ("", ", trust_remote_code=True")],
)
def test_the_remote_code_export_tokenizer_loads_with_no_prompt_and_no_warning(
    prelude: str, kwargs: str, tokenizer, tmp_path: Path
) -> None:
    run, _ = trained_folder(tmp_path, "bert", tokenizer)
    export = export_run(run, tmp_path / "export")
    printed, stderr = run_fresh(QUIET.format(prelude=prelude, kwargs=kwargs), str(export), cwd=tmp_path, timeout=120)
    assert printed == type(tokenizer).__name__
    assert "custom code" not in stderr and "model of type" not in stderr, stderr
