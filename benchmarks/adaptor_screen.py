"""Issue 28, screen 1: post-hoc tools on the frozen base model (all-MiniLM-L6-v2), chosen on dev data only.

    MIPIC_DATA_DIR=../shared/data python benchmarks/adaptor_screen.py run --split validation --candidates ... --seeds 42
    python benchmarks/adaptor_screen.py report --split validation
    MIPIC_DATA_DIR=../shared/data python benchmarks/adaptor_screen.py calibration --split validation  # screen 3
    python benchmarks/adaptor_screen.py report --split validation --calibration

Every candidate keeps the backbone frozen and changes only what is stored: an orthogonal output map of the pooled
vector (``mipic_hf.training.adaptor``, none for ``base*``) and how int8 ranges are calibrated (per coordinate, as
sentence-transformers does, or ``shared``: one min and max per budget). So each is scored from one encoding of the
base model (``frontier.py``'s pooled-vector cache) through the project's evaluator (``evaluate_grid`` with an
``encode_fn``): SciFact (validation = its train claims) and STS-B dev, exits 2, 4, 6, every dim, float32 / int8 /
binary / binary with rescoring. The adaptor trains on the distinct sentences of the training sets in the data folder
(STS-B train, the SNLI triplets, TREC and Banking77 train; never an evaluation split); int8 ranges on 2,000 of them.

The rule (``select``), written before any run: a candidate is eligible when, on SciFact dev at the last exit, its
best score within every byte budget of BUDGETS is at least the base's minus TOLERANCE, and its STS-B dev Spearman at
the last exit is at least the base's minus TOLERANCE at every dim (lose nothing); among the eligible, the largest
mean gain over the base across the scarce budgets (<= 64 bytes) wins, averaged over the seeds run. None is
picked when none is eligible.

Screen 3 (``calibration``, after the frontier of issue 27 showed every rotated row losing in int8): the same
two calibrations on the models the project trains, scored from their cached encodings (``frontier.py``), int8
ranges from 2,000 of each row's own training sentences. Its rule (``select_calibration``, written before its runs):
``shared`` becomes the default calibration when, for every row of CALIBRATION_ROWS (mean over its seeds), no int8
cell at the last exit (every dim, SciFact dev nDCG@10 and STS-B dev Spearman) is more than TOLERANCE below
``coordinate``'s, and the mean over those cells gains.

Screen 4 (after screen 3's table: shared ranges repair the rotated full width and lose at some middle cells):
``auto`` calibration, which picks per budget whichever of the two gives int8 cosines closest to the floats' on the
calibration texts themselves (``mipic_hf.evaluation.precision.code_agreement``), under screen 3's rule with ``auto``
in place of ``shared``.

Screen 6 (after screens 1-2: the adaptor's prefixes gain at 8-32 B while the base's own full-width codes are the
best cells at 48-128 B and 384 B): the adaptor with ``full_width_codes: backbone``, so that the full width's int8 and
binary codes are the base's own (``y @ R^T``) while R orders the prefixes; with shared and with per-coordinate int8
ranges. Rule (written before its runs): screen 1's ``select`` on the mean over seeds 42, 43 and 44; a pick is then
scored once on the test split per seed, with nothing changed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import quality_run
from frontier import LAYERS, ROOT, RUNS, PooledCache, load_model  # sets the offline defaults and import paths
from frontier_report import BUDGETS, TOLERANCE, lose_nothing_rule, raw_results  # the rule, one owner
from provenance import provenance

RESULTS = ROOT / "benchmarks" / "results" / "adaptor"
CLEAN = "test_clean"  # STS-B test and STS12 without the training pairs (run --clean)
CACHE = RUNS / "cache" / "untrained_seed0.safetensors"
TRAIN_SETS = {"stsb": ["sentence1", "sentence2"], "snli": ["anchor", "positive", "negative"], "trec": ["text"]}
TRAIN_SETS["banking77"] = ["text"]
PRECISIONS = ["float32", "int8", "binary", "binary_rescore"]
DIMS = [8, 16, 32, 64, 128, 256, 384]
# name -> (adaptor settings or None, int8 calibration mode); written before the runs
CANDIDATES: dict[str, tuple[dict | None, str]] = {
    "base": (None, "coordinate"),
    "base_shared": (None, "shared"),
    "adaptor": ({}, "shared"),
    "adaptor_bits": ({"binary_dims": [64, 128, 256, 384]}, "shared"),
    "adaptor_bits_w3": ({"binary_dims": [64, 128, 256, 384], "binary_weight": 3.0}, "shared"),
    "adaptor_bits_identity": ({"binary_dims": [64, 128, 256, 384], "init": "identity"}, "shared"),
    "adaptor_coordinate": ({}, "coordinate"),
    # screen 2 (after screen 1's table: the adaptors gain at 8-32 B and lose at 48-128 B, where the best cell is
    # binary at full width): sign bits balanced by ITQ, over the full width or inside each block of PCA directions
    # between trained dims (closed form: steps 0), and the adaptor trained from them, the bits' relation taken as the
    # rescoring takes it (the float query against the bits)
    "itq": ({"init": "itq", "steps": 0}, "shared"),
    "nested_itq": ({"init": "nested_itq", "steps": 0}, "shared"),
    "nested_itq_adaptor": (
        {"init": "nested_itq", "binary_dims": [128, 256, 384], "binary_relation": "asymmetric"},
        "shared",
    ),
    "itq_adaptor_small": (
        {"init": "itq", "dims": [8, 16, 32, 64], "binary_dims": [384], "binary_relation": "asymmetric"},
        "shared",
    ),
    # screen 6
    "adaptor_backbone_codes": ({"full_width_codes": "backbone"}, "shared"),
    "adaptor_backbone_codes_coordinate": ({"full_width_codes": "backbone"}, "coordinate"),
}


# screen 3: row -> the frontier.py method whose trained models (seeds 42, 43, 44) are scored (None: the base)
CALIBRATION_ROWS = {"untrained": None, "t_final": "t_final", "snli_t_final": "snli_t_final"}
CALIBRATION_SEEDS = [42, 43, 44]
CALIBRATION_MODES = ["coordinate", "shared", "auto"]  # auto: screen 4


def training_texts() -> list[str]:
    """The distinct sentences of TRAIN_SETS' train splits, in that order."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.evaluation.precision import sample_texts

    texts: list[str] = []
    for name, columns in TRAIN_SETS.items():
        data = load_benchmark(name, split="train")
        texts += [t for c in columns for t in data[c]]
    return sample_texts(texts, None)


