"""The core install trains, exports and publishes; the evaluation's figures need the ``report`` extra, and a run or
``mipic evaluate`` without it stops with one line naming the extra before any work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mipic_hf.cli.evaluate import main as evaluate_main
from mipic_hf.run import main


@pytest.fixture
def no_matplotlib(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))


def test_a_run_that_evaluates_names_the_extra(no_matplotlib, tiny_backbone: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    common = ["--backbone", tiny_backbone, "--matryoshka_dimensions", "8", "64", "--train_data", "stsb"]
    assert main([*common, "--max_steps", "1", "--eval_tasks", "stsb", "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: eval.eval_tasks: the evaluation writes its plots with matplotlib: pip install 'mipic-hf[report]' "
        "(the README's commands install it), or set eval.eval_tasks: none"
    ]
    assert not out.exists()
    assert main([*common, "--eval_tasks", "none", "--output_dir", str(out), "--dry_run"]) == 0  # no evaluation


def test_mipic_evaluate_names_the_extra(no_matplotlib, tiny_backbone: str, capsys) -> None:
    assert evaluate_main([tiny_backbone, "--tasks", "stsb"]) == 2
    assert "pip install 'mipic-hf[report]'" in capsys.readouterr().err
