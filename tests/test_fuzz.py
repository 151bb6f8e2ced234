"""One invariant, drawn rather than listed: for any recipe values, command line and training file, ``python -m
mipic_hf.run`` either exits 0 with a complete run folder and export, or exits 2 with one ``error:`` line that names
the field (or the file) and leaves the output folder exactly as it was (absent, empty or holding the user's file),
or, for a real run whose values are legal but make training diverge (a huge learning rate or weight decay), exits 1
with one ``error:`` line saying the loss or the weights went non-finite (not knowable before the work).

Hypothesis draws the cases (``derandomize``: the same cases in every CI run). CI runs ``FUZZ_EXAMPLES`` dry runs
(default 60) and a one-step real run on every ``FUZZ_REAL_EVERY``-th case (default 6). The larger run::

    FUZZ_EXAMPLES=2000 FUZZ_REAL_EVERY=3 pytest tests/test_fuzz.py

Every failure such a run found is also a plain case in ``test_bad_inputs.py``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mipic_hf.run import main

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
REAL_EVERY = int(os.environ.get("FUZZ_REAL_EVERY", "6"))

# Every numeric field of our sections, and the TrainingArguments numbers a recipe sets (the Trainer's other ~80
# fields are validated by transformers when parsed).
FLOAT_FIELDS = [
    "learning_rate", "warmup_steps", "weight_decay", "max_grad_norm", "num_train_epochs", "adam_beta1", "adam_beta2",
    "adam_epsilon", "temperature", "cosent_scale", "task_weight", "alpha", "attention_temperature",
    "sia_attention_weight", "sia_cka_weight", "sia_gamma_start", "sia_gamma_step", "pic_weight", "pic_temperature",
    "pic_task_weight", "aux_lr_multiplier", "twodmse_kl_weight", "twodmse_kl_temperature", "teacher_weight",
    "teacher_temperature", "teacher_cka_weight", "lora_dropout", "eval_target",
]  # fmt: skip
INT_FIELDS = [
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "logging_steps", "save_steps",
    "save_total_limit", "seed", "dataloader_num_workers", "num_labels", "sia_k_min", "max_seq_length",
    "rotation_max_texts", "max_train_samples", "train_max_length", "lora_r", "lora_alpha", "eval_max_samples",
    "eval_batch_size", "cache_mini_batch_size", "calibration_max_texts",
]  # fmt: skip
LIST_FIELDS = ["matryoshka_dimensions", "matryoshka_layers", "teacher_dims", "teacher_layers", "eval_dims"]

ROWS = [("a cat sat", "a cat sits", 4.5), ("blue sky", "green field", 0.5), ("fast car", "quick car", 4.0)] * 8


def number_token(kind: str) -> st.SearchStrategy[str]:
    special = st.sampled_from(["-1", "0", "nan", "inf", "-inf", "1e30", "abc", "", "true", "[1]"])
    plain = st.floats(-10, 10, allow_nan=False).map(repr) if kind == "float" else st.integers(-3, 200).map(str)
    return st.one_of(special, plain)


def list_tokens() -> st.SearchStrategy[list[str]]:
    item = st.one_of(st.integers(-2, 80).map(str), st.sampled_from(["8", "16", "64", "x", "nan", "2.5"]))
    return st.lists(item, min_size=0, max_size=4)


@dataclass
class Case:
    overrides: dict[str, list[str]] = field(default_factory=dict)
    data: str = "good"  # a name from DATA
    output: str = "absent"  # absent | empty | user file
    recipe_file: bool = False  # the overrides as a YAML recipe instead of the command line

    def fields(self) -> set[str]:
        return set(self.overrides)


def _write_csv(path: Path, header: list[str], rows: list[list], **kwargs) -> None:
    with open(path, "w", newline="", encoding=kwargs.pop("encoding", "utf-8")) as handle:
        writer = csv.writer(handle, **kwargs)
        writer.writerow(header)
        writer.writerows(rows)


def write_data(kind: str, folder: Path) -> Path:
    """One training file per ``kind``: good, or one defect of the kinds users hit."""
    good = [[a, b, s] for a, b, s in ROWS]
    header = ["sentence1", "sentence2", "score"]
    path = folder / ("train.jsonl" if kind.startswith("jsonl") else "train.csv")
    if kind == "good":
        _write_csv(path, header, good)
    elif kind == "empty cell":
        _write_csv(path, header, [*good[:5], ["", "b", 1.0], *good[5:]])
    elif kind == "nan score":
        _write_csv(path, header, [*good[:3], ["a", "b", "nan"], *good[3:]])
    elif kind == "text score":
        _write_csv(path, header, [*good[:3], ["a", "b", "high"], *good[3:]])
    elif kind == "missing column":
        _write_csv(path, ["sentence1", "score"], [[r[0], r[2]] for r in good])
    elif kind == "duplicate column":
        _write_csv(path, [*header, "score"], [[*r, r[2]] for r in good])
    elif kind == "bom crlf":
        path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(",".join(map(str, r)) for r in [header, *good]).encode())
    elif kind == "latin-1":
        _write_csv(path, header, [*good[:2], ["caf\xe9 cr\xe8me", "b", 2.0], *good[2:]], encoding="latin-1")
    elif kind == "one row":
        _write_csv(path, header, good[:1])
    elif kind == "long rows":
        _write_csv(path, header, [[" ".join([r[0]] * 200), r[1], r[2]] for r in good])
    elif kind == "empty file":
        path.write_text("")
    elif kind == "header only":
        _write_csv(path, header, [])
    elif kind == "jsonl number text":
        rows = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in ROWS]
        rows[4]["sentence1"] = 5
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "jsonl mixed score":
        rows = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in ROWS]
        rows[2]["score"] = "4"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "jsonl null text":
        rows = [{"sentence1": a, "sentence2": b, "score": s} for a, b, s in ROWS]
        rows[6]["sentence2"] = None
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        raise AssertionError(kind)
    return path


DATA = [
    "good", "empty cell", "nan score", "text score", "missing column", "duplicate column", "bom crlf", "latin-1",
    "one row", "long rows", "empty file", "header only", "jsonl number text", "jsonl mixed score", "jsonl null text",
]  # fmt: skip


@st.composite
def cases(draw) -> Case:
    overrides: dict[str, list[str]] = {}
    for _ in range(draw(st.integers(0, 2))):
        pick = draw(st.sampled_from(["float", "int", "list"]))
        if pick == "list":
            overrides[draw(st.sampled_from(LIST_FIELDS))] = draw(list_tokens())
        else:
            name = draw(st.sampled_from(FLOAT_FIELDS if pick == "float" else INT_FIELDS))
            overrides[name] = [draw(number_token(pick))]
    return Case(
        overrides=overrides,
        data=draw(st.sampled_from(DATA)) if draw(st.booleans()) else "good",
        output=draw(st.sampled_from(["absent", "absent", "empty", "user file"])),
        recipe_file=draw(st.booleans()),
    )


def _yaml_value(tokens: list[str], name: str):
    """The YAML a user would write for these tokens (a list field stays a list)."""
    if name in LIST_FIELDS:
        return [_scalar(t) for t in tokens]
    return _scalar(tokens[0]) if tokens else None


def _scalar(token: str):
    try:
        return json.loads(token)
    except ValueError:
        with contextlib.suppress(ValueError):
            value = float(token)
            return value if not math.isfinite(value) else token
        return token


def snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


def run_case(case: Case, backbone: str, folder: Path, real: bool) -> str | None:
    """Run one case; return what broke the invariant, or None."""
    data = write_data(case.data, folder)
    out = folder / "out"
    if case.output != "absent":
        out.mkdir()
    if case.output == "user file":
        (out / "keep.txt").write_text("mine")
    before = snapshot(out)
    base = {
        "backbone": [backbone], "matryoshka_dimensions": ["8", "16", "64"], "train_data": [str(data)],
        "train_kind": ["scored_pairs"],
        "eval_tasks": ["none"], "report_to": ["none"], "use_cpu": ["true"], "max_steps": ["1"],
        "per_device_train_batch_size": ["8"], "disable_tqdm": ["true"], "output_dir": [str(out)],
        "save_strategy": ["no"], "logging_steps": ["1"],
    }  # fmt: skip
    argv: list[str] = []
    if case.recipe_file:
        recipe = folder / "recipe.yaml"
        recipe.write_text(json.dumps({k: _yaml_value(v, k) for k, v in case.overrides.items()}, default=str))
        argv = [str(recipe)]
        merged = base
    else:
        merged = {**base, **case.overrides}
    for name, tokens in merged.items():
        argv += [f"--{name}", *tokens]
    if not real:
        argv.append("--dry_run")
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rc = main(argv)
    except BaseException as err:  # noqa: BLE001 - any escape breaks the invariant
        return f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    errors = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    if rc == 2:
        if len(errors) != 1:
            return f"exit 2 with {len(errors)} error lines: {stderr.getvalue()[-500:]}"
        named = case.fields() | {"train_data", "output_dir", data.name, "recipe"}
        if not any(name in errors[0] for name in named):
            return f"error names none of {sorted(named)}: {errors[0]}"
        if snapshot(out) != before:
            return f"output folder changed: {errors[0]}"
        return None
    if rc == 1 and real and len(errors) == 1 and "non-finite" in errors[0]:
        return None  # diverged while training (the loss, or the weights after the last step): one line, exit 1
    if rc != 0:
        return f"exit {rc}: {stderr.getvalue()[-500:]}"
    if errors:
        return f"exit 0 with {errors}"
    if not real:
        return None if snapshot(out) == before else "a dry run changed the output folder"
    made = {p.name for p in out.iterdir()}
    missing = {"config.json", "model.safetensors", "export"} - made
    if missing or not (out / "export" / "model.safetensors").is_file():
        return f"exit 0 without {sorted(missing) or 'export/model.safetensors'}"
    return None


_count = {"n": 0}


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_any_input_exits_0_complete_or_2_with_one_line_and_the_folder_as_it_was(case: Case, tiny_backbone: str):
    _count["n"] += 1
    real = _count["n"] % REAL_EVERY == 0
    folder = Path(tempfile.mkdtemp(prefix="mipic-fuzz-"))
    try:
        problem = run_case(case, tiny_backbone, folder, real)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert problem is None, f"{'real' if real else 'dry'} run of {case}: {problem}"
