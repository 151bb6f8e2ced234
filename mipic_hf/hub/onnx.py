"""Deploys a budget: one ONNX graph per (exit layer, dimension) holding the encoder's first ``layer`` blocks only,
pooling, the cut to the first ``dimension`` coordinates and (when ``config.normalize``) L2 normalisation.
Inputs ``input_ids`` and ``attention_mask`` (int64, dynamic batch and sequence axes), output ``embeddings``
(float32, batch x dimension). Several budgets in one call (``--dimension 64 384 --layer 4 6`` is every pair, or
``--budgets 6:384 4:64 2:32``) write one file each, ``model_L{layer}_D{dim}.onnx`` (+ ``..._int8.onnx`` with
``--quantize int8``: onnxruntime's dynamic int8 quantization of the weights), and ``budgets.json`` indexing them
(each float32 graph's entry carries ``output_ranges``, the model's calibrated int8 ranges of that budget's output
embeddings, or null).
The folder also holds the tokenizer and a README.md with an onnxruntime snippet. Written into ``MODEL_DIR/onnx``,
the model card of MODEL_DIR (an export folder) gains the same section.

Each graph is checked against ``MatryoshkaModel.encode`` at its budget on a padded batch before anything is
written; the largest difference is recorded in ``budgets.json``. Exported with ``torch.onnx.export(dynamo=True)``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .budget import Budget, ranges_record, resolve_budgets
from .card import onnx_section
from .folders import ONNX_INDEX_NAME as INDEX_NAME
from .folders import (
    ONNX_SUBFOLDER,
    ExportError,
    check_out_dir,
    is_mipic_folder,
    write_folder_atomically,
    write_text_atomically,
)

QUANTIZATIONS = ("int8",)


MIN_OPSET = 18  # the dynamo exporter's lowest


FP32_TOLERANCE = 1e-3  # an export that differs more from PyTorch is refused (observed: <= 3e-7 on MiniLM)


# Probe sentences (1 to 30 words, so the check batch pads) for the PyTorch vs ONNX check and int8's cosine.
PROBES = [
    "ok",
    "Thanks!",
    "A fox naps under the old oak.",
    "Budgets are cut at export time.",
    "Where is the nearest train station?",
    "The committee postponed its vote until the spring meeting.",
    "She painted the fence blue, then changed her mind and painted it green.",
    "Quarterly revenue rose by four percent despite weaker demand in Europe.",
    "How do I reset my password if I no longer have access to my old email address?",
    "Two children are building a sandcastle while their dog chases the waves along the beach.",
    "The train to the coast leaves at nine, stops twice, and arrives a little after noon on weekdays "
    "but later on Sundays.",
    "After the storm, volunteers cleared fallen branches from the roads, checked on elderly neighbours, and "
    "set up a kitchen in the school hall.",
]


class BudgetGraph(nn.Module):
    """``MatryoshkaModel`` at one budget, as a module of (input_ids, attention_mask) -> embeddings.

    Construct and export it inside ``model.exit_after(layer)``: the backbone then holds only ``layer`` blocks,
    so the traced graph and its weights stop at the exit layer.
    """

    def __init__(self, model: nn.Module, dimension: int) -> None:
        super().__init__()
        self.model = model
        self.dimension = dimension

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # The block list is already cut, so "every remaining block" is the exit layer.
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, dimension=self.dimension, layer=self.model.num_layers
        )
        return self.model.code_view(out.embeddings, self.dimension)  # the basis the budget's codes are taken in


def parse_budgets(
    dimensions: list[int] | None, layers: list[int] | None, budgets: list[str] | None, config: Any
) -> list[Budget]:
    """The requested budgets: ``--budgets L:D ...``, else every (layer, dimension) pair of ``--layer`` x
    ``--dimension`` (each defaulting to the config's default), in order, without repeats."""
    if budgets and (dimensions or layers):
        raise ExportError("pass either --budgets or --dimension/--layer, not both")
    if budgets:
        requested = [Budget.parse(item, "--budgets") for item in budgets]
    else:
        requested = [
            Budget(layer, dim)
            for layer in (layers or [int(config.default_layer)])
            for dim in (dimensions or [int(config.default_dimension)])
        ]
    return list(dict.fromkeys(requested))


def _check_tools(quantize: str | None, opset: int | None) -> None:
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install 'mipic-hf[onnx]'")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if opset is not None:
        import onnx

        highest = onnx.defs.onnx_opset_version()
        if not MIN_OPSET <= opset <= highest:
            raise ExportError(f"--opset must lie in {MIN_OPSET}..{highest} (this onnx), got {opset}")


def load_config(model_dir: str) -> Any:
    from ..configuration_mipic import MatryoshkaConfig

    local = Path(model_dir)
    if local.exists() and not is_mipic_folder(local):
        raise ExportError(f"MODEL_DIR '{model_dir}' is not a MatryoshkaModel folder (its config.json is not mipic's)")
    try:
        config = MatryoshkaConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise ExportError(f"MODEL_DIR '{model_dir}' cannot be loaded: {str(err).splitlines()[0]}") from None
    if getattr(config, "model_type", None) != MatryoshkaConfig.model_type:
        raise ExportError(f"MODEL_DIR '{model_dir}' is not a MatryoshkaModel (model_type {config.model_type!r})")
    return config


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_graph(session: Any, batch: dict[str, Any]) -> Any:
    """``embeddings`` of an onnxruntime session for a tokenizer batch (numpy)."""
    import numpy as np

    feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in ("input_ids", "attention_mask")}
    return session.run(["embeddings"], feeds)[0]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and the quantizer's advice (torchvision ops, pre-processing, axis names)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _export_one(model: Any, budget: Budget, sample: dict[str, torch.Tensor], path: Path, opset: int | None) -> None:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with model.exit_after(budget.layer):
        program = torch.onnx.export(
            BudgetGraph(model, budget.dimension).eval(),
            (sample["input_ids"], sample["attention_mask"]),
            input_names=["input_ids", "attention_mask"],
            output_names=["embeddings"],
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.save(str(path))


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel scales: per-tensor int8 gave cosine 0.93 to fp32 on MiniLM at (4, 64), per-channel 0.989.
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        use_external_data_format=Path(f"{source}.data").exists(),
    )


