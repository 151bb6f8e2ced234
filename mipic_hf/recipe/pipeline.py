"""The run itself: train, save, evaluate, export and push, for a checked ``Plan``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from .arguments import RecipeError
from .plan import Plan
from .summary import recipe_sections, training_summary


def rotation_fit_texts(plan: Plan) -> list[str] | None:
    """The texts the output rotation is fitted on: the training rows' distinct texts (every text column), a
    seeded sample of ``model.rotation_max_texts``; never evaluation text. None without a rotation."""
    from ..training.collator import split_columns
    from ..training.rotation import training_texts

    if plan.recipe.model.fit_rotation == "none":
        return None
    data = plan.train_dataset
    columns, _ = split_columns(data.column_names, data[0])
    return training_texts(data, columns, plan.recipe.model.rotation_max_texts, plan.recipe.training.seed)


def calibration_texts(plan: Plan) -> list[str] | None:
    """The texts int8 ranges are calibrated on: a seeded sample of ``model.calibration_max_texts`` distinct
    training texts; never evaluation text. None when calibration is off."""
    from ..training.collator import split_columns
    from ..training.rotation import training_texts

    limit = plan.recipe.model.calibration_max_texts
    if not limit:
        return None
    data = plan.train_dataset
    columns, _ = split_columns(data.column_names, data[0])
    return training_texts(data, columns, limit, plan.recipe.training.seed)


def excluded_pairs(plan: Plan) -> set[tuple[str, str]] | None:
    """The run's normalised training pairs, which the evaluation drops (``eval.eval_decontaminate``)."""
    from ..data.overlap import training_pairs
    from ..training.collator import split_columns

    if not plan.recipe.eval.eval_decontaminate:
        return None
    data = plan.train_dataset
    columns, _ = split_columns(data.column_names, data[0])
    return training_pairs(data, columns)


def load_model(plan: Plan) -> tuple[Any, Any]:
    """The MatryoshkaModel around the backbone (dtype and revision from the recipe) and its tokenizer."""
    import torch
    from transformers import AutoTokenizer

    from ..modeling_mipic import MatryoshkaModel

    m = plan.recipe.model
    kwargs: dict[str, Any] = {}
    if m.dtype:
        kwargs["dtype"] = getattr(torch, m.dtype)
    if m.revision:
        kwargs["revision"] = m.revision
    model = MatryoshkaModel.from_backbone(
        plan.backbone_path,
        matryoshka_dimensions=plan.config.matryoshka_dimensions,
        matryoshka_layers=plan.config.matryoshka_layers,
        pooling=plan.config.pooling,
        normalize=plan.config.normalize,
        max_seq_length=plan.config.max_seq_length,
        trust_remote_code=m.trust_backbone_code,
        **kwargs,
    )
    tokenizer = AutoTokenizer.from_pretrained(
        plan.backbone_path, revision=m.revision, trust_remote_code=m.trust_backbone_code
    )
    return model, tokenizer


def eval_budgets(plan: Plan) -> tuple[list[int], list[int]]:
    """The (dims, layers) the run is scored at: the recipe's, else every trained one."""
    dims = plan.recipe.eval.eval_dims or list(plan.config.matryoshka_dimensions)
    layers = plan.recipe.eval.eval_layers or list(plan.config.matryoshka_layers)
    return dims, layers


def score(
    plan: Plan, model: Any, tokenizer: Any, texts: list[str] | None, exclude: set[tuple[str, str]] | None
) -> dict[str, Any]:
    """The evaluation grid of ``model`` on the recipe's tasks, precisions and clean splits (int8 ranges:
    calibrated on ``texts`` when given, else the model's)."""
    from ..evaluation.grid import evaluate_grid

    e = plan.recipe.eval
    dims, layers = eval_budgets(plan)
    return evaluate_grid(
        model,
        tokenizer,
        e.eval_tasks,
        dims=dims,
        layers=layers,
        batch_size=e.eval_batch_size,
        max_samples=e.eval_max_samples,
        split=e.eval_split,
        precisions=e.eval_precisions,
        calibration_texts=texts,
        exclude_pairs=exclude,
    )


