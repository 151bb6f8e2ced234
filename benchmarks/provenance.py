"""What produced a raw result file: the commit (and whether the tree was dirty), library versions, machine, date and
command. Every raw file a benchmark writes from now on carries it under ``"provenance"``."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mipic-hf", "torch", "transformers", "sentence-transformers", "datasets", "numpy")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _tree() -> dict[str, Any]:
    try:
        return {
            "commit": _git("rev-parse", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.CalledProcessError):  # a copy of the tree without .git (e.g. a lent GPU machine)
        return {"commit": None, "dirty": None}


TREE = _tree()  # read when the benchmark starts: the code it runs, even if the checkout moves on meanwhile


def provenance(**extra: Any) -> dict[str, Any]:
    """The commit and dirty flag of the checkout when the benchmark started, versions, machine, date and command,
    plus ``extra`` (method, seed, recipe, ...)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        **extra,
        **TREE,
        "versions": versions,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {_threads()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def refuse_existing(path: str | Path | None) -> None:
    """Stop before any work when ``path`` exists: a raw file is never overwritten."""
    if path is not None and Path(path).exists():
        raise SystemExit(f"{path} exists: a raw file is never overwritten; pass another --out")


def write_raw(path: str | Path, data: dict[str, Any], **extra: Any) -> None:
    """Write ``data`` as JSON to ``path`` with its ``"provenance"`` (``extra``: method, seeds, ...); an existing
    file is refused, never overwritten."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as f:
        json.dump({**data, "provenance": provenance(**extra)}, f, indent=2)
        f.write("\n")
