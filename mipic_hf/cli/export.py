"""``python -m mipic_hf.export RUN_DIR OUT_DIR [--adapter_only] [--repo_id ORG/NAME] [--overwrite]``.

Turns a run folder (written by ``mipic_hf.run``) into a folder someone else loads in one line:

- config.json (``auto_map``, the Matryoshka keys, trained dims and layers, the ``mipic_training`` summary),
  ``model.safetensors`` with LoRA merged into the backbone (or, with ``--adapter_only``, the PEFT adapter in
  ``adapter/`` and ``config.adapter`` naming the base model), the tokenizer, and the two self-contained
  code files: ``AutoModel.from_pretrained(folder, trust_remote_code=True)``;
- ``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json`` and
  ``config_sentence_transformers.json``: ``SentenceTransformer(folder, trust_remote_code=True, truncate_dim=d)``;
- ``eval/`` (results json, markdown, plots), ``mipic_recipe.yaml`` and README.md (the model card).

The folder is built next to OUT_DIR and renamed into place at the end: a failure leaves nothing behind,
and an existing non-empty OUT_DIR is only replaced with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys

from ..hub.export import export_run
from ..hub.folders import ExportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output_dir of a mipic_hf.run run")
    parser.add_argument("out_dir", help="folder to write (must be empty or absent unless --overwrite)")
    parser.add_argument("--adapter_only", action="store_true", help="write the LoRA adapter, not merged weights")
    parser.add_argument("--repo_id", default=None, help="Hub repo id used in the card's snippets (org/name)")
    parser.add_argument("--license", default=None, help="license in the card's metadata (e.g. apache-2.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    args = parser.parse_args(argv)
    try:
        out = export_run(
            args.run_dir,
            args.out_dir,
            adapter_only=args.adapter_only,
            overwrite=args.overwrite,
            repo_id=args.repo_id,
            license=args.license,
        )
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {out} ({'adapter only' if args.adapter_only else 'merged weights'})")
    return 0
