"""The (exit layer x dimension) tables of an ``eval_results.json``, as a run writes them to ``eval/eval_results.md``.

python benchmarks/eval_table.py benchmarks/results/quickstart/eval_results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from mipic_hf.evaluation.report import markdown_table

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    print(markdown_table(json.loads(Path(args[0]).read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