def wrap_lora(plan: Plan, model: Any) -> None:
    """PEFT LoRA adapters on the backbone, as the recipe's ``lora`` section says."""
    from ..training.lora import apply_lora

    lora, args = plan.recipe.lora, plan.recipe.training
    try:
        apply_lora(
            model,
            r=lora.lora_r,
            alpha=lora.lora_alpha,
            dropout=lora.lora_dropout,
            target_modules=lora.lora_target_modules,
            gradient_checkpointing=bool(args.gradient_checkpointing or getattr(args, "activation_checkpointing", 0)),
        )
    except ValueError as err:
        raise RecipeError(str(err)) from None


def build_trainer(plan: Plan, model: Any, tokenizer: Any) -> Any:
    """MIPICTrainer with the plan's objective, the length-capped collator and the evaluation callback."""
    from ..training.callback import MatryoshkaEvalCallback
    from ..training.collator import MatryoshkaDataCollator, pad_multiple
    from ..training.trainer import MIPICTrainer

    e, args = plan.recipe.eval, plan.recipe.training
    callbacks = []
    if e.eval_during_training and e.eval_tasks:
        dims, layers = eval_budgets(plan)
        callbacks.append(
            MatryoshkaEvalCallback(
                tokenizer,
                e.eval_tasks,
                dims=dims,
                layers=layers,
                max_samples=e.eval_max_samples,
                eval_steps=args.eval_steps,
            )
        )
    collator = None
    if plan.recipe.data.train_max_length:
        collator = MatryoshkaDataCollator(
            tokenizer, max_length=plan.recipe.data.train_max_length, pad_to_multiple_of=pad_multiple(args)
        )
    return MIPICTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=plan.train_dataset,
        processing_class=tokenizer,
        objective=plan.objective,
        callbacks=callbacks or None,
    )


def train(plan: Plan, model: Any, tokenizer: Any) -> Any:
    """Rotation fit (before), LoRA, training (none with max_steps 0), the adapter saved and merged, rotation or
    adaptor fit (after), int8 calibration; returns the trainer. SIGTERM / SIGINT while training saves a checkpoint
    at the current step and raises ``Preempted``."""
    from ..hub.folders import ADAPTER_DIR
    from ..training.lora import merge_lora, save_adapter
    from ..training.preemption import PreemptionCallback
    from ..training.rotation import fit_output_rotation
    from ..training.trainer import check_finite_weights

    rotation_texts = rotation_fit_texts(plan)
    if plan.recipe.model.fit_rotation == "before":
        fit_output_rotation(model, tokenizer, rotation_texts)
    if plan.recipe.lora.use_lora:
        wrap_lora(plan, model)
    trainer = build_trainer(plan, model, tokenizer)
    preemption = PreemptionCallback()
    trainer.add_callback(preemption)
    if plan.recipe.training.max_steps != 0:  # 0: the backbone is kept as it is (e.g. fit_rotation: adaptor alone)
        trainer.train(resume_from_checkpoint=plan.recipe.training.resume_from_checkpoint)
    preemption.check(plan.recipe.training.output_dir)  # stopped on SIGTERM / SIGINT: nothing more is written
    check_finite_weights(model, trainer.state.global_step)
    if plan.recipe.lora.use_lora:
        if trainer.is_world_process_zero():  # multi-process: only rank 0 writes
            save_adapter(model, Path(plan.recipe.training.output_dir) / ADAPTER_DIR, base_model=plan.backbone_path)
        merge_lora(model)
    if plan.recipe.model.fit_rotation == "after":
        fit_output_rotation(model, tokenizer, rotation_texts)
    if plan.recipe.model.fit_rotation == "adaptor":
        from ..training.adaptor import AdaptorSettings, fit_output_adaptor

        settings = AdaptorSettings(full_width_codes="backbone", seed=plan.recipe.training.seed)
        fit_output_adaptor(model, tokenizer, rotation_texts, settings)
    texts = calibration_texts(plan)
    if texts and not plan.recipe.export.adapter_only:  # an adapter-only export cannot carry the ranges
        from ..training.calibration import fit_quantization_ranges

        fit_quantization_ranges(model, tokenizer, texts, mode=plan.recipe.model.calibration_mode)
    return trainer


