"""The exported model's README.md: ``model_cards/mipic_model_card.md`` rendered with huggingface_hub.

Everything comes from the export folder itself (config.json with its ``mipic_training`` summary,
``eval/eval_results.json``, ``mipic_recipe.yaml``), so a card can be rendered again for another repo id.
The YAML front matter is a ``ModelCardData`` with a ``model-index`` of one ``EvalResult`` per task x dim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data import BENCHMARKS
from ..evaluation.frontier import frontier_table, target_line
from ..evaluation.grid import main_score
from ..evaluation.report import markdown, safe_name, task_precisions, task_table
from .folders import ONNX_INDEX_NAME as ONNX_INDEX
from .folders import ONNX_SUBFOLDER, PACKAGE_DIR
from .ids import is_hub_id

TEMPLATE_NAME = "mipic_model_card.md"


CARD_TAGS = [
    "mipic",
    "matryoshka",
    "sentence-similarity",
    "feature-extraction",
    "sentence-transformers",
    "transformers",
]


HF_TASK = {
    "sts": "sentence-similarity",
    "classification": "text-classification",
    "pair_classification": "text-classification",
}


METRIC_TYPE = {"spearman": "spearman_cosine"}


METHOD_TITLES = {
    "mipic": "**MIPIC**",
    "mrl": "plain Matryoshka (**MRL**)",
    "2dmse": "**2DMSE**",
    "starbucks": "**Starbucks**",
    "none": "full-width fine-tuning (no Matryoshka loss)",
}


PRESET_NOTES = {
    "default": "Preset `default` trains the task loss at every nested dimension and at each (dimension, layer) "
    "rung of the ladder; the paper's SIA and PIC terms are off, because removing them cost less than 0.3 "
    "points on STS-B dev (mipic-hf's ablations; see the library's benchmarks).",
    "tuned": "Preset `tuned` is the paper's MIPIC with the SIA attention temperature at 1.0 (paper 0.05), SIA "
    "terms averaged instead of summed, and the task loss also applied at each lower PIC rung (mipic-hf's "
    "addition, chosen on STS-B dev; see the library's benchmarks).",
    "paper": "Preset `paper` is the published MIPIC setting.",
    "authors": "Preset `authors` is the objective the MIPIC authors' public BERT notebook trains.",
}


def template_path(name: str = TEMPLATE_NAME) -> Path:
    """A card template: packaged in the wheel (``mipic_hf/model_cards``) or at the checkout's root."""
    here = PACKAGE_DIR
    for candidate in (here / "model_cards" / name, here.parent / "model_cards" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"model card template {name} not found next to {here}")


def card_layer(results: dict[str, Any], default_layer: int) -> int:
    """The layer the model-index reports: the default layer when evaluated, else the deepest evaluated."""
    layers = list(results["layers"])
    return default_layer if default_layer in layers else max(layers)


def eval_results(results: dict[str, Any], layer: int) -> list[EvalResult]:
    """One EvalResult per task x evaluated dim at ``layer`` (main metric, x100 as in the grid)."""
    out = []
    for task, entry in results["tasks"].items():
        spec = BENCHMARKS.get(task)
        metric = entry["main_metric"]
        for dim in results["dims"]:
            value = main_score(results, task, layer, dim)
            out.append(
                EvalResult(
                    task_type=HF_TASK.get(entry["task_type"], "feature-extraction"),
                    dataset_type=spec.hub_id if spec and spec.hub_id else task,
                    dataset_name=task,
                    dataset_config=spec.hub_config if spec else None,
                    dataset_split=results.get("split"),
                    metric_type=f"{METRIC_TYPE.get(metric, metric)}_dim_{dim}",
                    metric_name=f"{metric} x100, first {dim} dims, exit layer {layer}",
                    metric_value=round(float(value), 2),
                    metric_args={"dimension": dim, "layer": layer},
                )
            )
    return out


