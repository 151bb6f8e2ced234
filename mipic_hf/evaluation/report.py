"""Write grid results (see ``mipic_hf.evaluation.grid``) as JSON, markdown tables and matplotlib figures."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .grid import average_main_score, main_score


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A markdown (pipe) table of formatted cells, written by pandas (``DataFrame.to_markdown``, tabulate); cells
    stay as given (no number parsing)."""
    return pd.DataFrame(rows, columns=header).to_markdown(index=False, disable_numparse=True)


def safe_name(task: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


def _grid_header(dims: list[int]) -> list[str]:
    return ["layer", *(f"d={d}" for d in dims)]


def task_precisions(results: Mapping[str, Any], task: str) -> list[str]:
    """The precisions ``task`` was scored at, float32 first."""
    return ["float32", *results["tasks"][task].get("quantized", {})]


def _has(results: Mapping[str, Any] | None, task: str, precision: str) -> bool:
    return results is not None and task in results["tasks"] and precision in task_precisions(results, task)


def task_table(results: Mapping[str, Any], task: str, precision: str = "float32") -> str:
    """Markdown table of one task's main metric at one storage precision: rows = exit layers, columns =
    dimensions; with ``results["base"]`` (the starting checkpoint's grid) a "base" row under each layer."""
    entry = results["tasks"][task]
    dims, layers = results["dims"], results["layers"]
    base = results.get("base")
    base = base if _has(base, task, precision) else None
    rows = []
    for layer in layers:
        rows.append([f"L{layer}", *(_fmt(main_score(results, task, layer, d, precision)) for d in dims)])
        if base is not None:
            rows.append([f"L{layer} base", *(_fmt(main_score(base, task, layer, d, precision)) for d in dims)])
    where = "" if precision == "float32" else f", stored as {precision}"
    title = f"### {task} ({entry['task_type']}, {entry['main_metric']}{where})"
    lines = [title, "", markdown(_grid_header(dims), rows)]
    if base is not None:
        lines += ["", f"base: the starting checkpoint ({base.get('model', 'before training')}), scored the same way."]
    return "\n".join(lines)


def markdown_table(results: Mapping[str, Any]) -> str:
    """One markdown table per task (main metric, rows = layers, columns = dims) plus the grid averages."""
    from .frontier import frontier_table

    parts = [f"## Matryoshka evaluation: {results.get('model', '')}"]
    for task in results["tasks"]:
        parts += [task_table(results, task, precision) for precision in task_precisions(results, task)]
        parts.append(frontier_table(results, task))
    if results["tasks"]:
        dims, layers = results["dims"], results["layers"]
        rows = [[f"L{layer}", *(_fmt(average_main_score(results, layer, d)) for d in dims)] for layer in layers]
        lines = ["### average main score over tasks", "", markdown(_grid_header(dims), rows)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def summary_lines(results: Mapping[str, Any], target: float | None = None) -> list[str]:
    """One console line per dimension: each task's best main score over the exit layers (and that layer), and,
    when ``results["base"]`` holds the starting checkpoint's grid, its score at the same budget; then, with
    ``target``, one line per task naming the smallest budget within ``1 - target`` of the full model
    (:func:`~mipic_hf.evaluation.frontier.target_line`)."""
    from .frontier import target_line

    lines = []
    tasks = list(results["tasks"])
    base = results.get("base")
    for d in results["dims"]:
        best = []
        for task in tasks:
            layer = max(results["layers"], key=lambda lay, t=task: main_score(results, t, lay, d))
            best.append((task, layer, main_score(results, task, layer, d)))
        mean = sum(v for *_, v in best) / len(best) if best else float("nan")
        cells = []
        for t, lay, v in best:
            cell = f"{t} {results['tasks'][t]['main_metric']} {_fmt(v)} (L{lay}"
            if base is not None and t in base["tasks"]:
                before = main_score(base, t, lay, d)
                cell += f"; base {_fmt(before)}, {v - before:+.2f}"
            cells.append(cell + ")")
        lines.append(f"d={d}: best avg {_fmt(mean)} | {' | '.join(cells)}" if cells else f"d={d}: no tasks")
    if target is not None:
        lines += [target_line(results, task, target) for task in tasks]
    return lines


PLOTS_EXTRA = "report"  # pip install 'mipic-hf[report]': matplotlib, for the evaluation's figures


def check_plots() -> None:
    """The evaluation writes figures with matplotlib, an extra (``mipic-hf[report]``): one line when it is missing,
    called before any work starts."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError(
            f"the evaluation writes its plots with matplotlib: pip install 'mipic-hf[{PLOTS_EXTRA}]' (the README's "
            "commands install it)"
        )


def figure(size: tuple[float, float]) -> tuple[Any, Any]:
    """A Figure drawn by the Agg canvas, outside pyplot: no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_score_vs_dim(results: Mapping[str, Any], task: str, path: str | Path) -> Path:
    """Main metric vs dimension (log2 x axis), one line per exit layer."""
    entry = results["tasks"][task]
    dims, layers = results["dims"], results["layers"]
    fig, ax = figure((6.4, 4.2))
    for layer in layers:
        ax.plot(dims, [main_score(results, task, layer, d) for d in dims], marker="o", label=f"layer {layer}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel(entry["main_metric"])
    ax.set_title(f"{task}: {entry['main_metric']} vs dimension")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_heatmap(results: Mapping[str, Any], task: str, path: str | Path) -> Path:
    """Layer x dimension heatmap of the main metric, every cell annotated with its value."""
    import numpy as np

    entry = results["tasks"][task]
    dims, layers = results["dims"], results["layers"]
    values = np.array([[main_score(results, task, lay, d) for d in dims] for lay in layers], dtype=float)
    fig, ax = figure((max(4.0, 0.8 * len(dims) + 2), max(3.0, 0.5 * len(layers) + 1.5)))
    image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(dims)), [str(d) for d in dims])
    ax.set_yticks(range(len(layers)), [str(lay) for lay in layers])
    ax.set_xlabel("embedding dimension")
    ax.set_ylabel("exit layer")
    ax.set_title(f"{task}: {entry['main_metric']}")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(layers)):
        for j in range(len(dims)):
            ax.text(
                j,
                i,
                _fmt(values[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="black" if values[i, j] > middle else "white",
            )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def write_outputs(results: Mapping[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``eval_results.json``, ``eval_results.md`` and two PNGs per task into ``out_dir``.

    Returns the written paths: ``"json"``, ``"markdown"``, and ``"<task>_score_vs_dim"``, ``"<task>_heatmap"``
    and ``"<task>_frontier"`` (score per byte) for each task (file names: the task name with unsafe characters
    replaced by ``_``).
    """
    from .frontier import plot_frontier

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["json"] = out / "eval_results.json"
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    paths["markdown"] = out / "eval_results.md"
    paths["markdown"].write_text(markdown_table(results), encoding="utf-8")
    for task in results["tasks"]:
        stem = safe_name(task)
        paths[f"{task}_score_vs_dim"] = plot_score_vs_dim(results, task, out / f"{stem}_score_vs_dim.png")
        paths[f"{task}_heatmap"] = plot_heatmap(results, task, out / f"{stem}_heatmap.png")
        paths[f"{task}_frontier"] = plot_frontier(results, task, out / f"{stem}_frontier.png")
    return paths