def save(plan: Plan, model: Any, trainer: Any, tokenizer: Any, train_seconds: float) -> Path:
    """The model (with its ``mipic_training`` summary) through the Trainer on every rank; the tokenizer and
    ``mipic_recipe.yaml`` on rank 0."""
    out = Path(plan.recipe.training.output_dir)
    model.config.mipic_training = training_summary(plan, trainer.state.global_step, train_seconds)
    trainer.save_model(str(out))  # every rank calls it (sharded engines gather here); rank 0 writes
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        recipe = yaml.safe_dump(recipe_sections(plan), sort_keys=False, default_flow_style=None)
        (out / "mipic_recipe.yaml").write_text(recipe, encoding="utf-8")
    return out


def evaluate(plan: Plan, model: Any, tokenizer: Any, base_results: dict[str, Any] | None, out: Path) -> dict:
    """Score the trained model (next to the starting checkpoint's scores) and write ``eval/``; the summary's
    entries."""
    from ..evaluation.report import summary_lines, write_outputs

    stored = bool(getattr(model.config, "quantization_ranges", False))  # calibrated after training: use them
    results = score(plan, model, tokenizer, None if stored else calibration_texts(plan), excluded_pairs(plan))
    if base_results is not None:
        results["base"] = {"model": plan.backbone_path, "tasks": base_results["tasks"]}
    outputs = write_outputs(results, out / "eval")
    return {
        "outputs": {k: str(v) for k, v in outputs.items()},
        "results": results,
        "summary_lines": summary_lines(results, plan.recipe.eval.eval_target),
    }


def export(plan: Plan, out: Path) -> str:
    """The export folder others load (``mipic_hf.hub.export``)."""
    from ..hub.export import export_run

    repo_id = plan.push.repo_id if plan.push else plan.recipe.training.hub_model_id
    path = export_run(
        out,
        plan.export_dir,
        adapter_only=plan.recipe.export.adapter_only,
        overwrite=plan.recipe.run.overwrite_output_dir,
        repo_id=repo_id,
        license=plan.recipe.export.license,
    )
    return str(path)


def push(plan: Plan) -> str:
    """Upload the export folder to the Hub; the commit URL."""
    from ..hub.publish import PublishError, publish

    target = plan.push
    try:
        return publish(
            plan.export_dir, target.repo_id, private=target.private, revision=target.revision, token=target.token
        )
    except PublishError as err:
        raise RecipeError(f"hub.push_to_hub: {err} (the export is kept in {plan.export_dir})") from None


def execute(plan: Plan) -> dict[str, Any]:
    """Train, save, evaluate, export, push; returns the summary (paths and grid results)."""
    start = time.time()
    model, tokenizer = load_model(plan)
    evaluating = bool(plan.recipe.eval.eval_tasks)
    # the starting checkpoint, scored once (before any rotation or training)
    base_results = None
    if evaluating and plan.recipe.eval.eval_base:
        base_results = score(plan, model, tokenizer, calibration_texts(plan), excluded_pairs(plan))
    trainer = train(plan, model, tokenizer)
    train_seconds = time.time() - start
    out = save(plan, model, trainer, tokenizer, train_seconds)
    summary: dict[str, Any] = {"model_dir": str(out), "train_seconds": round(train_seconds, 1)}
    if not trainer.is_world_process_zero():
        return {**summary, "secondary_rank": True}
    if plan.recipe.data.drop_invalid_rows:
        summary["dropped_rows"] = plan.dropped_rows
    if evaluating:
        summary.update(evaluate(plan, model, tokenizer, base_results, out))
    if plan.export_dir is not None:
        summary["export_dir"] = export(plan, out)
    if plan.push:
        summary["pushed"] = push(plan)
    summary["total_seconds"] = round(time.time() - start, 1)
    return summary