def _datasets(training: dict[str, Any]) -> list[str] | None:
    source = training.get("train_data")
    if source in BENCHMARKS and BENCHMARKS[source].hub_id:
        return [BENCHMARKS[source].hub_id]
    return [source] if is_hub_id(source) else None


def _training_data(training: dict[str, Any]) -> str | None:
    """Hub datasets by id; a local file by its name only (its path means nothing to a reader)."""
    hub = _datasets(training)
    if hub:
        return ", ".join(hub)
    source = training.get("train_data")
    return f"`{Path(source).name}` (a local file)" if source else None


def _objective(training: dict[str, Any]) -> str:
    method = training.get("method", "unknown")
    if method != "mipic":
        return f"{method} (task loss {training.get('task_loss', '?')})"
    parts = [f"MIPIC, preset `{training.get('preset')}`", f"task loss {training.get('task_loss')}"]
    if training.get("alpha") is not None:
        parts.append(f"alpha {training['alpha']:g}")
    if training.get("pic_ladder"):
        parts.append("ladder " + " ".join(f"({d},{layer})" for d, layer in training["pic_ladder"]))
    terms = training.get("terms")
    if terms:
        on = [name for name, key in (("SIA", "sia"), ("PIC", "pic"), ("rung task loss", "rung")) if terms.get(key)]
        parts.append("terms: " + (", ".join(on) if on else "task loss only"))
    return ", ".join(parts)


