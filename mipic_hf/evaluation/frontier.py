"""Quality per byte: the cells of a grid no cheaper cell beats, and the smallest budget near the full model.

A cell is (exit layer, dim, precision) with the bytes one stored vector takes
(:func:`~mipic_hf.evaluation.precision.cell_bytes`) and its main score. Its cost is two-fold: bytes in the store
and encode time, for which the exit layer stands (a real early exit runs ``layer`` blocks). A cell is on the
frontier when no other cell is at most as costly on both and scores at least as well, better somewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grid import main_score
from .precision import cell_bytes


@dataclass(frozen=True)
class Cell:
    """One (exit layer, dim, precision) budget of a task and its main score."""

    layer: int
    dim: int
    precision: str
    bytes: int
    score: float

    def describe(self) -> str:
        return f"layer {self.layer}, d {self.dim}, {self.precision} ({self.bytes:,} bytes)"


def cells(results: Mapping[str, Any], task: str) -> list[Cell]:
    """Every scored cell of ``task``, cheapest first."""
    entry = results["tasks"][task]
    tables = {"float32": entry["scores"], **entry.get("quantized", {})}
    found = [
        Cell(layer, dim, precision, cell_bytes(dim, precision), main_score(results, task, layer, dim, precision))
        for precision in tables
        for layer in results["layers"]
        for dim in results["dims"]
    ]
    return sorted(found, key=lambda c: (c.bytes, c.layer, -c.score))


def dominates(a: Cell, b: Cell) -> bool:
    """``a`` costs no more than ``b`` in bytes and layers, scores no less, and differs somewhere."""
    no_worse = a.bytes <= b.bytes and a.layer <= b.layer and a.score >= b.score
    return no_worse and (a.bytes, a.layer, a.score) != (b.bytes, b.layer, b.score)


def frontier(found: list[Cell]) -> list[Cell]:
    """The cells no other cell dominates (of exact ties, the first in ``found``'s order), cheapest first."""
    kept: list[Cell] = []
    for cell in found:
        if any(dominates(other, cell) for other in found):
            continue
        if any((k.bytes, k.layer, k.score) == (cell.bytes, cell.layer, cell.score) for k in kept):
            continue
        kept.append(cell)
    return sorted(kept, key=lambda c: (c.bytes, c.layer))


def full_model(found: list[Cell]) -> Cell:
    """The reference cell: the deepest exit, the widest dim, float32."""
    return max((c for c in found if c.precision == "float32"), key=lambda c: (c.layer, c.dim))


def best_within(found: list[Cell], budget: int, layer: int | None = None) -> Cell | None:
    """The best-scoring cell storing at most ``budget`` bytes (at ``layer`` when given); None if none fits."""
    fits = [c for c in found if c.bytes <= budget and (layer is None or c.layer == layer)]
    return max(fits, key=lambda c: (c.score, -c.bytes, -c.layer)) if fits else None


def smallest_within(found: list[Cell], target: float) -> Cell | None:
    """The cheapest cell (bytes, then exit layer) scoring at least ``target`` x the full model's score."""
    reference = full_model(found)
    good = [c for c in found if c.score >= target * reference.score]
    return min(good, key=lambda c: (c.bytes, c.layer, -c.score)) if good else None


def target_line(results: Mapping[str, Any], task: str, target: float = 0.99) -> str:
    """``"<task>: smallest budget within 1% of the full model: layer L, d D, PRECISION (N bytes), ..."``."""
    found = cells(results, task)
    reference, best = full_model(found), smallest_within(found, target)
    metric = results["tasks"][task]["main_metric"]
    share = f"{100 * (1 - target):g}%"
    head = f"{task}: smallest budget within {share} of the full model"
    if best is None:  # only when target > 1
        return f"{head}: none ({metric} {reference.score:.2f} at {reference.describe()} is the best)"
    return (
        f"{head}: {best.describe()}, {metric} {best.score:.2f} vs {reference.score:.2f} "
        f"at {reference.describe()}, {reference.bytes / best.bytes:.0f}x smaller"
    )


def frontier_table(results: Mapping[str, Any], task: str) -> str:
    """Markdown: the frontier cells of ``task``, cheapest first, with their share of the full model's score."""
    from .report import markdown

    found = cells(results, task)
    reference = full_model(found)
    metric = results["tasks"][task]["main_metric"]
    rows = [
        [
            f"{c.bytes:,}",
            str(c.layer),
            str(c.dim),
            c.precision,
            f"{c.score:.2f}",
            f"{100 * c.score / reference.score:.1f}%",
        ]
        for c in frontier(found)
    ]
    header = ["bytes", "layer", "dim", "precision", metric, "of full"]
    title = f"### {task}: quality per byte (cells no cheaper cell beats; cost = bytes, then exit layer)"
    return "\n".join([title, "", markdown(header, rows)])


def plot_frontier(results: Mapping[str, Any], task: str, path: str | Path) -> Path:
    """Main score vs bytes per vector (log2 x axis): one line per precision at the deepest exit, and the best
    score within each number of bytes at any exit as a step line."""
    from .report import figure

    found = cells(results, task)
    last = max(results["layers"])
    fig, ax = figure((6.8, 4.4))
    for precision in dict.fromkeys(c.precision for c in found):
        line = sorted((c for c in found if c.precision == precision and c.layer == last), key=lambda c: c.bytes)
        ax.plot([c.bytes for c in line], [c.score for c in line], marker="o", ms=3, label=f"{precision}, layer {last}")
    budgets = sorted({c.bytes for c in found})
    envelope = [best_within(found, b).score for b in budgets]
    ax.step(budgets, envelope, where="post", color="black", lw=1, label="best within the bytes, any exit")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per stored vector")
    ax.set_ylabel(results["tasks"][task]["main_metric"])
    ax.set_title(f"{task}: quality per byte")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)
