"""A Matryoshka embedding model: any transformers encoder or decoder backbone + pooling + nested cut.

Self-contained: this file is copied next to the weights on the Hub and runs with
``trust_remote_code=True``, so it imports only ``torch`` and ``transformers`` (and the standard library).

Budgets: ``dimension=d`` keeps the first d coordinates of the pooled vector (then L2-normalises them when
``config.normalize``); ``layer=l`` is a real early exit, the blocks after l are not run.

Layer semantics: ``hidden_states[l]`` is the output of block l (0 is the embedding output). Backbones
with a final norm after their block stack (Qwen3, Llama, ...) apply that norm to every layer's states,
so an exit after block l computes exactly what the first l blocks plus the final norm compute.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_mipic import MatryoshkaConfig

logger = logging.getLogger(__name__)

_FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "final_norm")
_HUB_KWARGS = ("revision", "token", "cache_dir", "local_files_only", "subfolder", "force_download", "proxies")
_LOAD_KWARGS = ("dtype", "device_map", "attn_implementation", "low_cpu_mem_usage")


@dataclass
class MatryoshkaModelOutput(ModelOutput):
    """Output of :class:`MatryoshkaModel`.

    Args:
        embeddings: (batch, dimension) pooled sentence vectors cut to ``dimension``, unit length when
            ``config.normalize``.
        last_hidden_state: (batch, seq, hidden) token states at the exit layer.
        hidden_states: ``hidden_states[l]`` for l = 0..exit layer (only with ``output_hidden_states``).
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states (B, m, D) into sentence vectors (B, D) in float32; padding never counts.

    ``cls`` takes the first real token, ``last_token`` the last real one (both correct with left or right
    padding), ``mean`` averages the real tokens.
    """
    mask = attention_mask.to(hidden.device)
    if mode == "mean":
        weights = mask.to(torch.float32).unsqueeze(-1)
        summed = (hidden.to(torch.float32) * weights).sum(dim=1)
        return summed / weights.sum(dim=1).clamp(min=1e-9)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if mode == "cls":
        index = torch.where(mask.bool(), positions, mask.shape[1]).amin(dim=1).clamp(max=mask.shape[1] - 1)
    elif mode == "last_token":
        index = torch.where(mask.bool(), positions, -1).amax(dim=1).clamp(min=0)
    else:
        raise ValueError(f"pooling must be one of cls, mean, last_token, got {mode!r}")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index].to(torch.float32)


def truncate_and_normalize(embeddings: torch.Tensor, dimension: int, normalize: bool) -> torch.Tensor:
    """Keep the first ``dimension`` coordinates, then L2-normalise them when ``normalize``."""
    cut = embeddings[..., :dimension]
    return nn.functional.normalize(cut, p=2, dim=-1) if normalize else cut


class OutputRotation(nn.Module):
    """A fitted affine map of pooled vectors, ``(z - mean) @ matrix`` in float32, ``matrix`` orthogonal (D, D).

    Fitted as centring + PCA (columns = principal directions, largest variance first), it orders the
    coordinates so that a prefix keeps the most variance; full-width cosine changes only by the centring.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden_size, dtype=torch.float32))
        self.register_buffer("matrix", torch.eye(hidden_size, dtype=torch.float32))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return (pooled.to(torch.float32) - self.mean.to(torch.float32)) @ self.matrix.to(torch.float32)

    @torch.no_grad()
    def set(self, mean: torch.Tensor, matrix: torch.Tensor, tolerance: float = 1e-4) -> None:
        """Store a fitted map; refuses a matrix that is not orthogonal (|R^T R - I| > ``tolerance``)."""
        size = self.mean.shape[0]
        if tuple(mean.shape) != (size,) or tuple(matrix.shape) != (size, size):
            raise ValueError(f"output rotation must be a ({size},) mean and a ({size}, {size}) matrix")
        matrix = matrix.to(torch.float64)
        error = (matrix.T @ matrix - torch.eye(size, dtype=torch.float64)).abs().max().item()
        if error > tolerance:
            raise ValueError(f"output rotation matrix is not orthogonal (max |R^T R - I| = {error:.2e})")
        self.mean.copy_(mean.to(self.mean.device, torch.float32))
        self.matrix.copy_(matrix.to(self.matrix.device, torch.float32))


PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")  # sentence-transformers' names and dtypes
CALIBRATED_PRECISIONS = ("int8", "uint8")  # these need per-coordinate (min, max) ranges


def precision_bytes(dimension: int, precision: str) -> int:
    """Bytes one vector of ``dimension`` coordinates takes at ``precision`` (binary: d/8, rounded up)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return 4 * dimension
    return dimension if precision in CALIBRATED_PRECISIONS else -(-dimension // 8)


def quantize_embeddings(embeddings: torch.Tensor, precision: str, ranges: torch.Tensor | None = None) -> torch.Tensor:
    """``sentence_transformers.quantization.quantize_embeddings`` in torch, for (N, d) float embeddings.

    ``float32``: unchanged. ``int8`` / ``uint8``: each coordinate cut into 255 steps between ``ranges[0]`` (min)
    and ``ranges[1]`` (max), a (2, d) tensor calibrated on training text: ``q = clip(floor((x - min) / step), 0,
    255)`` (uint8), ``q - 128`` (int8); values outside the range saturate. ``binary`` / ``ubinary``: the sign bits
    ``x > 0`` packed 8 per byte, first coordinate in the highest bit (numpy's ``packbits``), as uint8 (ubinary)
    or shifted by -128 to int8 (binary); d not a multiple of 8 pads the last byte with zero bits.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    embeddings = embeddings.to(torch.float32)
    if precision == "float32":
        return embeddings
    if precision in CALIBRATED_PRECISIONS:
        if ranges is None:
            raise ValueError(f"precision {precision!r} needs calibrated ranges: a (2, {embeddings.shape[-1]}) tensor")
        ranges = torch.as_tensor(ranges).to(embeddings.device, torch.float32)
        if tuple(ranges.shape) != (2, embeddings.shape[-1]):
            raise ValueError(f"ranges must have shape (2, {embeddings.shape[-1]}), got {tuple(ranges.shape)}")
        starts = ranges[0]
        steps = (ranges[1] - starts) / 255
        steps = torch.where(steps == 0, torch.ones_like(steps), steps)
        codes = torch.clamp(torch.floor((embeddings - starts) / steps), 0, 255)
        return codes.to(torch.uint8) if precision == "uint8" else (codes - 128).to(torch.int8)
    bits = embeddings > 0
    pad = -bits.shape[-1] % 8
    if pad:
        bits = nn.functional.pad(bits, (0, pad))
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.int32, device=bits.device)
    packed = (bits.reshape(*bits.shape[:-1], -1, 8).to(torch.int32) * weights).sum(-1)
    return packed.to(torch.uint8) if precision == "ubinary" else (packed - 128).to(torch.int8)


class QuantizationRanges(nn.Module):
    """Per-coordinate (min, max) ranges for int8 / uint8 at every trained (exit layer, dimension) budget.

    ``ranges[i, j, 0, :d]`` / ``ranges[i, j, 1, :d]`` are the minimum / maximum of each coordinate of the
    embedding at ``layers[i]``, ``dims[j] = d`` (cut, and normalised when the model normalises), over the
    calibration texts (training text, never evaluation text). Stored in float32 with the weights.
    """

    def __init__(self, layers: list[int], dims: list[int], hidden_size: int) -> None:
        super().__init__()
        self.layers, self.dims = [int(v) for v in layers], [int(v) for v in dims]
        shape = (len(self.layers), len(self.dims), 2, hidden_size)
        self.register_buffer("ranges", torch.zeros(shape, dtype=torch.float32))

    def _index(self, layer: int, dimension: int) -> tuple[int, int]:
        if layer not in self.layers or dimension not in self.dims:
            raise ValueError(
                f"int8/uint8 ranges are calibrated at layers {self.layers} x dims {self.dims}, not at "
                f"(layer {layer}, dimension {dimension}): pass ranges= or use a calibrated budget"
            )
        return self.layers.index(layer), self.dims.index(dimension)

    def get(self, layer: int, dimension: int) -> torch.Tensor:
        """The (2, dimension) ranges of one budget."""
        i, j = self._index(layer, dimension)
        return self.ranges[i, j, :, :dimension]

    @torch.no_grad()
    def set(self, layer: int, dimension: int, ranges: torch.Tensor) -> None:
        """Store the (2, dimension) ranges of one budget (min <= max checked)."""
        i, j = self._index(layer, dimension)
        ranges = torch.as_tensor(ranges).to(self.ranges.device, torch.float32)
        if tuple(ranges.shape) != (2, dimension):
            raise ValueError(f"ranges must have shape (2, {dimension}), got {tuple(ranges.shape)}")
        if not bool(torch.isfinite(ranges).all()) or bool((ranges[0] > ranges[1]).any()):
            raise ValueError("ranges must be finite with min <= max in every coordinate")
        self.ranges[i, j].zero_()
        self.ranges[i, j, :, :dimension] = ranges


