"""The layout of the folders this package writes (run, export, ONNX budgets) and how they are written: names, the
folder test, the output-folder check and the atomic write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

RECIPE_NAME = "mipic_recipe.yaml"  # the run's recipe, written back (run folder and export)
CODE_FILES = ("configuration_mipic.py", "modeling_mipic.py")  # copied into every export (remote code)
AUTO_MAP = {"AutoConfig": "configuration_mipic.MatryoshkaConfig", "AutoModel": "modeling_mipic.MatryoshkaModel"}
DENSE_DIR = "2_Dense"  # the output rotation as a sentence-transformers Dense module
ADAPTER_DIR = "adapter"  # a LoRA run's PEFT adapter, in the run folder and in an adapter-only export
ONNX_SUBFOLDER = "onnx"  # where an export folder keeps its graphs; its model card then shows them
ONNX_INDEX_NAME = "budgets.json"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # mipic_hf/, where CODE_FILES live


def is_mipic_folder(path: str | Path) -> bool:
    """A local folder saved by MatryoshkaModel (its config.json names the mipic model type)."""
    from ..configuration_mipic import MatryoshkaConfig

    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == MatryoshkaConfig.model_type
    except (OSError, ValueError):
        return False


class ExportError(ValueError):
    """A bad export request, reported as one line before anything is written."""


def check_out_dir(out: Path, overwrite: bool, source: Path) -> None:
    """OUT_DIR must not be the source, a file, or (without ``--overwrite``) a non-empty folder."""
    if out.resolve() == source.resolve():
        raise ExportError("OUT_DIR must differ from the folder it is exported from")
    if out.exists() and not out.is_dir():
        raise ExportError(f"OUT_DIR '{out}' exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"OUT_DIR '{out}' exists and is not empty; pass --overwrite or another OUT_DIR")


def target_lock(path: Path) -> FileLock:
    """An inter-process lock for writing ``path``, kept in the temp folder (nothing appears next to the user's
    files); jobs writing the same target wait for each other instead of interleaving."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return FileLock(os.path.join(tempfile.gettempdir(), f"mipic-{key}.lock"))


def write_folder_atomically(out: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` on a hidden sibling folder (``tempfile``: unique per call), then rename it to ``out``
    (replacing an old ``out`` only then), under :func:`target_lock`: a failure leaves neither a partial folder
    nor a damaged old one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with target_lock(out):
        for stale in [*out.parent.glob(f".{out.name}.partial-*"), *out.parent.glob(f".{out.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)  # what a killed write left (no other writer holds the lock)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide the folder from other users (a server)
        try:
            build(tmp)
            replace_folder(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return out


def replace_folder(new: Path, out: Path) -> None:
    """Rename the complete folder ``new`` to ``out`` (same filesystem). An ``out`` already there is first moved
    aside, beside ``new`` (a hidden ``.<name>.old-*`` folder), and deleted after: ``out`` is only ever absent for
    the instant between the two renames, and never half written."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=new.parent))
    os.replace(out, old)  # onto the empty folder mkdtemp made
    os.replace(new, out)
    shutil.rmtree(old)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_text_atomically(path: Path, text: str) -> None:
    """Replace the file ``path`` with ``text`` through a temp file beside it and ``os.replace``: a kill at any
    instant leaves the old file or the new one, never a truncated one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
