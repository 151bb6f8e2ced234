"""Command line: score a saved model on a grid of (exit layer, dimension) budgets.

    python -m mipic_hf.evaluate MODEL_DIR --tasks stsb,sts12 --dims 8 16 64 --layers 2 4 6 \\
        [--output_dir DIR] [--max_samples N] [--batch_size N] [--data_dir DIR] [--device cuda]

MODEL_DIR is a folder written by ``MatryoshkaModel.save_pretrained`` (loaded with
``AutoModel.from_pretrained(..., trust_remote_code=True)``) or a plain backbone / sentence-transformers folder,
which is wrapped with ``MatryoshkaModel.from_backbone``. Writes ``eval_results.json``, ``eval_results.md`` and
two PNGs per task into ``--output_dir`` (default ``MODEL_DIR/eval``), then prints the markdown table, a
one-line summary per dimension, and the written paths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mipic_hf.evaluate",
        description="Score a Matryoshka embedding model at every (exit layer, dimension) of a grid.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="saved MatryoshkaModel, backbone or ST folder")
    parser.add_argument(
        "--tasks", nargs="+", required=True, help="benchmark names, comma- or space-separated (e.g. stsb,sts12)"
    )
    parser.add_argument("--dims", nargs="+", type=int, default=None, help="dimensions (default: the config's)")
    parser.add_argument("--layers", nargs="+", type=int, default=None, help="exit layers (default: the config's)")
    parser.add_argument("--output_dir", default=None, help="where to write the results (default MODEL_DIR/eval)")
    parser.add_argument("--max_samples", type=int, default=None, help="random subset (seed 0) of each split's rows")
    parser.add_argument("--batch_size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--split", default="test", choices=["test", "validation"], help="split to score (default test)")
    parser.add_argument("--max_length", type=int, default=None, help="truncation length (default: the config's)")
    parser.add_argument("--data_dir", default=None, help="local benchmark data folder (see mipic_hf.data)")
    parser.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser


def load_model(model_dir: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a MatryoshkaModel folder, or of a backbone folder wrapped as one."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    if getattr(config, "matryoshka_dimensions", None) is not None:
        model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    else:
        from ..modeling_mipic import MatryoshkaModel

        model = MatryoshkaModel.from_backbone(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    return model, tokenizer


def _error(message: str) -> int:
    print(f"python -m mipic_hf.evaluate: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..evaluation.grid import check_grid, check_tasks, evaluate_grid
    from ..evaluation.report import markdown_table, summary_lines, write_outputs

    try:
        tasks = check_tasks([t for chunk in args.tasks for t in chunk.split(",") if t.strip()])
    except ValueError as err:  # before loading the model
        return _error(str(err))
    for name in ("max_samples", "batch_size", "max_length"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _error(f"--{name} must be a positive integer, got {value}")
    if not Path(args.model_dir).exists():
        return _error(f"MODEL_DIR {args.model_dir} does not exist")

    import torch

    model, tokenizer = load_model(args.model_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dims, layers = check_grid(model, args.dims, args.layers)
    except ValueError as err:
        return _error(str(err))
    model.to(device)
    results = evaluate_grid(
        model,
        tokenizer,
        tasks,
        dims=dims,
        layers=layers,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        data_dir=args.data_dir,
        show_progress_bar=not args.no_progress,
        max_length=args.max_length,
        model_name=str(args.model_dir),
        split=args.split,
    )
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model_dir) / "eval"
    paths = write_outputs(results, output_dir)
    print(markdown_table(results))
    for line in summary_lines(results):
        print(line)
    print()
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
