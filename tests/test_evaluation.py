"""Evaluation: offline metrics, the (layer, dim) grid with real early exits, reports, CLI and the callback."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import markdown_rows, tiny_config
from datasets import Dataset
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, average_precision_score, f1_score
from transformers import AutoTokenizer, TrainerControl, TrainerState

from mipic_hf import MatryoshkaConfig, MatryoshkaModel, MIPICTrainer, MIPICTrainingArguments
from mipic_hf.evaluation import (
    ClassificationScores,
    PairClassificationScores,
    STSSpearman,
    average_main_score,
    evaluate_grid,
    main_score,
    markdown_table,
    summary_lines,
    write_outputs,
)
from mipic_hf.evaluation import grid as grid_module
from mipic_hf.evaluation.report import task_table
from mipic_hf.training.callback import MatryoshkaEvalCallback, grid_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WORDS = "cat dog bird fish tree car road house river sky sun moon blue red green big small fast slow rain".split()
DIMS, LAYERS = [8, 16, 64], [1, 3]

# ----- a fake benchmark registry (no real data) ------------------------------------------------------------
FAKE_BENCHMARKS = {
    "fake_sts": SimpleNamespace(task="sts"),
    "fake_cls": SimpleNamespace(task="classification"),
    "fake_pair": SimpleNamespace(task="pair_classification"),
}


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def _fake_split(name: str, split: str) -> Dataset:
    rng = random.Random(f"{name}-{split}")
    n = 24
    a = [_sentence(rng) for _ in range(n)]
    # No pair of identical texts: cosines of exactly 1 would tie and make rank metrics depend on rounding.
    near = [" ".join(s.split()[:-1] + [rng.choice([w for w in WORDS if w != s.split()[-1]])]) for s in a]
    if name == "fake_sts":
        other = [s + " sky" if i % 3 == 0 else (near[i] if i % 3 == 1 else _sentence(rng)) for i, s in enumerate(a)]
        other[5] = a[4]  # a repeated text is encoded once
        scores = [float(5 - i % 3 * 2) for i in range(n)]
        return Dataset.from_dict({"sentence1": a, "sentence2": other, "score": scores})
    if name == "fake_pair":
        labels = [i % 2 for i in range(n)]
        other = [near[i] if y else _sentence(rng) for i, y in enumerate(labels)]
        return Dataset.from_dict({"sentence1": a, "sentence2": other, "label": labels})
    labels = [i % 3 for i in range(n)]
    texts = [f"{['cat', 'car', 'rain'][y]} {s}" for s, y in zip(a, labels, strict=True)]
    return Dataset.from_dict({"text": texts, "label": labels})


def fake_load(name: str, split: str = "test", data_dir: str | None = None, max_samples: int | None = None) -> Dataset:
    assert name in FAKE_BENCHMARKS and split in ("test", "train")
    ds = _fake_split(name, split)
    return ds.select(range(min(max_samples, len(ds)))) if max_samples else ds


@pytest.fixture
def fake_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the default registry / loader (mipic_hf.data) to the fake tasks."""
    monkeypatch.setattr(grid_module, "get_benchmarks", lambda: FAKE_BENCHMARKS)
    monkeypatch.setattr(grid_module, "get_loader", lambda: fake_load)


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


def tiny_model(tokenizer, num_layers: int = 3) -> MatryoshkaModel:
    torch.manual_seed(0)
    text_config = tiny_config("bert", vocab_size=tokenizer.vocab_size, num_layers=num_layers)
    config = MatryoshkaConfig(text_config=text_config, matryoshka_dimensions=[8, 16, 32, 64], pooling="mean")
    return MatryoshkaModel(config).eval()


@pytest.fixture(scope="module")
def grid_run(tokenizer):
    """One grid over the three fake tasks, with every encode call and every block call recorded."""
    model = tiny_model(tokenizer)
    calls, block_calls = [], [0, 0, 0]
    original = model.encode_layers

    def spy(texts, tokenizer=None, layers=None, dimension=None, **kwargs):
        calls.append({"n": len(texts), "unique": len(set(texts)), "dimension": dimension, "layers": layers, **kwargs})
        return original(texts, tokenizer, layers, dimension=dimension, **kwargs)

    model.encode_layers = spy
    _, _, blocks = model.block_list()
    hooks = [
        block.register_forward_hook(lambda *_, i=i: block_calls.__setitem__(i, block_calls[i] + 1))
        for i, block in enumerate(blocks)
    ]
    results = evaluate_grid(
        model,
        tokenizer,
        ["fake_sts", "fake_cls", "fake_pair"],
        dims=DIMS,
        layers=LAYERS,
        batch_size=16,
        show_progress_bar=False,
        benchmarks=FAKE_BENCHMARKS,
        load_fn=fake_load,
    )
    del model.encode_layers
    for hook in hooks:
        hook.remove()
    return SimpleNamespace(model=model, results=results, calls=calls, block_calls=block_calls)


