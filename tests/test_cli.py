"""The command lines: ``--help`` exits 0 for every command, and ``mipic`` dispatches to the same commands."""

from __future__ import annotations

import importlib

import pytest

from mipic_hf.cli.main import COMMANDS
from mipic_hf.cli.main import main as mipic


def help_exit(call, argv: list[str]) -> int:
    """The exit status of ``call(argv)``: its return value, or the code of the SystemExit argparse raises."""
    try:
        return call(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_helps_with_exit_0(name: str, capsys: pytest.CaptureFixture[str]):
    module = importlib.import_module(COMMANDS[name][0])
    assert help_exit(module.main, ["--help"]) == 0
    direct = capsys.readouterr().out
    assert "usage:" in direct
    assert help_exit(mipic, [name, "--help"]) == 0  # the console script reaches the same help
    assert capsys.readouterr().out == direct


def test_train_help_lists_the_recipe_fields(capsys: pytest.CaptureFixture[str]):
    importlib.import_module("mipic_hf.run").main(["--help"])
    out = capsys.readouterr().out
    for field in ("--matryoshka_dimensions", "--teacher_model", "--learning_rate", "--dry_run"):
        assert field in out


def test_mipic_names_the_commands_on_a_wrong_one(capsys: pytest.CaptureFixture[str]):
    assert help_exit(mipic, ["trian"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'trian'" in err and "export-onnx" in err


def test_mipic_train_runs_the_recipe_command(capsys: pytest.CaptureFixture[str]):
    """A bad field through ``mipic train`` fails exactly as ``python -m mipic_hf.run`` does (one line, exit 2)."""
    assert mipic(["train", "--learning_rat", "1e-5"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown option '--learning_rat'; did you mean 'learning_rate'?"
