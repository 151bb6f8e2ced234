"""LoRA through PEFT for big backbones: per-architecture target defaults, wrapping, adapter save, merge.

Only the backbone is wrapped (``TaskType.FEATURE_EXTRACTION``); the MatryoshkaModel around it and the MIPIC
auxiliary modules (SIA lifts, PIC projectors, classifier) live outside PEFT and stay fully trainable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

_ENCODER_TARGETS = ["query", "key", "value", "dense"]
_DECODER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_LORA_TARGETS: dict[str, list[str]] = {
    "bert": _ENCODER_TARGETS,
    "roberta": _ENCODER_TARGETS,
    "xlm-roberta": _ENCODER_TARGETS,
    "mpnet": ["q", "k", "v", "o", "dense"],  # all-mpnet-base-v2: attention.attn.{q,k,v,o}, the MLP's dense
    "qwen2": _DECODER_TARGETS,
    "qwen3": _DECODER_TARGETS,
    "llama": _DECODER_TARGETS,
    "mistral": _DECODER_TARGETS,
}


def lora_targets(model_type: str, given: list[str] | None) -> list[str]:
    """The modules to adapt: ``given``, else the architecture's default (every attention and MLP projection)."""
    if given:
        return list(given)
    if model_type not in DEFAULT_LORA_TARGETS:
        raise ValueError(
            f"lora.lora_target_modules is required for model type '{model_type}' "
            f"(defaults exist for {', '.join(DEFAULT_LORA_TARGETS)})"
        )
    return list(DEFAULT_LORA_TARGETS[model_type])


def check_targets(backbone: nn.Module, targets: list[str]) -> None:
    """Fail before training when a target matches no module, listing the adaptable leaf names."""
    adaptable = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)
    leaves = {
        name.rsplit(".", 1)[-1]
        for name, m in backbone.named_modules()
        if name and (isinstance(m, adaptable) or type(m).__name__ == "Conv1D")  # GPT-2's Conv1D
    }
    names = {name.rsplit(".", 1)[-1] for name, _ in backbone.named_modules()}
    missing = [t for t in targets if t not in names and not any(n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"lora.lora_target_modules: {missing} not found; candidates: {', '.join(sorted(leaves))}")


def apply_lora(
    model: nn.Module,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None = None,
    gradient_checkpointing: bool = False,
) -> Any:
    """Wrap ``model.backbone`` (a MatryoshkaModel's) in LoRA adapters; returns the PEFT config.

    The backbone's own weights are frozen; with gradient checkpointing the input embeddings are made to
    require grad (``enable_input_require_grads``) so re-entrant checkpoints still reach the adapters.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    targets = lora_targets(model.config.text_config.model_type, target_modules)
    check_targets(model.backbone, targets)
    config = LoraConfig(
        task_type=TaskType.FEATURE_EXTRACTION,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
    )
    model.backbone = get_peft_model(model.backbone, config)
    if gradient_checkpointing:
        model.backbone.enable_input_require_grads()
    return config


def has_lora(model: nn.Module) -> bool:
    return hasattr(getattr(model, "backbone", None), "peft_config")


def save_adapter(model: nn.Module, folder: str | Path, base_model: str | None = None) -> Path:
    """Write the backbone's adapter (``adapter_config.json`` + ``adapter_model.safetensors``) into ``folder``.

    ``base_model`` (a Hub id or path) is recorded as the adapter's ``base_model_name_or_path``.
    """
    backbone = model.backbone
    if base_model is not None:
        for config in backbone.peft_config.values():
            config.base_model_name_or_path = base_model
    backbone.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the backbone's weights (in place); the model is then a plain MatryoshkaModel."""
    if has_lora(model):
        model.backbone = model.backbone.merge_and_unload()
        model.config.text_config = model.backbone.config
    return model
