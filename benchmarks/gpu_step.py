"""bf16 LoRA training-step throughput of MIPIC vs ``mrl`` on big randomly initialised backbones, with MFU.

    python benchmarks/gpu_step.py [--batch_size 64] [--seq_len 256] [--steps 10] [--methods mrl mipic mipic_paper]
        [--cache_mini_batch_size N] [--out results.json] [--tiny]
    python benchmarks/gpu_step.py --report benchmarks/results/gpu/step_h100_2026-11-26.json   # a run's table

Shapes: Qwen3-0.6B (decoder, 28 layers, hidden 1024) and XLM-R-large (BGE-M3's architecture, 24 layers,
hidden 1024), random weights in bfloat16, LoRA r=16 on attention and MLP projections (PEFT), auxiliary modules in
float32, the Trainer's own step (``MIPICTrainer.training_step``: bf16 autocast, backward; with
``--cache_mini_batch_size`` the gradient-cached step), then clipping and AdamW. Dims 16..1024; ``mipic`` is the
``default`` preset, ``mipic_paper`` the paper's ladder and SIA layers. The task learns on every shape: MNRL on
(anchor, positive) pairs of random token ids where the positive is its anchor with 15% of the tokens replaced
(SimCSE's two identical views on a decoder without dropout gave a loss of 0.0 throughout). Methods alternate step
by step after warm-up; the median step is reported with its ratio to ``mrl``. Peak memory:
``torch.cuda.max_memory_allocated`` over a separate step per method.

MFU counts the backbone's model FLOPs only (so MIPIC's extra work shows up as a lower MFU), written out in the
JSON (``flop_formula``): per real or padded token, forward 2 N (N = non-embedding parameters) plus attention 4 m D
per layer; LoRA backward adds the input gradients, 2 N + 8 m D per layer; two text columns per step; a cached step
runs the forward twice (its first pass has no backward), so its MFU counts the work it must do once. Peak: 989
TFLOP/s dense bf16 (H100 SXM; ``--peak_tflops`` for another chip, e.g. 989 for H200 too). ``--tiny`` runs 2-layer,
64-wide shapes on CPU to check the script.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK_BF16 = 989e12
FLOP_FORMULA = (
    "columns x tokens x [(2 N + 4 m D L) forward + (2 N + 8 m D L) LoRA backward], N non-embedding parameters, "
    "m sequence length, D hidden size, L layers"
)
METHODS = {"mrl": ("mrl", "default"), "mipic": ("mipic", "default"), "mipic_paper": ("mipic", "paper")}


def shapes(tiny: bool) -> dict[str, object]:
    from transformers import Qwen3Config, XLMRobertaConfig

    if tiny:
        return {
            "qwen3-tiny": Qwen3Config(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=32,
                intermediate_size=128,
                vocab_size=1000,
            ),
            "xlmr-tiny": XLMRobertaConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                vocab_size=1000,
                max_position_embeddings=300,
            ),
        }
    return {
        "qwen3-0.6b": Qwen3Config(
            hidden_size=1024,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            intermediate_size=3072,
            vocab_size=151669,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
        ),
        "xlm-r-large": XLMRobertaConfig(
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
            vocab_size=250002,
            max_position_embeddings=8194,
        ),
    }


def build(text_config, method: str, device: torch.device, dtype: torch.dtype, cache: int | None = None):
    from peft import LoraConfig, TaskType, get_peft_model

    from mipic_hf import MatryoshkaConfig, MatryoshkaModel, MIPICTrainer, MIPICTrainingArguments

    hidden = text_config.hidden_size
    dims = [d for d in (16, 32, 64, 128, 256, 512) if d < hidden] + [hidden]
    config = MatryoshkaConfig(text_config=text_config, matryoshka_dimensions=dims)
    torch.manual_seed(0)
    model = MatryoshkaModel(config).to(device=device, dtype=dtype)
    targets = (
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        if config.is_causal
        else ["query", "key", "value", "dense"]
    )
    model.backbone = get_peft_model(
        model.backbone, LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=16, lora_alpha=32, target_modules=targets)
    )
    args = MIPICTrainingArguments(
        output_dir="/tmp/gpu_step",
        report_to=[],
        method=METHODS[method][0],
        preset=METHODS[method][1],
        task_loss="mnrl",
        bf16=device.type == "cuda",
        use_cpu=device.type == "cpu",
        learning_rate=2e-5,
        cache_mini_batch_size=cache,
    )
    trainer = MIPICTrainer(model=model, args=args, processing_class=object())
    trainer.model.to(device)  # the encoder and the objective (training.module.TrainingModule)
    trainer.current_gradient_accumulation_steps = 1
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5)
    non_embed = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lora" not in n)
    return model, trainer, optimizer, params, non_embed


def make_batch(text_config, batch: int, seq: int, device: torch.device) -> dict:
    """(anchor, positive) pairs of random ids, lengths seq/2..seq; the positive replaces 15% of its anchor's."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, text_config.vocab_size, (batch, seq), generator=g)
    replace = torch.rand((batch, seq), generator=g) < 0.15
    positives = torch.where(replace, torch.randint(5, text_config.vocab_size, (batch, seq), generator=g), ids)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long().to(device)
    return {"features": [{"input_ids": x.to(device), "attention_mask": mask} for x in (ids, positives)]}


