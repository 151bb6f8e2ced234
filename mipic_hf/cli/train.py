"""``python -m mipic_hf.run recipes/X.yaml [--field value ...] [--dry_run]``: recipe in, model + eval grid out.

Everything is validated before any work starts (model shape, dims, layers, ladder, data columns, eval tasks,
output and export folders, LoRA targets, Hub repo and token); ``--dry_run`` prints the resolved plan and
exits. A run trains with MIPICTrainer (LoRA through PEFT when ``lora.use_lora``), saves the MatryoshkaModel
(adapters merged; the adapter itself in ``adapter/``), the tokenizer, ``mipic_recipe.yaml`` and the training
summary in ``output_dir``, evaluates the (layer x dim) grid into ``eval/``, exports the folder others load
(``mipic_hf.export``, default ``<output_dir>/export``), pushes it when ``hub.push_to_hub`` is set
(``mipic_hf.publish``) and prints a one-screen summary.
"""

from __future__ import annotations

import os
import sys

from ..recipe.arguments import RecipeError
from ..recipe.parser import parse_recipe, recipe_help
from ..recipe.pipeline import execute
from ..recipe.plan import build_plan
from ..recipe.summary import print_summary
from ..training.preemption import PREEMPTED_EXIT_CODE, Preempted
from ..training.trainer import NonFiniteLossError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(token in ("-h", "--help") for token in argv):
        print(recipe_help("python -m mipic_hf.run", __doc__))
        return 0
    try:
        plan = build_plan(parse_recipe(argv))
    except ValueError as err:  # RecipeError and the config / objective validators
        print(f"error: {err}", file=sys.stderr)
        return 2
    main_process = os.environ.get("RANK", "0") == "0"  # torchrun / accelerate launch set RANK
    if main_process:
        print(plan.describe())
    if plan.recipe.run.dry_run:
        print("dry run: nothing trained or written")
        return 0
    try:
        summary = execute(plan)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Preempted as err:  # a scheduler's SIGTERM (or Ctrl-C): the checkpoint is saved, run again to resume
        print(f"preempted: {err}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    if not summary.get("secondary_rank"):
        print_summary(summary)
    return 0