@contextlib.contextmanager
def coded_as(model, name: str, matrix: np.ndarray | None):
    """The base model holding the candidate's rotation and full-width code basis while it is scored (the grid reads
    the code basis from the model; the vectors themselves come rotated from the cache), as it was afterwards."""
    import torch

    codes = (CANDIDATES[name][0] or {}).get("full_width_codes", "rotated")
    if matrix is None or codes == "rotated":
        yield
        return
    model.set_output_rotation(torch.zeros(matrix.shape[0]), torch.from_numpy(matrix).double())
    model.config.full_width_codes = codes
    try:
        yield
    finally:
        model.output_rotation, model.config.output_rotation, model.config.full_width_codes = None, False, "rotated"


def fit(name: str, cache: PooledCache, texts: list[str], seed: int) -> np.ndarray | None:
    import torch

    from mipic_hf.training.adaptor import AdaptorSettings, fit_adaptor

    spec = CANDIDATES[name][0]
    if spec is None:
        return None
    settings = AdaptorSettings(**spec, seed=seed)
    vectors = torch.from_numpy(cache.raw(texts, [LAYERS[-1]])[LAYERS[-1]])
    return fit_adaptor(vectors, settings, settings.dims or DIMS[:-1]).numpy().astype(np.float32)


def raw_file(split: str, name: str, seed: int) -> Path:
    return RESULTS / split / name / f"seed{0 if CANDIDATES[name][0] is None else seed}.json"


def run(names: list[str], seeds: list[int], split: str, clean: bool = False) -> None:
    """Score each candidate x seed on SciFact and STS-B (``split``), or with ``clean`` on the held-out STS sets of
    issue 27 (STS-B test and STS12, test split, without the training pairs: ``quality_run.excluded_pairs``)."""
    import quality_registry as quality

    from mipic_hf.evaluation.grid import evaluate_grid
    from mipic_hf.evaluation.precision import sample_texts

    tasks, exclude = (["stsb", "sts12"], quality_run.excluded_pairs()) if clean else (["scifact", "stsb"], None)
    model, tokenizer = load_model(quality.minilm_path())
    cache = PooledCache(model, tokenizer).load(CACHE)  # frontier.py encoded SciFact, STS-B and the rest
    texts = training_texts()
    calibration = sample_texts(texts, 2000)
    cache.raw(texts, LAYERS)  # the new training sentences, once
    for seed in seeds:
        for name in names:
            target = raw_file(CLEAN if clean else split, name, seed)
            if target.is_file():
                continue
            start = time.time()
            matrix = fit(name, cache, texts, seed)
            rotation = None if matrix is None else (np.zeros(matrix.shape[0], dtype=np.float32), matrix)
            with coded_as(model, name, matrix):
                results = evaluate_grid(
                    model,
                    tokenizer,
                    tasks,
                    layers=LAYERS,
                    split="test" if clean else split,
                    exclude_pairs=exclude,
                    precisions=PRECISIONS,
                    calibration_texts=calibration,
                    calibration_mode=CANDIDATES[name][1],
                    encode_fn=cache.encoder(rotation),
                    model_name=name,
                    show_progress_bar=False,
                )
            record = provenance(
                candidate=name,
                spec={"adaptor": CANDIDATES[name][0], "calibration_mode": CANDIDATES[name][1]},
                seed=seed,
                training_texts={"sets": list(TRAIN_SETS), "count": len(texts)},
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "x", encoding="utf-8") as f:
                json.dump({"provenance": record, "results": results}, f, indent=1)
            print(f"{name} seed {seed} {CLEAN if clean else split}: {time.time() - start:.0f} s", flush=True)


