"""Reliability: two processes equal one, exact resume after a crash, NaN stops cleanly, safe loading."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file
from test_hub_format import _fresh_env
from test_trainer import WORDS
from transformers import AutoTokenizer, BertModel, TrainerCallback

import mipic_hf.training.trainer as trainer_module
from mipic_hf.losses.mipic import MIPICLoss
from mipic_hf.run import main

PACKAGE = Path(__file__).resolve().parent.parent / "mipic_hf"


def _pairs_csv(path: Path, n: int = 64) -> str:
    rng = random.Random(0)
    lines = ["anchor,positive"]
    for _ in range(n):
        a = " ".join(rng.choices(WORDS, k=6))
        lines.append(f"{a},{a} {rng.choice(WORDS)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _scored_jsonl(path: Path, n: int = 48) -> str:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        a = " ".join(rng.choices(WORDS, k=6))
        rows.append({"sentence1": a, "sentence2": a if i % 2 else " ".join(rng.choices(WORDS, k=6)), "score": i % 6})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def deterministic_backbone(tmp_path_factory, minilm_path: str) -> str:
    """A 2-layer BERT without dropout: ranks and micro-batches draw no random masks."""
    folder = tmp_path_factory.mktemp("tiny_bert_nodrop")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    config = tiny_config("bert", vocab_size=tokenizer.vocab_size)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _common(backbone: str, data: str, out: Path, steps: int = 3) -> list[str]:
    return [
        *("--backbone", backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", data),
        *("--max_steps", str(steps), "--learning_rate", "1e-2", "--optim", "sgd", "--eval_tasks", "none"),
        *("--report_to", "none", "--use_cpu", "true", "--logging_steps", "1", "--export_model", "false"),
        *("--seed", "0", "--disable_tqdm", "true", "--output_dir", str(out), "--save_strategy", "steps"),
        *("--save_steps", str(steps), "--calibration_max_texts", "0"),  # the weights only: no int8 ranges
    ]


def _launch(args: list[str], processes: int, cwd: Path) -> str:
    env = dict(_fresh_env(), OMP_NUM_THREADS="1")
    runner = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    command = [sys.executable, *(runner if processes > 1 else []), "-m", "mipic_hf.run", *args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout + proc.stderr


def _logged(output: str, key: str) -> list[float]:
    return [float(v) for v in re.findall(rf"'{key}': '([-0-9.e]+)'", output)]


def test_two_processes_equal_one_process_over_the_same_global_batch(deterministic_backbone: str, tmp_path: Path):
    """DDP (gloo, 2 ranks x 4 rows), plain and gradient-cached, == one process with 2 accumulated micro-batches of 4
    (the same 8 rows)."""
    data = _pairs_csv(tmp_path / "pairs.csv")
    common = ["--train_kind", "pairs", "--per_device_train_batch_size", "4", "--preset", "tuned"]  # aux modules on
    ddp_log = _launch(
        [*_common(deterministic_backbone, data, tmp_path / "ddp"), *common, "--save_steps", "1"], 2, tmp_path
    )
    one_log = _launch(
        [*_common(deterministic_backbone, data, tmp_path / "one"), *common, "--gradient_accumulation_steps", "2"],
        1,
        tmp_path,
    )
    for name in ("model.safetensors", "checkpoint-3/mipic_aux.safetensors"):
        ddp, one = load_file(tmp_path / "ddp" / name), load_file(tmp_path / "one" / name)
        assert set(ddp) == set(one)
        for key in one:
            torch.testing.assert_close(ddp[key], one[key], atol=1e-6, rtol=0, msg=f"{name}: {key}")
    start = load_file(Path(deterministic_backbone) / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    moved = max((one["backbone." + k] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-4, "the runs must train for the comparison to mean anything"
    first, last = (load_file(tmp_path / "ddp" / f"checkpoint-{s}" / "mipic_aux.safetensors") for s in (1, 3))
    assert max((last[k] - v).abs().max().item() for k, v in first.items()) > 1e-6, "the aux modules must train too"
    assert (
        _logged(ddp_log, "loss") == pytest.approx(_logged(one_log, "loss"), abs=1e-3)
        and len(_logged(one_log, "loss")) == 3
    )
    assert set(_logged(ddp_log, "candidates")) == {4.0}  # in-batch candidates: this rank's 4 positives

    # gradient caching (mini-batches of 3 of each rank's 4 rows): the same weights, DDP syncing the last replay
    cache = ["--cache_mini_batch_size", "3"]
    _launch([*_common(deterministic_backbone, data, tmp_path / "cached"), *common, *cache], 2, tmp_path)
    for name in ("model.safetensors", "checkpoint-3/mipic_aux.safetensors"):
        cached, one_run = load_file(tmp_path / "cached" / name), load_file(tmp_path / "one" / name)
        for key in one_run:
            torch.testing.assert_close(cached[key], one_run[key], atol=1e-6, rtol=0, msg=f"cached {name}: {key}")

    gather_log = _launch(
        [*_common(deterministic_backbone, data, tmp_path / "gather"), *common, "--gather_across_devices", "true"],
        2,
        tmp_path,
    )
    assert set(_logged(gather_log, "candidates")) == {8.0}  # every rank's positives
    gathered = load_file(tmp_path / "gather" / "model.safetensors")
    assert any(not torch.allclose(gathered[k], one[k], atol=1e-6) for k in one), "more negatives, other gradients"


def test_fsdp2_shards_the_objective_with_the_encoder_and_equals_one_process(
    deterministic_backbone: str, tmp_path: Path
) -> None:
    """torch FSDP2 (gloo, 2 CPU ranks) on the module the Trainer wraps: the objective's parameters are sharded
    like the encoder's, and 3 steps equal one process over the same rows (tests/fsdp_worker.py)."""
    worker = str(Path(__file__).with_name("fsdp_worker.py"))
    env = dict(_fresh_env(), OMP_NUM_THREADS="1")
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for command, out in (([*runner, worker], "fsdp"), ([sys.executable, worker], "one")):
        proc = subprocess.run([*command, deterministic_backbone, str(tmp_path / out)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=300)  # fmt: skip
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert json.loads((tmp_path / "fsdp" / "sharded.json").read_text()) == {"objective_sharded": True, "world_size": 2}
    fsdp, one = (
        load_file(tmp_path / "fsdp" / "weights.safetensors"),
        load_file(tmp_path / "one" / "weights.safetensors"),
    )
    assert set(fsdp) == set(one) and any(k.startswith("objective.sia.lifts.") for k in one)
    for key in one:
        torch.testing.assert_close(fsdp[key], one[key], atol=1e-6, rtol=0, msg=key)
    start = load_file(Path(deterministic_backbone) / "model.safetensors")
    moved = max((one["encoder.backbone." + k] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-4, "the runs must train for the comparison to mean anything"


class _Crash(Exception):
    pass


def test_killed_run_resumes_exactly(tiny_backbone: str, tmp_path: Path, monkeypatch) -> None:
    """A run that dies after checkpoint-4 and resumes from it ends like the uninterrupted run (dropout on)."""
    data = _scored_jsonl(tmp_path / "train.jsonl")
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", data),
        *("--train_kind", "scored_pairs", "--max_steps", "6", "--per_device_train_batch_size", "8"),
        *("--learning_rate", "1e-3", "--eval_tasks", "none", "--report_to", "none", "--use_cpu", "true"),
        *("--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2", "--export_model", "false"),
        *("--seed", "3", "--disable_tqdm", "true", "--preset", "tuned"),  # SIA and PIC on: aux modules to resume
    ]
    assert main([*args, "--output_dir", str(tmp_path / "full")]) == 0

    class CrashAfterStep5(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                raise _Crash("killed")

    class CrashingTrainer(trainer_module.MIPICTrainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(CrashAfterStep5())

    part = tmp_path / "part"
    monkeypatch.setattr(trainer_module, "MIPICTrainer", CrashingTrainer)
    with pytest.raises(_Crash):
        main([*args, "--output_dir", str(part)])
    monkeypatch.undo()
    assert sorted(p.name for p in part.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (part / "model.safetensors").exists()
    assert main([*args, "--output_dir", str(part), "--resume_from_checkpoint", str(part / "checkpoint-4")]) == 0

    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(part / "model.safetensors")
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-6, rtol=0, msg=key)
    aux_full = load_file(tmp_path / "full" / "checkpoint-6" / "mipic_aux.safetensors")
    aux_resumed = load_file(part / "checkpoint-6" / "mipic_aux.safetensors")
    for key in aux_full:
        torch.testing.assert_close(aux_resumed[key], aux_full[key], atol=1e-6, rtol=0, msg=key)

    def losses(run: Path) -> list[float]:
        history = json.loads((run / "checkpoint-6" / "trainer_state.json").read_text())["log_history"]
        return [value for h in history if "loss" in h for value in (h["step"], h["loss"], h["sia_att"])]

    assert len(losses(tmp_path / "full")) == 6 * 3
    assert losses(part) == pytest.approx(losses(tmp_path / "full"), abs=1e-6)


def test_nonfinite_loss_stops_naming_step_and_component(tiny_backbone: str, tmp_path: Path, monkeypatch, capsys):
    data = _scored_jsonl(tmp_path / "train.jsonl")
    original = MIPICLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        parts = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:  # the third training step
            parts["sia_att"] = torch.tensor(float("nan"))
            parts["loss"] = parts["loss"] + parts["sia_att"]
        return parts

    monkeypatch.setattr(MIPICLoss, "forward", poisoned)
    out = tmp_path / "run"
    code = main(
        [
            *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", data),
            *("--train_kind", "scored_pairs", "--max_steps", "5", "--per_device_train_batch_size", "8"),
            *("--eval_tasks", "none", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "steps"),
            *("--save_steps", "2", "--output_dir", str(out), "--disable_tqdm", "true"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err == (
        f"error: loss is nan at step 3 (non-finite: sia_att=nan); training stopped, the last checkpoint is "
        f"{out / 'checkpoint-2'}"
    )
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (out / "model.safetensors").exists() and not (out / "export").exists()


def test_loading_never_unpickles(tiny_backbone: str, tmp_path: Path, monkeypatch) -> None:
    """Every torch.load our code (and the Trainer on resume) makes passes weights_only=True; weights are safetensors."""
    for path in PACKAGE.rglob("*.py"):
        for call in re.findall(r"torch\.load\(([^)]*)\)", path.read_text()):
            assert "weights_only=True" in call, f"{path}: torch.load({call})"

    data = _scored_jsonl(tmp_path / "train.jsonl")
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", data),
        *("--train_kind", "scored_pairs", "--max_steps", "2", "--per_device_train_batch_size", "8"),
        *("--eval_tasks", "none", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "steps"),
        *("--save_steps", "1", "--output_dir", str(tmp_path / "run")),
    ]
    assert main(args) == 0
    seen = []
    real_load = torch.load

    def recording_load(*a, **kw):
        seen.append(kw.get("weights_only"))
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", recording_load)
    checkpoint = str(tmp_path / "run" / "checkpoint-2")
    resume = [*args, "--max_steps", "3", "--resume_from_checkpoint", checkpoint, "--export_model", "false"]
    assert main(resume) == 0
    assert seen and all(flag is True for flag in seen), seen  # rng state, optimizer, scheduler
    weights = [p.name for p in (tmp_path / "run").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".safetensors")]
    model_files = {"model.safetensors", "mipic_aux.safetensors"}
    pickles = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}  # the Trainer's own state
    assert set(weights) <= model_files | pickles and "model.safetensors" in weights
    export = tmp_path / "run" / "export"
    assert not [p for p in export.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]


AUDIT = r"""
import json, os, sys, sysconfig
folder = sys.argv[1]
stdlib = sysconfig.get_paths()["stdlib"]
events = []
def direct_caller():
    # The innermost frame outside the standard library: who asked for this access.
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith((stdlib, "<"))):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else ""
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
        events.append([event, str(args[:2]), direct_caller()])
    elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        events.append(["open", os.path.abspath(os.fsdecode(args[0])), direct_caller()])
import torch, transformers  # library imports are not the remote code's doing
from transformers import AutoModel
sys.addaudithook(hook)
model = AutoModel.from_pretrained(folder, trust_remote_code=True)
vectors = model.encode(["a short text", "another one"], dimension=8, layer=1)
print("AUDIT" + json.dumps(events))
"""


def test_remote_code_touches_only_its_folder(tiny_backbone: str, tmp_path: Path) -> None:
    data = _scored_jsonl(tmp_path / "train.jsonl")
    out = tmp_path / "run"
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", data),
        *("--train_kind", "scored_pairs", "--max_steps", "1", "--per_device_train_batch_size", "8"),
        *("--eval_tasks", "none", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no"),
        *("--output_dir", str(out)),
    ]
    assert main(args) == 0
    export = out / "export"
    env = dict(_fresh_env(), HF_HOME=str(tmp_path / "hf_home"))
    proc = subprocess.run(
        [sys.executable, "-c", AUDIT, str(export)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = json.loads(proc.stdout.split("AUDIT", 1)[1])
    assert not [e for e in events if e[0] != "open"], "no network access, by anyone"
    remote = [(path, caller) for _, path, caller in events if "transformers_modules" in caller]
    allowed = [os.path.realpath(a) for a in (export, tmp_path / "hf_home")]
    foreign = [(p, c) for p, c in remote if not any(os.path.realpath(p).startswith(a) for a in allowed)]
    assert not foreign, foreign  # the remote code itself opens nothing outside its folder (and the code cache)
    assert any(os.path.realpath(p).startswith(os.path.realpath(export)) for _, p, _ in events)


def test_parallel_writers_of_one_folder_wait_for_each_other(tmp_path: Path) -> None:
    """Two jobs exporting to the same folder at once: the lock serialises them, so the folder ends as one
    complete build (never files of both), and no partial or lock file is left next to it."""
    import threading
    import time

    from mipic_hf.hub.folders import target_lock, write_folder_atomically

    out = tmp_path / "export"
    order: list[str] = []

    def build(name: str):
        def write(folder: Path) -> None:
            order.append(f"{name} start")
            for i in range(3):
                (folder / f"{name}_{i}.txt").write_text(name)
                time.sleep(0.05)
            order.append(f"{name} end")

        return write

    jobs = [threading.Thread(target=write_folder_atomically, args=(out, build(n))) for n in ("a", "b")]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert order in (["a start", "a end", "b start", "b end"], ["b start", "b end", "a start", "a end"])
    last = order[-1].split()[0]
    assert sorted(p.name for p in out.iterdir()) == [f"{last}_{i}.txt" for i in range(3)]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert Path(target_lock(out).lock_file).parent == Path(tempfile.gettempdir())


# The preempted run: ``python -m mipic_hf.run``'s main with each optimizer step slowed to 0.2 s, so the test can
# signal it mid-training; the signal handling under test is the product's own.
SLOW_RUN = """
import sys, time
from transformers import TrainerCallback
import mipic_hf.training.trainer as trainer_module
from mipic_hf.run import main

class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(0.2)

class SlowTrainer(trainer_module.MIPICTrainer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.add_callback(Slow())

trainer_module.MIPICTrainer = SlowTrainer
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_the_resume_ends_equal(signal_name: str, tiny_backbone: str, tmp_path: Path):
    """SIGTERM / SIGINT after a logged step: exit 75 with one line naming the checkpoint, which holds the model,
    optimizer, scheduler, RNG and aux state of that step; resuming from it (checked once, after SIGTERM) ends like
    the uninterrupted run."""
    import signal

    data = _scored_jsonl(tmp_path / "train.jsonl")
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", data),
        *("--train_kind", "scored_pairs", "--max_steps", "40", "--per_device_train_batch_size", "8"),
        *("--learning_rate", "1e-3", "--eval_tasks", "none", "--report_to", "none", "--use_cpu", "true"),
        *("--logging_steps", "1", "--save_strategy", "no", "--export_model", "false"),
        *("--seed", "3", "--disable_tqdm", "true", "--preset", "tuned"),  # SIA and PIC on: aux modules to resume
    ]
    part = tmp_path / "part"
    # every run in a subprocess with the same environment (one thread): equal numerics, step for step
    env = dict(_fresh_env(), OMP_NUM_THREADS="1", PYTHONPATH=str(PACKAGE.parent))
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, *args, "--output_dir", str(part)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in proc.stdout:  # wait on the log, not on time
            if "'loss'" in line:
                break
        proc.send_signal(getattr(signal, signal_name))
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 75, err[-2000:]
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(rf"preempted: stopped by {signal_name} at step (\d+); checkpoint saved in (\S+); .*", last)
    assert match, last
    step, checkpoint = int(match[1]), Path(match[2])
    assert 1 <= step < 40 and checkpoint == part / f"checkpoint-{step}"
    saved = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"} <= saved
    assert "mipic_aux.safetensors" in saved
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == step
    assert not (part / "model.safetensors").exists()  # nothing after training ran
    if signal_name == "SIGINT":
        return  # the same checkpoint path as SIGTERM's, whose resume is checked below

    for extra in (
        ["--output_dir", str(part), "--resume_from_checkpoint", str(checkpoint)],
        ["--output_dir", str(tmp_path / "full")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "mipic_hf.run", *args, *extra], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(part / "model.safetensors")
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], atol=1e-6, rtol=0, msg=key)


# A command that SIGKILLs itself on the n-th call of one function (argv: module to run, module.attribute, n, the
# command's own arguments): a kill -9 at a chosen instant, without timing. The writes under test are the product's.
KILL_RUN = """
import importlib, os, runpy, signal, sys
command, where, nth, *rest = sys.argv[1:]
module, attribute = where.split(":")
owner = importlib.import_module(module)
*path, name = attribute.split(".")
for part in path:
    owner = getattr(owner, part)
original, calls = getattr(owner, name), []

def killing(*args, **kwargs):
    calls.append(1)
    if len(calls) == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)

setattr(owner, name, killing)
sys.argv = [command, *rest]
runpy.run_module(command, run_name="__main__")
"""

CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_kill_9_anywhere_leaves_complete_checkpoints_and_exports(tiny_backbone: str, tmp_path: Path) -> None:
    """kill -9 during a step, inside the Trainer's checkpoint write, inside ours (the aux modules, written last),
    inside the export and inside the ONNX export: what loads is the previous complete checkpoint or folder, a
    resume from the last checkpoint ends like the uninterrupted run, and the next write clears the leftovers."""
    from transformers.trainer_utils import get_last_checkpoint

    from mipic_hf.hub.budget import Budget
    from mipic_hf.hub.export import export_run
    from mipic_hf.hub.folders import is_mipic_folder
    from mipic_hf.hub.onnx import export_onnx

    data = _scored_jsonl(tmp_path / "train.jsonl")
    args = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", data),
        *("--train_kind", "scored_pairs", "--max_steps", "6", "--per_device_train_batch_size", "8"),
        *("--learning_rate", "1e-3", "--eval_tasks", "none", "--report_to", "none", "--use_cpu", "true"),
        *("--logging_steps", "1", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "1"),
        *("--seed", "3", "--disable_tqdm", "true", "--preset", "tuned", "--export_model", "false"),
    ]
    env = dict(_fresh_env(), OMP_NUM_THREADS="1", PYTHONPATH=str(PACKAGE.parent))

    def run(command: str, *argv: str, kill_at: str | None = None) -> None:
        head = ["-c", KILL_RUN, command, *kill_at.rsplit(":", 1)] if kill_at else ["-m", command]
        proc = subprocess.run([sys.executable, *head, *argv], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == (-9 if kill_at else 0), (kill_at, proc.stderr[-2000:])

    full = tmp_path / "full"
    run("mipic_hf.run", *args, "--output_dir", str(full))
    killed = {
        "step 5": ("mipic_hf.training.trainer:MIPICTrainer.compute_loss:5", "checkpoint-4"),
        "checkpoint-4, Trainer's files": (
            "transformers.trainer:Trainer._save_optimizer_and_scheduler:2",
            "checkpoint-2",
        ),
        "checkpoint-4, aux modules": ("mipic_hf.training.trainer:MIPICTrainer.save_aux:2", "checkpoint-2"),
    }
    for what, (kill_at, survivor) in killed.items():
        part = tmp_path / what.replace(" ", "_").replace(",", "").replace("'", "")
        run("mipic_hf.run", *args, "--output_dir", str(part), kill_at=kill_at)
        assert [p.name for p in part.glob("checkpoint-*")] == [survivor], what  # the older one was not rotated away
        assert Path(get_last_checkpoint(str(part))).name == survivor
        assert CHECKPOINT_FILES | {"mipic_aux.safetensors"} <= {p.name for p in (part / survivor).iterdir()}, what
    assert (part / ".checkpoint-staging" / "checkpoint-4").is_dir()  # the half-written one, invisible to loaders

    run("mipic_hf.run", *args, "--output_dir", str(part), "--resume_from_checkpoint", get_last_checkpoint(str(part)))
    assert not (part / ".checkpoint-staging").exists()
    assert [p.name for p in part.glob("checkpoint-*")] == ["checkpoint-6"]
    reference, resumed = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], atol=1e-6, rtol=0, msg=key)

    export, onnx = tmp_path / "export", tmp_path / "onnx"
    export_run(full, export)
    export_onnx(export, onnx, [Budget(2, 8), Budget(2, 64)])
    before = {folder: _snapshot(folder) for folder in (export, onnx)}
    run("mipic_hf.export", str(full), str(export), "--overwrite", kill_at="mipic_hf.hub.export:render_card:1")
    run(
        "mipic_hf.export_onnx",
        *(str(export), str(onnx), "--budgets", "2:8", "2:64", "--overwrite"),
        kill_at="mipic_hf.hub.onnx:export_budget:2",
    )
    for folder, files in before.items():
        assert _snapshot(folder) == files, f"{folder.name} changed after a kill"
        assert len(list(tmp_path.glob(f".{folder.name}.partial-*"))) == 1  # the killed build, beside it
    assert is_mipic_folder(export)
    export_run(full, export, overwrite=True)
    assert not list(tmp_path.glob(".export.partial-*")) and _snapshot(export) == before[export]
