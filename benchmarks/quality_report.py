"""The quality benchmark's report: every table printed from the committed raw files (``quality.py report``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import quality_registry as registry
from quality_registry import METHODS, SEEDS, SNLI_ROWS, TEACHER, TEACHER_CANDIDATES, TEACHER_DEFAULTS, tasks_for
from quality_rules import (
    RESHAPED,
    SPEED_VARIANTS,
    TERM_ABLATIONS,
    TERM_BASE,
    anchor_gaps,
    cell,
    dev_aggregate,
    grid_average,
    reshape_gains,
    same_quality,
    select_default,
    select_nolabel,
    select_rotation,
    select_teacher,
    small,
    teacher_default_rule,
    teacher_gaps,
    term_gains,
)

LEGACY = "legacy.txt"  # RESULTS/legacy.txt: the raw files archived before they carried provenance (issue 29)


def check_provenance(path: Path, data: dict, legacy: set[str]) -> None:
    """A raw file written since issue 29 must say what produced it; older ones are listed in RESULTS/legacy.txt."""
    if "provenance" not in data and path.relative_to(registry.RESULTS).as_posix() not in legacy:
        raise SystemExit(f"{path}: no provenance (method, seed, recipe, commit, versions) and not in {LEGACY}")


def load_scores(split: str) -> dict[str, dict[int, dict]]:
    """{method: {seed: raw result}} of every registered row archived for ``split``."""
    found: dict[str, dict[int, dict]] = {}
    listed = registry.RESULTS / LEGACY
    legacy = set(listed.read_text().split()) if listed.is_file() else set()
    for path in sorted((registry.RESULTS / split).glob("*/seed*.json")):
        method, seed = path.parts[-2], int(path.stem[4:])
        if method in METHODS:
            data = json.loads(path.read_text())
            check_provenance(path, data, legacy)
            found.setdefault(method, {})[seed] = data
    return found


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def report(split: str, methods: list[str] | None, layers: list[int] | None, plots: Path | None) -> None:
    """Print every table of ``split`` (and write the plots into ``plots``)."""
    found = load_scores(split)
    if not found:
        raise SystemExit(f"no results under {registry.RESULTS / split}")
    first = next(iter(next(iter(found.values())).values()))
    dims, grid_layers = list(first["dims"]), list(first["layers"])  # the grid the runs used
    order = [m for m in methods or METHODS if m in found]
    for task in tasks_for(split):
        examples_note(found, task, order)
        for layer in layers or grid_layers[::-1]:
            grid_table(found, task, split, order, layer, dims)
        averages_table(found, task, split, order, grid_layers)
        if plots:
            from quality_plots import plot

            plot(found, task, split, order, dims, grid_layers, plots)
    if split == "validation":
        rules_tables(found)
    anchors_table(found, split, order)
    teacher_table(found, split, order)


def examples_note(found: dict, task: str, order: list[str]) -> None:
    """Say so when the rows of ``task`` were scored on different examples (a row whose run dropped its training
    pairs next to rows that kept them): their scores are not comparable cell by cell."""
    counts = {
        method: sorted({r["tasks"][task]["num_examples"]["test"] for r in found[method].values() if task in r["tasks"]})
        for method in order
    }
    if len({n for ns in counts.values() for n in ns}) > 1:
        listed = ", ".join(f"{m} {'/'.join(map(str, ns))}" for m, ns in counts.items() if ns)
        print(f"\nnote: {task} rows were scored on different examples (not comparable): {listed}")


def grid_table(found: dict, task: str, split: str, order: list[str], layer: int, dims: list[int]) -> None:
    print(f"\n{task} ({split}), exit layer {layer}: Spearman x100, mean +- std over seeds (n)\n")
    print("| method (n) | " + " | ".join(str(d) for d in sorted(dims, reverse=True)) + " |")
    print("|---|" + "---|" * len(dims))
    for method in order:
        runs = [r for r in found[method].values() if task in r["tasks"]]
        cells = [mean_std([cell(r, task, layer, d) for r in runs]) for d in sorted(dims, reverse=True)]
        print(f"| {method} ({len(runs)}) | " + " | ".join(cells) + " |")


def averages_table(found: dict, task: str, split: str, order: list[str], layers: list[int]) -> None:
    print(f"\n{task} ({split}): grid averages, mean +- std over seeds of the mean over cells\n")
    print("| method (n) | all cells | dims <= 64, all exits | last exit, dims <= 64 | first exit, all dims |")
    print("|---|---|---|---|---|")
    keeps = (
        lambda layer, d: True,
        small,
        lambda layer, d: layer == layers[-1] and d <= 64,
        lambda layer, d: layer == layers[0],
    )
    for method in order:
        runs = [r for r in found[method].values() if task in r["tasks"]]
        averages = [mean_std([grid_average(r, task, keep) for r in runs]) for keep in keeps]
        print(f"| {method} ({len(runs)}) | " + " | ".join(averages) + " |")


def rules_tables(found: dict) -> None:
    """What each dev rule picks or says (validation only)."""
    print(f"\nselection rule (select_default) picks: {select_default(found)}")
    print(f"\nterm rule (term_gains, base {TERM_BASE}, seeds {SEEDS}): dev aggregate lost when the term is removed")
    print("| term | ablation | seeds run | mean gain (3 seeds) | earns >= 0.3 |")
    print("|---|---|---|---|---|")
    for term, (gain, earns) in term_gains(found).items():
        ablation = TERM_ABLATIONS[term]
        per_seed = [
            round(dev_aggregate(found[TERM_BASE][s]) - dev_aggregate(found[ablation][s]), 2)
            for s in SEEDS
            if s in found.get(TERM_BASE, {}) and s in found.get(ablation, {})
        ]
        verdict = "-" if earns is None else ("yes" if earns else "no")
        print(f"| {term} | {ablation} | {per_seed} | {'-' if gain is None else gain} | {verdict} |")
    print("\nreshape rule (reshape_gains): dev aggregate gained over the run without the term, per seed")
    print("| candidate | against | gains (seeds run) | verdict |")
    print("|---|---|---|---|")
    for candidate, (gains, verdict) in reshape_gains(found).items():
        print(f"| {candidate} | {RESHAPED[candidate]} | {gains} | {verdict or '-'} |")
    print(f"\nrotation rule (select_rotation) picks: {select_rotation(found)}")
    for variant, (move, same) in same_quality(found).items():
        verdict = "not run" if same is None else ("same quality" if same else "quality moved")
        pair = f"{variant} - {SPEED_VARIANTS[variant]}"
        print(f"\nspeed rule (same_quality): {pair}, dev aggregate: {move} ({verdict})")
    print(f"\nno-label rule (select_nolabel, seed 42) picks: {select_nolabel(found)}")
    advanced, pick = teacher_default_rule(found)
    print(f"\nteacher-defaults rule (teacher_default_rule): advanced after seed 42: {advanced}; picks: {pick}")


def anchors_table(found: dict, split: str, order: list[str]) -> None:
    if "untrained" not in found:
        return
    print(f"\nanchors, stsb {split}, last exit: smallest gap over dims to each zero-training row, per seed")
    print("| method (n) | min gap to untrained | min gap to untrained_pca |")
    print("|---|---|---|")
    for method in [m for m in order if m not in ("untrained", "untrained_pca")]:
        gaps = anchor_gaps(found, method)
        cells = [mean_std(gaps.get(a, [])) for a in ("untrained", "untrained_pca")]
        print(f"| {method} ({len(found[method])}) | " + " | ".join(cells) + " |")


def teacher_table(found: dict, split: str, order: list[str]) -> None:
    teachers = TEACHER + TEACHER_CANDIDATES + SNLI_ROWS + TEACHER_DEFAULTS
    if "untrained" not in found or not any(m in teachers for m in order):
        return
    print(f"\nteacher check, stsb {split}, last exit: gap to the untrained checkpoint at every dim")
    print("| method (n) | min gap over dims | mean d <= 32 | keeps every dim >= untrained |")
    print("|---|---|---|---|")
    for method in [m for m in order if m in teachers or m in ("mrl", "mipic_default")]:
        gaps, small_means = teacher_gaps(found, method)
        print(
            f"| {method} ({len(gaps)}) | {mean_std(gaps)} | {mean_std(small_means)} | "
            f"{'yes' if min(gaps) >= 0 else 'no'} |"
        )
    if split == "validation":
        print(f"\nteacher selection rule (select_teacher) picks: {select_teacher(found)}")
