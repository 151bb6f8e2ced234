"""Teacher-preserving fine-tuning: a frozen teacher, its relational term, live vs cached teachers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from test_trainer import make_args, make_dataset, tiny_model, train_losses
from transformers import AutoTokenizer

from mipic_hf import MatryoshkaConfig, MatryoshkaModel, MIPICTrainer
from mipic_hf.cli.teacher_cache import main as cache_main
from mipic_hf.losses.teacher_relation import TeacherRelationLoss
from mipic_hf.recipe import flatten_recipe
from mipic_hf.run import main
from mipic_hf.training.collator import MatryoshkaDataCollator
from mipic_hf.training.teacher import CachedTeacher, LiveTeacher, write_cache


@pytest.fixture(scope="module")
def tokenizer(minilm_path: str):
    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.mark.parametrize("method", ["mipic", "mrl", "2dmse"])
def test_teacher_is_frozen_outside_the_optimizer_and_composes(method: str, tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model(tokenizer)
    trainer = MIPICTrainer(
        model=model,
        args=make_args(tmp_path, max_steps=3, method=method, teacher_model="initial", teacher_weight=2.0),
        train_dataset=make_dataset("pairs"),
        processing_class=tokenizer,
    )
    teacher = trainer.teacher.model
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    student_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[n], p) for n, p in teacher.named_parameters()), "the teacher never changes"
    assert any(not torch.equal(student_before[n], p) for n, p in model.named_parameters()), "the student trains"
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}, "no optimizer state for the teacher"
    logged = [h for h in trainer.state.log_history if "teacher" in h]
    assert len(logged) == 3 and all(h["teacher"] > 0 for h in logged)  # the prefixes differ from the teacher
    assert all(torch.isfinite(torch.tensor(train_losses(trainer))))


def test_term_is_zero_for_the_teacher_itself_and_positive_after_perturbation() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(12, 64), dim=-1)
    full = TeacherRelationLoss([64], temperature=0.05)
    assert full(teacher.clone(), teacher)["teacher"].item() == pytest.approx(0.0, abs=1e-6)
    perturbed = teacher + 0.3 * torch.randn_like(teacher)
    assert full(perturbed, teacher)["teacher"].item() > 1e-3
    # Token CKA part: 0 for identical token states, positive for others; padding never counts.
    tokens = torch.randn(3, 7, 64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    cka = TeacherRelationLoss([64], cka_weight=1.0)
    same = cka(teacher.clone(), teacher, [(tokens, tokens.clone(), mask)])["teacher"]
    assert same.item() == pytest.approx(0.0, abs=1e-5)
    padded = tokens.clone()
    padded[0, 5:] = 100.0  # garbage in the padding of sentence 0
    assert cka(teacher.clone(), teacher, [(tokens, padded, mask)])["teacher"].item() == pytest.approx(0.0, abs=1e-5)
    assert cka(teacher.clone(), teacher, [(tokens, torch.randn(3, 7, 64), mask)])["teacher"].item() > 0.01


def _slow_relation(student: torch.Tensor, teacher: torch.Tensor, dims: list[int], relation: str, tau: float) -> float:
    """Loop reference: per prefix, per text i, over the other texts j (KL) or per ordered pair (MSE)."""
    import math

    def cos(a, b) -> float:
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    n, per_dim = student.shape[0], []
    for d in dims:
        s = student[:, :d]
        if relation == "mse":
            gaps = [(cos(s[i], s[j]) - cos(teacher[i], teacher[j])) ** 2 for i in range(n) for j in range(n) if i != j]
            per_dim.append(sum(gaps) / len(gaps))
            continue
        kls = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            t = [math.exp(cos(teacher[i], teacher[j]) / tau) for j in others]
            q = [math.exp(cos(s[i], s[j]) / tau) for j in others]
            pt, ps = [x / sum(t) for x in t], [x / sum(q) for x in q]
            kls.append(sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True)))
        per_dim.append(sum(kls) / n)
    return sum(per_dim) / len(per_dim)


@pytest.mark.parametrize("relation", ["kl", "mse"])
def test_relation_term_equals_a_loop_reference(relation: str) -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(7, 24, dtype=torch.float64), torch.randn(7, 16, dtype=torch.float64)
    dims = [4, 12, 24]
    got = TeacherRelationLoss(dims, temperature=0.3, relation=relation)(student, teacher)["teacher"]
    assert got.item() == pytest.approx(_slow_relation(student, teacher, dims, relation, 0.3), rel=1e-5)
    # MSE is zero for the teacher itself
    same = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    mse = TeacherRelationLoss([16], relation="mse")
    assert mse(same.clone(), same)["teacher"].item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="teacher_relation must be one of kl, mse, got 'l2'"):
        TeacherRelationLoss([16], relation="l2")


def test_gradient_reaches_only_the_student_and_widths_may_differ() -> None:
    torch.manual_seed(0)
    student = torch.randn(10, 64, requires_grad=True)
    teacher = torch.randn(10, 32, requires_grad=True)  # another width: only similarities are compared
    loss = TeacherRelationLoss([8, 16, 64])(student, teacher)["teacher"]
    loss.backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = TeacherRelationLoss([8, 64])(student.bfloat16(), teacher.bfloat16())["teacher"]
    assert low.dtype == torch.float32


def test_cached_teacher_equals_the_live_one(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model(tokenizer).eval()
    data = make_dataset("pairs", n=24)
    collator = MatryoshkaDataCollator(tokenizer, max_length=16)
    texts = list(data["anchor"]) + list(data["positive"])
    path = tmp_path / "cache.safetensors"
    assert write_cache(model, tokenizer, texts, path, batch_size=5, max_length=16) == len(set(texts))
    batch = collator([data[i] for i in range(8)])
    live = LiveTeacher(model)(batch["features"], batch["texts"])
    cached = CachedTeacher(path)(batch["features"], batch["texts"])
    for a, b in zip(live.embeddings, cached.embeddings, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="lacks 1 text"):
        CachedTeacher(path)(batch["features"], [["a text nobody cached"]])


def test_teacher_of_another_width_and_the_cache_command(tokenizer, tiny_backbone: str, tmp_path: Path, capsys) -> None:
    # A 32-wide mipic folder teaches a 64-wide student.
    narrow = tiny_config("bert", vocab_size=tokenizer.vocab_size)
    narrow.hidden_size, narrow.intermediate_size = 32, 64
    teacher_dir = tmp_path / "narrow"
    MatryoshkaModel(MatryoshkaConfig(text_config=narrow, pooling="mean")).save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    data = tmp_path / "pairs.csv"
    rows = make_dataset("pairs", n=16)
    data.write_text(
        "anchor,positive\n" + "".join(f"{a},{p}\n" for a, p in zip(rows["anchor"], rows["positive"], strict=True))
    )
    common = [
        *("--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "16", "64", "--train_data", str(data)),
        *("--train_kind", "pairs", "--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_tasks", "none"),
        *("--report_to", "none", "--save_strategy", "no", "--use_cpu", "true", "--export_model", "false"),
        *("--train_max_length", "32"),
    ]
    assert main([*common, "--teacher_model", str(teacher_dir), "--output_dir", str(tmp_path / "a")]) == 0
    assert "teacher    " in capsys.readouterr().out

    cache = tmp_path / "teacher.safetensors"
    assert cache_main([str(teacher_dir), str(data), str(cache), "--train_kind", "pairs", "--max_length", "32"]) == 0
    assert "distinct texts" in capsys.readouterr().out
    assert cache_main([str(teacher_dir), str(data), str(cache), "--train_kind", "pairs"]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert main([*common, "--teacher_cache", str(cache), "--output_dir", str(tmp_path / "b")]) == 0
    # Token CKA works across widths when the tokenizer is shared, and is refused for a cache (no token states).
    narrow_cka = ["--teacher_model", str(teacher_dir), "--teacher_cka_weight", "1"]
    assert main([*common, *narrow_cka, "--output_dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    cached_cka = ["--teacher_cache", str(cache), "--teacher_cka_weight", "1"]
    assert main([*common, *cached_cka, "--output_dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher.teacher_cka_weight needs token states" in err[0]
    assert not (tmp_path / "d").exists()


def test_recipe_has_a_teacher_section() -> None:
    flat = flatten_recipe({"teacher": {"teacher_model": "initial", "teacher_weight": 0.5}, "loss": {"method": "mrl"}})
    assert flat == {"teacher_model": "initial", "teacher_weight": 0.5, "method": "mrl"}
    with pytest.raises(ValueError, match="belongs in the 'teacher' section"):
        flatten_recipe({"loss": {"teacher_model": "initial"}})


def test_initial_teacher_term_starts_at_zero_at_full_width(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = MIPICTrainer(
        model=tiny_model(tokenizer),  # dropout off: the student is exactly the teacher before step 1
        args=make_args(tmp_path, max_steps=3, method="mrl", teacher_model="initial", teacher_dims=[64]),
        train_dataset=make_dataset("pairs"),
        processing_class=tokenizer,
    )
    trainer.train()
    values = [h["teacher"] for h in trainer.state.log_history if "teacher" in h]
    assert values[0] == pytest.approx(0.0, abs=1e-6) and values[-1] > 1e-6


def _slow_relation_kl(student: torch.Tensor, teacher: torch.Tensor, dim: int, tau: float) -> float:
    """Reference: the relation KL written as loops over texts (row i: softmax over j != i of cos / tau)."""
    n, total = student.shape[0], 0.0
    s = torch.nn.functional.normalize(student[:, :dim].double(), dim=-1)
    t = torch.nn.functional.normalize(teacher.double(), dim=-1)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        p_t = torch.softmax(torch.stack([t[i] @ t[j] / tau for j in others]), 0)
        p_s = torch.softmax(torch.stack([s[i] @ s[j] / tau for j in others]), 0)
        total += float((p_t * (p_t.log() - p_s.log())).sum())
    return total / n


@pytest.mark.parametrize("method", ["mipic", "mrl"])
def test_teacher_at_every_exit_layer_matches_a_slow_reference(method: str, tokenizer, tmp_path: Path) -> None:
    """teacher_layers: the relation KL of each exit's pooled prefixes (a real early exit) to the frozen teacher's
    full width, averaged over dims and layers; the student is perturbed so every layer's term differs."""
    torch.manual_seed(0)
    model = tiny_model(tokenizer)
    args = make_args(tmp_path, method=method, teacher_model="initial", teacher_layers=[1, 2], teacher_dims=[8, 64])
    rows = make_dataset("pairs", n=6)
    trainer = MIPICTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = MatryoshkaDataCollator(tokenizer)([rows[i] for i in range(6)])
    model.eval()
    with torch.no_grad():
        encoded = trainer.model.encode_columns(batch["features"])
        got = trainer.model.teacher(encoded, batch["features"], batch["texts"]).item()
        texts = batch["texts"][0] + batch["texts"][1]
        features = tokenizer(texts, padding=True, return_tensors="pt")
        teacher = trainer.teacher.model(**features, dimension=64).embeddings
        expected = []
        for layer in (1, 2):
            student = model(**features, layer=layer, dimension=64).embeddings
            expected += [_slow_relation_kl(student, teacher, d, 0.2) for d in (8, 64)]
    assert got == pytest.approx(sum(expected) / len(expected), rel=1e-4)
    assert min(expected) > 1e-4 and expected[0] != pytest.approx(expected[2], rel=1e-3)  # the layers differ


