"""``python -m mipic_hf.export_onnx MODEL_DIR OUT_DIR --dimension 64 --layer 4 [--opset N] [--quantize int8]``.

The command line of :mod:`mipic_hf.hub.onnx`, which documents what it writes.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..hub.folders import ONNX_INDEX_NAME as INDEX_NAME
from ..hub.folders import ExportError
from ..hub.onnx import MIN_OPSET, QUANTIZATIONS, export_onnx, load_config, parse_budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="a MatryoshkaModel folder (an export or a run's output_dir) or Hub id")
    parser.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    parser.add_argument("--dimension", type=int, nargs="+", help="trained dimension(s) (default: the config's)")
    parser.add_argument("--layer", type=int, nargs="+", help="trained exit layer(s) (default: the config's)")
    parser.add_argument("--budgets", nargs="+", metavar="LAYER:DIM", help="explicit pairs, e.g. 6:384 4:64 2:32")
    parser.add_argument("--opset", type=int, default=None, help=f"ONNX opset (>= {MIN_OPSET}; default: torch's)")
    parser.add_argument(
        "--quantize", default=None, choices=QUANTIZATIONS, help="also write a dynamically quantized graph"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")

    def one_line_error(message: str) -> None:  # argparse would print its usage screen
        raise ExportError(message.splitlines()[0])

    parser.error = one_line_error  # type: ignore[method-assign]
    try:
        args = parser.parse_args(argv)
        budgets = None
        if args.budgets or args.dimension or args.layer:
            budgets = parse_budgets(args.dimension, args.layer, args.budgets, load_config(args.model_dir))
        out = export_onnx(
            args.model_dir, args.out_dir, budgets, opset=args.opset, quantize=args.quantize, overwrite=args.overwrite
        )
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    index = json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    files = ", ".join(entry["file"] for entry in index["budgets"])
    print(f"exported {out}: {files}")
    return 0
