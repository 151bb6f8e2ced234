"""The bad-input matrix: each mistake fails before training with one line naming the field and the allowed values,
and leaves no output folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config
from transformers import AutoModel, AutoTokenizer

from mipic_hf.run import main

GOOD_ROWS = [("a cat sat", "a cat sits", 4.5), ("blue sky", "green field", 0.5), ("fast car", "quick car", 4.0)] * 4


def scored_jsonl(path: Path, rows: list[tuple]) -> str:
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in rows))
    return str(path)


def good_data(tmp: Path) -> str:
    return scored_jsonl(tmp / "train.jsonl", GOOD_ROWS)


@pytest.fixture(scope="module")
def qwen3_backbone(tmp_path_factory, minilm_path: str) -> str:
    folder = tmp_path_factory.mktemp("tiny_qwen3")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    AutoModel.from_config(tiny_config("qwen3", vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _recipe(tmp: Path, content: dict) -> list[str]:
    path = tmp / "recipe.yaml"
    path.write_text(json.dumps(content))  # JSON is YAML
    return [str(path)]


def _non_empty(tmp: Path) -> list[str]:
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine")
    return []


# (case, extra arguments (or a function of tmp_path returning them), what the one-line error must say)
def _a_file(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("mine\n")
    return path


CASES = [
    (
        "unknown recipe key",
        lambda t: _recipe(t, {"model": {"backbon": "x"}}),
        "unknown key 'model.backbon'; did you mean 'backbone'?",
    ),
    ("wrong type", ["--max_steps", "three"], "argument --max_steps/--max-steps: invalid int value: 'three'"),
    (
        "dims not ascending",
        ["--matryoshka_dimensions", "16", "8", "64"],
        "matryoshka_dimensions must be strictly ascending, got [16, 8, 64]",
    ),
    (
        "dim above the hidden size",
        ["--matryoshka_dimensions", "8", "128"],
        "matryoshka_dimensions must be <= the hidden size 64, got [8, 128]",
    ),
    ("dim 0", ["--matryoshka_dimensions", "0", "64"], "matryoshka_dimensions must be >= 1, got [0, 64]"),
    (
        "exit layer above the layer count",
        ["--matryoshka_layers", "1", "3"],
        "matryoshka_layers must lie in 1..2 (num_hidden_layers), got [1, 3]",
    ),
    (
        "ladder not increasing",
        ["--pic_ladder", "16:2", "8:1", "64:2"],
        "pic_ladder must increase in both dim and layer, got (16, 2) -> (8, 1)",
    ),
    (
        "SIA layer out of range",
        ["--sia_layers", "0", "5"],
        "sia_layers must lie in 1..2 (num_hidden_layers), got [0, 5]",
    ),
    ("pooling not valid for the backbone", "qwen3-cls", "pooling 'cls' is not valid for the decoder backbone 'qwen3'"),
    ("pooling unknown", ["--pooling", "max"], "pooling must be one of cls, mean, last_token, got 'max'"),
    (
        "missing data column",
        "missing-column",
        "missing column 'score' for kind scored_pairs; the data has columns ['sentence1', 'sentence2', 'similarity']",
    ),
    ("empty dataset", "empty", "has no rows"),
    ("empty text cell", "empty-text-cell", "row 1, column 'sentence2' is empty (1 such row(s); data.drop_invalid_rows"),
    ("non-numeric score", "text-score", "score in row 1 is not a number: 'high'"),
    ("NaN score", "nan-score", "score in row 2 is nan (scores must be finite numbers)"),
    (
        "score outside the declared range",
        "out-of-range",
        "data.score_range: the score in row 1 is 7.5, outside the declared range [0.0, 5.0]",
    ),
    ("unreadable file", "unreadable", "cannot be read"),
    ("missing file", "missing-file", "does not exist"),
    (
        "output_dir not empty",
        _non_empty,
        "output_dir '{out}' exists and is not empty; pass --overwrite_output_dir or another --output_dir",
    ),
    (
        "LoRA target not found",
        ["--use_lora", "true", "--lora_target_modules", "qkv"],
        "lora.lora_target_modules: ['qkv'] not found; candidates: dense, key, position_embeddings, query, "
        "token_type_embeddings, value, word_embeddings",
    ),
    (
        "unknown method",
        ["--method", "simcse"],
        "method must be one of mipic, mrl, 2dmse, starbucks, none, got 'simcse'",
    ),
    ("unknown eval task", ["--eval_tasks", "stsbb"], "eval.eval_tasks: unknown ['stsbb']; known:"),
    # issue 14's switches
    ("negative task weight", ["--task_weight", "-1"], "loss.task_weight must be >= 0, got -1.0"),
    ("NaN task weight", ["--task_weight", "nan"], "loss.task_weight must be a finite number, got nan"),
    (
        "teacher layer above the model",
        ["--teacher_model", "initial", "--teacher_layers", "1", "3"],
        "teacher.teacher_layers must lie in 1..2 (num_hidden_layers), got [3]",
    ),
    ("unknown k rule", ["--sia_k_rule", "tokens"], "loss.sia_k_rule must be one of fraction, width, got 'tokens'"),
    ("unknown lift init", ["--sia_lift_init", "zeros"], "loss.sia_lift_init must be one of identity, random"),
    ("unknown PIC aggregation", ["--pic_aggregation", "max"], "loss.pic_aggregation must be one of sum, mean"),
    ("unknown preset", ["--preset", "paperish"], "preset must be one of default, tuned, paper, authors, got 'paper"),
    # TrainingArguments numbers the Trainer only rejects after the output folder exists (issue 18)
    ("negative learning rate", ["--learning_rate", "-1"], "training.learning_rate must be > 0, got -1.0"),
    ("zero batch size", ["--per_device_train_batch_size", "0"], "training.per_device_train_batch_size must be >= 1"),
    ("negative max steps", ["--max_steps", "-2"], "training.max_steps must be -1 (use num_train_epochs), 0 (no tra"),
    ("unknown calibration", ["--calibration_mode", "minmax"], "model.calibration_mode must be one of coordinate, sh"),
    # found by tests/test_fuzz.py (each a NaN loss, an optimizer error or a traceback before)
    ("inf weight", ["--sia_cka_weight", "inf"], "loss.sia_cka_weight must be a finite number, got inf"),
    ("inf step count", ["--logging_steps", "inf"], "training.logging_steps must be a finite number, got inf"),
    ("adam beta 1", ["--adam_beta2", "1"], "training.adam_beta2 must be in [0, 1), got 1.0"),
    ("negative adam epsilon", ["--adam_epsilon", "-1"], "training.adam_epsilon must be > 0, got -1.0"),
    ("zero adam epsilon (NaN weights after a step)", ["--adam_epsilon", "0"], "training.adam_epsilon must be > 0"),
    ("negative seed", ["--seed", "-1"], "training.seed must be in [0, 2**32), got -1"),
    ("negative max length", ["--train_max_length", "-1"], "data.train_max_length must be >= 1, got -1"),
    ("zero cache mini-batch", ["--cache_mini_batch_size", "0"], "loss.cache_mini_batch_size must be >= 1, got 0"),
    (
        "token CKA with gradient caching",
        ["--cache_mini_batch_size", "4", "--teacher_model", "initial", "--teacher_cka_weight", "1"],
        "teacher.teacher_cka_weight compares whole-batch token states, which gradient caching",
    ),
    (
        "one dim, one rung",
        ["--matryoshka_dimensions", "64"],
        "loss.pic_ladder derived from model.matryoshka_dimensions [64] and 2 layer(s) has one rung; give two or more",
    ),
    (
        "no task loss and no other term",
        ["--task_weight", "0"],
        "loss.task_weight 0 leaves method mipic (preset default) nothing to learn from; set a teacher",
    ),
    (
        "output_dir is a file",
        lambda tmp: ["--output_dir", str(_a_file(tmp))],
        "is a file; name a folder (new or existing)",
    ),
]


def _data_case(name: str, tmp: Path) -> list[str]:
    if name == "missing-column":
        path = tmp / "train.csv"
        path.write_text("sentence1,sentence2,similarity\na,b,1.0\nc,d,2.0\n")
        return ["--train_data", str(path)]
    if name == "empty":
        path = tmp / "train.csv"
        path.write_text("sentence1,sentence2,score\n")
        return ["--train_data", str(path)]
    if name == "text-score":
        return ["--train_data", scored_jsonl(tmp / "t.jsonl", [("a", "b", 1.0), ("c", "d", "high")])]
    if name == "nan-score":
        return [
            "--train_data",
            scored_jsonl(tmp / "t.jsonl", [("a", "b", 1.0), ("c", "d", 2.0), ("e", "f", float("nan"))]),
        ]
    if name == "out-of-range":
        data = scored_jsonl(tmp / "t.jsonl", [("a", "b", 1.0), ("c", "d", 7.5)])
        return ["--train_data", data, "--score_range", "0", "5"]
    if name == "unreadable":
        path = tmp / "train.parquet"
        path.write_bytes(b"\x00\x01 not a parquet file")
        return ["--train_data", str(path)]
    if name == "empty-text-cell":
        path = tmp / "train.csv"
        path.write_text("sentence1,sentence2,score\na,b,1.0\nc,,2.0\n")
        return ["--train_data", str(path)]
    if name == "missing-file":
        return ["--train_data", str(tmp / "nope" / "train.csv")]
    raise ValueError(name)


@pytest.mark.parametrize(("case", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_before_training(
    case: str, extra, message: str, tiny_backbone: str, qwen3_backbone: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    backbone = tiny_backbone
    data_args = ["--train_data", good_data(tmp_path), "--train_kind", "scored_pairs"]
    if extra == "qwen3-cls":
        backbone, extra = qwen3_backbone, ["--pooling", "cls"]
    elif isinstance(extra, str):
        data_args = [*_data_case(extra, tmp_path), "--train_kind", "scored_pairs"]
        extra = []
    elif callable(extra):
        extra = extra(tmp_path)
    recipe = [a for a in extra if a.endswith(".yaml")]
    args = [
        *recipe,
        *("--backbone", backbone, "--matryoshka_dimensions", "8", "16", "64", *data_args),
        *("--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_tasks", "none", "--report_to", "none"),
        *("--save_strategy", "no", "--use_cpu", "true", "--output_dir", str(out)),
        *(a for a in extra if not a.endswith(".yaml")),
    ]
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    code = main(args)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    expected = message.format(out=out)
    assert code == 2, captured.err[-2000:]
    assert expected in lines[-1], lines[-1:]
    assert lines[-1].startswith("error:") and len(lines) == 1
    assert "== mipic-hf run finished" not in captured.out and "'loss'" not in captured.out
    after = sorted(p.name for p in out.iterdir()) if out.exists() else None
    assert after == before, "nothing written"
    if (tmp_path / "notes.txt").exists():  # the file named as output_dir is left as it was
        assert (tmp_path / "notes.txt").read_text() == "mine\n"
