"""LoRA through PEFT: only adapters and aux modules train; merge keeps the embeddings; checkpointing, bf16, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ARCHS, tiny_config
from test_trainer import make_args, make_dataset, tiny_model, train_losses
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel, MIPICTrainer
from mipic_hf.training.lora import DEFAULT_LORA_TARGETS, apply_lora, merge_lora, save_adapter

TEXTS = ["the cat sat on the mat", "a", "embeddings at every budget", "blue river under a big moon tonight"]


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


def lora_model(tokenizer, **kwargs) -> MatryoshkaModel:
    torch.manual_seed(0)
    model = tiny_model(tokenizer)
    apply_lora(model, r=4, alpha=8, dropout=0.0, **kwargs)
    return model


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_only_adapters_and_aux_modules_change(tokenizer, tmp_path: Path) -> None:
    model = lora_model(tokenizer)
    trainer = MIPICTrainer(
        model=model,
        args=make_args(tmp_path, max_steps=3),
        train_dataset=make_dataset("scored_pairs"),
        processing_class=tokenizer,
    )
    before, aux_before = snapshot(model), snapshot(trainer.objective)
    assert aux_before, "the MIPIC objective has auxiliary modules (SIA lifts, PIC projectors)"
    trainer.train()
    after, aux_after = snapshot(model), snapshot(trainer.objective)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    lora_names = {n for n in before if "lora_" in n}
    assert lora_names and changed, "some adapter weight must move in 3 steps"
    assert changed <= lora_names, f"frozen backbone weights changed: {sorted(changed - lora_names)[:3]}"
    assert {n for n in lora_names if "lora_B" in n} <= changed  # B starts at zero: every B must move
    assert all(not torch.equal(aux_before[n], aux_after[n]) for n in aux_before), "aux modules stay trainable"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == lora_names


def test_merged_model_equals_the_adapted_one(tokenizer, tmp_path: Path) -> None:
    model = lora_model(tokenizer)
    MIPICTrainer(
        model=model,
        args=make_args(tmp_path, max_steps=3),
        train_dataset=make_dataset("pairs"),
        processing_class=tokenizer,
    ).train()
    model.eval()
    budgets = [(8, 1), (64, 2), (16, 2)]
    unmerged = {b: model.encode(TEXTS, tokenizer, dimension=b[0], layer=b[1]) for b in budgets}
    torch.manual_seed(0)
    base = tiny_model(tokenizer).eval()  # the same seed: the weights before training
    trained = base.encode(TEXTS, tokenizer, dimension=64, layer=2) != pytest.approx(unmerged[(64, 2)], abs=1e-4)
    assert trained, "3 steps must move the adapted embeddings"
    merge_lora(model)
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert type(model.backbone).__name__ == "BertModel"
    for dim, layer in budgets:
        merged = model.encode(TEXTS, tokenizer, dimension=dim, layer=layer)
        assert merged == pytest.approx(unmerged[(dim, layer)], abs=1e-4)

    # The saved merged model has plain backbone keys; the adapter folder reloads through transformers' PEFT.
    folder = tmp_path / "merged"
    model.save_pretrained(folder)
    reloaded = MatryoshkaModel.from_pretrained(folder).eval()
    assert reloaded.encode(TEXTS, tokenizer, dimension=16) == pytest.approx(
        model.encode(TEXTS, tokenizer, dimension=16), abs=1e-5
    )


@pytest.mark.parametrize("arch", [*ARCHS, "mpnet"])  # mpnet: all-mpnet-base-v2, the second real backbone
def test_default_targets_per_architecture(arch: str) -> None:
    config = MatryoshkaConfig(
        text_config=tiny_config(arch), pooling="last_token" if arch == "qwen3" else "cls", matryoshka_dimensions=[8, 64]
    )
    model = MatryoshkaModel(config)
    apply_lora(model, r=2, alpha=4, dropout=0.0)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if "lora_A" in n}
    assert adapted == set(DEFAULT_LORA_TARGETS[arch])
    ids = torch.randint(3, 900, (2, 7))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), dimension=8, layer=1)
    assert out.embeddings.shape == (2, 8)


def test_unknown_target_and_architecture_fail_with_candidates(tokenizer) -> None:
    model = tiny_model(tokenizer)
    with pytest.raises(ValueError, match=r"\['qkv'\] not found; candidates: .*query"):
        apply_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["qkv"])
    gpt2 = MatryoshkaModel(
        MatryoshkaConfig(
            text_config={"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "vocab_size": 100},
            pooling="last_token",
            matryoshka_dimensions=[8, 64],
        )
    )
    with pytest.raises(ValueError, match="lora_target_modules is required for model type 'gpt2'"):
        apply_lora(gpt2, r=2, alpha=4, dropout=0.0)


def test_gradient_checkpointing_bf16_and_resume(tokenizer, tmp_path: Path) -> None:
    data = make_dataset("scored_pairs")
    # Checkpointing recomputes the same activations; the adapters still get gradients.
    losses = {}
    for name, extra in {"plain": {}, "ckpt": {"activation_checkpointing": True}}.items():
        model = lora_model(tokenizer, gradient_checkpointing=bool(extra))
        before = snapshot(model)
        trainer = MIPICTrainer(
            model=model,
            args=make_args(tmp_path / name, max_steps=3, **extra),
            train_dataset=data,
            processing_class=tokenizer,
        )
        trainer.train()
        losses[name] = train_losses(trainer)
        assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if "lora_B" in n)
    assert losses["ckpt"] == pytest.approx(losses["plain"], rel=1e-4)

    # bf16 autocast: finite losses close to float32, adapters kept in float32.
    model = lora_model(tokenizer)
    trainer = MIPICTrainer(
        model=model,
        args=make_args(tmp_path / "bf16", max_steps=3, bf16=True),
        train_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train()
    bf16 = train_losses(trainer)
    assert all(torch.isfinite(torch.tensor(bf16))) and bf16[0] == pytest.approx(losses["plain"][0], rel=0.05)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)

    # Resume from a checkpoint: the same adapters, aux modules and logged losses as the uninterrupted run.
    def run(out: Path, resume: str | None = None, max_steps: int = 4) -> MIPICTrainer:
        trainer = MIPICTrainer(
            model=lora_model(tokenizer),
            args=make_args(out, max_steps=max_steps, save_strategy="steps", save_steps=2),
            train_dataset=data,
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    resumed = run(tmp_path / "part", resume=str(tmp_path / "full" / "run" / "checkpoint-2"))
    for name, p in full.model.named_parameters():
        assert torch.allclose(p, dict(resumed.model.named_parameters())[name], atol=1e-6), name
    for name, p in full.objective.named_parameters():
        assert torch.allclose(p, dict(resumed.objective.named_parameters())[name], atol=1e-6), name
    # The resumed history: steps 1-2 from the checkpoint's state, steps 3-4 computed again.
    assert len(train_losses(full)) == 4
    assert train_losses(resumed) == pytest.approx(train_losses(full), abs=1e-6)


def test_save_adapter_names_the_base_model(tokenizer, tmp_path: Path) -> None:
    import json

    model = lora_model(tokenizer)
    folder = save_adapter(model, tmp_path / "adapter", base_model="org/base")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "org/base" and config["task_type"] == "FEATURE_EXTRACTION"
    assert (folder / "adapter_model.safetensors").is_file()
    assert not [p for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth")]


def test_load_best_model_at_end_with_active_adapters(tokenizer, tmp_path: Path) -> None:
    """sentence-transformers #3470: reloading the best checkpoint broke with adapters; here it restores them."""
    from safetensors.torch import load_file

    data = make_dataset("scored_pairs")
    model = lora_model(tokenizer)
    trainer = MIPICTrainer(
        model=model,
        args=make_args(
            tmp_path,
            max_steps=6,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            load_best_model_at_end=True,
            metric_for_best_model="loss",
            greater_is_better=True,  # the worst eval loss wins: an earlier checkpoint than the last step
        ),
        train_dataset=data,
        eval_dataset=make_dataset("scored_pairs", n=16, seed=1),
        processing_class=tokenizer,
    )
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert best is not None and not best.endswith("checkpoint-6"), best
    saved = load_file(str(Path(best) / "model.safetensors"))
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(torch.equal(saved[n], p.detach()) for n, p in lora.items())
    assert hasattr(model.backbone, "peft_config")  # still adapted after the reload
