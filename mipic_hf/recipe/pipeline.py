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

    if plan.model_args.output_rotation == "none":
        return None
    data = plan.train_dataset
    columns, _ = split_columns(data.column_names, data[0])
    return training_texts(data, columns, plan.model_args.rotation_max_texts, plan.training_args.seed)


def execute(plan: Plan) -> dict[str, Any]:
    """Train, save, evaluate, export, push; returns the summary (paths and grid results)."""
    import torch
    from transformers import AutoTokenizer

    from ..evaluation.grid import evaluate_grid
    from ..evaluation.report import summary_lines, write_outputs
    from ..hub.folders import ADAPTER_DIR
    from ..modeling_mipic import MatryoshkaModel
    from ..training.callback import MatryoshkaEvalCallback
    from ..training.collator import MatryoshkaDataCollator
    from ..training.lora import apply_lora, merge_lora, save_adapter
    from ..training.rotation import fit_output_rotation
    from ..training.trainer import MIPICTrainer

    args, m = plan.training_args, plan.model_args
    start = time.time()
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
    dims = plan.eval_args.eval_dims or list(plan.config.matryoshka_dimensions)
    layers = plan.eval_args.eval_layers or list(plan.config.matryoshka_layers)

    def grid() -> dict[str, Any]:
        e = plan.eval_args
        return evaluate_grid(
            model,
            tokenizer,
            e.eval_tasks,
            dims=dims,
            layers=layers,
            batch_size=e.eval_batch_size,
            max_samples=e.eval_max_samples,
            split=e.eval_split,
        )

    # the starting checkpoint, scored once (before any rotation or training)
    base_results = grid() if plan.eval_args.eval_tasks and plan.eval_args.eval_base else None
    rotation_texts = rotation_fit_texts(plan)
    if m.output_rotation == "before":
        fit_output_rotation(model, tokenizer, rotation_texts)
    if plan.lora_args.use_lora:
        lora = plan.lora_args
        try:
            apply_lora(
                model,
                r=lora.lora_r,
                alpha=lora.lora_alpha,
                dropout=lora.lora_dropout,
                target_modules=lora.lora_target_modules,
                gradient_checkpointing=bool(
                    args.gradient_checkpointing or getattr(args, "activation_checkpointing", 0)
                ),
            )
        except ValueError as err:
            raise RecipeError(str(err)) from None
    callbacks = []
    if plan.eval_args.eval_during_training and plan.eval_args.eval_tasks:
        callbacks.append(
            MatryoshkaEvalCallback(
                tokenizer,
                plan.eval_args.eval_tasks,
                dims=dims,
                layers=layers,
                max_samples=plan.eval_args.eval_max_samples,
                eval_steps=args.eval_steps,
            )
        )
    collator = None
    if plan.data_args.train_max_length:
        collator = MatryoshkaDataCollator(tokenizer, max_length=plan.data_args.train_max_length)
    trainer = MIPICTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=plan.train_dataset,
        processing_class=tokenizer,
        objective=plan.objective,
        callbacks=callbacks or None,
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    out = Path(args.output_dir)
    main_process = trainer.is_world_process_zero()  # multi-process: only rank 0 writes
    if plan.lora_args.use_lora:
        if main_process:
            save_adapter(model, out / ADAPTER_DIR, base_model=plan.backbone_path)
        merge_lora(model)
    if m.output_rotation == "after":
        fit_output_rotation(model, tokenizer, rotation_texts)
    train_time = time.time() - start
    model.config.mipic_training = training_summary(plan, trainer.state.global_step, train_time)
    trainer.save_model(str(out))  # every rank calls it (sharded engines gather here); rank 0 writes
    if not main_process:
        return {"model_dir": str(out), "train_seconds": round(train_time, 1), "secondary_rank": True}
    tokenizer.save_pretrained(str(out))
    recipe = yaml.safe_dump(recipe_sections(plan), sort_keys=False, default_flow_style=None)
    (out / "mipic_recipe.yaml").write_text(recipe, encoding="utf-8")

    summary: dict[str, Any] = {"model_dir": str(out), "train_seconds": round(train_time, 1)}
    if plan.data_args.drop_invalid_rows:
        summary["dropped_rows"] = plan.dropped_rows
    if plan.eval_args.eval_tasks:
        results = grid()
        if base_results is not None:
            results["base"] = {"model": plan.backbone_path, "tasks": base_results["tasks"]}
        summary["outputs"] = {k: str(v) for k, v in write_outputs(results, out / "eval").items()}
        summary["results"] = results
        summary["summary_lines"] = summary_lines(results)
    if plan.export_dir is not None:
        from ..hub.export import export_run

        repo_id = plan.push.repo_id if plan.push else args.hub_model_id
        summary["export_dir"] = str(
            export_run(
                out,
                plan.export_dir,
                adapter_only=plan.export_args.adapter_only,
                overwrite=plan.run_args.overwrite_output_dir,
                repo_id=repo_id,
                license=plan.export_args.license,
            )
        )
    if plan.push:
        from ..hub.publish import PublishError, publish

        push = plan.push
        try:
            summary["pushed"] = publish(
                plan.export_dir, push.repo_id, private=push.private, revision=push.revision, token=push.token
            )
        except PublishError as err:
            raise RecipeError(f"hub.push_to_hub: {err} (the export is kept in {plan.export_dir})") from None
    summary["total_seconds"] = round(time.time() - start, 1)
    return summary
