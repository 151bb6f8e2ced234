"""benchmarks/quality.py end to end on a tiny backbone, 2 steps: ours, a sentence-transformers peer, report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

QUALITY = Path(__file__).parent.parent / "benchmarks" / "quality.py"
TABLES = QUALITY.parent / "tables.py"
ROOT = QUALITY.parent.parent
METHODS = [
    "untrained",
    "mrl",
    "mipic_default",
    "cand_ladder_exits",
    "st_matryoshka2d",
    "mrl_teacher",
    "snli_mrl_teacher",
    "untrained_pca",
    "t_rot_before",
]


def test_quality_benchmark_runs_and_reports_on_a_tiny_backbone(tiny_backbone: str, tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    runs, results = tmp_path / "runs", tmp_path / "results"
    base = [sys.executable, str(QUALITY), "--runs", str(runs), "--results", str(results)]
    cmd = [*base, "run", "--split", "validation", "--model", tiny_backbone, "--max_steps", "2", "--methods", *METHODS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for method in METHODS:
        seed = "seed0" if method.startswith("untrained") else "seed42"
        result = json.loads((runs / "validation" / method / seed / "eval" / "eval_results.json").read_text())
        archived = json.loads((results / "validation" / method / f"{seed}.json").read_text())
        made = archived.pop("provenance")  # what produced the raw file
        assert archived == result and made["method"] == method and made["seed"] == int(seed[4:])
        assert made["split"] == "validation" and len(made["commit"]) == 40 and "torch" in made["versions"]
        assert (made["recipe"] is None) == (method.startswith("untrained") or method == "st_matryoshka2d")
        # The tiny backbone (2 layers, 64 wide) gets the grid quality.py derives from its shape.
        assert result["dims"] == [8, 16, 32, 64] and result["layers"] == [1, 2]
        scores = result["tasks"]["stsb"]["scores"]
        assert set(scores) == {"L1", "L2"} and set(scores["L2"]) == {"D8", "D16", "D32", "D64"}
    untrained = json.loads((runs / "validation/untrained/seed0/eval/eval_results.json").read_text())
    trained = json.loads((runs / "validation/mrl/seed42/eval/eval_results.json").read_text())
    assert untrained["tasks"]["stsb"]["scores"] != trained["tasks"]["stsb"]["scores"]  # 2 steps did train
    rotated = json.loads((runs / "validation/untrained_pca/seed0/eval/eval_results.json").read_text())
    # The rotation changes what a prefix keeps.
    assert rotated["tasks"]["stsb"]["scores"]["L2"]["D8"] != untrained["tasks"]["stsb"]["scores"]["L2"]["D8"]

    plots = tmp_path / "plots"
    report = [*base, "report", "--split", "validation", "--plots", str(plots)]
    proc = subprocess.run(report, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in METHODS:
        assert f"| {method} (1) | " in proc.stdout
    assert "selection rule (select_default) picks:" in proc.stdout
    assert "teacher check, stsb validation" in proc.stdout
    assert "teacher selection rule (select_teacher) picks: " in proc.stdout
    assert "picks: None" not in proc.stdout.split("select_teacher")[1]
    assert (plots / "quality_stsb_validation.png").stat().st_size > 0
    assert "anchors, stsb validation, last exit" in proc.stdout
    assert "| SIA | t_abl_no_sia | [] | - | - |" in proc.stdout  # no ablation ran: no verdict


def test_clean_split_scores_the_test_models_without_training_pairs(tiny_backbone: str, tmp_path: Path) -> None:
    """``--split test_clean`` trains nothing: it scores the model ``--split test`` trained, on STS-B test and STS12
    without any row's training pairs; a row the test split has not trained is refused naming the split to run."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.data.overlap import pair_key

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    runs, results = tmp_path / "runs", tmp_path / "results"
    base = [sys.executable, str(QUALITY), "--runs", str(runs), "--results", str(results), "run"]
    tiny = ["--model", tiny_backbone, "--max_steps", "2"]
    for split, methods in (("test", ["mrl", "t_final_lora"]), ("test_clean", ["untrained", "mrl", "t_final_lora"])):
        proc = subprocess.run(
            [*base, "--split", split, *tiny, "--methods", *methods],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in (runs / "test_clean" / "mrl" / "seed42").iterdir()) == ["eval", "wall_seconds.txt"]

    trained = json.loads((results / "test" / "mrl" / "seed42.json").read_text())
    clean = json.loads((results / "test_clean" / "mrl" / "seed42.json").read_text())
    assert clean["provenance"]["split"] == "test_clean"
    # The LoRA row saves its adapter and the merged model, which test_clean loads as any other row's.
    lora_run = runs / "test" / "t_final_lora" / "seed42"
    assert (lora_run / "adapter" / "adapter_config.json").is_file()
    with (
        safe_open(str(lora_run / "model.safetensors"), "pt") as f,
        safe_open(str(Path(tiny_backbone) / "model.safetensors"), "pt") as start,
    ):
        assert not [k for k in f.keys() if "lora_" in k] and "output_rotation.matrix" in f.keys()
        query, embeddings = "encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"
        assert not f.get_tensor(f"backbone.{query}").equal(start.get_tensor(query))  # the adapter, merged
        assert f.get_tensor(f"backbone.{embeddings}").equal(start.get_tensor(embeddings))  # frozen under LoRA
    lora_clean = json.loads((results / "test_clean" / "t_final_lora" / "seed42.json").read_text())
    assert lora_clean["tasks"]["stsb"]["num_examples"] == clean["tasks"]["stsb"]["num_examples"]
    train_pairs = {pair_key(r["sentence1"], r["sentence2"]) for r in load_benchmark("stsb", split="train")}
    snli = load_benchmark("snli", split="train")
    train_pairs |= {pair_key(r[a], r[b]) for r in snli for a, b in (("anchor", "positive"), ("anchor", "negative"))}
    for task in ("stsb", "sts12"):
        rows = load_benchmark(task, split="test")
        dropped = sum(pair_key(r["sentence1"], r["sentence2"]) in train_pairs for r in rows)
        counts = clean["tasks"][task]["num_examples"]
        assert counts == {"test": len(rows) - dropped, "dropped_as_training": dropped}
        assert trained["tasks"][task]["num_examples"] == {"test": len(rows)}  # test: every pair, for every row
    assert clean["tasks"]["sts12"]["num_examples"]["dropped_as_training"] > 0  # STS-B train holds STS12 pairs
    assert clean["tasks"]["sts12"]["scores"] != trained["tasks"]["sts12"]["scores"]

    proc = subprocess.run(
        [*base, "--split", "test_clean", *tiny, "--methods", "starbucks"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 1
    assert "--split test_clean scores trained models: no model at" in proc.stderr
    assert "run --split test first" in proc.stderr
    assert not (results / "test_clean" / "starbucks").exists() and not (runs / "test_clean" / "starbucks").exists()


def _result(cells: dict[tuple[int, int], float]) -> dict:
    scores: dict = {}
    for (layer, dim), value in cells.items():
        scores.setdefault(f"L{layer}", {})[f"D{dim}"] = {"spearman": value}
    return {"tasks": {"stsb": {"scores": scores}}}


def _rules():
    """The benchmark's selection rules (benchmarks/quality_rules.py), imported the way quality.py imports them."""
    import importlib

    sys.path.insert(0, str(QUALITY.parent))
    return importlib.import_module("quality_rules")


def test_term_rule_keeps_a_term_only_for_a_dev_gain_of_0_3() -> None:
    """term_gains: the mean over 3 seeds of (base - ablation) on the all-cells STS-B dev average, >= 0.3 to stay."""
    rules = _rules()
    cells = [(2, 8), (2, 384), (6, 8), (6, 384)]
    base = {s: _result(dict.fromkeys(cells, 80.0 + s / 100)) for s in (42, 43, 44)}
    found = {
        "mipic_default_teacher": base,
        # removing SIA costs 0.4 at one cell of four in every seed: 0.1 on the aggregate -> leaves default
        "t_abl_no_sia": {s: _result({**dict.fromkeys(cells, 80.0 + s / 100), (6, 8): 79.6 + s / 100}) for s in base},
        # removing PIC costs 0.35 everywhere in two seeds and 0.2 in the third: mean 0.3 -> stays
        "t_abl_no_pic": {s: _result(dict.fromkeys(cells, 80.0 + s / 100 - (0.2 if s == 44 else 0.35))) for s in base},
        "t_abl_no_rung": {42: base[42]},  # one seed only: no verdict
    }
    verdicts = rules.term_gains(found)
    assert verdicts["SIA"] == (0.1, False)
    assert verdicts["PIC"] == (0.3, True)
    assert verdicts["rung task loss"] == (None, None)


def test_reshape_rule_advances_on_seed_42_and_keeps_a_term_on_the_three_seed_mean() -> None:
    """reshape_gains: each reshaped candidate against the run without its term; seed 42 >= 0.3 advances it, the
    mean over 3 seeds >= 0.3 earns it a place; no verdict before seed 42 ran."""
    rules = _rules()
    cells = [(2, 8), (6, 384)]

    def runs(values: dict[int, float]) -> dict:
        return {s: _result(dict.fromkeys(cells, v)) for s, v in values.items()}

    found = {
        "t_abl_no_sia": runs({42: 70.0, 43: 71.0, 44: 72.0}),
        "t_lift_random": runs({42: 70.3}),  # +0.3 on seed 42 alone: advance
        "t_abl_no_pic": runs({42: 70.0, 43: 71.0, 44: 72.0}),
        "t_pic_mean": runs({42: 70.29}),  # +0.29: stop
        "mipic_default_teacher": runs({42: 70.0, 43: 70.0, 44: 70.0}),
    }
    verdicts = rules.reshape_gains(found)
    assert verdicts["t_lift_random"] == ([0.3], "advance")
    assert verdicts["t_pic_mean"] == ([0.29], "stop")
    assert verdicts["t_teacher_token_cka"] == ([], None)
    found["t_lift_random"] = runs({42: 70.5, 43: 71.4, 44: 72.0})  # gains 0.5, 0.4, 0.0: mean 0.3 earns
    assert rules.reshape_gains(found)["t_lift_random"] == ([0.5, 0.4, 0.0], "earns")
    found["t_lift_random"][44] = _result(dict.fromkeys(cells, 71.9))  # mean 0.27 fails
    assert rules.reshape_gains(found)["t_lift_random"] == ([0.5, 0.4, -0.1], "fails")


def test_speed_rule_keeps_a_setting_that_moves_the_dev_aggregate_by_at_most_0_3() -> None:
    rules = _rules()
    cells = [(layer, d) for layer in (2, 4, 6) for d in (8, 16, 32, 64, 128, 256, 384)]
    base = {s: _result(dict.fromkeys(cells, 70.0 + s / 10)) for s in (42, 43, 44)}
    not_run = {"t_final_grouped": (None, None), "t_final_cached": (None, None)}
    assert rules.same_quality({"t_final": base}) == not_run
    moved = {s: _result(dict.fromkeys(cells, 70.0 + s / 10 - (0.2 if s == 42 else 0.4))) for s in (42, 43, 44)}
    same = {s: _result(dict.fromkeys(cells, 70.0 + s / 10 + (0.5 if s == 44 else 0.1))) for s in (42, 43, 44)}
    moved_rows = {"t_final": base, "t_final_grouped": moved, "t_final_cached": same}
    assert rules.same_quality(moved_rows) == {"t_final_grouped": (-0.33, False), "t_final_cached": (0.23, True)}
    same_rows = {"t_final": base, "t_final_grouped": same}
    assert rules.same_quality(same_rows) == {"t_final_grouped": (0.23, True), "t_final_cached": (None, None)}


def test_rotation_rule_picks_the_best_dev_aggregate_and_prefers_none_on_ties() -> None:
    rules = _rules()
    cells = [(2, 8), (6, 384)]
    flat = {s: _result(dict.fromkeys(cells, 80.0)) for s in (42, 43, 44)}
    found = {m: dict(flat) for m in ("mipic_default_teacher", "t_rot_before", "mipic_default_teacher_pca")}
    assert rules.select_rotation(found) == "none"  # a tie keeps the model as trained
    found["t_rot_before"] = {s: _result({(2, 8): 80.5, (6, 384): 80.0}) for s in (42, 43, 44)}
    assert rules.select_rotation(found) == "before"
    del found["mipic_default_teacher_pca"][44]
    assert rules.select_rotation(found) is None  # not every seed ran


def test_default_rule_ranks_by_small_dims_then_all_cells() -> None:
    """select_default: the best mean over seeds of the d <= 64 average (all exits), ties (at 0.01) to the best
    all-cells average; a candidate missing a seed is not eligible, and without the base there is no pick."""
    rules = _rules()
    seeds = [42, 43]

    def runs(small: float, wide: float) -> dict:
        return {s: _result({(1, 8): small, (2, 64): small, (2, 384): wide}) for s in seeds}

    found = {  # the tie-breaker, not the order, must pick the base over cand_alpha_02
        "cand_alpha_02": runs(70.004, 79.0),  # ties the base on d <= 64 once rounded, worse elsewhere
        "mipic_t1_mean": runs(70.0, 80.0),
        "cand_pic_2": runs(70.5, 70.0),  # best on d <= 64: wins despite the wide cells
        "cand_sia_x10": {42: _result({(1, 8): 99.0, (2, 64): 99.0, (2, 384): 99.0})},  # one seed: not eligible
    }
    assert rules.select_default(found, seeds) == "cand_pic_2"
    del found["cand_pic_2"]
    assert rules.select_default(found, seeds) == "mipic_t1_mean"  # the tie goes to the all-cells average
    del found["mipic_t1_mean"]
    assert rules.select_default(found, seeds) is None


def test_teacher_rule_puts_every_dim_above_untrained_first() -> None:
    """select_teacher: candidates whose smallest last-exit gap to the untrained checkpoint is >= 0 (mean over
    seeds) come first, then the best mean over d <= 32 at the last exit."""
    rules = _rules()
    last, dims = 6, [8, 16, 32, 64, 128, 256, 384]

    def row(small: float, wide: float) -> dict:
        return _result({(last, d): (small if d <= 32 else wide) for d in dims})

    found = {
        "untrained": {0: row(60.0, 80.0)},
        "mrl_teacher": {42: row(65.0, 79.9), 43: row(65.0, 79.9)},  # best narrow dims, but below untrained wide
        "tcand_mipic_w10": {42: row(61.0, 80.2), 43: row(61.0, 80.1)},  # every dim above untrained
        "tcand_mipic_w50": {42: row(60.5, 81.0)},  # above too, narrower dims worse
    }
    gaps, means = rules.teacher_gaps(found, "mrl_teacher")
    assert gaps == pytest.approx([-0.1, -0.1]) and means == [65.0, 65.0]
    assert rules.select_teacher(found) == "tcand_mipic_w10"
    found["tcand_mipic_w10"][43] = row(61.0, 79.5)  # the mean smallest gap drops below 0
    assert rules.select_teacher(found) == "tcand_mipic_w50"


def test_nolabel_rule_picks_the_largest_margin_over_both_anchors() -> None:
    """select_nolabel: the smallest last-exit gap to the better of the base and the base + PCA, largest wins."""
    rules = _rules()
    last, dims = 6, [8, 16, 32, 64, 128, 256, 384]

    def row(narrow: float, wide: float) -> dict:
        return _result({(last, d): (narrow if d <= 32 else wide) for d in dims})

    found = {
        "untrained": {0: row(60.0, 82.0)},
        "untrained_pca": {0: row(58.0, 82.5)},  # the better anchor at the wide dims
        "nolabel_teacher": {42: row(70.0, 82.0)},  # -0.5 at the wide dims
        "nolabel_last_exit": {42: row(60.2, 82.6)},  # +0.1 everywhere it is closest
    }
    assert rules.nolabel_margin(found, "nolabel_teacher", [42]) == pytest.approx(-0.5)
    assert rules.nolabel_margin(found, "nolabel_last_exit", [42]) == pytest.approx(0.1)
    assert rules.select_nolabel(found) == "nolabel_last_exit"
    del found["untrained_pca"]
    assert rules.select_nolabel(found) is None


def test_every_table_of_results_md_is_rebuilt_from_the_committed_raw_files() -> None:
    """Traceability: each report command RESULTS.md quotes runs on benchmarks/results/ alone, and every table row
    of RESULTS.md outside its Summary is a line one of them prints (``benchmarks/tables.py --check``)."""
    proc = subprocess.run(
        [sys.executable, str(TABLES), "--check"], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = re.match(r"(\d+) report commands, (\d+) rows rebuilt, 0 not", proc.stdout)
    assert counts, proc.stdout
    commands, rebuilt = int(counts[1]), int(counts[2])
    assert commands >= 15 and rebuilt >= 200, proc.stdout


def test_the_table_check_names_a_row_no_report_prints(tmp_path: Path) -> None:
    """The check on a fixture: a row printed by the quoted report passes, a changed number fails with its line."""
    report = "python benchmarks/cost.py --report benchmarks/results/cost/time_full_run1.json"
    printed = subprocess.run([sys.executable, *report.split()[1:]], capture_output=True, text=True, cwd=ROOT).stdout
    rows = [line for line in printed.splitlines() if line.startswith("|")]
    good = "\n".join(["# R", "", "## Summary", "", "| free | text |", "", "## Cost", "", "```bash", report, "```", ""])
    fixture = tmp_path / "R.md"
    fixture.write_text(good + "\n".join(rows) + "\n")
    check = [sys.executable, str(TABLES), "--check", "--results", str(fixture)]
    ok = subprocess.run(check, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith(f"1 report commands, {len(rows) - 1} rows rebuilt"), ok
    count = rows[-1].rstrip(" |").rsplit(" ", 1)[1]  # the last cell: operators per step, an integer
    changed = rows[-1].removesuffix(f" {count} |") + f" {int(count) + 1} |"
    assert changed != rows[-1] and count.isdigit(), "the fixture's row ends with the count it changes"
    fixture.write_text(good + "\n".join([*rows[:-1], changed]) + "\n")
    bad = subprocess.run(check, capture_output=True, text=True)
    assert bad.returncode == 1
    assert f"R.md:{len(good.splitlines()) + len(rows)}: no report prints this row: {changed}" in bad.stderr


def test_the_report_refuses_a_new_raw_file_without_provenance(tmp_path: Path) -> None:
    results = tmp_path / "results"
    raw = results / "test" / "mrl" / "seed42.json"
    raw.parent.mkdir(parents=True)
    source = ROOT / "benchmarks" / "results" / "quality" / "test" / "mrl" / "seed42.json"
    raw.write_text(source.read_text())  # an old raw file: no provenance
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    report = [sys.executable, str(QUALITY), "--results", str(results), "report", "--split", "test"]
    proc = subprocess.run(report, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "seed42.json: no provenance" in proc.stderr
    (results / "legacy.txt").write_text("test/mrl/seed42.json\n")  # listed as written before issue 29
    proc = subprocess.run(report, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "| mrl (1) | " in proc.stdout, proc.stderr[-2000:]


def test_the_protocol_is_written_once_and_the_peers_read_it() -> None:
    """protocol_stsb.yaml holds the training values; the sentence-transformers peers read them (protocol()), and the
    recipe parser sees the same ones for our rows."""
    import importlib

    from mipic_hf.recipe import parse_recipe

    sys.path.insert(0, str(QUALITY.parent))
    registry = importlib.import_module("quality_registry")
    settings = registry.protocol()
    assert settings == {"batch": 32, "learning_rate": 2e-5, "warmup": 0.1, "epochs": 1.0, "max_length": 64}
    ours = parse_recipe([str(ROOT / registry.PROTOCOL)])
    assert ours.training.per_device_train_batch_size == settings["batch"]
    assert ours.training.learning_rate == settings["learning_rate"] and ours.training.warmup_steps == 0.1
    assert ours.data.train_max_length == settings["max_length"] and ours.model.fit_rotation == "none"


def test_teacher_default_rule_changes_the_defaults_only_for_a_three_seed_win() -> None:
    """teacher_default_rule: seed 42 advances a candidate that beats the defaults by >= 0.3 over d <= 32 (and keeps
    every dim at or above the base); the pick over 3 seeds keeps the defaults on a tie."""
    rules = _rules()
    last, dims = 6, [8, 16, 32, 64, 128, 256, 384]

    def row(narrow: float, wide: float = 80.0) -> dict:
        return _result({(last, d): (narrow if d <= 32 else wide) for d in dims})

    names = ["tdef_w10_t02", "tdef_w3_t02", "tdef_w30_t02", "tdef_w10_t005"]
    found = {
        "untrained": {0: row(60.0, 79.0)},
        names[0]: {42: row(65.0)},
        names[1]: {42: row(65.2)},  # +0.2: below the bar
        names[2]: {42: row(66.0)},  # +1.0: advances
        names[3]: {42: row(70.0, 78.0)},  # best narrow dims, but below the base at the wide ones
    }
    assert rules.teacher_default_rule(found) == ([names[2]], None)  # stage 2 not run yet
    found[names[0]].update({43: row(65.0), 44: row(65.0)})
    found[names[2]].update({43: row(64.5), 44: row(64.5)})  # 3-seed mean 65.0: a tie keeps the defaults
    assert rules.teacher_default_rule(found) == ([names[2]], names[0])
    found[names[2]][44] = row(65.5)  # mean 65.33: a win
    assert rules.teacher_default_rule(found) == ([names[2]], names[2])


def test_report_says_when_rows_were_scored_on_different_examples(capsys: pytest.CaptureFixture[str]) -> None:
    """examples_note: rows scored on different numbers of pairs (one run dropped its training pairs) are named,
    with their counts; rows on the same examples print nothing."""
    _rules()  # puts benchmarks/ on the import path
    import importlib

    report = importlib.import_module("quality_report")

    def run(n: int) -> dict:
        return {"tasks": {"stsb": {"num_examples": {"test": n}, "scores": {}}}}

    report.examples_note({"untrained": {0: run(1379)}, "mrl": {42: run(1379), 43: run(1379)}}, "stsb", ["mrl"])
    assert capsys.readouterr().out == ""
    found = {"untrained": {0: run(1379)}, "t_final": {42: run(1367)}, "mrl": {42: run(1379)}}
    report.examples_note(found, "stsb", ["untrained", "t_final", "mrl"])
    assert capsys.readouterr().out == (
        "\nnote: stsb rows were scored on different examples (not comparable): untrained 1379, t_final 1367, mrl 1379\n"
    )