def calibration_file(split: str, row: str, mode: str, seed: int) -> Path:
    return RESULTS / split / "calibration" / f"{row}_{mode}" / f"seed{seed}.json"


def run_calibration(split: str) -> None:
    """Screen 3: each row of CALIBRATION_ROWS, each seed, scored with both calibrations from its cached encoding."""
    import frontier
    import quality_registry as quality

    from mipic_hf.evaluation.grid import evaluate_grid
    from mipic_hf.evaluation.precision import sample_texts

    exclude = quality_run.excluded_pairs()
    for row, method in CALIBRATION_ROWS.items():
        for seed in [0] if method is None else CALIBRATION_SEEDS:
            path = quality.minilm_path() if method is None else str(frontier.model_path(method, seed))
            model, tokenizer = load_model(path)
            cache = PooledCache(model, tokenizer).load(frontier.cache_file(method, seed))
            calibration = sample_texts(frontier.training_texts(frontier.protocol(method)), 2000)
            for mode in CALIBRATION_MODES:
                target = calibration_file(split, row, mode, seed)
                if target.is_file():
                    continue
                results = evaluate_grid(
                    model, tokenizer, ["scifact", "stsb"], layers=LAYERS, split=split, precisions=PRECISIONS,
                    calibration_texts=calibration, calibration_mode=mode, encode_fn=cache.encoder(None),
                    exclude_pairs=exclude, model_name=row, show_progress_bar=False,
                )  # fmt: skip
                record = provenance(row=row, method=method, seed=seed, calibration_mode=mode, calibration_texts=2000)
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "x", encoding="utf-8") as f:
                    json.dump({"provenance": record, "results": results}, f, indent=1)
                print(f"{row} {mode} seed {seed} {split}", flush=True)


def int8_cells(run_: dict) -> list[float]:
    """The int8 scores at the last exit, every dim: SciFact nDCG@10, then STS-B Spearman (x100)."""
    from mipic_hf.evaluation.grid import main_score

    return [main_score(run_, task, LAYERS[-1], d, "int8") for task in ["scifact", "stsb"] for d in DIMS]


def select_calibration(split: str, mode: str = "shared") -> tuple[bool, dict[str, tuple[float, float]]]:
    """Screens 3 and 4's rule: (``mode`` becomes the default, {row: (worst cell change, mean cell change)})."""
    verdicts = {}
    for row in CALIBRATION_ROWS:
        by_mode = {}
        for name in ["coordinate", mode]:
            files = sorted((RESULTS / split / "calibration" / f"{row}_{name}").glob("seed*.json"))
            by_mode[name] = mean_rows([int8_cells(json.loads(f.read_text())["results"]) for f in files])
        change = [s - c for s, c in zip(by_mode[mode], by_mode["coordinate"], strict=True)]
        verdicts[row] = (round(min(change), 2), round(statistics.mean(change), 2))
    adopt = all(worst >= -TOLERANCE and mean > 0 for worst, mean in verdicts.values())
    return adopt, verdicts


def calibration_report(split: str) -> None:
    print(f"\nint8 at exit layer 6, {split}: SciFact nDCG@10 / STS-B Spearman x100 per dim, mean over seeds (n)\n")
    print("| row, calibration (n) | " + " | ".join(f"SciFact {d}" for d in DIMS) + " | "
          + " | ".join(f"STS-B {d}" for d in DIMS) + " |")  # fmt: skip
    print("|---|" + "---|" * 2 * len(DIMS))
    for row in CALIBRATION_ROWS:
        for mode in CALIBRATION_MODES:
            files = sorted((RESULTS / split / "calibration" / f"{row}_{mode}").glob("seed*.json"))
            if files:
                cells_ = mean_rows([int8_cells(json.loads(f.read_text())["results"]) for f in files])
                print(f"| {row}, {mode} ({len(files)}) | " + " | ".join(f"{v:.2f}" for v in cells_) + " |")
    for mode in CALIBRATION_MODES[1:] if split == "validation" else []:
        adopt, verdicts = select_calibration(split, mode)
        print(f"\n| row | worst int8 cell, {mode} - coordinate | mean int8 cell change |\n|---|---|---|")
        for row, (worst, mean) in verdicts.items():
            print(f"| {row} | {worst:+.2f} | {mean:+.2f} |")
        print(f"\nrule (select_calibration): {mode} becomes the default: {'yes' if adopt else 'no'}")


