"""What a run records and prints: the recipe written back, the ``mipic_training`` summary, the closing summary."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..training.arguments import MIPICTrainingArguments
from .arguments import MINILM_HUB_ID, MINILM_PACKAGE
from .plan import Plan


def recipe_sections(plan: Plan) -> dict[str, Any]:
    """The run's recipe as YAML sections: every value that differs from its default (never the token)."""
    from transformers import TrainingArguments

    from .parser import SECTIONS

    sections: dict[str, Any] = {}
    for name in ("model", "data", "lora", "eval", "export"):
        args = getattr(plan.recipe, name)
        defaults = asdict(type(args)())
        sections[name] = {k: v for k, v in asdict(args).items() if v != defaults[k]}
    sections["loss"] = {"method": plan.recipe.training.method, "preset": plan.recipe.training.preset}
    given = plan.recipe.training.to_dict()
    given["push_to_hub"] = plan.push is not None
    defaults = MIPICTrainingArguments(output_dir=plan.recipe.training.output_dir).to_dict()
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
    from ..losses.objective import resolve_settings

    t, obj = plan.recipe.training, plan.objective
    backbone = plan.recipe.model.backbone
    summary: dict[str, Any] = {
        "run_name": Path(t.output_dir).name,
        "method": t.method,
        "preset": t.preset if t.method == "mipic" else None,
        "task_loss": plan.task,
        "base_model": MINILM_HUB_ID if backbone == MINILM_PACKAGE else backbone,
        "train_data": plan.recipe.data.train_data,
        "train_rows": len(plan.train_dataset) if plan.train_dataset is not None else None,
        "dropped_rows": plan.dropped_rows,
        "steps": steps,
        "batch_size": t.per_device_train_batch_size * t.gradient_accumulation_steps * max(1, t.world_size),
        "learning_rate": t.learning_rate,
        "train_seconds": round(seconds, 1),
        "license": plan.recipe.export.license,
    }
    config = obj.config_dict()
    if t.method == "mipic":
        summary["alpha"] = config["alpha"]
        summary["settings"] = {**resolve_settings(t), "alpha": config["alpha"]}
        summary.update({k: config[k] for k in ("pic_ladder", "terms", "sia_layers", "sia_prefix_dims") if k in config})
    elif "pairs" in config:
        summary["pairs"] = config["pairs"]
    if plan.teacher_loss is not None:
        source = f"cache {t.teacher_cache}" if t.teacher_cache else t.teacher_model
        term = {"source": source, "weight": t.teacher_weight, "layers": t.teacher_layers}
        summary["teacher"] = {**term, **plan.teacher_loss.config_dict()}
    if plan.recipe.lora.use_lora:
        from ..training.lora import lora_targets

        lora = plan.recipe.lora
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