def _file_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.parent.glob(f"{path.name}*")) / 2**20, 1)


def _readme(index: dict[str, Any], location: str) -> str:
    return (
        f"# {index['model_name']}: ONNX budgets\n\n"
        f"Exported from `{index['source']}` by `python -m mipic_hf.export_onnx`.\n\n"
        + onnx_section(index, location)
        + "\n"
    )


def _update_parent_card(model_dir: Path) -> bool:
    """Re-render MODEL_DIR's model card (it now shows the ONNX section), keeping its repo id and license."""
    from huggingface_hub import ModelCard

    from .card import render_card
    from .ids import is_hub_id

    readme = model_dir / "README.md"
    if not readme.is_file() or not (model_dir / "config.json").is_file():
        return False
    old = ModelCard.load(readme)
    repo_id = old.data.model_name if is_hub_id(getattr(old.data, "model_name", None)) else None
    write_text_atomically(readme, str(render_card(model_dir, repo_id=repo_id, license=old.data.license)))
    return True


def export_budget(model: Any, tokenizer: Any, budget: Budget, sample: dict, folder: Path, opset: int | None) -> dict:
    """Write one budget's float32 graph into ``folder``, checked against ``MatryoshkaModel.encode`` on the probe
    batch (ExportError above FP32_TOLERANCE), in the coordinates the budget's codes are taken in
    (``MatryoshkaModel.code_view``); its ``budgets.json`` entry."""
    import numpy as np

    path = folder / f"{budget.stem}.onnx"
    _export_one(model, budget, sample, path, opset)
    floats = model.encode(PROBES, tokenizer, dimension=budget.dimension, layer=budget.layer, convert_to_tensor=True)
    expected = model.code_view(floats, budget.dimension).cpu().numpy()
    got = run_graph(_session(path), sample)
    if got.shape != expected.shape:
        raise ExportError(f"{path.name}: output shape {got.shape}, expected {expected.shape}")
    diff = float(np.abs(got - expected).max())
    if not diff <= FP32_TOLERANCE:
        raise ExportError(f"{path.name} differs from PyTorch by {diff:.2e} (> {FP32_TOLERANCE}); not written")
    entry = {"layer": budget.layer, "dimension": budget.dimension, "quantization": None, "file": path.name}
    return {**entry, "size_mb": _file_mb(path), "max_abs_diff": diff, "output_ranges": ranges_record(model, budget)}


