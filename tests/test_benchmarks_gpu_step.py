"""benchmarks/gpu_step.py on CPU (``--tiny``): the prepared GPU check must run end to end when a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GPU_STEP = Path(__file__).parent.parent / "benchmarks" / "gpu_step.py"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[dict, str]:
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(GPU_STEP), "--tiny", "--batch_size", "8", "--seq_len", "16", "--steps", "2"]
    cmd += ["--warmup", "1", "--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = subprocess.run([sys.executable, str(GPU_STEP), "--report", str(out)], capture_output=True, text=True)
    return _strict_json(out.read_text()), report.stdout


def test_the_gpu_step_benchmark_runs_with_a_loss_to_learn_on_every_shape(tmp_path: Path) -> None:
    plain, table = _run(tmp_path, "plain")
    cache = ["--only", "qwen3-tiny", "--methods", "mrl", "mipic", "--cache_mini_batch_size", "4"]
    cached, _ = _run(tmp_path, "cached", *cache)
    assert list(plain["results"]) == ["qwen3-tiny", "xlmr-tiny"] and list(cached["results"]) == ["qwen3-tiny"]
    for shape, entry in plain["results"].items():
        assert "error" not in entry, entry.get("traceback")
        # the FLOP count as the JSON writes it out: 2 columns x 8 x 16 tokens x forward and LoRA backward, D 64, L 2
        n, attention = entry["non_embedding_params"], 16 * 64 * 2
        assert entry["model_flops_per_step"] == 2 * 8 * 16 * ((2 * n + 4 * attention) + (2 * n + 8 * attention))
        for method in ("mrl", "mipic", "mipic_paper"):
            row = entry[method]
            # MNRL on an anchor and its 15%-perturbed copy: a loss to learn from (identical views gave 0.0)
            assert row["finite"] and row["loss_first_last"][0] > 0.01, (shape, method, row)
            assert row["mfu"] is None and row["peak_mem_gib"] is None  # CUDA-only columns stay empty on CPU
            assert f"| {shape} | {method} | {row['median_step_s']:.3f} |" in table
    # Qwen3 has no dropout and the LoRA dropout is 0: the cached step trains as the plain one (bf16 weights, CPU)
    for method in ("mrl", "mipic"):
        got, want = cached["results"]["qwen3-tiny"][method], plain["results"]["qwen3-tiny"][method]
        assert got["loss_first_last"] == pytest.approx(want["loss_first_last"], rel=0.02, abs=2e-3), method
    assert cached["cache_mini_batch_size"] == 4 and plain["cache_mini_batch_size"] is None
