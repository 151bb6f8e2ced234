"""The quality benchmark's figures (``quality.py report --plots``; matplotlib, the ``report`` extra)."""

from __future__ import annotations

import statistics
from pathlib import Path

from quality_rules import cell


def plot(
    found: dict[str, dict[int, dict]],
    task: str,
    split: str,
    order: list[str],
    dims: list[int],
    layers: list[int],
    folder: Path,
) -> None:
    """folder/quality_<task>_<split>.png: score vs dim per method, one panel per exit layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = order  # the rows asked for (--methods), in that order
    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 4.2), sharey=False)
    for ax, layer in zip(axes, layers, strict=True):
        for method in methods:
            runs = [r for r in found[method].values() if task in r["tasks"]]
            if not runs:
                continue
            means = [statistics.mean(cell(r, task, layer, d) for r in runs) for d in dims]
            errs = [statistics.stdev(cell(r, task, layer, d) for r in runs) if len(runs) > 1 else 0 for d in dims]
            ax.errorbar(dims, means, yerr=errs, marker="o", ms=3, capsize=2, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("embedding dimension")
        ax.set_title(f"{task} {split}, exit layer {layer}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Spearman x100 (mean over seeds)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"quality_{task}_{split}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")