def quantize_budget(entry: dict, sample: dict, folder: Path) -> dict:
    """The int8 copy of a written budget graph and its ``budgets.json`` entry (cosine to the float32 graph)."""
    import numpy as np

    path, qpath = folder / entry["file"], folder / entry["file"].replace(".onnx", "_int8.onnx")
    _quantize(path, qpath)
    got, q = run_graph(_session(path), sample), run_graph(_session(qpath), sample)
    cosine = (q * got).sum(-1) / (np.linalg.norm(q, axis=-1) * np.linalg.norm(got, axis=-1))
    return {
        **{k: entry[k] for k in ("layer", "dimension")},
        "quantization": "int8",
        "file": qpath.name,
        "size_mb": _file_mb(qpath),
        "mean_cosine_to_fp32": float(cosine.mean()),
        "min_cosine_to_fp32": float(cosine.min()),
    }


def budget_index(config: Any, name: str, source: str, entries: list[dict], graph: Path, opset: int | None) -> dict:
    """``budgets.json``: the graphs' inputs, output, preprocessing and opset, one entry per file."""
    import onnx

    opsets = {o.domain: o.version for o in onnx.load(str(graph), load_external_data=False).opset_import}
    return {
        "model_name": name,
        "source": source,
        "inputs": ["input_ids", "attention_mask"],
        "output": "embeddings",
        "normalize": bool(config.normalize),
        "pooling": config.pooling,
        "max_seq_length": config.max_seq_length,
        "opset": opsets.get("", opset),
        "budgets": entries,
    }


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    budgets: list[Budget] | None = None,
    *,
    opset: int | None = None,
    quantize: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write OUT_DIR (see the module docstring) and return it. Every check runs before any model is loaded."""
    _check_tools(quantize, opset)
    config = load_config(str(model_dir))
    budgets = resolve_budgets(list(budgets or []), config)
    out = Path(out_dir)
    check_out_dir(out, overwrite, source=Path(model_dir))

    from transformers import AutoTokenizer

    from ..modeling_mipic import MatryoshkaModel

    model = MatryoshkaModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    sample = tokenizer(PROBES, padding=True, truncation=True, max_length=config.max_seq_length, return_tensors="pt")
    sample = {k: sample[k] for k in ("input_ids", "attention_mask")}
    name = (getattr(config, "mipic_training", None) or {}).get("run_name") or Path(str(model_dir)).name

    def build(tmp: Path) -> None:
        entries = []
        for budget in budgets:
            entries.append(export_budget(model, tokenizer, budget, sample, tmp, opset))
            if quantize == "int8":
                entries.append(quantize_budget(entries[-1], sample, tmp))
        index = budget_index(config, name, str(model_dir), entries, tmp / entries[0]["file"], opset)
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(_readme(index, str(out)), encoding="utf-8")

    with _quiet():
        write_folder_atomically(out, build)
    if (
        out.name == ONNX_SUBFOLDER
        and out.resolve().parent == Path(model_dir).resolve()
        and _update_parent_card(out.parent)
    ):
        print(f"updated {out.parent / 'README.md'} with the ONNX section")
    return out
