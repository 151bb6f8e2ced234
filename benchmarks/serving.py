"""A real embedding server on standard budget folders: Infinity (CPU, torch engine) vs ``MatryoshkaModel.encode``.

    MIPIC_DATA_DIR=../shared/data python benchmarks/serving.py --model RUN_OR_EXPORT [--budgets 6:384 4:64 2:32]
        [--threads 2] [--rounds 3] [--batch_size 32] [--max_pairs N] [--out FILE.json]
    python benchmarks/serving.py --report FILE.json   # the table again, from a run's JSON

Each budget is written as a standard folder (``python -m mipic_hf.export MODEL OUT --standard --budget L:D``) and
served by Infinity (``infinity-emb``, PyPI) from its own virtual environment, ``.venv-infinity`` at the checkout's
root (built on first use from ``benchmarks/requirements-infinity.txt``: Infinity pins older transformers and
huggingface_hub than this package). The server listens on 127.0.0.1 only and is stopped at the end.

Each timed round sends every unique STS-B test sentence once (sorted by length, longest first, so a batch pads
little), in requests of ``--batch_size`` sentences (OpenAI
``/embeddings``, JSON over HTTP, one request at a time), and encodes the same sentences in the same batches with
``MatryoshkaModel.encode`` at the same budget (the two take turns, after a warm-up round; the median round gives
sentences/s). Both get ``--threads`` intra-op threads. Each row also gives the largest difference between the
server's vectors and ``encode``'s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # onnx_throughput's options, when imported from a test
INFINITY_VENV = ROOT / ".venv-infinity"
REQUIREMENTS = ROOT / "benchmarks" / "requirements-infinity.txt"
STARTUP_TIMEOUT_S = 180
REQUEST_TIMEOUT_S = 120

import numpy as np  # noqa: E402


class ServingError(RuntimeError):
    """The Infinity environment or server could not be made to work; the message says what to do."""


def infinity_venv(venv: Path = INFINITY_VENV) -> Path:
    """The ``infinity_emb`` command of ``venv``, building the environment first when it is missing (pinned by
    ``requirements-infinity.txt``, torch in the same pip command: this project's machines find its CPU wheel
    locally; elsewhere install a CPU torch into the environment first)."""
    from filelock import FileLock

    command = venv / "bin" / "infinity_emb"
    with FileLock(str(venv) + ".lock"):
        if command.is_file():
            return command
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ServingError(
                    f"cannot build the Infinity environment {venv} ({' '.join(step[-3:])} failed: {last[0]}); "
                    f"it needs PyPI: {venv}/bin/pip install -r {REQUIREMENTS}"
                )
    if not command.is_file():
        raise ServingError(f"{venv} was built but has no infinity_emb command")
    return command


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InfinityServer:
    """One Infinity server on a local model folder, on 127.0.0.1; ``embed`` posts to its ``/embeddings``."""

    def __init__(self, command: Path, folder: Path, threads: int = 1, batch_size: int = 32) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile(prefix="infinity-", suffix=".log", delete=False)  # noqa: SIM115
        env = dict(os.environ, HF_HUB_OFFLINE="1", DO_NOT_TRACK="1", OMP_NUM_THREADS=str(threads))
        env.pop("PYTHONPATH", None)
        args = [str(command), "v2", "--model-id", str(folder), "--served-model-name", "budget"]
        args += ["--engine", "torch", "--device", "cpu", "--batch-size", str(batch_size), "--no-model-warmup"]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> float:
        """Seconds until ``/health`` answers; ServingError (with the log's tail) if the server dies or times out."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise ServingError(f"Infinity exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - start
            time.sleep(0.5)
        raise ServingError(f"Infinity did not answer /health within {timeout} s: {self.tail()}")

    def embed(self, texts: list[str], dimensions: int | None = None) -> np.ndarray:
        body: dict[str, Any] = {"model": "budget", "input": texts}
        if dimensions is not None:
            body["dimensions"] = dimensions
        request = urllib.request.Request(
            self.url + "/embeddings", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:
            rows = sorted(json.load(answer)["data"], key=lambda row: row["index"])
        return np.array([row["embedding"] for row in rows], dtype=np.float32)

    def tail(self, lines: int = 5) -> str:
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 20 s; the log file is removed."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def serve(
    folder: Path, threads: int = 1, batch_size: int = 32, command: Path | None = None
) -> Iterator[InfinityServer]:
    """An Infinity server on ``folder``, ready, stopped on exit (also on errors)."""
    server = InfinityServer(command or infinity_venv(), folder, threads=threads, batch_size=batch_size)
    try:
        server.startup_s = server.wait_ready()
        yield server
    finally:
        server.stop()


def print_table(results: dict) -> None:
    """The markdown table of a run (also from its JSON: ``--report``)."""
    print(
        f"{results['sentences']} sentences, batches of {results['batch_size']}, {results['threads']} threads, "
        f"median of {results['rounds']} rounds; Infinity {results['infinity_version']}"
    )
    print("\n| budget (layer, dim) | `encode` sent/s | Infinity sent/s | Infinity / `encode` | max abs diff |")
    print("|---|---|---|---|---|")
    for row in results["rows"]:
        print(
            f"| ({row['layer']}, {row['dim']}) | {row['encode_per_s']:.0f} | {row['infinity_per_s']:.0f} | "
            f"{row['infinity_per_s'] / row['encode_per_s']:.2f}x | {row['max_abs_diff']:.1e} |"
        )


def stsb_sentences(max_pairs: int | None) -> list[str]:
    from mipic_hf.data import load_benchmark

    data = load_benchmark("stsb", split="test")
    if max_pairs is not None:
        data = data.select(range(min(max_pairs, len(data))))
    return sorted(set(data["sentence1"]) | set(data["sentence2"]), key=lambda t: (-len(t), t))  # little padding


def time_budget(model: Any, tokenizer: Any, server: InfinityServer, texts: list[str], budget: Any, args: Any) -> dict:
    """Round-robin timing of one budget; rows in the same batches for both."""
    chunks = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]

    def encode() -> np.ndarray:
        kwargs = {"dimension": budget.dimension, "layer": budget.layer}
        return np.concatenate([model.encode(c, tokenizer, batch_size=len(c), **kwargs) for c in chunks])

    def infinity() -> np.ndarray:
        return np.concatenate([server.embed(c) for c in chunks])

    times: dict[str, list[float]] = {"encode": [], "infinity": []}
    outputs = {}
    for round_index in range(args.rounds + 1):  # round 0 warms both up
        for name, run in (("encode", encode), ("infinity", infinity)):
            start = time.perf_counter()
            outputs[name] = run()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {
        "layer": budget.layer,
        "dim": budget.dimension,
        "encode_per_s": len(texts) / statistics.median(times["encode"]),
        "infinity_per_s": len(texts) / statistics.median(times["infinity"]),
        "max_abs_diff": float(np.abs(outputs["encode"] - outputs["infinity"]).max()),
        "startup_s": server.startup_s,
    }


