"""CPU encode throughput and STS-B test Spearman: PyTorch vs the ONNX budget graphs (fp32 and int8), one run.

    MIPIC_DATA_DIR=../shared/data python benchmarks/onnx_throughput.py [--model DIR] [--budgets 6:384 4:64 2:32]
        [--threads 2] [--rounds 3] [--batch_size 32] [--max_pairs N] [--out FILE.json]
    python benchmarks/onnx_throughput.py --report FILE.json   # the table again, from a run's JSON

``--model``: a MatryoshkaModel folder (a run's output_dir or an export); default the MIPIC (`default` preset)
MiniLM of the quality benchmark, ``benchmarks/runs/quality/test/mipic_default/seed42``. The budgets are
exported with ``mipic_hf.export_onnx`` (``--quantize int8``) into a temporary folder.

Encoders, all fed the same texts in the same batches (sorted by length, ``--batch_size``, tokenization included):
PyTorch ``MatryoshkaModel.encode`` at the full budget and at each budget (early exit), and onnxruntime at each
budget in float32 and int8. Each timed round encodes every unique STS-B test sentence once per encoder, the
encoders taking turns (round robin) after a warm-up round; the median round gives sentences/s and the ratio to
PyTorch at the full budget; each row also gives its largest difference and smallest cosine to PyTorch at the same
budget over all sentences. torch and onnxruntime both get ``--threads`` intra-op threads. The Spearman x100 of
the cosine of each pair against the gold score comes from the same embeddings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_MODEL = ROOT / "benchmarks" / "runs" / "quality" / "test" / "mipic_default" / "seed42"

import numpy as np  # noqa: E402


def stsb_test(max_pairs: int | None) -> Any:
    """The evaluator's view of STS-B test (its distinct texts, the pair index, the gold scores)."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.evaluation.grid import _TaskData

    data = load_benchmark("stsb", split="test")
    if max_pairs is not None:
        data = data.select(range(min(max_pairs, len(data))))
    return _TaskData("stsb", "sts", data)


