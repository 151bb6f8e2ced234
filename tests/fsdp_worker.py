"""Run by tests/test_reliability.py, under torch.distributed.run or alone: three SGD steps of the module
MIPICTrainer hands to accelerate (``trainer.model``, the encoder and the objective), sharded with torch's FSDP2
(``fully_shard``, gloo on the CPU) when there are two ranks.

Each step takes 8 rows: with two ranks each rank takes its 4 (FSDP averages the gradients); alone, the mean of
the two 4-row losses (the same gradient). Rank 0 writes the full state dict to OUT/weights.safetensors and
OUT/sharded.json: whether the objective's parameters were sharded (DTensors).

accelerate routes FSDP only to accelerators, so the Trainer cannot run it on this CPU; this applies torch's own
FSDP2 to the same module the Trainer would wrap.

Usage: fsdp_worker.py BACKBONE_DIR OUT
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import AutoTokenizer

from mipic_hf.modeling_mipic import MatryoshkaModel
from mipic_hf.training.arguments import MIPICTrainingArguments
from mipic_hf.training.collator import MatryoshkaDataCollator
from mipic_hf.training.trainer import MIPICTrainer

WORDS = "red blue green cat dog bird fish tree house river stone cloud light night sun moon".split()


def rows(n: int = 24) -> list[dict[str, str]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a = " ".join(rng.choices(WORDS, k=6))
        out.append({"anchor": a, "positive": f"{a} {rng.choice(WORDS)}"})
    return out


def main(backbone: str, out: Path) -> None:
    args = MIPICTrainingArguments(
        output_dir=str(out / "run"), use_cpu=True, report_to=[], seed=0, method="mipic", preset="tuned"
    )
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = MatryoshkaModel.from_backbone(backbone, matryoshka_dimensions=[8, 16, 64])
    from datasets import Dataset

    data = rows()
    trainer = MIPICTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    module = trainer.model.train()  # training.module.TrainingModule: the encoder and the objective
    rank, size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if size > 1:
        for layer in model.backbone.encoder.layer:
            fully_shard(layer)
        fully_shard(module)
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-2)
    collate = MatryoshkaDataCollator(tokenizer)
    for step in range(3):
        batch = data[8 * step : 8 * step + 8]
        halves = [batch[4 * rank : 4 * rank + 4]] if size > 1 else [batch[:4], batch[4:]]
        loss = torch.stack([trainer.compute_loss(module, collate(h)) for h in halves]).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "weights.safetensors"))
        sharded = all(isinstance(p, DTensor) for p in module.objective.parameters())
        (out / "sharded.json").write_text(json.dumps({"objective_sharded": sharded, "world_size": size}))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
