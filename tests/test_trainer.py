"""MIPICTrainer: one forward per text column, training lowers the loss, aux modules in checkpoints only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from datasets import ClassLabel, Dataset
from safetensors import safe_open
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel, MIPICTrainer, MIPICTrainingArguments
from mipic_hf.training.collator import MatryoshkaDataCollator
from mipic_hf.training.trainer import AUX_WEIGHTS_NAME

WORDS = (
    "cat dog bird fish tree car road house river sky sun moon blue red green big small fast slow happy "
    "rain snow city field music book light night stone water"
).split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))


def make_dataset(kind: str, n: int = 32, seed: int = 0) -> Dataset:
    """Synthetic rows for each data kind (no real data needed)."""
    rng = random.Random(seed)
    a = [sentence(rng) for _ in range(n)]
    near = [" ".join(s.split()[:-1] + [rng.choice(WORDS)]) for s in a]
    if kind == "sentences":
        return Dataset.from_dict({"text": a})
    if kind == "pairs":
        return Dataset.from_dict({"anchor": a, "positive": near})
    if kind == "triplets":
        return Dataset.from_dict({"anchor": a, "positive": near, "negative": [sentence(rng) for _ in a]})
    if kind == "scored_pairs":
        other = [s if i % 3 == 0 else (near[i] if i % 3 == 1 else sentence(rng)) for i, s in enumerate(a)]
        scores = [5.0 if i % 3 == 0 else (3.5 if i % 3 == 1 else 0.5) for i in range(n)]
        return Dataset.from_dict({"sentence1": a, "sentence2": other, "score": scores})
    if kind == "labeled":
        labels = [i % 3 for i in range(n)]
        texts = [f"{['cat', 'car', 'rain'][y]} {s}" for s, y in zip(a, labels, strict=True)]
        ds = Dataset.from_dict({"text": texts, "label": labels})
        return ds.cast_column("label", ClassLabel(names=["animal", "vehicle", "weather"]))
    raise ValueError(kind)


EXPECTED_TASK = {
    "sentences": "simcse",
    "pairs": "mnrl",
    "triplets": "mnrl",
    "scored_pairs": "cosent",
    "labeled": "classification",
}
FORWARDS_PER_STEP = {"sentences": 2, "pairs": 2, "triplets": 3, "scored_pairs": 2, "labeled": 1}


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


def tiny_model(tokenizer, dropout: float = 0.0, layers: int = 2) -> MatryoshkaModel:
    text_config = tiny_config("bert", vocab_size=tokenizer.vocab_size, num_layers=layers)
    text_config.hidden_dropout_prob = dropout
    text_config.attention_probs_dropout_prob = dropout
    config = MatryoshkaConfig(text_config=text_config, matryoshka_dimensions=[8, 16, 32, 64], pooling="mean")
    return MatryoshkaModel(config)


def make_args(tmp_path: Path, **kwargs) -> MIPICTrainingArguments:
    defaults = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=16,
        learning_rate=2e-3,
        max_steps=30,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        warmup_steps=0,
        preset="tuned",  # SIA and PIC on: the trainer's auxiliary modules are exercised
    )
    defaults.update(kwargs)
    return MIPICTrainingArguments(**defaults)


def train_losses(trainer: MIPICTrainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("kind", list(EXPECTED_TASK))
def test_training_lowers_the_loss_for_each_data_kind(kind: str, tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model(tokenizer, dropout=0.1 if kind == "sentences" else 0.0)
    trainer = MIPICTrainer(
        model=model, args=make_args(tmp_path), train_dataset=make_dataset(kind), processing_class=tokenizer
    )
    assert trainer.task_loss == EXPECTED_TASK[kind]
    trainer.train()
    losses = train_losses(trainer)
    assert len(losses) == 30 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses
    logged = trainer.state.log_history[0]
    for key in ("mrl", "sia_att", "sia_cka", "pic", "total"):
        assert key in logged, logged


@pytest.mark.parametrize("method", ["mrl", "2dmse", "starbucks", "none"])
def test_baselines_train(method: str, tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    args = make_args(tmp_path, method=method)
    trainer = MIPICTrainer(
        model=tiny_model(tokenizer), args=args, train_dataset=make_dataset("scored_pairs"), processing_class=tokenizer
    )
    trainer.train()
    losses = train_losses(trainer)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("kind", list(FORWARDS_PER_STEP))
@pytest.mark.parametrize("method", ["mipic", "2dmse"])
def test_one_encoder_forward_per_text_column(kind: str, method: str, tokenizer, tmp_path: Path) -> None:
    model = tiny_model(tokenizer, dropout=0.1)
    calls = []
    model.backbone.register_forward_hook(lambda *_: calls.append(1))
    trainer = MIPICTrainer(
        model=model,
        args=make_args(tmp_path, max_steps=2, method=method),
        train_dataset=make_dataset(kind),
        processing_class=tokenizer,
    )
    trainer.train()
    assert len(calls) == 2 * FORWARDS_PER_STEP[kind]


def test_aux_modules_checkpointed_restored_and_not_exported(tokenizer, tmp_path: Path) -> None:
    data = make_dataset("scored_pairs")
    torch.manual_seed(0)
    full = MIPICTrainer(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path / "a", max_steps=4, save_steps=2, save_strategy="steps"),
        train_dataset=data,
        processing_class=tokenizer,
    )
    full.train()
    checkpoint = tmp_path / "a" / "run" / "checkpoint-2"
    assert (checkpoint / AUX_WEIGHTS_NAME).is_file()
    with safe_open(checkpoint / AUX_WEIGHTS_NAME, "pt") as f:
        saved_keys = set(f.keys())
    assert saved_keys == set(full.objective.state_dict())
    assert any("lifts" in k for k in saved_keys) and any("projectors" in k for k in saved_keys)
    # The aux modules are parameters of the module the Trainer wraps, in groups of their own at 2x the encoder's
    # learning rate by default; every trainable parameter is in exactly one group.
    aux = {id(p) for p in full.objective.parameters()}
    grouped = [{id(p) for p in g["params"]} for g in full.optimizer.param_groups]
    assert aux <= {id(p) for p in full.model.parameters()}
    assert all(ids <= aux or not ids & aux for ids in grouped)  # no group mixes the two
    assert set().union(*grouped) == {id(p) for p in full.model.parameters() if p.requires_grad}
    for ids, group in zip(grouped, full.optimizer.param_groups, strict=True):
        expected = full.args.learning_rate * (2 if ids <= aux else 1)
        assert group["initial_lr"] == pytest.approx(expected)
    assert any(ids <= aux for ids in grouped) and any(not ids & aux for ids in grouped)

    # Resume from step 2 with freshly initialised aux modules: they are restored, and the run ends where
    # the uninterrupted one did.
    torch.manual_seed(123)
    resumed = MIPICTrainer(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path / "b", max_steps=4, save_steps=2, save_strategy="steps"),
        train_dataset=data,
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for (name, a), (_, b) in zip(
        full.objective.state_dict().items(), resumed.objective.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert train_losses(resumed)[-1] == pytest.approx(train_losses(full)[-1], rel=1e-4)

    # The exported model never carries them.
    out = tmp_path / "export"
    full.save_model(str(out))
    assert not (out / AUX_WEIGHTS_NAME).exists()
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all(k.startswith("backbone.") for k in keys)
    assert json.loads((out / "config.json").read_text())["model_type"] == "mipic_matryoshka"


def test_resume_without_aux_file_fails_clearly(tokenizer, tmp_path: Path) -> None:
    trainer = MIPICTrainer(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path, max_steps=1),
        train_dataset=make_dataset("pairs"),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match=AUX_WEIGHTS_NAME):
        trainer.load_aux(str(tmp_path))


def test_gradient_accumulation_bf16_and_checkpointing(tokenizer, tmp_path: Path) -> None:
    data = make_dataset("pairs")
    runs = {}
    for name, extra in {"plain": {}, "ckpt": {"activation_checkpointing": True}}.items():
        torch.manual_seed(0)
        model = tiny_model(tokenizer)
        trainer = MIPICTrainer(
            model=model,
            args=make_args(tmp_path / name, max_steps=3, **extra),
            train_dataset=data,
            processing_class=tokenizer,
        )
        trainer.train()
        runs[name] = train_losses(trainer)
        assert model.is_activation_checkpointing == (name == "ckpt")
    # Gradient checkpointing recomputes the same activations: the same losses.
    assert runs["ckpt"] == pytest.approx(runs["plain"], rel=1e-4)

    class Recording(MIPICTrainer):
        micro: list[float] = []

        def compute_loss(self, *args, **kwargs):
            loss = super().compute_loss(*args, **kwargs)
            if self.model.training:
                self.micro.append(float(loss.detach()))
            return loss

    torch.manual_seed(0)
    accum = Recording(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path / "ga", max_steps=3, per_device_train_batch_size=8, gradient_accumulation_steps=2),
        train_dataset=data,
        processing_class=tokenizer,
    )
    accum.train()
    ga_losses = train_losses(accum)
    assert len(ga_losses) == 3 and all(torch.isfinite(torch.tensor(ga_losses)))
    # The logged loss of each step is the mean over its two micro-batches (not their sum, not the last one).
    micro = Recording.micro
    assert len(micro) == 6
    assert ga_losses == pytest.approx([(micro[i] + micro[i + 1]) / 2 for i in (0, 2, 4)], rel=1e-5)

    torch.manual_seed(0)
    bf16 = MIPICTrainer(
        model=tiny_model(tokenizer),
        args=make_args(tmp_path / "bf16", max_steps=3, bf16=True),
        train_dataset=data,
        processing_class=tokenizer,
    )
    bf16.train()
    bf16_losses = train_losses(bf16)
    # bf16 autocast keeps every step's loss within bf16's rounding of the float32 run's (8 bits of mantissa)
    assert bf16_losses == pytest.approx(runs["plain"], rel=0.02)


def test_invalid_options_fail_before_training(tokenizer, tmp_path: Path) -> None:
    data = make_dataset("pairs")
    cases = [
        ({"method": "matryoshka"}, "method must be one of"),
        ({"pic_ladder": ["8:1", "8:2"]}, "pic_ladder must increase"),
        ({"sia_layers": [0, 3]}, "sia_layers must lie in"),
        ({"sia_kl_direction": "both"}, "sia_kl_direction"),
        ({"sia_aggregation": "max"}, "sia_aggregation"),
        ({"task_loss": "cosent"}, "cosent. needs 2 text columns and a score column; the data has 2 text"),
        ({"task_loss": "classification"}, "task_loss 'classification' needs 1 text column"),
    ]
    for options, message in cases:
        args = make_args(tmp_path / "bad", max_steps=1, **options)
        with pytest.raises(ValueError, match=message):
            MIPICTrainer(model=tiny_model(tokenizer), args=args, train_dataset=data, processing_class=tokenizer)
    with pytest.raises(ValueError, match="preset must be one of"):
        make_args(tmp_path, preset="fast")
    assert not (tmp_path / "bad" / "run").exists()


def test_minilm_five_steps_lower_the_loss(minilm_path: str, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = MatryoshkaModel.from_backbone(minilm_path)
    data = make_dataset("scored_pairs", n=16)
    trainer = MIPICTrainer(
        model=model,
        args=make_args(tmp_path, max_steps=5, learning_rate=5e-5),
        train_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train()
    losses = train_losses(trainer)
    assert len(losses) == 5 and losses[-1] < losses[0], losses


def test_pad_to_multiple_of_8_under_bf16(tokenizer, tmp_path: Path) -> None:
    """bf16 / fp16: the default collator pads each column up to a multiple of 8 (tensor-core tiles), and the
    extra padding never counts (same embeddings as without it)."""
    rows = make_dataset("pairs", n=6)
    trainer = MIPICTrainer(
        model=tiny_model(tokenizer), args=make_args(tmp_path, bf16=True), train_dataset=rows, processing_class=tokenizer
    )
    assert trainer.data_collator.pad_to_multiple_of == 8
    batch = trainer.data_collator([rows[i] for i in range(6)])
    plain = MatryoshkaDataCollator(tokenizer)([rows[i] for i in range(6)])
    model = tiny_model(tokenizer).eval()
    for padded, tight in zip(batch["features"], plain["features"], strict=True):
        assert padded["input_ids"].shape[1] % 8 == 0 and padded["input_ids"].shape[1] >= tight["input_ids"].shape[1]
        with torch.no_grad():
            torch.testing.assert_close(model(**padded).embeddings, model(**tight).embeddings, atol=1e-5, rtol=0)


def test_group_by_length_batches_rows_of_similar_length(tokenizer, tmp_path: Path) -> None:
    """train_sampling_strategy group_by_length: the Trainer gets each row's token count (its longest text
    column) as the length column, and its batches carry less padding than random ones."""
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=3 if i % 2 else 40)) for i in range(64)]
    rows = Dataset.from_dict({"anchor": texts, "positive": [t + " " + rng.choice(WORDS) for t in texts]})

    def padded_tokens(strategy: str) -> int:
        args = make_args(tmp_path / strategy, per_device_train_batch_size=8, train_sampling_strategy=strategy)
        trainer = MIPICTrainer(model=tiny_model(tokenizer), args=args, train_dataset=rows, processing_class=tokenizer)
        if strategy == "group_by_length":
            expected = [
                max(len(tokenizer(row["anchor"])["input_ids"]), len(tokenizer(row["positive"])["input_ids"]))
                for row in rows
            ]
            assert trainer.train_dataset["length"] == expected
        return sum(f["input_ids"].numel() for batch in trainer.get_train_dataloader() for f in batch["features"])

    assert padded_tokens("group_by_length") < 0.75 * padded_tokens("random")


def test_non_finite_weights_after_training_stop_the_run() -> None:
    from mipic_hf.training.trainer import NonFiniteLossError, check_finite_weights

    layer = torch.nn.Linear(2, 2)
    check_finite_weights(layer, 3)  # finite: nothing to say
    with torch.no_grad():
        layer.bias[1] = float("inf")
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights after step 3 \(1 tensors, e.g. bias\)"):
        check_finite_weights(layer, 3)
