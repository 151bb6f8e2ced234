"""The quality benchmark's runners: train a row (ours through ``mipic_hf.run`` on the protocol recipe, the
sentence-transformers peers through their own trainer), score it with ``evaluate_grid``, archive the raw file with
its provenance."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import quality_registry as registry
import yaml
from provenance import provenance  # imported here so its commit is the checkout's when the benchmark starts
from quality_registry import (
    CLEAN,
    METHODS,
    PROTOCOL,
    ROOT,
    eval_split,
    protocol,
    run_dir,
    shape,
    tasks_for,
    untrained,
)


def rotation_texts() -> list[str]:
    """The sentences an anchor's output rotation is fitted on: STS-B train, both columns (never evaluation text)."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.training.rotation import training_texts

    return training_texts(load_benchmark("stsb", split="train"), ["sentence1", "sentence2"])


def excluded_pairs() -> set[tuple[str, str]]:
    """Every training pair of every row: STS-B train and the SNLI triplets (what ``test_clean`` leaves out)."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.data.overlap import training_pairs

    return training_pairs(load_benchmark("stsb", split="train")) | training_pairs(load_benchmark("snli", split="train"))


def model_folder(out: Path, method: str) -> Path:
    """Where a trained row's model is in its run folder: sentence-transformers peers save under ``model/``."""
    return out / "model" if isinstance(METHODS[method], str) else out


def trained_model(method: str, seed: int) -> str:
    """The model the ``test`` split trained for (method, seed), which ``test_clean`` scores again."""
    folder = model_folder(run_dir("test", method, seed), method)
    if not (folder / "config.json").is_file():
        raise SystemExit(f"--split {CLEAN} scores trained models: no model at {folder}; run --split test first")
    return str(folder)


def score(model_path: str, split: str, out: Path, rotate: bool = False) -> None:
    """Evaluate the grid with the project's evaluator and write out/eval/eval_results.json (+ table, plots).
    ``model_path``: a backbone, or a saved MatryoshkaModel (a run's output_dir); ``rotate``: fit the output
    rotation on :func:`rotation_texts` first; ``split`` ``test_clean``: the test split without
    :func:`excluded_pairs`."""
    import torch
    from transformers import AutoTokenizer

    from mipic_hf import MatryoshkaModel
    from mipic_hf.evaluation.grid import evaluate_grid
    from mipic_hf.evaluation.report import write_outputs
    from mipic_hf.hub.folders import is_mipic_folder
    from mipic_hf.training.rotation import fit_output_rotation

    if is_mipic_folder(model_path):
        model = MatryoshkaModel.from_pretrained(model_path).eval()
        dims, layers = list(model.config.matryoshka_dimensions), list(model.config.matryoshka_layers)
        model.config.max_seq_length = 256
    else:
        dims, layers = shape(model_path)
        model = MatryoshkaModel.from_backbone(
            model_path, matryoshka_dimensions=dims, matryoshka_layers=layers, max_seq_length=256
        )
    if torch.cuda.is_available():
        model.to("cuda")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if rotate:
        fit_output_rotation(model, tokenizer, rotation_texts())
    results = evaluate_grid(
        model,
        tokenizer,
        tasks_for(split),
        dims=dims,
        layers=layers,
        split=eval_split(split),
        exclude_pairs=excluded_pairs() if split == CLEAN else None,
        show_progress_bar=False,
    )
    write_outputs(results, out / "eval")


def expand_overrides(overrides: list[str], dims: list[int], layers: list[int]) -> list[str]:
    """A row's overrides with the registry's placeholders filled in: ``{data}`` ($MIPIC_DATA_DIR), ``{layers}``
    (the grid's exit layers), ``{last_layer}``, ``{exits}`` (one rung per exit layer, dims spread evenly: 32:2
    128:4 384:6 on MiniLM)."""
    overrides = [o.replace("{data}", os.environ.get("MIPIC_DATA_DIR", "../shared/data")) for o in overrides]
    if "{layers}" in overrides:
        at = overrides.index("{layers}")
        overrides = [*overrides[:at], *map(str, layers), *overrides[at + 1 :]]
    overrides = [str(layers[-1]) if o == "{last_layer}" else o for o in overrides]
    if "{exits}" in overrides:
        rungs = [f"{dims[round((i + 1) * (len(dims) - 1) / len(layers))]}:{layer}" for i, layer in enumerate(layers)]
        at = overrides.index("{exits}")
        overrides = [*overrides[:at], *rungs, *overrides[at + 1 :]]
    return overrides


