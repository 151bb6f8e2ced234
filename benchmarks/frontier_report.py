"""The tables of ``python benchmarks/frontier.py report``, from the raw files under ``benchmarks/results/frontier``
(``frontier_mpnet`` with ``--backbone mpnet``: the same tables at its exits and dims).

Every score is a mean +- std over the row's seeds ((n) seeds; the untrained rows have one). "Best within B bytes" is,
per seed, the best cell storing at most B bytes per vector (any dim and precision, at the exit named), then averaged.

Issue 28's rule for training candidates (``select_recipe``, written before their runs, applied on dev only): a
trained row is eligible when, averaged over its seeds, its best SciFact dev score within every budget of BUDGETS at
the last exit and its STS-B dev Spearman at every last-exit dim are at least the untrained model's minus TOLERANCE
(lose nothing); among the eligible, the largest mean gain over the untrained model at the scarce budgets
(<= 64 bytes) wins. None when none is eligible.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from frontier import MINILM, PRECISIONS, ROWS, Grid
from quality_report import mean_std

from mipic_hf.evaluation.frontier import best_within, cells, smallest_within
from mipic_hf.evaluation.grid import main_score

BUDGETS = [8, 16, 32, 48, 64, 128, 256, 384, 768, 1536]
DIMS = MINILM.dims
TOLERANCE = 0.1
SCARCE = [b for b in BUDGETS if b <= 64]


def raw_results(folder: Path, names: list[str]) -> dict[str, list[dict]]:
    """Name -> the grid results of ``folder/<name>/seed*.json`` (one per seed), in ``names`` order; names without
    raw files are left out."""
    found: dict[str, list[dict]] = {}
    for name in names:
        for path in sorted((folder / name).glob("seed*.json")):
            found.setdefault(name, []).append(json.loads(path.read_text())["results"])
    return found


def load(split: str, grid: Grid = MINILM) -> dict[str, list[dict]]:
    """Row -> its raw files' grid results (one per seed), in ROWS order."""
    return raw_results(grid.results / split, list(ROWS))


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def issue_cells(found: dict[str, list[dict]], split: str, grid: Grid = MINILM) -> None:
    """Fixed cells at the last exit: full width at each precision, then float32 at 128 ... 16."""
    full, last = grid.dims[0], grid.layers[-1]
    fixed = [(full, p) for p in PRECISIONS] + [(d, "float32") for d in (128, 64, 32, 16)]
    header = ["row (n)", *(f"{d} {'binary+rescore' if p == 'binary_rescore' else p}" for d, p in fixed)]
    rows = [
        [f"{row} ({len(runs)})", *(mean_std([main_score(r, "scifact", last, d, p) for r in runs]) for d, p in fixed)]
        for row, runs in found.items()
    ]
    title = f"scifact ({split}), exit layer {last}: nDCG@10 x100 at fixed cells, mean +- std over seeds (n)"
    _table(title, header, rows)


def budget_table(found: dict[str, list[dict]], split: str, layer: int, budgets: list[int]) -> None:
    def best(run: dict, budget: int) -> float | None:
        cell = best_within(cells(run, "scifact"), budget, layer)
        return None if cell is None else cell.score

    rows = []
    for row, runs in found.items():
        values = [[v for v in (best(r, b) for r in runs) if v is not None] for b in budgets]
        rows.append([f"{row} ({len(runs)})", *(mean_std(v) for v in values)])
    title = f"scifact ({split}), exit layer {layer}: best nDCG@10 x100 storing at most B bytes per vector"
    _table(title, ["row (n)", *(f"{b} B" for b in budgets)], rows)


def target_table(found: dict[str, list[dict]], split: str, grid: Grid = MINILM, target: float = 0.99) -> None:
    rows = []
    for row, runs in found.items():
        picks = [smallest_within(cells(r, "scifact"), target) for r in runs]
        described = [f"L{c.layer} d{c.dim} {c.precision} {c.bytes} B ({c.score:.2f})" for c in picks]
        full = mean_std([main_score(r, "scifact", grid.layers[-1], grid.dims[0]) for r in runs])
        rows.append([f"{row} ({len(runs)})", full, "; ".join(described)])
    title = f"scifact ({split}): the smallest budget within 1% of the row's own full model (any exit), per seed"
    header = ["row (n)", f"full model (L{grid.layers[-1]} d{grid.dims[0]} float32)", "smallest budget within 1%"]
    _table(title, header, rows)


def sts_table(found: dict[str, list[dict]], split: str, task: str, layer: int, dims: list[int] = DIMS) -> None:
    runs0 = next(iter(found.values()))
    counts = runs0[0]["tasks"][task]["num_examples"]
    rows = [
        [f"{row} ({len(runs)})", *(mean_std([main_score(r, task, layer, d) for r in runs]) for d in dims)]
        for row, runs in found.items()
        if all(task in r["tasks"] for r in runs)
    ]
    title = (
        f"{task} ({split}, clean: {counts['test']} pairs, {counts.get('dropped_as_training', 0)} training pairs "
        f"dropped), exit layer {layer}: Spearman x100, float32, mean +- std over seeds (n)"
    )
    _table(title, ["row (n)", *map(str, dims)], rows)