def main(argv: list[str] | None = None) -> int:
    from onnx_throughput import throughput_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a run's output_dir or an export folder")
    args = throughput_arguments(parser).parse_args(argv)
    if args.report:
        print_table(json.loads(args.report.read_text()))
        return 0
    if args.model is None:
        parser.error("--model is required (or --report)")

    from provenance import refuse_existing, write_raw

    refuse_existing(args.out)
    import torch
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel
    from mipic_hf.hub.budget import Budget
    from mipic_hf.hub.standard import export_standard

    torch.set_num_threads(args.threads)
    budgets = list(dict.fromkeys(Budget.parse(b) for b in args.budgets))
    command = infinity_venv()
    version = subprocess.run(
        [str(command.parent / "python"), "-c", "import infinity_emb; print(infinity_emb.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    model = MatryoshkaModel.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, config=model.config.text_config)
    texts = stsb_sentences(args.max_pairs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = export_standard(args.model, Path(tmp) / "standard", budgets)
        for budget, folder in zip(budgets, folders, strict=True):
            with serve(folder, threads=args.threads, batch_size=args.batch_size, command=command) as server:
                rows.append(time_budget(model, tokenizer, server, texts, budget, args))
    results = {
        "model": str(args.model),
        "sentences": len(texts),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "infinity_version": version,
        "rows": rows,
    }
    print_table(results)
    if args.out:
        write_raw(args.out, results, method="Infinity serving standard folders vs MatryoshkaModel.encode", seed=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
