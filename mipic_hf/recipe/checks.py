"""Checks a run makes before any work: training numbers, model switches, the teacher, the score range, the
learning signal, evaluation, LoRA, the output folders and the Hub push."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.common import offline_switch
from ..losses.objective import resolve_settings
from ..training.arguments import MIPICTrainingArguments
from .arguments import EvalArguments, ExportArguments, LoraArguments, RecipeError


@dataclass
class PushTarget:
    """Where hub.push_to_hub uploads the export; the token stays out of reprs and logs."""

    repo_id: str
    private: bool | None
    revision: str | None
    token: str = field(repr=False)


def check_teacher(args: MIPICTrainingArguments) -> None:
    """teacher.*: a readable cache or model, CKA only with token states (dims and exits: build_teacher_loss)."""
    from ..data import looks_like_path

    if not (args.teacher_model or args.teacher_cache):
        return
    if args.teacher_cache and not os.path.isfile(args.teacher_cache):
        raise RecipeError(
            f"teacher.teacher_cache '{args.teacher_cache}' does not exist (write it with python -m "
            "mipic_hf.teacher_cache TEACHER DATA OUT)"
        )
    name = args.teacher_model
    if name and name != "initial" and looks_like_path(name) and not os.path.exists(name):
        raise RecipeError(f"teacher.teacher_model '{name}' does not exist; use 'initial', a folder or a Hub id")
    if args.teacher_cka_weight and args.teacher_cache:
        raise RecipeError(
            "teacher.teacher_cka_weight needs token states: a live teacher ('initial' or a model with the "
            "student's tokenizer), not teacher_cache"
        )


def check_output_dir_is_folder(t: MIPICTrainingArguments) -> None:
    """training.output_dir names a folder (new or existing), not a file."""
    if os.path.exists(t.output_dir) and not os.path.isdir(t.output_dir):
        raise RecipeError(f"training.output_dir '{t.output_dir}' is a file; name a folder (new or existing)")


def check_score_range(dataset: Any, score_range: list[float] | None) -> None:
    """data.score_range: every score lies in the declared [min, max]."""
    if score_range is None:
        return
    if len(score_range) != 2 or not score_range[0] < score_range[1]:
        raise RecipeError(f"data.score_range must be two numbers [min, max] with min < max, got {score_range}")
    if "score" not in dataset.column_names:
        raise RecipeError(f"data.score_range applies to scored_pairs data; this data has {dataset.column_names}")
    low, high = score_range
    bad = next(((i, s) for i, s in enumerate(dataset["score"]) if not low <= s <= high), None)
    if bad is not None:
        raise RecipeError(
            f"data.score_range: the score in row {bad[0]} is {bad[1]}, outside the declared range [{low}, {high}]"
        )


def check_push(training_args: MIPICTrainingArguments, export_dir: str | None) -> PushTarget:
    """hub.push_to_hub: the repo id, the network and a token, checked before any work (never printed)."""
    from ..hub.ids import is_repo_id
    from ..hub.publish import PublishError, resolve_token

    repo_id = training_args.hub_model_id
    if not is_repo_id(repo_id):
        raise RecipeError(f"hub.hub_model_id must be 'org/name' with hub.push_to_hub, got {repo_id!r}")
    if export_dir is None:
        raise RecipeError("hub.push_to_hub uploads the export folder: set export.export_model: true")
    if offline_switch(datasets=False):
        raise RecipeError("hub.push_to_hub needs the network, but HF_HUB_OFFLINE is set")
    try:
        token = resolve_token(training_args.hub_token)
    except PublishError as err:
        raise RecipeError(f"hub.push_to_hub: {err}") from None
    return PushTarget(repo_id, training_args.hub_private_repo, training_args.hub_revision, token)


def check_learning_signal(training_args: MIPICTrainingArguments) -> None:
    """A run without the task loss needs something else to learn from (MIPIC's terms or a teacher); a run of no
    training step (max_steps 0) learns nothing."""
    if training_args.max_steps == 0:
        return
    has_teacher = bool(training_args.teacher_model or training_args.teacher_cache) and training_args.teacher_weight
    mipic_terms = False
    if training_args.method == "mipic":
        s = resolve_settings(training_args)
        weighted = bool(s["sia_attention_weight"] or s["sia_cka_weight"] or s["pic_weight"])
        mipic_terms = weighted and (s["alpha"] is None or s["alpha"] < 1)
    if training_args.task_weight == 0 and not mipic_terms and not has_teacher:
        raise RecipeError(
            f"loss.task_weight 0 leaves method {training_args.method}"
            + (f" (preset {training_args.preset})" if training_args.method == "mipic" else "")
            + " nothing to learn from; set a teacher (teacher.teacher_model, teacher_weight > 0), SIA or PIC "
            "weights, or a task_weight > 0"
        )


def check_eval(eval_args: EvalArguments, hidden: int, num_layers: int, calibration_max_texts: int = 2000) -> None:
    """Known tasks (or BEIR folders); dims and layers inside the backbone; precisions (the target is
    EvalArguments' own rule)."""
    from ..data import BENCHMARKS
    from ..data.retrieval import is_beir_folder
    from ..evaluation.precision import GRID_PRECISIONS
    from ..evaluation.report import check_plots

    if eval_args.eval_tasks:
        try:
            check_plots()
        except ImportError as err:
            raise RecipeError(f"eval.eval_tasks: {err}, or set eval.eval_tasks: none") from None
    unknown = [t for t in eval_args.eval_tasks if t not in BENCHMARKS and not is_beir_folder(t)]
    if unknown:
        raise RecipeError(
            f"eval.eval_tasks: unknown {unknown}; known: {', '.join(sorted(BENCHMARKS))}, or a BEIR folder's path"
        )
    bad = [p for p in eval_args.eval_precisions if p not in GRID_PRECISIONS]
    if bad or not eval_args.eval_precisions:
        raise RecipeError(
            f"eval.eval_precisions must be among {', '.join(GRID_PRECISIONS)}, got {eval_args.eval_precisions}"
        )
    if eval_args.eval_tasks and calibration_max_texts == 0 and {"int8", "uint8"} & set(eval_args.eval_precisions):
        raise RecipeError(
            "eval.eval_precisions int8/uint8 need calibrated ranges: set model.calibration_max_texts >= 2 or drop them"
        )
    bad = [d for d in eval_args.eval_dims or [] if not 1 <= d <= hidden]
    if bad:
        raise RecipeError(f"eval.eval_dims must lie in 1..{hidden}, got {bad}")
    bad = [layer for layer in eval_args.eval_layers or [] if not 1 <= layer <= num_layers]
    if bad:
        raise RecipeError(f"eval.eval_layers must lie in 1..{num_layers}, got {bad}")


def check_lora(lora_args: LoraArguments, export_args: ExportArguments, model_type: str, skeleton: Any) -> None:
    """LoRA targets (against the backbone's module names when ``skeleton`` is given; rank, alpha and dropout are
    LoraArguments' own rules); an adapter-only export needs LoRA."""
    if not lora_args.use_lora:
        if export_args.adapter_only:
            raise RecipeError("export.adapter_only needs lora.use_lora: true (there is no adapter otherwise)")
        return
    from ..training.lora import check_targets, lora_targets

    try:
        targets = lora_targets(model_type, lora_args.lora_target_modules)
        if skeleton is not None:  # apply_lora checks again after loading
            check_targets(skeleton, targets)
    except ValueError as err:
        raise RecipeError(str(err)) from None


def check_output_folders(
    training_args: MIPICTrainingArguments, export_args: ExportArguments, overwrite: bool
) -> str | None:
    """output_dir and the export folder: absent or empty unless overwriting (or resuming); returns the export
    folder (None without an export)."""
    out = Path(training_args.output_dir)
    resuming = bool(training_args.resume_from_checkpoint)
    if out.exists() and any(out.iterdir()) and not overwrite and not resuming:
        raise RecipeError(
            f"output_dir '{out}' exists and is not empty; pass --overwrite_output_dir or another --output_dir"
        )
    if not export_args.export_model:
        return None
    export_dir = export_args.export_dir or str(out / "export")
    target = Path(export_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise RecipeError(
            f"export.export_dir '{target}' exists and is not empty; pass --overwrite_output_dir or another --export_dir"
        )
    return export_dir