def print_table(report: dict) -> None:
    """The markdown table of a run's JSON (``--report``); older files name the ratios ``*_to_mrl``."""
    print(f"{report['device']}, torch {report['torch']}, batch {report['batch_size']} x {report['seq_len']}")
    print("\n| shape | method | median step (s) | step / first | tokens/s | MFU | peak memory (GiB) | memory / first |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, entry in report["results"].items():
        if "error" in entry:
            print(f"| {shape} | error: {entry['error'][:80]} | | | | | | |")
            continue
        for method, row in entry.items():
            if not isinstance(row, dict):
                continue
            ratio = row.get("ratio_to_first_method", row.get("ratio_to_mrl"))
            memory = row.get("peak_mem_ratio_to_first_method", row.get("peak_mem_ratio_to_mrl", 1.0))
            mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
            peak = row["peak_mem_gib"]
            peak, memory = ("-", "-") if peak is None else (f"{peak:.2f}", f"{memory:.2f}x")  # measured on CUDA only
            print(
                f"| {shape} | {method} | {row['median_step_s']:.3f} | {ratio:.2f}x | {row['tokens_per_s']:,} | {mfu} | "
                f"{peak} | {memory} |"
            )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", default=None, help="print the table of a JSON file an earlier --out wrote")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--cache_mini_batch_size", type=int, default=None, help="gradient-cached steps")
    parser.add_argument("--peak_tflops", type=float, default=PEAK_BF16 / 1e12, help="dense bf16 peak of the chip")
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", nargs="+", default=None, help="shape names to run (default: all)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of one step each")
    return parser.parse_args()


def stepper(runs: dict, batch: dict):
    """``step(method)``: one full update of that method's copy (the Trainer's step, clip, AdamW); its loss."""

    def step(method: str) -> float:
        _, trainer, optimizer, params, _ = runs[method]
        loss = trainer.training_step(trainer.model, batch)  # autocast and backward, cached or not
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # syncs

    return step


def timed_steps(step, methods: list[str], args: argparse.Namespace, device: torch.device):
    """Warm-up, then ``args.steps`` rounds alternating the methods: per method its step times and losses."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    losses: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(args.warmup):
        for m in methods:
            step(m)
    for _ in range(args.steps):
        for m in methods:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            losses[m].append(step(m))
            times[m].append(time.perf_counter() - start)
    return times, losses


def profile_steps(step, methods: list[str], name: str, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    for m in methods:
        with profile(activities=activities) as prof:
            step(m)
        sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(f"== profile {name} {m}\n" + prof.key_averages().table(sort_by=sort, row_limit=18))


def peak_memory(step, methods: list[str], device: torch.device) -> dict[str, float]:
    """GiB ``torch.cuda.max_memory_allocated`` reaches in one more step per method; empty off CUDA."""
    peaks = {}
    if device.type == "cuda":
        for m in methods:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step(m)
            peaks[m] = torch.cuda.max_memory_allocated() / 2**30
    return peaks


def model_flops(text_config, non_embedding: int, batch: dict, seq_len: int) -> int:
    """The backbone's model FLOPs of one step (``FLOP_FORMULA``), padded tokens included."""
    layers, hidden = text_config.num_hidden_layers, text_config.hidden_size
    tokens = int(batch["features"][0]["attention_mask"].numel())
    columns = len(batch["features"])
    attention = seq_len * hidden * layers
    return columns * tokens * ((2 * non_embedding + 4 * attention) + (2 * non_embedding + 8 * attention))


def run_shape(name: str, text_config, args: argparse.Namespace, device: torch.device) -> dict:
    """Every method on one shape: a row per method, the FLOP count, and the parameter count."""
    batch = make_batch(text_config, args.batch_size, args.seq_len, device)
    runs = {m: build(text_config, m, device, torch.bfloat16, args.cache_mini_batch_size) for m in args.methods}
    step = stepper(runs, batch)
    times, losses = timed_steps(step, args.methods, args, device)
    if args.profile:
        profile_steps(step, args.methods, name, device)
    peaks = peak_memory(step, args.methods, device)
    n = next(iter(runs.values()))[4]
    flops = model_flops(text_config, n, batch, args.seq_len)
    tokens = len(batch["features"]) * int(batch["features"][0]["attention_mask"].numel())
    base = statistics.median(times[args.methods[0]])
    entry: dict = {}
    for m in args.methods:
        t = statistics.median(times[m])
        entry[m] = {
            "median_step_s": round(t, 4),
            "ratio_to_first_method": round(t / base, 3),
            "tokens_per_s": round(tokens / t),
            "mfu": round(flops / t / (args.peak_tflops * 1e12), 4) if device.type == "cuda" else None,
            "peak_mem_gib": round(peaks[m], 2) if m in peaks else None,
            "loss_first_last": [round(losses[m][0], 3), round(losses[m][-1], 3)],
            "finite": all(math.isfinite(v) for v in losses[m]),
        }
        if m in peaks:
            entry[m]["peak_mem_ratio_to_first_method"] = round(peaks[m] / peaks[args.methods[0]], 3)
    entry["non_embedding_params"] = n
    entry["model_flops_per_step"] = flops
    return entry


def main() -> None:
    args = parse_args()
    if args.report:
        print_table(json.loads(Path(args.report).read_text(encoding="utf-8")))
        return
    import transformers
    from provenance import refuse_existing, write_raw

    refuse_existing(args.out)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    report: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "cache_mini_batch_size": args.cache_mini_batch_size,
        "flop_formula": FLOP_FORMULA,
        "peak_tflops": args.peak_tflops,
        "results": {},
    }
    for name, text_config in shapes(args.tiny).items():
        if args.only and name not in args.only:
            continue
        try:
            entry = run_shape(name, text_config, args, device)
        except Exception as err:  # keep going: report what broke
            entry = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["results"][name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    if args.out:
        write_raw(args.out, report, method=f"one training step per method: {', '.join(args.methods)}", seed=0)


if __name__ == "__main__":
    main()
