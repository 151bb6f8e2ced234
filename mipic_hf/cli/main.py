"""``mipic COMMAND [ARGS ...]``: every command of the package behind one console script.

Each subcommand is the same command as its ``python -m mipic_hf.<module>`` form and takes the same arguments
(``mipic train --help``, ``mipic export --help``, ...).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with ``main(argv) -> int``, one-line help)
COMMANDS = {
    "train": ("mipic_hf.cli.train", "train, evaluate, export and push from a recipe (python -m mipic_hf.run)"),
    "evaluate": ("mipic_hf.cli.evaluate", "score a model on the (exit layer x dimension) grid"),
    "export": ("mipic_hf.cli.export", "turn a run folder into a folder others load"),
    "export-onnx": ("mipic_hf.cli.export_onnx", "one ONNX graph per (exit layer, dimension) budget"),
    "publish": ("mipic_hf.cli.publish", "upload an export folder to the Hugging Face Hub"),
    "teacher-cache": ("mipic_hf.cli.teacher_cache", "precompute a frozen teacher's embeddings for a train set"),
    "quickstart": ("mipic_hf.cli.quickstart", "wrap a backbone and print embeddings at several budgets"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mipic", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        # add_help=False: ``mipic train --help`` reaches the command's own help
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the command is the first token; everything after it belongs to the command's own parser
    command = build_parser().parse_args(argv[:1]).command
    return importlib.import_module(COMMANDS[command][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
