"""benchmarks/cost.py end to end on a tiny backbone: ours and the sentence-transformers peers, memory and encode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COST = Path(__file__).parent.parent / "benchmarks" / "cost.py"
METHODS = ["mrl", "mipic", "st_matryoshka", "st_matryoshka2d"]


def test_cost_benchmark_runs_on_a_tiny_backbone(tiny_backbone: str, tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, str(COST), "--model", tiny_backbone, "--text", "full", "--rounds", "2", "--warmup", "1"]
    cmd += ["--batch_size", "4", "--seq_len", "16", "--methods", *METHODS]
    cmd += ["--encode_sentences", "16", "--encode_rounds", "1", "--out", str(out)]
    cmd += ["--threads", "1"]  # 2 threads spin-wait badly when the CI machine's 2 cores are busy (100x steps)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    results = json.loads(out.read_text())
    assert list(results["methods"]) == METHODS
    for method, row in results["methods"].items():
        assert row["median_step_s"] > 0 and len(row["step_times_s"]) == 2, method
        assert row["peak_rss_growth_bytes"] is not None and row["saved_bytes"] > 0, method
    mrl = results["methods"]["mrl"]
    assert mrl["step_time_ratio"] == 1.0 and mrl["saved_ratio"] == 1.0 and mrl["operators_ratio"] == 1.0
    # MIPIC's SIA and PIC add operators to mrl's step; the counts are exact, not timed
    assert results["methods"]["mipic"]["operators_per_step"] > mrl["operators_per_step"]
    # The tiny backbone has 2 layers: the quality benchmark's exits on it are 1 and 2, the full model.
    rows = results["encode"]["rows"]
    assert [(r["layer"], r["full_depth"]) for r in rows] == [(1, False), (2, True)]
    assert rows[1]["throughput_ratio"] == 1.0
    assert rows[0]["throughput_ratio"] == rows[0]["sentences_per_s"] / rows[1]["sentences_per_s"]
    assert rows[0]["sentences_per_s"] > 0 and results["encode"]["sentences"] == 16
    # The markdown tables: one row per method, one per exit layer.
    for method in METHODS:
        assert f"| {method} | " in proc.stdout
    assert "| 2 (full) | " in proc.stdout
    # mrl against itself: step time, paired step [IQR], peak RSS growth, saved for backward, operators
    assert "| mrl | 1.00x | 1.00x [1.00-1.00] | 1.00x | 1.00x | 1.00x |" in proc.stdout
    # What produced the raw file, and no second run over it.
    made = results["provenance"]
    assert made["method"] == METHODS and made["seed"] == 0 and len(made["commit"]) == 40
    assert made["command"][0] == "cost.py" and "torch" in made["versions"]
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 1 and again.stderr.strip().endswith(
        "a raw file is never overwritten; pass another --out"
    )
    assert json.loads(out.read_text()) == results


def _cost_module(name: str = "cost"):
    """benchmarks/<name>.py (``cost``, or its tables ``cost_report``), imported the way cost.py imports its parts."""
    import importlib

    sys.path.insert(0, str(COST.parent))
    return importlib.import_module(name)


def _run(times: dict[str, list[float]]) -> dict:
    return {"methods": {m: {"step_times_s": t} for m, t in times.items()}}


def test_paired_ratio_cancels_the_machine_drift_between_rounds(capsys) -> None:
    """Each round's ratio to mrl's step of the same round, quartiles 'inclusive' over the rounds: the machine is
    2x slower in rounds 2, 3 and 5, for mrl's step of round 3 not yet; the ratio of medians reads 2.2, the paired
    median the 1.1 of every other round."""
    import statistics

    cost = _cost_module("cost_report")
    method, mrl = [2.2, 4.4, 4.4, 2.2, 4.4], [2.0, 4.0, 2.0, 2.0, 4.0]
    assert statistics.median(method) / statistics.median(mrl) == pytest.approx(2.2)
    assert cost.paired_ratio(method, mrl) == pytest.approx((1.1, 1.1, 1.1))
    assert cost.paired_ratio([2.0, 8.8, 2.1, 2.2, 2.0], [2.0, 8.0, 2.0, 2.0, 2.0]) == pytest.approx((1.05, 1.0, 1.1))
    assert cost.paired_ratio([2.0], [2.0]) is None  # one round: no quartiles
    assert cost.fmt_paired((1.054, 0.996, 1.1)) == "1.05x [1.00-1.10]"
    runs = [
        _run({"mrl": [2.0, 4.0], "mipic": [2.0, 6.0]}),  # ratios 1.0, 1.5: median 1.25
        _run({"mrl": [2.0, 2.0, 2.0], "mipic": [3.5, 3.5, 3.0]}),  # 1.75, 1.75, 1.5: median 1.75
    ]
    cost.print_runs(runs)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-2:] == ["| mrl | 1.00x | 1.00x | 1.00x |", "| mipic | 1.25x | 1.75x | 1.50x |"]
    with pytest.raises(SystemExit, match="same methods"):
        cost.print_runs([runs[0], _run({"mrl": [1.0, 1.0]})])


def test_count_operators_counts_each_backend_call_below_autograd() -> None:
    """Known counts: every backend call of the step, the forward's and the backward's."""
    import torch

    cost = _cost_module()

    def forward_only() -> float:
        return float((torch.ones(2) + 1).sum())

    def with_backward() -> float:
        leaf = torch.ones(2, requires_grad=True)
        (leaf + 1).sum().backward()
        return 0.0

    # ones, add, sum, and the read of the scalar (_local_scalar_dense)
    assert cost.count_operators(cost.Run(loss=None, step=forward_only)) == 4
    # ones, add, sum; backward: ones_like (the seed), expand (sum's backward), new_empty_strided + copy_ (the
    # leaf's .grad): the backward runs below the mode too
    assert cost.count_operators(cost.Run(loss=None, step=with_backward)) == 7
