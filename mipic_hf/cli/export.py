"""``python -m mipic_hf.export RUN_DIR OUT_DIR [--adapter_only] [--repo_id ORG/NAME] [--overwrite]``, and
``python -m mipic_hf.export RUN_OR_EXPORT OUT_DIR --standard [--budget LAYER:DIM ...]``.

The command line of :mod:`mipic_hf.hub.export` (the export folder, loaded with remote code) and of
:mod:`mipic_hf.hub.standard` (one standard folder per budget, served with no remote code); each documents what
it writes.
"""

from __future__ import annotations

import argparse
import sys

from ..hub.budget import Budget
from ..hub.export import export_run
from ..hub.folders import ExportError
from ..hub.standard import export_standard


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output_dir of a mipic_hf.run run (or, with --standard, an export folder)")
    parser.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    parser.add_argument("--adapter_only", action="store_true", help="write the LoRA adapter, not merged weights")
    parser.add_argument(
        "--standard",
        action="store_true",
        help="write standard folders (the backbone's own architecture, no remote code), one per --budget",
    )
    parser.add_argument(
        "--budget",
        action="append",
        default=None,
        metavar="LAYER:DIM",
        help="with --standard: exit layer and dimension, both trained ones (repeat for several folders; "
        "default: the model's default budget)",
    )
    parser.add_argument(
        "--repo_id",
        default=None,
        help="Hub repo id used in the card's snippets (org/name; with several --budget, org/name-layerL-dimD each)",
    )
    parser.add_argument("--license", default=None, help="license in the card's metadata (e.g. apache-2.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.budget and not args.standard:
        parser.error("--budget needs --standard")
    if args.standard and args.adapter_only:
        parser.error("--standard writes merged weights; it cannot be combined with --adapter_only")
    try:
        if args.standard:
            budgets = [Budget.parse(text, "--budget") for text in args.budget or []]
            options = {"overwrite": args.overwrite, "repo_id": args.repo_id, "license": args.license}
            folders = export_standard(args.run_dir, args.out_dir, budgets, **options)
            for folder in folders:
                print(f"exported {folder} (standard folder, no remote code)")
            return 0
        out = export_run(
            args.run_dir,
            args.out_dir,
            adapter_only=args.adapter_only,
            overwrite=args.overwrite,
            repo_id=args.repo_id,
            license=args.license,
        )
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {out} ({'adapter only' if args.adapter_only else 'merged weights'})")
    return 0
