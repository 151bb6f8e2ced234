"""Command line: score a saved model on a grid of (exit layer, dimension) budgets.

    python -m mipic_hf.evaluate MODEL_DIR --tasks stsb,sts12,scifact --dims 8 16 64 --layers 2 4 6 \\
        [--precisions float32 int8 binary binary_rescore] [--calibration_data stsb] [--target 0.99] \\
        [--exclude_training_data stsb] [--output_dir DIR] [--max_samples N] [--batch_size N] [--data_dir DIR]

MODEL_DIR is a folder written by ``MatryoshkaModel.save_pretrained`` (loaded with
``AutoModel.from_pretrained(..., trust_remote_code=True)``) or a plain backbone / sentence-transformers folder,
which is wrapped with ``MatryoshkaModel.from_backbone`` (the baseline a user starts from). A task is a benchmark
name or the path of a BEIR folder (retrieval). Every (layer, dim) is scored at each ``--precisions``; int8 / uint8
use ranges calibrated on ``--calibration_data`` when given (training text: a benchmark's train split or a .txt
file, one text per line), else the model's stored ranges. ``--exclude_training_data`` drops the evaluation pairs
and queries that are training pairs of the named benchmark's train split. Writes ``eval_results.json``,
``eval_results.md`` and three PNGs per task (score vs dim, heatmap, score per byte) into ``--output_dir``
(default ``MODEL_DIR/eval``), then prints the tables, a line per dimension and, per task, the smallest budget within
``1 - --target`` of the full model.
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
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="storage precisions scored: float32 int8 uint8 binary ubinary binary_rescore (default: float32, "
        "binary, binary_rescore, and int8 when the model holds ranges or --calibration_data is given)",
    )
    parser.add_argument(
        "--calibration_data", default=None, help="int8 ranges from this training text: a benchmark name or a .txt file"
    )
    parser.add_argument("--calibration_max_texts", type=int, default=2000, help="a seeded sample of this many texts")
    parser.add_argument(
        "--exclude_training_data",
        nargs="+",
        default=None,
        help="benchmark names whose train-split pairs are dropped from the evaluation (clean scores)",
    )
    parser.add_argument(
        "--target", type=float, default=0.99, help="name the smallest budget scoring this share of the full model"
    )
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


def read_calibration_texts(source: str, limit: int) -> list[str]:
    """Training texts for int8 ranges: every text column of a benchmark's train split, or a .txt file's lines;
    a seeded sample of ``limit`` distinct texts."""
    from ..data import BENCHMARKS, load_benchmark
    from ..evaluation.precision import sample_texts

    path = Path(source).expanduser()
    if source in BENCHMARKS:
        data = load_benchmark(source, split="train")
        texts = [t for c in data.column_names for t in data[c] if isinstance(t, str)]
    elif path.suffix == ".txt" and path.is_file():
        texts = path.read_text(encoding="utf-8").splitlines()
    else:
        raise ValueError(f"--calibration_data must be a benchmark name or a .txt file, got {source!r}")
    return sample_texts(texts, limit)


def training_pairs_of(names: list[str]) -> set[tuple[str, str]]:
    """The normalised pairs of the named benchmarks' train splits."""
    from ..data import BENCHMARKS, load_benchmark
    from ..data.overlap import training_pairs

    pairs: set[tuple[str, str]] = set()
    for name in names:
        if name not in BENCHMARKS:
            raise ValueError(f"--exclude_training_data: unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        pairs |= training_pairs(load_benchmark(name, split="train"))
    return pairs


def default_precisions(model: Any, calibration: bool) -> list[str]:
    """float32 and the bit precisions, and int8 when there are ranges to quantize with."""
    from ..evaluation.precision import model_ranges

    ranges = calibration or model_ranges(model, model.config.matryoshka_layers, model.config.matryoshka_dimensions)
    return ["float32", *(["int8"] if ranges else []), "binary", "binary_rescore"]


def _error(message: str) -> int:
    print(f"python -m mipic_hf.evaluate: error: {message}", file=sys.stderr)
    return 2


def check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Everything checked before the model is loaded (ValueError naming the option): tasks, numbers, the model
    folder, precisions, and the calibration texts and training pairs read."""
    from ..evaluation.grid import check_tasks
    from ..evaluation.precision import check_precisions
    from ..evaluation.report import check_plots

    tasks = check_tasks([t for chunk in args.tasks for t in chunk.split(",") if t.strip()])
    try:
        check_plots()
    except ImportError as err:
        raise ValueError(str(err)) from None
    for name in ("max_samples", "batch_size", "max_length", "calibration_max_texts"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}")
    if not 0 < args.target <= 1:
        raise ValueError(f"--target must be a number in (0, 1], got {args.target}")
    if not Path(args.model_dir).exists():
        raise ValueError(f"MODEL_DIR {args.model_dir} does not exist")
    texts = None
    if args.calibration_data is not None:
        texts = read_calibration_texts(args.calibration_data, args.calibration_max_texts)
    return {
        "tasks": tasks,
        "precisions": None if args.precisions is None else check_precisions(args.precisions),
        "calibration_texts": texts,
        "exclude_pairs": None if args.exclude_training_data is None else training_pairs_of(args.exclude_training_data),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..evaluation.grid import check_grid, evaluate_grid
    from ..evaluation.report import markdown_table, summary_lines, write_outputs

    try:
        checked = check_arguments(args)
    except ValueError as err:  # before loading the model
        return _error(str(err))

    import torch

    model, tokenizer = load_model(args.model_dir)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dims, layers = check_grid(model, args.dims, args.layers)
    except ValueError as err:
        return _error(str(err))
    if checked["precisions"] is None:
        checked["precisions"] = default_precisions(model, checked["calibration_texts"] is not None)
    model.to(device)
    results = evaluate_grid(
        model,
        tokenizer,
        dims=dims,
        layers=layers,
        batch_size=args.batch_size,
        max_samples=args.max_samples,
        data_dir=args.data_dir,
        show_progress_bar=not args.no_progress,
        max_length=args.max_length,
        model_name=str(args.model_dir),
        split=args.split,
        **checked,
    )
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model_dir) / "eval"
    paths = write_outputs(results, output_dir)
    print(markdown_table(results))
    for line in summary_lines(results, args.target):
        print(line)
    print()
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