def load(split: str) -> dict[str, list[dict]]:
    return raw_results(RESULTS / split, list(CANDIDATES))


def frontier_row(run_: dict) -> list[float]:
    from mipic_hf.evaluation.frontier import best_within, cells

    found = cells(run_, "scifact")
    return [best_within(found, b, LAYERS[-1]).score for b in BUDGETS]


def sts_row(run_: dict) -> list[float]:
    from mipic_hf.evaluation.grid import main_score

    return [main_score(run_, "stsb", LAYERS[-1], d) for d in DIMS]


def mean_rows(rows: list[list[float]]) -> list[float]:
    return [statistics.mean(col) for col in zip(*rows, strict=True)]


def select(found: dict[str, list[dict]]) -> tuple[str | None, dict[str, tuple[bool, float]]]:
    """The rule of the module docstring (``frontier_report.lose_nothing_rule``): (the pick or None, {candidate:
    (eligible, mean scarce gain)}), the base listed first as its own reference."""
    pick, verdicts = lose_nothing_rule(found, "base", [name for name in found if name != "base"])
    return pick, {"base": (True, 0.0), **verdicts}


def clean_report() -> None:
    from mipic_hf.evaluation.grid import main_score

    found = load(CLEAN)
    for task in ["stsb", "sts12"]:
        print(f"\n{task} (test, without training pairs), exit layer 6: Spearman x100, float32, mean over seeds (n)\n")
        print("| candidate (n) | " + " | ".join(map(str, DIMS)) + " |")
        print("|---|" + "---|" * len(DIMS))
        for name, runs in found.items():
            rows = [[main_score(r, task, LAYERS[-1], d) for d in DIMS] for r in runs]
            print(f"| {name} ({len(runs)}) | " + " | ".join(f"{v:.2f}" for v in mean_rows(rows)) + " |")


def report(split: str) -> None:
    found = load(split)
    print(f"\nscifact ({split}), exit layer 6: best nDCG@10 x100 within B bytes, mean over seeds (n)\n")
    print("| candidate (n) | " + " | ".join(f"{b} B" for b in BUDGETS) + " |")
    print("|---|" + "---|" * len(BUDGETS))
    for name, runs in found.items():
        print(
            f"| {name} ({len(runs)}) | "
            + " | ".join(f"{v:.2f}" for v in mean_rows([frontier_row(r) for r in runs]))
            + " |"
        )
    print(f"\nstsb ({split}), exit layer 6: Spearman x100, float32, mean over seeds (n)\n")
    print("| candidate (n) | " + " | ".join(map(str, DIMS)) + " |")
    print("|---|" + "---|" * len(DIMS))
    for name, runs in found.items():
        print(
            f"| {name} ({len(runs)}) | " + " | ".join(f"{v:.2f}" for v in mean_rows([sts_row(r) for r in runs])) + " |"
        )
    if split == "validation" and "base" in found:
        pick, verdicts = select(found)
        print("\n| candidate | eligible (lose nothing, tolerance 0.1) | mean gain at <= 64 B |\n|---|---|---|")
        for name, (ok, gain) in verdicts.items():
            print(f"| {name} | {'yes' if ok else 'no'} | {gain:+.2f} |")
        print(f"\nrule (select) picks: {pick}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    r.add_argument("--seeds", nargs="+", type=int, default=[42])
    r.add_argument("--split", default="validation", choices=["validation", "test"])
    r.add_argument("--clean", action="store_true", help="STS-B test and STS12 without the training pairs instead")
    p = sub.add_parser("report")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--calibration", action="store_true", help="screen 3's table and rule instead")
    p.add_argument("--clean", action="store_true", help="the clean STS tables (run --clean) instead")
    sub.add_parser("calibration").add_argument("--split", default="validation", choices=["validation", "test"])
    args = parser.parse_args()
    if args.command == "run":
        run(args.candidates, args.seeds, args.split, args.clean)
    elif args.command == "calibration":
        run_calibration(args.split)
    elif args.clean:
        clean_report()
    elif args.calibration:
        calibration_report(args.split)
    else:
        report(args.split)


if __name__ == "__main__":
    main()
