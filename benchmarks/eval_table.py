"""The (exit layer x dimension) tables of an ``eval_results.json``, as a run writes them to ``eval/eval_results.md``.

python benchmarks/eval_table.py --report benchmarks/results/quickstart/eval_results.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from mipic_hf.evaluation.report import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, required=True, help="an eval_results.json")
    args = parser.parse_args(argv)
    print(markdown_table(json.loads(args.report.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
