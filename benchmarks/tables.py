"""Every table of RESULTS.md, rebuilt from the raw files committed under ``benchmarks/results/``.

    python benchmarks/tables.py            # run each report command RESULTS.md quotes, print what each prints
    python benchmarks/tables.py --check    # exit 1 naming each RESULTS.md table row that no report prints

RESULTS.md quotes, next to each table, the command that prints it from raw files: ``quality.py report``,
``cost.py --report``, ``onnx_throughput.py --report``, ``gpu_step.py --report``, ``serving.py --report``,
``load.py --report``. The rule ``--check`` enforces: every table row of RESULTS.md (headers included, separator
rows aside) outside its "Summary" section is a line one of those commands prints, character for character. So a
number in a table either comes from a committed raw file or fails the check; the summary only repeats them.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
REPORT = re.compile(r"^python benchmarks/\w+\.py (?:.*\s)?(?:report|--report)\b")  # options may come first
SUMMARY = "## Summary"


def report_commands(text: str) -> list[list[str]]:
    """The report commands quoted in ``text``'s fenced code blocks (continuation lines joined, trailing comments
    dropped), in order."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, flags=re.S | re.M)
    commands = []
    for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
        if REPORT.match(line):
            command = shlex.split(line.split("  #")[0])
            if command not in commands:
                commands.append(command)
    return commands


def table_rows(text: str) -> list[tuple[int, str]]:
    """(line number, row) of every markdown table row outside the Summary section, separator rows aside."""
    rows, in_summary = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            in_summary = line.startswith(SUMMARY)
        if in_summary or not line.startswith("|") or set(line) <= set("|-: "):
            continue
        rows.append((number, line.rstrip()))
    return rows


def run_reports(commands: list[list[str]]) -> dict[str, list[str]]:
    """What each command prints, by command line (each run from the checkout's root); RuntimeError if one fails."""
    printed: dict[str, list[str]] = {}
    env = dict(os.environ, MPLBACKEND="Agg", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    for command in commands:
        proc = subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"{' '.join(command)} failed: {last}")
        printed[" ".join(command)] = [line.rstrip() for line in proc.stdout.splitlines()]
    return printed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail on table rows no report prints")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the markdown file (default: RESULTS.md)")
    args = parser.parse_args(argv)
    text = args.results.read_text(encoding="utf-8")
    commands = report_commands(text)
    try:
        printed = run_reports(commands)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not args.check:
        for command, lines in printed.items():
            print(f"$ {command}\n" + "\n".join(lines) + "\n")
        return 0
    every = {line for lines in printed.values() for line in lines}
    missing = [(number, row) for number, row in table_rows(text) if row not in every]
    for number, row in missing:
        print(f"{args.results.name}:{number}: no report prints this row: {row[:100]}", file=sys.stderr)
    print(f"{len(commands)} report commands, {len(table_rows(text)) - len(missing)} rows rebuilt, {len(missing)} not")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