class MatryoshkaPreTrainedModel(PreTrainedModel):
    config_class = MatryoshkaConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _keep_in_fp32_modules = ["output_rotation", "quantization"]

    def _init_weights(self, module: nn.Module) -> None:
        # The backbone initialises itself (transformers dispatches to each sub-model's own _init_weights);
        # this wrapper owns no parameters of its own.
        return


class MatryoshkaModel(MatryoshkaPreTrainedModel):
    """A backbone whose pooled embedding can be cut to any prefix width and any exit layer.

    ``forward(input_ids, attention_mask, dimension=None, layer=None, output_hidden_states=False)`` returns a
    :class:`MatryoshkaModelOutput`; ``encode(texts, tokenizer, dimension=..., layer=...)`` embeds raw
    texts; ``from_backbone(name_or_path, ...)`` wraps a pretrained encoder or decoder keeping its weights.
    """

    def __init__(self, config: MatryoshkaConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            backbone = AutoModel.from_config(config.text_config, **_backbone_init_kwargs(config.text_config))
        self.backbone = backbone
        self.config.text_config = backbone.config
        self.output_rotation = OutputRotation(self.hidden_size) if config.output_rotation else None
        self.quantization = self._new_quantization() if config.quantization_ranges else None
        self._tokenizer = None
        self.post_init()

    # ----- structure -------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.config.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.config.text_config.num_hidden_layers)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def block_list_name(self) -> str:
        """The dotted name, within the backbone, of its stack of blocks: the ModuleList holding
        ``num_hidden_layers`` blocks (``encoder.layer`` in BERT / XLM-R, ``layers`` in Qwen3 / Llama, ``h`` in
        GPT-2, ...), one mechanism for every architecture."""
        candidates = []
        for name, module in self.backbone.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers and name:
                candidates.append(name)
        if not candidates:
            raise ValueError(
                f"cannot find the block list of {type(self.backbone).__name__}: no ModuleList of "
                f"{self.num_layers} (num_hidden_layers) modules"
            )
        return min(candidates, key=lambda n: n.count("."))

    def block_list(self) -> tuple[nn.Module, str, nn.ModuleList]:
        """The backbone's stack of blocks: (parent module, attribute name, ModuleList); see :meth:`block_list_name`."""
        parent_name, _, attr = self.block_list_name().rpartition(".")
        parent = self.backbone.get_submodule(parent_name) if parent_name else self.backbone
        return parent, attr, getattr(parent, attr)

    def _final_norm(self) -> nn.Module | None:
        """The norm a pre-LN backbone applies after its last block, if any (``norm`` in Qwen3)."""
        for name in _FINAL_NORM_NAMES:
            module = getattr(self.backbone, name, None)
            if isinstance(module, nn.Module):
                return module
        return None

    @contextlib.contextmanager
    def exit_after(self, layer: int) -> Iterator[None]:
        """Run only the first ``layer`` blocks inside this context (not thread-safe: it swaps the list)."""
        if layer >= self.num_layers:
            yield
            return
        parent, attr, blocks = self.block_list()
        setattr(parent, attr, nn.ModuleList(list(blocks)[:layer]))
        try:
            yield
        finally:
            setattr(parent, attr, blocks)

    # ----- pooling ---------------------------------------------------------------------------------
    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pool token states (B, m, D) with this model's pooling mode into float32 (B, D), then apply the output
        rotation when the model has one: the full-width vector whose prefixes are the embeddings."""
        return self.rotate(pool(hidden, attention_mask, self.config.pooling))

    def rotate(self, vectors: torch.Tensor) -> torch.Tensor:
        """The output rotation ``(z - mean) @ R`` of pooled vectors or token states (identity without one)."""
        return vectors if self.output_rotation is None else self.output_rotation(vectors)

    def code_basis(self) -> torch.Tensor | None:
        """The (D, D) map from the output's coordinates to those the full width's int8 / binary codes are taken in:
        ``R^T`` (back to the backbone's centred coordinates) when ``config.full_width_codes`` is ``backbone`` and
        the model rotates, else None (codes of the output as is). Prefixes are always coded as output."""
        if self.output_rotation is None or getattr(self.config, "full_width_codes", "rotated") != "backbone":
            return None
        return self.output_rotation.matrix.T

    def code_view(self, vectors: torch.Tensor, dimension: int) -> torch.Tensor:
        """The vectors a budget's int8 / binary codes are taken from (:meth:`code_basis`; a rotation keeps the
        length, so normalised rows stay normalised)."""
        basis = self.code_basis()
        if basis is None or dimension != self.hidden_size:
            return vectors
        return vectors.to(torch.float32) @ basis.to(vectors.device, torch.float32)

    def set_output_rotation(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        """Store a fitted rotation (``mean`` (D,), orthogonal ``matrix`` (D, D)); sets ``config.output_rotation``."""
        rotation = OutputRotation(self.hidden_size).to(self.device)
        rotation.set(mean, matrix)  # checks first: a refused matrix leaves the model as it was
        self.output_rotation = rotation
        self.config.output_rotation = True

    def _new_quantization(self) -> QuantizationRanges:
        return QuantizationRanges(self.config.matryoshka_layers, self.config.matryoshka_dimensions, self.hidden_size)

    def set_quantization_ranges(self, ranges: dict[tuple[int, int], torch.Tensor]) -> None:
        """Store calibrated int8/uint8 ranges, ``{(layer, dimension): (2, dimension) tensor}`` for every trained
        budget (``config.matryoshka_layers`` x ``config.matryoshka_dimensions``); sets
        ``config.quantization_ranges``. Checked whole before anything is stored."""
        expected = {(int(a), int(b)) for a in self.config.matryoshka_layers for b in self.config.matryoshka_dimensions}
        if set(ranges) != expected:
            missing = sorted(expected - set(ranges))
            raise ValueError(f"quantization ranges must cover every trained (layer, dimension); missing {missing}")
        store = self._new_quantization().to(self.device)
        for (layer, dimension), value in ranges.items():
            store.set(layer, dimension, value)
        self.quantization = store
        self.config.quantization_ranges = True

    def quantization_ranges(self, layer: int | None = None, dimension: int | None = None) -> torch.Tensor:
        """The stored (2, dimension) int8/uint8 ranges of a budget (defaults from the config)."""
        layer, dimension = self._check_layer(layer), self._check_dimension(dimension)
        if self.quantization is None:
            raise ValueError(
                "this model holds no int8/uint8 ranges (config.quantization_ranges is false): pass ranges= "
                "(a (2, dimension) array of per-coordinate min and max on training text)"
            )
        return self.quantization.get(layer, dimension)

    def embed(self, hidden: torch.Tensor, attention_mask: torch.Tensor, dimension: int | None = None) -> torch.Tensor:
        """Pooled, truncated and (when ``config.normalize``) normalised embeddings of token states."""
        dimension = self._check_dimension(dimension)
        return truncate_and_normalize(self.pool(hidden, attention_mask), dimension, self.config.normalize)

    def _check_dimension(self, dimension: int | None) -> int:
        if dimension is None:
            return int(self.config.default_dimension)
        if isinstance(dimension, bool) or not isinstance(dimension, int) or not 1 <= dimension <= self.hidden_size:
            raise ValueError(
                f"dimension must be an integer in 1..{self.hidden_size} "
                f"(trained: {self.config.matryoshka_dimensions}), got {dimension!r}"
            )
        return dimension

    def _check_layer(self, layer: int | None) -> int:
        if layer is None:
            return int(self.config.default_layer)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= self.num_layers:
            raise ValueError(
                f"layer must be an integer in 1..{self.num_layers} "
                f"(trained: {self.config.matryoshka_layers}), got {layer!r}"
            )
        return layer

    # ----- forward ---------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        dimension: int | None = None,
        layer: int | None = None,
        output_hidden_states: bool = False,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> MatryoshkaModelOutput:
        """Embed a tokenized batch.

        Args:
            input_ids, attention_mask: as returned by the tokenizer (any padding side).
            dimension: keep the first ``dimension`` coordinates (default ``config.default_dimension``).
            layer: exit after this block, 1..num_hidden_layers; later blocks are not run
                (default ``config.default_layer``).
            output_hidden_states: also return ``hidden_states[0..layer]``.
            kwargs: passed to the backbone (``token_type_ids``, ``position_ids``, ...).
        """
        kwargs.pop("return_dict", None)
        dimension = self._check_dimension(dimension)
        layer = self._check_layer(layer)
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None:
            raise ValueError("forward needs input_ids or inputs_embeds")
        if attention_mask is None:
            attention_mask = torch.ones(reference.shape[:2], dtype=torch.long, device=reference.device)
        if self.config.is_causal and kwargs.get("position_ids") is None:
            # Positions count real tokens only, so left padding gives the same states as no padding.
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)

        with self.exit_after(layer):
            out = self.backbone(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                **kwargs,
            )
        last = out.last_hidden_state
        hidden_states = None
        if output_hidden_states:
            states = list(out.hidden_states)
            norm = self._final_norm()
            if norm is not None:
                states = [norm(h) for h in states[:-1]]
                states.append(last)
            else:
                states[-1] = last
            hidden_states = tuple(states)
        embeddings = truncate_and_normalize(self.pool(last, attention_mask), dimension, self.config.normalize)
        return MatryoshkaModelOutput(embeddings=embeddings, last_hidden_state=last, hidden_states=hidden_states)

    # ----- encode ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        texts: str | list[str],
        tokenizer: Any = None,
        dimension: int | None = None,
        layer: int | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        precision: str = "float32",
        ranges: Any = None,
    ) -> Any:
        """Embed raw texts at a (dimension, layer) budget, like ``SentenceTransformer.encode``.

        Args:
            texts: one string (returns one vector) or a list of strings (returns a matrix).
            tokenizer: the model's tokenizer; default: loaded once from ``config.name_or_path``.
            dimension, layer: the budget (defaults from the config).
            batch_size: texts per forward; texts are sorted by length to pad little.
            show_progress_bar: default: shown when logging is at INFO or DEBUG.
            convert_to_numpy / convert_to_tensor: numpy float32 array (default) or a torch tensor.
            max_length: truncation length; default ``config.max_seq_length``, else the tokenizer's.
            device: where to run; default the model's device.
            precision: ``float32`` (default), ``int8`` / ``uint8`` (one byte per coordinate) or ``binary`` /
                ``ubinary`` (one bit per coordinate, packed: d/8 bytes), as sentence-transformers names them and
                with its dtypes (:func:`quantize_embeddings`).
            ranges: int8/uint8 only: a (2, dimension) array of per-coordinate min and max; default the ranges
                the model stores for this budget (calibrated on training text, ``config.quantization_ranges``).
                At the full width of a model with ``config.full_width_codes: backbone`` the codes are taken in the
                backbone's coordinates (:meth:`code_view`).

        With ``config.normalize`` every row has unit length at every dimension (before quantization).
        """
        dimension = self._check_dimension(dimension)
        layer = self._check_layer(layer)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision in CALIBRATED_PRECISIONS and ranges is None:
            ranges = self.quantization_ranges(layer, dimension)  # checked before any text is encoded
        out = self.encode_layers(
            texts, tokenizer, [layer], dimension, batch_size, show_progress_bar, max_length, device
        )[layer]
        if precision != "float32":
            out = self.code_view(out, dimension)
            out = quantize_embeddings(out.reshape(-1, dimension), precision, ranges).reshape(*out.shape[:-1], -1)
        if convert_to_tensor or not convert_to_numpy:
            return out
        return out.cpu().numpy()

    @torch.no_grad()
    def encode_layers(
        self,
        texts: str | list[str],
        tokenizer: Any = None,
        layers: list[int] | None = None,
        dimension: int | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ) -> dict[int, torch.Tensor]:
        """``encode`` at several exit layers from one pass: ``{layer: (N, dimension) float32 tensor}``.

        The backbone runs up to the deepest requested layer once; each layer's states (``hidden_states[l]``,
        the final norm applied as in ``forward``) are pooled, rotated, cut and normalised like ``encode``'s.
        """
        dimension = self._check_dimension(dimension)
        layers = sorted({self._check_layer(layer) for layer in (layers or [None])})
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        single = isinstance(texts, str)
        if single:
            texts = [texts]
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a string or a list of strings")
        tokenizer = tokenizer if tokenizer is not None else self._default_tokenizer()
        if max_length is None:
            max_length = self.config.max_seq_length
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        device = torch.device(device) if device is not None else self.device

        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rows = torch.tensor(order, dtype=torch.long, device=device)
        # Each batch is written into its rows of the result at once: memory is the result plus one batch.
        outputs = {layer: torch.empty(len(texts), dimension, device=device) for layer in layers}
        try:
            starts = range(0, len(texts), batch_size)
            if show_progress_bar:
                from transformers.utils.logging import tqdm

                starts = tqdm(starts, desc="Batches")
            for start in starts:
                batch = [texts[i] for i in order[start : start + batch_size]]
                features = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                features = {k: v.to(device) for k, v in features.items()}
                where = rows[start : start + batch_size]
                if len(layers) == 1:
                    outputs[layers[0]][where] = self(**features, dimension=dimension, layer=layers[0]).embeddings
                    continue
                out = self(**features, layer=layers[-1], output_hidden_states=True)
                for layer in layers:
                    outputs[layer][where] = self.embed(out.hidden_states[layer], features["attention_mask"], dimension)
        finally:
            self.train(was_training)
        return {layer: out[0] if single else out for layer, out in outputs.items()}

    def _default_tokenizer(self) -> Any:
        if self._tokenizer is None:
            source = self.config.name_or_path
            if not source:
                raise ValueError("encode needs a tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(...)")
            # Passing the backbone's config picks the tokenizer class without re-reading config.json
            # (which would ask again whether to trust this folder's code).
            self._tokenizer = AutoTokenizer.from_pretrained(source, config=self.config.text_config)
        return self._tokenizer

    # ----- construction ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        """``PreTrainedModel.from_pretrained``, plus adapter-only folders (``config.adapter`` set).

        An adapter-only folder holds this config, the tokenizer and a PEFT LoRA adapter in
        ``config.adapter["subfolder"]``: the base model named there is loaded and the adapter attached
        through transformers' PEFT integration (``pip install peft``); weights are never unpickled.
        """
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        config = kwargs.get("config")
        if config is None and pretrained_model_name_or_path is not None:
            config = MatryoshkaConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        # Duck-typed: with remote code, the config class may come from another copy of configuration_mipic.
        if getattr(config, "model_type", None) != MatryoshkaConfig.model_type:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        spec = getattr(config, "adapter", None)
        if not spec:
            kwargs["config"] = config
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

        load_kwargs = {k: kwargs[k] for k in _LOAD_KWARGS if k in kwargs}
        base_hub = {k: v for k, v in hub_kwargs.items() if k not in ("revision", "subfolder")}
        backbone = AutoModel.from_pretrained(
            spec["base_model"],
            config=config.text_config,
            revision=spec.get("revision"),
            **base_hub,
            **load_kwargs,
        )
        if isinstance(getattr(backbone, "pooler", None), nn.Module) and _backbone_init_kwargs(config.text_config):
            backbone.pooler = None
        subfolder = spec.get("subfolder") or "adapter"
        adapter_kwargs = {"subfolder": subfolder, **base_hub}
        if hub_kwargs.get("revision"):
            adapter_kwargs["revision"] = hub_kwargs["revision"]
        try:
            backbone.load_adapter(str(pretrained_model_name_or_path), adapter_kwargs=adapter_kwargs)
        except ImportError as err:
            raise ImportError(f"this folder holds a LoRA adapter: loading it needs peft ({err})") from None
        model = cls(config, backbone=backbone)
        model.config.name_or_path = str(pretrained_model_name_or_path)
        model.eval()
        return model

    @classmethod
    def from_backbone(
        cls,
        pretrained_model_name_or_path: str,
        *,
        matryoshka_dimensions: list[int] | None = None,
        matryoshka_layers: list[int] | None = None,
        pooling: str | None = None,
        normalize: bool = True,
        default_dimension: int | None = None,
        default_layer: int | None = None,
        max_seq_length: int | None = None,
        **kwargs: Any,
    ) -> MatryoshkaModel:
        """Wrap a pretrained backbone (a Hub id or a local folder), keeping its weights.

        The configuration is validated before any weight is loaded. ``pooling`` and ``max_seq_length``
        default to the folder's sentence-transformers settings when it has them (``modules.json``),
        else ``last_token`` for decoders and ``cls`` for encoders. Other keyword arguments
        (``dtype``, ``revision``, ``attn_implementation``, ``token``, ...) go to ``from_pretrained``.
        """
        hub_kwargs = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        text_config = AutoConfig.from_pretrained(
            pretrained_model_name_or_path, trust_remote_code=kwargs.get("trust_remote_code", False), **hub_kwargs
        )
        try:
            st_settings = sentence_transformers_settings(pretrained_model_name_or_path, hub_kwargs)
        except ValueError:
            if pooling is None:  # the folder's pooling is one we do not offer: the user must choose
                raise
            st_settings = {}
        config = MatryoshkaConfig(
            text_config=text_config,
            matryoshka_dimensions=matryoshka_dimensions,
            matryoshka_layers=matryoshka_layers,
            pooling=pooling if pooling is not None else st_settings.get("pooling"),
            normalize=normalize,
            default_dimension=default_dimension,
            default_layer=default_layer,
            max_seq_length=max_seq_length if max_seq_length is not None else st_settings.get("max_seq_length"),
        )
        backbone = AutoModel.from_pretrained(pretrained_model_name_or_path, config=text_config, **kwargs)
        if isinstance(getattr(backbone, "pooler", None), nn.Module) and _backbone_init_kwargs(text_config):
            backbone.pooler = None  # the task pooler (dense + tanh) is never used for embeddings
        model = cls(config, backbone=backbone)
        model.config.name_or_path = str(pretrained_model_name_or_path)
        return model


def _backbone_init_kwargs(text_config: Any) -> dict[str, Any]:
    """Drop task poolers we never use (BERT's dense+tanh pooler) when the backbone class allows it."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        model_class = MODEL_MAPPING[type(text_config)]
    except (KeyError, ImportError):
        return {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


_ST_POOLING = {"cls": "cls", "mean": "mean", "lasttoken": "last_token", "last_token": "last_token"}


def _st_pooling_mode(pooling_config: dict[str, Any]) -> str | None:
    """Our pooling name for a sentence-transformers Pooling config (v6 ``pooling_mode`` or the older flags)."""
    mode = pooling_config.get("pooling_mode")
    if mode is None:  # sentence-transformers < 6: one boolean flag per mode
        flags = {
            "cls": "pooling_mode_cls_token",
            "mean": "pooling_mode_mean_tokens",
            "lasttoken": "pooling_mode_lasttoken",
            "max": "pooling_mode_max_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens",
        }
        on = [name for name, key in flags.items() if pooling_config.get(key)]
        if not on:
            return None
        mode = on[0] if len(on) == 1 else "+".join(on)
    if mode not in _ST_POOLING:
        raise ValueError(
            f"pooling: the sentence-transformers folder pools with {mode!r}, which MatryoshkaModel does not "
            "offer; pass pooling='cls', 'mean' or 'last_token' explicitly"
        )
    return _ST_POOLING[mode]


def sentence_transformers_settings(path: str, hub_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pooling mode and max_seq_length of a sentence-transformers folder or repo, when it is one."""
    from transformers.utils import cached_file

    def read_json(name: str) -> Any:
        try:
            resolved = cached_file(
                path,
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
                **hub_kwargs,
            )
        except (OSError, ValueError):
            return None
        if resolved is None:
            return None
        with open(resolved, encoding="utf-8") as f:
            return json.load(f)

    settings: dict[str, Any] = {}
    modules = read_json("modules.json")
    if not isinstance(modules, list):
        return settings
    for module in modules:
        if str(module.get("type", "")).endswith("Pooling"):
            pooling_config = read_json(f"{module.get('path', '1_Pooling')}/config.json") or {}
            mode = _st_pooling_mode(pooling_config)
            if mode is not None:
                settings["pooling"] = mode
    bert_config = read_json("sentence_bert_config.json") or {}
    if isinstance(bert_config.get("max_seq_length"), int):
        settings["max_seq_length"] = bert_config["max_seq_length"]
    return settings