# ----- metrics ------------------------------------------------------------------------------------------------
def test_sts_spearman_matches_scipy() -> None:
    pred = [0.91, 0.12, 0.55, 0.55, -0.3, 0.7, 0.2]
    gold = [4.8, 1.0, 3.0, 2.5, 0.0, 3.0, 1.5]
    out = STSSpearman().compute(predictions=pred, references=gold)
    assert out["spearman"] == pytest.approx(100 * spearmanr(pred, gold).statistic)
    assert out["pearson"] == pytest.approx(100 * pearsonr(pred, gold).statistic)
    metric = STSSpearman()  # instantiated directly, no Hub, no module path
    assert metric.info.description and "predictions" in metric.features
    assert metric.compute(predictions=[1.0, 2.0, 3.0], references=[3.0, 2.0, 1.0])["spearman"] == pytest.approx(-100)


def test_classification_scores_match_sklearn() -> None:
    pred, gold = [0, 1, 2, 1, 1, 0, 2, 2], [0, 1, 1, 1, 2, 0, 2, 0]
    out = ClassificationScores().compute(predictions=pred, references=gold)
    assert out["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred)) == pytest.approx(62.5)
    assert out["macro_f1"] == pytest.approx(100 * f1_score(gold, pred, average="macro"))


def test_pair_classification_scores_by_hand() -> None:
    metric = PairClassificationScores()
    separable = metric.compute(predictions=[0.9, 0.8, 0.3, 0.1, 0.7], references=[1, 1, 0, 0, 1])
    assert separable == pytest.approx({"accuracy": 100.0, "f1": 100.0, "ap": 100.0})
    # Sorted: 0.9(+) 0.8(-) 0.5(+) 0.2(+) 0.1(-). Best accuracy 4/5 and best F1 2*3/(4+3) with threshold
    # between 0.2 and 0.1; AP = (1/1 + 2/3 + 3/4) / 3.
    scores, labels = [0.9, 0.2, 0.8, 0.1, 0.5], [1, 1, 0, 0, 1]
    out = metric.compute(predictions=scores, references=labels)
    assert out["accuracy"] == pytest.approx(80.0)
    assert out["f1"] == pytest.approx(100 * 6 / 7)
    assert out["ap"] == pytest.approx(100 * (1 + 2 / 3 + 3 / 4) / 3)
    assert out["ap"] == pytest.approx(100 * average_precision_score(labels, scores))
    # Tied scores can't be split by any threshold: all-positive or all-negative only.
    tied = metric.compute(predictions=[0.5, 0.5, 0.5, 0.5], references=[1, 0, 0, 0])
    assert tied["accuracy"] == pytest.approx(75.0) and tied["f1"] == pytest.approx(40.0)


# ----- grid -----------------------------------------------------------------------------------------------------
def test_grid_has_one_entry_per_layer_and_dim(grid_run) -> None:
    results = grid_run.results
    assert results["dims"] == DIMS and results["layers"] == LAYERS
    expected = {"fake_sts": ("sts", "spearman"), "fake_cls": ("classification", "accuracy")}
    expected["fake_pair"] = ("pair_classification", "ap")
    metric_names = {"sts": {"spearman", "pearson"}, "classification": {"accuracy", "macro_f1"}}
    metric_names["pair_classification"] = {"accuracy", "f1", "ap"}
    for task, (task_type, main) in expected.items():
        entry = results["tasks"][task]
        assert (entry["task_type"], entry["main_metric"]) == (task_type, main)
        assert set(entry["scores"]) == {f"L{lay}" for lay in LAYERS}
        for cells in entry["scores"].values():
            assert set(cells) == {f"D{d}" for d in DIMS}
            for scores in cells.values():
                assert set(scores) == metric_names[task_type]
    assert results["tasks"]["fake_cls"]["num_examples"] == {"test": 24, "train": 24}
    json.loads(json.dumps(results))  # JSON-serialisable
    cells = [main_score(results, t, lay, d) for t in expected for lay in LAYERS for d in DIMS]
    assert average_main_score(results) == pytest.approx(np.mean(cells))
    assert average_main_score(results, layer=1, dim=8) == pytest.approx(
        np.mean([main_score(results, t, 1, 8) for t in expected])
    )


def test_grid_encodes_each_task_once_up_to_the_deepest_exit(grid_run) -> None:
    calls = grid_run.calls
    # One full-width pass over the distinct texts per task, for every exit layer at once, never one per dim.
    assert [c["layers"] for c in calls] == [LAYERS] * 3
    assert all(c["dimension"] == 64 and c["n"] == c["unique"] for c in calls)
    assert calls[0]["n"] < 48  # fake_sts: 24 pairs with repeated texts
    batches = sum(-(-c["n"] // 16) for c in calls)
    # Every block runs once per batch (the deepest exit is the last layer), not once per exit layer.
    assert grid_run.block_calls == [batches, batches, batches]


def test_sliced_scores_equal_encoding_at_that_dimension(grid_run, tokenizer) -> None:
    model, results = grid_run.model, grid_run.results
    for task, metric in (("fake_sts", STSSpearman()), ("fake_pair", PairClassificationScores())):
        test = fake_load(task)
        # Encode the distinct texts in one call with the grid's batch size: the same padding groups, so the
        # only difference left is cutting after encoding at full width vs encoding at dimension=16.
        texts = list(dict.fromkeys(list(test["sentence1"]) + list(test["sentence2"])))
        emb = model.encode(texts, tokenizer, dimension=16, layer=1, batch_size=16)
        row = {t: i for i, t in enumerate(texts)}
        a, b = emb[[row[t] for t in test["sentence1"]]], emb[[row[t] for t in test["sentence2"]]]
        gold = list(test["score"] if task == "fake_sts" else test["label"])
        direct = metric.compute(predictions=(a * b).sum(axis=1), references=gold)
        assert results["tasks"][task]["scores"]["L1"]["D16"] == pytest.approx(direct, abs=1e-4)
    # The classification probe: a logistic regression fitted on the train split's cut embeddings, scored on test
    from sklearn.linear_model import LogisticRegression

    train, test = fake_load("fake_cls", "train"), fake_load("fake_cls", "test")
    fit = model.encode(list(train["text"]), tokenizer, dimension=16, layer=1, batch_size=16)
    probe = LogisticRegression(max_iter=1000, random_state=0).fit(fit, list(train["label"]))
    predicted = probe.predict(model.encode(list(test["text"]), tokenizer, dimension=16, layer=1, batch_size=16))
    gold = list(test["label"])
    cls = results["tasks"]["fake_cls"]["scores"]["L1"]["D16"]
    assert cls["accuracy"] == pytest.approx(100 * accuracy_score(gold, predicted), abs=1e-9)
    assert cls["macro_f1"] == pytest.approx(100 * f1_score(gold, predicted, average="macro"), abs=1e-9)
    full = model.encode(["a red car", "the sun"], tokenizer, layer=3)
    cut = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, model.encode(["a red car", "the sun"], tokenizer, dimension=8, layer=3), atol=1e-6)


def test_grid_validates_before_any_work(tokenizer) -> None:
    model = tiny_model(tokenizer, num_layers=2)

    def no_load(*args, **kwargs):
        raise AssertionError("loaded data before validating")

    kw = dict(benchmarks=FAKE_BENCHMARKS, load_fn=no_load, show_progress_bar=False)
    for bad, message in (
        ({"dims": [8, 65]}, r"^dims must .*1\.\.64"),
        ({"dims": []}, "^dims must"),
        ({"layers": [0, 1]}, r"^layers must .*1\.\.2"),
        ({"layers": [3]}, "^layers must"),
        ({"tasks": ["fake_sts", "nope"]}, "unknown task.*nope.*known tasks: fake_cls, fake_pair, fake_sts"),
    ):
        args = {"tasks": ["fake_sts"], **bad}
        with pytest.raises(ValueError, match=message) as info:
            evaluate_grid(model, tokenizer, args.pop("tasks"), **args, **kw)
        assert "\n" not in str(info.value)


def test_max_samples_takes_a_seeded_random_subset_in_order() -> None:
    data = Dataset.from_dict({"text": [f"t{i}" for i in range(100)], "label": [i // 50 for i in range(100)]})
    sub = grid_module.sample_rows(data, 20)
    rows = [int(t[1:]) for t in sub["text"]]
    assert len(rows) == 20 and rows == sorted(rows) and set(sub["label"]) == {0, 1}  # not the head: both classes
    assert list(grid_module.sample_rows(data, 20)["text"]) == list(sub["text"])
    assert grid_module.sample_rows(data, 200) is data and grid_module.sample_rows(data, None) is data


# ----- reports ---------------------------------------------------------------------------------------------------
def test_write_outputs(grid_run, tmp_path: Path) -> None:
    results = grid_run.results
    paths = write_outputs(results, tmp_path / "out")
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(results))
    md = paths["markdown"].read_text()
    assert md == markdown_table(results)
    rows = markdown_rows(md)
    assert "### fake_sts (sts, spearman)" in md and ["layer", "d=8", "d=16", "d=64"] in rows
    assert ["L1", *(f"{main_score(results, 'fake_sts', 1, d):.2f}" for d in DIMS)] in rows
    for task in results["tasks"]:
        for kind in ("score_vs_dim", "heatmap"):
            path = paths[f"{task}_{kind}"]
            assert path == tmp_path / "out" / f"{task}_{kind}.png"
            assert path.read_bytes()[:8] == PNG_MAGIC
    lines = summary_lines(results)
    assert len(lines) == len(DIMS) and lines[0].startswith("d=8:") and "fake_pair ap" in lines[0]
    from mipic_hf.evaluation.frontier import target_line

    with_target = summary_lines(results, 0.95)
    assert with_target[: len(DIMS)] == lines
    assert with_target[len(DIMS) :] == [target_line(results, task, 0.95) for task in results["tasks"]]
    assert paths["fake_sts_frontier"].read_bytes()[:8] == PNG_MAGIC


def test_base_scores_beside_the_trained_ones(grid_run) -> None:
    """With results["base"] (the starting checkpoint), every table row gets a base row and every summary line the
    base score at the same budget and the difference."""
    import copy

    results = copy.deepcopy(grid_run.results)
    base = copy.deepcopy(grid_run.results)
    for layers in base["tasks"]["fake_sts"]["scores"].values():
        for cells in layers.values():
            cells["spearman"] -= 1.25
    results["base"] = {"model": "start", "tasks": base["tasks"]}
    table = task_table(results, "fake_sts")
    trained, before = main_score(results, "fake_sts", 1, 8), main_score(base, "fake_sts", 1, 8)
    rows = {row[0]: row[1] for row in markdown_rows(table)}
    assert rows["L1 base"] == f"{before:.2f}" and rows["L1"] == f"{trained:.2f}"
    assert "base: the starting checkpoint (start)" in table
    line = summary_lines(results)[0]
    layer = max(results["layers"], key=lambda lay: main_score(results, "fake_sts", lay, 8))
    score, expected = main_score(results, "fake_sts", layer, 8), main_score(base, "fake_sts", layer, 8)
    assert f"fake_sts spearman {score:.2f} (L{layer}; base {expected:.2f}, +1.25)" in line


# ----- CLI -------------------------------------------------------------------------------------------------------
def test_cli_on_saved_folders(tokenizer, tmp_path: Path, fake_registry, capsys) -> None:
    from mipic_hf.cli.evaluate import main

    model = tiny_model(tokenizer, num_layers=2)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    argv = [str(folder), "--tasks", "fake_sts,fake_pair", "--dims", "8", "64", "--layers", "1", "2"]
    assert main(argv + ["--max_samples", "12", "--no_progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "### fake_sts (sts, spearman)" in out and "d=8:" in out
    results = json.loads((folder / "eval" / "eval_results.json").read_text())
    assert results["dims"] == [8, 64] and results["layers"] == [1, 2] and results["model"] == str(folder)
    assert set(results["tasks"]) == {"fake_sts", "fake_pair"}
    assert results["tasks"]["fake_sts"]["num_examples"] == {"test": 12}
    assert (folder / "eval" / "fake_pair_heatmap.png").read_bytes()[:8] == PNG_MAGIC
    # The same scores as evaluating the in-memory model.
    direct = evaluate_grid(model, tokenizer, ["fake_sts"], [8, 64], [1, 2], max_samples=12, show_progress_bar=False)
    results["tasks"].pop("fake_pair")
    assert grid_metrics(results, all_metrics=True) == pytest.approx(grid_metrics(direct, all_metrics=True))

    # A plain backbone folder is wrapped with MatryoshkaModel.from_backbone (default dims and layers).
    backbone = tmp_path / "backbone"
    model.backbone.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    out_dir = tmp_path / "backbone_eval"
    assert main([str(backbone), "--tasks", "fake_cls", "--output_dir", str(out_dir), "--no_progress"]) == 0
    results = json.loads((out_dir / "eval_results.json").read_text())
    assert results["dims"] == [8, 16, 32, 64] and results["layers"] == [1, 2]


def test_cli_errors_are_one_line(tmp_path: Path, fake_registry, capsys) -> None:
    from mipic_hf.cli.evaluate import main

    # Unknown tasks fail before the model is loaded (this folder does not even exist).
    assert main([str(tmp_path / "missing"), "--tasks", "fake_sts,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown task(s) nope" in err and "fake_cls, fake_pair, fake_sts" in err
    assert main([str(tmp_path / "missing"), "--tasks", "fake_sts"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----- callback ---------------------------------------------------------------------------------------------------
def _trainer(tokenizer, tmp_path: Path, callback: MatryoshkaEvalCallback, **kwargs) -> MIPICTrainer:
    rng = random.Random(0)
    a = [_sentence(rng) for _ in range(16)]
    data = Dataset.from_dict({"anchor": a, "positive": [s + " " + rng.choice(WORDS) for s in a]})
    args = MIPICTrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **kwargs,
    )
    model = tiny_model(tokenizer, num_layers=2).train()
    return MIPICTrainer(
        model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer, callbacks=[callback]
    )


def test_callback_logs_per_budget_keys_during_training(tokenizer, tmp_path: Path) -> None:
    callback = MatryoshkaEvalCallback(
        tokenizer, "fake_sts,fake_pair", dims=[8, 64], layers=[1, 2], max_samples=12,
        benchmarks=FAKE_BENCHMARKS, load_fn=fake_load,
    )  # fmt: skip
    trainer = _trainer(tokenizer, tmp_path, callback, eval_strategy="steps", eval_steps=2)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "eval_matryoshka_avg" in h]
    assert len(logged) == 1 and logged[0]["step"] == 2
    keys = {f"eval_{t}_{m}_L{lay}_D{d}" for t, m in (("fake_sts", "spearman"), ("fake_pair", "ap"))
            for lay in (1, 2) for d in (8, 64)}  # fmt: skip
    assert keys <= set(logged[0])
    assert logged[0]["eval_matryoshka_avg"] == pytest.approx(average_main_score(callback.last_results))
    # trainer.evaluate() returns them too (so metric_for_best_model="matryoshka_avg" works); no re-run at one step.
    metrics = trainer.evaluate()
    assert keys <= set(metrics) and metrics["eval_matryoshka_avg"] == logged[0]["eval_matryoshka_avg"]


def test_callback_every_eval_steps_without_trainer_evaluation(tokenizer, tmp_path: Path) -> None:
    callback = MatryoshkaEvalCallback(
        tokenizer, ["fake_cls"], dims=[16], layers=[2], max_samples=12, eval_steps=1, run_on_evaluate=False,
        benchmarks=FAKE_BENCHMARKS, load_fn=fake_load,
    )  # fmt: skip
    trainer = _trainer(tokenizer, tmp_path, callback)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "eval_fake_cls_accuracy_L2_D16" in h]
    assert [h["step"] for h in logged] == [1, 2]
    # Called directly: writes into the metrics dict, returns None (not a TrainerControl), keeps the mode.
    model = trainer.model.train()
    metrics: dict[str, float] = {"eval_loss": 1.0}
    state = TrainerState(global_step=99)
    assert callback.on_evaluate(trainer.args, state, TrainerControl(), model=model, metrics=metrics) is None
    assert model.training and metrics == {"eval_loss": 1.0}  # run_on_evaluate=False
    callback.run_on_evaluate = True
    callback.on_evaluate(trainer.args, state, TrainerControl(), model=SimpleNamespace(module=model), metrics=metrics)
    assert model.training and set(metrics) == {"eval_loss", "eval_fake_cls_accuracy_L2_D16", "eval_matryoshka_avg"}
    assert state.log_history[-1]["step"] == 99
    # With the trainer attached the metrics go through trainer.log (log_history + report_to integrations).
    callback.trainer = trainer
    before = len(trainer.state.log_history)
    callback.on_evaluate(trainer.args, trainer.state, TrainerControl(), model=model)
    assert len(trainer.state.log_history) == before + 1 and "eval_matryoshka_avg" in trainer.state.log_history[-1]
    with pytest.raises(ValueError, match="eval_steps"):
        MatryoshkaEvalCallback(tokenizer, ["fake_cls"], eval_steps=0, benchmarks=FAKE_BENCHMARKS)
