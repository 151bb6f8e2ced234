"""Retrieval quality per byte: every row on BEIR SciFact and clean STS at every (exit, dim, precision) cell.

    MIPIC_DATA_DIR=../shared/data python benchmarks/frontier.py train --methods t_final st_matryoshka --seeds 42
    MIPIC_DATA_DIR=../shared/data python benchmarks/frontier.py score --rows untrained t_final --seeds 42
    python benchmarks/frontier.py report [--split test]
    MIPIC_DATA_DIR=../shared/data python benchmarks/frontier.py score --backbone mpnet --rows untrained --seeds 42

``train`` trains a row of the quality benchmark (``quality_registry.py``'s protocol and METHODS: 1 epoch, batch 32,
lr 2e-5, train max length 64) into ``benchmarks/runs/frontier/<method>/seed<N>`` without scoring it. ``score``
scores a trained model (or the base) with the project's evaluator (``evaluate_grid``) on SciFact (nDCG@10,
documents ``title + " " + text``, max length 256), STS-B test and STS12, at exits 2, 4, 6 x dims 8 ... 384 x
float32, int8, binary and binary with rescoring, and writes one raw file per (row, seed, split) under
``benchmarks/results/frontier/<split>/`` (test; ``validation`` = SciFact's train claims and STS-B dev), with its
provenance. A raw file is never overwritten.

Rows. ``untrained``: all-MiniLM-L6-v2 as is. ``X_pca``: row X plus the same centring + PCA rotation as the shipped
recipe's, fitted after training on the row's own training sentences (STS-B train; SNLI triplets for ``snli_*``).
int8 ranges: every row calibrated the same way, on 2,000 of its training sentences (seeded). Clean evaluation:
every row drops the evaluation pairs that are training pairs of any row here (STS-B train and the SNLI triplets),
so all rows are scored on the same examples. Each model is encoded once (pooled vectors cached per text); its
rotated row and both splits reuse that encoding.

``--backbone mpnet`` (``GRIDS``) scores all-mpnet-base-v2 and the rows ``quality.py run --model <it> --split test``
trained (``benchmarks/runs/mpnet/test``) the same way at exits 3, 6, 9, 12 x dims 8 ... 768, into
``benchmarks/results/frontier_mpnet/``; ``report --backbone mpnet`` prints its tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import quality_registry as quality  # noqa: E402  (the protocol and the rows' training specs)
import quality_run  # noqa: E402
from provenance import provenance  # noqa: E402

RUNS = ROOT / "benchmarks" / "runs" / "frontier"
RESULTS = ROOT / "benchmarks" / "results" / "frontier"
TRAINED = ["mrl", "st_matryoshka", "starbucks", "t_final", "snli_st_matryoshka", "snli_t_final"]
CANDIDATES = ["snli_t_norot"]  # issue 28: training candidates, scored on dev, chosen by frontier_report.select_recipe
# row -> (the quality.py method it scores, None for the base model; whether a rotation is fitted after training)
ROWS: dict[str, tuple[str | None, bool]] = {
    "untrained": (None, False),
    "untrained_pca": (None, True),
    **{m: (m, False) for m in TRAINED + CANDIDATES},
    **{f"{m}_pca": (m, True) for m in TRAINED if m not in ("t_final", "snli_t_final")},  # t_final rotates already
}
TASKS = {"test": ["scifact", "stsb", "sts12"], "validation": ["scifact", "stsb"]}  # STS12 has a test split only
PRECISIONS = ["float32", "int8", "binary", "binary_rescore"]
CALIBRATION_TEXTS = 2000
MAX_LENGTH = 256


@dataclass(frozen=True)
class Grid:
    """One backbone's frontier: its exits and dims, where its trained rows are, where its vectors and scores go."""

    name: str
    layers: list[int]
    dims: list[int]
    runs: Path  # trained rows: <runs>/<method>/seed<N>
    marker: str  # the file a finished training run leaves in its folder
    results: Path  # raw files: <results>/<split>/<row>/seed<N>.json
    cache: Path  # pooled vectors, one file per (model, seed)

    def base(self) -> str:
        """The untrained backbone's folder."""
        if self.name == "mpnet":
            import mpnet_weights

            return str(mpnet_weights.fetch())
        return quality.minilm_path()


