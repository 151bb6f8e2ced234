"""The tables of ``benchmarks/cost.py`` (``--report FILE.json [FILE.json ...]``, and after a run): ratios to
``mrl``, paired per-round step ratios, encode throughput."""

from __future__ import annotations

import statistics


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def paired_ratio(times: list[float], base: list[float]) -> tuple[float, float, float] | None:
    """Median, first and third quartile of the per-round ratios ``times[r] / base[r]``: every round steps each
    method once, back to back, so the machine's drift from round to round (10% on a shared 2-core VM) cancels in
    the pair. None with fewer than 2 rounds."""
    if len(times) < 2 or len(times) != len(base):
        return None
    ratios = [t / b for t, b in zip(times, base, strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def fmt_paired(value: tuple[float, float, float] | None) -> str:
    return "n/a" if value is None else f"{value[0]:.2f}x [{value[1]:.2f}-{value[2]:.2f}]"


def print_tables(results: dict) -> None:
    cfg = results["config"]
    timed = any(r["median_step_s"] is not None for r in results["methods"].values())
    rounds = f"{cfg['rounds']} alternating rounds" if timed else "untimed (operators and memory only)"
    print(
        f"{cfg['model']}: batch {cfg['batch_size']} x seq {cfg['seq_len']} ({cfg['text']} text), "
        f"{rounds}, torch {cfg['torch']}, {cfg['threads']} threads"
    )
    header = [
        "method", "step time / mrl", "paired step / mrl: median [IQR]", "peak RSS growth / mrl",
        "saved for backward / mrl", "operators / mrl",
        "median step (s)", "peak RSS growth (MiB)", "saved (MiB)", "operators per step",
    ]  # fmt: skip
    rows = []
    base = results["methods"]["mrl"]["step_times_s"]
    for m, r in results["methods"].items():
        growth = None if r["peak_rss_growth_bytes"] is None else r["peak_rss_growth_bytes"] / 2**20
        saved = None if r["saved_bytes"] is None else r["saved_bytes"] / 2**20
        rows.append(
            [m, fmt(r["step_time_ratio"], ".2f", "x"), fmt_paired(paired_ratio(r["step_times_s"], base))]
            + [fmt(r["peak_rss_growth_ratio"], ".2f", "x")]
            + [fmt(r["saved_ratio"], ".2f", "x"), fmt(r["operators_ratio"], ".2f", "x")]
            + [fmt(r["median_step_s"], ".3f"), fmt(growth, ".0f"), fmt(saved, ".0f")]
            + [fmt(r["operators_per_step"], "d")]
        )
    keep = [i for i in range(len(header)) if any(row[i] != "n/a" for row in rows)]  # what the run measured
    print("| " + " | ".join(header[i] for i in keep) + " |")
    print("|" + "---|" * len(keep))
    for row in rows:
        print("| " + " | ".join(row[i] for i in keep) + " |")
    enc = results["encode"]
    if enc is None:
        return
    print()
    print(
        f"encode: {enc['sentences']} {cfg['text']} sentences, batch {enc['batch_size']}, eval mode, full dimension, "
        f"{enc['rounds']} alternating rounds"
    )
    print("| exit layer | sentences/s | throughput / full | median (s) |")
    print("|---|---|---|---|")
    for row in enc["rows"]:
        name = f"{row['layer']} (full)" if row["full_depth"] else str(row["layer"])
        print(f"| {name} | {row['sentences_per_s']:.0f} | {row['throughput_ratio']:.2f}x | {row['median_s']:.3f} |")


def print_runs(runs: list[dict]) -> None:
    """Several runs of the same settings: each method's paired median step ratio per run, and their mean."""
    methods = list(runs[0]["methods"])
    if any(list(r["methods"]) != methods for r in runs):
        raise SystemExit("--report with several files needs runs of the same methods")
    print(f"paired step / mrl (median over each run's rounds), {len(runs)} runs")
    print("| method | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | mean |")
    print("|" + "---|" * (len(runs) + 2))
    for m in methods:
        medians = [paired_ratio(r["methods"][m]["step_times_s"], r["methods"]["mrl"]["step_times_s"]) for r in runs]
        if None in medians:
            raise SystemExit(f"{m}: a run without 2 or more timed rounds has no paired ratio")
        values = [v[0] for v in medians]
        print(f"| {m} | " + " | ".join(f"{v:.2f}x" for v in values) + f" | {statistics.mean(values):.2f}x |")
