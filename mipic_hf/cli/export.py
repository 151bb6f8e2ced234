"""``python -m mipic_hf.export RUN_DIR OUT_DIR [--adapter_only] [--repo_id ORG/NAME] [--overwrite]``.

The command line of :mod:`mipic_hf.hub.export`, which documents what it writes.
"""

from __future__ import annotations

import argparse
import sys

from ..hub.export import export_run
from ..hub.folders import ExportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output_dir of a mipic_hf.run run")
    parser.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    parser.add_argument("--adapter_only", action="store_true", help="write the LoRA adapter, not merged weights")
    parser.add_argument("--repo_id", default=None, help="Hub repo id used in the card's snippets (org/name)")
    parser.add_argument("--license", default=None, help="license in the card's metadata (e.g. apache-2.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
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