def _training_text(training: dict[str, Any]) -> str:
    if not training:
        return "No training summary was recorded with this model."
    lines = [f"- Objective: {_objective(training)}"]
    if training.get("method") == "mipic" and training.get("preset") in PRESET_NOTES:
        lines.append(f"- {PRESET_NOTES[training['preset']]}")
    if training.get("sia_layers"):
        lines.append(f"- SIA layers {training['sia_layers']}, prefixes {training.get('sia_prefix_dims')}")
    settings = training.get("settings")
    if settings:
        lines.append("- Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items() if v is not None))
    if training.get("train_data"):
        rows = f" ({training['train_rows']} rows)" if training.get("train_rows") else ""
        lines.append(f"- Data: {_training_data(training)}{rows}")
    if training.get("steps"):
        lines.append(
            f"- {training['steps']} steps, batch {training.get('batch_size')}, learning rate "
            f"{training.get('learning_rate')}, {training.get('train_seconds', '?')} s"
        )
    return "\n".join(lines)


def evaluation_parts(folder: Path, default_layer: int) -> tuple[list[EvalResult] | None, str, list, str]:
    """(model-index entries, markdown tables, plots, the summary line) from ``eval/eval_results.json``; empty
    when the folder has no results."""
    results_path = folder / "eval" / "eval_results.json"
    results = json.loads(results_path.read_text(encoding="utf-8")) if results_path.is_file() else None
    if not results or not results.get("tasks"):
        return None, "", [], ""
    layer = card_layer(results, default_layer)
    parts = []
    for task in results["tasks"]:
        parts += [task_table(results, task, precision) for precision in task_precisions(results, task)]
        parts += [frontier_table(results, task), target_line(results, task)]
    tables = "\n\n".join(parts)
    split = results.get("split")
    sizes = ", ".join(f"{task} {entry['num_examples'].get(split, '?')}" for task, entry in results["tasks"].items())
    counts = {task: entry["num_examples"] for task, entry in results["tasks"].items()}
    dropped = {task: n["dropped_as_training"] for task, n in counts.items() if "dropped_as_training" in n}
    summary = (
        f"Main metric x100 on the {split} split ({sizes} examples) at every evaluated (exit layer, "
        f"dimension{', storage precision' if results.get('precisions', ['float32']) != ['float32'] else ''}); "
        f"the `model-index` above reports layer {layer}, float32."
    )
    if dropped:
        summary += (
            " Evaluation examples that are training pairs of this run were left out ("
            + ", ".join(f"{task} {n}" for task, n in dropped.items())
            + ")."
        )
    plots = []
    for task in results["tasks"]:
        for kind, title in (
            ("score_vs_dim", "score vs dimension"),
            ("heatmap", "layer x dimension"),
            ("frontier", "quality per byte"),
        ):
            path = f"eval/{safe_name(task)}_{kind}.png"
            if (folder / path).is_file():
                plots.append({"title": f"{task}: {title}", "path": path})
    return eval_results(results, layer), tables, plots, summary


def onnx_part(folder: Path, load_from: str, hub: bool) -> str | None:
    """The ONNX section when the folder holds graphs written by ``python -m mipic_hf.export_onnx FOLDER
    FOLDER/onnx``."""
    onnx_index = folder / ONNX_SUBFOLDER / ONNX_INDEX
    if not onnx_index.is_file():
        return None
    return onnx_section(json.loads(onnx_index.read_text(encoding="utf-8")), load_from, ONNX_SUBFOLDER, hub=hub)


def model_values(config: dict[str, Any]) -> dict[str, Any]:
    """The template's description of the model: backbone, dims, layers, defaults, pooling."""
    text = config.get("text_config", {})
    dims, layers = config["matryoshka_dimensions"], config["matryoshka_layers"]
    return {
        "backbone_type": text.get("model_type", "?"),
        "hidden_size": text.get("hidden_size"),
        "num_layers": text.get("num_hidden_layers"),
        "dims": dims,
        "layers": layers,
        "default_dimension": config["default_dimension"],
        "default_layer": int(config["default_layer"]),
        "pooling": config["pooling"],
        "normalize": config["normalize"],
        "max_seq_length": config.get("max_seq_length") or "the tokenizer's",
        "adapter_only": bool(config.get("adapter")),
        "example_dim": next((d for d in dims if d >= 64), dims[-1]),
        "example_layer": layers[len(layers) // 2] if len(layers) > 1 else layers[0],
    }


def training_values(training: dict[str, Any]) -> dict[str, Any]:
    """The template's account of the training: objective, data, LoRA, versions."""
    base_model, lora = training.get("base_model"), training.get("lora")
    return {
        "method_title": METHOD_TITLES.get(training.get("method"), f"the `{training.get('method')}` objective"),
        "base_model": base_model,
        "base_model_url": f"https://huggingface.co/{base_model}" if is_hub_id(base_model) else None,
        "objective": _objective(training),
        "training_data": _training_data(training),
        "lora": (
            f"r={lora['r']}, alpha={lora['alpha']}, dropout={lora['dropout']}, targets {', '.join(lora['targets'])}"
            if lora
            else None
        ),
        "training_text": _training_text(training),
        "versions": training.get("versions") or {},
    }


def render_card(
    folder: str | Path, repo_id: str | None = None, license: str | None = None, local_path: str | None = None
) -> ModelCard:
    """Render the card of an export folder (does not write it).

    The usage snippets load ``repo_id`` when given, else ``local_path`` (default: ``folder``); the card's
    model name is ``repo_id``, else the run's name.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    training = config.get("mipic_training") or {}
    recipe_path = folder / "mipic_recipe.yaml"
    name = repo_id or training.get("run_name") or folder.name
    load_from = repo_id or local_path or str(folder)
    index, tables, plots, summary = evaluation_parts(folder, int(config["default_layer"]))
    base_model = training.get("base_model")
    card_data = ModelCardData(
        model_name=name,
        base_model=base_model if is_hub_id(base_model) else None,
        license=license or training.get("license"),
        datasets=_datasets(training),
        library_name="sentence-transformers",
        pipeline_tag="sentence-similarity",
        tags=list(CARD_TAGS),
        eval_results=index,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path()),
        model_name=name,
        repo_id=load_from,
        serve_name=repo_id or "<org>/<name>",
        rotation=bool(config.get("output_rotation")),
        backbone_codes=bool(config.get("output_rotation")) and config.get("full_width_codes") == "backbone",
        int8=bool(config.get("quantization_ranges")),
        **model_values(config),
        **training_values(training),
        eval_summary=summary,
        eval_tables=tables,
        plots=plots,
        recipe_yaml=recipe_path.read_text(encoding="utf-8").strip() if recipe_path.is_file() else None,
        onnx_section=onnx_part(folder, load_from, hub=bool(repo_id)),
    )


def onnx_section(index: dict[str, Any], location: str, subfolder: str = "", hub: bool = False) -> str:
    """Markdown: the budget table and an onnxruntime snippet for the graphs in ``index`` (budgets.json).

    ``location`` is the folder (or, with ``hub``, the Hub repo id) the files live in; ``subfolder`` the graphs'
    folder inside it.
    """
    prefix = f"{subfolder}/" if subfolder else ""
    rows = []
    for entry in index["budgets"]:
        check = (
            f"max abs diff {entry['max_abs_diff']:.1e}"
            if entry["quantization"] is None
            else f"cosine to float32 {entry['mean_cosine_to_fp32']:.4f} (min {entry['min_cosine_to_fp32']:.4f})"
        )
        rows.append(
            [f"`{prefix}{entry['file']}`", str(entry["layer"]), str(entry["dimension"])]
            + [entry["quantization"] or "float32", str(entry["size_mb"]), check]
        )
    header = ["file", "exit layer", "dimension", "weights", "size (MB)", "checked at export on 12 sentences"]
    first = index["budgets"][0]
    index_path = f'hf_hub_download("{location}", "{prefix}budgets.json")' if hub else None
    if hub:
        fetch = (
            "from huggingface_hub import hf_hub_download\n\n"
            f'path = hf_hub_download("{location}", "{prefix}{first["file"]}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{location}"'
            + (f', subfolder="{subfolder}")' if subfolder else ")")
        )
    else:
        folder = f"{location}/{subfolder}" if subfolder else location
        fetch = f'path = "{folder}/{first["file"]}"\ntokenizer = AutoTokenizer.from_pretrained("{folder}")'
        index_path = f'"{folder}/budgets.json"'
    lines = [
        f"ONNX graphs with the budget inside (opset {index['opset']}): each one runs the encoder up to its exit "
        "layer only, pools, keeps the first *d* coordinates"
        + (" and L2-normalises them" if index.get("normalize", True) else "")
        + ". Inputs `input_ids` and `attention_mask` (int64, any batch size and length, any padding side), "
        "output `embeddings` (float32, batch x *d*).",
        "",
        markdown(header, rows),
        "",
        "```python",
        "import onnxruntime as ort",
        "from transformers import AutoTokenizer",
        "",
        fetch,
        'session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])',
        'sentences = ["A fox naps under the old oak.", "The oak shades a sleeping fox."]',
        "batch = tokenizer(sentences, padding=True, truncation=True"
        + (f", max_length={index['max_seq_length']}" if index.get("max_seq_length") else "")
        + ', return_tensors="np")',
        'feeds = {name: batch[name].astype("int64") for name in ("input_ids", "attention_mask")}',
        '(embeddings,) = session.run(["embeddings"], feeds)',
        f"print(embeddings.shape)  # (2, {first['dimension']})",
        "```",
    ]
    if first.get("output_ranges"):
        lines += ["", *_onnx_int8_lines(first["file"], index_path)]
    return "\n".join(lines)


def _onnx_int8_lines(graph: str, index_path: str) -> list[str]:
    """The ONNX section's int8 paragraph and snippet: the graph's output quantized with budgets.json's ranges."""
    return [
        "int8 vectors: `budgets.json` holds each float32 graph's `output_ranges`, the per-coordinate ranges "
        "calibrated on the training text, with which sentence-transformers' quantizer gives the model's own "
        '`encode(..., precision="int8")` codes:',
        "",
        "```python",
        "import json",
        "",
        "import numpy as np",
        "from sentence_transformers.quantization import quantize_embeddings",
        "",
        f"index = json.load(open({index_path}))",
        f"entry = next(e for e in index['budgets'] if e['file'] == '{graph}')",
        'codes = quantize_embeddings(embeddings, "int8", ranges=np.array(entry["output_ranges"]["ranges"], '
        "dtype=np.float32))",
        "```",
    ]