def batches(texts: list[str], tokenizer, batch_size: int, max_length: int | None) -> Callable[[Callable], np.ndarray]:
    """Run ``forward(numpy batch) -> (b, d)`` over length-sorted batches; rows come back in ``texts`` order."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))

    def run(forward: Callable) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                [texts[i] for i in order[start : start + batch_size]],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            chunks.append(forward(batch))
        stacked = np.concatenate(chunks)
        out = np.empty_like(stacked)
        out[order] = stacked
        return out

    return run


def print_table(results: dict) -> None:
    """The markdown table of a run (also from its JSON: ``--report``)."""
    full = next(r for r in results["rows"] if r["engine"] == "pytorch")
    print(
        f"{results['sentences']} unique STS-B test sentences ({results['pairs']} pairs), {results['threads']} "
        f"threads, median of {results['rounds']} rounds; ratio = throughput / PyTorch at ({full['layer']}, "
        f"{full['dimension']})\n"
    )
    print("| engine | (layer, dim) | weights | file (MB) | sentences/s | throughput ratio | STS-B test Spearman |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        size = "" if r["size_mb"] is None else f"{r['size_mb']}"
        print(
            f"| {r['engine']} | ({r['layer']}, {r['dimension']}) | {r['weights']} | {size} | "
            f"{r['sentences_per_s']:.0f} | {r['throughput_ratio']:.2f}x | {r['stsb_test_spearman']:.2f} |"
        )


def throughput_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every throughput benchmark takes (this one and ``serving.py``)."""
    parser.add_argument("--budgets", nargs="+", default=["6:384", "4:64", "2:32"], metavar="LAYER:DIM")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_pairs", type=int, default=None, help="first N STS-B test pairs (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--report", type=Path, default=None, help="print the table of an earlier --out, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = throughput_arguments(parser).parse_args(argv)
    if args.report:
        print_table(json.loads(args.report.read_text()))
        return 0
    if not (args.model / "config.json").is_file():
        parser.error(f"--model {args.model} has no config.json (run benchmarks/quality.py first, or pass a model)")
    from provenance import refuse_existing, write_raw

    refuse_existing(args.out)

    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel
    from mipic_hf.evaluation.grid import _normalize
    from mipic_hf.evaluation.metrics import STSSpearman
    from mipic_hf.hub.onnx import export_onnx, parse_budgets, run_graph

    torch.set_num_threads(args.threads)
    model = MatryoshkaModel.from_pretrained(str(args.model), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    budgets = parse_budgets(None, None, args.budgets, model.config)
    full = (model.num_layers, model.hidden_size)
    task = stsb_test(args.max_pairs)
    texts = task.texts
    run = batches(texts, tokenizer, args.batch_size, model.config.max_seq_length)

    def torch_encoder(layer: int, dim: int) -> Callable[[], np.ndarray]:
        def forward(batch) -> np.ndarray:
            feats = {k: torch.from_numpy(batch[k]) for k in ("input_ids", "attention_mask")}
            with torch.inference_mode():
                return model(**feats, dimension=dim, layer=layer).embeddings.numpy()

        return lambda: run(forward)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1

    def onnx_encoder(path: Path) -> Callable[[], np.ndarray]:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda: run(lambda batch: run_graph(session, batch))

    with tempfile.TemporaryDirectory() as tmp:
        out = export_onnx(args.model, Path(tmp) / "onnx", budgets, quantize="int8")
        index = json.loads((out / "budgets.json").read_text())
        encoders: dict[tuple, Callable[[], np.ndarray]] = {("pytorch", *full, "fp32"): torch_encoder(*full)}
        for b in budgets:
            encoders[("pytorch", b.layer, b.dimension, "fp32")] = torch_encoder(b.layer, b.dimension)
        for entry in index["budgets"]:
            key = ("onnx", entry["layer"], entry["dimension"], entry["quantization"] or "fp32")
            encoders[key] = onnx_encoder(out / entry["file"])
        sizes = {(e["layer"], e["dimension"], e["quantization"] or "fp32"): e["size_mb"] for e in index["budgets"]}

        times: dict[tuple, list[float]] = {key: [] for key in encoders}
        embeddings: dict[tuple, np.ndarray] = {}
        for round_ in range(args.rounds + 1):  # round 0 warms up
            for key, encode in encoders.items():
                start = time.perf_counter()
                embeddings[key] = encode()
                if round_:
                    times[key].append(time.perf_counter() - start)

    metric = STSSpearman()
    reference = statistics.median(times[("pytorch", *full, "fp32")])
    rows = []
    for key, spent in times.items():
        engine, layer, dim, weights = key
        emb = embeddings[key]
        same_budget = embeddings[("pytorch", layer, dim, "fp32")]
        rows.append(
            {
                "engine": engine,
                "layer": layer,
                "dimension": dim,
                "weights": weights,
                "sentences_per_s": len(texts) / statistics.median(spent),
                "throughput_ratio": reference / statistics.median(spent),
                "stsb_test_spearman": task.score(_normalize(emb), metric)["spearman"],
                "size_mb": sizes.get((layer, dim, weights)) if engine == "onnx" else None,
                # against PyTorch at the same budget, on every sentence
                "max_abs_diff_vs_pytorch": float(np.abs(emb - same_budget).max()),
                "min_cosine_vs_pytorch": float(((emb * same_budget).sum(-1) / np.linalg.norm(emb, axis=-1)).min()),
                "round_times_s": spent,
            }
        )
    results = {
        "model": str(args.model),
        "threads": args.threads,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "sentences": len(texts),
        "pairs": task.num_examples["test"],
        "rows": rows,
        "export_checks": index["budgets"],
    }
    if args.out:
        write_raw(args.out, results, method="PyTorch encode vs ONNX Runtime per budget", seed=None)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