def sts_bytes_table(found: dict[str, list[dict]], split: str, task: str, grid: Grid = MINILM) -> None:
    full, last = grid.dims[0], grid.layers[-1]
    cells_ = [(full, "int8"), (full, "binary"), (128, "int8"), (256, "binary")]
    rows = [
        [f"{row} ({len(runs)})", *(mean_std([main_score(r, task, last, d, p) for r in runs]) for d, p in cells_)]
        for row, runs in found.items()
    ]
    title = f"{task} ({split}, clean), exit layer {last}: Spearman x100 of stored codes, mean +- std over seeds (n)"
    _table(title, ["row (n)", *(f"{d} {p} ({d if p == 'int8' else d // 8} B)" for d, p in cells_)], rows)


def _means(runs: list[dict]) -> tuple[list[float], list[float]]:
    """(best SciFact score within each budget, STS-B Spearman at each dim), last exit, mean over seeds."""
    last = MINILM.layers[-1]
    front = [statistics.mean(best_within(cells(r, "scifact"), b, last).score for r in runs) for b in BUDGETS]
    sts = [statistics.mean(main_score(r, "stsb", last, d) for r in runs) for d in DIMS]
    return front, sts


def lose_nothing_rule(
    found: dict[str, list[dict]], base: str, names: list[str]
) -> tuple[str | None, dict[str, tuple[bool, float]]]:
    """The module docstring's rule for ``names`` against ``base``: (the pick or None, {name: (keeps everything within
    TOLERANCE, mean gain at the scarce budgets)}). Issue 28's screens of post-hoc tools use it too."""
    base_front, base_sts = _means(found[base])
    verdicts = {}
    for name in names:
        front, sts = _means(found[name])
        keeps = all(c >= b - TOLERANCE for c, b in zip(front + sts, base_front + base_sts, strict=True))
        gains = [c - b for c, b, budget in zip(front, base_front, BUDGETS, strict=True) if budget in SCARCE]
        verdicts[name] = (keeps, round(statistics.mean(gains), 2))
    picks = [name for name, (keeps, _) in verdicts.items() if keeps]
    return (max(picks, key=lambda n: verdicts[n][1]) if picks else None), verdicts


def select_recipe(found: dict[str, list[dict]]) -> tuple[str | None, dict[str, tuple[bool, float]]]:
    """The rule for the trained rows (the base itself and rows rotated after training are not candidates)."""
    return lose_nothing_rule(found, "untrained", [r for r in found if ROWS[r][0] is not None and not ROWS[r][1]])


def select_table(found: dict[str, list[dict]]) -> None:
    pick, verdicts = select_recipe(found)
    rows = [[f"{row} ({len(found[row])})", "yes" if ok else "no", f"{g:+.2f}"] for row, (ok, g) in verdicts.items()]
    header = ["row (n)", "loses nothing (tolerance 0.1)", "mean gain <= 64 B"]
    _table("issue 28's rule (select_recipe), dev", header, rows)
    print(f"\nrule (select_recipe) picks: {pick}")


def report(split: str, rows: list[str] | None = None, grid: Grid = MINILM) -> None:
    found = load(split, grid)
    if rows:
        found = {row: found[row] for row in rows if row in found}
    if not found:
        raise SystemExit(f"no raw files under {grid.results / split}")
    issue_cells(found, split, grid)
    last = grid.layers[-1]
    wide = BUDGETS + [4 * d for d in grid.dims[::-1] if 4 * d > BUDGETS[-1]]  # up to the full float32 vector
    for layer in grid.layers[::-1]:
        budget_table(found, split, layer, wide if layer == last else [48, 128, 384, 1536])
    target_table(found, split, grid)
    for task in ("stsb", "sts12") if split == "test" else ("stsb",):
        for layer in grid.layers[::-1]:
            sts_table(found, split, task, layer, grid.dims)
        sts_bytes_table(found, split, task, grid)
    if split == "validation" and grid.name == MINILM.name:  # issue 28's rule was written for MiniLM
        select_table(found)
    gaps = [statistics.mean(main_score(r, "scifact", last, grid.dims[0]) for r in runs) for runs in found.values()]
    print(f"\nrows: {len(found)}; full-width SciFact nDCG@10 range {min(gaps):.2f} .. {max(gaps):.2f}")


def plot(split: str, path: str, rows: list[str] | None = None, grid: Grid = MINILM) -> None:
    """``path``: SciFact nDCG@10 vs bytes per vector (log2), the best cell within each budget at the last exit,
    mean over seeds, one line per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = load(split, grid)
    if rows:
        found = {row: found[row] for row in rows if row in found}
    budgets = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536]
    budgets += [4 * d for d in grid.dims[::-1] if 4 * d > budgets[-1]]  # up to the full float32 vector
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    families = list(dict.fromkeys(row.removesuffix("_pca") for row in found))
    for row, runs in found.items():
        means = []
        for b in budgets:
            best = [best_within(cells(r, "scifact"), b, grid.layers[-1]) for r in runs]
            means.append(statistics.mean(c.score for c in best) if all(best) else float("nan"))
        family, rotated = row.removesuffix("_pca"), row.endswith("_pca")
        ax.plot(
            budgets, means, marker="o", ms=3, color=f"C{families.index(family)}",
            linestyle="--" if rotated else "-", lw=2.2 if row == "untrained" else 1.2, label=f"{row} ({len(runs)})",
        )  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets[::2], [str(b) for b in budgets[::2]])
    ax.set_xlabel("bytes per stored vector (any dim, float32 / int8 / binary)")
    ax.set_ylabel("SciFact nDCG@10 (best cell within the bytes)")
    ax.set_title(f"SciFact {split}: quality per byte at the last exit (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