GRIDS = {
    "minilm": Grid("minilm", [2, 4, 6], [384, 256, 128, 64, 32, 16, 8], RUNS, "trained.json", RESULTS, RUNS / "cache"),
    "mpnet": Grid(
        "mpnet",
        layers=[3, 6, 9, 12],
        dims=[768, 512, 256, 128, 64, 32, 16, 8],
        runs=ROOT / "benchmarks" / "runs" / "mpnet" / "test",  # quality.py run --model <mpnet> --split test
        marker="wall_seconds.txt",  # quality_run writes it when a row's run ends
        results=RESULTS.with_name("frontier_mpnet"),
        cache=RUNS.with_name("frontier_mpnet") / "cache",
    ),
}
MINILM = GRIDS["minilm"]
LAYERS = MINILM.layers


def run_dir(method: str, seed: int, grid: Grid = MINILM) -> Path:
    return grid.runs / method / f"seed{seed}"


def model_path(method: str, seed: int, grid: Grid = MINILM) -> Path:
    """Where a trained row's model is: sentence-transformers peers save under ``model/``."""
    return quality_run.model_folder(run_dir(method, seed, grid), method)


def train(method: str, seed: int, backbone: str, max_steps: int | None) -> Path:
    """Train ``method`` (a quality.py row) with ``seed`` unless its ``trained.json`` exists; returns the model."""
    out = run_dir(method, seed)
    marker = out / "trained.json"
    if marker.is_file():
        print(f"skip {method} seed {seed}: trained", flush=True)
        return model_path(method, seed)
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    spec = quality.METHODS[method]
    if isinstance(spec, str):
        quality_run.run_peer(spec.split(":", 1)[1], backbone, seed, "test", out, max_steps, evaluate=False)
    else:
        quality_run.run_ours(spec, backbone, seed, "test", out, max_steps, tasks=[])
    record = {"method": method, "seed": seed, "max_steps": max_steps, "train_seconds": round(time.time() - start, 1)}
    marker.write_text(json.dumps(record, indent=2) + "\n")
    print(f"trained {method} seed {seed} in {record['train_seconds']} s", flush=True)
    return model_path(method, seed)


def cmd_train(args: argparse.Namespace) -> None:
    for seed in args.seeds:
        for method in args.methods:
            train(method, seed, args.model or quality.minilm_path(), args.max_steps)


def protocol(method: str | None) -> str:
    return "snli" if method and method.startswith("snli_") else "stsb"


def training_texts(name: str) -> list[str]:
    """The distinct sentences a protocol trains on (the rotation's and the int8 calibration's texts)."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.training.rotation import training_texts as distinct

    if name == "snli":
        return distinct(load_benchmark("snli", split="train"), ["anchor", "positive", "negative"])
    return distinct(load_benchmark("stsb", split="train"), ["sentence1", "sentence2"])


def load_model(path: str) -> tuple[object, object]:
    """A MatryoshkaModel (saved run or backbone) at the benchmark's grid, evaluated at max length 256."""
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel
    from mipic_hf.hub.folders import is_mipic_folder

    if is_mipic_folder(path):
        model = MatryoshkaModel.from_pretrained(path)
    else:
        dims, layers = quality.shape(path)
        model = MatryoshkaModel.from_backbone(path, matryoshka_dimensions=dims, matryoshka_layers=layers)
    model.config.max_seq_length = MAX_LENGTH
    return model.eval(), AutoTokenizer.from_pretrained(path)


