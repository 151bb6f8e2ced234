"""benchmarks/quality.py end to end on a tiny backbone, 2 steps: ours, a sentence-transformers peer, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

QUALITY = Path(__file__).parent.parent / "benchmarks" / "quality.py"
METHODS = [
    "untrained",
    "mrl",
    "mipic_default",
    "cand_ladder_exits",
    "st_matryoshka2d",
    "mrl_teacher",
    "snli_mrl_teacher",
]


def test_quality_benchmark_runs_and_reports_on_a_tiny_backbone(tiny_backbone: str, tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    runs = tmp_path / "runs"
    base = [sys.executable, str(QUALITY), "--runs", str(runs)]
    cmd = [*base, "run", "--split", "validation", "--model", tiny_backbone, "--max_steps", "2", "--methods", *METHODS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for method in METHODS:
        seed = "seed0" if method == "untrained" else "seed42"
        result = json.loads((runs / "validation" / method / seed / "eval" / "eval_results.json").read_text())
        # The tiny backbone (2 layers, 64 wide) gets the grid quality.py derives from its shape.
        assert result["dims"] == [8, 16, 32, 64] and result["layers"] == [1, 2]
        scores = result["tasks"]["stsb"]["scores"]
        assert set(scores) == {"L1", "L2"} and set(scores["L2"]) == {"D8", "D16", "D32", "D64"}
    untrained = json.loads((runs / "validation/untrained/seed0/eval/eval_results.json").read_text())
    trained = json.loads((runs / "validation/mrl/seed42/eval/eval_results.json").read_text())
    assert untrained["tasks"]["stsb"]["scores"] != trained["tasks"]["stsb"]["scores"]  # 2 steps did train

    plots = tmp_path / "plots"
    report = [*base, "report", "--split", "validation", "--plots", str(plots)]
    proc = subprocess.run(report, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in METHODS:
        assert f"| {method} (1) | " in proc.stdout
    assert "selection rule (select_default) picks:" in proc.stdout
    assert "teacher check, stsb validation" in proc.stdout
    assert "teacher selection rule (select_teacher) picks: " in proc.stdout
    assert "picks: None" not in proc.stdout.split("select_teacher")[1]
    assert (plots / "quality_stsb_validation.png").stat().st_size > 0
