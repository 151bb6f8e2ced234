"""A serving budget, (exit layer, dimension): its ``LAYER:DIM`` form, the names of the files and folders written for
it, the rule that it must be one the model was trained at, and its int8 ranges as the folders store them. The ONNX
graphs and the standard folders share it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .folders import ExportError


@dataclass(frozen=True)
class Budget:
    """Exit after block ``layer``, keep the first ``dimension`` coordinates."""

    layer: int
    dimension: int

    @property
    def stem(self) -> str:
        """The ONNX graph's file stem."""
        return f"model_L{self.layer}_D{self.dimension}"

    @property
    def name(self) -> str:
        """The standard folder's name."""
        return f"layer{self.layer}-dim{self.dimension}"

    @classmethod
    def parse(cls, text: str, option: str = "--budgets") -> Budget:
        """``"L:D"``, both positive integers (ExportError naming ``option`` otherwise)."""
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise ExportError(f"{option}: expected LAYER:DIM such as 4:64 (positive integers), got {text!r}")
        return cls(int(match[1]), int(match[2]))


def check_trained(budgets: list[Budget], dims: list[int], layers: list[int], depth: int) -> None:
    """Every budget is one the model was trained at: its dimension in ``dims``, its layer in ``layers``
    (ExportError naming the allowed values)."""
    for budget in budgets:
        where = f"budget {budget.layer}:{budget.dimension}"
        if budget.dimension not in dims:
            allowed = ", ".join(map(str, dims))
            raise ExportError(f"{where}: dimension {budget.dimension} is not a trained dimension; allowed: {allowed}")
        if budget.layer not in layers:
            raise ExportError(
                f"{where}: layer {budget.layer} is not a trained exit layer; allowed: {', '.join(map(str, layers))} "
                f"(the backbone has {depth} layers)"
            )


def resolve_budgets(requested: list[Budget], config: Any) -> list[Budget]:
    """The budgets to write: ``requested`` without repeats, or the model's default budget when none is; each
    checked by :func:`check_trained` against the MatryoshkaConfig ``config``."""
    budgets = list(dict.fromkeys(requested)) or [Budget(int(config.default_layer), int(config.default_dimension))]
    dims, layers = [int(d) for d in config.matryoshka_dimensions], [int(x) for x in config.matryoshka_layers]
    check_trained(budgets, dims, layers, int(config.text_config.num_hidden_layers))
    return budgets


RANGES_FILE = "quantization_ranges.json"  # a standard folder's int8 / uint8 ranges (ONNX: inline in budgets.json)


def ranges_record(model: Any, budget: Budget) -> dict[str, Any] | None:
    """The int8 / uint8 ranges the model stores for ``budget``, as JSON: ``{"precisions": ["int8", "uint8"],
    "ranges": [[min per coordinate], [max per coordinate]]}`` (float32 values, written exactly); None when the
    model holds none. ``quantize_embeddings(embeddings, "int8", ranges=np.array(record["ranges"]))``
    (sentence-transformers) or ``encode(..., precision="int8")`` give the same codes."""
    if getattr(model, "quantization", None) is None:
        return None
    values = model.quantization.get(budget.layer, budget.dimension).detach().cpu().float()
    return {"precisions": ["int8", "uint8"], "ranges": [[float(v) for v in row] for row in values.tolist()]}