class PooledCache:
    """Pooled, unrotated, unnormalised vectors of each text at each exit, encoded once per model."""

    def __init__(self, model: object, tokenizer: object, layers: list[int] = LAYERS) -> None:
        self.model, self.tokenizer, self.layers = model, tokenizer, layers
        self.vectors: dict[int, dict[str, np.ndarray]] = {layer: {} for layer in layers}

    def raw(self, texts: list[str], layers: list[int]) -> dict[int, np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors[layers[0]]]
        if missing:
            model = self.model
            saved = model.config.normalize, model.output_rotation
            model.config.normalize, model.output_rotation = False, None
            try:
                out = model.encode_layers(
                    missing, self.tokenizer, self.layers, dimension=model.hidden_size, batch_size=64
                )
            finally:
                model.config.normalize, model.output_rotation = saved
            for layer, matrix in out.items():
                self.vectors[layer].update(zip(missing, matrix.cpu().numpy(), strict=True))
        return {layer: np.stack([self.vectors[layer][t] for t in texts]) for layer in layers}

    def load(self, path: Path) -> PooledCache:
        """Add the vectors :meth:`save` wrote to ``path`` (when it exists): a model is encoded once across runs."""
        from safetensors.numpy import load_file

        if path.is_file():
            texts = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            arrays = load_file(str(path))
            for layer in self.layers:
                self.vectors[layer].update(zip(texts, arrays[f"L{layer}"], strict=True))
        return self

    def save(self, path: Path) -> None:
        """Every cached text (``path`` with .json) and its pooled vectors per exit (``path``, safetensors: ``L2``,
        ``L4``, ...), for later analysis without encoding again (post-hoc transforms of the pooled vector need
        nothing else)."""
        from safetensors.numpy import save_file

        texts = list(self.vectors[self.layers[0]])
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({f"L{layer}": np.stack([self.vectors[layer][t] for t in texts]) for layer in self.layers}, str(path))
        path.with_suffix(".json").write_text(json.dumps(texts), encoding="utf-8")

    def encoder(self, rotation: tuple[np.ndarray, np.ndarray] | None):
        """``encode_fn`` for evaluate_grid: the model's vectors (its own rotation, or ``rotation``), normalised."""
        if rotation is None and self.model.output_rotation is not None:
            rotation = (self.model.output_rotation.mean.numpy(), self.model.output_rotation.matrix.numpy())

        def encode(texts: list[str], layers: list[int]) -> dict[int, np.ndarray]:
            out = {}
            for layer, raw in self.raw(texts, layers).items():
                if rotation is not None:
                    raw = (raw - rotation[0]) @ rotation[1]
                out[layer] = raw / np.clip(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12, None)
            return out

        return encode