def test_teacher_as_the_only_signal_on_unlabelled_sentences(tiny_backbone: str, tmp_path: Path, capsys) -> None:
    """task_weight 0 + a teacher (recipes/matryoshkafy-exits.yaml): one view per step, the task term logged as 0, the
    student still trains; without a teacher the plan refuses, naming the field, before any work."""
    data = tmp_path / "sentences.txt"
    data.write_text("\n".join(f"sentence number {i} about {w}" for i, w in enumerate("cat dog sun sky car" * 4)))
    base = [
        *("--backbone", tiny_backbone, "--train_data", str(data), "--method", "mrl", "--task_weight", "0"),
        *("--max_steps", "2", "--per_device_train_batch_size", "8", "--eval_tasks", "none", "--report_to", "none"),
        *("--save_strategy", "no", "--use_cpu", "true", "--export_model", "false", "--logging_steps", "1"),
    ]
    out = tmp_path / "run"
    assert main([*base, "--output_dir", str(out / "bad")]) == 2
    assert "loss.task_weight 0 leaves method mrl nothing to learn from" in capsys.readouterr().err
    assert not (out / "bad").exists()
    assert main([*base, "--output_dir", str(out / "ok"), "--teacher_model", "initial"]) == 0
    assert "task loss simcse x0 (off)" in capsys.readouterr().out
    trained = MatryoshkaModel.from_pretrained(out / "ok")
    start = MatryoshkaModel.from_backbone(tiny_backbone)
    changed = [n for n, p in trained.backbone.named_parameters() if not torch.equal(p, start.backbone.get_parameter(n))]
    assert changed, "the teacher term alone trains the student"
