"""bf16 LoRA training-step throughput of MIPIC vs ``mrl`` on big randomly initialised backbones, with MFU.

    python benchmarks/gpu_step.py [--batch_size 16] [--seq_len 256] [--steps 10] [--out results.json] [--tiny]

Shapes: Qwen3-0.6B (decoder, 28 layers, hidden 1024) and XLM-R-large (BGE-M3's architecture, 24 layers,
hidden 1024), random weights in bfloat16, LoRA r=16 on attention and MLP projections (PEFT), SIA/PIC
auxiliary modules in float32, bf16 autocast, AdamW, the paper's dims 16..1024 and its per-backbone ladder
and SIA layers (``paper`` preset), SimCSE task loss on random token ids (two forwards per step). Methods
alternate step by step after warm-up; the median step is reported with its ratio to ``mrl``. Peak memory:
``torch.cuda.max_memory_allocated`` over a separate pass per method.

MFU counts the backbone's model FLOPs only (so MIPIC's extra work shows up as a lower MFU): per token
forward 2 N (N = non-embedding parameters) plus attention 4 m D per layer; LoRA backward adds the input
gradients, 2 N + 8 m D per layer; two forwards per step (SimCSE). Peak: 989 TFLOP/s dense bf16 (H100 SXM).
``--tiny`` runs 2-layer, 64-wide shapes on CPU to check the script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK_BF16 = 989e12


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


def build(text_config, method: str, device: torch.device, dtype: torch.dtype):
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
        method=method,
        preset="paper",
        task_loss="simcse",
        bf16=device.type == "cuda",
        use_cpu=device.type == "cpu",
        learning_rate=2e-5,
    )
    trainer = MIPICTrainer(model=model, args=args, processing_class=object())
    trainer.model.to(device)  # the encoder and the objective (training.module.TrainingModule)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-5)
    non_embed = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lora" not in n)
    return model, trainer, optimizer, params, non_embed


def make_batch(text_config, batch: int, seq: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, text_config.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    return {"features": [{"input_ids": ids.to(device), "attention_mask": mask.to(device)}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", nargs="+", default=None, help="shape names to run (default: all)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of one step each")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16
    report: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "results": {},
    }
    import transformers

    report["transformers"] = transformers.__version__
    for name, text_config in shapes(args.tiny).items():
        if args.only and name not in args.only:
            continue
        entry: dict = {}
        try:
            batch = make_batch(text_config, args.batch_size, args.seq_len, device)
            runs = {m: build(text_config, m, device, dtype) for m in ("mrl", "mipic")}

            def step(method: str, runs: dict = runs, batch: dict = batch) -> float:
                model, trainer, optimizer, params, _ = runs[method]
                with torch.autocast(device_type=device.type, dtype=dtype):
                    loss = trainer.compute_loss(trainer.model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                return loss.item()  # syncs

            times: dict[str, list[float]] = {m: [] for m in runs}
            losses: dict[str, list[float]] = {m: [] for m in runs}
            for _ in range(args.warmup):
                for m in runs:
                    step(m)
            for _ in range(args.steps):
                for m in runs:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    losses[m].append(step(m))
                    times[m].append(time.perf_counter() - start)
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
                for m in runs:
                    with profile(activities=activities) as prof:
                        step(m)
                    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
                    print(f"== profile {name} {m}\n" + prof.key_averages().table(sort_by=sort, row_limit=18))
            peaks = {}
            for m in runs:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    step(m)
                    peaks[m] = torch.cuda.max_memory_allocated() / 2**30
            n = runs["mrl"][4]
            layers, hidden = text_config.num_hidden_layers, text_config.hidden_size
            tokens = int(batch["features"][0]["attention_mask"].numel())
            m_len = args.seq_len
            flops = 2 * tokens * ((2 * n + 4 * m_len * hidden * layers) + (2 * n + 8 * m_len * hidden * layers))
            base = statistics.median(times["mrl"])
            for m in runs:
                t = statistics.median(times[m])
                entry[m] = {
                    "median_step_s": round(t, 4),
                    "ratio_to_mrl": round(t / base, 3),
                    "tokens_per_s": round(2 * tokens / t),
                    "mfu": round(flops / t / PEAK_BF16, 4) if device.type == "cuda" else None,
                    "peak_mem_gib": round(peaks.get(m, float("nan")), 2),
                    "loss_first_last": [round(losses[m][0], 3), round(losses[m][-1], 3)],
                    "finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses[m])),
                }
            if peaks:
                entry["mipic"]["peak_mem_ratio_to_mrl"] = round(peaks["mipic"] / peaks["mrl"], 3)
            entry["non_embedding_params"] = n
            entry["model_flops_per_step"] = flops
            del runs
            if device.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as err:  # keep going: report what broke
            entry["error"] = f"{type(err).__name__}: {err}"
            entry["traceback"] = traceback.format_exc()[-3000:]
        report["results"][name] = entry
        print(json.dumps({name: entry}, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