def fit_rotation(cache: PooledCache, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Centring + PCA of the pooled vectors at the last exit (``mipic_hf.training.rotation.principal_rotation``)."""
    import torch

    from mipic_hf.training.rotation import principal_rotation

    last = cache.layers[-1]
    mean, matrix = principal_rotation(torch.from_numpy(cache.raw(texts, [last])[last]).double())
    return mean.float().numpy(), matrix.float().numpy()


def cache_file(method: str | None, seed: int, grid: Grid = MINILM) -> Path:
    return grid.cache / f"{method or 'untrained'}_seed{0 if method is None else seed}.safetensors"


def raw_file(split: str, row: str, seed: int, grid: Grid = MINILM) -> Path:
    return grid.results / split / row / f"seed{0 if ROWS[row][0] is None else seed}.json"


def recipe_of(method: str | None, seed: int, grid: Grid = MINILM) -> object:
    """What the row trained with: the run's resolved recipe (ours) or the quality.py spec (peers)."""
    import yaml

    if method is None:
        return None
    written = run_dir(method, seed, grid) / "mipic_recipe.yaml"
    if written.is_file():
        return yaml.safe_load(written.read_text())
    return {"quality_method": method, "spec": quality.METHODS[method], "protocol": "benchmarks/quality_run.py run_peer"}


def score_method(
    method: str | None, rows: list[str], seed: int, splits: list[str], exclude: set, grid: Grid = MINILM
) -> None:
    """Score every row of one trained model (or the base) on ``splits``; writes the raw files that do not exist."""
    from mipic_hf.evaluation.grid import evaluate_grid
    from mipic_hf.evaluation.precision import sample_texts

    todo = [(row, split) for row in rows for split in splits if not raw_file(split, row, seed, grid).is_file()]
    if not todo:
        print(f"skip {rows} seed {seed}: scored", flush=True)
        return
    path = grid.base() if method is None else str(model_path(method, seed, grid))
    model, tokenizer = load_model(path)
    cache = PooledCache(model, tokenizer, grid.layers).load(cache_file(method, seed, grid))
    texts = training_texts(protocol(method))
    calibration = sample_texts(texts, CALIBRATION_TEXTS)
    for row in dict.fromkeys(r for r, _ in todo):
        start = time.time()
        encode = cache.encoder(fit_rotation(cache, texts) if ROWS[row][1] else None)
        for split in [s for r, s in todo if r == row]:
            results = evaluate_grid(
                model,
                tokenizer,
                TASKS[split],
                layers=grid.layers,
                split=split,
                precisions=PRECISIONS,
                calibration_texts=calibration,
                exclude_pairs=exclude,
                encode_fn=encode,
                model_name=row,
                show_progress_bar=False,
            )
            record = provenance(
                row=row,
                backbone=grid.name,
                method=method,
                seed=None if method is None else seed,
                rotation_after_training=ROWS[row][1],
                protocol=protocol(method),
                calibration={"texts": len(calibration), "from": f"{protocol(method)} train sentences, seed 0"},
                excluded_pairs={"from": ["stsb train", "snli triplets"], "count": len(exclude)},
                recipe=recipe_of(method, seed, grid),
            )
            target = raw_file(split, row, seed, grid)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8") as f:  # never overwrites a raw file
                json.dump({"provenance": record, "results": results}, f, indent=1)
            print(f"scored {row} seed {seed} {split} in {time.time() - start:.0f} s -> {target}", flush=True)
    cache.save(cache_file(method, seed, grid))


def cmd_score(args: argparse.Namespace) -> None:
    grid = GRIDS[args.backbone]
    exclude = quality_run.excluded_pairs()
    for seed in args.seeds:
        methods = dict.fromkeys(ROWS[row][0] for row in args.rows)
        for method in methods:
            if method is not None and not (run_dir(method, seed, grid) / grid.marker).is_file():
                print(f"not trained yet: {method} seed {seed} ({run_dir(method, seed, grid)})", flush=True)
                continue
            rows = [row for row in args.rows if ROWS[row][0] == method]
            score_method(method, rows, seed, args.splits, exclude, grid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train_parser = sub.add_parser("train", help="train rows (quality.py's protocol) without scoring them")
    train_parser.add_argument("--methods", nargs="+", default=TRAINED, choices=TRAINED + CANDIDATES)
    train_parser.add_argument("--seeds", nargs="+", type=int, default=quality.SEEDS)
    train_parser.add_argument("--model", help="backbone folder (default: all-MiniLM-L6-v2)")
    train_parser.add_argument("--max_steps", type=int, default=None, help="cap steps (smoke runs)")
    score_parser = sub.add_parser("score", help="score trained rows; one raw file per (row, seed, split)")
    score_parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    score_parser.add_argument("--seeds", nargs="+", type=int, default=quality.SEEDS)
    score_parser.add_argument("--splits", nargs="+", default=["test", "validation"], choices=["test", "validation"])
    report_parser = sub.add_parser("report", help="print the tables from the raw files")
    for grid_parser in (score_parser, report_parser):
        grid_parser.add_argument(
            "--backbone", default="minilm", choices=list(GRIDS), help="minilm (default) or mpnet (quality.py's rows)"
        )
    report_parser.add_argument("--split", default="test", choices=["test", "validation"])
    report_parser.add_argument("--rows", nargs="+", default=None, choices=list(ROWS))
    report_parser.add_argument("--plot", default=None, help="also write the SciFact quality-per-byte plot here")
    args = parser.parse_args(argv)
    if args.command == "report":
        from frontier_report import plot, report

        report(args.split, args.rows, GRIDS[args.backbone])
        if args.plot:
            plot(args.split, args.plot, args.rows, GRIDS[args.backbone])
        return
    {"train": cmd_train, "score": cmd_score}[args.command](args)


if __name__ == "__main__":
    main()
