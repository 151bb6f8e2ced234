"""Recipes and the runner: every recipe dry-runs offline, overrides win, bad keys fail early, runs end to end."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from mipic_hf.recipe import RecipeError, flatten_recipe, parse_recipe
from mipic_hf.recipe.plan import build_plan
from mipic_hf.run import main

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))
STSB_ROW = "main-captions\tMSRvid\t2012test\t{i:04d}\t{score:.3f}\t{a}\t{b}\n"
WORDS = "cat dog bird fish tree car road house river sky sun moon blue red green big small fast slow".split()


def write_sts_fixture(root: Path) -> Path:
    """A tiny data dir in the layout of ../shared/data (made-up sentences): stsb and sts12."""
    import random

    rng = random.Random(0)
    (root / "stsb").mkdir(parents=True)
    for name, n in (("sts-train.csv", 64), ("sts-dev.csv", 16), ("sts-test.csv", 24)):
        with open(root / "stsb" / name, "w", encoding="utf-8") as f:
            for i in range(n):
                a = " ".join(rng.choices(WORDS, k=rng.randint(4, 10)))
                b = a if i % 3 == 0 else " ".join(rng.choices(WORDS, k=rng.randint(4, 10)))
                f.write(STSB_ROW.format(i=i, score=5.0 if i % 3 == 0 else rng.random() * 4, a=a, b=b))
    sts12 = root / "sts12-16" / "STS12-en-test"
    sts12.mkdir(parents=True)
    pairs = [(" ".join(rng.choices(WORDS, k=6)), " ".join(rng.choices(WORDS, k=6))) for _ in range(20)]
    (sts12 / "STS.input.MSRvid.txt").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    (sts12 / "STS.gs.MSRvid.txt").write_text("".join(f"{rng.random() * 5:.2f}\n" for _ in pairs))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """MIPIC_DATA_DIR when it is set (CI: ../shared/data), else a fixture in the same layout."""
    existing = os.environ.get("MIPIC_DATA_DIR")
    if existing and Path(existing, "stsb", "sts-train.csv").is_file():
        return existing
    return str(write_sts_fixture(tmp_path_factory.mktemp("data")))


@pytest.fixture(autouse=True)
def _data_env(data_dir: str, monkeypatch) -> None:
    monkeypatch.setenv("MIPIC_DATA_DIR", data_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_dry_runs_offline(recipe: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main([str(recipe), "--dry_run", "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("dims", "layers", "objective", "data", "steps", "output"):
        assert word in printed
    assert not out.exists()  # a dry run writes nothing


def test_paper_recipes_resolve_the_paper_ladders(tmp_path: Path) -> None:
    recipes = Path(__file__).parent.parent / "recipes"
    plan = build_plan(parse_recipe([str(recipes / "bert-base.yaml"), "--output_dir", str(tmp_path / "o")]))
    assert plan.shape_only and plan.objective.pic.ladder[0] == (16, 2) and plan.objective.alpha == 0.4
    plan = build_plan(
        parse_recipe(
            [str(recipes / "qwen3-embedding-0.6b-lora.yaml"), "--output_dir", str(tmp_path / "o"), "--dry_run"]
        )
    )
    assert plan.config.pooling == "last_token" and plan.objective.sia.layers[-1] == 28
    assert plan.objective.alpha == 0.5 and plan.recipe.lora.use_lora


def test_command_line_overrides_win(tmp_path: Path) -> None:
    recipe = Path(__file__).parent.parent / "recipes" / "minilm-stsb.yaml"
    parsed = parse_recipe(
        [
            str(recipe),
            "--learning_rate",
            "1e-5",
            "--max_steps",
            "20",
            "--matryoshka_dimensions",
            "8",
            "16",
            "64",
            "384",
            "--output_dir",
            str(tmp_path / "x"),
            "--method",
            "2dmse",
        ]
    )
    training = parsed.training
    assert training.learning_rate == 1e-5 and training.max_steps == 20
    assert parsed.model.matryoshka_dimensions == [8, 16, 64, 384]
    assert training.output_dir == str(tmp_path / "x") and training.method == "2dmse"
    assert parsed.data.train_data == "stsb" and training.per_device_train_batch_size == 32  # the rest from the file
    assert parsed.model.fit_rotation == "before" and parsed.lora.use_lora is False  # each section in its group


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"model": {"backbon": "x"}}, "unknown key 'model.backbon'; did you mean 'backbone'"),
        ({"trainig": {"max_steps": 1}}, "unknown key 'trainig'; did you mean 'training'"),
        ({"model": {"learning_rate": 1e-5}}, "'model.learning_rate' belongs in the 'training' section"),
        ({"loss": {"metod": "mrl"}}, "did you mean 'method'"),
        ({"model": ["backbone"]}, "section 'model' must be a mapping"),
        ({"model": {"output_rotation": "before"}}, "unknown key 'model.output_rotation'; it is now 'fit_rotation'"),
    ],
)
def test_unknown_or_misplaced_keys_fail_with_the_closest_key(recipe: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        flatten_recipe(recipe)


def test_unknown_cli_option_and_wrong_types(tmp_path: Path, capsys) -> None:
    recipe = Path(__file__).parent.parent / "recipes" / "minilm-stsb.yaml"
    assert main([str(recipe), "--lerning_rate", "1e-5"]) == 2
    assert "unknown option '--lerning_rate'; did you mean 'learning_rate'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"max_steps": "many"}, "model": {"backbone": "x"}}))
    with pytest.raises(RecipeError, match="argument --max_steps/--max-steps: invalid int value: 'many'"):
        parse_recipe([str(bad)])
    assert capsys.readouterr().err == ""  # one line, raised; argparse's usage screen is not printed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--matryoshka_dimensions", "16", "8", "384"], "matryoshka_dimensions must be strictly ascending"),
        (["--matryoshka_dimensions", "8", "500"], "matryoshka_dimensions must be <= the hidden size 384"),
        (["--matryoshka_layers", "2", "7"], "matryoshka_layers must lie in 1..6"),
        (["--pic_ladder", "8:2", "16:2", "384:6"], "pic_ladder must increase in both"),
        (["--sia_layers", "0"], "sia_layers must lie in 1..6"),
        (["--pooling", "max"], "pooling must be one of"),
        (["--eval_tasks", "stsbb"], "eval.eval_tasks: unknown"),
        (["--train_kind", "quads"], "data.train_kind must be one of"),
        (["--method", "simcse"], "method must be one of"),
        (["--adapter_only", "true"], "export.adapter_only needs lora.use_lora: true"),
        (["--use_lora", "true", "--lora_dropout", "1.5"], "lora.lora_dropout must be in [0, 1)"),
        (["--push_to_hub", "true", "--hub_model_id", "me/x"], "HF_HUB_OFFLINE is set"),
        (["--eval_precisions", "float32", "int4"], "eval.eval_precisions must be among float32, int8, uint8"),
        (["--eval_target", "1.5"], "eval.eval_target must be a number in (0, 1], got 1.5"),
        (["--calibration_max_texts", "1"], "model.calibration_max_texts must be 0 (no int8 ranges) or an integer >= 2"),
        (["--calibration_max_texts", "0"], "eval.eval_precisions int8/uint8 need calibrated ranges"),
        (["--eval_tasks", "stsb", "../no/such/beir"], "eval.eval_tasks: unknown ['../no/such/beir']"),
    ],
)
def test_bad_values_fail_before_any_work(overrides: list[str], message: str, tmp_path: Path, capsys) -> None:
    recipe = Path(__file__).parent.parent / "recipes" / "minilm-stsb.yaml"
    out = tmp_path / "out"
    assert main([str(recipe), "--output_dir", str(out), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_non_empty_output_dir_is_not_overwritten(tmp_path: Path, capsys) -> None:
    recipe = Path(__file__).parent.parent / "recipes" / "minilm-stsb.yaml"
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([str(recipe), "--output_dir", str(out), "--dry_run"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main([str(recipe), "--output_dir", str(out), "--dry_run", "--overwrite_output_dir"]) == 0
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    assert main([str(recipe), "--output_dir", str(tmp_path / "new"), "--export_dir", str(taken), "--dry_run"]) == 2
    assert "export.export_dir" in capsys.readouterr().err and (taken / "mine.txt").read_text() == "mine"


KIND_FILES = {
    "sentences": ("train.txt", lambda rows: "\n".join(r[0] for r in rows) + "\n"),
    "pairs": ("train.csv", lambda rows: "anchor,positive\n" + "".join(f"{a},{b}\n" for a, b, *_ in rows)),
    "triplets": (
        "train.tsv",
        lambda rows: "anchor\tpositive\tnegative\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c, *_ in rows),
    ),
    "scored_pairs": (
        "train.jsonl",
        lambda rows: "".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, _, s, _ in rows),
    ),
    "labeled": ("train.csv", lambda rows: "text,label\n" + "".join(f"{a},{y}\n" for a, *_, y in rows)),
}


@pytest.mark.parametrize("kind", list(KIND_FILES))
def test_each_data_kind_trains_from_local_files(kind: str, tiny_backbone: str, tmp_path: Path) -> None:
    import random

    rng = random.Random(1)
    rows = []
    for i in range(24):
        a = " ".join(rng.choices(WORDS, k=5))
        rows.append((a, a + " " + rng.choice(WORDS), " ".join(rng.choices(WORDS, k=5)), rng.random() * 5, i % 3))
    name, render = KIND_FILES[kind]
    path = tmp_path / name
    path.write_text(render(rows))
    out = tmp_path / "run"
    code = main(
        [
            "--backbone",
            tiny_backbone,
            "--matryoshka_dimensions",
            "8",
            "16",
            "64",
            "--train_data",
            str(path),
            "--train_kind",
            kind,
            "--max_steps",
            "3",
            "--per_device_train_batch_size",
            "8",
            "--eval_tasks",
            "none",
            "--output_dir",
            str(out),
            "--report_to",
            "none",
            "--save_strategy",
            "no",
            "--learning_rate",
            "1e-3",
            "--use_cpu",
            "true",
        ]
    )
    assert code == 0
    assert (out / "model.safetensors").is_file() and (out / "mipic_recipe.yaml").is_file()
    state = json.loads((out / "config.json").read_text())
    assert state["matryoshka_dimensions"] == [8, 16, 64]


def test_quickstart_end_to_end_on_minilm(tmp_path: Path, capsys, minilm_path: str) -> None:
    recipe = Path(__file__).parent.parent / "recipes" / "quickstart.yaml"
    out = tmp_path / "quick"
    code = main(
        [
            str(recipe),
            "--output_dir",
            str(out),
            "--eval_tasks",
            "stsb",  # the recipe's SciFact (5,183 abstracts, twice) is left to the README's run
            "--eval_max_samples",
            "200",
            "--rotation_max_texts",
            "2000",
            "--calibration_max_texts",
            "500",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    # The summary puts the starting model's score beside the trained one at every dim.
    lines = [line for line in printed.splitlines() if line.lstrip().startswith("d=")]
    assert len(lines) == 7 and all("; base " in line for line in lines)
    assert (out / "model.safetensors").is_file() and (out / "modeling_mipic.py").is_file()
    eval_dir = out / "eval"
    assert (eval_dir / "eval_results.json").is_file() and (eval_dir / "eval_results.md").is_file()
    pngs = sorted(p.name for p in eval_dir.glob("*.png"))
    assert pngs == ["stsb_frontier.png", "stsb_heatmap.png", "stsb_score_vs_dim.png"]
    for png in pngs:
        assert (eval_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((eval_dir / "eval_results.json").read_text())
    scores = results["tasks"]["stsb"]["scores"]
    assert set(scores) == {"L2", "L4", "L6"} and all(len(v) == 7 for v in scores.values())
    # No training step: the full width's cosines are the base's (its sign bits: below)
    base = results["base"]["tasks"]["stsb"]
    for layer in ("L2", "L4", "L6"):
        assert scores[layer]["D384"]["spearman"] == pytest.approx(base["scores"][layer]["D384"]["spearman"], abs=1e-3)
    assert scores["L6"]["D32"]["spearman"] != pytest.approx(base["scores"]["L6"]["D32"]["spearman"], abs=1e-3)
    # int8 and binary cells, int8 from the ranges the run calibrated and stored; training pairs left out
    assert set(results["tasks"]["stsb"]["quantized"]) == {"int8", "binary"}  # rescoring is for retrieval only
    assert results["calibration"] == {"source": "model"}
    assert "dropped_as_training" in results["tasks"]["stsb"]["num_examples"]
    from mipic_hf.evaluation.frontier import target_line

    assert target_line(results, "stsb", 0.99) in printed
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_ranges"] is True and config["full_width_codes"] == "backbone"
    assert config["mipic_training"]["steps"] == 0

    # The export loads unchanged in transformers and sentence-transformers, with the same vectors.
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    export = out / "export"
    assert str(export) in printed
    model = AutoModel.from_pretrained(export, trust_remote_code=True)
    texts = ["an owl sleeps in the barn", "cold coffee on a winter desk"]
    st = SentenceTransformer(str(export), trust_remote_code=True, truncate_dim=64)
    np.testing.assert_allclose(
        st.encode(texts, normalize_embeddings=True), model.encode(texts, dimension=64), atol=1e-5
    )
    from mipic_hf import MatryoshkaModel

    # the full width's sign bits are the start's on every coordinate it uses (MiniLM leaves 3 of 384 at |z| < 1e-31,
    # whose sign is float noise in either basis)
    start = MatryoshkaModel.from_backbone(minilm_path).eval()
    live = np.abs(start.encode(texts)) > 1e-6
    ours, theirs = (np.unpackbits(m.encode(texts, precision="ubinary"), axis=-1) for m in (model, start))
    np.testing.assert_array_equal(ours[live], theirs[live])
    assert live.sum() >= 2 * 381
    card = ModelCard.load(export / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert "taken in the starting model's own coordinates" in card.text
    assert len(card.data.eval_results) == 7


def test_lora_run_trains_adapters_and_exports_a_merged_model(tiny_backbone: str, tmp_path: Path, capsys) -> None:
    from safetensors import safe_open

    data = tmp_path / "train.txt"
    data.write_text("\n".join(" ".join(WORDS[i : i + 5]) for i in range(12)) + "\n")
    common = [
        "--backbone",
        tiny_backbone,
        "--matryoshka_dimensions",
        "8",
        "64",
        "--train_data",
        str(data),
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--eval_tasks",
        "none",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--use_cpu",
        "true",
        "--use_lora",
        "true",
    ]
    assert main([*common, "--lora_target_modules", "qkv_proj", "--output_dir", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "lora.lora_target_modules: ['qkv_proj'] not found; candidates:" in err and "query" in err
    out = tmp_path / "lora"
    assert main([*common, "--lora_target_modules", "query", "value", "--output_dir", str(out)]) == 0
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k for k in keys)
    assert all(k.startswith("backbone.") and "base_model" not in k for k in keys if k != "quantization.ranges")
    assert "quantization.ranges" in keys  # merged: the run calibrated and stored int8 ranges


def test_drop_invalid_rows_is_counted_in_the_plan_and_the_summary(tiny_backbone: str, tmp_path: Path, capsys) -> None:
    data = tmp_path / "pairs.csv"
    data.write_text("sentence1,sentence2,score\n" + "".join(f"s{i},t{i},{i % 5}.0\n" for i in range(10)) + "x,,1.0\n")
    out = tmp_path / "run"
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", str(data)),
        *("--max_steps", "1", "--per_device_train_batch_size", "4", "--eval_tasks", "none", "--report_to", "none"),
        *("--use_cpu", "true", "--save_strategy", "no", "--export_model", "false", "--output_dir", str(out)),
        *("--drop_invalid_rows", "true", "--disable_tqdm", "true", "--train_kind", "scored_pairs"),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "10 rows, kind scored_pairs" in printed and "1 row(s) with an invalid text cell dropped" in printed
    assert "1 training row(s) with an invalid text cell dropped" in printed  # the summary
    summary = json.loads((out / "config.json").read_text())["mipic_training"]
    assert summary["train_rows"] == 10 and summary["dropped_rows"] == 1


def test_torch_compile_trains_the_encoder_and_objective_like_eager(tmp_path: Path, minilm_path: str) -> None:
    """``torch_compile: true`` goes through the recipe to the Trainer, which compiles the whole training module
    (encoder + objective); with dropout off the compiled run ends at the eager run's weights. The ``aot_eager``
    backend traces exactly what inductor would (dynamo + AOTAutograd) without generating C++ code."""
    from conftest import tiny_config
    from safetensors.numpy import load_file
    from torch._dynamo.utils import counters
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = tiny_config("bert", vocab_size=tokenizer.vocab_size)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    data = tmp_path / "train.txt"
    data.write_text("\n".join(f"sentence number {i} about a {w} river" for i, w in enumerate("abcdefghijkl")) + "\n")
    weights = {}
    compiled = ["--torch_compile", "true", "--torch_compile_backend", "aot_eager"]
    for name, extra in (("eager", []), ("compiled", compiled)):
        args = [
            *("--backbone", str(tmp_path / "backbone"), "--train_data", str(data)),
            *("--matryoshka_dimensions", "8", "64"),
            *("--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3"),
            *("--eval_tasks", "none"),
            *("--report_to", "none", "--save_strategy", "no", "--use_cpu", "true"),
            *("--output_dir", str(tmp_path / name)),
        ]
        counters.clear()
        assert main([*args, *extra]) == 0, name
        assert (counters["aot_autograd"]["total"] > 0) == (name == "compiled"), dict(counters["aot_autograd"])
        weights[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert weights["eager"].keys() == weights["compiled"].keys()
    start = load_file(str(tmp_path / "backbone" / "model.safetensors"))
    eager = {k.removeprefix("backbone."): v for k, v in weights["eager"].items()}
    assert max(float(np.abs(eager[k] - v).max()) for k, v in start.items() if k in eager) > 1e-3, "the runs trained"
    for key, value in weights["eager"].items():
        np.testing.assert_allclose(weights["compiled"][key], value, atol=1e-5, err_msg=key)