def run_ours(
    spec: list[str] | dict,
    model: str,
    seed: int,
    split: str,
    out: Path,
    max_steps: int | None,
    tasks: list[str] | None = None,
) -> None:
    """Train one of our rows through ``mipic_hf.run`` into ``out``, scored on ``tasks`` (default
    :func:`tasks_for`; an empty list scores nothing). The protocol's training values come from its recipe; every
    row, whatever its recipe, trains one epoch (or ``max_steps``), exports nothing and leaves the base unscored. It
    is scored on every example, as :func:`score` scores the base and the peers (``test_clean`` drops training pairs
    for every row alike). Rows run from commit 42cae16 until ``test_clean`` came were scored without their training
    pairs (their raw files' ``num_examples`` say ``dropped_as_training``)."""
    from mipic_hf.run import main

    recipe, overrides = (PROTOCOL, spec) if isinstance(spec, list) else (spec["recipe"], spec["args"])
    dims, layers = shape(model)
    overrides = expand_overrides(overrides, dims, layers)
    argv = [
        str(ROOT / recipe if recipe == PROTOCOL else ROOT / "recipes" / recipe),
        *overrides,
        *("--backbone", model, "--matryoshka_dimensions", *map(str, dims), "--matryoshka_layers", *map(str, layers)),
        *("--seed", str(seed), "--output_dir", str(out), "--overwrite_output_dir"),
        *("--max_steps", str(max_steps or -1), "--num_train_epochs", "1", "--logging_steps", "20"),
        *("--eval_split", split, "--eval_tasks", *((tasks_for(split) if tasks is None else tasks) or ["none"])),
        *("--export_model", "false", "--eval_base", "false"),
        *("--eval_decontaminate", "false"),  # every row on the same examples: the base and the peers see all pairs
    ]
    recipe_model = yaml.safe_load(Path(argv[0]).read_text()).get("model") or {}
    if "--fit_rotation" not in overrides and "fit_rotation" not in recipe_model:
        argv += ["--fit_rotation", "none"]  # rows rotate only where they say so (the run's default is auto)
    if main(argv) != 0:
        raise SystemExit(f"{out} failed")


def run_peer(
    loss_name: str, model_path: str, seed: int, split: str, out: Path, max_steps: int | None, evaluate: bool = True
) -> None:
    """sentence-transformers' own trainer and Matryoshka losses, the same protocol: around CoSENTLoss on STS-B
    train (``loss_name`` "MatryoshkaLoss"), or around MultipleNegativesRankingLoss on the SNLI triplets
    ("MatryoshkaLoss:snli"). The model is saved in ``out/model`` and scored unless ``evaluate`` is false."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses
    from sentence_transformers.training_args import SentenceTransformerTrainingArguments

    from mipic_hf.data import load_benchmark

    loss_name, _, data = loss_name.partition(":")
    settings = protocol()
    model = SentenceTransformer(model_path)
    model.max_seq_length = settings["max_length"]
    if data == "snli":
        train = load_benchmark("snli", split="train")
        train = Dataset.from_dict({c: train[c] for c in ("anchor", "positive", "negative")})
        base = losses.MultipleNegativesRankingLoss(model)
    else:
        train = load_benchmark("stsb", split="train")
        scores = [float(s) for s in train["score"]]
        train = Dataset.from_dict({"sentence1": train["sentence1"], "sentence2": train["sentence2"], "score": scores})
        base = losses.CoSENTLoss(model)
    dims = sorted(shape(model_path)[0], reverse=True)
    loss = getattr(losses, loss_name)(model, base, matryoshka_dims=dims)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=settings["epochs"],
        max_steps=max_steps or -1,
        per_device_train_batch_size=settings["batch"],
        learning_rate=settings["learning_rate"],
        warmup_steps=settings["warmup"],
        seed=seed,
        logging_steps=20,
        save_strategy="no",
        report_to="none",
    )
    SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=loss).train()
    model.max_seq_length = 256
    model.save(str(out / "model"))
    if evaluate:
        score(str(out / "model"), split, out)


def run_one(method: str, seed: int, split: str, model: str, max_steps: int | None) -> None:
    """Train and score one (method, seed) unless its eval_results.json exists."""
    out = run_dir(split, method, seed)
    if (out / "eval" / "eval_results.json").is_file():
        print(f"skip {split} {method} seed {seed}: done", flush=True)
        archive(out, split, method)
        return
    spec = METHODS[method]
    source = spec["rotate"] if isinstance(spec, dict) and "rotate" in spec else method
    # test_clean scores the test split's model again: refused before any folder is made when there is none
    trained = trained_model(source, seed) if split == CLEAN and not untrained(method) else None
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    if trained is not None:
        score(trained, split, out, rotate=source != method)
    elif spec is None:
        score(model, split, out)
    elif source != method:  # another row's model, rotated
        run_one(source, seed, split, model, max_steps)
        score(model if METHODS[source] is None else str(run_dir(split, source, seed)), split, out, rotate=True)
    elif isinstance(spec, str):
        run_peer(spec.split(":", 1)[1], model, seed, split, out, max_steps)
    else:
        run_ours(spec, model, seed, split, out, max_steps)
    (out / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
    archive(out, split, method)
    print(f"done {split} {method} seed {seed} in {time.time() - start:.0f} s", flush=True)


def archive(out: Path, split: str, method: str) -> Path:
    """Copy a run's eval_results.json to RESULTS/<split>/<method>/<seed>.json (the committed raw data), with what
    produced it under ``"provenance"`` (method, seed, split, the resolved recipe or peer spec, commit, versions,
    machine, date). A raw file that exists is kept, never overwritten."""
    target = registry.RESULTS / split / method / f"{out.name}.json"
    if target.is_file():
        print(f"kept {target}: a raw file is never overwritten", flush=True)
        return target
    recipe = out / "mipic_recipe.yaml"
    resolved = recipe.read_text(encoding="utf-8") if recipe.is_file() else None
    results = json.loads((out / "eval" / "eval_results.json").read_text())
    seed = int(out.name[4:])  # the run folder's seed (seed0 for the untrained rows)
    results["provenance"] = provenance(method=method, seed=seed, split=split, spec=METHODS[method], recipe=resolved)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "x", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    return target
