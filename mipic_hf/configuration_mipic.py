"""Configuration of a Matryoshka (MIPIC) embedding model.

Self-contained: this file is copied next to the weights on the Hub and runs with
``trust_remote_code=True``, so it imports only ``transformers`` (and the standard library).
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig

POOLING_MODES = ("cls", "mean", "last_token")
FULL_WIDTH_CODES = ("rotated", "backbone")  # the basis of the full width's int8 / binary codes


def _is_causal_backbone(text_config: PretrainedConfig) -> bool:
    """True for decoder-only backbones (Qwen3, Llama, ...): a causal LM with no masked-LM head."""
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
            MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        )
    except ImportError:  # pragma: no cover - very old or very new transformers
        return bool(getattr(text_config, "is_decoder", False))
    model_type = getattr(text_config, "model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return bool(getattr(text_config, "is_decoder", False))
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def default_dimensions(hidden_size: int) -> list[int]:
    """Powers of two from 8 below ``hidden_size``, then ``hidden_size`` (384 -> 8, 16, ..., 256, 384)."""
    dims = [8]
    while dims[-1] * 2 < hidden_size:
        dims.append(dims[-1] * 2)
    return [d for d in dims if d < hidden_size] + [hidden_size]


def _int_list(field: str, values: Any) -> list[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{field} must be a list of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{field} must be a list of integers, got {list(values)!r}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{field} must not be empty")
    return out


def _check_ascending(field: str, values: list[int]) -> None:
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{field} must be strictly ascending, got {values}")


def _text_config(text_config: PretrainedConfig | dict | None) -> PretrainedConfig:
    """The backbone's config from a config, its dict (naming ``model_type``) or None (BERT's defaults)."""
    if text_config is None:
        return AutoConfig.for_model("bert")
    if isinstance(text_config, dict):
        text_config = dict(text_config)
        if "model_type" not in text_config:
            raise ValueError("text_config must name its model_type (e.g. 'bert', 'xlm-roberta', 'qwen3')")
        return AutoConfig.for_model(text_config.pop("model_type"), **text_config)
    if not isinstance(text_config, PretrainedConfig):
        raise ValueError(f"text_config must be a PretrainedConfig or a dict, got {type(text_config).__name__}")
    return text_config


def _budgets(
    dims: list[int] | None, layers: list[int] | None, hidden_size: int, num_layers: int
) -> tuple[list[int], list[int]]:
    """The checked Matryoshka dims (ascending, ending at the hidden size) and exit layers (ascending, in range)."""
    dims = _int_list("matryoshka_dimensions", default_dimensions(hidden_size) if dims is None else dims)
    _check_ascending("matryoshka_dimensions", dims)
    if dims[0] < 1:
        raise ValueError(f"matryoshka_dimensions must be >= 1, got {dims}")
    if dims[-1] > hidden_size:
        raise ValueError(f"matryoshka_dimensions must be <= the hidden size {hidden_size}, got {dims}")
    if dims[-1] != hidden_size:
        raise ValueError(f"matryoshka_dimensions must end with the hidden size {hidden_size}, got {dims}")
    layers = _int_list("matryoshka_layers", list(range(1, num_layers + 1)) if layers is None else layers)
    _check_ascending("matryoshka_layers", layers)
    if layers[0] < 1 or layers[-1] > num_layers:
        raise ValueError(f"matryoshka_layers must lie in 1..{num_layers} (num_hidden_layers), got {layers}")
    return dims, layers


def _pooling(pooling: str | None, text_config: PretrainedConfig) -> str:
    """The pooling mode: last_token for decoders and cls for encoders by default; cls refused for decoders."""
    causal = _is_causal_backbone(text_config)
    if pooling is None:
        pooling = "last_token" if causal else "cls"
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {', '.join(POOLING_MODES)}, got {pooling!r}")
    if pooling == "cls" and causal:
        raise ValueError(
            f"pooling 'cls' is not valid for the decoder backbone {text_config.model_type!r} "
            "(its first token attends to nothing); use 'last_token' or 'mean'"
        )
    return pooling


def _in_range(name: str, value: int | None, top: int, what: str) -> int:
    """``value`` (None: ``top``) checked to be an integer in 1..top; ``what`` names top in the message."""
    if value is None:
        return top
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer in 1..{top}, got {value!r}")
    if not 1 <= value <= top:
        raise ValueError(f"{name} must lie in 1..{top}{what}, got {value}")
    return value


class MatryoshkaConfig(PretrainedConfig):
    """Configuration of :class:`MatryoshkaModel`: a backbone plus its nested (dimension, layer) budgets.

    Args:
        text_config: the backbone's config (a ``PretrainedConfig`` or its dict with ``model_type``),
            nested like ``EncoderDecoderConfig`` nests its parts.
        matryoshka_dimensions: trained nested embedding widths, strictly ascending, the last one equal
            to the backbone's ``hidden_size``. Default: 8, 16, 32, ... below the hidden size, then it.
        matryoshka_layers: layers (1-based, ``hidden_states[l]``) at which an early exit is offered.
            Default: every layer.
        pooling: ``cls`` | ``mean`` | ``last_token``. Default: ``last_token`` for decoder backbones,
            ``cls`` for encoders. ``cls`` is refused for decoder backbones (the first token sees nothing).
        normalize: L2-normalise the embedding after truncation (cosine is unaffected either way).
        default_dimension: width returned when ``dimension`` is not given. Default: the full width.
        default_layer: exit layer used when ``layer`` is not given. Default: the last layer.
        max_seq_length: default truncation length of ``encode`` (None: the tokenizer's).
        output_rotation: the model holds a fitted affine map of the pooled vector, ``(z - mean) @ R`` with R
            orthogonal (weights ``output_rotation.mean`` / ``output_rotation.matrix``), applied before the cut
            to a prefix: a centring + PCA rotation puts the directions of largest variance first.
        full_width_codes: the basis the full width's int8 / binary codes are taken in when the model rotates:
            ``rotated`` (the output's own coordinates, like every prefix) or ``backbone`` (the backbone's own
            coordinates, ``y @ R^T``: the rotation orders the prefixes while the full width quantizes exactly as
            the unrotated model does; an output adaptor's setting). Float vectors are the same either way.
        quantization_ranges: the model holds calibrated int8/uint8 ranges (weights ``quantization.ranges``): the
            per-coordinate min and max of the embedding at every trained (layer, dimension), over training text,
            which ``encode(..., precision="int8")`` uses.
        adapter: set in adapter-only exports: ``{"base_model": id or path, "revision": ..., "subfolder":
            "adapter"}``. ``MatryoshkaModel.from_pretrained`` then loads the base model and this folder's
            PEFT LoRA adapter (needs ``peft``) instead of a weights file.
    """

    model_type = "mipic_matryoshka"
    try:  # transformers >= 5 declares sub-configs through specs
        from transformers.configuration_utils import SubConfigSpec as _Spec

        sub_configs_defaults = {"text_config": _Spec(config_class=AutoConfig, model_type="bert")}
        del _Spec
    except ImportError:  # pragma: no cover - transformers 4.x
        sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config: PretrainedConfig | dict | None = None,
        matryoshka_dimensions: list[int] | None = None,
        matryoshka_layers: list[int] | None = None,
        pooling: str | None = None,
        normalize: bool = True,
        default_dimension: int | None = None,
        default_layer: int | None = None,
        max_seq_length: int | None = None,
        is_matryoshka: bool = True,
        output_rotation: bool = False,
        full_width_codes: str = "rotated",
        quantization_ranges: bool = False,
        adapter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        text_config = _text_config(text_config)
        self.text_config = text_config
        hidden_size = int(text_config.hidden_size)
        num_layers = int(text_config.num_hidden_layers)
        dims, layers = _budgets(matryoshka_dimensions, matryoshka_layers, hidden_size, num_layers)
        pooling = _pooling(pooling, text_config)
        default_dimension = _in_range("default_dimension", default_dimension, hidden_size, "")
        default_layer = _in_range("default_layer", default_layer, num_layers, " (num_hidden_layers)")
        if max_seq_length is not None and (
            isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1
        ):
            raise ValueError(f"max_seq_length must be a positive integer or None, got {max_seq_length!r}")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        if is_matryoshka is not True:
            raise ValueError("is_matryoshka is always true for a MatryoshkaConfig")
        if not isinstance(output_rotation, bool):
            raise ValueError(f"output_rotation must be true or false, got {output_rotation!r}")
        if full_width_codes not in FULL_WIDTH_CODES:
            raise ValueError(f"full_width_codes must be one of {', '.join(FULL_WIDTH_CODES)}, got {full_width_codes!r}")
        if not isinstance(quantization_ranges, bool):
            raise ValueError(f"quantization_ranges must be true or false, got {quantization_ranges!r}")
        if adapter is not None and not (isinstance(adapter, dict) and isinstance(adapter.get("base_model"), str)):
            raise ValueError(f"adapter must be None or a mapping with a 'base_model' string, got {adapter!r}")

        self.matryoshka_dimensions = dims
        self.matryoshka_layers = layers
        self.pooling = pooling
        self.normalize = normalize
        self.default_dimension = default_dimension
        self.default_layer = default_layer
        self.max_seq_length = max_seq_length
        self.adapter = adapter
        self.output_rotation = output_rotation
        self.full_width_codes = full_width_codes
        self.quantization_ranges = quantization_ranges
        # Read by serving engines (vLLM's proposal, infinity): the model is Matryoshka-trained.
        self.is_matryoshka = True
        super().__init__(**kwargs)

    @property
    def is_causal(self) -> bool:
        """Whether the backbone is decoder-only (causal attention, last-token pooling by default)."""
        return _is_causal_backbone(self.text_config)
